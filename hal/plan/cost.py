"""The cost model: step time and memory of a plan, in closed form. See docs/planner.md for the derivation.

Per stage i of a pipeline (p stages, m micro-batches of b samples, tensor parallel degree t):
    f_i, b_i   forward / backward compute of its layers for one micro-batch: measured per-layer times when the
               model profile has them for this device kind, else FLOPs / (t * peak * efficiency); plus, when
               t > 1, the tensor-parallel all-reduces over the node's link (ring, below)
    c_i        time to send stage i's output activation (b * out_bytes) to stage i+1; the same for the
               gradient coming back. Sends block the sender: nothing overlaps communication
    F_i = f_i + c_i,  B_i = b_i + c_{i-1}
    T_pipe = sum_i (F_i + B_i) + (m - 1) * max_i (F_i + B_i)                          (1F1B)
    When the pipeline's samples leave the last micro-batch partial (r < b samples), that micro-batch is charged
    at its own size: T_pipe = sum_i (F_i + B_i) + (m - 2) * max_i (F_i + B_i) + max_i (F'_i + B'_i), with F', B'
    the stage times at r samples (m = 1: sum_i (F'_i + B'_i)). Memory is charged at b.
Step:
    T = max over pipelines T_pipe + T_allreduce + T_optimizer
    T_allreduce  hierarchical ring over the pipelines' gradient shards (the largest shard), inside nodes
                 first, then across nodes over the slowest inter-node link the ring crosses:
                 ring(n, B, link) = 2(n-1)/n * B / bandwidth + 2(n-1) * latency
    T_optimizer  max over devices: measured optimizer time, else params * 28 B / memory bandwidth
Memory per device of stage i (0-based): params/t * bytes_per_param + min(p - i, m) * b * act_bytes / t,
compared with memory * usable_memory_fraction.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from hal.plan.cluster import Cluster, DeviceKind, Link
from hal.plan.model import ModelSpec, scale_measured
from hal.plan.plan import Pipeline, Plan

__all__ = ["CostOptions", "CostModel", "StageCost", "Estimate", "ring_allreduce", "GiB"]

GiB = float(2 ** 30)


@dataclass(frozen=True)
class CostOptions:
    usable_memory_fraction: float = 0.92   # context, allocator fragmentation and workspaces take the rest
    optimizer_bytes_per_param: float = 28.0  # Adam: read grad, master, m, v; write master, m, v, weights


def ring_allreduce(n: int, nbytes: float, link: Link) -> float:
    """Ring all-reduce of `nbytes` per participant among `n`: reduce-scatter then all-gather."""
    if n <= 1 or nbytes <= 0:
        return 0.0
    return 2 * (n - 1) / n * nbytes / link.bandwidth + 2 * (n - 1) * link.latency


@dataclass
class StageCost:
    fwd: float          # compute of one micro-batch forward (tensor-parallel all-reduces included)
    bwd: float
    send_fwd: float     # activation to the next stage, per micro-batch (0 on the last stage)
    send_bwd: float     # gradient to the previous stage, per micro-batch (0 on the first stage)
    memory: float       # bytes per device
    capacity: float     # usable bytes per device
    grad_bytes: float   # gradient bytes per device, all-reduced across pipelines
    optimizer: float    # seconds
    in_flight: int      # micro-batches whose activations the stage holds at peak

    @property
    def F(self) -> float:
        return self.fwd + self.send_fwd

    @property
    def B(self) -> float:
        return self.bwd + self.send_bwd

    @property
    def fits(self) -> bool:
        return self.memory <= self.capacity


@dataclass
class Estimate:
    step_time: float
    pipeline_times: list[float]
    allreduce_time: float
    optimizer_time: float
    stages: list[list[StageCost]]
    utilisation: dict[int, float]        # device id -> compute busy / step time
    bubble_fraction: float               # idle share of the pipeline phase, averaged over stages
    samples_per_s: float
    tokens_per_s: float
    shortfall: tuple[float, str, float, float] | None = None  # (bytes over, kind, needs, has), worst stage
    fits: bool = True
    notes: list[str] = field(default_factory=list)


class CostModel:
    """Evaluates plans of `model` on `cluster`. Holds memoised per-(kind, micro-batch, tp) layer times."""

    def __init__(self, cluster: Cluster, model: ModelSpec, options: CostOptions | None = None):
        self.cluster, self.model = cluster, model
        self.options = options or CostOptions()
        L = model.layers
        self.n_layers = len(L)
        self.params = np.array([l.params for l in L], dtype=float)
        self.act = np.array([l.act_bytes for l in L], dtype=float)
        self.out = np.array([l.out_bytes for l in L], dtype=float)
        self.flops = np.array([l.fwd_flops for l in L], dtype=float)
        self.tp_comm = np.array([l.tp_comm_bytes for l in L], dtype=float)
        self.cum_params = np.concatenate([[0.0], np.cumsum(self.params)])
        self.cum_act = np.concatenate([[0.0], np.cumsum(self.act)])
        self.bytes_per_param = model.bytes_per_param
        self._times: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
        self._opt: dict[str, np.ndarray | None] = {}

    # --- per-layer figures ------------------------------------------------------------------------------------
    def layer_times(self, kind: DeviceKind, mbs: int, tp: int, intra: Link) -> tuple[np.ndarray, np.ndarray]:
        """Prefix sums of per-layer forward and backward seconds for one micro-batch on `tp` devices."""
        key = (kind.name, mbs, tp, intra)
        hit = self._times.get(key)
        if hit is not None:
            return hit
        rate = kind.peak_flops * kind.efficiency
        fwd, bwd = np.empty(self.n_layers), np.empty(self.n_layers)
        for i, layer in enumerate(self.model.layers):
            meas = scale_measured(layer.measured.get(kind.measured_kind, {}), mbs)
            if meas is not None:
                f, b = meas[0] / kind.relative_speed, meas[1] / kind.relative_speed
            else:
                f = layer.fwd_flops * mbs / rate
                b = f * self.model.bwd_factor
            f, b = f / tp, b / tp
            if tp > 1 and layer.tp_comm_bytes:
                comm = ring_allreduce(tp, layer.tp_comm_bytes * mbs, intra)
                f, b = f + comm, b + comm
            fwd[i], bwd[i] = f, b
        out = (np.concatenate([[0.0], np.cumsum(fwd)]), np.concatenate([[0.0], np.cumsum(bwd)]))
        self._times[key] = out
        return out

    def optimizer_time(self, kind: DeviceKind, start: int, end: int, tp: int) -> float:
        if kind.measured_kind not in self._opt:
            meas = [l.measured_optimizer.get(kind.measured_kind) for l in self.model.layers]
            self._opt[kind.measured_kind] = (np.concatenate([[0.0], np.cumsum(meas)])
                                             if all(m is not None for m in meas) else None)
        cum = self._opt[kind.measured_kind]
        if cum is not None:
            return float(cum[end] - cum[start]) / kind.relative_speed / tp
        params = (self.cum_params[end] - self.cum_params[start]) / tp
        return params * self.options.optimizer_bytes_per_param / kind.memory_bandwidth

    def stage_memory(self, start: int, end: int, tp: int, mbs: int, in_flight: int) -> float:
        params = (self.cum_params[end] - self.cum_params[start]) / tp
        act = (self.cum_act[end] - self.cum_act[start]) / tp
        return params * self.bytes_per_param + in_flight * mbs * act

    def capacity(self, kind: DeviceKind) -> float:
        return kind.memory_bytes * self.options.usable_memory_fraction

    # --- links ---------------------------------------------------------------------------------------------
    def link_between(self, a: int, b: int) -> Link:
        c = self.cluster
        na, nb = c.node_index(a), c.node_index(b)
        if na == nb:
            return c.nodes[na].intra
        la, lb = c.nodes[na].inter, c.nodes[nb].inter
        links = [la, lb]
        if c.nodes[na].kind != c.nodes[nb].kind and c.cross_kind is not None:
            links.append(c.cross_kind)
        return Link(min(l.bandwidth for l in links), max(l.latency for l in links))

    def transfer_time(self, nbytes: float, src: list[int], dst: list[int]) -> float:
        """Stage-to-stage send: min(t_src, t_dst) device pairs each carry an equal slice in parallel."""
        if nbytes <= 0:
            return 0.0
        width = min(len(src), len(dst))
        link = self.link_between(src[0], dst[0])
        return link.latency + nbytes / (width * link.bandwidth)

    # --- stages and pipelines ---------------------------------------------------------------------------------
    @staticmethod
    def tail_size(pipe: Pipeline) -> int:
        """Samples in the pipeline's last micro-batch (the micro-batch size unless the samples leave it partial)."""
        r = pipe.samples - (pipe.num_micro_batches - 1) * pipe.micro_batch_size
        return r if 0 < r < pipe.micro_batch_size else pipe.micro_batch_size

    def tail_costs(self, pipe: Pipeline) -> list[StageCost] | None:
        """Stage costs of a partial last micro-batch (None when the last micro-batch is full)."""
        r = self.tail_size(pipe)
        return None if r == pipe.micro_batch_size else self.stage_costs(pipe, r)

    def stage_costs(self, pipe: Pipeline, mbs: int | None = None) -> list[StageCost]:
        """Per stage, the costs of one micro-batch of `mbs` samples (default: the pipeline's micro-batch size)."""
        c, p, m = self.cluster, len(pipe.stages), pipe.num_micro_batches
        mbs = mbs or pipe.micro_batch_size
        sends = [self.transfer_time(mbs * self.out[s.layers[1] - 1], s.device_ids, pipe.stages[i + 1].device_ids)
                 for i, s in enumerate(pipe.stages[:-1])] + [0.0]
        out = []
        for i, s in enumerate(pipe.stages):
            kind = c.kinds[s.kind]
            a, e = s.layers
            cf, cb = self.layer_times(kind, mbs, s.tp, c.node_of(s.device_ids[0]).intra)
            in_flight = min(p - i, m)
            out.append(StageCost(
                fwd=float(cf[e] - cf[a]), bwd=float(cb[e] - cb[a]), send_fwd=sends[i],
                send_bwd=sends[i - 1] if i > 0 else 0.0,
                memory=self.stage_memory(a, e, s.tp, mbs, in_flight), capacity=self.capacity(kind),
                grad_bytes=(self.cum_params[e] - self.cum_params[a]) / s.tp * self.model.dtype_bytes,
                optimizer=self.optimizer_time(kind, a, e, s.tp), in_flight=in_flight))
        return out

    @staticmethod
    def pipeline_time(stages: list[StageCost], m: int, tail: list[StageCost] | None = None) -> float:
        """1F1B closed form: fill and drain once, then the slowest stage sets the pace. `tail`: the stage costs
        of a partial last micro-batch, which takes one of the paced slots at its own speed."""
        if tail is None:
            return sum(s.F + s.B for s in stages) + (m - 1) * max(s.F + s.B for s in stages)
        if m == 1:
            return sum(s.F + s.B for s in tail)
        slowest = max(s.F + s.B for s in stages)
        return sum(s.F + s.B for s in stages) + (m - 2) * slowest + max(s.F + s.B for s in tail)

    def allreduce_links(self, plan: Plan) -> tuple[int, int, int, Link, Link]:
        """(k_min, k_max, groups, intra, inter) of the hierarchical data-parallel all-reduce.

        When every pipeline lies inside one node, each node first reduces among its k pipelines, then the g
        nodes reduce shards of size B/k; otherwise a flat ring of all pipelines over the inter-node links."""
        c = self.cluster
        per_node: dict[int, int] = {}
        spans = False
        kinds = set()
        for pipe in plan.pipelines:
            nodes = {c.node_index(d) for d in pipe.devices}
            kinds.update(pipe.kinds)
            if len(nodes) > 1:
                spans = True
            for n in nodes:
                per_node[n] = per_node.get(n, 0) + 1
        used = [c.nodes[n] for n in sorted(per_node)]
        intra = Link(min(n.intra.bandwidth for n in used), max(n.intra.latency for n in used))
        inters = [n.inter for n in used]
        if len(kinds) > 1 and c.cross_kind is not None:
            inters.append(c.cross_kind)
        inter = Link(min(l.bandwidth for l in inters), max(l.latency for l in inters))
        if spans:
            return 1, 1, len(plan.pipelines), intra, inter
        return min(per_node.values()), max(per_node.values()), len(per_node), intra, inter

    @staticmethod
    def hierarchical_allreduce(nbytes: float, k_min: int, k_max: int, groups: int, intra: Link, inter: Link) -> float:
        return ring_allreduce(k_max, nbytes, intra) + ring_allreduce(groups, nbytes / k_min, inter)

    # --- the whole step -----------------------------------------------------------------------------------
    def evaluate(self, plan: Plan) -> Estimate:
        if not plan.pipelines:
            raise ValueError("a plan needs at least one pipeline")
        stages = [self.stage_costs(p) for p in plan.pipelines]
        times = [self.pipeline_time(s, p.num_micro_batches, self.tail_costs(p)) for s, p in zip(stages, plan.pipelines)]
        ar = 0.0
        if len(plan.pipelines) > 1:
            nbytes = max(s.grad_bytes for ss in stages for s in ss)
            ar = self.hierarchical_allreduce(nbytes, *self.allreduce_links(plan))
        opt = max(s.optimizer for ss in stages for s in ss)
        step = max(times) + ar + opt
        util, busy_share = {}, []
        worst = None
        for pipe, ss, tp_ in zip(plan.pipelines, stages, times):
            for st, sc in zip(pipe.stages, ss):
                busy = pipe.num_micro_batches * (sc.fwd + sc.bwd)
                for d in st.device_ids:
                    util[d] = busy / step
                busy_share.append(pipe.num_micro_batches * (sc.F + sc.B) / tp_)
                over = sc.memory - sc.capacity
                if over > 0 and (worst is None or over > worst[0]):
                    worst = (over, st.kind, sc.memory, sc.capacity)
        samples = plan.global_batch / step
        return Estimate(step, times, ar, opt, stages, util, 1.0 - sum(busy_share) / len(busy_share), samples,
                        samples * plan.seq_len, worst, worst is None)


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)

