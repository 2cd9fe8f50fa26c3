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

Techniques (plan.Techniques; each term is one function below, tested against its paper in tests/plan/test_techniques.py):
    ZeRO z over the N replicas of a stage   bytes per parameter (2 + 2 + K) -> 2 + 2 + K/N, 2 + (2 + K)/N,
                                             (4 + K)/N for z = 1, 2, 3 (K = 12, mixed-precision Adam); the
                                             optimizer step / N; sync: zero_sync_time
    recomputation                            activations: activation_bytes (Korthikanti et al.); full: the
                                             backward repeats the forward
    sequence parallelism                     splits the activations tensor parallelism leaves whole
    interleaved 1F1B, v chunks per device    interleaved_total (bubble (p-1)/(v m)), sends v times, stage i holds
                                             interleaved_in_flight micro-batches
    overlap                                  the reduction hides behind up to overlap_fraction x the last backward

Every formula above is written once, here; the figures of stages and layer ranges take numpy arrays as well as
numbers, so the planner's vectorised search (planner.py) evaluates the same expressions over whole tables.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from hal.plan.cluster import Cluster, DeviceKind, Link
from hal.plan.model import ModelSpec, scale_measured
from hal.plan.plan import Pipeline, Plan, Techniques

__all__ = ["CostOptions", "CostModel", "StageCost", "Estimate", "ring_allreduce", "ring_half", "ring_link",
           "slowest_link", "ceil_div", "GiB", "zero_bytes_per_param", "zero_sync_time", "interleaved_total", "chunks_run",
           "interleaved_in_flight", "activation_bytes", "bubble_fraction"]

GiB = float(2 ** 30)
_NO_LIMIT = 2 ** 62  # max_in_flight of layers that keep no activations


@dataclass(frozen=True)
class CostOptions:
    usable_memory_fraction: float = 0.92   # context, allocator fragmentation and workspaces take the rest
    optimizer_bytes_per_param: float = 28.0  # Adam: read grad, master, m, v; write master, m, v, weights
    overlap_fraction: float = 1.0  # with Techniques.overlap: the share of the last backward the reduction hides behind


def ring_allreduce(n: int, nbytes: float, link: Link) -> float:
    """Ring all-reduce of `nbytes` per participant among `n`: reduce-scatter then all-gather (arrays:
    elementwise)."""
    if isinstance(n, np.ndarray) or isinstance(nbytes, np.ndarray):
        n, nbytes = np.asarray(n, dtype=float), np.asarray(nbytes, dtype=float)
        with np.errstate(divide="ignore", invalid="ignore"):
            t = 2 * (n - 1) / n * nbytes / link.bandwidth + 2 * (n - 1) * link.latency
        return np.where((n > 1) & (nbytes > 0), t, 0.0)
    if n <= 1 or nbytes <= 0:
        return 0.0
    return 2 * (n - 1) / n * nbytes / link.bandwidth + 2 * (n - 1) * link.latency


def ring_half(n: int, nbytes: float, link: Link) -> float:
    """A ring reduce-scatter or all-gather of `nbytes` per participant among `n`: half of `ring_allreduce`."""
    if n <= 1 or nbytes <= 0:
        return 0.0
    return (n - 1) / n * nbytes / link.bandwidth + (n - 1) * link.latency


def zero_bytes_per_param(bytes_per_param: float, dtype_bytes: int, zero: int, shards: int) -> float:
    """Bytes per parameter on one of `shards` data-parallel replicas under ZeRO stage `zero` (Rajbhandari et
    al. 2020, section 5): weights d + gradients d + optimizer state K (K = bytes_per_param - 2d; 12 for
    mixed-precision Adam: fp32 master, m, v). Stage 1 shards K, stage 2 also the gradients, stage 3 also the
    weights: (2d + K), 2d + K/N, d + (d + K)/N, (2d + K)/N."""
    d, k, n = dtype_bytes, bytes_per_param - 2 * dtype_bytes, shards
    return (2 * d + k, 2 * d + k / n, d + (d + k) / n, (2 * d + k) / n)[zero]


