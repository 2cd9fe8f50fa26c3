"""ProcessGroupHAL: the `hal` torch.distributed backend, a Python `dist.ProcessGroup` subclass.

torch's Python collectives and DDP's C++ reducer (through c10d's pybind trampoline) call these methods. Each
checks its arguments, notes where the caller's streams stand, and queues the op on the group's worker, which
runs ops in issue order and returns at once with a Work. Which path an op takes (host-staged Gloo, a plugin's
communicator, the hierarchical mix) is chosen per op from the devices of its tensors (see paths.py).

Why Python: c10d's C++ `Backend` has no Python constructor, and the hot paths are native already (Gloo, the
plugins' collectives); this layer only orders, stages and chooses.
"""
from __future__ import annotations

import atexit
import itertools
import os
import weakref
from datetime import timedelta
from typing import Any, Callable

import torch
import torch.distributed as dist

from hal.collectives import deterministic
from hal.collectives.host import GLOO_DTYPES, WIDER, HostPath
from hal.collectives.paths import Paths
from hal.collectives.work import Work
from hal.collectives.worker import Worker

ReduceOp = dist.ReduceOp
DeviceStart = Callable[[Paths, dict], "Callable[[], list] | None"]
# What Gloo (and so every path, through its fallback) reduces; PREMUL_SUM has no Gloo kernel.
_REDUCE_OPS = {ReduceOp.SUM, ReduceOp.AVG, ReduceOp.MAX, ReduceOp.MIN, ReduceOp.PRODUCT, ReduceOp.BAND,
               ReduceOp.BOR, ReduceOp.BXOR}


def _reduce_op(op: Any, what: str) -> ReduceOp.RedOpType:
    red = getattr(op, "op", op)
    if red not in _REDUCE_OPS:
        raise ValueError(f"hal: {what} does not support ReduceOp.{getattr(red, 'name', red)} (supported: SUM, AVG, MAX, MIN, PRODUCT, BAND, "
                         f"BOR, BXOR)")
    return red


_BITWISE = {ReduceOp.BAND, ReduceOp.BOR, ReduceOp.BXOR}


def _check_reduce(tensors: list[torch.Tensor], red: ReduceOp.RedOpType, what: str) -> None:
    """Reductions that have no meaning for a dtype fail here, at the call, not later in the worker (where a
    failure breaks the group)."""
    for t in tensors:
        dt = t.dtype
        if dt not in GLOO_DTYPES and dt not in WIDER:
            raise TypeError(f"hal: {what}: reductions of {dt} are not supported (it can be moved: broadcast, "
                            f"all-gather, all-to-all, send/recv)")
        if red in _BITWISE and (dt.is_floating_point or dt.is_complex):
            raise ValueError(f"hal: {what}: ReduceOp.{red.name} needs an integer or bool tensor, got {dt}")
        if dt.is_complex and red not in (ReduceOp.SUM, ReduceOp.AVG, ReduceOp.PRODUCT):
            raise ValueError(f"hal: {what}: ReduceOp.{red.name} is not defined for complex tensors ({dt})")
        if dt == torch.bool and red == ReduceOp.AVG:
            raise ValueError(f"hal: {what}: ReduceOp.AVG is not defined for torch.bool tensors")
        if dt == torch.uint64 and red in (ReduceOp.MAX, ReduceOp.MIN):
            raise ValueError(f"hal: {what}: ReduceOp.{red.name} of torch.uint64 is not supported (Gloo has no "
                             f"unsigned 64-bit type; sums and bitwise ops are)")


def _check(tensors: list[torch.Tensor], what: str) -> None:
    for t in tensors:
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"hal: {what} expects tensors, got {type(t).__name__}")
        if t.device.type not in ("hal", "cpu"):
            raise ValueError(f"hal: {what} got a tensor on {t.device}; the hal backend takes hal:N and cpu tensors")
        if t.is_sparse:
            raise ValueError(f"hal: {what} does not support sparse tensors")


def _all(finishes: list[Callable[[], list]], outputs: list[torch.Tensor]) -> Callable[[], list]:
    """One finish step for several ops launched together (the coalesced forms)."""
    def finish() -> list:
        for f in finishes:
            f()
        return outputs
    return finish


