"""ZeRO stage 1: the optimizer state of a stage's layers sharded over their data-parallel replicas.

Without it, each of a layer's N replicas sums the whole gradient (all-reduce), steps the whole layer and keeps
the optimizer's whole state (Adam: two tensors the size of the parameters). With it (Rajbhandari et al. 2020,
stage 1), a layer's span of the flat buffers (flat.py, padded to a multiple of N) is cut into N equal parts,
replica i of the group owning part i:

    backward      each layer's gradients reduce-scattered in its group: replica i receives the sum of part i
                  (started by GradientSync's hooks during the last backward, as the all-reduce is today)
    step          the optimizer steps one contiguous tensor, the rank's owned parts of every layer one after
                  the other: the optimizer's state is 1/N of the layers' (plus what is not sharded, below)
    after it      each layer's updated parts all-gathered into every replica's flat parameters

The update equals the all-reduce's: an element-wise optimizer's update of an element depends on that element
only, and the sum of a part is the all-reduce's sum of it. The cost model prices the same thing
(hal/plan/cost.py: `zero_sync_time`, `zero_bytes_per_param`): the reduce-scatter hidden behind the backward,
the all-gather exposed after the optimizer step.

Where it applies: a bucket (one layer's trainable parameters) that GradientSync sums in a group of N > 1
replicas through the flat gradient buffer, with an element-wise optimizer of one parameter group stepping
the flat buffer (FlatParams.optimizer). Not sharded, stepped whole on every rank as without ZeRO, and held in
the same contiguous tensor after the owned parts: layers without replicas, layers of a *padded* segment
(replicas of different tensor-parallel sizes sum whole-size gradients with each shard at its place), frozen
parameters. Any other optimizer (LBFGS, several parameter groups) runs as given, without ZeRO.

The owned parts of the parameters live twice: in the flat buffer (what the layers compute with) and in the
optimizer's tensor (what it steps; its copy is written into the flat buffer after each step). They are copied
from the flat buffer when the optimizer is made and by `refresh()` (a checkpoint's load calls it).

After a step, a sharded layer's `.grad` is this replica's own gradient of the step (its micro-batches'
weighted sum), not the sum over the replicas, which exists only for the owned part (`grad_part`).
Checkpoints stay device-neutral: `gather_state` assembles the whole buffer's state (a collective over the
replicas), and `load_state` takes the owned parts of a whole state, whichever plan wrote it.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from hal.parallel.flat import FlatParams, same_optimizer
from hal.parallel.roles import Segment

__all__ = ["ZeroOptimizer", "OwnedPart", "zero_buckets"]

# torch 2.13 renamed reduce_scatter_tensor / all_gather_into_tensor (deprecated, a warning at each call); the
# runtime's other modules (data_parallel.py, trainer.py) take them from here.
reduce_scatter_single = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor
all_gather_single = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor


def zero_buckets(segments: list[Segment], rank: int, first_layer: int,
                 modules: list[nn.Module]) -> list[tuple[list[nn.Parameter], tuple[int, ...]]]:
    """The buckets ZeRO-1 may shard on `rank`, in layer order: (a layer's trainable parameters, the ranks of the
    group that sums them), for each layer of a segment that is not padded whose group holding `rank` has
    several ranks. GradientSync makes the same buckets (one per layer, the same parameters)."""
    out = []
    for seg in segments:
        if seg.padded:
            continue
        start, end = seg.layers
        for ranks in seg.groups:
            if rank not in ranks or len(ranks) < 2:
                continue
            for m in modules[start - first_layer:end - first_layer]:
                params = [p for p in m.parameters() if p.requires_grad]
                if params:
                    out.append((params, tuple(ranks)))
    return out


@dataclass
class OwnedPart:
    """One bucket under ZeRO-1: its span [start, end) in the flat buffers (a multiple of len(ranks) long), the
    ranks of its group (sorted: group rank i is ranks[i]), this rank's place among them (it owns the index-th
    of the equal parts), where that part lies in the optimizer's tensor (`at`), and the group (GradientSync
    creates it)."""
    start: int
    end: int
    ranks: tuple[int, ...]
    index: int
    at: int = 0
    group: object = None

    @property
    def size(self) -> int:
        return (self.end - self.start) // len(self.ranks)

    @property
    def owned(self) -> tuple[int, int]:
        """[start, end) of this rank's part in the flat buffers."""
        a = self.start + self.index * self.size
        return a, a + self.size


