"""The event-by-event simulator against the cost model's closed form."""
from __future__ import annotations

import pytest

from hal.plan.cluster import load_cluster
from hal.plan.cost import CostModel
from hal.plan.model import get_model
from hal.plan.plan import Pipeline, Plan, Stage
from hal.plan.planner import plan
from hal.plan.simulate import one_f_one_b_order, simulate
from tests.plan.test_cost import toy_cluster, toy_model


def test_one_f_one_b_order():
    assert one_f_one_b_order(3, 0, 4) == [("F", 0), ("F", 1), ("F", 2), ("B", 0), ("F", 3), ("B", 1), ("B", 2),
                                          ("B", 3)]
    assert one_f_one_b_order(3, 2, 2) == [("F", 0), ("B", 0), ("F", 1), ("B", 1)]
    assert one_f_one_b_order(4, 0, 2) == [("F", 0), ("F", 1), ("B", 0), ("B", 1)]


@pytest.mark.parametrize("p, m", [(1, 1), (1, 5), (2, 4), (4, 4), (4, 9), (4, 2)])
def test_simulator_equals_closed_form_without_overlap(p, m):
    """Equal stages (no sends: zero-byte activations), so the closed form is exact."""
    c = toy_cluster(n=4, per_node=4)
    model = toy_model(L=4, out=0.0)
    cm = CostModel(c, model)
    per = 4 // p
    stages = [Stage("K", [i], (i * per, (i + 1) * per)) for i in range(p)]
    pl = Plan("toy", m, 128, [Pipeline(stages, 1, m, m)])
    est, sim = cm.evaluate(pl), simulate(pl, cm)
    assert sim.step_time == pytest.approx(est.step_time, rel=1e-12)
    assert sim.bubble_fraction == pytest.approx(est.bubble_fraction, rel=1e-9, abs=1e-12)
    assert sim.step_time == pytest.approx(est.optimizer_time + (m + p - 1) * 3 * 1e9 * per / 5e11)


def test_simulator_equals_closed_form_with_sends_and_allreduce():
    """Sends block the sender (no overlap): with the bottleneck on the last stage the closed form is exact."""
    c = toy_cluster(n=4, per_node=2)
    cm = CostModel(c, toy_model(L=5))
    pipes = [Pipeline([Stage("K", [2 * j], (0, 2)), Stage("K", [2 * j + 1], (2, 5))], 1, 6, 6) for j in range(2)]
    pl = Plan("toy", 12, 128, pipes)
    est, sim = cm.evaluate(pl), simulate(pl, cm)
    assert est.allreduce_time > 0
    assert sim.allreduce_time == pytest.approx(est.allreduce_time, rel=1e-12)
    assert sim.step_time == pytest.approx(est.step_time, rel=1e-12)


def test_simulator_close_to_closed_form_on_planned_heterogeneous_plan():
    c, m = load_cluster("mixed-256"), get_model("llama-2-70b")
    r = plan(c, m, 1024)
    sim = simulate(r.plan, CostModel(c, m), record=False)
    assert sim.step_time <= r.estimate.step_time * (1 + 1e-9)
    assert sim.step_time == pytest.approx(r.estimate.step_time, rel=0.02)
    assert 0 <= sim.bubble_fraction < 0.5
    assert all(0 < u <= 1 for u in sim.utilisation.values())
