"""Loads a HAL plugin .so directly through cffi, without the runtime: for the plugin tests.

The ABI's declaration and the loaded plugin live in the package (hal/conformance/abi/ffi.py), where
`hal conformance` uses them; this module re-exports them with what only the tests need: where the built
plugins are, and a private copy of each per test process. Here `Plugin.api` is the plain table.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from hal.conformance.abi import ffi as _abi
from hal.conformance.abi.ffi import (  # noqa: F401 - re-exported for the tests.
    DEVICE_ERROR, EVENT_TIMING, FLAG_EMULATED, FLAG_HOST_ADDRESSABLE, FLAG_MAPPABLE, INVALID_ARGUMENT, KIND_CPU,
    KIND_GPU, KIND_NPU, KIND_OTHER, NOT_READY, OK, OUT_OF_MEMORY, UNAVAILABLE, UNIMPLEMENTED, HalError, ffi,
)

REPO = Path(__file__).resolve().parents[2]


def plugin_dir() -> Path | None:
    """Where the built plugins are: $HAL_TEST_PLUGIN_DIR, else <repo>/hal/plugins (pip install -e .)."""
    for candidate in (os.environ.get("HAL_TEST_PLUGIN_DIR"), REPO / "hal" / "plugins"):
        if candidate and any(Path(candidate).glob("libhal_plugin_*.so")):
            return Path(candidate)
    return None


def plugin_path(name: str) -> Path | None:
    """The plugin `name`; the null skeleton lives in a skeleton/ subfolder so the runtime does not load it."""
    directory = plugin_dir()
    if directory is None:
        return None
    for path in (directory / f"libhal_plugin_{name}.so", directory / "skeleton" / f"libhal_plugin_{name}.so"):
        if path.exists():
            return path
    return None


class Plugin(_abi.Plugin):
    """One loaded plugin, its `api` the untracked table (the tests compare entries with ffi.NULL)."""

    _loaded: dict[str, "Plugin"] = {}

    def __init__(self, path: Path):
        super().__init__(path)
        self.api = self.raw

    @classmethod
    def load(cls, path: Path) -> "Plugin":
        """A private instance of the plugin at `path`, shared by the tests of this process.

        dlopen returns the library already loaded at a path, and the HAL runtime of this same test process may
        be using it (the contract tests): initializing and shutting it down here would pull its state from
        under the runtime. A copy under another path is a separate library with its own globals.
        """
        path = Path(path)
        if str(path) not in cls._loaded:
            private = Path(tempfile.mkdtemp(prefix="hal-plugin-ffi-")) / path.name
            shutil.copy2(path, private)
            cls._loaded[str(path)] = cls(private)
        return cls._loaded[str(path)]
