"""The host-staged path: device-to-host copies, one world Gloo group, host-to-device copies.

The universal fallback (any plugin, any dtype Gloo has, across hosts over TCP), the baseline the faster paths
are measured against, and what `HAL_COLLECTIVES=host` forces. CPU tensors take it without copies.

Each method launches its op (copies in, an async Gloo call) and returns the `finish` step that waits for Gloo
and writes the results back (see worker.py). Gloo lacks AVG: it sums and divides; it lacks reduce-scatter of
arbitrary shapes and uneven all-gather: they are an all-reduce and a padded all-gather.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.distributed as dist
from torch._C import _distributed_c10d as c10d

from hal.collectives import deterministic

Finish = Callable[[], list]
ReduceOp = dist.ReduceOp


def to_host(t: torch.Tensor) -> torch.Tensor:
    """A contiguous CPU tensor with |t|'s values: |t| itself when it is one (Gloo then works in place)."""
    if t.device.type == "cpu" and t.is_contiguous():
        return t
    return t.detach().to("cpu").contiguous()


# What Gloo moves and reduces; others move as bytes and reduce widened (WIDER), then narrowed back exactly as
# the dtype's own arithmetic would (integers wrap, fp8 rounds once).
GLOO_DTYPES = {torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int8, torch.uint8, torch.int32,
               torch.int64, torch.bool, torch.complex64, torch.complex128}
WIDER = {torch.int16: torch.int64, torch.uint16: torch.int64, torch.uint32: torch.int64, torch.uint64: torch.int64,
         torch.float8_e4m3fn: torch.float32, torch.float8_e5m2: torch.float32}


def wire(h: torch.Tensor) -> torch.Tensor:
    """|h| (contiguous, on the host) as Gloo can move it: itself, or its bytes."""
    return h if h.dtype in GLOO_DTYPES else h.reshape(-1).view(torch.uint8)


def wire_count(h: torch.Tensor, n: int) -> int:
    """|n| elements of |h| in the units of wire(h)."""
    return n if h.dtype in GLOO_DTYPES else n * h.element_size()


def from_host(dst: torch.Tensor, src: torch.Tensor) -> None:
    if dst.device.type == "cpu" and dst.data_ptr() == src.data_ptr() and dst.is_contiguous():
        return
    dst.copy_(src.view(dst.shape))


def sync_written(tensors: list[torch.Tensor]) -> None:
    """Waits for this thread's copies into hal tensors, so a completed work's outputs are in place."""
    for index in sorted({t.device.index for t in tensors if t.device.type == "hal"}):
        torch.hal.current_stream(index).synchronize()


def gloo_op(op: ReduceOp.RedOpType) -> ReduceOp.RedOpType:
    return ReduceOp.SUM if op == ReduceOp.AVG else op


def finish_avg(op: ReduceOp.RedOpType, t: torch.Tensor, size: int) -> None:
    """AVG as Gloo's SUM divided by the group size (integers truncate, as NCCL's AVG does)."""
    if op != ReduceOp.AVG:
        return
    if t.is_floating_point() or t.is_complex():
        t.div_(size)
    else:
        t.copy_(torch.div(t, size, rounding_mode="trunc"))


