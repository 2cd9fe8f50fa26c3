"""Programs and kernels: vendor code built for a device at run time and launched on its streams (ABI 1.1,
kernel.h: program_create / kernel_create / kernel_launch), as OpenCL and Unified Runtime do.

    prog = hal.Program(dev, OPENCL_SOURCE)                     # format "opencl-c" (the opencl plugin)
    scale = prog.kernel("scale")
    scale.launch([n], [buf, np.float32(2.0)])                  # on dev's current stream, asynchronously
    dev.synchronize()

Arguments: a `Buffer` (its device address; how it reaches the kernel's parameters is the format's convention,
e.g. the opencl plugin passes a buffer and a byte offset), a numpy scalar or `bytes` (passed by value), or
`LocalMemory(nbytes)` (work-group local memory). Plain Python numbers are refused: a kernel parameter has a C
type, so say which (np.int32(3), np.float32(0.5)). Formats and build options are the plugin's (its docs).
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Sequence

import numpy as np

from hal import _C

if TYPE_CHECKING:
    from hal._device import Device, DeviceLike
    from hal._stream import Stream

__all__ = ["Program", "Kernel", "LocalMemory"]


@dataclasses.dataclass(frozen=True)
class LocalMemory:
    """`nbytes` of work-group local (shared) memory for one kernel parameter."""
    nbytes: int


class Program:
    """A program built for one device from `source` (str or bytes) in `format`; build errors raise
    InvalidArgument with the build log, unknown formats Unimplemented naming those the plugin takes."""

    def __init__(self, device: "DeviceLike", source: "str | bytes", format: str = "opencl-c", options: str = ""):
        from hal._device import device as _device

        self.device: "Device" = _device(device)
        data = source.encode() if isinstance(source, str) else bytes(source)
        self.format = format
        self._native = _C.Program(self.device._native, format, data, options)

    def kernel(self, name: str) -> "Kernel":
        return Kernel(self, self._native.kernel(name))

    def __repr__(self) -> str:
        return f"hal.Program({self.device.name!r}, format={self.format!r})"


class Kernel:
    """One entry point of a Program. Holds its program (a program outlives its kernels)."""

    def __init__(self, program: Program, native: "_C.Kernel"):
        self.program = program
        self._native = native

    @property
    def name(self) -> str:
        return self._native.name

    def launch(self, global_size: Sequence[int], args: Sequence[object], local_size: "Sequence[int] | None" = None,
               stream: "Stream | None" = None) -> None:
        """Queues the kernel over `global_size` work items (1 to 3 dimensions) in groups of `local_size` (None:
        the plugin chooses) on `stream` (default: the device's current stream). Returns at once."""
        from hal._stream import current_stream

        s = stream or current_stream(self.program.device)
        if s.device != self.program.device:
            raise ValueError(f"kernel {self.name!r} was built for {self.program.device.name}, not for "
                             f"{s.device.name}'s stream")
        self._native.launch(s._native, [int(g) for g in global_size],
                            None if local_size is None else [int(n) for n in local_size],
                            [_argument(i, a) for i, a in enumerate(args)])

    def __repr__(self) -> str:
        return f"hal.Kernel({self.name!r} on {self.program.device.name})"


def _argument(index: int, value: object) -> "tuple[str, object]":
    from hal.buffer import Buffer

    if isinstance(value, Buffer):
        return ("buffer", value.ptr)
    if isinstance(value, LocalMemory):
        return ("local", int(value.nbytes))
    if isinstance(value, np.generic):
        return ("bytes", value.tobytes())
    if isinstance(value, (bytes, bytearray, memoryview)):
        return ("bytes", bytes(value))
    raise TypeError(f"kernel argument {index}: {type(value).__name__} is not a Buffer, numpy scalar, bytes or "
                    f"LocalMemory (give numbers their C type: np.int32(3), np.float32(0.5))")
