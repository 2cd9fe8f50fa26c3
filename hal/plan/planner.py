"""The planner: the fastest plan that fits, found per device class rather than per device.

Search space (the exhaustive search in exhaustive.py walks the same one):
  * identical nodes form a device class; each class runs `dp` identical pipelines or none;
  * a pipeline of a class has `pp` stages of `tp` devices each, tp a power of two dividing the node size (tensor
    parallelism never leaves a node, so never mixes kinds); pipelines that fit in a node are packed node by
    node, larger ones are laid over consecutive nodes;
  * layers per stage are uneven, chosen by dynamic programming to minimise the slowest stage under the
    memory limit of each stage (stage i of p holds p - i micro-batches in flight);
  * the global batch is split unevenly: every pipeline of a class gets the same number of micro-batches, and
    the numbers per class are the smallest that finish the batch soonest (from the fluid bound, walking the
    classes' micro-batch completion times in order: `split_batch`).

Speed comes from: one DP table per (class, tp, micro-batch) shared by every pipeline depth (the table is
indexed by the number of remaining stages, which also fixes the in-flight count); keeping the best few
configurations per class; evaluating class combinations with a closed form; and the exact cost model
(cost.CostModel.evaluate) only on the last few finalists.

The closed form of the search (the fast path) is the cost model's: the tables evaluate CostModel's formulas
(layer times, sends, stage memory, in-flight counts, optimizer, gradient shards, 1F1B, all-reduce) over whole
arrays. What it leaves out: a partial last micro-batch is charged as a full one, and every pipeline of a class
is costed with the links of its first (exact when pipelines fit in a node or start on node boundaries).
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field, replace

import numpy as np

from hal.plan.cluster import Cluster, DeviceClass, Link
from hal.plan.cost import CostModel, CostOptions, Estimate, GiB, ceil_div, slowest_link
from hal.plan.limits import MAX_GLOBAL_BATCH, MAX_TP, check_number, is_power_of_two
from hal.plan.model import ModelSpec
from hal.plan.plan import Pipeline, Plan, Stage

__all__ = ["PlannerOptions", "PlanResult", "NoPlanFits", "ClassConfig", "plan", "place", "build_plan",
           "even_split", "rebalance_samples", "split_batch", "predict_step", "check_global_batch", "check_options"]


@dataclass(frozen=True)
class PlannerOptions:
    micro_batch_sizes: tuple[int, ...] = (1, 2, 4, 8)
    tp_degrees: tuple[int, ...] = (1, 2, 4, 8)
    top_per_class: int = 6          # configurations kept per class for the combination step
    finalists: int = 4              # combinations checked with the exact cost model
    all_configs_below: int = 4096   # below this many combinations, every configuration is combined
    small_dp: int = 8               # classes with at most this many pipelines try every dp, not only the max
    # The runtime runs partial last micro-batches (hal.parallel does): each finalist's batch split is refined
    # sample by sample (rebalance_samples) before the finalists are compared. Off: whole micro-batches only.
    partial_micro_batches: bool = False
    cost: CostOptions = field(default_factory=CostOptions)


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
    """One way to run one device class: `dp` identical pipelines of `pp` stages of `tp` devices."""
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

    @property
    def key(self) -> tuple:
        return (self.cls.name, self.tp, self.pp, self.mbs, self.dp, self.bounds)

    def pipeline_time(self, m: int) -> float:
        return CostModel.one_f_one_b(self.total, self.slowest, m)


@dataclass
class PlanResult:
    plan: Plan
    estimate: Estimate
    configs: list[ClassConfig]
    evaluated: int                 # class configurations built
    combinations: int              # class combinations scored


# --- placement ---------------------------------------------------------------------------------------------
def max_pipelines(cls: DeviceClass, tp: int, pp: int) -> int:
    size = tp * pp
    if size <= cls.devices_per_node:
        return (cls.devices_per_node // size) * len(cls.nodes)
    return cls.count // size


def place(cluster: Cluster, cls: DeviceClass, tp: int, pp: int, dp: int) -> list[list[list[int]]]:
    """Device ids per stage of the first `dp` pipelines of a class."""
    d, size = cls.devices_per_node, tp * pp
    out: list[list[list[int]]] = []
    if size <= d:
        for n in cls.nodes:
            base = cluster.nodes[n].first_device
            for j in range(d // size):
                if len(out) == dp:
                    return out
                out.append([[base + j * size + s * tp + t for t in range(tp)] for s in range(pp)])
        return out
    flat = [dev for n in cls.nodes for dev in cluster.nodes[n].device_ids]
    for i in range(min(dp, len(flat) // size)):
        out.append([flat[i * size + s * tp: i * size + (s + 1) * tp] for s in range(pp)])
    return out


def _packing(cls: DeviceClass, tp: int, pp: int, dp: int) -> tuple[bool, int, int, int]:
    """(spans, k_min, k_max, nodes_used) of the placement of `dp` pipelines."""
    size = tp * pp
    if size > cls.devices_per_node:
        return True, 1, 1, ceil_div(dp * size, cls.devices_per_node)
    per = cls.devices_per_node // size
    rem = dp % per
    return False, (rem if rem else per) if dp >= per else dp, min(per, dp), ceil_div(dp, per)


# --- layers per stage: dynamic programming ------------------------------------------------------------------
class _StageTables:
    """Min-max partition tables for one (class, tp, micro-batch size), shared by all pipeline depths.

    best[r][j]: the least possible slowest-stage time when layers j.. are split into r stages that are the last
    r of a pipeline (so the first of them holds min(r, max_in_flight) micro-batches in flight and receives a
    gradient send). Matrices are indexed [start, end] of a stage's layers [start, end)."""

    def __init__(self, cm: CostModel, cls: DeviceClass, tp: int, mbs: int, link: Link, max_in_flight: int):
        kind = cm.cluster.kinds[cls.kind]
        n = self.n_layers = cm.n_layers
        start, end = np.arange(n + 1)[:, None], np.arange(n + 1)[None, :]
        fwd, bwd = cm.layer_times(kind, mbs, tp, cls.intra)
        self.stage_time = (fwd[end] - fwd[start]) + (bwd[end] - bwd[start])   # F + B without sends
        # The send at boundary x carries layer x - 1's output, per micro-batch (none at boundary 0).
        self.send = cm.send_time(np.concatenate([[0.0], cm.out * mbs]), tp, link.latency, link.bandwidth)
        self.send[0] = 0.0
        fits = cm.max_in_flight(start, end, tp, mbs, cm.capacity(kind))
        self.max_fit = np.where(end > start, fits, -1)  # micro-batches in flight a stage can hold
        self.max_in_flight = max_in_flight
        self.middle = self.stage_time + self.send[:, None] + self.send[None, :]   # receives and sends
        self.last = self.stage_time + self.send[:, None]                         # receives only
        self.best = [np.full(n + 1, np.inf)]
        self.best[0][n] = 0.0
        self.split: list[np.ndarray] = [np.zeros(n + 1, dtype=int)]  # the next boundary of best[r][j]

    def _allowed(self, r: int) -> np.ndarray:
        """Which stages fit as the first of the last r (r micro-batches in flight, at most max_in_flight)."""
        return self.max_fit >= CostModel.in_flight(r, 0, self.max_in_flight)

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
        memory = np.where(end > start, params + CostModel.in_flight(r, 0, batch) * act, np.inf)
        least = np.maximum(memory, least[None, :]).min(axis=1)
        best = min(best, float(least[0]))
    return best, cm.capacity(cm.cluster.kinds[cls.kind])


