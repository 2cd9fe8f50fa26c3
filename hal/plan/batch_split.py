"""Splitting the global batch between pipeline groups.

A group is `n` identical pipelines; a pipeline with `s` samples in micro-batches of `b` runs m = ceil(s / b)
of them, the last one partial when b does not divide s (charged at its own size: CostModel.pipeline_time),
and fits in memory only with at most `max_m` micro-batches. A group's samples are spread as evenly as
possible over its pipelines, so the group finishes when a pipeline with ceil(S / n) samples does.

  * `split_batch`: whole micro-batches per pipeline, from the fluid bound walking completion events (the
    search's fast ranking of many combinations);
  * `split_samples`: sample by sample, exact: the least pipeline phase over every split of the batch into
    group totals (the finalists).
"""
from __future__ import annotations

import math
from typing import Protocol, Sequence

from hal.plan.cost import CostModel, ceil_div

__all__ = ["GroupTimes", "split_batch", "sample_time", "most_samples", "split_samples"]


class GroupTimes(Protocol):
    dp: int
    mbs: int
    total: float
    slowest: float
    max_m: int
    tail_total: tuple[float, ...]     # per partial size r = 1 .. mbs - 1
    tail_slowest: tuple[float, ...]


def split_batch(parts: list[tuple], batch: int) -> tuple[float, list[int]] | None:
    """Micro-batch counts per part that finish `batch` samples soonest, whole micro-batches charged as full.

    parts: (total, slowest, samples per round[, most micro-batches]) per group, where a pipeline doing m
    micro-batches takes `CostModel.one_f_one_b(total, slowest, m)` and a round is one micro-batch on every
    pipeline of the group. Every part gets at least one micro-batch. Starts at the fluid lower bound
    (fractional rounds) and walks the completion events in time order. None when the most micro-batches
    cannot hold the batch."""
    caps = [q[3] if len(q) > 3 else math.inf for q in parts]
    if sum(min(c, batch) * q[2] for c, q in zip(caps, parts)) < batch:
        return None
    lo = max(total for total, *_ in parts)
    rate = sum(q[2] / q[1] for q in parts)
    fluid = (batch - sum(q[2] * (1 - q[0] / q[1]) for q in parts)) / rate
    tau = max(lo, fluid)
    ms = [min(c, int(math.floor((tau - q[0]) / q[1] * (1 + 1e-12))) + 1) for c, q in zip(caps, parts)]
    have = sum(m * q[2] for m, q in zip(ms, parts))
    while have < batch:
        j = min((i for i in range(len(parts)) if ms[i] < caps[i]),
                key=lambda i: (CostModel.one_f_one_b(parts[i][0], parts[i][1], ms[i] + 1), i))
        ms[j] += 1
        have += parts[j][2]
    return max(CostModel.one_f_one_b(q[0], q[1], m) for m, q in zip(ms, parts)), ms


def sample_time(g: GroupTimes, s: int) -> float:
    """Seconds of one pipeline of the group with `s` >= 1 samples."""
    m = ceil_div(s, g.mbs)
    r = s - (m - 1) * g.mbs
    if r == g.mbs:
        return CostModel.one_f_one_b(g.total, g.slowest, m)
    if m == 1:
        return g.tail_total[r - 1]
    return CostModel.one_f_one_b(g.total, g.slowest, m - 1) + g.tail_slowest[r - 1]


def most_samples(g: GroupTimes, tau: float, cap: int) -> int:
    """The most samples (at most `cap`) one pipeline of the group runs within `tau` seconds (0: not one)."""
    b = g.mbs
    k = int(math.floor((tau - g.total) / g.slowest)) + 1 if tau >= g.total else 0
    k = max(0, min(k, ceil_div(cap, b)))
    while k > 0 and sample_time(g, min(k * b, cap)) > tau:
        k -= 1
    while k * b < cap and sample_time(g, min((k + 1) * b, cap)) <= tau:
        k += 1
    s = min(k * b, cap)
    for r in range(min(b - 1, cap - s), 0, -1):  # a partial micro-batch on top
        if sample_time(g, s + r) <= tau:
            return s + r
    return s


def split_samples(groups: Sequence[GroupTimes], batch: int) -> tuple[float, list[int]] | None:
    """(pipeline phase, samples per group) minimising the slowest pipeline over every split of `batch` into
    group totals with at least one sample per pipeline and at most max_m micro-batches each; None when none."""
    caps = [min(g.max_m * g.mbs, batch) for g in groups]
    if sum(g.dp for g in groups) > batch or sum(g.dp * c for g, c in zip(groups, caps)) < batch:
        return None

    def feasible(tau: float) -> list[int] | None:
        most = [most_samples(g, tau, c) for g, c in zip(groups, caps)]
        return most if min(most) >= 1 and sum(g.dp * s for g, s in zip(groups, most)) >= batch else None

    best: tuple[float, list[int]] | None = None
    for g, cap in zip(groups, caps):  # the optimum is some group's time at some sample count
        lo, hi = 1, cap
        if feasible(sample_time(g, hi)) is None:
            continue
        while lo < hi:
            mid = (lo + hi) // 2
            if feasible(sample_time(g, mid)) is None:
                lo = mid + 1
            else:
                hi = mid
        tau = sample_time(g, lo)
        if best is None or tau < best[0]:
            best = (tau, feasible(tau))
    if best is None:
        return None
    tau, most = best
    totals = [g.dp * s for g, s in zip(groups, most)]
    excess = sum(totals) - batch
    for i, g in enumerate(groups):  # fewer samples never make a pipeline slower
        cut = min(excess, totals[i] - g.dp)
        totals[i] -= cut
        excess -= cut
    return max(sample_time(g, ceil_div(t, g.dp)) for g, t in zip(groups, totals)), totals