def zero_sync_time(zero: int, allreduce: float, window: float, m: int) -> float:
    """Exposed seconds of the data-parallel gradient sync of a step of `m` micro-batches, given the time of the
    ring all-reduce of the gradients (`allreduce`: a reduce-scatter then an all-gather, each half of it) and
    the backward time it may hide behind (`window`, 0 without overlap):
        ZeRO 0  all-reduce once, after gradient accumulation       max(0, R - W)
        ZeRO 1  reduce-scatter (hidden), all-gather of the
                updated weights (after the optimizer)             max(0, R/2 - W) + R/2
        ZeRO 2  the sharded gradients cannot accumulate: a
                reduce-scatter per micro-batch, one all-gather    m max(0, R/2 - W) + R/2
        ZeRO 3  per micro-batch an all-gather of the weights in
                the forward, one in the backward plus a reduce-
                scatter (hidden)                                  m R/2 + m max(0, R - W)
    With m = 1 and no overlap stages 1 and 2 move what an all-reduce moves and stage 3 1.5 times that (the ZeRO
    paper's section 7). Arrays: elementwise."""
    half, pos = allreduce / 2, (np.maximum if isinstance(allreduce, np.ndarray) else max)
    if zero == 0:
        return pos(0.0, allreduce - window)
    if zero == 1:
        return pos(0.0, half - window) + half
    if zero == 2:
        return m * pos(0.0, half - window) + half
    return m * half + m * pos(0.0, allreduce - window)


def interleaved_total(total, slowest, v: int):
    """The fill-and-drain term of 1F1B with `v` chunks per device (Narayanan et al. 2021): each chunk is 1/v of
    a stage, so the fill and drain shrink v times while the slowest stage still paces every micro-batch:
    T = slowest + (total - slowest)/v + (m - 1) slowest; v = 1 is plain 1F1B (arrays: elementwise)."""
    return total if v == 1 else slowest + (total - slowest) / v


def chunks_run(p: int, m: int, v: int) -> int:
    """The chunks per stage a pipeline of depth `p` and `m` micro-batches runs when `v` are asked: the interleaved
    order (groups of p micro-batches, every chunk of a group before the next; Megatron-LM's) needs m to be a
    multiple of p and more than one stage, and with any other m deadlocks (hal.plan.simulate steps through it):
    such a pipeline runs plain 1F1B (1)."""
    return v if v > 1 and p > 1 and m % p == 0 else 1


def bubble_fraction(p: int, m: int, v: int = 1) -> float:
    """Idle share of a pipeline of p equal stages over m micro-batches: (p - 1) / (v m + p - 1) of the step,
    which is the papers' bubble (p - 1)/(v m) of the ideal time m t."""
    return (p - 1) / (v * m + p - 1)


