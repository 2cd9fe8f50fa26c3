"""The pipeline bound: a lower bound of the step of every plan of one technique setting, by which the planner
skips settings it need not search.

The planner searches one setting (plan.Techniques) at a time and skips a setting whose bound is no shorter
than the best step found. The fluid bound (planner._fluid_bound: the batch's compute spread over every device)
knows nothing of pipelines, memory or the sync, and is often half the step. This one prices every same-kind
shape of the search's space (a class, tp, pp, micro-batch size and pipeline count, planner._same_kind_shapes and
_dps) and every cross-kind group the search builds by planner._alone_bounds' lower bound, as a function of the
shape's micro-batches x (a partial last one counted as its share): the fill and drain, x - 1 slowest stages,
the sync (affine in the micro-batches under every ZeRO stage) and the optimizer share, interleaved only where
chunks_run lets a pipeline interleave (_Shapes). With each class taking its best shape, the least T at which
the classes together hold the batch, each shape with no more micro-batches than its memory allows, is the bound
(or the best single class's shape running the whole batch, if lower). Memory is checked lazily, only for the
shapes that set the bound (`_most_in_flight`).

What keeps it below CostModel.evaluate's step of every plan the search can return: the sends are left out; a
partial micro-batch of r samples costs at least r / mbs of a whole one; a class is credited with its best shape
at every T, a cross-kind group with its best shape in place of its two classes' own (every set of disjoint pairs
is tried; beyond 4096 sets it counts in full for each of the two), and its memory is not checked; in a
plan of several classes, a group's sync is the least of the hierarchical and the flat ring (over one more
pipeline) it can take, over the class's own intra-node link and the cross-kind path when every other class is
of another kind, and ZeRO's optimizer shard is taken over every device of the cluster; the memory check ignores
that an interleaved stage needs v layers, and takes ZeRO's shards over the most pipelines the class holds (what
planner._best_splits checks fits with). tests/plan/test_bounds.py checks it against the brute force.
"""
from __future__ import annotations

import math
from bisect import bisect_left

import numpy as np

from hal.plan.cost import CostModel, interleaved_total, ring_allreduce, zero_sync_time
from hal.plan.placement import packing

__all__ = ["pipeline_bound", "holds_model"]


def pipeline_bound(cm: CostModel, options, batch: int, cross_pairs: list[tuple[int, int]], shared: dict) -> float:
    """The bound (module docstring) of cm's setting. `cross_pairs`: the ordered class pairs whose cross-kind
    groups the search builds; `shared`: a dict kept across one search's settings (what fewer techniques change)."""
    classes = cm.cluster.device_classes()
    per = [_Shapes.same_kind(cm, cls, options, batch, shared) for cls in classes]
    pairs = [(i, j, _Shapes.cross_kind(cm, classes, i, j, options, batch, shared)) for i, j in cross_pairs]
    pairs = [(i, j, s) for i, j, s in pairs if s is not None]
    alone = min([s.alone(batch) for s in per] + [s.alone(batch) for _, _, s in pairs] + [math.inf])
    if len(classes) == 1:
        return alone
    multi = [s.in_several(cm) for s in per]
    edges: dict[frozenset, list] = {}
    for i, j, s in pairs:
        edges.setdefault(frozenset((i, j)), []).append(s)
    matchings = _matchings(sorted(edges, key=sorted))

    def holds(t: float) -> bool:
        own = [s.samples(t) for s in multi]
        if matchings is None:  # too many to enumerate: each pair counts in full for both its classes
            held = sum(max([own[c]] + [max(x.samples(t) for x in g) for e, g in edges.items() if c in e])
                       for c in range(len(classes)))
            return held >= batch
        pair = {e: max(x.samples(t) for x in g) for e, g in edges.items()}
        alone_sum = sum(own)
        return max(alone_sum + sum(pair[e] - sum(own[c] for c in e) for e in m) for m in matchings) >= batch

    hi = alone if math.isfinite(alone) else 1.0
    while not holds(hi):
        if math.isfinite(alone) or hi > 1e15:
            return alone
        hi *= 2
    while True:
        lo, top = 0.0, hi
        while top - lo > 1e-7 * top:
            mid = (lo + top) / 2
            lo, top = (lo, mid) if holds(mid) else (mid, top)
        # The shapes that carry the batch at `top`: if one of them cannot hold its micro-batches, lower its
        # limit and look again.
        if not any(s.lower_limit(top) for s in multi):
            return min(lo, alone)


