"""The planner: the fastest plan that fits, found per device class rather than per device.

Declared space (tests/plan/brute_force.py enumerates the same one; docs/planner.md, "The search"):
  * identical nodes form a device class; a plan is a set of pipeline groups, each class in at most one;
  * a same-kind group: `dp` identical pipelines of `pp` stages of `tp` devices on one class (tp a power of two
    dividing the node size: tensor parallelism never leaves a node, so never mixes kinds);
  * a cross-kind group: `dp` identical pipelines whose first stages (`pp_a` of `tp_a` devices) are on class a
    and whose last ones (`pp_b` of `tp_b`) on class b: only activations cross kinds. Every ordered pair of
    classes when there are at most `cross_kind_every_pair` classes, else the pairs in which one class cannot
    hold the model alone;
  * contiguous uneven layer splits; one micro-batch size per group; segments that fit in a node are packed node
    by node, longer ones laid over consecutive nodes (placement.py);
  * the global batch split into any group totals, spread evenly over a group's pipelines (batch_split.py);
  * memory-feasible only: stage i of p holds min(p - i, m) micro-batches (the pipeline's own m).

Exact where the space is small (the bounds are PlannerOptions'): every layer split of a depth when there are
at most `enumerate_splits` of them (kept: the Pareto front over total, slowest stage, gradient shard,
optimizer and memory headroom); beyond, the min-max dynamic programme (one table per in-flight cap and sync
weight, shared by every depth). Every combination of the classes' configurations when there are at most
`all_configs_below`; beyond, the best `top_per_class` per class (found in the order of a lower bound of their
step alone), combined by a beam of `beam` partial plans and improved by local search. Combinations are
ranked with whole micro-batches (split_batch); the best `finalists` get the exact sample split
(split_samples), and the best `checked` of those that fit CostModel.evaluate. docs/planner.md, "The search",
has the details and the measured quality and speed.
"""
from __future__ import annotations

import functools
import itertools
import math
from dataclasses import astuple, dataclass, field, replace

import numpy as np

from hal.plan.batch_split import split_batch, split_samples
from hal.plan.bounds import holds_model, pipeline_bound
from hal.plan.cluster import Cluster, DeviceClass, Link
from hal.plan.cost import (CostModel, CostOptions, Estimate, GiB, ceil_div, chunks_run, interleaved_total, slowest_link,
                           zero_sync_time)
from hal.plan.limits import MAX_GLOBAL_BATCH, MAX_TP, check_number, is_power_of_two
from hal.plan.model import ModelSpec
from hal.plan.placement import Part, max_pipelines, packing, place_parts
from hal.plan.plan import RECOMPUTE, Pipeline, Plan, Stage, Techniques
from hal.plan.stage_split import NO_LIMIT, Summaries, all_splits, count_splits, pareto, stage_layout, summaries

__all__ = ["PlannerOptions", "TechniqueSpace", "RUNTIME", "ALL_TECHNIQUES", "PlanResult", "NoPlanFits", "ClassConfig", "plan", "build_plan",
           "plan_from_samples", "effective_techniques", "even_split", "rebalance_samples", "split_batch", "predict_step", "sync_time",
           "check_global_batch", "check_options"]

@dataclass(frozen=True)
class TechniqueSpace:
    """The techniques (plan.Techniques) the search may choose, each a tuple of allowed values; a plan uses one
    setting throughout. `settings` leaves out the ones another allowed setting beats on every term."""
    zero: tuple[int, ...] = (0,)
    recompute: tuple[str, ...] = ("none",)
    sequence_parallel: tuple[bool, ...] = (False,)
    virtual_stages: tuple[int, ...] = (1,)
    overlap: tuple[bool, ...] = (False,)

    def settings(self, model: ModelSpec) -> list[Techniques]:
        """Every allowed setting but the dominated ones: without sequence parallelism when it is allowed (the
        same time, no more memory), without overlap when it is allowed (no longer), ZeRO 0 when ZeRO 1 is
        allowed and there is no overlap (the same sync, a shorter optimizer step, less memory), a recomputation
        that saves no memory on this model when none is allowed, and more chunks than layers."""
        saves = {"none": True, "selective": any(l.act_selective_bytes > 0 for l in model.layers),
                 "full": any(l.input_bytes is not None and l.input_bytes < l.act_bytes for l in model.layers)}
        out = []
        for z, r, sp, v, ov in itertools.product(self.zero, self.recompute, self.sequence_parallel,
                                                 self.virtual_stages, self.overlap):
            if (r != "none" and not saves[r] and "none" in self.recompute) or (not sp and True in self.sequence_parallel) \
                    or (not ov and True in self.overlap) or (z == 0 and 1 in self.zero and not ov) \
                    or v > len(model.layers):
                continue
            out.append(Techniques(z, r, sp, v, ov))
        return out


RUNTIME = TechniqueSpace()  # what hal.parallel executes: none of the techniques (docs/planner.md, "Techniques")
ALL_TECHNIQUES = TechniqueSpace((0, 1, 2, 3), RECOMPUTE, (False, True), (1, 2), (False, True))


@dataclass(frozen=True)
class PlannerOptions:
    micro_batch_sizes: tuple[int, ...] = (1, 2, 4, 8)
    tp_degrees: tuple[int, ...] = (1, 2, 4, 8)
    top_per_class: int = 6          # configurations kept per class (and pair) for the combination step
    finalists: int = 16             # combinations given the exact sample split (split_samples)
    checked: int = 4                # of those, the best that fit, built and scored by CostModel.evaluate
    all_configs_below: int = 4096   # below this many combinations, every configuration is combined
    beam: int = 32                  # partial combinations kept per class beyond all_configs_below
    small_dp: int = 8               # classes with at most this many pipelines try every dp, not only the max
    enumerate_splits: int = 2048    # every layer split of a depth when it has at most this many
    splits_per_depth: int = 8       # configurations kept of a depth's Pareto front of splits
    in_flight_caps: int = 1         # memory-tight DP: tables for this many in-flight caps below the batch's
    sync_weights: tuple[float, ...] = (0.1, 1.0)  # DP: also splits minimising F + B + weight x sync per stage
    cross_kind: bool = True         # search pipelines over two classes: every pair when there are at most
    cross_kind_every_pair: int = 3  # this many classes, else the pairs in which one cannot hold the model alone
    # The runtime runs partial last micro-batches (hal.parallel does): each finalist's batch split is refined
    # sample by sample (rebalance_samples) before the finalists are compared. Off: whole micro-batches only.
    partial_micro_batches: bool = False
    cost: CostOptions = field(default_factory=CostOptions)
    # The techniques searched. The default is what the runtime (hal.parallel, hal launch) executes; `hal plan`
    # plans for real clusters and searches ALL_TECHNIQUES.
    techniques: TechniqueSpace = RUNTIME