class ZeroOptimizer:
    """Steps a rank's owned parts (and what is not sharded) as one tensor; see the module's docstring.

    `optimizer` is the element-wise optimizer over `flat.flat` that FlatParams.optimizer made (its class and
    group are taken; it is not stepped); `buckets` are `zero_buckets`' (their spans padded in `flat`)."""

    def __init__(self, flat: FlatParams, optimizer: torch.optim.Optimizer,
                 buckets: list[tuple[list[nn.Parameter], tuple[int, ...]]], rank: int):
        self.flat = flat
        self.parts: list[OwnedPart] = []
        self._of: dict[tuple[int, ...], OwnedPart] = {}
        for params, ranks in buckets:
            span = flat.span_of(params)
            if span is None or (span[1] - span[0]) % len(ranks):
                raise ValueError(f"ZeRO-1: a bucket of {len(params)} parameter(s) does not lie in the flat buffer "
                                 f"as one span of a multiple of {len(ranks)} elements (FlatParams pad)")
            part = OwnedPart(span[0], span[1], tuple(ranks), list(ranks).index(rank))
            self.parts.append(part)
            self._of[tuple(id(p) for p in params)] = part
        self.parts.sort(key=lambda s: s.start)
        # What no part covers is stepped whole: [(start, end, at)].
        self.rest: list[tuple[int, int, int]] = []
        at, pos = 0, 0
        for s in self.parts:
            if s.start > pos:
                self.rest.append((pos, s.start, 0))
            pos = s.end
        if pos < flat.numel:
            self.rest.append((pos, flat.numel, 0))
        # The optimizer's tensor, in flat order: each owned part or unsharded run where it comes.
        pieces = sorted([(s.owned[0], s) for s in self.parts] + [(r[0], i) for i, r in enumerate(self.rest)],
                        key=lambda x: x[0])
        for _, piece in pieces:
            if isinstance(piece, OwnedPart):
                piece.at = at
                at += piece.size
            else:
                a, b, _ = self.rest[piece]
                self.rest[piece] = (a, b, at)
                at += b - a
        self.numel = at
        self.local = nn.Parameter(torch.empty(at, dtype=flat.flat.dtype, device=flat.flat.device))
        self.local.grad = torch.zeros_like(self.local)
        self.refresh()
        self.optimizer = same_optimizer(optimizer, self.local)
        if self.optimizer is None:  # FlatParams.optimizer made `optimizer` the same way: cannot happen
            raise ValueError(f"ZeRO-1: {type(optimizer).__name__}'s group cannot be made over the owned parts")

    # --- the step -----------------------------------------------------------------------------------------
    def part_of(self, params: list[nn.Parameter]) -> OwnedPart | None:
        """The bucket of `params` (a layer's trainable parameters), when ZeRO-1 shards it."""
        return self._of.get(tuple(id(p) for p in params))

    def attach(self, part: OwnedPart, group, ranks: tuple[int, ...], rank: int) -> None:
        """Gives `part` its process group (GradientSync made it from `ranks`, a collective call)."""
        if tuple(ranks) != part.ranks or dist.get_group_rank(group, rank) != part.index:
            raise RuntimeError(f"ZeRO-1: rank {rank} expected to be place {part.index} of the group of ranks "
                               f"{list(part.ranks)}; the group made is of ranks {list(ranks)}, place "
                               f"{dist.get_group_rank(group, rank)}")
        part.group = group

    def grad_part(self, part: OwnedPart) -> torch.Tensor:
        """Where the reduce-scatter writes the owned part's summed gradient: the optimizer's gradient."""
        return self.local.grad[part.at:part.at + part.size]

    def grad_span(self, part: OwnedPart) -> torch.Tensor:
        """What the reduce-scatter sums: the bucket's span of the flat gradients, its padding included."""
        return self.flat.grads[part.start:part.end]

    @torch.no_grad()
    def step(self) -> None:
        """After GradientSync's sums (owned parts reduce-scattered into the optimizer's gradient, the rest
        all-reduced in place): steps the one tensor, writes the unsharded runs back and all-gathers every
        bucket's updated parts into the flat parameters (blocking)."""
        grads, params = self.flat.grads, self.flat.flat.data
        for a, b, at in self.rest:
            self.local.grad[at:at + b - a].copy_(grads[a:b])
        self.optimizer.step()
        for a, b, at in self.rest:
            params[a:b].copy_(self.local.data[at:at + b - a])
        works = [all_gather_single(params[s.start:s.end], self.local.data[s.at:s.at + s.size], group=s.group,
                             async_op=True) for s in self.parts]
        for w in works:
            w.wait()

    @torch.no_grad()
    def refresh(self) -> None:
        """Copies the owned parts and unsharded runs of the flat parameters into the optimizer's tensor (after
        the parameters were set another way than by `step`: a checkpoint's load)."""
        params = self.flat.flat.data
        for s in self.parts:
            a, b = s.owned
            self.local.data[s.at:s.at + s.size].copy_(params[a:b])
        for a, b, at in self.rest:
            self.local.data[at:at + b - a].copy_(params[a:b])

    # --- checkpoints --------------------------------------------------------------------------------------
    @torch.no_grad()
    def gather_state(self, keep: bool = True) -> dict:
        """The whole flat buffer's optimizer state, on the CPU ({key: tensor of flat.numel elements, or the
        shared scalar}), assembled from every replica's parts: a collective over the parts' groups, which
        every rank under ZeRO-1 calls (the same keys on all: their optimizers stepped alike). One bucket at a
        time, in layer order on every rank, so overlapping groups cannot wait on each other in a cycle, and
        only one bucket's state is on the device beyond the rank's own. `keep` False: takes part, returns {}."""
        state = self.optimizer.state.get(self.local) or {}
        out: dict = {}
        for k in sorted(state):
            v = state[k]
            if not (torch.is_tensor(v) and v.dim() > 0):
                out[k] = v.clone() if torch.is_tensor(v) else v
                continue
            full = torch.zeros(self.flat.numel, dtype=v.dtype) if keep else None
            for s in self.parts:
                span = torch.empty(s.end - s.start, dtype=v.dtype, device=v.device)
                all_gather_single(span, v[s.at:s.at + s.size], group=s.group)
                if full is not None:
                    full[s.start:s.end].copy_(span.cpu())
            if full is not None:
                for a, b, at in self.rest:
                    full[a:b].copy_(v[at:at + b - a].cpu())
                out[k] = full
        return out if keep else {}

    @torch.no_grad()
    def load_state(self, full: dict) -> None:
        """Takes this rank's owned parts and unsharded runs of a whole buffer's state (`FlatParams.assemble_state`,
        CPU or device tensors of flat.numel elements) as the optimizer's state; {} leaves it as it is."""
        if not full:
            return
        state: dict = {}
        for k, v in full.items():
            if torch.is_tensor(v) and v.dim() > 0:
                mine = torch.empty(self.numel, dtype=v.dtype, device=self.local.device)
                for s in self.parts:
                    a, b = s.owned
                    mine[s.at:s.at + s.size].copy_(v[a:b])
                for a, b, at in self.rest:
                    mine[at:at + b - a].copy_(v[a:b])
                state[k] = mine
            else:
                state[k] = v.clone() if torch.is_tensor(v) else v
        self.optimizer.state[self.local] = state
