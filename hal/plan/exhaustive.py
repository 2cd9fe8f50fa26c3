"""Exhaustive search over a subset of the planner's space: same-kind groups, whole micro-batches per class.

It walks every class configuration (tp, pp, every split of the layers into pp contiguous stages, micro-batch
size, every dp from 1 to the most that fit) and every combination of classes, and every number of
micro-batches per class, and scores each plan with the exact cost model (CostModel.evaluate). The only
choices it skips are dominated ones: once the other classes' counts are fixed, the last class takes the fewest
micro-batches that finish the batch (more can only be slower). The planner's space holds this one (and adds
cross-kind pipelines and sample-exact batch splits), so the planner is never slower than it; the reference
over the planner's whole space is tests/plan/brute_force.py. bench/plan_validate.py draws random plans from
`all_class_configs`.
"""
from __future__ import annotations

import itertools

from hal.plan.cluster import Cluster, DeviceClass
from hal.plan.cost import CostModel, Estimate, ceil_div
from hal.plan.model import ModelSpec
from hal.plan.plan import Pipeline, Plan, Stage
from hal.plan.placement import max_pipelines, packing, place
from hal.plan.planner import ClassConfig, NoPlanFits, PlannerOptions, build_plan

__all__ = ["exhaustive_plan", "all_class_configs"]


def all_class_configs(cm: CostModel, cls: DeviceClass, options: PlannerOptions, batch: int) -> list[ClassConfig]:
    out = []
    n_layers = cm.n_layers
    for tp in options.tp_degrees:
        if cls.devices_per_node % tp:
            continue
        for pp in range(1, min(n_layers, cls.count // tp) + 1):
            for cuts in itertools.combinations(range(1, n_layers), pp - 1):
                bounds = (0, *cuts, n_layers)
                for mbs in options.micro_batch_sizes:
                    if mbs > batch:
                        continue
                    devs = place(cm.cluster, cls, tp, pp, 1)[0]
                    stages = [Stage(cls.kind, ids, (bounds[s], bounds[s + 1])) for s, ids in enumerate(devs)]
                    sc = cm.stage_costs(Pipeline(stages, mbs, pp, mbs * pp))
                    fb = [s.F + s.B for s in sc]
                    for dp in range(1, max_pipelines(cls, tp, pp) + 1):
                        spans, k_min, k_max, nodes = packing(cls, tp, pp, dp)
                        out.append(ClassConfig(cls, tp, pp, mbs, dp, bounds, sum(fb), max(fb), 0.0, 0.0, 0.0,
                                               spans, k_min, k_max, nodes))
    return out


def exhaustive_plan(cluster: Cluster, model: ModelSpec, global_batch: int, options: PlannerOptions | None = None,
                    max_evaluations: int = 2_000_000) -> tuple[Plan, Estimate, int]:
    """(best plan, its estimate, plans evaluated). Meant for at most 8 devices and a handful of layers."""
    options = options or PlannerOptions()
    cm = CostModel(cluster, model, options.cost)
    per_class = [[None, *all_class_configs(cm, c, options, global_batch)] for c in cluster.device_classes()]
    best: tuple[float, Plan, Estimate] | None = None
    n = 0
    for pick in itertools.product(*per_class):
        combo = [c for c in pick if c is not None]
        if not combo or sum(c.dp for c in combo) > global_batch:
            continue
        rounds = [c.dp * c.mbs for c in combo]
        ranges = [range(1, ceil_div(global_batch, r) + 1) for r in rounds[:-1]]
        for head in itertools.product(*ranges):
            rest = global_batch - sum(m * r for m, r in zip(head, rounds))
            ms = [*head, max(1, ceil_div(rest, rounds[-1]))]
            p = build_plan(cm, combo, ms, global_batch)
            if p is None:
                continue
            n += 1
            if n > max_evaluations:
                raise RuntimeError(f"exhaustive search exceeded {max_evaluations} plans; use a smaller case")
            est = cm.evaluate(p)
            if est.fits and (best is None or est.step_time < best[0] * (1 - 1e-12)):
                best = (est.step_time, p, est)
    if best is None:
        raise NoPlanFits("no plan fits (exhaustive search)", None)
    return best[1], best[2], n