def check_global_batch(batch: int) -> int:
    """`batch` if it is an int in [1, MAX_GLOBAL_BATCH]; raises ValueError saying what is wrong otherwise."""
    try:
        return check_number(batch, 1, MAX_GLOBAL_BATCH, integer=True)
    except ValueError as e:
        why = " (2^53: float64 counts samples exactly up to there)" if "at most" in str(e) else ""
        raise ValueError(f"global batch: {e}{why}") from None


def check_options(options: PlannerOptions) -> PlannerOptions:
    """Raises ValueError naming the first bad option: micro-batch sizes are ints in [1, MAX_GLOBAL_BATCH],
    tensor-parallel degrees powers of two up to MAX_TP."""
    if not options.micro_batch_sizes or not options.tp_degrees:
        raise ValueError("micro-batch sizes and tensor-parallel degrees must not be empty")
    for b in options.micro_batch_sizes:
        try:
            check_number(b, 1, MAX_GLOBAL_BATCH, integer=True)
        except ValueError as e:
            raise ValueError(f"micro-batch size: {e}") from None
    for t in options.tp_degrees:
        try:
            check_number(t, 1, MAX_TP, integer=True)
        except ValueError as e:
            raise ValueError(f"tensor-parallel degree: {e}") from None
        if not is_power_of_two(t):
            raise ValueError(f"tensor-parallel degree: {t} is not a power of two")
    return options


class NoPlanFits(Exception):
    """No plan fits in memory; `shortfall` = (bytes missing, kind, bytes needed, bytes available)."""

    def __init__(self, message: str, shortfall: tuple[float, str, float, float] | None):
        super().__init__(message)
        self.shortfall = shortfall


@dataclass
class ClassConfig:
    """One way to run one pipeline group: `dp` identical pipelines of `pp` stages, on one class (`parts` empty:
    `tp` devices per stage) or over several (`parts`: the stages on each class; `cls`, `tp`: the first's)."""
    cls: DeviceClass
    tp: int
    pp: int
    mbs: int
    dp: int
    bounds: tuple[int, ...]       # layer boundaries, len pp + 1
    total: float                  # sum over stages of F + B (one micro-batch through the pipeline and back)
    slowest: float                # slowest stage F + B
    grad_bytes: float             # largest gradient shard of a device
    optimizer: float
    peak_memory: float
    spans: bool                   # a pipeline crosses nodes
    k_min: int = 1                # pipelines per node (least, most) when none spans
    k_max: int = 1
    nodes_used: int = 1
    parts: tuple[Part, ...] = ()
    max_m: int = NO_LIMIT         # most micro-batches per pipeline that fit in memory
    tail_total: tuple[float, ...] = ()    # total and slowest of a partial micro-batch of 1 .. mbs - 1 samples
    tail_slowest: tuple[float, ...] = ()
    min_backward: float = 0.0     # the shortest backward of one micro-batch of a stage (the overlap's window)
    v: int = 1                    # chunks per stage (interleaved 1F1B); `total` is then interleaved_total

    @functools.cached_property
    def layout(self) -> tuple[Part, ...]:
        return self.parts or (Part(self.cls, self.tp, self.pp),)

    @functools.cached_property
    def classes(self) -> list[DeviceClass]:
        return [p.cls for p in self.layout]

    @functools.cached_property
    def key(self) -> tuple:
        return (tuple((p.cls.name, p.tp, p.pp) for p in self.layout), self.mbs, self.dp, self.bounds)

    def pipeline_time(self, m: int) -> float:
        """As CostModel.pipeline_time: interleaved only where `chunks_run` allows, else plain 1F1B (whose fill and
        drain, interleaved_total's inverse, is slowest + v (total - slowest))."""
        if chunks_run(self.pp, m, self.v) != self.v:
            return CostModel.one_f_one_b(self.slowest + self.v * (self.total - self.slowest), self.slowest, m)
        return CostModel.one_f_one_b(self.total, self.slowest, m)


@dataclass
class PlanResult:
    plan: Plan
    estimate: Estimate
    configs: list[ClassConfig]
    evaluated: int                 # class configurations built
    combinations: int              # class combinations scored
    runners_up: list[tuple[Plan, Estimate]] = field(default_factory=list)  # the other finalists scored, fastest first


# --- layers per stage: dynamic programming ------------------------------------------------------------------
class _StageTables:
    """Min-max partition tables for one (class, tp, micro-batch size), shared by all pipeline depths.

    best[r][j]: the least possible slowest-stage score when layers j.. are split into r stages that are the last
    r of a pipeline (so the first of them holds min(r, max_in_flight) micro-batches in flight and receives a
    gradient send). A stage's score is its F + B, plus `sync_weight` times its share of the step's sync (its
    optimizer time and 2 x its gradient shard over the inter-node bandwidth, about what a ring moves): with a
    weight > 0 the split trades a slower stage for a smaller largest one, whose all-reduce and optimizer are
    shorter. Matrices are indexed [start, end] of a stage's layers [start, end)."""

    def __init__(self, cm: CostModel, cls: DeviceClass, tp: int, mbs: int, link: Link, max_in_flight: int,
                 sync_weight: float = 0.0, shared: dict | None = None, shards: int = 1):
        """`shared`: a dict in which tables of the same class, tp, micro-batch size and link share their
        weight-independent matrices; `shards`: the pipelines ZeRO shards a stage over. Interleaved, a stage
        is allowed as the first of the last r by its fit with min(r, cap) in flight, as without interleaving:
        the splits' exact fit is summaries'."""
        n = self.n_layers = cm.n_layers
        key = ("matrices", cls.name, tp, mbs, link, shards)
        if shared is None or key not in shared:
            matrices = self._matrices(cm, cls, tp, mbs, link, shards)
            if shared is not None:
                shared[key] = matrices
        else:
            matrices = shared[key]
        compute, sync, self.send, self.max_fit = matrices
        self.stage_time = compute + sync_weight * sync if sync_weight else compute
        self.max_in_flight = max_in_flight
        self.middle = self.stage_time + self.send[:, None] + self.send[None, :]   # receives and sends
        self.last = self.stage_time + self.send[:, None]                         # receives only
        self.best = [np.full(n + 1, np.inf)]
        self.best[0][n] = 0.0
        self.split: list[np.ndarray] = [np.zeros(n + 1, dtype=int)]  # the next boundary of best[r][j]

    @staticmethod
    def _matrices(cm: CostModel, cls: DeviceClass, tp: int, mbs: int, link: Link, shards: int) -> tuple:
        """(F + B without sends, the sync share, sends per boundary, micro-batches in flight a stage can hold)."""
        kind, n = cm.cluster.kinds[cls.kind], cm.n_layers
        start, end = np.arange(n + 1)[:, None], np.arange(n + 1)[None, :]
        fwd, bwd = cm.layer_times(kind, mbs, tp, cls.intra)
        compute = (fwd[end] - fwd[start]) + (bwd[end] - bwd[start])
        sync = cm.optimizer_time(kind, start, end, tp, shards) + 2 * cm.grad_bytes(start, end, tp) / cls.inter.bandwidth
        # The send at boundary x carries layer x - 1's output, per micro-batch (none at boundary 0), v times.
        send = cm.techniques.virtual_stages * cm.send_time(np.concatenate([[0.0], cm.out * mbs]), tp, link.latency,
                                                           link.bandwidth)
        send[0] = 0.0
        fits = cm.max_in_flight(start, end, tp, mbs, cm.capacity(kind), shards)
        return compute, sync, send, np.where(end > start, fits, -1)

    def _allowed(self, r: int) -> np.ndarray:
        """Which stages fit as the first of the last r (r micro-batches in flight, at most max_in_flight)."""
        return self.max_fit >= np.minimum(r, self.max_in_flight)

    def _grow(self, r_max: int) -> None:
        for r in range(len(self.best), r_max + 1):
            cost = np.where(self._allowed(r), self.last if r == 1 else self.middle, np.inf)
            cost = np.maximum(cost, self.best[r - 1][None, :])
            self.split.append(cost.argmin(axis=1))
            self.best.append(cost[np.arange(self.n_layers + 1), self.split[-1]])

    def solve(self, pp: int) -> tuple[float, tuple[int, ...]] | None:
        """Best bottleneck and boundaries for `pp` stages, or None when no split fits in memory."""
        n = self.n_layers
        self._grow(pp - 1)
        first = self.stage_time[0] + (self.send if pp > 1 else 0.0)
        ok = self._allowed(pp)[0]
        if pp == 1:
            return (float(first[n]), (0, n)) if ok[n] else None
        cost = np.where(ok, np.maximum(first, self.best[pp - 1]), np.inf)
        k = int(cost.argmin())
        if not np.isfinite(cost[k]):
            return None
        bounds = [0, k]
        for r in range(pp - 1, 0, -1):
            bounds.append(int(self.split[r][bounds[-1]]))
        return float(cost[k]), tuple(bounds)


