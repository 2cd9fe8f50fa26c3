"""The process a conformance run's tests execute in: `python -m hal.conformance.abi.worker SPEC`.

SPEC (JSON) names the plugin, its configuration, the device, the tests to run in order, the file descriptor
to report on and the file to keep the entries in flight in. For each test the worker writes a line
{"start": id} before and {"result": id, ...} after; the parent (runner.py) gives each test its timeout and,
when one hangs or kills the process, reads the entries file, names them, and starts a new worker for the
rest. The plugin's own output goes to this process's stdout and stderr, never onto the report descriptor.
"""
from __future__ import annotations

import json
import mmap
import os
import sys
import time
import traceback

from hal.conformance.abi import ffi as abi
from hal.conformance.abi.case import CASES, Context, Skip, Unsupported, ready
from hal.conformance.abi import areas  # noqa: F401 - registers every test.
from hal.conformance.abi.runner import ENTRY_FILE_BYTES


def outcome(e: BaseException) -> tuple[str, str]:
    """A test's status and reason from what it raised."""
    if isinstance(e, Unsupported):
        return "unsupported", str(e)
    if isinstance(e, Skip):
        return "skip", str(e)
    if isinstance(e, AssertionError):
        return "fail", str(e) or "assertion failed: " + "".join(traceback.format_tb(e.__traceback__, limit=-1)).strip()
    if isinstance(e, abi.MissingEntry):
        return "fail", str(e)
    if isinstance(e, KeyboardInterrupt):
        raise e
    return "fail", f"{type(e).__name__}: {e}"


def main() -> int:
    spec = json.loads(sys.argv[1])
    report = os.fdopen(spec["fd"], "w", buffering=1)
    entries = open(spec["entry_file"], "r+b")
    view = mmap.mmap(entries.fileno(), ENTRY_FILE_BYTES)

    def on_entry(names: list[str]) -> None:
        text = ",".join(names).encode()[:ENTRY_FILE_BYTES - 1]
        view[:len(text) + 1] = text + b"\0"

    def emit(**record) -> None:
        report.write(json.dumps(record) + "\n")

    try:
        p = abi.Plugin(spec["plugin"], on_entry=on_entry)
    except Exception as e:  # dlopen failed, no entry symbol: nothing else can run.
        emit(load_error=f"{type(e).__name__}: {e}")
        return 0
    ctx = Context(p, spec.get("config"), spec.get("device", 0), timeout=spec.get("timeout", 30.0))
    for cid in spec["cases"]:
        c = CASES[cid]
        emit(start=cid)
        started = time.monotonic()
        status, reason, error = "pass", "", None
        try:
            if c.device:
                ready(ctx)
            c.fn(ctx)
        except BaseException as e:  # Held until the cleanup: its traceback keeps the test's host buffers alive.
            error = e
            status, reason = outcome(e)
        if ctx.initialized:
            problems = ctx.cleanup()  # Synchronizes the test's streams first: no copy lands in freed memory.
            if problems and status == "pass":
                status, reason = "fail", "releasing what the test made failed: " + "; ".join(problems)
        del error
        emit(result=cid, status=status, reason=reason, duration_s=round(time.monotonic() - started, 3))
    return 0


if __name__ == "__main__":
    sys.exit(main())
