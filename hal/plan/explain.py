"""Why the chosen plan beats the runners-up (`hal plan --explain`): each plan's step cut into the cost model's
terms, and the difference of every runner-up from the chosen plan term by term.

The terms add up to CostModel.evaluate's step exactly:
    step = fill + steady + all-reduce + optimizer
where fill is the slowest pipeline's fill and drain (the sum over its stages of F + B, or of a lone partial
micro-batch; interleaved, cost.interleaved_total of it) and steady the rest of that pipeline (its other
micro-batches, paced by its slowest stage); all-reduce is the exposed data-parallel sync under the plan's
ZeRO stage and overlap. Each plan's techniques (ZeRO stage, recomputation, sequence parallelism, interleaving,
overlap) are named with it, and a runner-up that uses others says which.
"""
from __future__ import annotations

from dataclasses import dataclass

from hal.plan.cost import CostModel, Estimate, interleaved_total
from hal.plan.plan import Plan

__all__ = ["Breakdown", "TERMS", "breakdown", "describe", "explain"]

TERMS = {"fill": "fill", "steady": "steady", "allreduce": "all-reduce", "optimizer": "optimizer"}


@dataclass
class Breakdown:
    label: str
    fill: float       # the slowest pipeline's fill and drain
    steady: float     # the rest of the slowest pipeline
    allreduce: float
    optimizer: float
    step: float
    pipelines: int
    devices: int
    techniques: str = "none"


def describe(plan: Plan) -> str:
    """The plan's pipeline groups in words: `count x (stages) mb<micro-batch size>, samples`, the stages of each
    kind as kind:tp<t>x<depth> [layers per stage]."""
    groups: dict[tuple, list[int]] = {}
    for p in plan.pipelines:
        runs: list[tuple[tuple[str, int], list[int]]] = []
        for s in p.stages:
            if not runs or runs[-1][0] != (s.kind, s.tp):
                runs.append(((s.kind, s.tp), []))
            runs[-1][1].append(s.layers[1] - s.layers[0])
        shape = (" -> ".join(f"{kind}:tp{tp}x{len(n)} [{'/'.join(map(str, n))}]" for (kind, tp), n in runs),
                 p.micro_batch_size)
        groups.setdefault(shape, []).append(p.samples)
    return " + ".join(f"{len(samples)} x ({stages}) mb{mbs}, {sum(samples)} samples"
                      for (stages, mbs), samples in groups.items())


def breakdown(cm: CostModel, plan: Plan, est: Estimate) -> Breakdown:
    cm = cm.with_techniques(plan.techniques)
    slow = max(range(len(plan.pipelines)), key=lambda i: (est.pipeline_times[i], -i))
    pipe, stages = plan.pipelines[slow], est.stages[slow]
    tail = cm.tail_costs(pipe)
    paced = tail if tail is not None and pipe.num_micro_batches == 1 else stages
    fill = interleaved_total(sum(s.F + s.B for s in paced), max(s.F + s.B for s in paced),
                             plan.techniques.virtual_stages)
    return Breakdown(describe(plan), fill, est.pipeline_times[slow] - fill, est.allreduce_time, est.optimizer_time,
                     est.step_time, len(plan.pipelines), len(plan.devices), plan.techniques.label())


def _s(t: float) -> str:
    return f"{t * 1e3:.2f} ms" if abs(t) < 1 else f"{t:.3f} s"


def explain(cm: CostModel, chosen: tuple[Plan, Estimate], runners_up: list[tuple[Plan, Estimate]]) -> list[str]:
    """Lines: the chosen plan's terms, then per runner-up its terms and why it loses (the terms it pays more
    for, largest first, and those it saves on)."""
    best = breakdown(cm, *chosen)
    out = [f"chosen: {best.label}", f"  techniques: {best.techniques}",
           f"  step {_s(best.step)} = fill {_s(best.fill)} + steady {_s(best.steady)} + all-reduce "
           f"{_s(best.allreduce)} + optimizer {_s(best.optimizer)} ({best.pipelines} pipelines, {best.devices} devices)"]
    if not runners_up:
        out.append("no runner-up: no other finalist fits in memory")
    for k, (plan, est) in enumerate(runners_up, 1):
        b = breakdown(cm, plan, est)
        delta = {t: getattr(b, t) - getattr(best, t) for t in TERMS}
        worse = sorted((t for t in TERMS if delta[t] > 0), key=lambda t: -delta[t])
        better = sorted((t for t in TERMS if delta[t] < 0), key=lambda t: delta[t])
        why = ", ".join(f"{TERMS[t]} +{_s(delta[t])}" for t in worse) or "no term"
        saves = ", ".join(f"{TERMS[t]} -{_s(-delta[t])}" for t in better)
        out += [f"runner-up {k}: {b.label}",
                f"  techniques: {b.techniques}" + ("" if b.techniques != best.techniques else " (the same)"),
                f"  step {_s(b.step)} = fill {_s(b.fill)} + steady {_s(b.steady)} + all-reduce {_s(b.allreduce)} + "
                f"optimizer {_s(b.optimizer)} ({b.pipelines} pipelines, {b.devices} devices)",
                f"  {_s(b.step - best.step)} ({(b.step / best.step - 1):.1%}) slower: pays more for {why}"
                + (f"; saves {saves}" if saves else "")]
    return out
