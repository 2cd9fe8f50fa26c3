"""Process-wide runtime: which plugins are loaded, and from where.

Plugins are found, in this order, among the plugins installed with this package (cpu first), in the
`HAL_PLUGIN_PATH` list (files or directories, `:`-separated, in the order given) and at explicit paths given to
`init` (in the order given); devices are numbered in that order, so the bundled ones keep their indices
(`cpu:0` is `hal:0`) whatever else is added. Of two plugins with one name the first found loads. The current
directory is never searched implicitly. A plugin that fails to load is reported by `load_errors()` and the others keep working.
`init` runs by itself, with defaults, the first time a device is needed.
"""
from __future__ import annotations

import threading
from pathlib import Path

from hal import _C
from hal._C import PluginInfo

__all__ = ["ABI_VERSION", "PACKAGE_PLUGIN_DIR", "init", "is_initialized", "ensure_initialized", "plugins",
           "load_errors", "inspect_plugin", "PluginInfo"]

ABI_VERSION: tuple[int, int] = tuple(_C.ABI_VERSION)
PACKAGE_PLUGIN_DIR = Path(__file__).resolve().parent / "plugins"

_lock = threading.Lock()


def init(plugins: list[str | Path] = (), *, use_env: bool = True, use_package_plugins: bool = True,
         configs: dict[str, str] | None = None) -> None:
    """Loads the plugins. Call it before first use to choose them; otherwise defaults apply.

    plugins: explicit plugin paths (loaded last, in this order: their devices come after the others).
    use_env: also load what `HAL_PLUGIN_PATH` names.
    use_package_plugins: also load the plugins installed with HAL (cpu, emu).
    configs: plugin name -> configuration text handed to that plugin's initialize (e.g. for emu:
        {"emu": "fast:2:speed=1.0:mem=2GiB;slow:2:speed=0.5:mem=1GiB"}).
    """
    dirs = [str(PACKAGE_PLUGIN_DIR)] if use_package_plugins and PACKAGE_PLUGIN_DIR.is_dir() else []
    with _lock:
        _C.init(plugin_paths=[str(p) for p in plugins], plugin_dirs=dirs, use_env=use_env,
                configs=dict(configs or {}))


def is_initialized() -> bool:
    return _C.is_initialized()


def ensure_initialized() -> None:
    """Initializes with defaults unless `init` already ran."""
    if _C.is_initialized():
        return
    with _lock:
        if not _C.is_initialized():
            dirs = [str(PACKAGE_PLUGIN_DIR)] if PACKAGE_PLUGIN_DIR.is_dir() else []
            _C.init(plugin_paths=[], plugin_dirs=dirs, use_env=True, configs={})


def plugins() -> list[PluginInfo]:
    """The plugins that loaded, in load order."""
    ensure_initialized()
    return list(_C.plugins())


def load_errors() -> list[tuple[str, str]]:
    """(path, message) for every plugin that was found but could not be loaded."""
    ensure_initialized()
    return list(_C.load_errors())


def inspect_plugin(path: str | Path) -> PluginInfo:
    """What the plugin at `path` declares (ABI version, entries present), without initializing it.

    Works for a plugin the loader would refuse too: `.error` then says why.
    """
    return _C.inspect_plugin(str(path))