def _nbytes(tensors: list[torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


# Groups not shut down yet: at exit the ones a program left alive are shut down (see _close) before the
# interpreter finalizes.
_live: "weakref.WeakSet[ProcessGroupHAL]" = weakref.WeakSet()


@atexit.register
def _shutdown_live_groups() -> None:
    for group in list(_live):
        group.shutdown()


class ProcessGroupHAL(dist.ProcessGroup):
    def __init__(self, store: dist.Store, rank: int, size: int, timeout: timedelta) -> None:
        super().__init__(rank, size)
        self._store = store
        self._timeout = timeout
        self._seq = itertools.count(1)
        self._mode = os.environ.get("HAL_COLLECTIVES", "auto").strip().lower() or "auto"
        if self._mode not in ("auto", "host"):
            raise ValueError(f"hal: HAL_COLLECTIVES={self._mode!r}; expected 'auto' or 'host'")
        self._gloo = dist.ProcessGroupGloo(dist.PrefixStore("hal/host", store), rank, size, timeout)
        self._host = HostPath(self._gloo, rank, size, deterministic.enabled())
        self._worker = Worker(f"hal-pg-r{rank}", self._describe)
        self._bound: int | None = None
        self._paths: Paths | None = None
        self._closed = False
        _live.add(self)

    def _describe(self) -> str:
        return f"rank {self.rank()} of {self.size()}, timeout {self._timeout.total_seconds():.0f} s"

    def getBackendName(self) -> str:
        return "hal"

    def name(self) -> str:
        return "hal"

    # --- Queueing ---------------------------------------------------------------------------------------------
    def _submit(self, op: str, tensors: list[torch.Tensor], start: Callable[[], Callable[[], list]],
                work: Work | None = None, device_start: DeviceStart | None = None) -> Work:
        """Queues |op|. The worker runs |device_start|(paths, marks) when it returns a finish step (the op goes
        over a plugin's collectives), else |start| on the host path, after the caller's streams passed |marks|."""
        _check(tensors, op)
        work = work or Work(op, next(self._seq))
        marks = self._stream_marks(tensors)
        device = self._bind(tensors, op) if device_start is not None else None

        def run() -> Callable[[], list]:
            if device is not None:
                finish = device_start(self._paths_for(device), marks)
                if finish is not None:
                    return finish
            for event in marks.values():
                event.synchronize()
            return start()
        # Inside one island a device op's start only queues on the island's stream, or declines at once: it may
        # run on this thread (worker.py). The first device op sets the paths up (it blocks): the worker's.
        paths = self._paths
        inline = (lambda: device_start(paths, marks)) if device is not None and paths is not None and paths.single \
            else None
        return self._worker.submit(work, _nbytes(tensors), run, inline=inline)

    @staticmethod
    def _stream_marks(tensors: list[torch.Tensor]) -> dict[int, Any]:
        """An event on the current stream of each hal device involved, recorded now: the worker's device work
        starts only after what the caller queued before this call (the caller's stream order)."""
        from hal import _C

        marks = {}
        for index in sorted({t.device.index for t in tensors if t.device.type == "hal"}):
            device = _C.get_device(index)
            stream = device.stream(torch.hal.current_stream(index).stream_id)
            if stream.query():  # Idle: what it ran is done, so there is nothing to wait for (and no event to pay).
                continue
            event = _C.Event(device, False)
            event.record(stream)
            marks[index] = event
        return marks

    def _bind(self, tensors: list[torch.Tensor], op: str) -> int | None:
        """The hal device this rank's device paths use: that of its first collective on hal tensors. None (host
        path) for CPU tensors, mixed devices and HAL_COLLECTIVES=host."""
        if self._mode == "host" or not tensors or any(t.device.type != "hal" for t in tensors):
            return None
        indices = {t.device.index for t in tensors}
        if len(indices) > 1:
            return None
        index = indices.pop()
        if self._bound is None:
            self._bound = index
        elif index != self._bound:
            raise ValueError(f"hal: {op} got a tensor on hal:{index}, but this rank's collectives run on "
                             f"hal:{self._bound} (its first hal collective was there); use one device per rank, "
                             f"or HAL_COLLECTIVES=host")
        return index

    def _paths_for(self, device: int) -> Paths:
        """Runs on the worker's issue thread at the group's first device collective (same op on every rank)."""
        if self._paths is None:
            try:
                self._paths = Paths(self._store, self.rank(), self.size(), self._timeout, device)
            except Exception as e:
                raise dist.DistBackendError(
                    f"hal: setting up the device paths at this group's first collective on hal tensors failed "
                    f"(every rank must pass hal tensors to it; a rank on CPU tensors needs HAL_COLLECTIVES=host): "
                    f"{type(e).__name__}: {e}") from e
        return self._paths

    # --- Collectives ------------------------------------------------------------------------------------------
    def allreduce(self, tensors: list[torch.Tensor], opts: Any = None) -> Work:
        op = _reduce_op(opts.reduceOp if opts is not None else ReduceOp.SUM, "allreduce")
        _check_reduce(tensors, op, "allreduce")

        def on_device(paths: Paths, marks: dict) -> Callable[[], list] | None:
            if len(tensors) != 1:
                return None
            t = tensors[0]
            island = paths.on_island("allreduce", t.dtype, op)
            if island is not None:
                island.after(marks)
                island.allreduce(t, op)
                return island.done(tensors)
            across = paths.across_islands(t.dtype, op)
            return across.allreduce(t, op, marks) if across is not None else None
        return self._submit("allreduce", tensors, lambda: self._host.allreduce(tensors, op),
                            device_start=on_device)

    def allreduce_coalesced(self, tensors: list[torch.Tensor], opts: Any = None) -> Work:
        op = _reduce_op(opts.reduceOp if opts is not None else ReduceOp.SUM, "allreduce_coalesced")
        _check_reduce(tensors, op, "allreduce_coalesced")
        return self._submit("allreduce_coalesced", tensors, lambda: self._host.allreduce_coalesced(tensors, op))

    def broadcast(self, tensors: list[torch.Tensor], opts: Any = None) -> Work:
        root = opts.rootRank if opts is not None else 0

        def on_device(paths: Paths, marks: dict) -> Callable[[], list] | None:
            island = paths.on_island("broadcast", tensors[0].dtype) if len(tensors) == 1 else None
            if island is None:
                return None
            island.after(marks)
            island.broadcast(tensors[0], root)
            return island.done(tensors)
        return self._submit("broadcast", tensors, lambda: self._host.broadcast(tensors, root),
                            device_start=on_device)

    def allgather(self, output_lists: list[list[torch.Tensor]], inputs: list[torch.Tensor], opts: Any = None) -> Work:
        self._one("allgather", inputs)
        outputs = output_lists[0]
        if len(outputs) != self.size():
            raise ValueError(f"hal: allgather needs {self.size()} output tensors (one per rank), got {len(outputs)}")
        input = inputs[0]

        def on_device(paths: Paths, marks: dict) -> Callable[[], list] | None:
            island = paths.on_island("allgather", input.dtype)
            if island is None or any(o.numel() != input.numel() or o.dtype != input.dtype for o in outputs):
                return None
            island.after(marks)
            island.allgather_list(outputs, input)
            return island.done(outputs)
        return self._submit("allgather", [*outputs, input], lambda: self._host.allgather(outputs, input),
                            device_start=on_device)

    def allgather_coalesced(self, output_lists: list[list[torch.Tensor]], inputs: list[torch.Tensor],
                            opts: Any = None) -> Work:
        flat = [t for lst in output_lists for t in lst]

        return self._submit("allgather_coalesced", [*flat, *inputs], lambda: _all(
            [self._host.allgather(outs, t) for outs, t in zip(output_lists, inputs)], flat))

    def all_gather_single(self, output: torch.Tensor, input: torch.Tensor, opts: Any = None) -> Work:
        if output.numel() != input.numel() * self.size():
            raise ValueError(f"hal: all_gather_into_tensor: the output has {output.numel()} elements; it needs "
                             f"{self.size()} x the input's {input.numel()}")
        self._same_dtype("all_gather_into_tensor", output, input)

        def on_device(paths: Paths, marks: dict) -> Callable[[], list] | None:
            island = paths.on_island("allgather", input.dtype)
            if island is None:
                return None
            island.after(marks)
            island.allgather_into(output, input)
            return island.done([output])
        return self._submit("all_gather_into_tensor", [output, input],
                            lambda: self._host.allgather_into(output, input), device_start=on_device)

    _allgather_base = all_gather_single

    def all_gather_single_coalesced(self, outputs: list[torch.Tensor], inputs: list[torch.Tensor],
                                    opts: Any = None) -> Work:
        return self._submit("all_gather_into_tensor_coalesced", [*outputs, *inputs], lambda: _all(
            [self._host.allgather_into(o, i) for o, i in zip(outputs, inputs)], outputs))

    allgather_into_tensor_coalesced = all_gather_single_coalesced

    def reduce_scatter(self, outputs: list[torch.Tensor], input_lists: list[list[torch.Tensor]],
                       opts: Any = None) -> Work:
        op = _reduce_op(opts.reduceOp if opts is not None else ReduceOp.SUM, "reduce_scatter")
        _check_reduce(outputs, op, "reduce_scatter")
        self._one("reduce_scatter", outputs)
        inputs = input_lists[0]
        if len(inputs) != self.size():
            raise ValueError(f"hal: reduce_scatter needs {self.size()} input tensors (one per rank), got {len(inputs)}")
        return self._submit("reduce_scatter", [outputs[0], *inputs],
                            lambda: self._host.reduce_scatter(outputs[0], inputs, op))

    def reduce_scatter_single(self, output: torch.Tensor, input: torch.Tensor, opts: Any = None) -> Work:
        op = _reduce_op(opts.reduceOp if opts is not None else ReduceOp.SUM, "reduce_scatter_tensor")
        _check_reduce([output], op, "reduce_scatter_tensor")
        if input.numel() != output.numel() * self.size():
            raise ValueError(f"hal: reduce_scatter_tensor: the input has {input.numel()} elements; it needs "
                             f"{self.size()} x the output's {output.numel()}")
        self._same_dtype("reduce_scatter_tensor", output, input)
        parts = list(input.reshape(-1).chunk(self.size())) if input.numel() else [input.reshape(-1)] * self.size()

        def on_device(paths: Paths, marks: dict) -> Callable[[], list] | None:
            island = paths.on_island("reduce_scatter", input.dtype, op)
            if island is None:
                return None
            island.after(marks)
            island.reduce_scatter(output, input, op)
            return island.done([output])
        return self._submit("reduce_scatter_tensor", [output, input],
                            lambda: self._host.reduce_scatter(output, parts, op), device_start=on_device)

    _reduce_scatter_base = reduce_scatter_single

    def reduce_scatter_single_coalesced(self, outputs: list[torch.Tensor], inputs: list[torch.Tensor],
                                        opts: Any = None) -> Work:
        op = _reduce_op(opts.reduceOp if opts is not None else ReduceOp.SUM, "reduce_scatter_tensor_coalesced")
        _check_reduce(outputs, op, "reduce_scatter_tensor_coalesced")
        return self._submit("reduce_scatter_tensor_coalesced", [*outputs, *inputs], lambda: _all(
            [self._host.reduce_scatter(o, list(i.reshape(-1).chunk(self.size())), op)
             for o, i in zip(outputs, inputs)], outputs))

    reduce_scatter_tensor_coalesced = reduce_scatter_single_coalesced

    def all_to_all_single(self, output: torch.Tensor, input: torch.Tensor, output_split_sizes: list[int],
                          input_split_sizes: list[int], opts: Any = None) -> Work:
        self._same_dtype("all_to_all_single", output, input)
        return self._submit("all_to_all_single", [output, input], lambda: self._host.alltoall(
            output, input, list(output_split_sizes), list(input_split_sizes)))

    alltoall_base = all_to_all_single

    def alltoall(self, outputs: list[torch.Tensor], inputs: list[torch.Tensor], opts: Any = None) -> Work:
        """all_to_all of tensor lists: one all_to_all_single over them flattened (one dtype)."""
        if len(outputs) != self.size() or len(inputs) != self.size():
            raise ValueError(f"hal: all_to_all needs {self.size()} input and output tensors, got {len(inputs)} "
                             f"and {len(outputs)}")
        if len({t.dtype for t in [*outputs, *inputs]}) > 1:
            raise ValueError("hal: all_to_all needs one dtype for all input and output tensors")
        return self._submit("all_to_all", [*outputs, *inputs], lambda: self._host.alltoall_lists(outputs, inputs))

    def send(self, tensors: list[torch.Tensor], dst: int, tag: int = 0) -> Work:
        self._one("send", tensors)
        self._peer("send", dst)
        return self._submit("send", tensors, lambda: self._host.send(tensors[0], dst, tag))

    def recv(self, tensors: list[torch.Tensor], src: int, tag: int = 0) -> Work:
        self._one("recv", tensors)
        self._peer("recv", src)
        return self._recv(tensors[0], src, tag)

    def recv_anysource(self, tensors: list[torch.Tensor], tag: int = 0) -> Work:
        self._one("recv", tensors)
        return self._recv(tensors[0], None, tag)

    def _recv(self, tensor: torch.Tensor, src: int | None, tag: int) -> Work:
        work = _RecvWork("recv", next(self._seq))

        def start() -> Callable[[], list]:
            finish, source = self._host.recv(tensor, src, tag)
            work._source = source
            return finish
        return self._submit("recv", [tensor], start, work)

    def barrier(self, opts: Any = None) -> Work:
        return self._submit("barrier", [], self._host.barrier)

    def reduce(self, tensors: list[torch.Tensor], opts: Any = None) -> Work:
        op = _reduce_op(opts.reduceOp if opts is not None else ReduceOp.SUM, "reduce")
        _check_reduce(tensors, op, "reduce")
        self._one("reduce", tensors)
        root = opts.rootRank if opts is not None else 0
        return self._submit("reduce", tensors, lambda: self._host.reduce(tensors[0], root, op))

    def gather(self, output_lists: list[list[torch.Tensor]], inputs: list[torch.Tensor], opts: Any = None) -> Work:
        self._one("gather", inputs)
        root = opts.rootRank
        outputs = output_lists[0] if output_lists else []
        if self.rank() == root and len(outputs) != self.size():
            raise ValueError(f"hal: gather needs {self.size()} output tensors on the root, got {len(outputs)}")
        return self._submit("gather", [*outputs, inputs[0]], lambda: self._host.gather(outputs, inputs[0], root))

    def scatter(self, outputs: list[torch.Tensor], input_lists: list[list[torch.Tensor]], opts: Any = None) -> Work:
        self._one("scatter", outputs)
        root = opts.rootRank
        inputs = input_lists[0] if input_lists else []
        if self.rank() == root and len(inputs) != self.size():
            raise ValueError(f"hal: scatter needs {self.size()} input tensors on the root, got {len(inputs)}")
        return self._submit("scatter", [outputs[0], *inputs], lambda: self._host.scatter(outputs[0], inputs, root))

    # --- Lifetime ---------------------------------------------------------------------------------------------
    def abort(self) -> None:
        """Fails every pending op and tears the transports down; the group is unusable afterwards."""
        if self._closed:
            return
        self._worker.fail_pending(f"hal: the process group was aborted ({self._describe()})")
        if self._paths is not None:
            self._paths.abort()
        self._gloo.abort()
        self._close(wait=False)

    def shutdown(self) -> None:
        """Releases the group (destroy_process_group calls it): lets queued ops finish, stops the threads."""
        self._close(wait=True)

    def _close(self, wait: bool) -> None:
        if self._closed:
            return
        self._closed = True
        self._worker.close(timeout=self._timeout.total_seconds() if wait else 0.0)
        if self._paths is not None:
            self._paths.destroy()
        if wait:
            self._gloo.shutdown()
            # Release the Gloo groups now, while the interpreter is whole: their destructors join Gloo's threads
            # (torch's holder drops the GIL for that). Left to interpreter exit, a Gloo thread dropping the last
            # reference to a finished op's tensors would need the GIL during finalization, and abort the process.
            self._host = self._gloo = self._paths = None
        _live.discard(self)

    # --- Argument checks --------------------------------------------------------------------------------------
    @staticmethod
    def _one(what: str, tensors: list[torch.Tensor]) -> None:
        if len(tensors) != 1:
            raise ValueError(f"hal: {what} takes one tensor per rank, got {len(tensors)}")

    def _peer(self, what: str, peer: int) -> None:
        if not 0 <= peer < self.size() or peer == self.rank():
            raise ValueError(f"hal: {what}: peer rank {peer} is not another rank of this group of {self.size()}")

    @staticmethod
    def _same_dtype(what: str, a: torch.Tensor, b: torch.Tensor) -> None:
        if a.dtype != b.dtype:
            raise ValueError(f"hal: {what}: the output is {a.dtype} and the input {b.dtype}; they must match")


class _RecvWork(Work):
    """A receive's work also names the sender (torch's recv with src=None asks)."""
    _source: Callable[[], int]

    def _source_rank(self) -> int:
        self.wait()
        return self._source()
