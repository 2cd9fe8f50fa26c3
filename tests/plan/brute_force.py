"""Brute force over the planner's declared plan space, scored with the cost model: the reference of the
optimality tests. It shares no code with the planner (only cluster.py, plan.py and cost.py), so a pruning or a
closed-form shortcut of the search cannot hide in both.

The space (docs/planner.md, "The search"; the planner's whole declared space for clusters of at most
`cross_kind_every_pair` classes whose shapes hold at most `small_dp` pipelines, and models whose depths have
at most `enumerate_splits` splits, as the tests' clusters and models do):
  * a plan is a set of pipeline groups; a device class belongs to at most one group;
  * a same-kind group: `dp` identical pipelines on one class, `pp` stages of `tp` devices (tp divides the node);
  * a cross-kind group: `dp` identical pipelines whose first `pp_a` stages (of `tp_a` devices) are on class a
    and whose last `pp_b` stages (of `tp_b` devices) are on class b, for every ordered pair of classes;
  * any split of the layers into contiguous, non-empty stages; one micro-batch size per group;
  * pipelines that fit in a node are packed node by node, longer ones are laid over consecutive nodes;
  * the global batch is split into any group totals (at least one sample per pipeline), spread as evenly as
    possible over a group's pipelines (the first ones get the extra samples).
  * each of `techniques` (plan.Techniques: ZeRO stage, recomputation, sequence parallelism, interleaving,
    overlap; default: none) for the whole plan, every one of them: the planner's pruning of dominated
    settings (TechniqueSpace.settings) is checked here too.
Only plans that fit in memory count. Meant for clusters of a few devices, models of a few layers, batches <= 16.
"""
from __future__ import annotations

import itertools

from hal.plan.cluster import Cluster, DeviceClass
from hal.plan.cost import CostModel, Estimate
from hal.plan.plan import Pipeline, Plan, Stage, Techniques

__all__ = ["brute_force"]


def _segments(cluster: Cluster, cls: DeviceClass, tp: int, pp: int) -> list[list[list[int]]]:
    """Device ids per stage of every pipeline segment of pp stages of tp devices that the class can hold."""
    size, per_node = tp * pp, cls.devices_per_node
    if size <= per_node:
        out = []
        for n in cls.nodes:
            base = cluster.nodes[n].first_device
            out += [[[base + j * size + s * tp + t for t in range(tp)] for s in range(pp)]
                    for j in range(per_node // size)]
        return out
    flat = [d for n in cls.nodes for d in cluster.nodes[n].device_ids]
    return [[flat[i * size + s * tp: i * size + (s + 1) * tp] for s in range(pp)] for i in range(len(flat) // size)]


def _shapes(cluster: Cluster, classes: tuple[DeviceClass, ...], tps, n_layers: int):
    """(stage kinds and device ids per pipeline, one list per possible dp) for every stage layout of a group."""
    per_class = []
    for cls in classes:
        layouts = []
        for tp in tps:
            if cls.devices_per_node % tp:
                continue
            for pp in range(1, min(n_layers, cls.count // tp) + 1):
                layouts.append((cls.kind, _segments(cluster, cls, tp, pp)))
        per_class.append(layouts)
    for pick in itertools.product(*per_class):
        if sum(len(segs[0]) for _, segs in pick) > n_layers:
            continue
        dp_max = min(len(segs) for _, segs in pick)
        pipes = [[(kind, ids) for kind, segs in pick for ids in segs[i]] for i in range(dp_max)]
        yield pipes


def _groups(cm: CostModel, classes: list[DeviceClass], tps, mbss, batch: int, cross_kind: bool):
    """Every group (class indices, pipelines as lists of Stage without samples, micro-batch size)."""
    n = cm.n_layers
    owners = [(i,) for i in range(len(classes))]
    if cross_kind:
        owners += [(i, j) for i in range(len(classes)) for j in range(len(classes)) if i != j]
    for owner in owners:
        for pipes in _shapes(cm.cluster, tuple(classes[i] for i in owner), tps, n):
            p = len(pipes[0])
            for cuts in itertools.combinations(range(1, n), p - 1):
                bounds = (0, *cuts, n)
                for mbs in mbss:
                    if mbs > batch:
                        continue
                    for dp in range(1, len(pipes) + 1):
                        stages = [[Stage(kind, list(ids), (bounds[s], bounds[s + 1]))
                                   for s, (kind, ids) in enumerate(pipe)] for pipe in pipes[:dp]]
                        yield set(owner), stages, mbs


def _compositions(total: int, mins: list[int]):
    """Every way to write `total` as an ordered sum of len(mins) parts, part i at least mins[i]."""
    if len(mins) == 1:
        if total >= mins[0]:
            yield (total,)
        return
    for first in range(mins[0], total - sum(mins[1:]) + 1):
        for rest in _compositions(total - first, mins[1:]):
            yield (first, *rest)


def brute_force(cluster: Cluster, model, batch: int, micro_batch_sizes=(1, 2), tp_degrees=(1, 2),
                cross_kind: bool = True, cost_options=None,
                techniques=(Techniques(),)) -> tuple[Plan, Estimate, int] | None:
    """(best plan, its estimate, plans evaluated), or None when no plan of the space fits."""
    cm = CostModel(cluster, model, cost_options)
    classes = cluster.device_classes()
    groups = list(_groups(cm, classes, tp_degrees, micro_batch_sizes, batch, cross_kind))
    best, n = None, 0

    def search(start: int, used: set[int], chosen: list) -> None:
        nonlocal best, n
        if chosen:
            for totals in _compositions(batch, [len(g[1]) for g in chosen]):
                pipes = []
                for (_, stages, mbs), total in zip(chosen, totals):
                    base, extra = divmod(total, len(stages))
                    for k, st in enumerate(stages):
                        s = base + (k < extra)
                        pipes.append(Pipeline(st, mbs, -(-s // mbs), s))
                for t in techniques:
                    candidate = Plan(model.name, batch, model.seq_len, pipes, cluster.name, techniques=t)
                    est = cm.evaluate(candidate)
                    n += 1
                    if est.fits and (best is None or est.step_time < best[1].step_time * (1 - 1e-12)):
                        best = (candidate, est)
        for g in range(start, len(groups)):
            owner = groups[g][0]
            if not owner & used and sum(len(c[1]) for c in chosen) + len(groups[g][1]) <= batch:
                search(g + 1, used | owner, [*chosen, groups[g]])

    search(0, set(), [])
    return None if best is None else (best[0], best[1], n)
