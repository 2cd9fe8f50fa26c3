"""Buffers: device memory from the caching allocator, with copies to and from host data.

    buf = hal.device("emu:0").alloc(4096)
    buf.copy_from(np.arange(1024, dtype=np.float32))       # waits for the copy unless non_blocking=True
    half = buf[:2048]                                      # a view: same memory, no copy
    print(half.to_numpy(np.float32))

A copy runs on the current stream of the device (or `stream=`). Blocking copies return when the data has
landed; `non_blocking=True` returns at once, and HAL keeps the host object alive until the copy completes,
and keeps device memory the copy uses from being reused before it ran (even when the Buffer is freed first).
A freed buffer and every view of it refuse any further use (`hal.InvalidArgument`).
"""
from __future__ import annotations

import operator
from typing import TYPE_CHECKING, Any

import numpy as np

from hal import _C
from hal._stream import Event, Stream, _finish_host_copy, current_stream

if TYPE_CHECKING:
    from hal._device import Device

__all__ = ["Buffer"]


class Buffer:
    """`nbytes` of memory on one device; slicing gives views of the same allocation."""

    __slots__ = ("device", "_allocation", "offset", "nbytes")

    def __init__(self, device: "Device", allocation: "_C.Allocation", offset: int, nbytes: int):
        self.device = device
        self._allocation = allocation  # Shared by every view; freed when the last view goes.
        self.offset = offset
        self.nbytes = nbytes

    @classmethod
    def allocate(cls, device: "Device", nbytes: int, stream: Stream | None = None) -> "Buffer":
        if isinstance(nbytes, bool):
            raise TypeError(f"buffer size must be an int, not {nbytes!r}")
        try:
            nbytes = operator.index(nbytes)
        except TypeError:
            raise TypeError(f"buffer size must be an int, not {type(nbytes).__name__} {nbytes!r}") from None
        if nbytes < 0:
            raise ValueError(f"buffer size must be non-negative, got {nbytes}")
        if nbytes >= 1 << 64:  # Past what the runtime's sizes hold; no device has that much either.
            error = _C.OutOfMemory(f"{device.name}: out of memory: tried to allocate {nbytes} bytes, more than "
                                   f"a 64-bit size holds")
            error.code, error.plugin, error.device, error.native_code = ("HAL_STATUS_OUT_OF_MEMORY", device.plugin,
                                                                         device.name, 0)
            raise error
        s = stream or current_stream(device)
        return cls(device, device._native.allocate(nbytes, s._native), 0, nbytes)

    @property
    def ptr(self) -> int:
        """Device address of the first byte (not dereferenceable by the host unless host-addressable).

        Raises InvalidArgument once the buffer (or the buffer this is a view of) was freed."""
        return self._allocation.ptr + self.offset

    @property
    def freed(self) -> bool:
        """Whether the memory was freed (by `free()` on this buffer or on any view of it)."""
        return self._allocation.freed

    def __len__(self) -> int:
        return self.nbytes

    def __getitem__(self, key: slice) -> "Buffer":
        if not isinstance(key, slice):
            raise TypeError("a Buffer is sliced by byte ranges, e.g. buf[16:32]")
        start, stop, step = key.indices(self.nbytes)
        if step != 1:
            raise ValueError("Buffer slices must be contiguous (step 1)")
        return Buffer(self.device, self._allocation, self.offset + start, max(0, stop - start))

    # Copies --------------------------------------------------------------------------------------------
    def copy_from(self, src: Any, *, stream: Stream | None = None, non_blocking: bool = False) -> "Buffer":
        """Copies host data (numpy array, bytes, anything with the buffer protocol) or another Buffer here.

        The source must be exactly `nbytes` long. Returns self.
        """
        s = stream or current_stream(self.device)
        if isinstance(src, Buffer):
            self._check_size(src.nbytes, "source")
            if src.device == self.device:
                s._native.copy_d2d(self.ptr, src.ptr, self.nbytes)
                src._used_on(s)  # Also when blocking: an interrupted wait leaves the copy queued.
            else:
                src_stream = current_stream(src.device)
                _C.copy_peer(s._native, self.ptr, src_stream._native, src.ptr, self.nbytes)
                if non_blocking and src.device.plugin == self.device.plugin:
                    # A peer copy may still read the source on s: its stream, where a free is ordered,
                    # waits for s first (across plugins the copy was staged and is complete).
                    src_stream.wait_event(s.record_event(Event(self.device, timing=False)))
        else:
            view = _host_view(src)
            self._check_size(view.nbytes, "source")
            s._native.copy_h2d(self.ptr, view, self.nbytes)
            return self._queued(s, non_blocking, host=view)
        return self._queued(s, non_blocking)

    def copy_to(self, dst: Any, *, stream: Stream | None = None, non_blocking: bool = False) -> Any:
        """Copies this buffer into writable host memory (or another Buffer) of exactly `nbytes`. Returns dst."""
        if isinstance(dst, Buffer):
            dst.copy_from(self, stream=stream, non_blocking=non_blocking)
            return dst
        s = stream or current_stream(self.device)
        view = _host_view(dst, writable=True)
        self._check_size(view.nbytes, "destination")
        s._native.copy_d2h(view, self.ptr, self.nbytes)
        self._queued(s, non_blocking, host=view)
        return dst

    def to_numpy(self, dtype: Any = np.uint8, shape: tuple[int, ...] | None = None, *,
                 stream: Stream | None = None) -> np.ndarray:
        """A new host array holding this buffer's bytes (blocking)."""
        dtype = np.dtype(dtype)
        if self.nbytes % dtype.itemsize:
            raise ValueError(f"{self.nbytes} bytes is not a whole number of {dtype} elements")
        out = np.empty(self.nbytes // dtype.itemsize, dtype=dtype)
        self.copy_to(out, stream=stream)
        return out.reshape(shape) if shape is not None else out

    def to_bytes(self) -> bytes:
        return self.to_numpy(np.uint8).tobytes()

    def fill(self, value: int, *, stream: Stream | None = None, non_blocking: bool = False) -> "Buffer":
        """Sets every byte to `value` (0..255)."""
        if not 0 <= value <= 255:
            raise ValueError(f"fill value must be a byte (0..255), got {value}")
        s = stream or current_stream(self.device)
        s._native.memset(self.ptr, value, self.nbytes)
        return self._queued(s, non_blocking)

    def _queued(self, s: Stream, non_blocking: bool, host: Any = None) -> "Buffer":
        """After work on this memory (and on the host memory `host`, if any) was queued on `s`: waits for it, or
        (non_blocking) keeps both from reuse until it ran. A wait that ends early (Ctrl-C, shutdown) leaves the
        work queued: then both are kept as for non-blocking work, since the caller may let go of them."""
        try:
            if host is not None:
                _finish_host_copy(s, host, non_blocking)
            elif not non_blocking:
                s.synchronize()
        except BaseException:
            self._used_on(s)
            raise
        if non_blocking:
            self._used_on(s)
        return self

    # Lifetime ------------------------------------------------------------------------------------------
    def record_stream(self, stream: Stream) -> None:
        """Marks the memory as used on `stream`: when freed it is not reused before `stream` passes the free."""
        self._allocation.record_stream(stream._native)

    def free(self) -> None:
        """Returns the whole allocation to the cache now: this buffer and every view of it refuse any later
        use (InvalidArgument). Freeing again does nothing. Work already queued on the memory is safe: the
        memory is reused only in stream order (see record_stream)."""
        self._allocation.free()

    def _used_on(self, s: Stream) -> None:
        """Work queued on `s` uses this memory: keep it from reuse until `s` passed that work, even if the
        buffer is freed first (a no-op on the allocation's own stream, whose order already ensures it)."""
        if s._native != self._allocation.stream:
            self._allocation.record_stream(s._native)

    def _check_size(self, nbytes: int, what: str) -> None:
        if nbytes != self.nbytes:
            raise ValueError(f"{what} has {nbytes} bytes but the buffer on {self.device.name} has {self.nbytes}")

    def __repr__(self) -> str:
        where = "freed" if self.freed else f"ptr={self.ptr:#x}"
        return f"hal.Buffer(device={self.device.name!r}, {where}, nbytes={self.nbytes})"


def _host_view(obj: Any, writable: bool = False) -> memoryview:
    """A flat byte view of host memory, refusing what would need a hidden copy."""
    try:
        view = memoryview(obj)
    except TypeError:
        raise TypeError(f"expected a Buffer or host memory (numpy array, bytes, ...), got {type(obj).__name__}")
    if not view.c_contiguous:
        raise ValueError("host memory must be C-contiguous (use np.ascontiguousarray)")
    if writable and view.readonly:
        raise ValueError("destination host memory is read-only")
    return view.cast("B") if view.ndim != 1 or view.format != "B" else view
