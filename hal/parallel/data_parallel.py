"""Data parallelism over uneven replicas: the gradients of each layer summed over the pipelines that hold it.

Each micro-batch's loss is scaled by its share of the global batch (rows / global batch) before its backward,
so the *sum* over all replicas of their gradients is the gradient of the full batch's mean loss, whatever the
split (an average of per-replica means would weigh a replica of 10 samples like one of 40). The sum runs per
segment (`roles.segments`: layers held by the same ranks), in groups of those ranks: with tensor parallelism,
each shard with its replicas (or, where the replicas' tp sizes differ, whole-size gradients with each shard at
its place).

The sums overlap the step's last backward pass (as DDP's buckets do): each layer is one bucket, and once the
last micro-batch's backward has accumulated all of a layer's gradients, a hook starts that bucket's
`all_reduce` (asynchronous) while the backward goes on to the layers before it. Backward runs the layers in
reverse order on every replica, so each group's members start their buckets in the same order.
`finish()` starts what is left, waits, and writes the sums back.

Under ZeRO-1 (zero.py) a bucket it shards is reduce-scattered instead, from its padded span of the flat
gradients into the optimizer's gradient of the rank's owned part, started by the same hooks; nothing is
written back (the other parts' sums are other replicas' business).
"""
from __future__ import annotations

import math
import threading

import torch
import torch.distributed as dist
from torch import nn

from hal.parallel.flat import FlatParams
from hal.parallel.roles import Segment
from hal.parallel.tensor_parallel import shards_of
from hal.parallel.zero import ZeroOptimizer, reduce_scatter_single

__all__ = ["GradientSync"]


class _Bucket:
    """One layer's gradients, summed in one group. `layouts[i]` says how parameter i travels: None (as it is),
    or, in a padded segment, (Shard or None, tp size): a shard at its place in a whole-size buffer of zeros, a
    replicated parameter divided by the tp size (its tp ranks hold the same gradient). With `shard` (ZeRO-1),
    `buffer` is reduce-scattered into it."""

    def __init__(self, group, params: list[nn.Parameter], layouts: list | None = None,
                 buffer: torch.Tensor | None = None, shard: torch.Tensor | None = None):
        self.group, self.params = group, params
        self.layouts = layouts or [None] * len(params)
        self.buffer = buffer  # where the gradients already lie, one after the other (FlatParams): summed in place
        self.shard = shard    # ZeRO-1: where this rank's part of the sum goes
        self.ready = 0
        self.work = None
        self.flat: torch.Tensor | None = None

    def _size(self, p, layout) -> int:
        return p.numel() if layout is None or layout[0] is None else math.prod(layout[0].full)

    def start(self) -> None:
        if self.shard is not None:
            self.flat = self.buffer
            self.work = reduce_scatter_single(self.shard, self.buffer, group=self.group, async_op=True)
            return
        if self.buffer is not None:
            self.flat = self.buffer
            self.work = dist.all_reduce(self.flat, group=self.group, async_op=True)
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params]
        if all(l is None for l in self.layouts):
            self.flat = torch.cat([g.reshape(-1) for g in grads])
        else:
            self.flat = torch.zeros(sum(self._size(p, l) for p, l in zip(self.params, self.layouts)),
                                    dtype=grads[0].dtype, device=grads[0].device)
            at = 0
            for p, g, l in zip(self.params, grads, self.layouts):
                n = self._size(p, l)
                if l is not None and l[0] is not None:
                    l[0].place(self.flat[at:at + n], g)
                else:
                    self.flat[at:at + n].copy_(g.reshape(-1) / (l[1] if l is not None else 1))
                at += n
        self.work = dist.all_reduce(self.flat, group=self.group, async_op=True)

    def finish(self) -> None:
        self.work.wait()
        if self.buffer is not None:
            self.work, self.flat = None, None
            return
        at = 0
        for p, l in zip(self.params, self.layouts):
            n = self._size(p, l)
            part = self.flat[at:at + n]
            if l is not None and l[0] is not None:
                part = l[0].take(part)
            part = part.reshape(p.shape)
            if p.grad is None:
                p.grad = part.clone()
            else:
                p.grad.copy_(part)
            at += n
        self.work, self.flat = None, None


class GradientSync:
    """Creates the segments' process groups (a collective call: every rank, same order) and sums gradients."""

    def __init__(self, segments: list[Segment], rank: int, first_layer: int, modules: list[nn.Module],
                 device: torch.device, timeout=None, overlap: bool = True, tp_size: int = 1,
                 flat: FlatParams | None = None, zero: ZeroOptimizer | None = None):
        self._buckets: list[_Bucket] = []
        groups = []
        for seg in segments:
            start, end = seg.layers
            for ranks in seg.groups:
                # Every rank calls new_group for every group, in the same order.
                group = dist.new_group(list(ranks), timeout=timeout) if len(ranks) > 1 else None
                if group is None or rank not in ranks:
                    continue
                groups.append(group)
                for m in reversed(modules[start - first_layer:end - first_layer]):  # backward's order
                    named = [(n, p) for n, p in m.named_parameters() if p.requires_grad]
                    if not named:
                        continue
                    shards = shards_of(m)
                    params = [p for _, p in named]
                    layouts = [(shards.get(n), tp_size) for n, _ in named] if seg.padded else None
                    part = zero.part_of(params) if zero is not None and layouts is None else None
                    if part is not None:
                        zero.attach(part, group, ranks, rank)
                        self._buckets.append(_Bucket(group, params, None, zero.grad_span(part),
                                                     zero.grad_part(part)))
                        continue
                    buffer = flat.slice_of(params) if flat is not None and layouts is None else None
                    self._buckets.append(_Bucket(group, params, layouts, buffer))
        # A group's first collective sets up its device paths (the plugin's communicator: every member must
        # join). Overlapping groups set up concurrently could each hold a rank the other waits for; one at a
        # time, in creation order (the same on every rank), they cannot.
        for group in groups:
            dist.all_reduce(torch.zeros(1, device=device), group=group)
        self._armed = False
        self._lock = threading.Lock()
        if overlap:
            for b in self._buckets:
                for p in b.params:
                    p.register_post_accumulate_grad_hook(lambda p, b=b: self._accumulated(b))
        self.started_in_backward = 0  # buckets of the last step whose sum a hook started during the backward

    @property
    def groups(self) -> int:
        return len({id(b.group) for b in self._buckets})

    def arm(self) -> None:
        """The next backward is the step's last: start each bucket's sum as soon as its gradients are final."""
        for b in self._buckets:
            b.ready, b.work, b.flat = 0, None, None
        self._armed = True

    def _accumulated(self, b: _Bucket) -> None:  # runs on autograd's thread
        if not self._armed:
            return
        with self._lock:
            b.ready += 1
            go = b.ready == len(b.params) and b.work is None
        if go:
            b.start()

    def all_reduce(self) -> None:
        """Starts the sums not started during the backward, waits for all, writes them back (blocking); under
        ZeRO-1, a sharded bucket's sum is its reduce-scatter."""
        self._armed = False
        self.started_in_backward = 0
        for b in self._buckets:
            if b.work is None:
                b.start()
            else:
                self.started_in_backward += 1
        for b in self._buckets:
            b.finish()
