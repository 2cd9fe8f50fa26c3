"""`hal conformance PLUGIN.so`: tells a vendor whether a plugin keeps the HAL contract.

Two stages. The verdict comes from the first, `abi/`: the plugin's table driven directly through a cffi
declaration of the ABI headers, no HAL runtime in between, in areas (loading, properties, memory, copies,
streams, events, errors, pinned, kernels, threading, collectives), each test in a worker process under a
timeout that names the entry a hung test was in; `--report out.json` writes every result. The second,
`run()` below (`hal conformance --runtime`), goes through HAL's runtime: suite.py, the device contract
against the Python API on every device the plugin declares, in a fresh process; collectives.py, worlds of
processes on the runtime's communicator; operators.py, every kernel the plugin declares (ABI 1.1) against
torch's CPU kernels, when torch is installed. The runtime's own tests stay in the project's tests.

A plugin that cannot pass some test yet lists it in an expected-failures file, each with a reason:

    # npu-expected-failures.yaml
    events.elapsed_time_is_wall_milliseconds: "firmware 1.2 has no timestamps; fixed in 1.3"

Listed tests must fail: one that passes, or an entry that names no test, fails the run, so the list cannot
go stale.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

__all__ = ["SUITE", "COLLECTIVES", "OPERATORS", "run"]

SUITE = Path(__file__).resolve().parent / "suite.py"
COLLECTIVES = SUITE.parent / "collectives.py"
OPERATORS = SUITE.parent / "operators.py"


def run(plugin: str | os.PathLike, *, config: str | None = None, expected_failures: str | None = None,
        pytest_args: list[str] = ()) -> int:
    """Runs the runtime-driven stage against `plugin` in a new process; returns pytest's exit code (0 = passed).

    The cffi stage is `hal.conformance.abi.run`."""
    try:
        import pytest  # noqa: F401 - only to say clearly what is missing.
    except ImportError:
        raise RuntimeError("hal conformance needs pytest: pip install pytest") from None
    env = {**os.environ, "HAL_CONFORMANCE_PLUGIN": str(Path(plugin).resolve())}
    env.pop("HAL_VISIBLE_DEVICES", None)  # Every device of the plugin is under test.
    if config is not None:
        env["HAL_CONFORMANCE_CONFIG"] = config
    if expected_failures is not None:
        env["HAL_CONFORMANCE_EXPECTED_FAILURES"] = str(Path(expected_failures).resolve())
    # -c devnull: the project's own pytest settings (if run inside a checkout) must not apply.
    command = [sys.executable, "-m", "pytest", str(SUITE), str(COLLECTIVES), str(OPERATORS), "-p", "hal.conformance.expectations",
               "-c", os.devnull, "--rootdir", str(SUITE.parent), "-p", "no:cacheprovider", "-q", "-rfEsxX",
               "--tb=line", *pytest_args]
    return subprocess.call(command, env=env)
