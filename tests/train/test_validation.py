"""The validation report's arithmetic (hal/train/validation.py): medians over repeats, MAPE, bias, spread,
memory error, refused plans; no devices."""
from __future__ import annotations

import pytest

from hal.plan.plan import Pipeline, Plan, Stage
from hal.train.validation import PlanRuns, RankMemory, Run, describe, features, spread, summarise


def _mem(*pairs):
    return [RankMemory(r, f"emu:{r}", p, m) for r, (p, m) in enumerate(pairs)]


def _plans() -> list[PlanRuns]:
    return [
        # measured median 0.2 (0.19, 0.21): spread 10 %; predicted median 0.15: -25 %
        PlanRuns("a", "planner", features=("tensor parallel", "data parallel"),
                 runs=[Run(0.14, 0.19, _mem((100.0, 80.0), (None, 5.0))),
                       Run(0.16, 0.21, _mem((100.0, 80.0), (None, 5.0)))]),
        # three runs: measured median 0.5 (spread (0.6 - 0.4) / 0.5 = 40 %); predicted 0.55: +10 %
        PlanRuns("b", "random", features=("data parallel",),
                 runs=[Run(0.55, 0.4, _mem((50.0, 100.0))), Run(0.55, 0.5, _mem((50.0, 100.0))),
                       Run(0.55, 0.6, _mem((50.0, 100.0)))]),
        PlanRuns("c", "cross-kind", [], refused="exit 2: plan uses ZeRO-1"),
    ]


def test_medians_errors_bias_and_spread():
    s = summarise(_plans(), emulated=True)
    a, b = s.scored
    assert [p.name for p in s.scored] == ["a", "b"]          # the refused plan is not scored
    assert a.measured == pytest.approx(0.2) and a.predicted == pytest.approx(0.15)
    assert a.error == pytest.approx(-0.25) and b.error == pytest.approx(0.1)
    assert a.spread == pytest.approx(0.1) and b.spread == pytest.approx(0.4)
    assert s.mape == pytest.approx((0.25 + 0.1) / 2)
    assert s.mean_error == pytest.approx((-0.25 + 0.1) / 2)
    assert s.worst is a and (s.under, s.over) == (1, 1)
    assert s.median_spread == pytest.approx(0.25) and s.max_spread == pytest.approx(0.4)
    assert s.repeats == (2, 3)


def test_error_per_feature():
    groups = summarise(_plans(), emulated=True).by_feature()
    assert groups["tensor parallel"] == (1, pytest.approx(0.25), pytest.approx(-0.25))
    assert groups["no tensor parallel"] == (1, pytest.approx(0.1), pytest.approx(0.1))
    assert groups["data parallel"] == (2, pytest.approx(0.175), pytest.approx(-0.075))
    assert "no data parallel" not in groups


def test_memory_error_leaves_out_idle_ranks():
    s = summarise(_plans(), emulated=True)
    # a's rank 1 is idle (no prediction): only a's rank 0 (+25 %) and b's rank 0 (-50 %) count.
    assert [(name, rank) for name, rank, *_ in s.memory_rows] == [("a", 0), ("b", 0)]
    assert s.memory_mape == pytest.approx((0.25 + 0.5) / 2)
    assert s.memory_worst[:2] == ("b", 0)
    assert (s.memory_under, s.memory_over) == (1, 1)


def test_text_and_dict_label_emulated_devices_and_list_refused_plans():
    s = summarise(_plans(), emulated=True)
    text = s.text()
    assert "EMULATED" in text and "MAPE 17.5%" in text and "median 25.0%" in text
    assert "refused or failed: exit 2: plan uses ZeRO-1" in text
    d = s.to_dict()
    assert d["emulated"] and d["plans_scored"] == 2 and d["plans_refused"] == 1
    assert d["under_predicted"] == 1 and d["memory_mape"] == pytest.approx(0.375)
    assert d["plans"][2]["refused"] and "measured_s" not in d["plans"][2]
    assert "EMULATED" not in summarise(_plans(), emulated=False).text()


def test_nothing_ran_is_an_error_naming_the_refusals():
    with pytest.raises(ValueError, match="ZeRO-1"):
        summarise([PlanRuns("c", "x", [], refused="exit 2: plan uses ZeRO-1")], emulated=True)


def test_spread_and_describe():
    assert spread([1.0]) == 0.0 and spread([0.9, 1.0, 1.2]) == pytest.approx(0.3)
    with pytest.raises(ValueError):
        spread([])
    p = Plan("m", 8, 16, [Pipeline([Stage("emu-fast", [0], (0, 2)), Stage("emu-slow", [2], (2, 6))], 2, 3, 5),
                          Pipeline([Stage("emu-fast", [1, 3], (0, 6))], 4, 1, 3)])
    assert describe(p) == "FS0,2[0-1|2-5] 2x3=5 + F1+3[0-5] 4x1=3"
    assert features(p) == ("tensor parallel", "pipeline", "data parallel", "cross-kind pipeline", "both kinds",
                           "partial micro-batch")
    one = Plan("m", 8, 16, [Pipeline([Stage("emu-fast", [0], (0, 6))], 4, 2, 8)])
    assert features(one) == ()