def _matchings(edges: list[frozenset], most: int = 4096) -> list[list[frozenset]] | None:
    """Every set of disjoint edges (class pairs), the empty one included (a class is in at most one
    group of a plan); None when there are more than `most`."""
    out: list[list[frozenset]] = []

    def grow(k: int, used: frozenset, chosen: list) -> bool:
        out.append(chosen)
        if len(out) > most:
            return False
        for e in edges[k:]:
            k += 1
            if not e & used and not grow(k, used | e, [*chosen, e]):
                return False
        return True

    return out if grow(0, frozenset(), []) else None


class _Shapes:
    """Shapes priced by their micro-batches x (a partial last one counts as its share φ of a micro-batch):
    a + b x for x >= 1 (plain 1F1B: the first micro-batch fills and drains, the others and the tail each take
    at least the slowest stage), a_v + b x interleaved (x's micro-batch count a multiple of pp > 1), and
    c + x fill for a single partial micro-batch (x < 1); w = dp x mbs samples per micro-batch round, at most
    `limit` micro-batches (memory; same-kind shapes only). A partial micro-batch of r samples is taken to cost
    at least r / mbs of a whole one (what the cost model's times do: flops and bytes grow with the samples, a
    link's latency does not)."""

    def __init__(self, a, a_v, b, c, fill, w, pp, mbs, v: int, memory=None):
        self.a, self.a_v, self.b, self.c, self.fill, self.w, self.pp, self.mbs = (
            np.asarray(x, dtype=float) for x in (a, a_v, b, c, fill, w, pp, mbs))
        self.v, self.memory = v, memory  # memory: (cm, cls, rows, cache) of same-kind shapes
        self.limit = np.full(len(self.a), np.inf)
        self.parts: tuple | None = None  # same-kind shapes: their (fill, slowest, optimizer, gradient, backward)

    # --- building ---------------------------------------------------------------------------------------------
    @classmethod
    def same_kind(cls_, cm: CostModel, cls, options, batch: int, shared: dict) -> "_Shapes":
        from hal.plan.planner import _dp_max, _dps, _same_kind_shapes  # the planner imports this module
        t = cm.techniques
        key = ("shapes", cls.name, batch, t.zero)  # ZeRO changes the depths whose parameters can fit
        if key not in shared:
            rows = [(p.tp, p.pp, mbs, dp, *packing(cls, p.tp, p.pp, dp))
                    for (p,), mbs in _same_kind_shapes(cm, cls, options, batch)
                    for dp in _dps(_dp_max((p,)), options) if dp <= batch]
            shared[key] = np.array(rows, dtype=float).reshape(-1, 8)
        rows = shared[key]
        key = ("work", cls.name, batch, t.zero, t.recompute, t.sequence_parallel)
        if key not in shared:
            shared[key] = _work(cm, cls, rows)
        fill, slowest, opt, grad, bwd = shared[key]
        tp, pp, mbs, dp, spans, k_min, k_max, nodes = rows.T
        ring = CostModel.hierarchical_allreduce(grad / np.maximum(pp, 1), *_ring_groups(spans, k_min, k_max, nodes, dp),
                                                cls.intra, cls.inter) * (dp > 1)
        out = cls_._priced(cm, fill, slowest, bwd / np.maximum(pp, 1), opt / np.maximum(pp, 1) / (dp if t.zero else 1),
                           ring, dp * mbs, pp, mbs,
                           (cm, cls, rows, shared.setdefault(("fits", cls.name, batch, t.zero, t.recompute,
                                                              t.sequence_parallel), {})))
        out.parts = (fill, slowest, opt, grad, bwd)
        return out

    @classmethod
    def cross_kind(cls_, cm: CostModel, classes, i: int, j: int, options, batch: int, shared: dict) -> "_Shapes | None":
        """The cross-kind groups of classes i -> j (planner._cross_kind_shapes), with _alone_bounds' figures (its
        sync already runs over both kinds' path; its memory is not checked). In a plan with other groups ZeRO
        may shard the optimizer over more replicas: its share is taken over every device of the cluster."""
        from hal.plan.planner import _alone_slowest, _alone_terms, _cross_kind_shapes, _dp_max, _dps
        t = cm.techniques
        key = ("pairs", classes[i].name, classes[j].name, batch, t.zero, t.recompute, t.sequence_parallel)
        if key not in shared:
            rows, cache = [], {}
            for parts, mbs in _cross_kind_shapes(cm, classes[i], classes[j], options, batch):
                works, fill, prefix, opt, grad, intra, inter, bwd = _alone_terms(cm, parts, mbs, cache)
                pp, slowest = sum(p.pp for p in parts), _alone_slowest(parts, works, fill, prefix)
                for dp in (d for d in _dps(_dp_max(parts), options) if d <= batch):
                    ring = CostModel.hierarchical_allreduce(grad / pp, 1, 1, dp, intra, inter) if dp > 1 else 0.0
                    rows.append((fill, slowest, bwd / pp, opt / pp, ring, dp * mbs, pp, mbs))
            shared[key] = np.array(rows, dtype=float).reshape(-1, 8)
        r = shared[key]
        if not len(r):
            return None
        most = sum(c.count for c in cm.cluster.device_classes())
        return cls_._priced(cm, r[:, 0], r[:, 1], r[:, 2], r[:, 3] / (most if t.zero else 1), r[:, 4], r[:, 5],
                            r[:, 6], r[:, 7], None)

    @classmethod
    def _priced(cls_, cm: CostModel, fill, slowest, backward, opt_term, ring, w, pp, mbs, memory) -> "_Shapes":
        from hal.plan.planner import overlap_window
        t = cm.techniques
        window = overlap_window(cm, backward)
        c0 = zero_sync_time(t.zero, ring, window, 0)
        c1 = zero_sync_time(t.zero, ring, window, 1) - c0
        base = c0 + opt_term - slowest
        return cls_(fill + base, interleaved_total(fill, slowest, t.virtual_stages) + base, slowest + c1,
                    c0 + c1 + opt_term, fill, w, pp, mbs, t.virtual_stages, memory)

    def in_several(self, cm: CostModel) -> "_Shapes":
        """These same-kind shapes as groups of a plan of two classes or more (module docstring)."""
        _, cls, rows, _ = self.memory
        others = [c for c in cm.cluster.device_classes() if c.name != cls.name]
        inter = cm.inter_link([cls.inter], {cls.kind} | ({None} if all(c.kind != cls.kind for c in others) else set()))
        tp, pp, mbs, dp, spans, k_min, k_max, nodes = rows.T
        fill, slowest, opt, grad, bwd = self.parts
        nbytes = grad / np.maximum(pp, 1)
        ring = np.minimum(ring_allreduce(dp + 1, nbytes, inter),
                          CostModel.hierarchical_allreduce(nbytes, *_ring_groups(spans, k_min, k_max, nodes, dp),
                                                           cls.intra, inter))
        most = sum(c.count for c in cm.cluster.device_classes())
        opt_term = opt / np.maximum(pp, 1) / (most if cm.techniques.zero else 1)
        out = self._priced(cm, fill, slowest, bwd / np.maximum(pp, 1), opt_term, ring, dp * mbs, pp, mbs, self.memory)
        out.parts, out.limit = self.parts, self.limit
        return out

    # --- pricing ----------------------------------------------------------------------------------------------
    def rounds(self, t: float) -> np.ndarray:
        """Per shape the most micro-batches x (fractional: a partial last one) whose price is at most t."""
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            x = (t - self.a) / self.b
            x = np.where(x >= 1, x, np.clip((t - self.c) / self.fill, 0.0, 1.0))
            if self.v > 1:
                xv = (t - self.a_v) / self.b
                whole = np.ceil(xv)
                xv = np.where(whole % self.pp == 0, xv, np.floor(whole / self.pp) * self.pp)
                x = np.maximum(x, np.where((self.pp > 1) & (xv >= 1), xv, 0.0))
        x = np.floor(np.nan_to_num(np.minimum(x, self.limit), nan=0.0) * self.mbs + 1e-9) / self.mbs  # whole samples
        return x

    def samples(self, t: float) -> float:
        return float((self.w * self.rounds(t)).max()) if len(self.a) else 0.0

    def price(self, x: np.ndarray) -> np.ndarray:
        plain = np.where(x >= 1, self.a + self.b * x, self.c + x * self.fill)
        if self.v == 1:
            return plain
        return np.where((self.pp > 1) & (x >= 1) & (np.ceil(x) % self.pp == 0), np.minimum(plain, self.a_v + self.b * x),
                        plain)

    def alone(self, batch: int) -> float:
        """The least price of a shape running the whole batch by itself, among those that fit."""
        if not len(self.a):
            return math.inf
        x = batch / self.w
        price = self.price(x)
        for i in np.argsort(price, kind="stable"):
            if not np.isfinite(price[i]):
                break
            if self._limit(int(i)) >= math.ceil(x[i] - 1e-12):
                return float(price[i])
        return math.inf

    def lower_limit(self, t: float) -> bool:
        """Whether the shape carrying the most samples at t holds more micro-batches than its memory allows
        (its limit, and that of every shape of the same depth, tp and micro-batch size, is then set)."""
        if self.memory is None or not len(self.a):
            return False
        x = self.rounds(t)
        i = int((self.w * x).argmax())
        return bool(x[i] > 0 and self._limit(i) < math.ceil(x[i] - 1e-12))

    def _limit(self, i: int) -> float:
        if self.memory is None:
            return math.inf
        cm, cls, rows, fits = self.memory
        tp, pp, mbs = (int(x) for x in rows[i, :3])
        if (tp, pp, mbs) not in fits:
            fits[(tp, pp, mbs)] = _most_in_flight(cm, cls, tp, pp, mbs)
        if self.limit[i] == math.inf and fits[(tp, pp, mbs)] < math.inf:
            self.limit[(rows[:, 0] == tp) & (rows[:, 1] == pp) & (rows[:, 2] == mbs)] = fits[(tp, pp, mbs)]
        return fits[(tp, pp, mbs)]


