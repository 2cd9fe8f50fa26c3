"""The memory model and the cost model's formulas against hand-computed cases."""
from __future__ import annotations

import pytest

from hal.plan.cluster import GB, Cluster, DeviceKind, Link, Node
from hal.plan.cost import CostModel, CostOptions, ring_allreduce, ring_link
from hal.plan.model import LayerSpec, ModelSpec, get_model, param_state_bytes
from hal.plan.plan import Pipeline, Plan, Stage


def toy_cluster(n=4, per_node=2, mem_gb=10.0, flops=1e12) -> Cluster:
    kind = DeviceKind("K", flops, mem_gb * GB, 1e12, Link(100 * GB, 1e-6), efficiency=0.5)
    nodes = [Node(f"n{i}", "K", per_node, Link(100 * GB, 1e-6), Link(10 * GB, 1e-5), i * per_node)
             for i in range(n // per_node)]
    return Cluster("toy", {"K": kind}, nodes)


def toy_model(L=4, params=1_000_000, act=1e6, out=1e5, flops=1e9) -> ModelSpec:
    return ModelSpec("toy", [LayerSpec(f"l{i}", "block", params, flops, act, out) for i in range(L)], 128, 2)


def test_param_state_bytes_formula():
    assert param_state_bytes(2) == 16  # bf16 weights 2 + grads 2 + fp32 master 4 + Adam m, v 8
    assert param_state_bytes(4) == 16  # fp32: weights 4 + grads 4 + m, v 8


def test_llama_parameter_counts():
    assert get_model("llama-2-7b").params == pytest.approx(6.74e9, rel=0.01)
    assert get_model("llama-2-13b").params == pytest.approx(13.0e9, rel=0.01)
    assert get_model("llama-2-70b").params == pytest.approx(69.0e9, rel=0.01)
    assert get_model("gpt3-175b").params == pytest.approx(175e9, rel=0.02)
    names = [l.kind for l in get_model("tiny").layers]
    assert names[0] == "embedding" and names[-1] == "head"


def test_memory_per_stage_by_hand():
    c, m = toy_cluster(), toy_model()
    cm = CostModel(c, m, CostOptions(usable_memory_fraction=1.0))
    # 2 stages, tp 1, micro-batch 2, 4 micro-batches: stage 0 holds 2 in flight, stage 1 holds 1.
    pipe = Pipeline([Stage("K", [0], (0, 1)), Stage("K", [1], (1, 4))], 2, 4, 8)
    s0, s1 = cm.stage_costs(pipe)
    assert s0.memory == 1_000_000 * 16 + 2 * 2 * 1e6
    assert s1.memory == 3_000_000 * 16 + 1 * 2 * 3e6
    assert s0.in_flight == 2 and s1.in_flight == 1
    # Fewer micro-batches than stages: at most m in flight.
    s0, _ = cm.stage_costs(Pipeline(pipe.stages, 2, 1, 2))
    assert s0.memory == 1_000_000 * 16 + 1 * 2 * 1e6
    # Tensor parallel 2 splits parameters and activations.
    (s,) = cm.stage_costs(Pipeline([Stage("K", [0, 1], (0, 4))], 1, 3, 3))
    assert s.memory == 4_000_000 * 16 / 2 + 1 * 1 * 4e6 / 2
    assert s.capacity == 10 * GB


def test_step_time_by_hand():
    c, m = toy_cluster(), toy_model()
    cm = CostModel(c, m, CostOptions(usable_memory_fraction=1.0))
    rate = 1e12 * 0.5
    pipe = Pipeline([Stage("K", [0], (0, 2)), Stage("K", [1], (2, 4))], 1, 4, 4)
    est = cm.evaluate(Plan("toy", 4, 128, [pipe]))
    f = 2 * 1e9 / rate                       # two layers forward, one sample
    send = 1e-6 + 1e5 / (100 * GB)           # same node: intra link
    F0, B0 = f + send, 2 * f
    F1, B1 = f, 2 * f + send
    assert est.pipeline_times[0] == pytest.approx((F0 + B0 + F1 + B1) + 3 * max(F0 + B0, F1 + B1))
    opt = 2e6 * 28 / 1e12
    assert est.optimizer_time == pytest.approx(opt)
    assert est.allreduce_time == 0
    assert est.step_time == pytest.approx(est.pipeline_times[0] + opt)


def test_partial_last_micro_batch_is_charged_at_its_size():
    from hal.plan.simulate import simulate
    c, m = toy_cluster(), toy_model()
    cm = CostModel(c, m, CostOptions(usable_memory_fraction=1.0))
    rate = 1e12 * 0.5
    # One micro-batch of size 4 holding 2 samples: charged as 2 samples, not 4.
    one = Pipeline([Stage("K", [0], (0, 4))], 4, 1, 2)
    assert cm.tail_size(one) == 2
    est = cm.evaluate(Plan("toy", 2, 128, [one]))
    assert est.pipeline_times[0] == pytest.approx(3 * 4 * 1e9 * 2 / rate)
    assert simulate(Plan("toy", 2, 128, [one]), cm).step_time == pytest.approx(est.step_time)
    # Micro-batches of 2, 5 samples: two full, the last one of 1 takes one paced slot at its own size.
    pipe = Pipeline([Stage("K", [0], (0, 4))], 2, 3, 5)
    full = 3 * 4 * 1e9 * 2 / rate
    assert cm.evaluate(Plan("toy", 5, 128, [pipe])).pipeline_times[0] == pytest.approx(2 * full + full / 2)
    # Full last micro-batch: unchanged.
    assert cm.tail_costs(Pipeline([Stage("K", [0], (0, 4))], 2, 3, 6)) is None


def test_allreduce_hierarchical_by_hand():
    c, m = toy_cluster(n=4, per_node=2), toy_model()
    cm = CostModel(c, m)
    # 4 pipelines of one device each: 2 per node, 2 nodes.
    pipes = [Pipeline([Stage("K", [d], (0, 4))], 1, 1, 1) for d in range(4)]
    est = cm.evaluate(Plan("toy", 4, 128, pipes))
    grad = 4e6 * 2
    intra, inter = Link(100 * GB, 1e-6), Link(10 * GB, 1e-5)
    assert est.allreduce_time == pytest.approx(ring_allreduce(2, grad, intra) + ring_allreduce(2, grad / 2, inter))
    assert ring_allreduce(4, 1e9, inter) == pytest.approx(2 * 3 / 4 * 1e9 / (10 * GB) + 6 * 1e-5)
    # Pipelines that span nodes: a flat ring over the inter-node link.
    pipes = [Pipeline([Stage("K", [1], (0, 2)), Stage("K", [2], (2, 4))], 1, 1, 1),
             Pipeline([Stage("K", [3], (0, 2)), Stage("K", [0], (2, 4))], 1, 1, 1)]
    est = cm.evaluate(Plan("toy", 2, 128, pipes))
    assert est.allreduce_time == pytest.approx(ring_allreduce(2, 2e6 * 2, inter))


def test_does_not_fit_reports_worst_stage():
    c, m = toy_cluster(mem_gb=0.01), toy_model()
    est = CostModel(c, m).evaluate(Plan("toy", 1, 128, [Pipeline([Stage("K", [0], (0, 4))], 1, 1, 1)]))
    assert not est.fits
    over, kind, need, has = est.shortfall
    assert kind == "K" and need == 4e6 * 16 + 4e6 and has == 0.01 * GB * 0.92 and over == need - has


def test_ring_link_is_the_inverse_of_ring_allreduce():
    link = Link(2.5 * GB, 1.7e-3)
    for n in (2, 4, 7):
        small, large = 256, 4 << 20
        fitted = ring_link(n, (small, ring_allreduce(n, small, link)), (large, ring_allreduce(n, large, link)))
        assert fitted.bandwidth == pytest.approx(link.bandwidth, rel=1e-9)
        assert fitted.latency == pytest.approx(link.latency, rel=1e-9)
    # Noise: a large all-reduce measured no slower than the small one gives a finite, positive link.
    noisy = ring_link(4, (256, 2e-3), (4 << 20, 1.9e-3))
    assert noisy.bandwidth > 0 and noisy.latency >= 0
    for bad in ((1, (256, 1e-3), (1024, 2e-3)), (4, (1024, 1e-3), (256, 2e-3)), (4, (256, 0.0), (1024, 2e-3))):
        with pytest.raises(ValueError, match="ring_link"):
            ring_link(*bad)


def test_a_measured_tensor_parallel_shard_replaces_the_formula():
    """measured_tp[kind][tp][mbs] (the shard's forward and backward with its all-reduces) stands for
    measured / tp + the ring's time; other degrees, and kinds without it, keep the formula."""
    link = Link(10 * GB, 1e-5)
    kind = DeviceKind("K", 1e12, 80 * GB, 1e12, link, efficiency=1.0)
    layer = LayerSpec("l", "block", 1000, 1e9, 0.0, 1e3, tp_comm_bytes=1e6, tp_split=True,
                      measured={"K": {2: (0.010, 0.020)}}, measured_tp={"K": {2: {2: (0.008, 0.013)}}})
    cm = CostModel(Cluster("c", {"K": kind}, [Node("n", "K", 4, link, link, 0)]), ModelSpec("m", [layer], 1, 4))
    f, b = cm.layer_times(kind, 2, 2, link)
    assert (f[1], b[1]) == pytest.approx((0.008, 0.013))
    f, b = cm.layer_times(kind, 4, 2, link)  # scaled from the nearest measured size, as `measured` is
    assert (f[1], b[1]) == pytest.approx((0.016, 0.026))
    comm = ring_allreduce(4, 1e6 * 2, link)
    f, b = cm.layer_times(kind, 2, 4, link)  # no measurement at tp 4: the formula
    assert (f[1], b[1]) == pytest.approx((0.010 / 4 + comm, 0.020 / 4 + comm))
    # The JSON form round-trips and is checked like the rest.
    d = ModelSpec("m", [layer], 1, 4).to_dict()
    assert ModelSpec.from_dict(d).layers[0].measured_tp == {"K": {2: {2: (0.008, 0.013)}}}
    d["layers"][0]["measured_tp"] = {"K": {"1": {"2": [0.1, 0.1]}}}
    with pytest.raises(ValueError, match=r"measured_tp\.K\.1"):
        ModelSpec.from_dict(d)
