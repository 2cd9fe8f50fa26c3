"""Runs conformance tests in worker processes (worker.py), each under a timeout, and collects their results.

A test that runs past its timeout, or takes its process down, fails with the entries that were in flight
("timed out after 10 s in event_synchronize"); its worker is killed and a fresh one runs the remaining tests,
so one hang never stops the run.
"""
from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass

ENTRY_FILE_BYTES = 4096  # The worker writes the entries in flight, NUL-terminated, into a file this long.


@dataclass
class Result:
    id: str
    status: str  # pass | fail | unsupported | skip (and, with expected failures, xfail | xpass)
    reason: str = ""
    duration_s: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return "unknown"


def _in_flight(path: str) -> str:
    with open(path, "rb") as f:
        names = f.read(ENTRY_FILE_BYTES).split(b"\0", 1)[0].decode(errors="replace")
    return names.replace(",", ", ") or "no plugin entry (the test's own code)"


def run_cases(plugin: str, cases: list[str], *, config: str | None, device: int, timeout: float,
              on_result=lambda result: None) -> list[Result]:
    """Runs `cases` (ids, in order) against `plugin`; returns one Result per case, in order of completion."""
    results: list[Result] = []
    remaining = list(cases)
    with tempfile.TemporaryDirectory(prefix="hal-conformance-") as scratch:
        entry_file = os.path.join(scratch, "in-flight")
        while remaining:
            with open(entry_file, "wb") as f:
                f.write(b"\0" * ENTRY_FILE_BYTES)
            read_fd, write_fd = os.pipe()
            spec = {"plugin": plugin, "config": config, "device": device, "cases": remaining, "fd": write_fd,
                    "entry_file": entry_file, "timeout": timeout}
            # A session of its own, so a hung worker is killed with whatever processes it started.
            proc = subprocess.Popen([sys.executable, "-m", "hal.conformance.abi.worker", json.dumps(spec)],
                                    pass_fds=[write_fd], start_new_session=True, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL if os.environ.get("HAL_CONFORMANCE_QUIET") else None)
            os.close(write_fd)
            current, started, pending = None, time.monotonic(), b""
            try:
                while True:
                    left = timeout - (time.monotonic() - started)
                    if left <= 0 or not select.select([read_fd], [], [], left)[0]:
                        entries = _in_flight(entry_file)
                        victim = current or remaining[0]
                        what = "" if current else " (before it started: loading the plugin)"
                        results.append(Result(victim, "fail", f"timed out after {timeout:g} s{what} in {entries}",
                                              round(time.monotonic() - started, 3)))
                        on_result(results[-1])
                        remaining.remove(victim)
                        break
                    data = os.read(read_fd, 1 << 16)
                    if not data:  # The worker exited: done, or died.
                        code = proc.wait()
                        if remaining:
                            victim = current or remaining[0]
                            how = f"signal {-code} ({_signal_name(-code)})" if code < 0 else f"exit {code}"
                            results.append(Result(victim, "fail", f"the test process died ({how}) in "
                                                  f"{_in_flight(entry_file)}", round(time.monotonic() - started, 3)))
                            on_result(results[-1])
                            remaining.remove(victim)
                        break
                    pending += data
                    *lines, pending = pending.split(b"\n")
                    for line in lines:
                        record = json.loads(line)
                        if "load_error" in record:
                            for cid in remaining:
                                reason = (f"the plugin could not be loaded: {record['load_error']}"
                                          if cid == remaining[0] else "the plugin could not be loaded")
                                results.append(Result(cid, "fail" if cid == remaining[0] else "skip", reason))
                                on_result(results[-1])
                            remaining.clear()
                        elif "start" in record:
                            current, started = record["start"], time.monotonic()
                        else:
                            result = Result(record["result"], record["status"], record["reason"], record["duration_s"])
                            results.append(result)
                            on_result(result)
                            remaining.remove(result.id)
                            current, started = None, time.monotonic()
            finally:
                os.close(read_fd)
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
    return results
