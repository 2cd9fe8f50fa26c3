"""Shared fixtures: the devices under test, and fresh Python processes for tests of process-wide state."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PLUGIN_DIR = REPO / "hal" / "plugins"
NULL_PLUGIN = PLUGIN_DIR / "skeleton" / "libhal_plugin_null.so"


def run_python(code: str, env: dict[str, str] | None = None, cwd: str | Path | None = None,
               timeout: float = 120) -> subprocess.CompletedProcess:
    """Runs `code` in a fresh interpreter (runtime init, torch registration and crashes stay there)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=full_env, cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


def run_python_json(code: str, **kwargs) -> object:
    """Like run_python, for code that prints one JSON document last; fails the test on a non-zero exit."""
    proc = run_python(code, **kwargs)
    assert proc.returncode == 0, f"subprocess failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def pytest_collection_modifyitems(config, items):
    # Device tests below need the built native parts; say so clearly instead of failing on import.
    try:
        import hal._C  # noqa: F401
    except ImportError as e:
        skip = pytest.mark.skip(reason=f"hal._C is not built ({e}); run `make setup`")
        for item in items:
            if "needs_native" in item.keywords:
                item.add_marker(skip)
