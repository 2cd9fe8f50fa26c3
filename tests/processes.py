"""Test processes: a free loopback port, and waiting for a group of them, bounded (whatever is left at the timeout
is killed, and says so)."""
from __future__ import annotations

import socket
import subprocess


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def communicate_all(procs: list[subprocess.Popen], timeout: float) -> list[subprocess.CompletedProcess]:
    """Waits for every process in turn (their stdout/stderr as text pipes); after `timeout` s on one, kills all."""
    results = []
    for p in procs:
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            out, err = p.communicate()
            err += f"\n[test] killed after {timeout} s"
        results.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
    return results
