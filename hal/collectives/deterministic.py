"""Deterministic sums (HAL_DETERMINISTIC_REDUCE=1): SUM and AVG of floating tensors come out bit-identical
whatever the device mix, the rank placement and the chunking.

Chips reduce in different orders and precisions, so a mixed job otherwise drifts apart from itself. Here the
reduction runs on the host in one fixed order: an all-to-all gives each rank one shard of every rank's
contribution; it adds them in global rank order (float32 accumulation for bf16/fp16, Kahan-compensated
float32 for float32, float64 as it is); an all-gather shares the shards. Every element's result depends only
on the ranks' values, so the same inputs give the same bits on any devices. It costs a host round trip and
twice the traffic of a plain all-reduce: a correctness mode, not a fast one.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch._C import _distributed_c10d as c10d

R = dist.ReduceOp


def enabled() -> bool:
    return os.environ.get("HAL_DETERMINISTIC_REDUCE", "0").strip() not in ("", "0", "false", "no")


def applies(dtype: torch.dtype, op: R.RedOpType) -> bool:
    """Only floating SUM/AVG depend on order; MAX/MIN and integer sums are exact anyway."""
    return dtype.is_floating_point and op in (R.SUM, R.AVG)


def ordered_sum(parts: torch.Tensor, dtype: torch.dtype, average_over: int = 0) -> torch.Tensor:
    """The sum over dim 0 of |parts| in index order, in |dtype|; divided by |average_over| when nonzero."""
    if dtype == torch.float32:
        # Kahan-Babuska (Neumaier): |carry| collects what each addition lost, also when the new term is the
        # larger one (plain Kahan loses the carry when a large term cancels the total).
        total = parts[0].clone()
        carry = torch.zeros_like(total)
        for row in parts[1:]:
            t = total + row
            carry += torch.where(total.abs() >= row.abs(), (total - t) + row, (row - t) + total)
            total = t
        total = total + carry
    else:
        acc = torch.float64 if dtype == torch.float64 else torch.float32
        total = parts[0].to(acc)
        for row in parts[1:]:
            total = total + row.to(acc)
    if average_over:
        total = total / average_over
    return total.to(dtype)


def allreduce(gloo: dist.ProcessGroup, size: int, flat: torch.Tensor, op: R.RedOpType) -> None:
    """Reduces the contiguous 1-D CPU tensor |flat| in place across the group (blocks; every Gloo call is made
    here, in the worker's issue order)."""
    n = flat.numel()
    shard = -(-n // size)
    padded = torch.cat([flat, flat.new_zeros(shard * size - n)]) if shard * size != n else flat
    mine = torch.empty(shard * size, dtype=flat.dtype)
    gloo.alltoall_base(mine, padded, [shard] * size, [shard] * size, c10d.AllToAllOptions()).wait()
    reduced = ordered_sum(mine.view(size, shard), flat.dtype, size if op == R.AVG else 0)
    everyone = torch.empty(shard * size, dtype=flat.dtype)
    gloo._allgather_base(everyone, reduced.contiguous()).wait()
    flat.copy_(everyone[:n])
