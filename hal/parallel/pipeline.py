"""One pipeline stage's share of a step: the 1F1B schedule, activations and gradients sent between stages.

Stage s of S runs min(S - s - 1, M) forward passes first (warm-up), then alternates one forward and one backward
(steady state), then the remaining backwards (cool-down): at most S - s micro-batches' activations are alive, and
every stage is busy once the pipeline is full (PipeDream-Flush / Megatron's 1F1B).

Between stages, tensors go through the default process group's send/recv: the stages may be devices of
different kinds and plugins (`hal` backend, host-staged). A message is a header (ndim, dtype, shape; a CPU
tensor over Gloo) and then the data on the device. Sends are asynchronous; the header of the next message a
stage will need is received ahead, while it computes, and a stage records how long it waited for its
neighbours (the bubble). With tensor parallelism, a stage's ranks hold the same activations; each rank
talks to its counterparts in the neighbouring stages (`roles.role_of`). Headers go over a group of their own (Gloo): the `hal` backend completes a group's
works in issue order, so a header received ahead there would hold back every later message.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.distributed as dist
from torch import nn

from hal.parallel.roles import Role

__all__ = ["Channel", "StageRunner", "StageTimes", "schedule_1f1b", "TAG_ACTIVATION", "TAG_GRADIENT"]

TAG_ACTIVATION, TAG_GRADIENT = 17, 18
_DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int64, torch.int32, torch.uint8,
           torch.bool]
_HEADER = 10  # ndim, dtype code, up to 8 dims
_DATA_TAG = 1000  # data on tag + this: a prefetched header receive never matches a data message


def schedule_1f1b(num_stages: int, stage: int, num_micro: int) -> list[tuple[str, int]]:
    """[("F", m) | ("B", m)] in the order stage `stage` of `num_stages` runs them for `num_micro` micro-batches."""
    warm = min(num_stages - stage - 1, num_micro)
    ops: list[tuple[str, int]] = [("F", m) for m in range(warm)]
    f, b = warm, 0
    while f < num_micro:
        ops.append(("F", f))
        f += 1
        ops.append(("B", b))
        b += 1
    ops += [("B", m) for m in range(b, num_micro)]
    return ops


class Channel:
    """Tensors of any shape from this rank to `peer` (send) or from `peer` (recv), in order, on `tag`."""

    def __init__(self, peer: int, tag: int, device: torch.device, headers: dist.ProcessGroup | None = None):
        self.peer, self.tag, self.device, self.headers = peer, tag, device, headers
        self._pending: list[tuple[dist.Work, torch.Tensor]] = []   # sends in flight, with their tensors
        self._headers: list[tuple[dist.Work, torch.Tensor]] = []   # header receives posted ahead

    # --- sending ------------------------------------------------------------------------------------------
    def send(self, t: torch.Tensor) -> None:
        if t.dim() > _HEADER - 2:
            raise ValueError(f"pipeline: cannot send a tensor of {t.dim()} dimensions (at most {_HEADER - 2})")
        if t.dtype not in _DTYPES:
            raise ValueError(f"pipeline: cannot send a tensor of dtype {t.dtype}")
        t = t.detach().contiguous()
        head = torch.zeros(_HEADER, dtype=torch.int64)
        head[0], head[1] = t.dim(), _DTYPES.index(t.dtype)
        head[2:2 + t.dim()] = torch.tensor(t.shape, dtype=torch.int64)
        self._pending.append((dist.isend(head, self.peer, group=self.headers, tag=self.tag), head))
        self._pending.append((dist.isend(t, self.peer, tag=self.tag + _DATA_TAG), t))

    def flush(self) -> None:
        """Waits for every send in flight (their buffers may then be reused)."""
        for work, _ in self._pending:
            work.wait()
        self._pending.clear()

    # --- receiving ----------------------------------------------------------------------------------------
    def prefetch(self, n: int = 1) -> None:
        """Posts the header receives of the next `n` messages not yet posted."""
        for _ in range(n):
            head = torch.empty(_HEADER, dtype=torch.int64)
            self._headers.append((dist.irecv(head, self.peer, group=self.headers, tag=self.tag), head))

    def recv(self) -> torch.Tensor:
        if not self._headers:
            self.prefetch()
        work, head = self._headers.pop(0)
        work.wait()
        ndim, code = int(head[0]), int(head[1])
        if not 0 <= ndim <= _HEADER - 2 or not 0 <= code < len(_DTYPES):
            raise RuntimeError(f"pipeline: a malformed message header from rank {self.peer}: {head.tolist()}")
        out = torch.empty(tuple(int(x) for x in head[2:2 + ndim]), dtype=_DTYPES[code], device=self.device)
        dist.irecv(out, self.peer, tag=self.tag + _DATA_TAG).wait()
        return out


@dataclass
class StageTimes:
    wait_s: float = 0.0        # blocked on a neighbour's activation or gradient (the bubble, as this stage saw it)
    compute_s: float = 0.0     # forward and backward (issue time; the step's end synchronizes the device)
    micro_batches: int = 0
    loss_sum: float = 0.0      # last stage: sum of the micro-batches' weighted losses
    events: list = field(default_factory=list)  # (op, micro-batch, start, compute start, end), perf_counter s


class StageRunner:
    """Runs one stage's forward and backward passes of one step under the 1F1B schedule."""

    def __init__(self, module: nn.Module, loss_fn: Callable, device: torch.device, role: Role,
                 headers: dist.ProcessGroup | None = None):
        self.module, self.loss_fn, self.device = module, loss_fn, device
        self.num_stages, self.stage, self.last = role.num_stages, role.stage, role.last
        ch = lambda peer, tag: Channel(peer, tag, device, headers)  # noqa: E731
        self.act_in = ch(role.act_from, TAG_ACTIVATION) if role.act_from is not None else None
        self.grad_in = ch(role.grad_from, TAG_GRADIENT) if role.grad_from is not None else None
        # A stage of tp ranks sends to the next stage's ranks that read from it (none, one or several).
        self.act_out = [ch(r, TAG_ACTIVATION) for r in role.act_to]
        self.grad_out = [ch(r, TAG_GRADIENT) for r in role.grad_to]

    def run(self, inputs: list[torch.Tensor] | None, targets: list[torch.Tensor] | None,
            weights: list[float], record: bool = False,
            before_last_backward: Callable[[], None] | None = None) -> StageTimes:
        """One step over len(weights) micro-batches. `inputs` (first stage) and `targets` (last stage) are the
        micro-batches' rows; weights[m] scales micro-batch m's mean loss (its share of the global batch), so
        the summed gradients over every rank are the full batch's mean-loss gradient. `before_last_backward`
        is called just before the step's last backward pass (the gradient sums hook into it)."""
        n = len(weights)
        times = StageTimes(micro_batches=n)
        saved: dict[int, tuple[torch.Tensor | None, torch.Tensor]] = {}
        losses: list[torch.Tensor] = []
        clock = time.perf_counter
        if self.act_in is not None:
            self.act_in.prefetch(min(n, self.num_stages - self.stage))
        if self.grad_in is not None:
            self.grad_in.prefetch(1)
        for op, m in schedule_1f1b(self.num_stages, self.stage, n):
            t0 = clock()
            if op == "F":
                if self.act_in is None:
                    t1 = clock()  # the input's copy to the device is the stage's own work, not waiting
                    x = inputs[m].to(self.device)
                else:
                    x = self.act_in.recv()
                    if m + self.num_stages - self.stage < n:
                        self.act_in.prefetch(1)
                    x.requires_grad_(True)
                    t1 = clock()
                y = self.module(x)
                if self.last:
                    loss = self.loss_fn(y, targets[m].to(self.device)) * weights[m]
                    losses.append(loss.detach())
                    saved[m] = (x if self.act_in is not None else None, loss)
                else:
                    for out in self.act_out:
                        out.send(y)
                    saved[m] = (x if self.act_in is not None else None, y)
            else:
                x, y = saved.pop(m)
                if m == n - 1 and before_last_backward is not None:
                    before_last_backward()
                if self.last:
                    t1 = clock()
                    y.backward()
                else:
                    g = self.grad_in.recv()
                    if m + 1 < n:
                        self.grad_in.prefetch(1)
                    t1 = clock()
                    y.backward(g)
                for out in self.grad_out:
                    out.send(x.grad)
            t2 = clock()
            times.wait_s += t1 - t0
            times.compute_s += t2 - t1
            if record:
                times.events.append((op, m, t0, t1, t2))
        t0 = clock()
        for ch in self.act_out + self.grad_out:
            ch.flush()
        times.wait_s += clock() - t0
        if losses:
            times.loss_sum = float(torch.stack(losses).sum().item())
        return times
