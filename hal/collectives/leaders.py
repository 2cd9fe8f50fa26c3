"""How the island leaders of a hierarchical all-reduce exchange their host-staged chunks.

    all leaders on one host, its cpu plugin has collectives  -> SharedMemoryLeaders: the cpu plugin's own
        shared-memory all-reduce over staging buffers in cpu-device (host) memory; no sockets, no kernel copies
    otherwise (leaders on several hosts, no cpu device)       -> GlooLeaders: Gloo over TCP on pinned buffers

Both give the hierarchical all-reduce staging buffers (CPU tensors it copies device chunks into and back out of)
and an asynchronous all-reduce of one chunk whose handle it waits for later, so several chunks are in flight.
"""
from __future__ import annotations

import ctypes
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist

from hal.collectives.island import DTYPES, OPS, Island

R = dist.ReduceOp


class GlooLeaders:
    def __init__(self, store: dist.Store, index: int, count: int, timeout: timedelta) -> None:
        self.group = dist.ProcessGroupGloo(store, index, count, timeout)

    def staging(self, numel: int, dtype: torch.dtype) -> torch.Tensor:
        """Page-locked host memory from torch's host allocator for hal (cached across ops); plain memory if none."""
        try:
            return torch.empty(numel, dtype=dtype, pin_memory=True)
        except RuntimeError:
            return torch.empty(numel, dtype=dtype)

    def allreduce(self, chunk: torch.Tensor, red: R.RedOpType) -> dist.Work:
        opts = dist.AllreduceOptions()
        opts.reduceOp = red
        return self.group.allreduce([chunk], opts)

    def abort(self) -> None:
        self.group.abort()

    def destroy(self) -> None:
        self.group.shutdown()


class _Queued:
    """The handle of a chunk queued on the cpu device's stream: waiting is synchronizing an event after it."""

    def __init__(self, event) -> None:
        self.event = event

    def wait(self) -> None:
        self.event.synchronize()


class SharedMemoryLeaders:
    """The leaders' exchange inside one host through the cpu plugin's collectives (devices/common/
    sw_collective.c): the leaders form one more clique, of the cpu device, whose staging buffers are that
    device's memory, which is host memory (the device is host-addressable), so device chunks are copied into it
    with the devices' own d2h copies and the reduction reads them where they landed."""

    def __init__(self, store: dist.Store, leaders: list[int], rank: int, cpu_index: int, timeout_s: float) -> None:
        self.island = Island(store, "comm", leaders, rank, cpu_index, timeout_s)
        self.cpu = torch.device("hal", cpu_index)

    def staging(self, numel: int, dtype: torch.dtype) -> torch.Tensor:
        """A CPU tensor over a fresh cpu-device allocation (the plugin checks that the buffers of its
        collectives are its memory); the allocation lives as long as the tensor (its storage holds it)."""
        return host_view(torch.empty(numel, dtype=dtype, device=self.cpu))

    def allreduce(self, chunk: torch.Tensor, red: R.RedOpType) -> _Queued:
        from hal import _C

        # |chunk| is a CPU view of cpu-device memory: its data_ptr is the device pointer the plugin resolves.
        self.island.comm.allreduce(chunk.data_ptr(), chunk.data_ptr(), chunk.numel(),
                                   DTYPES[chunk.dtype], OPS[red], self.island.stream)
        event = _C.Event(self.island.device, False)
        event.record(self.island.stream)
        return _Queued(event)

    def abort(self) -> None:
        self.island.abort()

    def destroy(self) -> None:
        self.island.destroy()


def host_view(t: torch.Tensor) -> torch.Tensor:
    """A CPU tensor over the memory of |t|, a contiguous tensor on the cpu device (host-addressable: its device
    pointers are host addresses). It holds |t|, so the device allocation outlives every use of the view."""
    nbytes = t.numel() * t.element_size()
    if nbytes == 0:
        return torch.empty(0, dtype=t.dtype)
    raw = (ctypes.c_uint8 * nbytes).from_address(t.data_ptr())
    view = torch.from_numpy(np.ctypeslib.as_array(raw)).view(t.dtype)
    view._hal_memory = t
    return view


def cpu_device_index() -> int | None:
    """The torch index of the bundled cpu plugin's device when it is visible and has collectives, else None."""
    from hal import _C

    for i in range(_C.device_count()):
        device = _C.get_device(i)
        if device.plugin == "cpu" and device.properties().host_addressable and device.supports("allreduce"):
            return i
    return None
