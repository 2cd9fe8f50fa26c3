"""Layer splits of one pipeline, costed for many candidate splits at once with the cost model's formulas.

`summaries` gives, per split (a row of layer boundaries), what the search needs of a pipeline: the sum and the
largest of the stages' F + B (at the micro-batch size and at every smaller size, for a partial last
micro-batch), the largest gradient shard and optimizer time, and `max_m`: the most micro-batches per pipeline
with which every stage fits in memory (stage i of p holds min(p - i, m), CostModel.in_flight). Sends are
CostModel.transfer_time's; where a group's pipelines cross nodes at different boundaries, the sum and the
largest F + B are each the largest over those pipelines (a bound on every one of them, stage_layout).

`all_splits` enumerates every split of a depth; `pareto` keeps the splits no other split beats on every term.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, fields

import numpy as np

from hal.plan.cost import CostModel, interleaved_total
from hal.plan.placement import Part, max_pipelines

__all__ = ["NO_LIMIT", "Summaries", "stage_layout", "summaries", "all_splits", "count_splits", "pareto"]

NO_LIMIT = 2 ** 62  # max_m of a pipeline whose stages fit with every in-flight count


@dataclass
class Summaries:
    bounds: np.ndarray        # (n, p + 1) layer boundaries
    total: np.ndarray         # (n,) sum over stages of F + B
    slowest: np.ndarray       # (n,) max over stages of F + B
    grad_bytes: np.ndarray    # (n,) largest gradient shard of a device
    optimizer: np.ndarray     # (n,) slowest optimizer step of a device
    peak_memory: np.ndarray   # (n,) largest stage memory with min(p - i, in_flight_cap) micro-batches in flight
    max_m: np.ndarray         # (n,) most micro-batches per pipeline that fit (0: not even one)
    tail_total: np.ndarray    # (n, mbs - 1) `total` of a micro-batch of r = 1 .. mbs - 1 samples
    tail_slowest: np.ndarray  # (n, mbs - 1) `slowest` of it
    min_backward: np.ndarray  # (n,) the shortest backward of one micro-batch of a stage (the overlap's window)

    def take(self, rows: list[int]) -> "Summaries":
        return Summaries(*(getattr(self, f.name)[rows] for f in fields(self)))


def count_splits(n_layers: int, pp: int) -> int:
    return math.comb(n_layers - 1, pp - 1)


def all_splits(n_layers: int, pp: int) -> np.ndarray:
    """Every split of `n_layers` layers into `pp` contiguous non-empty stages, as rows of boundaries."""
    cuts = np.array(list(itertools.combinations(range(1, n_layers), pp - 1)), dtype=int)
    n = len(cuts)
    cuts = cuts.reshape(n, pp - 1)
    return np.hstack([np.zeros((n, 1), dtype=int), cuts, np.full((n, 1), n_layers, dtype=int)])


def stage_layout(cm: CostModel, parts: tuple[Part, ...]) -> tuple:
    """Per part (kind, tp, intra link, first stage index, stages), and the distinct boundary links of the
    group's pipelines: one (width, latency, bandwidth) triple of arrays per pipeline whose boundaries cross
    nodes differently (placement.place's layout: a segment that fits in a node never crosses one; one that
    spans nodes is laid over the class's devices in order, so its stage s starts on node
    (i * size + s * tp) // devices per node). A part's offset within
    a node repeats at most every devices-per-node pipelines, so the first lcm(devices per node of the parts)
    pipelines hold every case."""
    runs, first = [], 0
    for p in parts:
        runs.append((cm.cluster.kinds[p.cls.kind], p.tp, p.cls.intra, first, p.pp))
        first += p.pp
    spans = any(p.tp * p.pp > p.cls.devices_per_node for p in parts)
    dp = min(max_pipelines(p.cls, p.tp, p.pp) for p in parts)
    offsets = np.arange(min(dp, math.lcm(*(p.cls.devices_per_node for p in parts))) if spans else 1)[:, None]
    width, latency, bandwidth = [], [], []
    for k, p in enumerate(parts):
        if k:  # the boundary between two parts: across nodes, through the cross-kind link when kinds differ
            link = cm.inter_link([parts[k - 1].cls.inter, p.cls.inter], {parts[k - 1].cls.kind, p.cls.kind})
            width.append(np.full((1, 1), min(parts[k - 1].tp, p.tp), dtype=float))
            latency.append(np.full((len(offsets), 1), link.latency))
            bandwidth.append(np.full((len(offsets), 1), link.bandwidth))
        start = offsets * p.tp * p.pp + np.arange(p.pp)[None, :] * p.tp  # each stage's first device in the class
        node = start // p.cls.devices_per_node
        crosses = (node[:, 1:] != node[:, :-1]) & (p.tp * p.pp > p.cls.devices_per_node)  # else packed in a node
        inter = cm.inter_link([p.cls.inter], {p.cls.kind})
        width.append(np.full((1, p.pp - 1), p.tp, dtype=float))
        latency.append(np.where(crosses, inter.latency, p.cls.intra.latency))
        bandwidth.append(np.where(crosses, inter.bandwidth, p.cls.intra.bandwidth))
    width = np.concatenate(width, axis=1)[0]
    latency, bandwidth = np.concatenate(latency, axis=1), np.concatenate(bandwidth, axis=1)
    distinct = sorted({(tuple(l), tuple(b)) for l, b in zip(latency.tolist(), bandwidth.tolist())})
    return runs, [(width, np.array(l), np.array(b)) for l, b in distinct]


def _f_plus_b(cm: CostModel, runs, links, mbs: int, bounds: np.ndarray) -> np.ndarray:
    """(n, p) F + B of every stage of every split for one micro-batch of `mbs` samples."""
    fb = np.empty((len(bounds), bounds.shape[1] - 1))
    for kind, tp, intra, first, pp in runs:
        cf, cb = cm.layer_times(kind, mbs, tp, intra)
        a, e = bounds[:, first:first + pp], bounds[:, first + 1:first + pp + 1]
        fb[:, first:first + pp] = (cf[e] - cf[a]) + (cb[e] - cb[a])
    width, latency, bandwidth = links
    if len(width):  # boundary s: stage s sends forward, stage s + 1 backward (interleaved: v times each)
        t = cm.techniques.virtual_stages * cm.send_time(cm.out[bounds[:, 1:-1] - 1] * mbs, width, latency, bandwidth)
        fb[:, :-1] += t
        fb[:, 1:] += t
    return fb


def summaries(cm: CostModel, parts: tuple[Part, ...], mbs: int, bounds: np.ndarray, in_flight_cap: int,
              layout: tuple | None = None, tails: bool = True, shards: int = 1) -> Summaries:
    """The figures of every split (row of `bounds`); `layout`: stage_layout(cm, parts), when already known;
    without `tails`, the partial micro-batches' figures are left empty (n, 0); `shards`: the group's pipelines,
    over which ZeRO shards a stage. Under interleaving `total` is the fill-and-drain term (interleaved_total)."""
    runs, links = layout or stage_layout(cm, parts)
    p = bounds.shape[1] - 1
    v = cm.techniques.virtual_stages

    def fb_of(size: int) -> tuple[np.ndarray, np.ndarray]:
        """(sum, max) over stages of F + B, the largest over the group's distinct pipelines."""
        per = [_f_plus_b(cm, runs, ls, size, bounds) for ls in links]
        total, slowest = np.max([f.sum(axis=1) for f in per], axis=0), np.max([f.max(axis=1) for f in per], axis=0)
        return interleaved_total(total, slowest, v), slowest

    total, slowest = fb_of(mbs)
    tails = [fb_of(r) for r in range(1, mbs)] if tails else []
    n = len(bounds)
    grad, opt, peak = np.zeros(n), np.zeros(n), np.zeros(n)
    max_m = np.full(n, NO_LIMIT, dtype=np.int64)
    min_bwd = np.full(n, np.inf)
    for kind, tp, intra, first, pp in runs:
        a, e = bounds[:, first:first + pp], bounds[:, first + 1:first + pp + 1]
        stage = np.arange(first, first + pp)
        ahead = cm.ahead(p, stage)  # stage i of p holds min(ahead, m) micro-batches (p - i without interleaving)
        grad = np.maximum(grad, cm.grad_bytes(a, e, tp).max(axis=1))
        opt = np.maximum(opt, np.asarray(cm.optimizer_time(kind, a, e, tp, shards)).max(axis=1))
        peak = np.maximum(peak, cm.stage_memory(a, e, tp, mbs, cm.in_flight(p, stage, in_flight_cap),
                                                shards).max(axis=1))
        fits = cm.max_in_flight(a, e, tp, mbs, cm.capacity(kind), shards)  # fits with min(ahead, m) <= fits
        max_m = np.minimum(max_m, np.where(fits >= ahead, NO_LIMIT, np.maximum(fits, 0)).min(axis=1))
        cb = cm.layer_times(kind, mbs, tp, intra)[1]
        min_bwd = np.minimum(min_bwd, (cb[e] - cb[a]).min(axis=1))
    tail_total = np.stack([t[0] for t in tails], axis=1) if tails else np.zeros((n, 0))
    tail_slowest = np.stack([t[1] for t in tails], axis=1) if tails else np.zeros((n, 0))
    return Summaries(bounds, total, slowest, grad, opt, peak, max_m, tail_total, tail_slowest, min_bwd)


def pareto(s: Summaries, keep: int, exact_below: int = 64) -> list[int]:
    """Rows that fit with one micro-batch and that no other row beats or ties on every term (total, slowest,
    gradient shard, optimizer: less is better; max_m: more is better), at most `keep` of them, spread evenly
    over the front ordered by slowest stage. Beyond `exact_below` fitting rows the front is taken among the
    minimisers of a few weightings of the terms (total + k * slowest + c * (shard and optimizer, scaled to
    the slowest stage)) in each memory tier (rows allowing at least the tier's micro-batches)."""
    ok = np.flatnonzero(s.max_m >= 1)
    if len(ok) > exact_below:
        cand = set()
        scale = s.slowest[ok].min() or 1.0
        sync = (s.grad_bytes[ok] / (s.grad_bytes[ok].max() or 1.0) + s.optimizer[ok] / (s.optimizer[ok].max() or 1.0))
        for tier in sorted(set(s.max_m[ok].tolist()), reverse=True)[:4]:
            mask = np.where(s.max_m[ok] >= tier, 0.0, np.inf)
            for k in (0.0, 1.0, 3.0, 15.0):
                for c in (0.0, 1.0, 8.0):
                    cand.add(int(ok[np.argmin(s.total[ok] + k * s.slowest[ok] + c * scale * sync + mask)]))
        ok = np.array(sorted(cand), dtype=int)
    if not len(ok):
        return []
    terms = np.stack([s.total[ok], s.slowest[ok], s.grad_bytes[ok], s.optimizer[ok], -s.max_m[ok].astype(float)], 1)
    order = np.lexsort(terms.T[::-1])
    terms, ok = terms[order], ok[order]
    front: list[int] = []
    for i in range(len(ok)):
        if not front or not np.any(np.all(terms[front] <= terms[i], axis=1)):
            front.append(i)
    rows = sorted(ok[front], key=lambda r: (s.slowest[r], r))
    if len(rows) > keep:
        rows = [rows[round(i * (len(rows) - 1) / (keep - 1))] for i in range(keep)] if keep > 1 else rows[:1]
    return [int(r) for r in rows]
