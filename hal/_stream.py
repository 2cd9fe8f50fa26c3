"""Streams and events.

A stream is an in-order queue of work on one device; work on different streams is ordered only by events.
Each thread has a *current stream* per device (the device's default stream unless set with `hal.stream`);
HAL operations that take no explicit stream use it.
"""
from __future__ import annotations

import atexit
import collections
import contextlib
import threading
from typing import TYPE_CHECKING, Iterator

from hal import _C

if TYPE_CHECKING:
    from hal._device import Device, DeviceLike

__all__ = ["Stream", "Event", "stream", "current_stream"]


class Stream:
    """An in-order work queue on one device. `hal.device("emu:1").Stream()` makes a new one; it is destroyed
    (after its queued work) when the last reference to it goes, unless it is some thread's current stream."""

    __slots__ = ("device", "_native")

    def __init__(self, device: "DeviceLike"):
        from hal._device import device as _device

        self.device: Device = _device(device)
        self._native = _C.Stream(self.device._native)

    @classmethod
    def _wrap(cls, device: "Device", native: "_C.Stream") -> "Stream":
        s = cls.__new__(cls)
        s.device, s._native = device, native
        return s

    @property
    def handle(self) -> int:
        """A stable id of the underlying stream (two wrappers of one stream share it)."""
        return self._native.handle

    def synchronize(self) -> None:
        """Blocks until all work queued so far on this stream has completed. Ctrl-C interrupts the wait
        (KeyboardInterrupt; the work stays queued)."""
        self._native.synchronize()
        _release_host_refs(self, everything=True)

    def query(self) -> bool:
        """True when all work queued so far has completed. Never blocks."""
        return self._native.query()

    def wait_event(self, event: "Event") -> None:
        """Work queued on this stream from now on waits for `event`'s latest record."""
        self._native.wait_event(event._native)

    def wait_stream(self, other: "Stream") -> None:
        """Work queued on this stream from now on waits for everything queued on `other` so far."""
        e = Event(other.device, timing=False)
        e.record(other)
        self.wait_event(e)

    def record_event(self, event: "Event | None" = None) -> "Event":
        event = event or Event(self.device)
        event.record(self)
        return event

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Stream) and other.handle == self.handle

    def __hash__(self) -> int:
        return hash(("hal.Stream", self.handle))

    def __repr__(self) -> str:
        return f"hal.Stream(device={self.device.name!r}, handle={self.handle:#x})"


class Event:
    """A point in a stream's work: record it, wait on it from other streams, time between two."""

    __slots__ = ("device", "_native")

    def __init__(self, device: "DeviceLike", timing: bool = True):
        from hal._device import device as _device

        self.device: Device = _device(device)
        self._native = _C.Event(self.device._native, timing)

    def record(self, stream: Stream | None = None) -> None:
        self._native.record((stream or current_stream(self.device))._native)

    def synchronize(self) -> None:
        """Blocks until the event's latest record has completed; Ctrl-C interrupts the wait."""
        self._native.synchronize()

    def query(self) -> bool:
        return self._native.query()

    def elapsed_time(self, end: "Event") -> float:
        """Milliseconds from this event's completion to `end`'s; both created with timing=True."""
        return self._native.elapsed_time(end._native)

    def __repr__(self) -> str:
        return f"hal.Event(device={self.device.name!r})"


# --- Current stream, per thread and device --------------------------------------------------------------
# The runtime keeps it (hal::Device::current_stream), so the torch bridge, which links the same runtime, sees the
# same stream: hal.current_stream(i) is torch.hal.current_stream(i).


def current_stream(device: "DeviceLike | None" = None) -> Stream:
    """This thread's current stream on `device` (default: device 0)."""
    from hal._device import device as _device

    dev = _device(0 if device is None else device)
    return Stream._wrap(dev, dev._native.current_stream())


@contextlib.contextmanager
def stream(s: Stream) -> Iterator[Stream]:
    """Makes `s` the current stream of its device on this thread for the `with` block."""
    previous = s.device._native.exchange_current_stream(s._native)
    try:
        yield s
    finally:
        s.device._native.exchange_current_stream(previous)


# --- Host buffers of copies still in flight -------------------------------------------------------------
# An asynchronous copy reads or writes host memory after the call returns, so the Python object owning that
# memory must outlive the copy. We keep it here, per stream in queue order, with an event recorded after the
# copy, and drop it once the event has completed (checked on later copies and on synchronize). At exit the
# runtime stops without waiting for queued work (registry.h), so what is still held then is kept until the
# process ends: a copy still running must never write into freed memory.
_pending_lock = threading.Lock()
_pending: dict[tuple[int, int], collections.deque[tuple[Event, object]]] = {}


def _key(s: Stream) -> tuple[int, int]:
    return s.device.index, s.handle


def _keep_host_ref(s: Stream, obj: object) -> None:
    """Keeps `obj` alive until the work queued on `s` so far has completed."""
    try:
        e = Event(s.device, timing=False)
        e.record(s)
    except BaseException:
        # No event can follow the work (the runtime shut down under us, Ctrl-C, a device error): the work may
        # still be queued, so the memory is kept until the process ends.
        _C._keep_until_exit(obj)
        raise
    with _pending_lock:
        _pending.setdefault(_key(s), collections.deque()).append((e, obj))
    _release_host_refs(s)


def _finish_host_copy(s: Stream, obj: object, non_blocking: bool) -> None:
    """After a copy using the host memory of `obj` was queued on `s`: waits for it, or (non_blocking) keeps `obj`
    alive until it completes. A wait that ends early (Ctrl-C, shutdown) leaves the copy queued, so `obj` is then
    kept as for a non-blocking copy: the caller's frame may let go of it while the copy still reads or writes."""
    if non_blocking:
        _keep_host_ref(s, obj)
        return
    try:
        s.synchronize()
    except BaseException:
        _keep_host_ref(s, obj)
        raise


def _release_host_refs(s: Stream, everything: bool = False) -> None:
    with _pending_lock:
        entries = _pending.get(_key(s))
        while entries and (everything or entries[0][0].query()):  # Completion follows queue order.
            entries.popleft()
        if entries is not None and not entries:
            del _pending[_key(s)]


def _release_device_host_refs(device_index: int) -> None:
    """After every stream of a device was synchronized."""
    with _pending_lock:
        for key in [k for k in _pending if k[0] == device_index]:
            del _pending[key]


@atexit.register  # Runs before hal._C's own exit hook (atexit is last in, first out).
def _shutdown() -> None:
    _C._shutdown()  # First: no copy can be queued after this.
    with _pending_lock:
        for entries in _pending.values():
            for _, obj in entries:
                _C._keep_until_exit(obj)
