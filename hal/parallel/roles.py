"""What a plan asks of each rank: its pipeline and stage, its neighbours, its batch rows, its all-reduce groups.

Pure functions of (plan, rank -> device id), identical on every rank: every rank derives the same roles and
creates the same process groups in the same order without talking to the others.

Data parallelism over uneven pipelines: pipeline j holds `samples[j]` rows of the global batch (rows
[offset_j, offset_j + samples_j)), cut in micro-batches of `micro_batch_size` (the last may be partial), and
its stages may split the layers differently from other pipelines. A layer's replicas are the stages holding it,
one per pipeline; layers with the same set of holders form a *segment*, whose gradients are all-reduced in
groups of those ranks. A stage of tp > 1 devices (one island) splits its layers by tensor parallelism
(`tensor_parallel.py`).
"""
from __future__ import annotations

from dataclasses import dataclass

from hal.plan.plan import Plan

__all__ = ["Role", "Segment", "role_of", "tp_groups", "segments", "batch_rows", "micro_batches", "check_structure"]


@dataclass(frozen=True)
class Role:
    pipeline: int
    stage: int
    num_stages: int
    layers: tuple[int, int]        # [start, end) in the model's layer list
    kind: str
    act_from: int | None = None    # the rank this one receives its activations from (None on a first stage)
    act_to: tuple[int, ...] = ()   # the ranks it sends its activations to (none on a last stage)
    grad_from: int | None = None   # the rank it receives its output's gradients from (None on a last stage)
    grad_to: tuple[int, ...] = ()  # the ranks it sends its input's gradients to (none on a first stage)
    tp_rank: int = 0               # its place in its stage's tensor-parallel group
    tp_ranks: tuple[int, ...] = () # the ranks of its stage, in tensor-parallel order

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

    @property
    def tp_size(self) -> int:
        return max(1, len(self.tp_ranks))


def role_of(plan: Plan, rank_of_device: dict[int, int], rank: int) -> Role:
    """`rank`'s role (`Role.idle` when the plan does not use its device); `rank_of_device` maps the plan's device
    ids to ranks (Job.rank_of).

    Between stages s and s + 1 of tp sizes a and b, rank u of stage s + 1 receives its activations from rank
    u mod a of stage s, and rank t of stage s its gradients from rank t mod b of stage s + 1 (a stage's ranks
    hold the same activations: tensor parallelism sums its layers' outputs over them)."""
    for j, p in enumerate(plan.pipelines):
        stage_ranks = [[rank_of_device[d] for d in st.device_ids] for st in p.stages]
        for i, st in enumerate(p.stages):
            ranks = stage_ranks[i]
            if rank not in ranks:
                continue
            t = ranks.index(rank)
            prev = stage_ranks[i - 1] if i > 0 else None
            nxt = stage_ranks[i + 1] if i + 1 < len(p.stages) else None
            return Role(j, i, len(p.stages), st.layers, st.kind,
                        act_from=prev[t % len(prev)] if prev else None,
                        act_to=tuple(r for u, r in enumerate(nxt) if u % len(ranks) == t) if nxt else (),
                        grad_from=nxt[t % len(nxt)] if nxt else None,
                        grad_to=tuple(r for u, r in enumerate(prev) if u % len(ranks) == t) if prev else (),
                        tp_rank=t, tp_ranks=tuple(ranks))
    return Role(-1, 0, 1, (0, 0), "")  # idle: the plan does not use this rank's device


def tp_groups(plan: Plan, rank_of_device: dict[int, int]) -> list[tuple[int, ...]]:
    """The ranks of every stage of tp > 1, in plan order (each becomes a tensor-parallel group)."""
    return [tuple(rank_of_device[d] for d in st.device_ids) for p in plan.pipelines for st in p.stages if st.tp > 1]


@dataclass(frozen=True)
class Segment:
    """Layers [start, end) held by the same stages; their gradients are summed in `groups` (a rank is in one
    of them). With one tp size T over the holders, group i is the holders' ranks of tp index i (shards meet
    their own replicas); with several (`padded`), one group of every holder sums whole-size gradients, each
    rank's shard at its place and zeros elsewhere."""
    layers: tuple[int, int]
    groups: tuple[tuple[int, ...], ...]
    padded: bool = False


def segments(plan: Plan, rank_of_device: dict[int, int]) -> list[Segment]:
    """The model's layers in segments of the same holders, in layer order."""
    n_layers = max(st.layers[1] for p in plan.pipelines for st in p.stages)
    holders = []
    for layer in range(n_layers):
        hs = []
        for p in plan.pipelines:
            for st in p.stages:
                if st.layers[0] <= layer < st.layers[1]:
                    hs.append(tuple(rank_of_device[d] for d in st.device_ids))
        holders.append(tuple(sorted(hs)))
    runs: list[tuple[tuple[int, int], tuple]] = []
    for layer, hs in enumerate(holders):
        if runs and runs[-1][1] == hs:
            runs[-1] = ((runs[-1][0][0], layer + 1), hs)
        else:
            runs.append(((layer, layer + 1), hs))
    out = []
    for layers, hs in runs:
        sizes = {len(h) for h in hs}
        if len(sizes) == 1:
            t = sizes.pop()
            out.append(Segment(layers, tuple(tuple(sorted(h[i] for h in hs)) for i in range(t))))
        else:
            out.append(Segment(layers, (tuple(sorted(r for h in hs for r in h)),), padded=True))
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
