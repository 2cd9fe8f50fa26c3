"""`hal plan --explain`: every plan's step cut into the cost model's terms, the runners-up against the chosen one."""
from __future__ import annotations

import pytest

from hal.plan.cluster import load_cluster
from hal.plan.cost import CostModel
from hal.plan.explain import TERMS, breakdown, describe, explain
from hal.plan.model import get_model
from hal.plan.plan import Pipeline, Plan, Stage
from hal.plan.planner import plan
from tests.plan.test_cli import run_cli


def test_terms_add_up_to_the_step_and_runners_up_are_slower():
    cluster, model = load_cluster("small-8"), get_model("llama-2-7b")
    cm = CostModel(cluster, model)
    r = plan(cluster, model, 63)  # odd: some pipeline ends on a partial micro-batch when micro-batches are > 1
    assert len(r.runners_up) >= 2
    steps = [r.estimate.step_time] + [e.step_time for _, e in r.runners_up]
    assert steps == sorted(steps)
    for p, est in [(r.plan, r.estimate), *r.runners_up]:
        b = breakdown(cm, p, est)
        assert b.fill + b.steady + b.allreduce + b.optimizer == pytest.approx(est.step_time, rel=1e-12)
        assert b.fill > 0 and b.steady >= 0 and b.pipelines == len(p.pipelines)


def test_a_lone_partial_micro_batch_is_all_fill():
    cluster, model = load_cluster("small-8"), get_model("tiny")
    cm = CostModel(cluster, model)
    n = len(model.layers)
    p = Plan(model.name, 1, model.seq_len, [Pipeline([Stage("A100", [0], (0, 2)), Stage("A100", [1], (2, n))], 2, 1, 1)])
    est = cm.evaluate(p)
    b = breakdown(cm, p, est)
    assert b.steady == 0 and b.fill == pytest.approx(est.pipeline_times[0], rel=1e-12)
    assert sum(s.F + s.B for s in cm.tail_costs(p.pipelines[0])) == pytest.approx(b.fill, rel=1e-12)
    assert describe(p) == "1 x (A100:tp1x2 [2/%d]) mb2, 1 samples" % (n - 2)


def test_explain_names_the_terms_each_runner_up_pays_more_for():
    cluster, model = load_cluster("small-8"), get_model("llama-2-7b")
    cm = CostModel(cluster, model)
    r = plan(cluster, model, 64)
    lines = explain(cm, (r.plan, r.estimate), r.runners_up)
    best = breakdown(cm, r.plan, r.estimate)
    assert lines[0] == f"chosen: {best.label}"
    for k, (p, est) in enumerate(r.runners_up, 1):
        b = breakdown(cm, p, est)
        at = lines.index(f"runner-up {k}: {b.label}")
        why = lines[at + 3]
        deltas = {t: getattr(b, t) - getattr(best, t) for t in TERMS}
        worst = max(deltas, key=deltas.get)
        assert f"({b.step / best.step - 1:.1%}) slower" in why
        if deltas[worst] > 0:  # the term it loses most on comes first
            assert why.split("pays more for ")[1].startswith(TERMS[worst] + " +")
        for t, d in deltas.items():
            assert (f"{TERMS[t]} +" in why) == (d > 0) and (f"{TERMS[t]} -" in why) == (d < 0)


def test_cli_explain_prints_the_breakdown_only_when_asked():
    args = ("--cluster", "small-8", "--model", "llama-2-7b", "--global-batch", "64", "--no-compare")
    plain, explained = run_cli(*args), run_cli(*args, "--explain")
    assert plain.returncode == 0 and explained.returncode == 0, explained.stderr
    assert "why this plan" not in plain.stdout and "runner-up" not in plain.stdout
    assert "why this plan" in explained.stdout
    assert "  chosen: " in explained.stdout and "  runner-up 1: " in explained.stdout and "slower: pays more for" in explained.stdout
