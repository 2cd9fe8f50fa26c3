"""One island's communicator: the plugin's own collectives among the ranks of one plugin on one host.

Ops are queued on the island's own stream of this rank's device, after it waited for the events the caller's
streams recorded at issue time (the caller's stream order holds; the caller's stream is not held up). The
worker's torch ops for the op (contiguous copies, AVG's division) run on that stream too.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.distributed as dist

R = dist.ReduceOp
DTYPES = {torch.float32: "f32", torch.float16: "f16", torch.bfloat16: "bf16", torch.float64: "f64",
          torch.float8_e4m3fn: "f8e4m3", torch.int8: "i8", torch.uint8: "u8", torch.int32: "i32", torch.int64: "i64"}
# The bundled plugins reduce these; fp8 only moves (devices/common/sw_collective.c), so it reduces on the host.
REDUCIBLE = set(DTYPES) - {torch.float8_e4m3fn}
OPS = {R.SUM: "sum", R.PRODUCT: "prod", R.MIN: "min", R.MAX: "max", R.AVG: "avg"}


class Island:
    def __init__(self, store: dist.Store, key: str, ranks: list[int], rank: int, device_index: int,
                 timeout_s: float) -> None:
        """Joins the communicator of |ranks| (global ranks, sorted; |rank| among them): the first creates the
        clique's id and publishes it under |key|. Blocks until all joined or the timeout passes."""
        from hal import _C

        self.ranks = ranks
        self.index = ranks.index(rank)
        self.device = _C.get_device(device_index)
        if self.index == 0:
            uid = _C.comm_unique_id(self.device)
            store.set(f"{key}/id", uid)
        else:
            uid = store.get(f"{key}/id")
        self.comm = _C.Communicator(self.device, len(ranks), bytes(uid), self.index, int(timeout_s * 1000))
        self.stream = _C.Stream(self.device)
        self.torch_stream = torch.hal.Stream.from_hal(self.stream)

    def supports(self, op: str, dtype: torch.dtype, red: R.RedOpType | None = None) -> bool:
        if red is not None and (dtype not in REDUCIBLE or red not in OPS):
            return False
        return dtype in DTYPES and self.comm.supports(op)

    def after(self, marks: dict) -> None:
        for event in marks.values():
            self.stream.wait_event(event)

    def done(self, outputs: list[torch.Tensor]) -> Callable[[], list]:
        def finish() -> list:
            self.stream.synchronize()
            return outputs
        return finish

    # Each op below queues on self.stream (call after(marks) first) and returns at once.
    def allreduce(self, t: torch.Tensor, red: R.RedOpType) -> None:
        with torch.hal.stream(self.torch_stream):
            work = t if t.is_contiguous() else t.contiguous()
            if work.numel():
                self.comm.allreduce(work.data_ptr(), work.data_ptr(), work.numel(), DTYPES[t.dtype], OPS[red],
                                    self.stream)
            if work is not t:
                t.copy_(work)

    def broadcast(self, t: torch.Tensor, root_index: int) -> None:
        with torch.hal.stream(self.torch_stream):
            work = t if t.is_contiguous() else t.contiguous()
            if work.numel():
                self.comm.broadcast(work.data_ptr(), work.data_ptr(), work.numel(), DTYPES[t.dtype], root_index,
                                    self.stream)
            if work is not t:
                t.copy_(work)

    def allgather_into(self, output: torch.Tensor, input: torch.Tensor) -> None:
        with torch.hal.stream(self.torch_stream):
            src = input.contiguous()
            dst = output if output.is_contiguous() else torch.empty_like(output, memory_format=torch.contiguous_format)
            if src.numel():
                self.comm.allgather(src.data_ptr(), dst.data_ptr(), src.numel(), DTYPES[input.dtype], self.stream)
            if dst is not output:
                output.copy_(dst)

    def allgather_list(self, outputs: list[torch.Tensor], input: torch.Tensor) -> None:
        """all_gather into one tensor per rank (equal sizes): through one flat buffer."""
        with torch.hal.stream(self.torch_stream):
            flat = torch.empty(input.numel() * len(outputs), dtype=input.dtype, device=input.device)
        self.allgather_into(flat, input)
        with torch.hal.stream(self.torch_stream):
            for o, part in zip(outputs, flat.split(input.numel())):
                o.copy_(part.view(o.shape))

    def reduce_scatter(self, output: torch.Tensor, input: torch.Tensor, red: R.RedOpType) -> None:
        with torch.hal.stream(self.torch_stream):
            src = input.contiguous()
            dst = output if output.is_contiguous() else torch.empty_like(output, memory_format=torch.contiguous_format)
            if dst.numel():
                self.comm.reduce_scatter(src.data_ptr(), dst.data_ptr(), dst.numel(), DTYPES[input.dtype],
                                         OPS[red], self.stream)
            if dst is not output:
                output.copy_(dst)

    def abort(self) -> None:
        self.comm.abort()

    def destroy(self) -> None:
        self.comm.destroy()
