"""`hal conformance PLUGIN.so`: tells a vendor whether a plugin keeps the HAL contract.

One suite (suite.py) runs against every device the plugin declares, in a fresh process (the runtime is
process-wide); its collectives area (collectives.py) runs worlds of processes on the plugin's device 0 when
the plugin declares collectives, and its operators area (operators.py) checks every kernel the plugin declares
(ABI 1.1) against torch's CPU kernels, when torch is installed. Optional ABI entries the plugin leaves out are reported and their tests skipped. A plugin that
cannot pass some test yet lists it in an expected-failures file, each with a reason:

    # npu-expected-failures.yaml
    test_event_timing: "firmware 1.2 has no timestamps; fixed in 1.3"

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
    """Runs the suite against `plugin` in a new process; returns pytest's exit code (0 = conformant)."""
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