# --- batch split -------------------------------------------------------------------------------------------
def split_batch(parts: list[tuple[float, float, int]], batch: int) -> tuple[float, list[int]]:
    """Micro-batch counts per part that finish `batch` samples soonest.

    parts: (total, slowest, samples per round) per class, where a pipeline doing m micro-batches takes
    `CostModel.one_f_one_b(total, slowest, m)` and a round is one micro-batch on every pipeline of the class.
    Every part gets at least one micro-batch. Starts at the fluid lower bound (fractional rounds) and walks the
    completion events in time order."""
    lo = max(total for total, _, _ in parts)
    rate = sum(n / slowest for _, slowest, n in parts)
    fluid = (batch - sum(n * (1 - total / slowest) for total, slowest, n in parts)) / rate
    tau = max(lo, fluid)
    ms = [int(math.floor((tau - total) / slowest * (1 + 1e-12))) + 1 for total, slowest, _ in parts]
    have = sum(m * n for m, (_, _, n) in zip(ms, parts))
    while have < batch:
        j = min(range(len(parts)), key=lambda i: (CostModel.one_f_one_b(*parts[i][:2], ms[i] + 1), i))
        ms[j] += 1
        have += parts[j][2]
    return max(CostModel.one_f_one_b(total, slowest, m) for m, (total, slowest, _) in zip(ms, parts)), ms


