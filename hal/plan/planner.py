"""The planner: the fastest plan that fits, found per device class rather than per device.

Search space (the exhaustive search in exhaustive.py walks the same one):
  * identical nodes form a device class; each class runs `dp` identical pipelines or none;
  * a pipeline of a class has `pp` stages of `tp` devices each, tp a power of two dividing the node size (tensor
    parallelism never leaves a node, so never mixes kinds); pipelines that fit in a node are packed node by
    node, larger ones are laid over consecutive nodes;
  * layers per stage are uneven, chosen by dynamic programming to minimise the slowest stage under the
    memory limit of each stage (stage i of p holds p - i micro-batches in flight);
  * the global batch is split unevenly: every pipeline of a class gets the same number of micro-batches, and
    the numbers per class are the smallest that finish the batch soonest (binary search on the step time).

Speed comes from: one DP table per (class, tp, micro-batch) shared by every pipeline depth (the table is
indexed by the number of remaining stages, which also fixes the in-flight count); keeping the best few
configurations per class; evaluating class combinations with a closed form; and the exact cost model
(cost.CostModel.evaluate) only on the last few finalists.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field, replace

import numpy as np

from hal.plan.cluster import Cluster, DeviceClass, Link
from hal.plan.cost import CostModel, CostOptions, Estimate, GiB, ring_allreduce
from hal.plan.model import ModelSpec
from hal.plan.plan import Pipeline, Plan, Stage

__all__ = ["PlannerOptions", "PlanResult", "NoPlanFits", "ClassConfig", "plan", "place", "build_plan",
           "even_split", "split_batch"]


@dataclass(frozen=True)
class PlannerOptions:
    micro_batch_sizes: tuple[int, ...] = (1, 2, 4, 8)
    tp_degrees: tuple[int, ...] = (1, 2, 4, 8)
    top_per_class: int = 6          # configurations kept per class for the combination step
    finalists: int = 4              # combinations checked with the exact cost model
    all_configs_below: int = 4096   # below this many combinations, every configuration is combined
    small_dp: int = 8               # classes with at most this many pipelines try every dp, not only the max
    cost: CostOptions = field(default_factory=CostOptions)


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
    A: float                      # sum over stages of F + B (one micro-batch through the pipeline and back)
    S: float                      # slowest stage F + B
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
        return True, 1, 1, math.ceil(dp * size / cls.devices_per_node)
    per = cls.devices_per_node // size
    rem = dp % per
    return False, (rem if rem else per) if dp >= per else dp, min(per, dp), math.ceil(dp / per)


# --- layers per stage: dynamic programming ------------------------------------------------------------------
class _StageTables:
    """Min-max partition tables for one (class, tp, micro-batch size), shared by all pipeline depths.

    G[r][j]: the least possible slowest-stage time when layers j.. are split into r stages that are the last
    r of a pipeline (so the first of them holds r micro-batches in flight and receives a gradient send)."""

    def __init__(self, cm: CostModel, cls: DeviceClass, tp: int, mbs: int, link: Link, r_max: int):
        kind = cm.cluster.kinds[cls.kind]
        L = cm.n_layers
        cf, cb = cm.layer_times(kind, mbs, tp, cls.intra)
        self.cf, self.cb = cf, cb
        self.T = (cf[None, :] - cf[:, None]) + (cb[None, :] - cb[:, None])
        # Send of layer x-1's output at boundary x (x = 1..L-1), per micro-batch.
        out = np.concatenate([[0.0], cm.out * mbs])
        self.send = np.where(out[:L + 1] > 0, link.latency + out[:L + 1] / (tp * link.bandwidth), 0.0)
        self.send[0] = 0.0
        pm = (cm.cum_params[None, :] - cm.cum_params[:, None]) / tp * cm.bytes_per_param
        am = (cm.cum_act[None, :] - cm.cum_act[:, None]) / tp * mbs
        cap = cm.capacity(kind)
        idx = np.arange(L + 1)
        valid = idx[None, :] > idx[:, None]
        with np.errstate(divide="ignore", invalid="ignore"):
            rmax = np.where(am > 0, np.floor((cap - pm) / np.where(am > 0, am, 1.0)), np.where(pm <= cap, 1e9, -1))
        self.rmax = np.where(valid, rmax, -1)
        self.pm, self.am, self.cap = pm, am, cap
        self.c_mid = self.T + self.send[:, None] + self.send[None, :]   # receives and sends
        self.c_last = self.T + self.send[:, None]                      # receives only
        self.G = [np.full(L + 1, np.inf)]
        self.G[0][L] = 0.0
        self.arg: list[np.ndarray] = [np.zeros(L + 1, dtype=int)]
        self.L = L
        self._grow(r_max)

    def _grow(self, r_max: int) -> None:
        for r in range(len(self.G), r_max + 1):
            c = self.c_last if r == 1 else self.c_mid
            M = np.where(self.rmax >= r, c, np.inf)
            M = np.maximum(M, self.G[r - 1][None, :])
            self.arg.append(M.argmin(axis=1))
            self.G.append(M[np.arange(self.L + 1), self.arg[-1]])

    def solve(self, pp: int) -> tuple[float, tuple[int, ...]] | None:
        """Best bottleneck and boundaries for `pp` stages, or None when no split fits in memory."""
        L = self.L
        self._grow(pp - 1)
        first = self.T[0] + (self.send if pp > 1 else 0.0)
        ok = self.rmax[0] >= pp
        if pp == 1:
            return (float(first[L]), (0, L)) if ok[L] else None
        M = np.where(ok, np.maximum(first, self.G[pp - 1]), np.inf)
        k = int(M.argmin())
        if not np.isfinite(M[k]):
            return None
        bounds = [0, k]
        for r in range(pp - 1, 0, -1):
            bounds.append(int(self.arg[r][bounds[-1]]))
        return float(M[k]), tuple(bounds)


def _min_memory_shortfall(cm: CostModel, cls: DeviceClass, options: PlannerOptions) -> tuple[float, float]:
    """(least achievable peak bytes per device, capacity) for a class: largest tp, micro-batch 1, best depth."""
    tp = max(t for t in options.tp_degrees if cls.devices_per_node % t == 0)
    L = cm.n_layers
    pm = (cm.cum_params[None, :] - cm.cum_params[:, None]) / tp * cm.bytes_per_param
    am = (cm.cum_act[None, :] - cm.cum_act[:, None]) / tp
    idx = np.arange(L + 1)
    invalid = idx[None, :] <= idx[:, None]
    best = np.inf
    G = np.full(L + 1, np.inf)
    G[L] = 0.0
    for r in range(1, min(L, cls.count // tp) + 1):
        M = np.where(invalid, np.inf, pm + r * am)
        G = np.maximum(M, G[None, :]).min(axis=1)
        best = min(best, float(G[0]))
    return best, cm.capacity(cm.cluster.kinds[cls.kind])


# --- batch split -------------------------------------------------------------------------------------------
def split_batch(parts: list[tuple[float, float, int]], batch: int) -> tuple[float, list[int]]:
    """Micro-batch counts per part that finish `batch` samples soonest.

    parts: (A, S, samples per round) per class, where a pipeline doing m micro-batches takes A + (m-1) S and a
    round is one micro-batch on every pipeline of the class. Every part gets at least one micro-batch.
    Starts at the fluid lower bound (fractional rounds) and walks the completion events in time order."""
    lo = max(A for A, _, _ in parts)
    rate = sum(n / S for _, S, n in parts)
    fluid = (batch - sum(n * (1 - A / S) for A, S, n in parts)) / rate
    tau = max(lo, fluid)
    ms = [int(math.floor((tau - A) / S * (1 + 1e-12))) + 1 for A, S, _ in parts]
    have = sum(m * n for m, (_, _, n) in zip(ms, parts))
    while have < batch:
        j = min(range(len(parts)), key=lambda i: (parts[i][0] + ms[i] * parts[i][1], i))
        ms[j] += 1
        have += parts[j][2]
    return max(A + (m - 1) * S for m, (A, S, _) in zip(ms, parts)), ms


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
            times.append(cfg.A + (m - 1) * cfg.S)
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
        p.num_micro_batches = -(-p.samples // p.micro_batch_size)
        excess -= r
    return Plan(cm.model.name, batch, cm.model.seq_len, pipes, cm.cluster.name)


def even_split(plan: Plan) -> Plan:
    """The same pipelines with the global batch split evenly between them."""
    n = len(plan.pipelines)
    base, extra = divmod(plan.global_batch, n)
    pipes = []
    for i, p in enumerate(plan.pipelines):
        s = base + (1 if i < extra else 0)
        pipes.append(replace(p, samples=s, num_micro_batches=-(-s // p.micro_batch_size)))
    return replace(plan, pipelines=pipes, predicted={})


# --- the search --------------------------------------------------------------------------------------------
def _class_configs(cm: CostModel, cls: DeviceClass, options: PlannerOptions, batch: int) -> list[ClassConfig]:
    out: list[ClassConfig] = []
    L, d = cm.n_layers, cls.devices_per_node
    kind = cm.cluster.kinds[cls.kind]
    cap = cm.capacity(kind)
    for tp in options.tp_degrees:
        if d % tp:
            continue
        pp_lo = max(1, math.ceil(cm.cum_params[-1] / tp * cm.bytes_per_param / cap))
        pp_hi = min(L, cls.count // tp)
        if pp_lo > pp_hi:
            continue
        for mbs in options.micro_batch_sizes:
            if mbs > batch:
                continue
            tables: dict[bool, _StageTables] = {}
            for pp in range(pp_lo, pp_hi + 1):
                spans_nodes = tp * pp > d
                if spans_nodes not in tables:
                    link = cls.inter if spans_nodes else cls.intra
                    tables[spans_nodes] = _StageTables(cm, cls, tp, mbs, link, 1)
                solved = tables[spans_nodes].solve(pp)
                if solved is None:
                    continue
                dp_max = max_pipelines(cls, tp, pp)
                dps = range(1, dp_max + 1) if dp_max <= options.small_dp else [dp_max]
                base = _stage_summary(cm, cls, tp, pp, mbs, solved[1], tables[spans_nodes])
                for dp in dps:
                    spans, k_min, k_max, nodes = _packing(cls, tp, pp, dp)
                    out.append(ClassConfig(cls, tp, pp, mbs, dp, solved[1], *base, spans, k_min, k_max, nodes))
    return out


def _stage_summary(cm: CostModel, cls: DeviceClass, tp: int, pp: int, mbs: int, bounds: tuple[int, ...],
                   tables: "_StageTables") -> tuple[float, float, float, float, float]:
    """(A, S, grad bytes, optimizer, peak memory) of pipeline 0 of a class, with its real boundary links
    (what CostModel.stage_costs gives, vectorised)."""
    b = np.asarray(bounds)
    a, e = b[:-1], b[1:]
    crosses = ((np.arange(1, pp) * tp) % cls.devices_per_node) == 0
    lat = np.where(crosses, cls.inter.latency, cls.intra.latency)
    bw = np.where(crosses, cls.inter.bandwidth, cls.intra.bandwidth)
    nbytes = cm.out[e[:-1] - 1] * mbs
    send = np.where(nbytes > 0, lat + nbytes / (tp * bw), 0.0)
    fb = tables.T[a, e] + np.concatenate([send, [0.0]]) + np.concatenate([[0.0], send])
    kind = cm.cluster.kinds[cls.kind]
    opt = max(cm.optimizer_time(kind, int(x), int(y), tp) for x, y in zip(a, e))
    in_flight = pp - np.arange(pp)
    mem = tables.pm[a, e] + in_flight * tables.am[a, e]
    grad = (cm.cum_params[e] - cm.cum_params[a]) / tp * cm.model.dtype_bytes
    return float(fb.sum()), float(fb.max()), float(grad.max()), opt, float(mem.max())


def _combo_time(cm: CostModel, combo: list[ClassConfig], batch: int) -> tuple[float, list[int]] | None:
    if sum(c.dp for c in combo) > batch:
        return None
    tau, ms = split_batch([(c.A, c.S, c.dp * c.mbs) for c in combo], batch)
    P = sum(c.dp for c in combo)
    ar = 0.0
    if P > 1:
        nbytes = max(c.grad_bytes for c in combo)
        intra = Link(min(c.cls.intra.bandwidth for c in combo), max(c.cls.intra.latency for c in combo))
        inters = [c.cls.inter for c in combo]
        if len({c.cls.kind for c in combo}) > 1 and cm.cluster.cross_kind is not None:
            inters.append(cm.cluster.cross_kind)
        inter = Link(min(l.bandwidth for l in inters), max(l.latency for l in inters))
        if any(c.spans for c in combo):
            ar = ring_allreduce(P, nbytes, inter)
        else:
            ar = CostModel.hierarchical_allreduce(nbytes, min(c.k_min for c in combo), max(c.k_max for c in combo),
                                                  sum(c.nodes_used for c in combo), intra, inter)
    return tau + ar + max(c.optimizer for c in combo), ms


def plan(cluster: Cluster, model: ModelSpec, global_batch: int, options: PlannerOptions | None = None,
         kinds: set[str] | None = None) -> PlanResult:
    """The fastest plan under the cost model that fits in memory; raises NoPlanFits when none does."""
    options = options or PlannerOptions()
    if global_batch < 1:
        raise ValueError("global batch must be at least 1")
    if kinds is not None:
        cluster = cluster.subset(kinds)
        if cluster.num_devices == 0:
            raise NoPlanFits(f"no plan fits: the cluster has no device of kind {', '.join(sorted(kinds))}", None)
    cm = CostModel(cluster, model, options.cost)
    classes = cluster.device_classes()
    per_class = [_class_configs(cm, c, options, global_batch) for c in classes]
    evaluated = sum(len(p) for p in per_class)
    if not evaluated:
        raise _no_fit(cm, classes, options)
    choices: list[list[ClassConfig | None]] = []
    n_all = math.prod(len(p) + 1 for p in per_class)
    for cfgs in per_class:
        if n_all > options.all_configs_below:
            scored = []
            for c in cfgs:
                t = _combo_time(cm, [c], global_batch)
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
        t = _combo_time(cm, combo, global_batch)
        if t is not None:
            ranked.append((t[0], tuple(c.key for c in combo), combo, t[1]))
    if not ranked:
        raise _no_fit(cm, classes, options)
    ranked.sort(key=lambda x: (x[0], x[1]))
    best = None
    for _, _, combo, ms in ranked[:options.finalists]:
        p = build_plan(cm, combo, ms, global_batch)
        if p is None:
            continue
        est = cm.evaluate(p)
        if est.fits and (best is None or est.step_time < best[1].step_time * (1 - 1e-12)):
            best = (p, est, combo)
    if best is None:
        raise _no_fit(cm, classes, options)
    p, est, combo = best
    p.predicted = summarise(cm, p, est)
    return PlanResult(p, est, combo, evaluated, combos)


def _no_fit(cm: CostModel, classes: list[DeviceClass], options: PlannerOptions) -> NoPlanFits:
    worst = None
    for cls in classes:
        need, cap = _min_memory_shortfall(cm, cls, options)
        if worst is None or need - cap < worst[0]:
            worst = (need - cap, cls.kind, need, cap)
    assert worst is not None
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
