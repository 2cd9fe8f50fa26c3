"""What a plan asks of each rank: its pipeline and stage, its neighbours, its batch rows, its all-reduce groups.

Pure functions of (plan, rank -> device id), identical on every rank: every rank derives the same roles and
creates the same process groups in the same order without talking to the others.

Data parallelism over uneven pipelines: pipeline j holds `samples[j]` rows of the global batch (rows
[offset_j, offset_j + samples_j)), cut in micro-batches of `micro_batch_size` (the last may be partial), and
its stages may split the layers differently from other pipelines. A layer's replicas are the stages holding it,
one per pipeline; layers with the same set of holders form a *segment*, whose gradients are all-reduced in one
group of those ranks.
"""
from __future__ import annotations

from dataclasses import dataclass

from hal.plan.plan import Plan

__all__ = ["Role", "role_of", "segments", "batch_rows", "micro_batches", "check_structure"]


@dataclass(frozen=True)
class Role:
    pipeline: int
    stage: int
    num_stages: int
    layers: tuple[int, int]        # [start, end) in the model's layer list
    kind: str
    prev_rank: int | None          # the rank of the stage before (None on the first stage)
    next_rank: int | None          # the rank of the stage after (None on the last stage)

    @property
    def idle(self) -> bool:
        """The plan gives this rank's device nothing to do: it only joins the job's collective calls."""
        return self.pipeline < 0

    @property
    def first(self) -> bool:
        return self.stage == 0

    @property
    def last(self) -> bool:
        return self.stage == self.num_stages - 1


def role_of(plan: Plan, rank_of_device: dict[int, int], rank: int) -> Role:
    """`rank`'s role (`Role.idle` when the plan does not use its device); `rank_of_device` maps the plan's device
    ids to ranks (Job.rank_of)."""
    for j, p in enumerate(plan.pipelines):
        for i, st in enumerate(p.stages):
            ranks = [rank_of_device[d] for d in st.device_ids]
            if rank in ranks:
                prev = rank_of_device[p.stages[i - 1].device_ids[0]] if i > 0 else None
                nxt = rank_of_device[p.stages[i + 1].device_ids[0]] if i + 1 < len(p.stages) else None
                return Role(j, i, len(p.stages), st.layers, st.kind, prev, nxt)
    return Role(-1, 0, 1, (0, 0), "", None, None)  # idle: the plan does not use this rank's device


def segments(plan: Plan, rank_of_device: dict[int, int]) -> list[tuple[tuple[int, int], tuple[int, ...]]]:
    """[((layer start, end), ranks holding those layers, one per pipeline)], in layer order."""
    n_layers = max(st.layers[1] for p in plan.pipelines for st in p.stages)
    holders = []
    for layer in range(n_layers):
        hs = []
        for p in plan.pipelines:
            for st in p.stages:
                if st.layers[0] <= layer < st.layers[1]:
                    hs.append(rank_of_device[st.device_ids[0]])
        holders.append(tuple(sorted(hs)))
    out: list[tuple[tuple[int, int], tuple[int, ...]]] = []
    for layer, hs in enumerate(holders):
        if out and out[-1][1] == hs:
            out[-1] = ((out[-1][0][0], layer + 1), hs)
        else:
            out.append(((layer, layer + 1), hs))
    return out


def batch_rows(plan: Plan, pipeline: int) -> tuple[int, int]:
    """[start, end) of the global batch's rows that `pipeline` trains on."""
    start = sum(p.samples for p in plan.pipelines[:pipeline])
    return start, start + plan.pipelines[pipeline].samples


def micro_batches(plan: Plan, pipeline: int) -> list[tuple[int, int]]:
    """[start, end) rows (inside the pipeline's share) of each micro-batch; the last may be partial."""
    p = plan.pipelines[pipeline]
    out, start = [], 0
    while start < p.samples:
        end = min(start + p.micro_batch_size, p.samples)
        out.append((start, end))
        start = end
    return out


def check_structure(plan: Plan, n_layers: int) -> None:
    """Raises PlanMismatch unless each pipeline's stages cover the model's `n_layers` layers in order, without
    gap or overlap, and the pipelines' shares add up to the global batch."""
    from hal.parallel import PlanMismatch
    if not plan.pipelines:
        raise PlanMismatch("plan: it has no pipeline")
    for j, p in enumerate(plan.pipelines):
        at = 0
        for i, st in enumerate(p.stages):
            if st.layers[0] != at or st.layers[1] <= st.layers[0]:
                raise PlanMismatch(f"plan: pipeline {j} stage {i} holds layers {list(st.layers)}; expected a "
                                   f"non-empty range starting at layer {at}")
            at = st.layers[1]
        if at != n_layers:
            raise PlanMismatch(f"plan: pipeline {j} ends at layer {at}, but the model has {n_layers} layers")
        if p.samples < 1 or p.micro_batch_size < 1:
            raise PlanMismatch(f"plan: pipeline {j} has {p.samples} samples in micro-batches of "
                               f"{p.micro_batch_size}; both must be >= 1")
    total = sum(p.samples for p in plan.pipelines)
    if total != plan.global_batch:
        raise PlanMismatch(f"plan: the pipelines' shares add up to {total} samples, not the global batch "
                           f"{plan.global_batch}")
