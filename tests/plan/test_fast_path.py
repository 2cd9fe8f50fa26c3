"""The search's fast path (planner tables, class summaries, predict_step) and CostModel agree: one cost model."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hal.plan.cluster import GB, Cluster, DeviceKind, Link, Node
from hal.plan.cost import CostModel, CostOptions, interleaved_total
from hal.plan.exhaustive import exhaustive_plan
from hal.plan.model import LayerSpec, ModelSpec
from hal.plan.plan import RECOMPUTE, Pipeline, Plan, Stage, Techniques
from hal.plan.placement import Part, max_pipelines, packing, place, place_parts
from hal.plan.planner import ClassConfig, NoPlanFits, PlannerOptions, _StageTables, build_plan, plan, predict_step
from hal.plan.stage_split import stage_layout, summaries

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def clusters(draw) -> Cluster:
    kinds, nodes, first = {}, [], 0
    for c in range(draw(st.integers(1, 2))):
        name = f"K{c}"
        kinds[name] = DeviceKind(name, draw(st.floats(1e11, 1e15)), draw(st.floats(0.05, 80)) * GB,
                                 draw(st.floats(1e11, 3e12)), Link(100 * GB, 1e-6),
                                 efficiency=draw(st.floats(0.1, 1.0)))
        per_node = draw(st.sampled_from([1, 2, 4, 8]))
        intra = Link(draw(st.floats(10, 900)) * GB, draw(st.floats(0, 1e-5)))
        inter = Link(draw(st.floats(1, 100)) * GB, draw(st.floats(0, 1e-4)))
        for _ in range(draw(st.integers(1, 3))):
            nodes.append(Node(f"n{len(nodes)}", name, per_node, intra, inter, first))
            first += per_node
    cross = draw(st.none() | st.builds(Link, st.floats(1e9, 1e11), st.floats(0, 1e-4)))
    return Cluster("random", kinds, nodes, cross)


@st.composite
def models(draw) -> ModelSpec:
    layers = [LayerSpec(f"l{i}", "block", draw(st.integers(0, 10 ** 8)), draw(st.floats(1e6 if i == 0 else 0, 1e12)),
                        draw(st.floats(0, 1e8)), draw(st.sampled_from([0.0, 1e3, 1e6, 1e7])),
                        draw(st.sampled_from([0.0, 1e6])))
              for i in range(draw(st.integers(2, 6)))]
    return ModelSpec("random", layers, 128, draw(st.sampled_from([2, 4])))


techniques = st.builds(Techniques, st.integers(0, 3), st.sampled_from(RECOMPUTE), st.booleans(),
                       st.sampled_from([1, 2]), st.booleans())


@st.composite
def cases(draw):
    """A cluster, a model, techniques (none in half the cases), and per device class (or some of them) a
    configuration and a micro-batch count."""
    cluster, model = draw(clusters()), draw(models())
    cm = CostModel(cluster, model, techniques=draw(st.just(Techniques()) | techniques))
    n = cm.n_layers
    combo, ms = [], []
    classes = cluster.device_classes()
    for cls in draw(st.lists(st.sampled_from(classes), min_size=1, max_size=len(classes), unique_by=lambda c: c.name)):
        tp = draw(st.sampled_from([t for t in (1, 2, 4, 8) if cls.devices_per_node % t == 0]))
        pp = draw(st.integers(1, min(n, cls.count // tp)))
        bounds = (0, *sorted(draw(st.lists(st.integers(1, n - 1), min_size=pp - 1, max_size=pp - 1, unique=True))), n)
        mbs, m = draw(st.integers(1, 4)), draw(st.integers(1, 6))
        dp = draw(st.integers(1, max_pipelines(cls, tp, pp)))
        s = summaries(cm, (Part(cls, tp, pp),), mbs, np.array([bounds]), m, shards=dp)
        summary = (s.total[0], s.slowest[0], s.grad_bytes[0], s.optimizer[0], s.peak_memory[0])
        combo.append(ClassConfig(cls, tp, pp, mbs, dp, bounds, *map(float, summary), *packing(cls, tp, pp, dp),
                                 min_backward=float(s.min_backward[0]), v=cm.techniques.virtual_stages))
        ms.append(m)
    return cm, combo, ms


def _first_stages(p: Plan, combo: list[ClassConfig], c: ClassConfig) -> list[Stage]:
    """The stages of the first pipeline of group `c` of `combo` in the plan `p` built from it."""
    first = sum(g.dp for g in combo[:combo.index(c)])
    return p.pipelines[first].stages


def _aligned(c: ClassConfig) -> bool:
    """Every pipeline of the class sits on the node boundaries as its first does."""
    size = c.tp * c.pp
    return size <= c.cls.devices_per_node or size % c.cls.devices_per_node == 0


@SETTINGS
@given(cases())
def test_fast_path_agrees_with_cost_model_on_random_plans(case):
    cm, combo, ms = case
    batch = sum(c.dp * c.mbs * m for c, m in zip(combo, ms))
    p = build_plan(cm, combo, ms, batch)
    assert p is not None and sum(q.samples for q in p.pipelines) == batch  # full micro-batches, nothing trimmed
    est = cm.evaluate(p)
    first = 0
    for c, m in zip(combo, ms):
        # The summary bounds every pipeline of the group (the largest sum and slowest stage among them) and is
        # the first one's when the group's pipelines sit on the node boundaries alike.
        group = est.stages[first:first + c.dp]
        slowest = [max(s.F + s.B for s in st) for st in group]
        totals = [interleaved_total(sum(s.F + s.B for s in st), w, p.techniques.virtual_stages)
                  for st, w in zip(group, slowest)]
        assert c.total >= max(totals) * (1 - 1e-12) and c.slowest >= max(slowest) * (1 - 1e-12)
        assert c.pipeline_time(m) >= max(est.pipeline_times[first:first + c.dp]) * (1 - 1e-12)
        if _aligned(c):
            assert c.total == pytest.approx(totals[0], rel=1e-12)
            assert c.slowest == pytest.approx(slowest[0], rel=1e-12)
            assert c.pipeline_time(m) == pytest.approx(est.pipeline_times[first], rel=1e-12)
        stages = group[0]
        # ZeRO shards over the group's pipelines: the plan's replicas of a stage, unless another group holds
        # the same layers on the same kind and tp.
        if p.techniques.zero == 0 or all(CostModel.stage_replicas(p)[(st.kind, st.layers, st.tp)] == c.dp
                                         for st in p.pipelines[first].stages):
            assert c.peak_memory == pytest.approx(max(s.memory for s in stages), rel=1e-12)
            assert c.optimizer == pytest.approx(max(s.optimizer for s in stages), rel=1e-12)
        assert c.grad_bytes == pytest.approx(max(s.grad_bytes for s in stages), rel=1e-12)
        first += c.dp
    zero_groups = p.techniques.zero == 0 or all(v == c.dp for c in combo for v in [
        CostModel.stage_replicas(p)[(st.kind, st.layers, st.tp)] for st in _first_stages(p, combo, c)])
    if all(_aligned(c) for c in combo) and zero_groups:
        assert predict_step(cm, combo, ms) == pytest.approx(est.step_time, rel=1e-12)


@SETTINGS
@given(clusters(), models(), st.integers(1, 4), st.integers(1, 6), st.data())
def test_stage_tables_agree_with_cost_model(cluster, model, mbs, m, data):
    """The DP's bottleneck is CostModel's slowest stage for the split it returns, every stage of it fits with
    CostModel's in-flight count, and when it finds none, no split fits."""
    cm = CostModel(cluster, model)
    cls = data.draw(st.sampled_from(cluster.device_classes()))
    tp = data.draw(st.sampled_from([t for t in (1, 2, 4, 8) if cls.devices_per_node % t == 0]))
    pp = data.draw(st.integers(1, min(cm.n_layers, cls.devices_per_node // tp) or 1))
    if tp * pp > cls.devices_per_node:
        return  # spanning pipelines: the DP costs every boundary with the inter-node link (an approximation)
    solved = _StageTables(cm, cls, tp, mbs, cls.intra, m).solve(pp)
    devs = place(cluster, cls, tp, pp, 1)[0]

    def costs(bounds):
        stages = [Stage(cls.kind, ids, (bounds[s], bounds[s + 1])) for s, ids in enumerate(devs)]
        return cm.stage_costs(Pipeline(stages, mbs, m, m * mbs))

    if solved is None:
        for cuts in itertools.combinations(range(1, cm.n_layers), pp - 1):
            assert not all(s.fits for s in costs((0, *cuts, cm.n_layers)))
        return
    bottleneck, bounds = solved
    sc = costs(bounds)
    assert all(s.fits for s in sc)
    assert bottleneck == pytest.approx(max(s.F + s.B for s in sc), rel=1e-12)


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 10 ** 9), st.just(0.0) | st.floats(1, 1e9), st.integers(1, 8), st.integers(1, 8),
       st.floats(1e3, 1e12))
def test_max_in_flight_is_the_inverse_of_stage_memory(params, act, tp, mbs, capacity):
    layer = LayerSpec("l", "block", params, 1e9, act, 0.0)
    cm = CostModel(Cluster("c", {}, []), ModelSpec("m", [layer], 1, 2))
    k = int(cm.max_in_flight(0, 1, tp, mbs, capacity))
    if k >= 0:
        assert cm.stage_memory(0, 1, tp, mbs, k) <= capacity
    if act > 0:
        assert cm.stage_memory(0, 1, tp, mbs, k + 1) > capacity


def test_fewer_micro_batches_than_stages_hold_fewer_in_flight():
    """One micro-batch through two stages: stage 0 holds one micro-batch, not two (CostModel's min(p - i, m)).
    The search used to charge p - i and found no plan here."""
    kind = DeviceKind("K", 1e14, 1.0 * GB, 1e12, Link(100 * GB, 1e-6))
    cluster = Cluster("two", {"K": kind}, [Node("n", "K", 2, Link(100 * GB, 1e-6), Link(10 * GB, 1e-5), 0)])
    # Per layer 25M parameters (400 MB of state) and 300 MB of activations per sample; 0.92 GB usable:
    # one layer with one micro-batch fits (700 MB), with two it does not (1 GB), nor do both layers (800 MB + ...).
    model = ModelSpec("m", [LayerSpec(f"l{i}", "block", 25_000_000, 1e12, 3e8, 1e6) for i in range(2)], 128, 2)
    options = PlannerOptions(micro_batch_sizes=(1,), tp_degrees=(1,))
    r = plan(cluster, model, 1, options)
    assert r.estimate.fits and [len(q.stages) for q in r.plan.pipelines] == [2]
    _, ref, _ = exhaustive_plan(cluster, model, 1, options)
    assert r.estimate.step_time == pytest.approx(ref.step_time)
    # Cost model and planner share the in-flight count.
    assert [s.in_flight for s in r.estimate.stages[0]] == [1, 1]
    with pytest.raises(NoPlanFits):  # two micro-batches: stage 0 holds both, nothing fits
        plan(cluster, model, 2, options)


@SETTINGS
@given(clusters(), models(), st.integers(1, 4), st.integers(1, 6), st.data())
def test_stage_summaries_agree_with_cost_model_across_kinds(cluster, model, mbs, m, data):
    """stage_split.summaries (what the search knows of a pipeline, same-kind or over two classes) is
    CostModel.stage_costs of the group's first pipeline: F + B at the micro-batch and at every partial size,
    gradient shard, optimizer, and max_m: the pipeline fits with m micro-batches exactly when m <= max_m."""
    cm = CostModel(cluster, model)
    classes = cluster.device_classes()
    picked = data.draw(st.lists(st.sampled_from(classes), min_size=1, max_size=2, unique_by=lambda c: c.name))
    parts = []
    for cls in picked:
        tp = data.draw(st.sampled_from([t for t in (1, 2, 4, 8) if cls.devices_per_node % t == 0]))
        parts.append(Part(cls, tp, data.draw(st.integers(1, cls.count // tp))))
    p = sum(q.pp for q in parts)
    if p > cm.n_layers:
        return
    cuts = sorted(data.draw(st.lists(st.integers(1, cm.n_layers - 1), min_size=p - 1, max_size=p - 1, unique=True)))
    bounds = (0, *cuts, cm.n_layers)
    s = summaries(cm, tuple(parts), mbs, np.array([bounds]), m)
    kinds = [q.cls.kind for q in parts for _ in range(q.pp)]
    stages = [Stage(k, ids, (bounds[i], bounds[i + 1]))
              for i, (k, ids) in enumerate(zip(kinds, place_parts(cluster, tuple(parts), 1)[0]))]
    sc = cm.stage_costs(Pipeline(stages, mbs, m, m * mbs))
    assert s.grad_bytes[0] == pytest.approx(max(c.grad_bytes for c in sc), rel=1e-12)
    assert s.optimizer[0] == pytest.approx(max(c.optimizer for c in sc), rel=1e-12)
    assert (m <= s.max_m[0]) == all(c.fits for c in sc)
    aligned = all(q.tp * q.pp <= q.cls.devices_per_node or q.tp * q.pp % q.cls.devices_per_node == 0 for q in parts)
    if not aligned:  # the largest over the group's pipelines: at least the first's
        assert s.total[0] >= sum(c.F + c.B for c in sc) * (1 - 1e-12)
        assert s.slowest[0] >= max(c.F + c.B for c in sc) * (1 - 1e-12)
        return
    assert s.total[0] == pytest.approx(sum(c.F + c.B for c in sc), rel=1e-12)
    assert s.slowest[0] == pytest.approx(max(c.F + c.B for c in sc), rel=1e-12)
    for r in range(1, mbs):
        part = cm.stage_costs(Pipeline(stages, mbs, 1, r), r)
        assert s.tail_total[0][r - 1] == pytest.approx(sum(c.F + c.B for c in part), rel=1e-12)
        assert s.tail_slowest[0][r - 1] == pytest.approx(max(c.F + c.B for c in part), rel=1e-12)


@SETTINGS
@given(clusters(), st.data())
def test_stage_layout_has_the_links_of_every_pipeline(cluster, data):
    """stage_layout's distinct boundary links are those CostModel.link_between gives for the placed pipelines
    (place_parts), for same-kind and cross-kind groups, packed in nodes or spanning them."""
    model = ModelSpec("m", [LayerSpec(f"l{i}", "block", 1, 1e9, 1.0, 1.0) for i in range(16)], 8, 2)
    cm = CostModel(cluster, model)
    picked = data.draw(st.lists(st.sampled_from(cluster.device_classes()), min_size=1, max_size=2,
                                unique_by=lambda c: c.name))
    parts = []
    for cls in picked:
        tp = data.draw(st.sampled_from([t for t in (1, 2, 4, 8) if cls.devices_per_node % t == 0]))
        parts.append(Part(cls, tp, data.draw(st.integers(1, cls.count // tp))))
    parts = tuple(parts)
    _, links = stage_layout(cm, parts)
    got = {(tuple(l.tolist()), tuple(b.tolist())) for _, l, b in links}
    want = set()
    for q in place_parts(cluster, parts, min(max_pipelines(p.cls, p.tp, p.pp) for p in parts)):
        ls = [cm.link_between(a[0], b[0]) for a, b in zip(q, q[1:])]
        want.add((tuple(l.latency for l in ls), tuple(l.bandwidth for l in ls)))
    assert got == want
    first = place_parts(cluster, parts, 1)[0]
    assert links[0][0].tolist() == [min(len(a), len(b)) for a, b in zip(first, first[1:])]
