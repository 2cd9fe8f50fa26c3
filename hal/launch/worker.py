"""The wrapper every worker process runs: `python -m hal.launch.worker [-m] TARGET [args...]`.

The agent gives each worker its device in the environment (HAL_LAUNCH_DEVICE, HAL_VISIBLE_DEVICES: see
`hal.launch.supervise`); should only LOCAL_RANK and HAL_LAUNCH_DEVICES be there, this maps the local rank to
its device. That happens before hal or torch is imported, so the script sees exactly its device, as hal:0. Then
the script runs as `__main__` (sys.argv = [TARGET, *args]); an uncaught exception is recorded in elastic's
error file (TORCHELASTIC_ERROR_FILE) for the launcher to report. Imports neither hal nor torch itself.
"""
from __future__ import annotations

import json
import os
import runpy
import sys
import time
import traceback


def bind_device(env=os.environ) -> None:
    devices = [d for d in env.get("HAL_LAUNCH_DEVICES", "").split(",") if d]
    if not env.get("HAL_LAUNCH_DEVICE"):
        local_rank = int(env.get("LOCAL_RANK", "0"))
        if local_rank < len(devices):
            env["HAL_LAUNCH_DEVICE"] = devices[local_rank]
    if env.get("HAL_LAUNCH_DEVICE"):
        env["HAL_VISIBLE_DEVICES"] = env["HAL_LAUNCH_DEVICE"]


def _record(e: BaseException) -> None:
    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if not path:
        return
    data = {"message": {"message": f"{type(e).__name__}: {e}",
                        "extraInfo": {"py_callstack": traceback.format_exc(), "timestamp": str(int(time.time()))}}}
    try:
        with open(path, "w") as f:
            json.dump(data, f)
    except OSError:
        pass


def main(argv: list[str]) -> None:
    module = bool(argv) and argv[0] == "-m"
    if module:
        argv = argv[1:]
    if not argv:
        sys.exit("usage: python -m hal.launch.worker [-m] SCRIPT|MODULE [args...] (started by `hal launch`)")
    target, args = argv[0], argv[1:]
    bind_device()
    sys.argv = [target, *args]
    try:
        if module:
            runpy.run_module(target, run_name="__main__", alter_sys=True)
        else:
            sys.path.insert(0, os.path.dirname(os.path.abspath(target)))
            runpy.run_path(target, run_name="__main__")
    except (SystemExit, KeyboardInterrupt):
        raise
    except BaseException as e:
        _record(e)
        raise


if __name__ == "__main__":
    main(sys.argv[1:])
