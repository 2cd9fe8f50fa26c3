"""Helpers of the torch bridge tests (a module name of its own: tests/conftest.py is `conftest` too)."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap


def run_py(code: str, env: dict[str, str] | None = None, timeout: float = 90) -> subprocess.CompletedProcess:
    """Runs `code` in a fresh interpreter with this process's environment plus `env`."""
    full = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=full, capture_output=True,
                          text=True, timeout=timeout)
