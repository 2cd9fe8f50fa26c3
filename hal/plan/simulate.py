"""Event-by-event execution of a plan's step: the check on the cost model's closed form.

Each stage (its tp devices act in lockstep) runs its 1F1B order: p - i - 1 warm-up forwards, then one forward
and one backward alternately, then the remaining backwards. An operation starts when the stage is free and its
input has arrived; a send occupies the sender (no overlap of communication with compute, the same assumption
as the closed form) and delivers when it ends. After the last backward of every pipeline, the data-parallel
all-reduce runs step by step (each ring step moves one chunk over a link), then every device's optimizer.

Interleaved (v chunks per stage, Narayanan et al. 2021, Megatron-LM's order): stage i holds virtual stages
i, i + p, ..., i + (v - 1)p, each a v-th of its layers, F and B; the micro-batches go in groups of p, every chunk
of a group before the next group; stage i warms up with 2(p - i - 1) + (v - 1)p forwards, then alternates
(this order needs m to be a multiple of p; a pipeline whose m is not runs plain 1F1B, CostModel.pipeline_time). A
chunk's send is a v-th of the stage's (the closed form's v crossings of each boundary), and the last stage
also sends its chunks' outputs back to the first (the wrap-around, which the closed form leaves out).

With stages of equal F + B the simulated step equals the closed form exactly; with unequal stages the closed
form (Metis-style) charges the slowest stage for every micro-batch, which can exceed what 1F1B achieves when
the slowest stage is early in the pipeline (docs/planner.md).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from hal.plan.cost import CostModel, StageCost, chunks_run
from hal.plan.plan import Plan

__all__ = ["Event", "SimResult", "simulate", "one_f_one_b_order", "interleaved_order", "operations", "MAX_OPERATIONS"]

MAX_OPERATIONS = 1_000_000  # forwards and backwards simulated (and recorded) in one call, at most


@dataclass
class Event:
    pipeline: int
    stage: int          # -1 for step-wide events (all-reduce, optimizer)
    op: str             # "F", "B", "send", "allreduce", "optimizer"
    micro_batch: int
    start: float
    end: float
    chunk: int = 0      # interleaved: which of the stage's chunks


@dataclass
class SimResult:
    step_time: float
    pipeline_times: list[float]
    allreduce_time: float
    optimizer_time: float
    bubble_fraction: float
    utilisation: dict[int, float]
    events: list[Event] = field(default_factory=list)


def one_f_one_b_order(p: int, i: int, m: int) -> list[tuple[str, int]]:
    """The operations of stage i (0-based) of p in 1F1B order: ("F" | "B", micro-batch)."""
    warm = min(p - i - 1, m)
    order = [("F", k) for k in range(warm)]
    for k in range(m - warm):
        order += [("F", warm + k), ("B", k)]
    order += [("B", k) for k in range(m - warm, m)]
    return order


def interleaved_order(p: int, i: int, m: int, v: int) -> list[tuple[str, int, int]]:
    """Stage i's operations under interleaved 1F1B with v chunks: ("F" | "B", chunk, micro-batch)."""
    fwd, bwd = [], []
    for g in range(0, m, p):
        group = range(g, min(g + p, m))
        fwd += [(c, k) for c in range(v) for k in group]
        bwd += [(c, k) for c in reversed(range(v)) for k in group]
    total = m * v
    warm = min(2 * (p - i - 1) + (v - 1) * p, total)
    order = [("F", *fwd[n]) for n in range(warm)]
    for n in range(total - warm):
        order += [("F", *fwd[warm + n]), ("B", *bwd[n])]
    return order + [("B", *bwd[n]) for n in range(total - warm, total)]


def _run_pipeline(j: int, sc: list[StageCost], m: int, events: list[Event],
                  tail: list[StageCost] | None = None, v: int = 1,
                  wrap: tuple[float, float] = (0.0, 0.0)) -> tuple[float, list[float]]:
    """`tail`: the stage costs of a partial last micro-batch (CostModel.tail_costs), None when it is full.
    `v` chunks per stage; `wrap`: (full, tail) micro-batch's send from the last stage back to the first."""
    p = len(sc)
    orders = ([[(op, 0, k) for op, k in one_f_one_b_order(p, i, m)] for i in range(p)] if v == 1 else
              [interleaved_order(p, i, m, v) for i in range(p)])
    last = v * p - 1  # the last virtual stage; virtual stage c * p + i is chunk c of stage i
    pos = [0] * p
    free = [0.0] * p
    busy = [0.0] * p
    fwd_ready: dict[tuple[int, int], float] = {(0, k): 0.0 for k in range(m)}  # (virtual stage, mb) -> time
    bwd_ready: dict[tuple[int, int], float] = {}
    remaining = sum(len(o) for o in orders)
    while remaining:
        progressed = False
        for i in range(p):
            while pos[i] < len(orders[i]):
                op, c, k = orders[i][pos[i]]
                vs = c * p + i
                ready = (fwd_ready if op == "F" else bwd_ready).get((vs, k))
                if ready is None:
                    break
                start = max(free[i], ready)
                cost = tail[i] if tail is not None and k == m - 1 else sc[i]
                dur, send = (cost.fwd, cost.send_fwd) if op == "F" else (cost.bwd, cost.send_bwd)
                dur, send = dur / v, send / v
                wrap_send = wrap[1] if tail is not None and k == m - 1 else wrap[0]
                if op == "F" and i == p - 1 and vs < last or op == "B" and i == 0 and vs > 0:
                    send = wrap_send  # to the stage's neighbour across the wrap-around
                end = start + dur
                events.append(Event(j, i, op, k, start, end, c))
                if send > 0:
                    events.append(Event(j, i, "send", k, end, end + send, c))
                free[i] = end + send
                busy[i] += dur + send
                if op == "F":
                    if vs < last:
                        fwd_ready[(vs + 1, k)] = free[i]
                    else:
                        bwd_ready[(vs, k)] = free[i]  # the last stage turns around at once
                elif vs > 0:
                    bwd_ready[(vs - 1, k)] = free[i]
                pos[i] += 1
                remaining -= 1
                progressed = True
        if not progressed:
            raise RuntimeError("1F1B schedule deadlocked (internal error)")
    return max(free), busy