class HostPath:
    def __init__(self, gloo: dist.ProcessGroup, rank: int, size: int, deterministic: bool = False) -> None:
        self.gloo = gloo
        self.rank = rank
        self.size = size
        self.deterministic = deterministic

    def _done(self, waits: list, write: Callable[[], list]) -> Finish:
        """The finish step: waits for |waits| (Gloo works, or callables), then |write|s the results back."""
        def finish() -> list:
            for w in waits:
                w() if callable(w) else w.wait()
            out = write()
            sync_written(out)
            return out
        return finish

    def _reduce(self, flat: torch.Tensor, op: ReduceOp.RedOpType) -> Callable[[], None]:
        """Launches the all-reduce of the contiguous CPU tensor |flat| in place; the callable waits for it.
        Deterministic mode reduces floating sums in a fixed order instead (deterministic.py)."""
        if not flat.numel():
            return lambda: None
        if flat.dtype not in GLOO_DTYPES:
            wide = flat.to(WIDER[flat.dtype])
            wait_wide = self._reduce(wide, op)

            def narrow() -> None:
                wait_wide()
                flat.copy_(wide)
            return narrow
        if self.deterministic and deterministic.applies(flat.dtype, op):
            deterministic.allreduce(self.gloo, self.size, flat, op)
            return lambda: None
        opts = c10d.AllreduceOptions()
        opts.reduceOp = ReduceOp(gloo_op(op))
        work = self.gloo.allreduce([flat], opts)

        def wait() -> None:
            work.wait()
            finish_avg(op, flat, self.size)
        return wait

    def allreduce(self, tensors: list[torch.Tensor], op: ReduceOp.RedOpType) -> Finish:
        hosts = [to_host(t) for t in tensors]
        waits = [self._reduce(h.view(-1), op) for h in hosts]

        def write() -> list:
            for t, h in zip(tensors, hosts):
                from_host(t, h)
            return tensors
        return self._done(waits, write)

    def allreduce_coalesced(self, tensors: list[torch.Tensor], op: ReduceOp.RedOpType) -> Finish:
        """One all-reduce per dtype over the tensors flattened together (DDP's buckets come this way)."""
        by_dtype: dict[torch.dtype, list[int]] = {}
        for i, t in enumerate(tensors):
            by_dtype.setdefault(t.dtype, []).append(i)
        flats = {dt: torch.cat([to_host(tensors[i]).reshape(-1) for i in idx]) for dt, idx in by_dtype.items()}
        waits = [self._reduce(flat, op) for flat in flats.values()]

        def write() -> list:
            for dt, idx in by_dtype.items():
                parts = flats[dt].split([tensors[i].numel() for i in idx])
                for i, part in zip(idx, parts):
                    tensors[i].copy_(part.view(tensors[i].shape))
            return tensors
        return self._done(waits, write)

    def broadcast(self, tensors: list[torch.Tensor], root: int) -> Finish:
        hosts = [to_host(t) for t in tensors]
        opts = c10d.BroadcastOptions()
        opts.rootRank = root
        works = [self.gloo.broadcast([wire(h)], opts) for h in hosts if h.numel()]

        def write() -> list:
            if self.rank != root:
                for t, h in zip(tensors, hosts):
                    from_host(t, h)
            return tensors
        return self._done(works, write)

    def allgather(self, outputs: list[torch.Tensor], input: torch.Tensor) -> Finish:
        """All-gather into one tensor per rank; uneven sizes go padded to the largest and are cut back."""
        sizes = [o.numel() for o in outputs]
        width = max(sizes)
        src = to_host(input).reshape(-1)
        if src.numel() < width:
            src = torch.cat([src, src.new_zeros(width - src.numel())])
        gathered = [src.new_empty(width) for _ in outputs]
        works = [self.gloo.allgather([[wire(g) for g in gathered]], [wire(src)])] if width else []

        def write() -> list:
            for o, g, n in zip(outputs, gathered, sizes):
                o.copy_(g[:n].view(o.shape))
            return outputs
        return self._done(works, write)

    def allgather_into(self, output: torch.Tensor, input: torch.Tensor) -> Finish:
        src = to_host(input).reshape(-1)
        dst = output if output.device.type == "cpu" and output.is_contiguous() else \
            torch.empty(output.numel(), dtype=output.dtype)
        flat = dst.view(-1)
        works = [self.gloo._allgather_base(wire(flat), wire(src))] if src.numel() else []

        def write() -> list:
            from_host(output, flat)
            return [output]
        return self._done(works, write)

    def reduce_scatter(self, output: torch.Tensor, inputs: list[torch.Tensor], op: ReduceOp.RedOpType) -> Finish:
        """This rank's part of the reduction of every rank's |inputs|: an all-reduce of them all, cut."""
        flat = torch.cat([to_host(t).reshape(-1) for t in inputs])
        waits = [self._reduce(flat, op)]
        offset = sum(t.numel() for t in inputs[:self.rank])

        def write() -> list:
            output.copy_(flat[offset:offset + output.numel()].view(output.shape))
            return [output]
        return self._done(waits, write)

    def alltoall(self, output: torch.Tensor, input: torch.Tensor, out_splits: list[int],
                 in_splits: list[int]) -> Finish:
        src = to_host(input)
        dst = torch.empty_like(output, device="cpu", memory_format=torch.contiguous_format)
        opts = c10d.AllToAllOptions()
        works = [self.gloo.alltoall_base(wire(dst), wire(src), [wire_count(dst, n) for n in out_splits],
                                         [wire_count(src, n) for n in in_splits], opts)]

        def write() -> list:
            from_host(output, dst)
            return [output]
        return self._done(works, write)

    def alltoall_lists(self, outputs: list[torch.Tensor], inputs: list[torch.Tensor]) -> Finish:
        """all_to_all of tensor lists: one all_to_all_single over them flattened (one dtype)."""
        src = torch.cat([to_host(t).reshape(-1) for t in inputs])
        dst = torch.empty(sum(t.numel() for t in outputs), dtype=src.dtype)
        sizes = [t.numel() for t in outputs]
        works = [self.gloo.alltoall_base(wire(dst), wire(src), [wire_count(dst, n) for n in sizes],
                                         [wire_count(src, t.numel()) for t in inputs], c10d.AllToAllOptions())]

        def write() -> list:
            for t, part in zip(outputs, dst.split(sizes)):
                t.copy_(part.view(t.shape))
            return outputs
        return self._done(works, write)

    def send(self, tensor: torch.Tensor, dst: int, tag: int) -> Finish:
        host = to_host(tensor)
        works = [self.gloo.send([wire(host)], dst, tag)]
        return self._done(works, lambda: [tensor])

    def recv(self, tensor: torch.Tensor, src: int | None, tag: int) -> tuple[Finish, Callable[[], int]]:
        """Receives into |tensor| from |src| (None: any rank); the second callable names the sender once done."""
        host = torch.empty(tensor.shape, dtype=tensor.dtype)
        w = self.gloo.recv([wire(host)], src, tag) if src is not None else self.gloo.recv_anysource([wire(host)], tag)

        def write() -> list:
            from_host(tensor, host)
            return [tensor]
        return self._done([w], write), (lambda: src if src is not None else w._source_rank())

    def barrier(self) -> Finish:
        return self._done([self.gloo.barrier(c10d.BarrierOptions())], lambda: [])

    def reduce(self, tensor: torch.Tensor, root: int, op: ReduceOp.RedOpType) -> Finish:
        """An all-reduce whose result only |root| keeps (every dtype, AVG and deterministic sums for free)."""
        host = to_host(tensor)
        waits = [self._reduce(host.view(-1), op)]

        def write() -> list:
            if self.rank == root:
                from_host(tensor, host)
            return [tensor]
        return self._done(waits, write)

    def gather(self, outputs: list[torch.Tensor], input: torch.Tensor, root: int) -> Finish:
        src = to_host(input)
        hosts = [torch.empty(o.shape, dtype=o.dtype) for o in outputs]
        opts = c10d.GatherOptions()
        opts.rootRank = root
        works = [self.gloo.gather([[wire(h) for h in hosts]] if self.rank == root else [], [wire(src)], opts)]

        def write() -> list:
            for o, h in zip(outputs, hosts):
                from_host(o, h)
            return outputs
        return self._done(works, write)

    def scatter(self, output: torch.Tensor, inputs: list[torch.Tensor], root: int) -> Finish:
        dst = torch.empty(output.shape, dtype=output.dtype)
        opts = c10d.ScatterOptions()
        opts.rootRank = root
        works = [self.gloo.scatter([wire(dst)], [[wire(to_host(t)) for t in inputs]] if self.rank == root else [],
                                   opts)]

        def write() -> list:
            from_host(output, dst)
            return [output]
        return self._done(works, write)
