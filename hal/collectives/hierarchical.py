"""The hierarchical all-reduce across islands: reduce inside each island (the plugin's collective), the
island leaders all-reduce the result on host buffers (leaders.py: through the cpu plugin's shared memory when
they share one host, else over Gloo), each leader broadcasts it inside its island.

Large tensors go in chunks (HAL_COLLECTIVES_CHUNK_BYTES, default 4 MiB) so the steps overlap: while the leaders
exchange chunk i, the island is reducing and the leader copying later chunks to the host, and chunk i-WINDOW
is coming back and being broadcast. All of one op's device work is queued by the worker's issue thread, in the
same order on every rank of an island (a communicator's ops must be), so the next op queues after it.
"""
from __future__ import annotations

import collections
import functools
import os
from typing import Callable

import torch
import torch.distributed as dist

from hal.collectives.host import finish_avg
from hal.collectives.island import Island
from hal.collectives.leaders import GlooLeaders, SharedMemoryLeaders, host_view

R = dist.ReduceOp
CHUNK_BYTES = int(os.environ.get("HAL_COLLECTIVES_CHUNK_BYTES", str(4 << 20)))
WINDOW = 4  # Chunk exchanges in flight at once.


class Hierarchical:
    def __init__(self, island: Island | None, leaders: GlooLeaders | SharedMemoryLeaders | None, device_index: int,
                 world: int, direct: bool = False) -> None:
        """|island|: this rank's island communicator (None for an island of one, or when |direct|); |leaders|:
        the island leaders' exchange (leaders.py), None on the other ranks. |direct|: this rank's device memory
        is the shared-memory exchange's own (the cpu device), so it joins the exchange with its tensor itself:
        no island step, no staging copies."""
        from hal import _C

        self.island = island
        self.leaders = leaders
        self.direct = direct
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
        leader = self.leaders is not None
        if self.direct:  # The exchange reads and writes the tensor's own memory, on another stream: let it land.
            self.stream.synchronize()
        # A member's result (the average too: the leader divides) comes with the island's broadcast.
        host = (host_view(flat) if self.direct else self.leaders.staging(flat.numel(), t.dtype)) if leader else None
        staged = list(host.split(step)) if host is not None and flat.numel() else []
        nbytes = [c.numel() * c.element_size() for c in chunks]
        # 1. Per chunk: reduce inside the island; the leader copies it to the host as soon as that is done.
        copied = []
        for i, c in enumerate(chunks):
            if self.island is not None:
                self.island.allreduce(c, island_red)
            if leader and not self.direct:
                self.stream.copy_d2h(staged[i].view(torch.uint8).numpy(), c.data_ptr(), nbytes[i])
                event = _C.Event(self.device, False)
                event.record(self.stream)
                copied.append(event)
        # 2. The leaders' exchange of chunk i starts as soon as its copy landed (it runs asynchronously); with
        # WINDOW exchanges in flight, the oldest is waited for, copied back and broadcast inside the island.
        in_flight: collections.deque = collections.deque()

        def back(i: int, work) -> None:
            if work is not None:
                work.wait()
                finish_avg(red, staged[i], self.world)
                if not self.direct:
                    self.stream.copy_h2d(chunks[i].data_ptr(), staged[i].view(torch.uint8).numpy(), nbytes[i])
            if self.island is not None:
                self.island.broadcast(chunks[i], 0)

        for i in range(len(chunks)):
            if leader:
                if not self.direct:
                    copied[i].synchronize()
                in_flight.append((i, self.leaders.allreduce(staged[i], island_red)))
            else:
                in_flight.append((i, None))
            if len(in_flight) > WINDOW:
                back(*in_flight.popleft())
        while in_flight:
            back(*in_flight.popleft())
        if not t.is_contiguous():
            with torch.hal.stream(self.torch_stream):
                t.copy_(flat.view(t.shape))
        return functools.partial(_finish, self.stream, [t], (flat, host))


def _finish(stream, outputs: list[torch.Tensor], held: tuple) -> list[torch.Tensor]:
    """Waits for the op's device work; |held| (staging buffers the queued copies use) lives until then."""
    stream.synchronize()
    return outputs
