"""HAL's exceptions. The native runtime raises these; every message names the device and the plugin.

    HalError (RuntimeError)
     ├── PluginLoadError      a plugin could not be loaded: not a library, wrong ABI version, missing entries
     ├── Unimplemented        the plugin lacks the entry (optional ABI entries, or the `null` plugin)
     ├── OutOfMemory          also a MemoryError: names bytes requested, in use, cached and the capacity
     ├── InvalidArgument      also a ValueError
     ├── DeviceError          the device or its driver failed (with the vendor's native code)
     ├── Timeout              also a TimeoutError: a collective or a wait ran past its deadline
     └── Aborted              the operation was cancelled
"""
from hal._C import (Aborted, DeviceError, HalError, InvalidArgument, OutOfMemory, PluginLoadError, Timeout,
                    Unimplemented)

__all__ = ["HalError", "PluginLoadError", "Unimplemented", "OutOfMemory", "InvalidArgument", "DeviceError",
           "Timeout", "Aborted"]
