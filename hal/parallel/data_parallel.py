"""Data parallelism over uneven replicas: the gradients of each layer summed over the pipelines that hold it.

Each micro-batch's loss is scaled by its share of the global batch (rows / global batch) before its backward,
so the *sum* over all replicas of their gradients is the gradient of the full batch's mean loss, whatever the
split (an average of per-replica means would weigh a replica of 10 samples like one of 40). The sum runs per
segment (`roles.segments`: layers held by the same ranks), in one group of those ranks, one flat buffer each.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["GradientSync"]


class GradientSync:
    """Creates the segments' process groups (a collective call: every rank, same order) and sums gradients."""

    def __init__(self, segments: list[tuple[tuple[int, int], tuple[int, ...]]], rank: int, first_layer: int,
                 modules: list[nn.Module], device: torch.device, timeout=None):
        self._mine: list[tuple[object, list[nn.Parameter]]] = []
        for (start, end), ranks in segments:
            # Every rank calls new_group for every segment, in the same order.
            group = dist.new_group(list(ranks), timeout=timeout) if len(ranks) > 1 else None
            if group is not None and rank in ranks:
                params = [p for m in modules[start - first_layer:end - first_layer] for p in m.parameters()
                          if p.requires_grad]
                self._mine.append((group, params))
        # A group's first collective sets up its device paths (the plugin's communicator: every member must
        # join). Overlapping groups set up concurrently could each hold a rank the other waits for; one at a
        # time, in creation order (the same on every rank), they cannot.
        for group, _ in self._mine:
            dist.all_reduce(torch.zeros(1, device=device), group=group)

    @property
    def groups(self) -> int:
        return len(self._mine)

    def all_reduce(self) -> None:
        """Sums this rank's gradients with the other replicas of each of its segments (blocking)."""
        works = []
        for group, params in self._mine:
            grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
            flat = torch.cat([g.reshape(-1) for g in grads])
            works.append((dist.all_reduce(flat, group=group, async_op=True), flat, params))
        for work, flat, params in works:
            work.wait()
            at = 0
            for p in params:
                n = p.numel()
                if p.grad is None:
                    p.grad = flat[at:at + n].view_as(p).clone()
                else:
                    p.grad.copy_(flat[at:at + n].view_as(p))
                at += n
