"""Splitting the global batch between pipeline groups.

A group is `n` identical pipelines; a pipeline with `s` samples in micro-batches of `b` runs m = ceil(s / b)
of them, the last one partial when b does not divide s (charged at its own size: CostModel.pipeline_time),
and fits in memory only with at most `max_m` micro-batches. A group's samples are spread as evenly as
possible over its pipelines, so the group finishes when a pipeline with ceil(S / n) samples does, or, under
interleaving (which only a pipeline whose micro-batches are a multiple of its depth runs, chunks_run), one
with floor(S / n) samples that cannot interleave (group_time).

  * `split_batch`: whole micro-batches per pipeline, from the fluid bound walking completion events (the
    search's fast ranking of many combinations);
  * `split_samples`: sample by sample, exact: the least pipeline phase over every split of the batch into
    group totals (the finalists).
"""
from __future__ import annotations

import math
from typing import Protocol, Sequence

from hal.plan.cost import CostModel, ceil_div, chunks_run

__all__ = ["GroupTimes", "split_batch", "sample_time", "group_time", "most_samples", "split_samples"]


class GroupTimes(Protocol):
    dp: int
    mbs: int
    total: float
    slowest: float
    max_m: int
    tail_total: tuple[float, ...]     # per partial size r = 1 .. mbs - 1
    tail_slowest: tuple[float, ...]


def _interleaved(g) -> bool:
    return getattr(g, "v", 1) > 1 and getattr(g, "pp", 1) > 1


def _fill(g, m: int | None, total: float, slowest: float) -> float:
    """The fill-and-drain term of a pipeline of the group running m micro-batches: `total` (interleaved_total
    under interleaving) where chunks_run lets it interleave, else (and with m None) plain 1F1B's, slowest +
    v (total - slowest)."""
    v, p = getattr(g, "v", 1), getattr(g, "pp", 1)
    return total if v == 1 or (m is not None and chunks_run(p, m, v) == v) else slowest + v * (total - slowest)


