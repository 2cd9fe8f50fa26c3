"""Event-by-event execution of a plan's step: the check on the cost model's closed form.

Each stage (its tp devices act in lockstep) runs its 1F1B order: p - i - 1 warm-up forwards, then one forward
and one backward alternately, then the remaining backwards. An operation starts when the stage is free and its
input has arrived; a send occupies the sender (no overlap of communication with compute, the same assumption
as the closed form) and delivers when it ends. After the last backward of every pipeline, the data-parallel
all-reduce runs step by step (each ring step moves one chunk over a link), then every device's optimizer.

With stages of equal F + B the simulated step equals the closed form exactly; with unequal stages the closed
form (Metis-style) charges the slowest stage for every micro-batch, which can exceed what 1F1B achieves when
the slowest stage is early in the pipeline (docs/planner.md).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from hal.plan.cost import CostModel, StageCost
from hal.plan.plan import Plan

__all__ = ["Event", "SimResult", "simulate", "one_f_one_b_order", "operations", "MAX_OPERATIONS"]

MAX_OPERATIONS = 1_000_000  # forwards and backwards simulated (and recorded) in one call, at most


@dataclass
class Event:
    pipeline: int
    stage: int          # -1 for step-wide events (all-reduce, optimizer)
    op: str             # "F", "B", "send", "allreduce", "optimizer"
    micro_batch: int
    start: float
    end: float


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


def _run_pipeline(j: int, sc: list[StageCost], m: int, events: list[Event],
                  tail: list[StageCost] | None = None) -> tuple[float, list[float]]:
    """`tail`: the stage costs of a partial last micro-batch (CostModel.tail_costs), None when it is full."""
    p = len(sc)
    orders = [one_f_one_b_order(p, i, m) for i in range(p)]
    pos = [0] * p
    free = [0.0] * p
    busy = [0.0] * p
    fwd_ready: list[dict[int, float]] = [{k: 0.0 for k in range(m)}] + [{} for _ in range(p - 1)]
    bwd_ready: list[dict[int, float]] = [{} for _ in range(p)]
    remaining = sum(len(o) for o in orders)
    while remaining:
        progressed = False
        for i in range(p):
            while pos[i] < len(orders[i]):
                op, k = orders[i][pos[i]]
                ready = fwd_ready[i].get(k) if op == "F" else bwd_ready[i].get(k)
                if ready is None:
                    break
                start = max(free[i], ready)
                c = tail[i] if tail is not None and k == m - 1 else sc[i]
                dur, send = (c.fwd, c.send_fwd) if op == "F" else (c.bwd, c.send_bwd)
                end = start + dur
                events.append(Event(j, i, op, k, start, end))
                if send > 0:
                    events.append(Event(j, i, "send", k, end, end + send))
                free[i] = end + send
                busy[i] += dur + send
                if op == "F":
                    if i + 1 < p:
                        fwd_ready[i + 1][k] = free[i]
                    else:
                        bwd_ready[i][k] = free[i]  # the last stage turns around at once
                elif i > 0:
                    bwd_ready[i - 1][k] = free[i]
                pos[i] += 1
                remaining -= 1
                progressed = True
        if not progressed:
            raise RuntimeError("1F1B schedule deadlocked (internal error)")
    return max(free), busy


def operations(plan: Plan) -> int:
    """Forwards and backwards in the plan's schedule: what `simulate` steps through one by one."""
    return sum(2 * p.num_micro_batches * len(p.stages) for p in plan.pipelines)


def simulate(plan: Plan, cm: CostModel, record: bool = True) -> SimResult:
    """Under the plan's techniques: ZeRO's and the overlapped sync's exposed time is the closed form's
    (zero_sync_time of the ring stepped through). Raises ValueError for an interleaved plan, and for a schedule of more than MAX_OPERATIONS operations (its work and its events grow
    with the number of micro-batches; the closed form, CostModel.evaluate, does not)."""
    if operations(plan) > MAX_OPERATIONS:
        raise ValueError(f"the schedule has {operations(plan):,} forwards and backwards, more than the "
                         f"{MAX_OPERATIONS:,} the simulator steps through")
    if plan.techniques.virtual_stages > 1:
        raise ValueError("the simulator steps through plain 1F1B, not the interleaved schedule of this plan")
    cm = cm.with_techniques(plan.techniques)
    events: list[Event] = []
    replicas = cm.stage_replicas(plan) if plan.techniques.zero else None
    stages = [cm.stage_costs(p, replicas=replicas) for p in plan.pipelines]
    times, shares, util_busy = [], [], {}
    for j, (pipe, sc) in enumerate(zip(plan.pipelines, stages)):
        t, busy = _run_pipeline(j, sc, pipe.num_micro_batches, events, cm.tail_costs(pipe))
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
