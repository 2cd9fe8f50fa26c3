"""Runs tests/collectives/ranks.py as a group of processes on loopback and collects what each printed."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.processes import communicate_all, free_port

RANKS = Path(__file__).resolve().parent / "ranks.py"


def run_ranks(scenario: str, devices: list[str], env: dict[str, str] | None = None, timeout: float = 90,
              prefix: list[list[str]] | None = None, rank_env: list[dict[str, str]] | None = None,
              port: int | None = None) -> list[subprocess.CompletedProcess]:
    """Starts one process per entry of |devices| (that rank's device, e.g. "hal:1" or "cpu"), all running
    |scenario|; waits for all (killing what is left after |timeout| s). |prefix| wraps a rank's command
    (e.g. `ip netns exec ns0`), |rank_env| adds to a rank's environment."""
    port = port or free_port()
    procs = []
    for rank, device in enumerate(devices):
        full = {**os.environ, "RANK": str(rank), "WORLD_SIZE": str(len(devices)), "HAL_TEST_PORT": str(port),
                "HAL_TEST_DEVICES": ",".join(devices), **(env or {}),
                **(rank_env[rank] if rank_env else {})}
        cmd = [*(prefix[rank] if prefix else []), sys.executable, str(RANKS), scenario]
        procs.append(subprocess.Popen(cmd, env=full, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    return communicate_all(procs, timeout)


def assert_all_ok(results: list[subprocess.CompletedProcess]) -> list[str]:
    """Every rank exited 0; returns each rank's last stdout line."""
    for rank, r in enumerate(results):
        assert r.returncode == 0, f"rank {rank} exited {r.returncode}:\n{r.stdout[-3000:]}\n{r.stderr[-6000:]}"
    return [r.stdout.strip().splitlines()[-1] if r.stdout.strip() else "" for r in results]