class _Part:
    """One part of split_batch: (total, slowest, samples per round[, most micro-batches[, depth, chunks]])."""

    def __init__(self, q: tuple):
        self.total, self.slowest, self.round = q[0], q[1], q[2]
        self.cap = q[3] if len(q) > 3 else math.inf
        self.pp, self.v = (q[4], q[5]) if len(q) > 5 else (1, 1)
        self.interleaved = _interleaved(self)
        self.plain = _fill(self, None, self.total, self.slowest)  # plain 1F1B's fill and drain

    def time(self, m: int) -> float:
        fill = self.total if not self.interleaved or m % self.pp == 0 else self.plain
        return fill + (m - 1) * self.slowest

    def _count(self, tau: float, fill: float) -> int:
        return int(math.floor((tau - fill) / self.slowest * (1 + 1e-12))) + 1 if tau >= fill else 0

    def rounds(self, tau: float) -> int:
        """The most micro-batches (at most cap) a pipeline runs within tau: plain-priced ones, or a multiple of
        the depth interleaved."""
        k = min(self._count(tau, self.plain), self.cap)
        if self.interleaved:
            kv = min(self._count(tau, self.total), self.cap)
            k = max(k, self.pp * (kv // self.pp))
        return int(k)

    def next_time(self, tau: float) -> float:
        """The first time after tau at which `rounds` grows (math.inf: never, at its cap)."""
        kp = self._count(tau, self.plain)
        nxt = self.plain + kp * self.slowest if kp < self.cap else math.inf
        if self.interleaved:
            m = self.pp * (self._count(tau, self.total) // self.pp + 1)
            if m <= self.cap:
                nxt = min(nxt, self.total + (m - 1) * self.slowest)
        return nxt


def split_batch(parts: list[tuple], batch: int) -> tuple[float, list[int]] | None:
    """Micro-batch counts per part that finish `batch` samples soonest, whole micro-batches charged as full.

    parts: (total, slowest, samples per round[, most micro-batches[, depth, chunks]]) per group, where a
    pipeline doing m micro-batches takes `CostModel.one_f_one_b(total, slowest, m)` (interleaved over v chunks
    only where chunks_run allows: m a multiple of the depth; else plain 1F1B) and a round is one micro-batch on
    every pipeline of the group. Every part gets at least one micro-batch. Without interleaving: starts at the
    fluid lower bound (fractional rounds) and walks the completion events in time order; with it (a part's time
    is then not monotone in m), bisects the least time at which the parts' most micro-batches hold the batch.
    None when the most micro-batches cannot hold the batch."""
    caps = [q[3] if len(q) > 3 else math.inf for q in parts]
    if sum(min(c, batch) * q[2] for c, q in zip(caps, parts)) < batch:
        return None
    if any(len(q) > 5 and q[5] > 1 and q[4] > 1 for q in parts):
        return _split_interleaved([_Part(q) for q in parts], batch)
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


def _split_interleaved(parts: list[_Part], batch: int) -> tuple[float, list[int]]:
    """split_batch with interleaved parts: from the fluid bound of the interleaved times (no split finishes
    sooner: a part's time is never below them), walk the times at which a part's most micro-batches grow
    (a plain one more, or the next multiple of its depth interleaved) until they hold the batch."""
    rate = sum(q.round / q.slowest for q in parts)
    fluid = (batch - sum(q.round * (1 - q.total / q.slowest) for q in parts)) / rate
    tau = max(max(q.time(1) for q in parts), fluid)
    while sum(min(q.rounds(tau), batch) * q.round for q in parts) < batch:
        nxt = min(q.next_time(tau) for q in parts)
        tau = nxt if nxt > tau else tau * (1 + 1e-12)
    ms = [max(1, min(q.rounds(tau), batch)) for q in parts]
    return max(q.time(m) for q, m in zip(parts, ms)), ms


def sample_time(g: GroupTimes, s: int, plain: bool = False) -> float:
    """Seconds of one pipeline of the group with `s` >= 1 samples (interleaved only where chunks_run allows;
    `plain`: as if it never were, an upper bound)."""
    m = ceil_div(s, g.mbs)
    r = s - (m - 1) * g.mbs
    n = None if plain else m
    if r == g.mbs:
        return CostModel.one_f_one_b(_fill(g, n, g.total, g.slowest), g.slowest, m)
    if m == 1:
        return _fill(g, n, g.tail_total[r - 1], g.tail_slowest[r - 1])
    return CostModel.one_f_one_b(_fill(g, n, g.total, g.slowest), g.slowest, m - 1) + g.tail_slowest[r - 1]


def group_time(g: GroupTimes, total: int) -> float:
    """Seconds of the group with `total` samples spread evenly over its pipelines: its slowest pipeline, which
    under interleaving may be one with fewer samples (one that cannot interleave)."""
    most, least = ceil_div(total, g.dp), total // g.dp
    t = sample_time(g, most)
    if _interleaved(g) and least != most and least >= 1:
        t = max(t, sample_time(g, least))
    return t


def most_samples(g: GroupTimes, tau: float, cap: int) -> int:
    """The most samples (at most `cap`) one pipeline of the group runs within `tau` seconds (0: not one).
    Interleaved, a pipeline's time is not monotone in its samples: the most priced as plain 1F1B (monotone, and
    never less than the time), or the most whose micro-batches are a multiple of the depth, interleaved."""
    b, plain = g.mbs, _interleaved(g)
    total = _fill(g, None, g.total, g.slowest)
    k = int(math.floor((tau - total) / g.slowest)) + 1 if tau >= total else 0
    k = max(0, min(k, ceil_div(cap, b)))
    while k > 0 and sample_time(g, min(k * b, cap), plain) > tau:
        k -= 1
    while k * b < cap and sample_time(g, min((k + 1) * b, cap), plain) <= tau:
        k += 1
    s = min(k * b, cap)
    for r in range(min(b - 1, cap - s), 0, -1):  # a partial micro-batch on top
        if sample_time(g, s + r, plain) <= tau:
            s += r
            break
    if plain:
        s = max(s, _most_interleaved(g, tau, cap))
    return s


def _most_interleaved(g: GroupTimes, tau: float, cap: int) -> int:
    """The most samples (at most cap) in a multiple of the depth micro-batches that run within tau, or 0."""
    b, p = g.mbs, g.pp
    if tau < g.total:
        return 0
    k = min(int(math.floor((tau - g.total) / g.slowest * (1 + 1e-12))) + 1, ceil_div(cap, b))
    best = 0
    for m in (p * (k // p), p * (k // p + 1)):  # the last whole multiple, and the next with a short tail
        if m < p:
            continue
        for s in range(min(m * b, cap), (m - 1) * b, -1):
            if sample_time(g, s) <= tau:
                best = max(best, s)
                break
    return best


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
    if any(_interleaved(g) for g in groups):
        # A pipeline's time is then not monotone in its samples, but feasibility is in the time: bisect it.
        lo, hi = 0.0, max(sample_time(g, c, plain=True) for g, c in zip(groups, caps))
        if feasible(hi) is None:
            return None
        while hi - lo > 1e-13 * hi:
            mid = (lo + hi) / 2
            lo, hi = (lo, mid) if feasible(mid) is not None else (mid, hi)
        most = feasible(hi)
        best = (max(sample_time(g, x) for g, x in zip(groups, most)), most)
    for g, cap in zip(groups, caps) if best is None else ():  # the optimum is some group's time at some count
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
    for i, g in enumerate(groups):  # without interleaving, fewer samples never make a pipeline slower
        cut = min(excess, totals[i] - g.dp)
        for _ in range(4096):  # with it, a pipeline left with fewer micro-batches may lose its interleaving
            if not (_interleaved(g) and cut > 0 and group_time(g, totals[i] - cut) > tau):
                break
            cut -= 1
        totals[i] -= cut
        excess -= cut
    for i, g in enumerate(groups):  # what no interleaved group could shed within tau: shed anyway
        cut = min(excess, totals[i] - g.dp)
        totals[i] -= cut
        excess -= cut
    return max(group_time(g, t) for g, t in zip(groups, totals)), totals