def _wrap_sends(cm: CostModel, pipe, v: int) -> tuple[float, float]:
    """(full, partial last) micro-batch's send from the last stage's chunk to the first stage: the output of the
    last stage's first chunk (its layers cut into v near-equal parts), over the link between the two."""
    if v == 1 or len(pipe.stages) < 2:
        return 0.0, 0.0
    first, lastst = pipe.stages[0], pipe.stages[-1]
    a, e = lastst.layers
    out = cm.out[a + max(1, round((e - a) / v)) - 1]
    return tuple(cm.transfer_time(b * out, lastst.device_ids, first.device_ids)
                 for b in (pipe.micro_batch_size, cm.tail_size(pipe)))


def operations(plan: Plan) -> int:
    """Forwards and backwards in the plan's schedule: what `simulate` steps through one by one (a pipeline of
    several stages, interleaved, runs each of its v chunks)."""
    v = plan.techniques.virtual_stages
    return sum(2 * p.num_micro_batches * len(p.stages) * chunks_run(len(p.stages), p.num_micro_batches, v)
               for p in plan.pipelines)


def simulate(plan: Plan, cm: CostModel, record: bool = True) -> SimResult:
    """Under the plan's techniques: ZeRO's and the overlapped sync's exposed time is the closed form's
    (zero_sync_time of the ring stepped through); interleaved plans step through the interleaved order. Raises
    ValueError for a schedule of more than MAX_OPERATIONS operations (its work and its events grow with the
    number of micro-batches; the closed form, CostModel.evaluate, does not)."""
    if operations(plan) > MAX_OPERATIONS:
        raise ValueError(f"the schedule has {operations(plan):,} forwards and backwards, more than the "
                         f"{MAX_OPERATIONS:,} the simulator steps through")
    cm = cm.with_techniques(plan.techniques)
    v = plan.techniques.virtual_stages
    events: list[Event] = []
    replicas = cm.stage_replicas(plan) if plan.techniques.zero else None
    stages = [cm.stage_costs(p, replicas=replicas) for p in plan.pipelines]
    times, shares, util_busy = [], [], {}
    for j, (pipe, sc) in enumerate(zip(plan.pipelines, stages)):
        m = pipe.num_micro_batches
        vj = chunks_run(len(pipe.stages), m, v)  # as CostModel.pipeline_time
        t, busy = _run_pipeline(j, sc, m, events, cm.tail_costs(pipe), vj, _wrap_sends(cm, pipe, vj))
        times.append(t)
        for st, c, b in zip(pipe.stages, sc, busy):
            shares.append(b / t)
            for d in st.device_ids:
                util_busy[d] = pipe.num_micro_batches * (c.fwd + c.bwd)
    t = max(times)
    ar_start = t
    if len(plan.pipelines) > 1:
        nbytes = max(s.grad_bytes for ss in stages for s in ss)
        k_min, k_max, groups, intra, inter = cm.allreduce_links(plan)
        for n, chunk, link in ((k_max, nbytes / k_max, intra), (groups, nbytes / k_min / groups, inter)):
            if n > 1 and nbytes > 0:
                for _ in range(2 * (n - 1)):  # reduce-scatter then all-gather, one chunk per step
                    t += link.latency + chunk / link.bandwidth
        if plan.techniques.zero or plan.techniques.overlap:  # what of the ring is exposed: the closed form's
            t = ar_start + cm.sync_time(t - ar_start, min(s.bwd for ss in stages for s in ss),
                                        max(p.num_micro_batches for p in plan.pipelines))
    ar = t - ar_start
    if record and ar > 0:
        events.append(Event(-1, -1, "allreduce", -1, ar_start, t))
    opt = 0.0
    for j, (pipe, sc) in enumerate(zip(plan.pipelines, stages)):
        for i, c in enumerate(sc):
            if record:
                events.append(Event(j, i, "optimizer", -1, t, t + c.optimizer))
            opt = max(opt, c.optimizer)
    step = t + opt
    return SimResult(step, times, ar, opt, 1.0 - sum(shares) / len(shares),
                     {d: b / step for d, b in util_busy.items()}, events if record else [])