def holds_model(cm: CostModel, cls, options, batch: int, shared: dict) -> bool:
    """Whether some same-kind pipeline of the class fits the model in memory with any number of micro-batches
    (stage k from the last holding k): checked at its largest tp and smallest micro-batch size, which need the
    least memory per device at every depth (ZeRO's shards over fewer pipelines included: 2d/tp + K/count)."""
    from hal.plan.planner import _same_kind_shapes
    key = ("holds", cls.name, batch, cm.techniques.zero, cm.techniques.recompute, cm.techniques.sequence_parallel)
    if key not in shared:
        shapes = [(p, mbs) for (p,), mbs in _same_kind_shapes(cm, cls, options, batch)]
        tp = max((p.tp for p, _ in shapes), default=0)
        mbs = min((m for p, m in shapes if p.tp == tp), default=0)
        depths = sorted({p.pp for p, m in shapes if p.tp == tp and m == mbs}, reverse=True)
        shared[key] = any(_most_in_flight(cm, cls, tp, pp, mbs) == math.inf for pp in depths)
    return shared[key]


def _ring_groups(spans, k_min, k_max, nodes, dp):
    """CostModel.allreduce_groups, elementwise."""
    flat = spans > 0
    return np.where(flat, 1, k_min), np.where(flat, 1, k_max), np.where(flat, dp, nodes)


