"""The batch split: split_samples is the best split of the batch into group totals (against every split),
and sample_time is CostModel's pipeline time with a partial last micro-batch."""
from __future__ import annotations

import itertools
import random
from dataclasses import dataclass

import pytest

from hal.plan.batch_split import most_samples, sample_time, split_samples
from hal.plan.cost import CostModel, StageCost, ceil_div
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


def random_group(rng: random.Random) -> Group:
    mbs, p = rng.choice([1, 2, 3, 4]), rng.randint(1, 4)
    per_sample = [rng.uniform(0.1, 2.0) for _ in range(p)]  # F + B of one sample per stage, plus a fixed cost
    fixed = [rng.uniform(0.0, 0.3) for _ in range(p)]
    stage = [[f + r * w for f, w in zip(fixed, per_sample)] for r in range(1, mbs + 1)]
    return Group(rng.randint(1, 3), mbs, sum(stage[-1]), max(stage[-1]), rng.choice([1, 2, 3, NO_LIMIT]),
                 tuple(sum(s) for s in stage[:-1]), tuple(max(s) for s in stage[:-1]))


def best_by_enumeration(groups: list[Group], batch: int) -> float | None:
    best = None
    for totals in itertools.product(*[range(g.dp, batch + 1) for g in groups]):
        if sum(totals) != batch:
            continue
        per = [ceil_div(t, g.dp) for g, t in zip(groups, totals)]
        if any(s > g.max_m * g.mbs for g, s in zip(groups, per)):
            continue
        t = max(sample_time(g, s) for g, s in zip(groups, per))
        best = t if best is None else min(best, t)
    return best


@pytest.mark.parametrize("seed", range(40))
def test_split_samples_is_the_best_split_into_group_totals(seed):
    rng = random.Random(seed)
    groups = [random_group(rng) for _ in range(rng.randint(1, 3))]
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
    assert tau == pytest.approx(max(sample_time(g, ceil_div(t, g.dp)) for g, t in zip(groups, totals)), rel=1e-12)


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