def _min_memory_shortfall(cm: CostModel, cls: DeviceClass, options: PlannerOptions,
                          batch: int) -> tuple[float, float] | None:
    """(least achievable peak bytes per device, capacity) for a class: largest tp, micro-batch 1, best depth;
    None when no tensor-parallel degree of `options` divides the class's node size."""
    tps = [t for t in options.tp_degrees if cls.devices_per_node % t == 0]
    if not tps:
        return None
    tp, n = max(tps), cm.n_layers
    start, end = np.arange(n + 1)[:, None], np.arange(n + 1)[None, :]
    params, act = cm.param_memory(start, end, tp), cm.activation_memory(start, end, tp, 1)
    best = np.inf
    least = np.full(n + 1, np.inf)  # least[j]: the least peak over splits of layers j.. into the last r stages
    least[n] = 0.0
    for r in range(1, min(n, cls.count // tp) + 1):
        memory = np.where(end > start, params + np.minimum(r, batch) * act, np.inf)
        least = np.maximum(memory, least[None, :]).min(axis=1)
        best = min(best, float(least[0]))
    return best, cm.capacity(cm.cluster.kinds[cls.kind])


# --- building a plan -----------------------------------------------------------------------------------------
def _pipelines(cm: CostModel, cfg: ClassConfig) -> list[list[Stage]]:
    """The stages of each of the group's `dp` pipelines."""
    kinds = [p.cls.kind for p in cfg.layout for _ in range(p.pp)]
    return [[Stage(k, ids, (cfg.bounds[s], cfg.bounds[s + 1])) for s, (k, ids) in enumerate(zip(kinds, devs))]
            for devs in place_parts(cm.cluster, cfg.layout, cfg.dp)]


def build_plan(cm: CostModel, configs: list[ClassConfig], ms: list[int], batch: int) -> Plan | None:
    """The plan for group configurations and micro-batch counts; trims the samples beyond `batch` from the
    slowest pipelines first (so the step never gets longer). None when there are more pipelines than samples."""
    pipes: list[Pipeline] = []
    times: list[float] = []
    for cfg, m in zip(configs, ms):
        for stages in _pipelines(cm, cfg):
            pipes.append(Pipeline(stages, cfg.mbs, m, cfg.mbs * m))
            times.append(cfg.pipeline_time(m))
    if len(pipes) > batch:
        return None
    excess = sum(p.samples for p in pipes) - batch
    if excess < 0:
        return None
    order = sorted(range(len(pipes)), key=lambda i: (-times[i], i))
    for i in order:
        if excess <= 0:
            break
        p = pipes[i]
        r = min(excess, p.samples - 1)
        p.samples -= r
        p.num_micro_batches = ceil_div(p.samples, p.micro_batch_size)
        excess -= r
    return Plan(cm.model.name, batch, cm.model.seq_len, pipes, cm.cluster.name, techniques=cm.techniques)


def plan_from_samples(cm: CostModel, configs: list[ClassConfig], totals: list[int], batch: int) -> Plan:
    """The plan for group configurations and samples per group, each group's spread evenly over its pipelines
    (the first ones get the extra samples)."""
    pipes: list[Pipeline] = []
    for cfg, total in zip(configs, totals):
        base, extra = divmod(total, cfg.dp)
        for k, stages in enumerate(_pipelines(cm, cfg)):
            s = base + (k < extra)
            pipes.append(Pipeline(stages, cfg.mbs, ceil_div(s, cfg.mbs), s))
    return Plan(cm.model.name, batch, cm.model.seq_len, pipes, cm.cluster.name, techniques=cm.techniques)


def rebalance_samples(cm: CostModel, plan: Plan, max_moves: int = 512) -> Plan:
    """The same pipelines with samples moved one at a time from the pipeline that finishes last to the one that
    would finish soonest with one more, while that shortens the step under the exact cost model.

    The search splits the batch in whole micro-batches of each class; a runtime that runs a partial last
    micro-batch (hal.parallel does) can use the finer split. Returns a new plan (predictions recomputed)."""
    pipes = [replace(p, stages=list(p.stages)) for p in plan.pipelines]

    def t(p: Pipeline) -> float:
        return cm.pipeline_time(cm.stage_costs(p), p.num_micro_batches, cm.tail_costs(p), cm.techniques.virtual_stages)

    def moved(p: Pipeline, d: int) -> Pipeline:
        n = p.samples + d
        return replace(p, samples=n, num_micro_batches=ceil_div(n, p.micro_batch_size))

    times = [t(p) for p in pipes]
    for _ in range(max_moves):
        slow = max(range(len(pipes)), key=lambda i: (times[i], -i))
        if pipes[slow].samples <= 1:
            break
        plus = [(t(moved(p, 1)), i) for i, p in enumerate(pipes) if i != slow]
        if not plus:
            break
        t_plus, fast = min(plus)
        t_minus = t(moved(pipes[slow], -1))
        # Both moved pipelines end before the old finish (another pipeline tied at it moves next).
        if max(t_plus, t_minus) >= times[slow] * (1 - 1e-9):
            break
        pipes[slow], pipes[fast] = moved(pipes[slow], -1), moved(pipes[fast], 1)
        times[slow], times[fast] = t_minus, t_plus
    out = replace(plan, pipelines=pipes)
    if out.signature() == plan.signature():
        return plan
    est = cm.evaluate(out)
    if not (est.fits and est.step_time < cm.evaluate(plan).step_time):
        return plan
    out.predicted = summarise(cm, out, est)
    return out


def even_split(plan: Plan) -> Plan:
    """The same pipelines with the global batch split evenly between them."""
    n = len(plan.pipelines)
    base, extra = divmod(plan.global_batch, n)
    pipes = []
    for i, p in enumerate(plan.pipelines):
        s = base + (1 if i < extra else 0)
        pipes.append(replace(p, samples=s, num_micro_batches=ceil_div(s, p.micro_batch_size)))
    return replace(plan, pipelines=pipes, predicted={})


# --- the search --------------------------------------------------------------------------------------------
def _dps(dp_max: int, options: PlannerOptions) -> list[int]:
    return list(range(1, dp_max + 1)) if dp_max <= options.small_dp else [dp_max]


def _dp_max(parts: tuple[Part, ...]) -> int:
    return min(max_pipelines(p.cls, p.tp, p.pp) for p in parts)


def _dp_splits(cm: CostModel, part: Part, mbs: int, batch: int, options: PlannerOptions, tables: dict,
               shards: int = 1) -> np.ndarray:
    """Min-max splits of a same-kind depth too deep to enumerate. With the batch's in-flight count
    (ceil(batch / mbs)), and, when memory binds (one micro-batch in flight would allow a faster split), also
    with the largest few in-flight caps below it at which a stage's fit changes: a pipeline with fewer
    micro-batches holds fewer."""
    cls, tp, pp = part.cls, part.tp, part.pp
    spans_nodes = tp * pp > cls.devices_per_node
    link = cls.inter if spans_nodes else cls.intra

    def table(cap: int, weight: float = 0.0) -> _StageTables:
        key = (cls.name, tp, mbs, spans_nodes, cap, weight, shards)
        if key not in tables:
            tables[key] = _StageTables(cm, cls, tp, mbs, link, cap, weight, tables, shards)
        return tables[key]

    full = ceil_div(batch, mbs)
    solved = [table(full).solve(pp)] + [table(full, w).solve(pp) for w in options.sync_weights]
    loosest = table(1).solve(pp) if full > 1 else None
    if loosest is not None and (solved[0] is None or loosest[0] < solved[0][0]):
        key = (cls.name, tp, mbs, spans_nodes, "caps", shards)
        if key not in tables:
            tables[key] = sorted({int(v) for v in np.unique(table(full).max_fit) if v >= 1}, reverse=True)
        caps = [c for c in tables[key] if c < min(pp, full)]
        solved += [loosest] + [table(c).solve(pp) for c in caps[:options.in_flight_caps]]
    rows = sorted({s[1] for s in solved if s is not None})
    return np.array(rows, dtype=int).reshape(-1, pp + 1)


def _best_splits(cm: CostModel, parts: tuple[Part, ...], mbs: int, batch: int, options: PlannerOptions,
                 tables: dict, shards: int = 1) -> Summaries | None:
    """The kept splits of a pipeline shape (every split when they are few, Pareto-filtered; else, same-kind
    only, the DP's); None when the shape is not searched or nothing fits. `shards`: the group's pipelines,
    over which ZeRO shards a stage."""
    pp = sum(p.pp for p in parts)
    if count_splits(cm.n_layers, pp) <= options.enumerate_splits:
        bounds = all_splits(cm.n_layers, pp)
    elif len(parts) == 1:
        # One set of tables for every dp: ZeRO's shards taken as the most pipelines the class holds at this tp,
        # the least memory any of them needs (summaries below check each split's fit with the group's own dp).
        most = max(1, parts[0].cls.count // parts[0].tp) if cm.techniques.zero else 1
        bounds = _dp_splits(cm, parts[0], mbs, batch, options, tables, most)
    else:
        return None
    if not len(bounds):
        return None
    layout, cap = stage_layout(cm, parts), ceil_div(batch, mbs)
    few = len(bounds) <= options.splits_per_depth  # the partial micro-batches' figures of all rows cost little
    s = summaries(cm, parts, mbs, bounds, cap, layout, tails=few, shards=shards)
    rows = pareto(s, options.splits_per_depth)
    if not rows:
        return None
    return summaries(cm, parts, mbs, bounds[rows], cap, layout, shards=shards) if not few else s.take(rows)


def _make(parts: tuple[Part, ...], mbs: int, s: Summaries, dps: list[int], v: int = 1) -> list[ClassConfig]:
    first, out = parts[0], []
    for r in range(len(s.bounds)):
        if not s.slowest[r] > 0:
            continue  # micro-batches that take no time (measured as 0 here): nothing to schedule
        for dp in dps:
            if len(parts) == 1:
                spans, k_min, k_max, nodes = packing(first.cls, first.tp, first.pp, dp)
            else:  # kinds never share a node: a cross-kind pipeline always spans nodes
                spans, k_min, k_max = True, 1, 1
                nodes = sum(packing(p.cls, p.tp, p.pp, dp)[3] for p in parts)
            out.append(ClassConfig(first.cls, first.tp, sum(p.pp for p in parts), mbs, dp,
                                   tuple(int(b) for b in s.bounds[r]), float(s.total[r]), float(s.slowest[r]),
                                   float(s.grad_bytes[r]), float(s.optimizer[r]), float(s.peak_memory[r]),
                                   spans, k_min, k_max, nodes, parts if len(parts) > 1 else (),
                                   int(s.max_m[r]), tuple(map(float, s.tail_total[r])),
                                   tuple(map(float, s.tail_slowest[r])), float(s.min_backward[r]),
                                   v))
    return out


def _same_kind_shapes(cm: CostModel, cls: DeviceClass, options: PlannerOptions, batch: int) -> list[tuple]:
    """(parts, micro-batch size) of a class's same-kind pipelines whose parameters can fit at all."""
    n_layers, cap = cm.n_layers, cm.capacity(cm.cluster.kinds[cls.kind])
    out = []
    for tp in options.tp_degrees:
        if cls.devices_per_node % tp:
            continue
        pp_lo = max(1, math.ceil(cm.param_memory(0, n_layers, tp, max(1, cls.count // tp)) / cap))
        out += [((Part(cls, tp, pp),), mbs) for mbs in options.micro_batch_sizes if mbs <= batch
                for pp in range(pp_lo, min(n_layers, cls.count // tp) + 1)]
    return out


def _cross_kind_shapes(cm: CostModel, a: DeviceClass, b: DeviceClass, options: PlannerOptions,
                       batch: int) -> list[tuple]:
    """(parts, micro-batch size) of pipelines whose first stages are on class a and last ones on class b: for
    each pp_a, pp_b = 1, 2, ... up to the first depth with more than `enumerate_splits` splits, whose devices
    have room for the parameters (tensor parallelism divides a layer's parameters, or copies them)."""
    n, out = cm.n_layers, []
    need = float(cm.param_memory(0, n, 1, max(1, min(a.count, b.count))))  # ZeRO: at most that many pipelines
    cap_a, cap_b = (cm.capacity(cm.cluster.kinds[c.kind]) for c in (a, b))
    for tp_a in options.tp_degrees:
        for tp_b in options.tp_degrees:
            if a.devices_per_node % tp_a or b.devices_per_node % tp_b:
                continue
            for pp_a in range(1, min(n - 1, a.count // tp_a) + 1):
                for pp_b in range(1, min(n - pp_a, b.count // tp_b) + 1):
                    if count_splits(n, pp_a + pp_b) > options.enumerate_splits:
                        break
                    if pp_a * tp_a * cap_a + pp_b * tp_b * cap_b < need:
                        continue
                    out += [((Part(a, tp_a, pp_a), Part(b, tp_b, pp_b)), mbs)
                            for mbs in options.micro_batch_sizes if mbs <= batch]
    return out


def _alone_terms(cm: CostModel, parts: tuple[Part, ...], mbs: int, cache: dict) -> tuple:
    """The figures of _alone_bounds that every depth of the parts shares: (per-layer F + B on each part, the
    fill and drain with every layer on its fastest part, the first part's prefix sums over its layers that cost
    anything, the whole optimizer step on the fastest part per layer, the gradient bytes per device at the largest
    tp, the slowest intra-node link, the path across nodes, the backward with every layer on its slowest part)."""
    key = (tuple((p.cls.name, p.tp) for p in parts), mbs)
    if key not in cache:
        n, works, opts, bwds = cm.n_layers, [], [], []
        for p in parts:
            kind = cm.cluster.kinds[p.cls.kind]
            cf, cb = cm.layer_times(kind, mbs, p.tp, p.cls.intra)
            works.append(np.diff(cf) + np.diff(cb))
            bwds.append(np.diff(cb))
            opts.append(cm.optimizer_time(kind, np.arange(n), np.arange(1, n + 1), p.tp))
        works = np.array(works)
        costly = works[0][works[0] > 0]
        classes = [p.cls for p in parts]
        cache[key] = (works, float(works.min(axis=0).sum()), np.concatenate([[0.0], np.cumsum(costly)]),
                      float(np.min(opts, axis=0).sum()), float(cm.grad_bytes(0, n, max(p.tp for p in parts))),
                      slowest_link(c.intra for c in classes),
                      cm.inter_link([c.inter for c in classes], {c.kind for c in classes}),
                      float(np.max(bwds, axis=0).sum()))
    return cache[key]


def _alone_slowest(parts: tuple[Part, ...], works: np.ndarray, fill: float, prefix: np.ndarray) -> float:
    """_alone_bounds' lower bound of the slowest stage, from _alone_terms' figures."""
    pp = sum(p.pp for p in parts)
    if len(parts) == 1:
        slowest = fill / pp
        if len(prefix) > 1:
            k = ceil_div(len(prefix) - 1, pp)
            slowest = max(slowest, float((prefix[k:] - prefix[:-k]).min()))
        return slowest
    pps = np.array([p.pp for p in parts], dtype=float)[:, None]
    weight = pps / np.maximum(works.sum(axis=1, keepdims=True), 1e-300)
    return float((weight / weight.sum() * works / pps).min(axis=0).sum())


def _alone_bounds(cm: CostModel, parts: tuple[Part, ...], mbs: int, dps: list[int], batch: int,
                  cache: dict) -> list[float]:
    """Per pipeline count of `dps`, a lower bound of the step of `dp` pipelines of the shape running the whole
    batch by themselves in whole micro-batches (what _best_alone ranks by). Sends are left out; the fill and
    drain is at least every layer on its fastest part; the slowest stage is at least any mix
    sum_k lam_k load_k / pp_k of the parts' per-stage loads (lam_k >= 0 summing to 1; here lam_k proportional
    to pp_k / W_k, W_k the whole model on part k), which is at least sum over layers of min_k lam_k w_k(l) / pp_k
    (one part: W / pp), and, on one part, at least the cheapest run of ceil(n / pp) successive layers among the
    n that cost anything (some stage holds that many); the mean gradient shard and optimizer share stand for
    the largest; an overlapped sync hides behind no more than the stages' mean backward (overlap_window)."""
    works, fill, prefix, opt, grad, intra, inter, bwd = _alone_terms(cm, parts, mbs, cache)
    pp, v, t = sum(p.pp for p in parts), cm.techniques.virtual_stages, cm.techniques
    slowest = _alone_slowest(parts, works, fill, prefix)
    out = []
    for dp in dps:
        allreduce, m = 0.0, ceil_div(batch, dp * mbs)
        if dp > 1:
            groups = (CostModel.allreduce_groups(*packing(parts[0].cls, parts[0].tp, pp, dp), dp) if len(parts) == 1
                      else (1, 1, dp))
            allreduce = zero_sync_time(t.zero, CostModel.hierarchical_allreduce(grad / pp, *groups, intra, inter),
                                       overlap_window(cm, bwd / pp), m)
        # interleaved: the fill and drain at least (every layer on its fastest part) / v + the slowest (1 - 1/v)
        out.append(interleaved_total(fill, slowest, v) + (m - 1) * slowest + allreduce
                   + opt / pp / (dp if t.zero else 1))
    return out


def overlap_window(cm: CostModel, backward: float) -> float:
    """The most an overlapped gradient sync can hide behind (CostModel.sync_time's window) in a pipeline whose
    stages' backward of one micro-batch average `backward` seconds: the shortest is no longer (0 without
    overlap; arrays: elementwise)."""
    return cm.options.overlap_fraction * backward if cm.techniques.overlap else 0.0 * backward


def _group_configs(cm: CostModel, shapes: list[tuple], options: PlannerOptions, batch: int, tables: dict,
                   keep: int | None = None) -> list[ClassConfig]:
    """Configurations of pipeline shapes, for every pipeline count (_dps). With `keep`, only those that can be
    among the `keep` best by their step alone (_best_alone): shapes are tried in the order of _alone_bounds
    and the search stops when the bound passes the keep-th best step found."""
    splits: dict[tuple, Summaries | None] = {}

    def build(parts: tuple[Part, ...], mbs: int, dps: list[int]) -> list[ClassConfig]:
        if cm.techniques.zero:  # memory and the optimizer step depend on the pipelines ZeRO shards over
            return [c for dp in dps for c in build_one(parts, mbs, [dp], dp)]
        return build_one(parts, mbs, dps, 1)

    def build_one(parts: tuple[Part, ...], mbs: int, dps: list[int], shards: int) -> list[ClassConfig]:
        if (parts, mbs, shards) not in splits:
            splits[(parts, mbs, shards)] = _best_splits(cm, parts, mbs, batch, options, tables, shards)
        s = splits[(parts, mbs, shards)]
        return [] if s is None else _make(parts, mbs, s, dps, cm.techniques.virtual_stages)

    if keep is None:
        return [c for parts, mbs in shapes for c in build(parts, mbs, _dps(_dp_max(parts), options))]
    tries, cache = [], {}
    for i, (parts, mbs) in enumerate(shapes):
        dps = [dp for dp in _dps(_dp_max(parts), options) if dp <= batch]
        tries += [(bound, i, dp) for bound, dp in zip(_alone_bounds(cm, parts, mbs, dps, batch, cache), dps)]
    tries.sort()
    out: list[ClassConfig] = []
    best: list[float] = []  # the keep best steps alone so far, ascending
    for bound, i, dp in tries:
        if len(best) >= keep and bound >= best[keep - 1]:
            break
        for c in build(*shapes[i], [dp]):
            t = _combo_time([c], cm, batch)
            if t is not None:
                out.append(c)
                best = sorted([*best, t[0]])[:keep]
    return out


def sync_time(cm: CostModel, combo: list[ClassConfig], ms: list[int]) -> tuple[float, float]:
    """(exposed data-parallel sync of the largest gradient shard, slowest optimizer) of group configurations run
    with `ms` micro-batches per pipeline, as CostModel.evaluate charges them after the slowest pipeline."""
    pipelines = sum(c.dp for c in combo)
    allreduce = 0.0
    if pipelines > 1:
        classes = [cls for c in combo for cls in c.classes]
        groups = CostModel.allreduce_groups(any(c.spans for c in combo), min(c.k_min for c in combo),
                                            max(c.k_max for c in combo), sum(c.nodes_used for c in combo), pipelines)
        allreduce = CostModel.hierarchical_allreduce(
            max(c.grad_bytes for c in combo), *groups, slowest_link(cls.intra for cls in classes),
            cm.inter_link([cls.inter for cls in classes], {cls.kind for cls in classes}))
        allreduce = cm.sync_time(allreduce, min(c.min_backward for c in combo), max(ms))
    return allreduce, max(c.optimizer for c in combo)


def predict_step(cm: CostModel, combo: list[ClassConfig], ms: list[int]) -> float:
    """The fast path's step time for group configurations run with `ms` micro-batches per pipeline: the
    slowest pipeline (1F1B), then the data-parallel all-reduce, then the slowest optimizer."""
    return max(c.pipeline_time(m) for c, m in zip(combo, ms)) + sum(sync_time(cm, combo, ms))


def _combo_time(combo: list[ClassConfig], cm: CostModel, batch: int) -> tuple[float, list[int]] | None:
    if sum(c.dp for c in combo) > batch:
        return None
    split = split_batch([(c.total, c.slowest, c.dp * c.mbs, c.max_m, c.pp, c.v) for c in combo], batch)
    if split is None:
        return None
    return predict_step(cm, combo, split[1]), split[1]


def _combinations(cm: CostModel, choices: list[list[tuple[ClassConfig, frozenset[int]]]], options: PlannerOptions,
                  batch: int) -> tuple[list[tuple[float, tuple, list[ClassConfig]]], int]:
    """Ranked (predicted step, key, configurations) of combinations of groups over disjoint classes, and how
    many were scored. choices[i]: the groups whose first class (in class order) is i, with the classes each
    takes. Every combination when they are few; else a beam of the best `options.beam` partial ones (each
    ranked as completed by the best own group of every class still to come), whose best few are then
    improved by local search (_improve)."""
    n_all = math.prod(len(c) + 1 for c in choices)
    beam = n_all > options.all_configs_below
    states: list[tuple[tuple[tuple[ClassConfig, frozenset[int]], ...], frozenset[int]]] = [((), frozenset())]
    cache: dict[tuple, float] = {}

    def score(combo) -> float:
        key = tuple(g.key for g, _ in combo)
        if key not in cache:
            t = _combo_time([g for g, _ in combo], cm, batch) if combo else None
            cache[key] = math.inf if t is None else t[0]
        return cache[key]

    # A partial combination is ranked completed by the best group of its own of every class still to come.
    own_best = [next(((g, o) for g, o in groups if o == {i}), None) for i, groups in enumerate(choices)]

    def completed(combo, used, i):
        return (*combo, *(g for j, g in enumerate(own_best) if j > i and g is not None and j not in used))

    for i, groups in enumerate(choices):
        grown = list(states)
        for combo, used in states:
            if i not in used:
                grown += [((*combo, (g, owned)), used | owned) for g, owned in groups if not owned & used]
        if beam and len(grown) > options.beam:
            keyed = sorted(((score(completed(c, u, i)), tuple(g.key for g, _ in c), c, u) for c, u in grown),
                           key=lambda x: x[:2])
            grown = [((), frozenset())] + [(c, u) for _, _, c, u in keyed[:options.beam] if c]
        states = grown
    combos = [c for c, _ in states if c]
    if beam:
        combos += [_improve(c, choices, score) for c in sorted(combos, key=score)[:options.checked]]
    ranked = {}
    for combo in combos:
        t = score(combo)
        if math.isfinite(t):
            key = tuple(sorted(g.key for g, _ in combo))
            ranked[key] = (t, key, [g for g, _ in combo])
    return sorted(ranked.values(), key=lambda x: x[:2]), len(cache)


def _improve(combo: tuple, choices: list[list[tuple[ClassConfig, frozenset[int]]]], score) -> tuple:
    """Local search from a combination: the best single change (a class's group replaced by another of its
    choices, added or dropped) while one shortens the predicted step."""
    best = score(combo)
    while True:
        moves = []
        for i, groups in enumerate(choices):
            keep = tuple(g for g in combo if min(g[1]) != i)  # without the group that starts at class i
            used = frozenset().union(*(o for _, o in keep))
            moves += [keep] + [(*keep, g) for g in groups if not g[1] & used]
        t, move = min(((score(m), m) for m in moves if m), key=lambda x: (x[0], tuple(g.key for g, _ in x[1])))
        if not t < best * (1 - 1e-12):
            return combo
        best, combo = t, move


def plan(cluster: Cluster, model: ModelSpec, global_batch: int, options: PlannerOptions | None = None,
         kinds: set[str] | None = None) -> PlanResult:
    """The fastest plan under the cost model that fits in memory; raises NoPlanFits when none does."""
    options = check_options(options or PlannerOptions())
    check_global_batch(global_batch)
    if not any(l.fwd_flops > 0 or any(f + b > 0 for t in l.measured.values() for f, b in t.values())
               for l in model.layers):
        raise ValueError(f"{model.name} costs nothing: no layer has FLOPs or a measured time")
    if kinds is not None:
        cluster = cluster.subset(kinds)
        if cluster.num_devices == 0:
            raise NoPlanFits(f"no plan fits: the cluster has no device of kind {', '.join(sorted(kinds))}", None)
    base = CostModel(cluster, model, options.cost)
    found, failures, evaluated, combos = [], [], 0, 0
    # One search per setting (a plan uses one throughout), those with the least bound first; a setting whose
    # bound is no shorter than the best step found cannot win and is not searched. With one setting there is
    # nothing to skip.
    shared: dict = {}
    settings = options.techniques.settings(model)
    bounds = {t: setting_bound(base.with_techniques(t), options, global_batch, shared) if len(settings) > 1 else 0.0
              for t in settings}
    for techniques in sorted(settings, key=lambda t: (bounds[t], astuple(t))):
        if found and bounds[techniques] >= min(sc[0][0] for sc in found) * (1 + 1e-9):
            continue
        try:
            scored, n_configs, n_combos = _search(base.with_techniques(techniques), options, global_batch, shared)
        except NoPlanFits as e:
            failures.append(e)
            continue
        found.append(scored)
        evaluated, combos = evaluated + n_configs, combos + n_combos
    if not found:
        raise min(failures, key=lambda e: (e.shortfall is None, e.shortfall[0] if e.shortfall else 0.0))
    # The winner, its setting's other finalists and the best plan of every other setting, fastest first.
    found.sort(key=lambda sc: sc[0][:2])
    _, _, p, est, combo = found[0][0]
    runners, seen = [], {p.signature()}
    for x in sorted([x for x in found[0][1:]] + [sc[0] for sc in found[1:]], key=lambda x: x[:2]):
        if x[2].signature() not in seen and len(runners) < options.checked + 4:
            seen.add(x[2].signature())
            runners.append(x)
    if not (math.isfinite(est.step_time) and est.step_time > 0):  # the input limits exist to rule this out
        raise ValueError(f"the cost model predicts a step time of {est.step_time!r} s for {model.name} on "
                         f"{cluster.name}: check the figures of the cluster and the model")
    p.predicted = summarise(base, p, est)
    return PlanResult(p, est, combo, evaluated, combos, [(q, e) for _, _, q, e, _ in runners])


def _fluid_bound(cm: CostModel, options: PlannerOptions, batch: int) -> float:
    """A lower bound of the pipeline phase of every plan under cm's techniques: the batch's compute spread
    over every device as a fluid. With t[l, k] a layer's least seconds per sample on kind k (forward and
    backward, recomputation included, no tensor parallelism or communication: tensor parallelism does not
    make a layer's device-seconds fewer; at the micro-batch size or measured size with the least time per
    sample, which is what any size is scaled from) and w[k] = sum_l t[l, k], weak LP duality with the
    weights 1/w[k] gives T >= batch * sum_l min_k t[l, k] / w[k] / sum_k n_k / w[k]."""
    key = ("fluid", batch)
    if key not in cm._bounds:
        per, counts = [], []
        for cls in cm.cluster.device_classes():
            kind = cm.cluster.kinds[cls.kind]
            sizes = set(options.micro_batch_sizes) | {b for l in cm.model.layers
                                                      for b in l.measured.get(kind.measured_kind, {})}
            best = None
            for b in sorted(sizes):
                f, w = cm.layer_times(kind, b, 1, cls.intra)
                t = (np.diff(f) + np.diff(w)) / b
                best = t if best is None else np.minimum(best, t)
            per.append(best)
            counts.append(cls.count)
        t, n = np.array(per), np.array(counts, dtype=float)
        w = t.sum(axis=1)
        cm._bounds[key] = (0.0 if not np.all(w > 0) else
                           float(batch * (t / w[:, None]).min(axis=0).sum() / (n / w).sum()))
    return cm._bounds[key]


def setting_bound(cm: CostModel, options: PlannerOptions, batch: int, shared: dict) -> float:
    """A lower bound of the step of every plan of the search's space under cm's techniques: the larger of the
    fluid bound and bounds.pipeline_bound."""
    return max(_fluid_bound(cm, options, batch),
               pipeline_bound(cm, options, batch, cross_pairs(cm, options, batch, shared), shared))


def effective_techniques(p: Plan) -> Techniques:
    """The plan's techniques less those that change nothing in it (the same estimate under either): ZeRO when
    no stage has a replica, overlap with one pipeline, sequence parallelism without tensor parallelism,
    interleaving without a pipeline of two stages."""
    t = p.techniques
    stages = [s for q in p.pipelines for s in q.stages]
    return replace(t, zero=t.zero if max(CostModel.stage_replicas(p).values()) > 1 else 0,
                   overlap=t.overlap and len(p.pipelines) > 1,
                   sequence_parallel=t.sequence_parallel and any(s.tp > 1 for s in stages),
                   virtual_stages=t.virtual_stages if any(len(q.stages) > 1 for q in p.pipelines) else 1)


def cross_pairs(cm: CostModel, options: PlannerOptions, batch: int, shared: dict) -> list[tuple[int, int]]:
    """The ordered class pairs whose cross-kind pipelines the search builds: every pair when there are at most
    `cross_kind_every_pair` classes, else those in which one class cannot hold the model in memory by itself
    with any number of micro-batches (bounds.holds_model)."""
    if not options.cross_kind:
        return []
    classes = cm.cluster.device_classes()
    pairs = list(itertools.permutations(range(len(classes)), 2))
    if len(classes) <= options.cross_kind_every_pair:
        return pairs
    holds = [holds_model(cm, cls, options, batch, shared) for cls in classes]
    return [(i, j) for i, j in pairs if not (holds[i] and holds[j])]


def _search(cm: CostModel, options: PlannerOptions, global_batch: int,
            shared: dict | None = None) -> tuple[list[tuple], int, int]:
    """The search under cm's techniques: (the checked finalists that fit, as (step, key, plan, estimate,
    configurations), fastest first; configurations built; combinations scored). Raises NoPlanFits. `shared`:
    what the searches of one plan() call share (bounds.py)."""
    cluster = cm.cluster
    classes = cluster.device_classes()
    # Many combinations: only the best few configurations of each class (and pair) by their step alone count.
    same = [_same_kind_shapes(cm, cls, options, global_batch) for cls in classes]
    pruned = math.prod(sum(len(_dps(_dp_max(parts), options)) for parts, _ in shapes) + 1
                       for shapes in same) > options.all_configs_below
    # One class (hence no cross-kind pairs): a plan is one configuration, ranked by its step alone, so building
    # only those that can be among the `finalists` best by it (_group_configs' bound) is exact.
    keep = options.top_per_class if pruned else (max(options.finalists, options.top_per_class) if len(classes) == 1 else None)
    tables: dict = {}
    choices = [[(c, frozenset([i])) for c in _group_configs(cm, shapes, options, global_batch, tables, keep)]
               for i, shapes in enumerate(same)]
    for i, j in cross_pairs(cm, options, global_batch, shared if shared is not None else {}):
        shapes = _cross_kind_shapes(cm, classes[i], classes[j], options, global_batch)
        choices[min(i, j)] += [(c, frozenset([i, j]))
                               for c in _group_configs(cm, shapes, options, global_batch, tables, keep)]
    evaluated = sum(len(c) for c in choices)
    if not evaluated:
        raise _no_fit(cm, classes, options, global_batch)
    if pruned or math.prod(len(c) + 1 for c in choices) > options.all_configs_below:
        choices = [_best_alone(cm, c, options, global_batch) for c in choices]
    ranked, combos = _combinations(cm, choices, options, global_batch)
    exact = []  # the finalists with the exact sample split, by the fast path's step
    for _, key, combo in ranked[:options.finalists]:
        split = split_samples(combo, global_batch)
        if split is not None:
            ms = [ceil_div(ceil_div(total, c.dp), c.mbs) for c, total in zip(combo, split[1])]
            exact.append((split[0] + sum(sync_time(cm, combo, ms)), key, combo, split[1]))
    exact.sort(key=lambda x: x[:2])
    scored = []
    for _, key, combo, totals in exact:
        if len(scored) == options.checked:
            break
        p = plan_from_samples(cm, combo, totals, global_batch)
        if options.partial_micro_batches:
            p = rebalance_samples(cm, p)
        p.techniques = effective_techniques(p)
        est = cm.evaluate(p)
        if est.fits:
            scored.append((est.step_time, (astuple(cm.techniques), key), p, est, combo))
    if not scored:
        raise _no_fit(cm, classes, options, global_batch)
    scored.sort(key=lambda x: x[:2])
    return scored, evaluated, combos


def _best_alone(cm: CostModel, groups: list, options: PlannerOptions, batch: int) -> list:
    """Per set of classes taken (a class alone, or a pair), the `top_per_class` groups with the shortest step
    when each runs the whole batch by itself."""
    scored: dict[frozenset[int], list] = {}
    for g, owned in groups:
        t = _combo_time([g], cm, batch)
        if t is not None:
            scored.setdefault(owned, []).append((t[0], g.key, g, owned))
    out = []
    for owned in sorted(scored, key=sorted):
        out += [(g, o) for _, _, g, o in sorted(scored[owned], key=lambda x: x[:2])[:options.top_per_class]]
    return out


def _no_fit(cm: CostModel, classes: list[DeviceClass], options: PlannerOptions, batch: int) -> NoPlanFits:
    worst = None
    for cls in classes:
        least = _min_memory_shortfall(cm, cls, options, batch)
        if least is not None and (worst is None or least[0] - least[1] < worst[0]):
            worst = (least[0] - least[1], cls.kind, *least)
    if worst is None:
        sizes = ", ".join(str(s) for s in sorted({c.devices_per_node for c in classes}))
        return NoPlanFits(f"no plan fits: no tensor-parallel degree of {list(options.tp_degrees)} divides a node "
                          f"size of the cluster ({sizes} devices per node)", None)
    if min(options.micro_batch_sizes) > batch:
        return NoPlanFits(f"no plan fits: every micro-batch size of {list(options.micro_batch_sizes)} is larger "
                          f"than the global batch {batch}", None)
    over, kind, need, cap = worst
    label = cm.cluster.kinds[kind].label
    across = ", nor in pipelines across two kinds" if options.cross_kind and len(classes) > 1 else ""
    if over <= 0:  # memory is not what is missing: the batch is smaller than the number of pipelines needed
        return NoPlanFits(f"no plan fits: {cm.model.name} fits in memory but not with global batch this small", None)
    return NoPlanFits(
        f"no plan fits: {cm.model.name} does not fit in memory on any device kind even with the largest tensor "
        f"and pipeline parallelism and micro-batch 1{across}; smallest memory shortfall: {over / GiB:.1f} GiB on {label} "
        f"(needs {need / GiB:.1f} GiB, has {cap / GiB:.1f} GiB usable per device)", worst)


def summarise(cm: CostModel, p: Plan, est: Estimate) -> dict:
    """JSON-friendly predictions attached to a plan."""
    per_kind: dict[str, dict] = {}
    for pipe, sc in zip(p.pipelines, est.stages):
        for st, c in zip(pipe.stages, sc):
            k = per_kind.setdefault(st.kind, {"devices": 0, "samples": 0, "memory_used": 0.0,
                                              "memory_total": cm.cluster.kinds[st.kind].memory_bytes,
                                              "utilisation": [], "emulated": cm.cluster.kinds[st.kind].emulated})
            k["devices"] += st.tp
            k["memory_used"] = max(k["memory_used"], c.memory)
            k["utilisation"].extend(est.utilisation[d] for d in st.device_ids)
        for kind in pipe.kinds:  # every sample of a cross-kind pipeline passes through each of its kinds
            per_kind[kind]["samples"] += pipe.samples
    for k in per_kind.values():
        k["utilisation"] = sum(k["utilisation"]) / len(k["utilisation"])
    return {"techniques": p.techniques.to_dict(), "step_time_s": est.step_time, "samples_per_s": est.samples_per_s, "tokens_per_s": est.tokens_per_s,
            "allreduce_s": est.allreduce_time, "optimizer_s": est.optimizer_time,
            "pipeline_s": max(est.pipeline_times), "bubble_fraction": est.bubble_fraction, "per_kind": per_kind}