def _work(cm: CostModel, cls, rows: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per shape (fill and drain: every layer's F + B; the least slowest stage: the mean, and at least the
    cheapest run of ceil(n / pp) successive layers of the n that cost anything; the whole model's optimizer
    step; its gradient bytes per device; its backward), as planner._alone_bounds has them for one part."""
    n, kind = cm.n_layers, cm.cluster.kinds[cls.kind]
    fill, slowest, opt, grad, bwd = (np.zeros(len(rows)) for _ in range(5))
    if not len(rows):
        return fill, slowest, opt, grad, bwd
    pairs, which = np.unique(rows[:, [0, 2]].astype(int), axis=0, return_inverse=True)
    which = which.reshape(-1)
    pp = rows[:, 1].astype(int)
    for g, (tp, mbs) in enumerate(pairs):
        idx = np.flatnonzero(which == g)
        f, b = cm.layer_times(kind, int(mbs), int(tp), cls.intra)
        works = np.diff(f) + np.diff(b)
        costly = works[works > 0]
        total = float(works.sum())
        s = total / pp[idx]
        if len(costly):
            prefix = np.concatenate([[0.0], np.cumsum(costly)])
            k = -(-len(costly) // pp[idx])  # ceil(costly / pp) layers: some stage holds that many
            runs = {int(x): float((prefix[x:] - prefix[:-x]).min()) for x in np.unique(k)}
            s = np.maximum(s, np.vectorize(runs.__getitem__, otypes=[float])(k))
        fill[idx], slowest[idx], bwd[idx] = total, s, float(b[-1] - b[0])
        opt[idx] = float(np.sum(cm.optimizer_time(kind, np.arange(n), np.arange(1, n + 1), int(tp))))
        grad[idx] = float(cm.grad_bytes(0, n, int(tp)))
    return fill, slowest, opt, grad, bwd


def _most_in_flight(cm: CostModel, cls, tp: int, pp: int, mbs: int) -> float:
    """The most micro-batches m with which some split of the layers into pp contiguous stages fits in memory,
    stage k from the last holding min(ahead, m) of them (CostModel.in_flight: k under 1F1B, more interleaved;
    math.inf: every m fits; 0: not one). ZeRO's
    shards: the most pipelines the class holds at tp. Per m a greedy fit from the last stage, each taking the
    longest run of layers that fits, decides it: its boundaries are never behind those of any split that fits,
    since a stage's memory only grows with its layers (a greedy fit with fewer stages counts as fitting)."""
    n, cap = cm.n_layers, cm.capacity(cm.cluster.kinds[cls.kind])
    x = np.arange(n + 1)
    shards = max(1, cls.count // tp) if cm.techniques.zero else 1
    params = np.asarray(cm.param_memory(0, x, tp, shards), dtype=float)
    act = np.asarray(cm.activation_memory(0, x, tp, mbs), dtype=float)
    slack = cap * (1 + 1e-9)
    keys: dict[int, list[float]] = {}

    ahead = [int(cm.ahead(pp, pp - k)) for k in range(pp + 1)]  # interleaving holds more, as the cost model has it

    def fits(m: int) -> bool:
        end = n
        for k in range(1, pp + 1):
            c = min(ahead[k], m)
            if c not in keys:
                keys[c] = (params + c * act).tolist()
            key = keys[c]
            start = bisect_left(key, key[end] - slack)
            if start == end:
                return False
            end = start
            if end == 0:
                return True
        return False

    most = max(ahead[1:])
    if fits(most):
        return math.inf
    lo, hi = 0, most - 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid - 1)
    return float(lo)
