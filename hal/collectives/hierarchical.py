"""The hierarchical all-reduce across islands: reduce inside each island (the plugin's collective), the
island leaders all-reduce over Gloo on pinned host buffers, each leader broadcasts the result inside its island.

Large tensors go in chunks (HAL_COLLECTIVES_CHUNK_BYTES, default 4 MiB) so the steps overlap: while Gloo
exchanges chunk i, the island is reducing and the leader copying chunk i+1 to the host, and chunk i-1 is
coming back and being broadcast. All of one op's device work is queued by the worker's issue thread, in the
same order on every rank of an island (a communicator's ops must be), so the next op queues after it.
"""
from __future__ import annotations

import functools
import os
from typing import Callable

import torch
import torch.distributed as dist

from hal.collectives.host import finish_avg
from hal.collectives.island import Island

R = dist.ReduceOp
CHUNK_BYTES = int(os.environ.get("HAL_COLLECTIVES_CHUNK_BYTES", str(4 << 20)))


def pinned(numel: int, dtype: torch.dtype) -> torch.Tensor:
    """Page-locked host memory from torch's host allocator for hal (cached across ops); plain memory if none."""
    try:
        return torch.empty(numel, dtype=dtype, pin_memory=True)
    except RuntimeError:
        return torch.empty(numel, dtype=dtype)


class Hierarchical:
    def __init__(self, island: Island | None, leaders: dist.ProcessGroup | None, device_index: int,
                 world: int) -> None:
        """|island|: this rank's island communicator (None for an island of one); |leaders|: the Gloo group of
        the island leaders, None on the other ranks."""
        from hal import _C

        self.island = island
        self.leaders = leaders
        self.world = world
        self.device = _C.get_device(device_index)
        self.stream = island.stream if island is not None else _C.Stream(self.device)
        self.torch_stream = torch.hal.Stream.from_hal(self.stream)

    def allreduce(self, t: torch.Tensor, red: R.RedOpType, marks: dict) -> Callable[[], list]:
        from hal import _C

        for event in marks.values():
            self.stream.wait_event(event)
        with torch.hal.stream(self.torch_stream):
            flat = (t if t.is_contiguous() else t.contiguous()).view(-1)
        step = max(1, CHUNK_BYTES // max(1, t.element_size()))
        chunks = list(flat.split(step)) if flat.numel() else []
        island_red = R.SUM if red == R.AVG else red
        if self.island is not None:
            for c in chunks:
                self.island.allreduce(c, island_red)
        if self.leaders is not None:
            host = pinned(flat.numel(), t.dtype)
            staged = list(host.split(step)) if flat.numel() else []
            copied = []
            for c, h in zip(chunks, staged):
                self.stream.copy_d2h(h.view(torch.uint8).numpy(), c.data_ptr(), c.numel() * c.element_size())
                event = _C.Event(self.device, False)
                event.record(self.stream)
                copied.append(event)
            opts = dist.AllreduceOptions()
            opts.reduceOp = island_red
            works = []
            for h, event in zip(staged, copied):
                event.synchronize()
                works.append(self.leaders.allreduce([h], opts))
            for c, h, w in zip(chunks, staged, works):
                w.wait()
                finish_avg(red, h, self.world)
                self.stream.copy_h2d(c.data_ptr(), h.view(torch.uint8).numpy(), c.numel() * c.element_size())
        else:
            host = None  # A member's result (the average too: the leader divides) comes with the broadcast.
        if self.island is not None:
            for c in chunks:
                self.island.broadcast(c, 0)
        if not t.is_contiguous():
            with torch.hal.stream(self.torch_stream):
                t.copy_(flat.view(t.shape))
        return functools.partial(_finish, self.stream, [t], (flat, host))


def _finish(stream, outputs: list[torch.Tensor], held: tuple) -> list[torch.Tensor]:
    """Waits for the op's device work; |held| (staging buffers the queued copies use) lives until then."""
    stream.synchronize()
    return outputs
