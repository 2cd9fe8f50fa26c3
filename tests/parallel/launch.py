"""Starts tests/parallel/ranks.py as one process per device on loopback, as `hal launch` would (its env contract)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.processes import communicate_all, free_port

RANKS = Path(__file__).resolve().parent / "ranks.py"
# Two kinds, speeds that fit a 2-core host however many ranks a test starts (1.25 cores at most).
EMU = "fast:2:speed=0.5;slow:2:speed=0.125"
KIND = {"emu:0": "fast", "emu:1": "fast", "emu:2": "slow", "emu:3": "slow"}


def run_job(devices: list[str], env: dict[str, str], ranks: list[int] | None = None,
            timeout: float = 120) -> list[subprocess.CompletedProcess]:
    """Device i (its local index) runs as rank ranks[i] (default: reversed, so ranks differ from device ids)."""
    port = free_port()
    ranks = ranks if ranks is not None else list(reversed(range(len(devices))))
    procs = []
    for i, dev in enumerate(devices):
        full = {**os.environ, "HAL_EMU_DEVICES": EMU, "RANK": str(ranks[i]), "WORLD_SIZE": str(len(devices)),
                "LOCAL_RANK": str(i), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
                "HAL_VISIBLE_DEVICES": dev, "HAL_LAUNCH_DEVICE": dev, "HAL_LAUNCH_LOCAL_INDEX": str(i),
                "HAL_LAUNCH_NODE_RANK": "0", "OMP_NUM_THREADS": "1", **env}
        procs.append(subprocess.Popen([sys.executable, str(RANKS)], env=full, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    return communicate_all(procs, timeout)


def assert_ok(results: list[subprocess.CompletedProcess]) -> None:
    for i, r in enumerate(results):
        assert r.returncode == 0, f"device {i} exited {r.returncode}:\n{r.stdout[-2000:]}\n{r.stderr[-5000:]}"