# --- building a plan -----------------------------------------------------------------------------------------
def build_plan(cm: CostModel, configs: list[ClassConfig], ms: list[int], batch: int) -> Plan | None:
    """The plan for class configurations and micro-batch counts; trims the samples beyond `batch` from the
    slowest pipelines first (so the step never gets longer). None when there are more pipelines than samples."""
    pipes: list[Pipeline] = []
    times: list[float] = []
    for cfg, m in zip(configs, ms):
        for devs in place(cm.cluster, cfg.cls, cfg.tp, cfg.pp, cfg.dp):
            stages = [Stage(cfg.cls.kind, ids, (cfg.bounds[s], cfg.bounds[s + 1])) for s, ids in enumerate(devs)]
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
    return Plan(cm.model.name, batch, cm.model.seq_len, pipes, cm.cluster.name)


def rebalance_samples(cm: CostModel, plan: Plan, max_moves: int = 512) -> Plan:
    """The same pipelines with samples moved one at a time from the pipeline that finishes last to the one that
    would finish soonest with one more, while that shortens the step under the exact cost model.

    The search splits the batch in whole micro-batches of each class; a runtime that runs a partial last
    micro-batch (hal.parallel does) can use the finer split. Returns a new plan (predictions recomputed)."""
    pipes = [replace(p, stages=list(p.stages)) for p in plan.pipelines]

    def t(p: Pipeline) -> float:
        return cm.pipeline_time(cm.stage_costs(p), p.num_micro_batches, cm.tail_costs(p))

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
def _class_configs(cm: CostModel, cls: DeviceClass, options: PlannerOptions, batch: int) -> list[ClassConfig]:
    out: list[ClassConfig] = []
    n_layers, per_node = cm.n_layers, cls.devices_per_node
    cap = cm.capacity(cm.cluster.kinds[cls.kind])
    for tp in options.tp_degrees:
        if per_node % tp:
            continue
        pp_lo = max(1, math.ceil(cm.param_memory(0, n_layers, tp) / cap))
        pp_hi = min(n_layers, cls.count // tp)
        if pp_lo > pp_hi:
            continue
        for mbs in options.micro_batch_sizes:
            if mbs > batch:
                continue
            tables: dict[bool, _StageTables] = {}
            for pp in range(pp_lo, pp_hi + 1):
                spans_nodes = tp * pp > per_node
                if spans_nodes not in tables:
                    link = cls.inter if spans_nodes else cls.intra
                    # No pipeline of this micro-batch size gets more micro-batches than the batch holds.
                    tables[spans_nodes] = _StageTables(cm, cls, tp, mbs, link, ceil_div(batch, mbs))
                solved = tables[spans_nodes].solve(pp)
                if solved is None:
                    continue
                dp_max = max_pipelines(cls, tp, pp)
                dps = range(1, dp_max + 1) if dp_max <= options.small_dp else [dp_max]
                summary = _pipeline_summary(cm, cls, tp, pp, mbs, solved[1], tables[spans_nodes].max_in_flight)
                if not summary[1] > 0:
                    continue  # micro-batches that take no time (measured as 0 here): nothing to schedule
                for dp in dps:
                    spans, k_min, k_max, nodes = _packing(cls, tp, pp, dp)
                    out.append(ClassConfig(cls, tp, pp, mbs, dp, solved[1], *summary, spans, k_min, k_max, nodes))
    return out


def _pipeline_summary(cm: CostModel, cls: DeviceClass, tp: int, pp: int, mbs: int, bounds: tuple[int, ...],
                      max_in_flight: int) -> tuple[float, float, float, float, float]:
    """(total, slowest, grad bytes, optimizer, peak memory) of pipeline 0 of a class, with its real boundary
    links: CostModel.stage_costs over arrays of stages."""
    b = np.asarray(bounds)
    start, end = b[:-1], b[1:]
    kind = cm.cluster.kinds[cls.kind]
    fwd, bwd = cm.layer_times(kind, mbs, tp, cls.intra)
    crosses = ((np.arange(1, pp) * tp) % cls.devices_per_node) == 0  # boundary between stage s-1 and s on a node edge
    send = cm.send_time(cm.out[end[:-1] - 1] * mbs, tp, np.where(crosses, cls.inter.latency, cls.intra.latency),
                        np.where(crosses, cls.inter.bandwidth, cls.intra.bandwidth))
    f_plus_b = ((fwd[end] - fwd[start]) + (bwd[end] - bwd[start]) + np.concatenate([send, [0.0]])
                + np.concatenate([[0.0], send]))
    memory = cm.stage_memory(start, end, tp, mbs, CostModel.in_flight(pp, np.arange(pp), max_in_flight))
    return (float(f_plus_b.sum()), float(f_plus_b.max()), float(cm.grad_bytes(start, end, tp).max()),
            float(cm.optimizer_time(kind, start, end, tp).max()), float(memory.max()))


def predict_step(cm: CostModel, combo: list[ClassConfig], ms: list[int]) -> float:
    """The fast path's step time for class configurations run with `ms` micro-batches per pipeline: the
    slowest pipeline (1F1B), then the data-parallel all-reduce of the largest gradient shard, then the slowest
    optimizer (CostModel.evaluate's step, from class summaries)."""
    pipelines = sum(c.dp for c in combo)
    allreduce = 0.0
    if pipelines > 1:
        groups = CostModel.allreduce_groups(any(c.spans for c in combo), min(c.k_min for c in combo),
                                            max(c.k_max for c in combo), sum(c.nodes_used for c in combo), pipelines)
        allreduce = CostModel.hierarchical_allreduce(
            max(c.grad_bytes for c in combo), *groups, slowest_link(c.cls.intra for c in combo),
            cm.inter_link([c.cls.inter for c in combo], {c.cls.kind for c in combo}))
    return max(c.pipeline_time(m) for c, m in zip(combo, ms)) + allreduce + max(c.optimizer for c in combo)


def _combo_time(combo: list[ClassConfig], cm: CostModel, batch: int) -> tuple[float, list[int]] | None:
    if sum(c.dp for c in combo) > batch:
        return None
    _, ms = split_batch([(c.total, c.slowest, c.dp * c.mbs) for c in combo], batch)
    return predict_step(cm, combo, ms), ms


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
    cm = CostModel(cluster, model, options.cost)
    classes = cluster.device_classes()
    per_class = [_class_configs(cm, c, options, global_batch) for c in classes]
    evaluated = sum(len(p) for p in per_class)
    if not evaluated:
        raise _no_fit(cm, classes, options, global_batch)
    choices: list[list[ClassConfig | None]] = []
    n_all = math.prod(len(p) + 1 for p in per_class)
    for cfgs in per_class:
        if n_all > options.all_configs_below:
            scored = []
            for c in cfgs:
                t = _combo_time([c], cm, global_batch)
                if t is not None:
                    scored.append((t[0], c.key, c))
            scored.sort(key=lambda x: (x[0], x[1]))
            cfgs = [c for _, _, c in scored[:options.top_per_class]]
        choices.append([None, *cfgs])
    ranked = []
    combos = 0
    for pick in itertools.product(*choices):
        combo = [c for c in pick if c is not None]
        if not combo:
            continue
        combos += 1
        t = _combo_time(combo, cm, global_batch)
        if t is not None:
            ranked.append((t[0], tuple(c.key for c in combo), combo, t[1]))
    if not ranked:
        raise _no_fit(cm, classes, options, global_batch)
    ranked.sort(key=lambda x: (x[0], x[1]))
    best = None
    for _, _, combo, ms in ranked[:options.finalists]:
        p = build_plan(cm, combo, ms, global_batch)
        if p is None:
            continue
        if options.partial_micro_batches:
            p = rebalance_samples(cm, p)
        est = cm.evaluate(p)
        if est.fits and (best is None or est.step_time < best[1].step_time * (1 - 1e-12)):
            best = (p, est, combo)
    if best is None:
        raise _no_fit(cm, classes, options, global_batch)
    p, est, combo = best
    if not (math.isfinite(est.step_time) and est.step_time > 0):  # the input limits exist to rule this out
        raise ValueError(f"the cost model predicts a step time of {est.step_time!r} s for {model.name} on "
                         f"{cluster.name}: check the figures of the cluster and the model")
    p.predicted = summarise(cm, p, est)
    return PlanResult(p, est, combo, evaluated, combos)


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
    if over <= 0:  # memory is not what is missing: the batch is smaller than the number of pipelines needed
        return NoPlanFits(f"no plan fits: {cm.model.name} fits in memory but not with global batch this small", None)
    return NoPlanFits(
        f"no plan fits: {cm.model.name} does not fit in memory on any device kind even with the largest tensor "
        f"and pipeline parallelism and micro-batch 1; smallest memory shortfall: {over / GiB:.1f} GiB on {label} "
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
        per_kind[pipe.stages[0].kind]["samples"] += pipe.samples
    for k in per_kind.values():
        k["utilisation"] = sum(k["utilisation"]) / len(k["utilisation"])
    return {"step_time_s": est.step_time, "samples_per_s": est.samples_per_s, "tokens_per_s": est.tokens_per_s,
            "allreduce_s": est.allreduce_time, "optimizer_s": est.optimizer_time,
            "pipeline_s": max(est.pipeline_times), "bubble_fraction": est.bubble_fraction, "per_kind": per_kind}
