"""Data parallelism over uneven replicas: the gradients of each layer summed over the pipelines that hold it.

Each micro-batch's loss is scaled by its share of the global batch (rows / global batch) before its backward,
so the *sum* over all replicas of their gradients is the gradient of the full batch's mean loss, whatever the
split (an average of per-replica means would weigh a replica of 10 samples like one of 40). The sum runs per
segment (`roles.segments`: layers held by the same ranks), in one group of those ranks.

The sums overlap the step's last backward pass (as DDP's buckets do): each layer is one bucket, and once the
last micro-batch's backward has accumulated all of a layer's gradients, a hook starts that bucket's
`all_reduce` (asynchronous) while the backward goes on to the layers before it. Backward runs the layers in
reverse order on every replica, so each group's members start their buckets in the same order.
`finish()` starts what is left, waits, and writes the sums back.
"""
from __future__ import annotations

import threading

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["GradientSync"]


class _Bucket:
    def __init__(self, group, params: list[nn.Parameter]):
        self.group, self.params = group, params
        self.ready = 0
        self.work = None
        self.flat: torch.Tensor | None = None

    def start(self) -> None:
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params]
        self.flat = torch.cat([g.reshape(-1) for g in grads])
        self.work = dist.all_reduce(self.flat, group=self.group, async_op=True)


class GradientSync:
    """Creates the segments' process groups (a collective call: every rank, same order) and sums gradients."""

    def __init__(self, segments: list[tuple[tuple[int, int], tuple[int, ...]]], rank: int, first_layer: int,
                 modules: list[nn.Module], device: torch.device, timeout=None, overlap: bool = True):
        self._buckets: list[_Bucket] = []
        groups = []
        for (start, end), ranks in segments:
            # Every rank calls new_group for every segment, in the same order.
            group = dist.new_group(list(ranks), timeout=timeout) if len(ranks) > 1 else None
            if group is not None and rank in ranks:
                groups.append(group)
                for m in reversed(modules[start - first_layer:end - first_layer]):  # backward's order
                    params = [p for p in m.parameters() if p.requires_grad]
                    if params:
                        self._buckets.append(_Bucket(group, params))
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
        """Starts the sums not started during the backward, waits for all, writes them back (blocking)."""
        self._armed = False
        for b in self._buckets:
            if b.work is None:
                b.start()
        for b in self._buckets:
            b.work.wait()
            at = 0
            for p in b.params:
                n = p.numel()
                if p.grad is None:
                    p.grad = b.flat[at:at + n].view_as(p).clone()
                else:
                    p.grad.copy_(b.flat[at:at + n].view_as(p))
                at += n
            b.work, b.flat = None, None
