"""HAL: one hardware abstraction layer for heterogeneous accelerators.

    import hal
    for d in hal.devices():          # every device of every plugin: cpu:0, emu:0, emu:1, ...
        print(d.name, d.properties.vendor, d.memory_info())
    dev = hal.device("emu:1")
    buf = dev.alloc(1 << 20)
    buf.copy_from(numpy_array)
    out = buf.to_numpy(numpy_array.dtype, numpy_array.shape)

Importing `hal` is cheap: the native module and the plugins load on first use, so `hal.plan` (which needs
no device) works without them.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Public name -> the module that defines it. Resolved on first access (PEP 562) so that `import hal` never
# loads native code by itself.
_EXPORTS = {
    # runtime
    "init": "hal.runtime",
    "is_initialized": "hal.runtime",
    "plugins": "hal.runtime",
    "load_errors": "hal.runtime",
    "inspect_plugin": "hal.runtime",
    "ABI_VERSION": "hal.runtime",
    # devices
    "Device": "hal._device",
    "DeviceProperties": "hal._device",
    "devices": "hal._device",
    "device": "hal._device",
    "device_count": "hal._device",
    "synchronize": "hal._device",
    "Link": "hal._device",
    "topology": "hal._device",
    # memory
    "Buffer": "hal.buffer",
    # compute (ABI 1.1)
    "Program": "hal.program",
    "Kernel": "hal.program",
    "LocalMemory": "hal.program",
    # streams and events
    "Stream": "hal._stream",
    "Event": "hal._stream",
    "stream": "hal._stream",
    "current_stream": "hal._stream",
    # errors
    "HalError": "hal.errors",
    "PluginLoadError": "hal.errors",
    "Unimplemented": "hal.errors",
    "OutOfMemory": "hal.errors",
    "InvalidArgument": "hal.errors",
    "DeviceError": "hal.errors",
    "Timeout": "hal.errors",
    "Aborted": "hal.errors",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'hal' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # Later accesses skip this function.
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:  # For type checkers and IDEs only.
    from hal.buffer import Buffer
    from hal.program import Kernel, LocalMemory, Program
    from hal._device import Device, DeviceProperties, Link, device, device_count, devices, synchronize, topology
    from hal.errors import (Aborted, DeviceError, HalError, InvalidArgument, OutOfMemory, PluginLoadError,
                            Timeout, Unimplemented)
    from hal.runtime import ABI_VERSION, init, inspect_plugin, is_initialized, load_errors, plugins
    from hal._stream import Event, Stream, current_stream, stream
