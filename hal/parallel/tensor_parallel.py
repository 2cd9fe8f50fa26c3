"""Tensor parallelism inside one stage: the `tp` devices of a stage (one island: one kind, one node) each hold a
shard of the stage's layers and compute them together (Megatron-LM's layout).

A layer opts in by defining `tensor_parallel(self, tp: TensorParallel) -> None`: it replaces its linear maps by
this rank's shards (`tp.column(linear)` splits the output features, `tp.row(linear)` the input features) and
fixes up what depends on their sizes (e.g. the number of local attention heads). A column-parallel map followed
by a row-parallel one costs one all-reduce forward (`reduce_out`, after the row map) and one backward (`copy_in`,
before the column map). A layer that does not opt in is replicated: every rank of the stage computes it whole,
on the same inputs, and gets the same gradients (correct; no speed-up).

A sharded parameter's layout is a `Shard`: the full tensor viewed as `view`, split in `size` equal parts along
`dim` (the query/key/value projection splits by heads, inside its [3, heads, head_dim, hidden] view). The
gradient sums (`data_parallel.py`) and the device-neutral checkpoints (`trainer.py`) read the layouts through
`shards_of(layer)`: checkpoints hold whole tensors, so a job resumes with another tp or none.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

__all__ = ["Shard", "TensorParallel", "ColumnParallelLinear", "RowParallelLinear", "shards_of", "shard_layer",
           "probe"]


@dataclass(frozen=True)
class Shard:
    """One rank's part of a parameter: the full tensor (shape `full`) viewed as `view`, part `rank` of `size`
    equal parts along `dim`."""
    full: tuple[int, ...]
    view: tuple[int, ...]
    dim: int
    rank: int
    size: int

    def __post_init__(self):
        if self.view[self.dim] % self.size:
            raise ValueError(f"tensor parallelism: dimension {self.dim} of {list(self.view)} (a parameter of shape "
                             f"{list(self.full)}) does not split in {self.size} equal parts")

    @property
    def part(self) -> tuple[int, ...]:
        """This shard's shape (the view, with `dim` divided by `size`), flattened as the parameter holds it."""
        return tuple(v // self.size if i == self.dim else v for i, v in enumerate(self.view))

    def take(self, full: torch.Tensor) -> torch.Tensor:
        """This rank's part of the whole tensor `full` (a copy, contiguous), in the view's layout."""
        n = self.view[self.dim] // self.size
        return full.reshape(self.view).narrow(self.dim, self.rank * n, n).contiguous()

    def place(self, into: torch.Tensor, part: torch.Tensor) -> None:
        """Writes this rank's `part` at its place in `into` (a whole tensor's storage, any shape of its size)."""
        n = self.view[self.dim] // self.size
        into.view(self.view).narrow(self.dim, self.rank * n, n).copy_(part.reshape(self.part))

    def join(self, parts: list[torch.Tensor]) -> torch.Tensor:
        """The whole tensor from every rank's part, in rank order."""
        if len(parts) != self.size:
            raise ValueError(f"tensor parallelism: {len(parts)} parts of a parameter split in {self.size}")
        return torch.cat([p.reshape(self.part) for p in parts], self.dim).reshape(self.full)


class _CopyIn(torch.autograd.Function):
    """Identity forward; the backward sums the input's gradient over the stage's ranks (each rank's column
    shard contributed part of it)."""

    @staticmethod
    def forward(ctx, x, group):
        ctx.group = group
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g):
        g = g.contiguous().clone()
        dist.all_reduce(g, group=ctx.group)
        return g, None


class _ReduceOut(torch.autograd.Function):
    """Sums the ranks' partial outputs forward; identity backward (each rank's row shard needs all of it)."""

    @staticmethod
    def forward(ctx, x, group):
        x = x.contiguous().clone()
        dist.all_reduce(x, group=group)
        return x

    @staticmethod
    def backward(ctx, g):
        return g, None


