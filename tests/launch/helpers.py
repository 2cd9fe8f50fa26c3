"""Running `hal launch` in a fresh process, bounded in time, its workers' reports read back."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# A worker that writes its environment and what HAL shows it to OUT/r<restart>-<rank>.json, then runs BODY.
REPORT = """
import json, os, sys
import hal
_keys = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "MASTER_ADDR", "MASTER_PORT",
         "TORCHELASTIC_RESTART_COUNT", "TORCHELASTIC_RUN_ID", "HAL_VISIBLE_DEVICES", "HAL_EMU_DEVICES")
rep = {k: v for k, v in os.environ.items() if k in _keys or k.startswith("HAL_LAUNCH_")}
rep["devices"] = [[d.name, d.index, str(d.properties.name)] for d in hal.devices()]
rep["argv"] = sys.argv
rep["name"] = __name__
RESTART = int(os.environ["TORCHELASTIC_RESTART_COUNT"])
with open(os.path.join(os.environ["REPORT_DIR"], f"r{RESTART}-{os.environ['RANK']}.json"), "w") as f:
    json.dump(rep, f)
"""


def write_worker(path: Path, body: str = "") -> Path:
    path.write_text(REPORT + textwrap.dedent(body))
    return path


def launch(tmp_path: Path, args: list[str], emu: str = "emu-fast:1:speed=0.5;emu-slow:2:speed=0.25",
           env: dict | None = None, timeout: float = 60, cli: str = "hal.launch",
           prefix: list[str] | None = None) -> subprocess.CompletedProcess:
    """`python -m <cli> ARGS` in tmp_path (its own process group, killed whole on timeout)."""
    reports = tmp_path / "reports"
    reports.mkdir(exist_ok=True)
    path = os.pathsep.join(p for p in [str(REPO), os.environ.get("PYTHONPATH", "")] if p)
    full = {**os.environ, "PYTHONPATH": path, "HAL_EMU_DEVICES": emu, "REPORT_DIR": str(reports), **(env or {})}
    full.pop("HAL_VISIBLE_DEVICES", None)
    cmd = [*(prefix or []), sys.executable, "-m", cli, *args]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=full, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(f"hal launch did not finish in {timeout} s:\n{out}\n{err}") from None
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def reports(tmp_path: Path, restart: int | None = None) -> list[dict]:
    out = []
    for p in sorted((tmp_path / "reports").glob("r*.json")):
        rep = json.loads(p.read_text())
        if restart is None or int(rep["TORCHELASTIC_RESTART_COUNT"]) == restart:
            out.append(rep)
    return sorted(out, key=lambda r: (int(r["TORCHELASTIC_RESTART_COUNT"]), int(r["RANK"])))
