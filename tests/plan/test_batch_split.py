"""The batch split: split_samples is the best split of the batch into group totals (against every split),
and sample_time is CostModel's pipeline time with a partial last micro-batch; both with interleaved groups
(which interleave only with a multiple of their depth micro-batches)."""
from __future__ import annotations

import itertools
import random
from dataclasses import dataclass

import pytest

from hal.plan.batch_split import group_time, most_samples, sample_time, split_batch, split_samples
from hal.plan.cost import CostModel, StageCost, ceil_div, interleaved_total
from hal.plan.stage_split import NO_LIMIT


@dataclass
class Group:
    dp: int
    mbs: int
    total: float
    slowest: float
    max_m: int
    tail_total: tuple[float, ...]
    tail_slowest: tuple[float, ...]
    pp: int = 1
    v: int = 1


def random_group(rng: random.Random, interleaved: bool = False) -> Group:
    mbs, p = rng.choice([1, 2, 3, 4]), rng.randint(2 if interleaved else 1, 4)
    v = 2 if interleaved else 1
    per_sample = [rng.uniform(0.1, 2.0) for _ in range(p)]  # F + B of one sample per stage, plus a fixed cost
    fixed = [rng.uniform(0.0, 0.3) for _ in range(p)]
    stage = [[f + r * w for f, w in zip(fixed, per_sample)] for r in range(1, mbs + 1)]
    total = [interleaved_total(sum(s), max(s), v) for s in stage]  # as summaries has them
    return Group(rng.randint(1, 3), mbs, total[-1], max(stage[-1]), rng.choice([1, 2, 3, 4, NO_LIMIT]),
                 tuple(total[:-1]), tuple(max(s) for s in stage[:-1]), p, v)


def best_by_enumeration(groups: list[Group], batch: int) -> float | None:
    best = None
    for totals in itertools.product(*[range(g.dp, batch + 1) for g in groups]):
        if sum(totals) != batch:
            continue
        per = [ceil_div(t, g.dp) for g, t in zip(groups, totals)]
        if any(s > g.max_m * g.mbs for g, s in zip(groups, per)):
            continue
        # every pipeline: an interleaved group's pipelines with fewer samples may be its slowest
        t = max(sample_time(g, s) for g, tot in zip(groups, totals)
                for s in {ceil_div(tot, g.dp), tot // g.dp} if s >= 1)
        best = t if best is None else min(best, t)
    return best


@pytest.mark.parametrize("seed", range(60))
def test_split_samples_is_the_best_split_into_group_totals(seed):
    rng = random.Random(seed)
    groups = [random_group(rng, interleaved=seed >= 40 and rng.random() < 0.7) for _ in range(rng.randint(1, 3))]
    batch = rng.randint(1, 14)
    ref = best_by_enumeration(groups, batch)
    got = split_samples(groups, batch)
    if ref is None:
        assert got is None
        return
    tau, totals = got
    assert sum(totals) == batch and all(t >= g.dp for g, t in zip(groups, totals))
    assert all(ceil_div(t, g.dp) <= g.max_m * g.mbs for g, t in zip(groups, totals))
    assert tau == pytest.approx(ref, rel=1e-12)
    assert tau == pytest.approx(max(group_time(g, t) for g, t in zip(groups, totals)), rel=1e-12)


def test_sample_time_is_cost_model_pipeline_time_with_a_partial_tail():
    def stage(fb):
        return StageCost(fb / 3, 2 * fb / 3, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 1)

    full, part = [stage(3.0), stage(2.0)], [stage(1.2), stage(0.9)]
    g = Group(1, 2, 5.0, 3.0, NO_LIMIT, (2.1,), (1.2,))
    assert sample_time(g, 1) == pytest.approx(CostModel.pipeline_time(part, 1, part))
    assert sample_time(g, 4) == pytest.approx(CostModel.pipeline_time(full, 2))
    assert sample_time(g, 5) == pytest.approx(CostModel.pipeline_time(full, 3, part))
    assert [most_samples(g, sample_time(g, s), 100) for s in range(1, 9)] == list(range(1, 9))
    assert most_samples(g, 0.5, 100) == 0 and most_samples(g, 1e9, 7) == 7


def test_interleaved_times_are_the_cost_models_and_the_split_steers_to_multiples_of_the_depth():
    """An interleaved group of depth 3 (4 chunks): CostModel.pipeline_time interleaves only micro-batch counts
    that are multiples of 3, and so do sample_time, most_samples (not monotone: 6 micro-batches finish before 5)
    and split_batch, which gives each group 6 rather than the 5 whole micro-batches plain pricing would."""
    def stage(fb):
        return StageCost(fb / 3, 2 * fb / 3, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 1)

    full, part = [stage(3.0)] * 3, [stage(1.2)] * 3
    g = Group(1, 2, interleaved_total(9.0, 3.0, 4), 3.0, NO_LIMIT, (interleaved_total(3.6, 1.2, 4),), (1.2,), 3, 4)
    for s in range(1, 16):
        m = ceil_div(s, 2)
        want = CostModel.pipeline_time(full, m, part if s % 2 else None, 4)
        assert sample_time(g, s) == pytest.approx(want), s
    assert sample_time(g, 12) == pytest.approx(19.5) and sample_time(g, 10) == pytest.approx(21.0)
    assert most_samples(g, 19.5, 100) == 12 and most_samples(g, 20.9, 100) == 12
    assert most_samples(g, 18.0, 100) == 11  # 6 micro-batches, the last of one sample: 4.5 + 4 x 3 + 1.2
    assert most_samples(g, 17.0, 100) == 7   # 4, plain, the last of one sample: 9 + 2 x 3 + 1.2 (6: 17.7)
    t, ms = split_batch([(g.total, g.slowest, 2, NO_LIMIT, 3, 4)] * 2, 20)
    assert t == pytest.approx(19.5) and ms == [6, 6]
    t, ms = split_batch([(9.0, 3.0, 2, NO_LIMIT)] * 2, 20)  # the same groups without interleaving
    assert t == pytest.approx(21.0) and ms == [5, 5]
    tau, totals = split_samples([g, g], 20)
    assert tau == pytest.approx(best_by_enumeration([g, g], 20)) == pytest.approx(19.2)  # 11 samples (17.7) and 9
    assert sorted(totals) == [9, 11]