class TensorParallel:
    """This rank's place in its stage's tensor-parallel group, and the helpers a layer shards itself with."""

    def __init__(self, rank: int, size: int, group: dist.ProcessGroup | None):
        self.rank, self.size, self.group = rank, size, group

    def copy_in(self, x: torch.Tensor) -> torch.Tensor:
        return _CopyIn.apply(x, self.group) if self.size > 1 else x

    def reduce_out(self, x: torch.Tensor) -> torch.Tensor:
        return _ReduceOut.apply(x, self.group) if self.size > 1 else x

    def shard(self, full_shape, view=None, dim: int = 0) -> Shard:
        full = tuple(full_shape)
        return Shard(full, tuple(view) if view is not None else full, dim, self.rank, self.size)

    def column(self, linear: nn.Linear, view=None, dim: int = 0) -> "ColumnParallelLinear":
        """`linear` with its output features split (by default in contiguous parts; `view`/`dim` to split
        inside a layout, e.g. by heads)."""
        return ColumnParallelLinear(linear, self, view, dim)

    def row(self, linear: nn.Linear) -> "RowParallelLinear":
        """`linear` with its input features split in contiguous parts; its bias stays whole, added once."""
        return RowParallelLinear(linear, self)


class ColumnParallelLinear(nn.Module):
    def __init__(self, linear: nn.Linear, tp: TensorParallel, view=None, dim: int = 0):
        super().__init__()
        self.tp = tp
        w = tp.shard(linear.weight.shape, view, dim)
        if w.view[-1] != linear.in_features or w.dim == len(w.view) - 1:
            raise ValueError(f"tensor parallelism: a column split of a {list(linear.weight.shape)} weight views it as "
                             f"{list(w.view)} split along dimension {w.dim}; the view must end with the "
                             f"{linear.in_features} input features, and the split must not be theirs")
        self.tp_shards = {"weight": w}
        self.weight = nn.Parameter(w.take(linear.weight.detach()).reshape(-1, linear.in_features))
        if linear.bias is not None:
            b = tp.shard(linear.bias.shape, w.view[:-1], w.dim)  # the bias follows the weight's rows
            self.tp_shards["bias"] = b
            self.bias = nn.Parameter(b.take(linear.bias.detach()).reshape(-1))
        else:
            self.bias = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self.tp.copy_in(x), self.weight, self.bias)


class RowParallelLinear(nn.Module):
    def __init__(self, linear: nn.Linear, tp: TensorParallel):
        super().__init__()
        self.tp = tp
        w = tp.shard(linear.weight.shape, None, 1)
        self.tp_shards = {"weight": w}
        self.weight = nn.Parameter(w.take(linear.weight.detach()))
        self.bias = nn.Parameter(linear.bias.detach().clone()) if linear.bias is not None else None  # replicated

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.tp.reduce_out(F.linear(x, self.weight))
        return y + self.bias if self.bias is not None else y


def shards_of(layer: nn.Module) -> dict[str, Shard]:
    """{parameter name in `layer`: its Shard} for the sharded ones; the others are whole (replicated)."""
    out = {}
    for prefix, m in layer.named_modules():
        for name, shard in getattr(m, "tp_shards", {}).items():
            out[f"{prefix}.{name}" if prefix else name] = shard
    return out


def shard_layer(layer: nn.Module, tp: TensorParallel) -> bool:
    """Shards `layer` in place when it opts in (returns True); otherwise leaves it whole (False)."""
    if tp.size == 1 or not hasattr(layer, "tensor_parallel"):
        return False
    layer.tensor_parallel(tp)
    return True


class _Counting(TensorParallel):
    """Rank 0 of 2 without a group: counts the bytes a forward would all-reduce instead of reducing them."""

    def __init__(self):
        super().__init__(0, 2, None)
        self.reduced = 0

    def copy_in(self, x):
        return x

    def reduce_out(self, x):
        self.reduced += x.numel() * x.element_size()
        return x


def probe(layer: nn.Module, x) -> tuple[bool, float]:
    """(whether tensor parallelism splits `layer`, the bytes its forward on `x` all-reduces when split) — what
    the planner's cost model needs (LayerSpec.tp_split, tp_comm_bytes); run by the profiler on a copy."""
    if not hasattr(layer, "tensor_parallel"):
        return False, 0.0
    tp = _Counting()
    try:
        shard = copy.deepcopy(layer)
        shard.tensor_parallel(tp)
        with torch.no_grad():
            shard(x)
    except ValueError:  # its shapes do not split in two: as good as not shardable
        return False, 0.0
    return True, float(tp.reduced)