def interleaved_in_flight(p: int, i, v: int):
    """Micro-batches whose activations stage i of p holds at peak with enough micro-batches (the count to cap
    at m): p - i under 1F1B; interleaved (Megatron-LM's schedule, v > 1) its 2(p - i - 1) + (v - 1)p + 1
    warm-up chunks, each 1/v of the stage, rounded up: stage 0 holds p (1 + (p - 1)/(p v)) micro-batches, as
    Korthikanti et al. (section 4.2.3) give (arrays: elementwise)."""
    if v == 1:
        return p - i
    return -(-(2 * (p - i - 1) + (v - 1) * p + 1) // v)


def activation_bytes(s: int, b: int, h: int, a: int, t: int = 1, sequence_parallel: bool = False,
                     recompute: str = "none") -> float:
    """Activation bytes of one transformer layer (16-bit, with dropout, no flash attention) as Korthikanti et
    al. 2022, "Reducing Activation Recomputation in Large Transformer Models", give them (Table 2):
        none       sbh (34 + 5as/h)                 t ranks: sbh (10 + 24/t + 5as/(ht)); with SP: sbh/t (34 + 5as/h)
        selective  sbh (10 + 24/t)                  with SP: 34 sbh/t
        full       2 sbh                            with SP: 2 sbh/t
    The cost model's own figures come from the layers (LayerSpec: act_bytes, act_replicated_bytes,
    act_selective_bytes, input_bytes); a layer built with this function's terms gives these figures exactly."""
    sbh, attn = s * b * h, 5 * a * s / h
    if recompute == "full":
        return 2 * sbh / (t if sequence_parallel else 1)
    scores = 0.0 if recompute == "selective" else attn
    if sequence_parallel:
        return sbh / t * (34 + scores)
    return sbh * (10 + 24 / t + scores / t)


def ring_link(n: int, small: tuple[float, float], large: tuple[float, float]) -> Link:
    """The Link under which `ring_allreduce` among `n` takes the two measured (bytes, seconds) all-reduces: the
    inverse of `ring_allreduce` from two sizes. Raises ValueError unless n > 1, the large one is larger and
    every time is positive."""
    (s_bytes, s_time), (l_bytes, l_time) = small, large
    if n <= 1 or not (0 <= s_bytes < l_bytes) or not (s_time > 0 and l_time > 0):
        raise ValueError(f"ring_link: needs n > 1, 0 <= small bytes < large bytes and positive times; got n={n}, "
                         f"small={small}, large={large}")
    steps = 2 * (n - 1)
    # A large one no slower than the small one (timer noise): all of its time as transfer, a bandwidth that is
    # surely not too high.
    per_byte = (l_time - s_time if l_time > s_time else l_time) / (steps / n * (l_bytes - s_bytes))
    latency = max(0.0, s_time - steps / n * s_bytes * per_byte) / steps
    return Link(1 / per_byte, latency)


def slowest_link(links) -> Link:
    """The path through all of `links`: the least bandwidth and the largest latency."""
    links = list(links)
    return Link(min(l.bandwidth for l in links), max(l.latency for l in links))


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


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

    def __init__(self, cluster: Cluster, model: ModelSpec, options: CostOptions | None = None,
                 techniques: Techniques | None = None):
        self.cluster, self.model = cluster, model
        self.options = options or CostOptions()
        self.techniques = t = techniques or Techniques()
        L = model.layers
        self.n_layers = len(L)
        self.params = np.array([l.params for l in L], dtype=float)
        self.act = np.array([l.act_bytes for l in L], dtype=float)
        self.out = np.array([l.out_bytes for l in L], dtype=float)
        self.flops = np.array([l.fwd_flops for l in L], dtype=float)
        self.tp_comm = np.array([l.tp_comm_bytes for l in L], dtype=float)
        # Tensor parallelism divides a layer's parameters, activations and work by tp where it splits the layer
        # (LayerSpec.tp_split); a layer it does not split runs whole on every device of the stage.
        self.split = np.array([1.0 if l.tp_split else 0.0 for l in L])
        self.cum_params_tp = self._cums(self.params)
        self.cum_act_tp = self._activation_cums(t)
        self.bytes_per_param = model.bytes_per_param
        self._times: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
        self._opt: dict[str, np.ndarray | None] = {}
        self._others: dict[Techniques, CostModel] = {}
        self._bounds: dict = {}  # the planner's bounds of this model (planner._fluid_bound)

    def with_techniques(self, techniques: Techniques) -> "CostModel":
        """The cost model of the same cluster, model and options under other techniques (memoised)."""
        if techniques == self.techniques:
            return self
        if techniques not in self._others:
            other = CostModel(self.cluster, self.model, self.options, techniques)
            # What no technique changes is shared: the optimizer's figures always, the layer times between
            # models of the same recomputation (they depend on nothing else).
            other._opt = self._opt
            same = next((o for o in (self, *self._others.values()) if o.techniques.recompute == techniques.recompute), None)
            if same is not None:
                other._times = same._times
            self._others[techniques] = other
        return self._others[techniques]

    def _activation_cums(self, t: Techniques) -> tuple[np.ndarray, np.ndarray]:
        """Prefix sums of the activation bytes per sample that tensor parallelism divides (of the layers it
        splits) and of those every rank keeps whole, under the recomputation and sequence parallelism of `t`:
        without recomputation a split layer keeps (act - replicated)/t + replicated (sequence parallel:
        act/t); selective drops act_selective_bytes from the divided part; full keeps only the input
        (divided by t under sequence parallelism, as Megatron-LM stores it)."""
        L = self.model.layers
        act, repl = self.act, np.array([l.act_replicated_bytes for l in L], dtype=float)
        if t.recompute == "full":
            act = np.array([l.act_bytes if l.input_bytes is None else l.input_bytes for l in L], dtype=float)
            repl = act
        elif t.recompute == "selective":
            act = np.maximum(act - np.array([l.act_selective_bytes for l in L], dtype=float), 0.0)
        whole = np.zeros_like(act) if t.sequence_parallel else np.minimum(repl, act)
        div = (act - whole) * self.split
        keep = whole * self.split + act * (1.0 - self.split)
        return np.concatenate([[0.0], np.cumsum(div)]), np.concatenate([[0.0], np.cumsum(keep)])
    def _cums(self, per_layer: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Prefix sums of the figures of the layers tp splits, and of those it does not."""
        return (np.concatenate([[0.0], np.cumsum(per_layer * self.split)]),
                np.concatenate([[0.0], np.cumsum(per_layer * (1.0 - self.split))]))

    @staticmethod
    def _per_device(cums: tuple[np.ndarray, np.ndarray], start, end, tp: int):
        """What one of `tp` devices holds of layers [start, end) (arrays: elementwise)."""
        split, whole = cums
        return (split[end] - split[start]) / tp + (whole[end] - whole[start])

    # --- per-layer figures ------------------------------------------------------------------------------------
    def layer_times(self, kind: DeviceKind, mbs: int, tp: int, intra: Link) -> tuple[np.ndarray, np.ndarray]:
        """Prefix sums of per-layer forward and backward seconds for one micro-batch on `tp` devices."""
        key = (kind.name, mbs, tp, intra)
        hit = self._times.get(key)
        if hit is not None:
            return hit
        rate = kind.peak_flops * kind.efficiency
        recompute = self.techniques.recompute
        fwd, bwd = np.empty(self.n_layers), np.empty(self.n_layers)
        for i, layer in enumerate(self.model.layers):
            # A shard measured on a tensor-parallel stage of this kind and degree (its all-reduces included)
            # stands for the formula below: on devices where every collective costs far more than the ring's
            # bytes / bandwidth (a synchronisation of both ranks, a launch), the formula misses most of it.
            shard = scale_measured(layer.measured_tp.get(kind.measured_kind, {}).get(tp, {}), mbs) if tp > 1 else None
            meas = scale_measured(layer.measured.get(kind.measured_kind, {}), mbs)
            if shard is not None:
                f, b = shard[0] / kind.relative_speed, shard[1] / kind.relative_speed
            elif meas is not None:
                f, b = meas[0] / kind.relative_speed, meas[1] / kind.relative_speed
            else:
                f = layer.fwd_flops * mbs / rate
                b = f * self.model.bwd_factor
            if layer.tp_split and shard is None:
                f, b = f / tp, b / tp
            if recompute == "selective" and layer.fwd_flops > 0:
                b += f * layer.recompute_flops / layer.fwd_flops  # the attention core's forward, once more
            if tp > 1 and layer.tp_comm_bytes and shard is None:
                comm = ring_allreduce(tp, layer.tp_comm_bytes * mbs, intra)
                f, b = f + comm, b + comm
            if recompute == "full":
                b += f  # the forward again, its tensor-parallel all-reduces included
            fwd[i], bwd[i] = f, b
        out = (np.concatenate([[0.0], np.cumsum(fwd)]), np.concatenate([[0.0], np.cumsum(bwd)]))
        self._times[key] = out
        return out

    def optimizer_time(self, kind: DeviceKind, start, end, tp: int, shards: int = 1):
        """Seconds of the optimizer step for layers [start, end) on each of `tp` devices, of which ZeRO (stage
        >= 1) leaves each of `shards` replicas 1/shards (arrays: elementwise)."""
        return self._optimizer_time(kind, start, end, tp) / (shards if self.techniques.zero else 1)

    def _optimizer_time(self, kind: DeviceKind, start, end, tp: int):
        if kind.measured_kind not in self._opt:
            meas = [l.measured_optimizer.get(kind.measured_kind) for l in self.model.layers]
            self._opt[kind.measured_kind] = (self._cums(np.array(meas, dtype=float))
                                             if all(m is not None for m in meas) else None)
        cums = self._opt[kind.measured_kind]
        if cums is not None:
            return self._per_device(cums, start, end, tp) / kind.relative_speed
        params = self._per_device(self.cum_params_tp, start, end, tp)
        return params * self.options.optimizer_bytes_per_param / kind.memory_bandwidth

    # --- memory -----------------------------------------------------------------------------------------------
    def param_memory(self, start, end, tp: int, shards: int = 1):
        """Bytes per device for the parameters, gradients and optimizer state of layers [start, end), on one of
        `shards` data-parallel replicas of the stage (what ZeRO divides, zero_bytes_per_param)."""
        per = zero_bytes_per_param(self.bytes_per_param, self.model.dtype_bytes, self.techniques.zero, shards)
        return self._per_device(self.cum_params_tp, start, end, tp) * per

    def activation_memory(self, start, end, tp: int, mbs: int):
        """Bytes per device kept for the backward pass of one micro-batch through layers [start, end)."""
        return self._per_device(self.cum_act_tp, start, end, tp) * mbs

    def chunkable(self, start, end):
        """Whether layers [start, end) make a stage: under interleaving each of its v chunks needs a layer."""
        return np.asarray(end) - np.asarray(start) >= self.techniques.virtual_stages

    def stage_memory(self, start, end, tp: int, mbs: int, in_flight, shards: int = 1):
        """Bytes per device of a stage (infinite when it cannot be cut into its chunks, `chunkable`)."""
        out = self.param_memory(start, end, tp, shards) + in_flight * self.activation_memory(start, end, tp, mbs)
        return out if self.techniques.virtual_stages == 1 else np.where(self.chunkable(start, end), out, np.inf)

    def max_in_flight(self, start, end, tp: int, mbs: int, capacity: float, shards: int = 1):
        """The most micro-batches in flight with which `stage_memory` stays within `capacity` (-1: not even the
        parameters fit, or the layers cannot be cut into chunks; a large number when the layers keep no
        activations): the inverse of stage_memory, exact at the boundary."""
        if self.techniques.virtual_stages > 1:
            return np.where(self.chunkable(start, end), self._max_in_flight(start, end, tp, mbs, capacity, shards), -1)
        return self._max_in_flight(start, end, tp, mbs, capacity, shards)

    def _max_in_flight(self, start, end, tp: int, mbs: int, capacity: float, shards: int):
        params = np.asarray(self.param_memory(start, end, tp, shards), dtype=float)
        act = np.asarray(self.activation_memory(start, end, tp, mbs), dtype=float)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):  # tiny activations: k is inf
            k = np.floor((capacity - params) / np.where(act > 0, act, 1.0))
        k = k - (params + k * act > capacity) + (params + (k + 1) * act <= capacity)  # rounding at the boundary
        return np.where(act > 0, np.maximum(k, -1), np.where(params <= capacity, _NO_LIMIT, -1))

    def ahead(self, p: int, i):
        """Micro-batches stage i of p holds at peak when there are enough of them (interleaved_in_flight)."""
        return interleaved_in_flight(p, i, self.techniques.virtual_stages)

    def in_flight(self, p: int, i, m: int):
        """Micro-batches whose activations stage i of p holds at peak under (interleaved) 1F1B with m
        micro-batches."""
        return np.minimum(self.ahead(p, i), m)

    def grad_bytes(self, start, end, tp: int):
        """Gradient bytes per device of layers [start, end): what the data-parallel all-reduce moves."""
        return self._per_device(self.cum_params_tp, start, end, tp) * self.model.dtype_bytes

    def capacity(self, kind: DeviceKind) -> float:
        return kind.memory_bytes * self.options.usable_memory_fraction

    # --- links ---------------------------------------------------------------------------------------------
    def link_between(self, a: int, b: int) -> Link:
        c = self.cluster
        na, nb = c.node_index(a), c.node_index(b)
        if na == nb:
            return c.nodes[na].intra
        return self.node_link(na, nb)

    def node_link(self, na: int, nb: int) -> Link:
        """The path between two nodes' devices: the cluster file's pair link, else the slower of their
        inter-node links (through the cross-kind link when their kinds differ)."""
        c = self.cluster
        pair = c.pairs.get(frozenset((na, nb))) if c.pairs else None
        if pair is not None:
            return pair
        return self.inter_link([c.nodes[na].inter, c.nodes[nb].inter], {c.nodes[na].kind, c.nodes[nb].kind})

    def ring_hops(self, nodes: list[int]) -> Link:
        """The bottleneck of a ring through `nodes` (indices, in this order, back to the first): its slowest
        hop. Without pair links that is the slowest inter-node link (and the cross-kind one when kinds mix)."""
        if len(nodes) < 2:
            return self.inter_link([self.cluster.nodes[n].inter for n in nodes], set())
        return slowest_link(self.node_link(a, b) for a, b in zip(nodes, nodes[1:] + nodes[:1]))

    def inter_link(self, inters: list[Link], kinds: set[str]) -> Link:
        """The path across nodes over `inters`, through the cross-kind link when the nodes' kinds differ."""
        if len(kinds) > 1 and self.cluster.cross_kind is not None:
            inters = [*inters, self.cluster.cross_kind]
        return slowest_link(inters)

    @staticmethod
    def send_time(nbytes, width: int, latency, bandwidth):
        """Stage-to-stage send of `nbytes`: `width` device pairs each carry an equal slice in parallel; nothing
        to send takes no time (arrays: elementwise)."""
        if np.ndim(nbytes) == 0:
            return latency + nbytes / (width * bandwidth) if nbytes > 0 else 0.0
        return np.where(nbytes > 0, latency + nbytes / (width * bandwidth), 0.0)

    def transfer_time(self, nbytes: float, src: list[int], dst: list[int]) -> float:
        """Stage-to-stage send: min(t_src, t_dst) device pairs each carry an equal slice in parallel."""
        link = self.link_between(src[0], dst[0])
        return self.send_time(nbytes, min(len(src), len(dst)), link.latency, link.bandwidth)

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

    def stage_costs(self, pipe: Pipeline, mbs: int | None = None, replicas: dict | None = None) -> list[StageCost]:
        """Per stage, the costs of one micro-batch of `mbs` samples (default: the pipeline's micro-batch size).
        Interleaved, each boundary is crossed v times per micro-batch. `replicas`: (kind, layers, tp) -> how
        many pipelines hold that stage (what ZeRO shards over; `stage_replicas`)."""
        c, p, m = self.cluster, len(pipe.stages), pipe.num_micro_batches
        mbs = mbs or pipe.micro_batch_size
        v = self.techniques.virtual_stages
        sends = [v * self.transfer_time(mbs * self.out[s.layers[1] - 1], s.device_ids, pipe.stages[i + 1].device_ids)
                 for i, s in enumerate(pipe.stages[:-1])] + [0.0]
        out = []
        for i, s in enumerate(pipe.stages):
            kind = c.kinds[s.kind]
            a, e = s.layers
            cf, cb = self.layer_times(kind, mbs, s.tp, c.node_of(s.device_ids[0]).intra)
            in_flight = int(self.in_flight(p, i, m))
            shards = (replicas or {}).get((s.kind, tuple(s.layers), s.tp), 1)
            out.append(StageCost(
                fwd=float(cf[e] - cf[a]), bwd=float(cb[e] - cb[a]), send_fwd=sends[i],
                send_bwd=sends[i - 1] if i > 0 else 0.0,
                memory=float(self.stage_memory(a, e, s.tp, mbs, in_flight, shards)), capacity=self.capacity(kind),
                grad_bytes=float(self.grad_bytes(a, e, s.tp)),
                optimizer=float(self.optimizer_time(kind, a, e, s.tp, shards)), in_flight=in_flight))
        return out

    @staticmethod
    def one_f_one_b(total: float, slowest: float, m: int) -> float:
        """1F1B closed form: fill and drain once (`total`, the sum over stages of F + B), then the slowest
        stage's F + B sets the pace for the other m - 1 micro-batches."""
        return total + (m - 1) * slowest

    @classmethod
    def pipeline_time(cls, stages: list[StageCost], m: int, tail: list[StageCost] | None = None, v: int = 1) -> float:
        """`one_f_one_b` of the stages (interleaved over `v` chunks: `interleaved_total`). `tail`: the stage
        costs of a partial last micro-batch, which takes one of the paced slots at its own speed.

        A pipeline whose m the interleaved order cannot run (`chunks_run`) runs plain 1F1B and is priced so (its
        sends stay charged v times and its memory at the interleaved in-flight count: an over-estimate)."""
        v = chunks_run(len(stages), m, v)
        total, slowest = sum(s.F + s.B for s in stages), max(s.F + s.B for s in stages)
        total = interleaved_total(total, slowest, v)
        if tail is None:
            return cls.one_f_one_b(total, slowest, m)
        if m == 1:
            return interleaved_total(sum(s.F + s.B for s in tail), max(s.F + s.B for s in tail), v)
        return cls.one_f_one_b(total, slowest, m - 1) + max(s.F + s.B for s in tail)

    @staticmethod
    def stage_replicas(plan: Plan) -> dict[tuple, int]:
        """(kind, layers, tp) -> how many of the plan's pipelines hold that stage: ZeRO's shards."""
        out: dict[tuple, int] = {}
        for pipe in plan.pipelines:
            for s in pipe.stages:
                key = (s.kind, tuple(s.layers), s.tp)
                out[key] = out.get(key, 0) + 1
        return out

    def sync_time(self, allreduce: float, min_backward: float, m: int) -> float:
        """The exposed data-parallel sync (zero_sync_time) under this model's techniques, given the ring
        all-reduce of the largest gradient shard, the shortest backward of one micro-batch of any stage (what
        the overlapped reduction hides behind) and the most micro-batches of a pipeline."""
        window = self.options.overlap_fraction * min_backward if self.techniques.overlap else 0.0
        return zero_sync_time(self.techniques.zero, allreduce, window, m)

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
        intra = slowest_link(n.intra for n in used)
        inter = (self.ring_hops(sorted(per_node)) if c.pairs else self.inter_link([n.inter for n in used], kinds))
        return (*self.allreduce_groups(spans, min(per_node.values()), max(per_node.values()), len(per_node),
                                       len(plan.pipelines)), intra, inter)

    @staticmethod
    def allreduce_groups(spans: bool, k_min: int, k_max: int, nodes: int, pipelines: int) -> tuple[int, int, int]:
        """(k_min, k_max, groups) of the ring: k pipelines per node, then the nodes; one flat ring of all the
        pipelines when one of them spans nodes."""
        return (1, 1, pipelines) if spans else (k_min, k_max, nodes)

    @staticmethod
    def hierarchical_allreduce(nbytes: float, k_min: int, k_max: int, groups: int, intra: Link, inter: Link) -> float:
        return ring_allreduce(k_max, nbytes, intra) + ring_allreduce(groups, nbytes / k_min, inter)

    # --- the whole step -----------------------------------------------------------------------------------
    def evaluate(self, plan: Plan) -> Estimate:
        """The plan's step and memory under the plan's own techniques (plan.techniques)."""
        if plan.techniques != self.techniques:
            return self.with_techniques(plan.techniques).evaluate(plan)
        if not plan.pipelines:
            raise ValueError("a plan needs at least one pipeline")
        replicas = self.stage_replicas(plan) if self.techniques.zero else None
        stages = [self.stage_costs(p, replicas=replicas) for p in plan.pipelines]
        v = self.techniques.virtual_stages
        times = [self.pipeline_time(s, p.num_micro_batches, self.tail_costs(p), v)
                 for s, p in zip(stages, plan.pipelines)]
        ar = 0.0
        if len(plan.pipelines) > 1:
            nbytes = max(s.grad_bytes for ss in stages for s in ss)
            ar = self.sync_time(self.hierarchical_allreduce(nbytes, *self.allreduce_links(plan)),
                                min(s.bwd for ss in stages for s in ss), max(p.num_micro_batches for p in plan.pipelines))
        opt = max(s.optimizer for ss in stages for s in ss)
        step = max(times) + ar + opt
        if not step > 0:
            raise ValueError(f"{self.model.name} costs nothing on {self.cluster.name} (step time {step!r} s): its layers "
                             f"have no FLOPs, parameters or measured times")
        util, busy_share = {}, []
        worst = None
        for pipe, ss, tp_ in zip(plan.pipelines, stages, times):
            for st, sc in zip(pipe.stages, ss):
                busy = pipe.num_micro_batches * (sc.fwd + sc.bwd)
                for d in st.device_ids:
                    util[d] = busy / step
                busy_share.append(pipe.num_micro_batches * (sc.F + sc.B) / tp_ if tp_ > 0 else 1.0)
                over = sc.memory - sc.capacity
                if over > 0 and (worst is None or over > worst[0]):
                    worst = (over, st.kind, sc.memory, sc.capacity)
        samples = plan.global_batch / step
        return Estimate(step, times, ar, opt, stages, util, 1.0 - sum(busy_share) / len(busy_share), samples,
                        samples * plan.seq_len, worst, worst is None)

