"""Each technique's cost-model term against a closed-form case and its published formula (plan.Techniques,
cost.py): ring all-reduce, mixed-precision Adam and ZeRO's partitions (Rajbhandari et al. 2020), activation
memory with tensor and sequence parallelism and recomputation (Korthikanti et al. 2022), the 1F1B bubble and
interleaving (Narayanan et al. 2021), the overlapped gradient sync; the search over them (llama-2-7b on 8 A100)."""
from __future__ import annotations

import json
from dataclasses import replace

import pytest

from hal.plan.cluster import Link, parse_cluster
from hal.plan.cost import (CostModel, activation_bytes, bubble_fraction, interleaved_in_flight, interleaved_total,
                           ring_allreduce, ring_half, zero_bytes_per_param, zero_sync_time)
from hal.plan.model import LayerSpec, ModelSpec, get_model, param_state_bytes
from hal.plan.plan import Pipeline, Plan, Stage, Techniques
from hal.plan.planner import ALL_TECHNIQUES, RUNTIME, PlannerOptions, TechniqueSpace, plan

GB = 1e9


def test_ring_all_reduce_is_2_n_minus_1_over_n_of_the_bytes_plus_2_n_minus_1_latencies():
    link = Link(100 * GB, 10e-6)
    assert ring_allreduce(8, 1 * GB, link) == pytest.approx(2 * 7 / 8 * 1 * GB / (100 * GB) + 2 * 7 * 10e-6)
    assert ring_half(8, 1 * GB, link) == pytest.approx(ring_allreduce(8, 1 * GB, link) / 2)  # reduce-scatter
    assert ring_allreduce(1, 1 * GB, link) == 0.0


def test_mixed_precision_adam_holds_16_bytes_per_parameter_and_zero_partitions_it_as_the_paper_does():
    """ZeRO paper, section 5 / figure 1: a 7.5 B model on 64 GPUs holds 120 GB per GPU without ZeRO, 31.4 GB
    with stage 1 (P_os), 16.6 GB with stage 2 (P_os+g) and 1.9 GB with stage 3 (P_os+g+p)."""
    assert param_state_bytes(2) == 16 and param_state_bytes(4) == 16
    psi = 7.5e9
    got = [psi * zero_bytes_per_param(16, 2, z, 64) / GB for z in range(4)]
    assert [round(g, 1) for g in got] == [120.0, 31.4, 16.6, 1.9]
    # The cost model charges the same per device for one 7.5 B layer on one of 64 replicas.
    model = ModelSpec("7.5b", [LayerSpec("w", "block", int(psi), 1e12, 0.0, 0.0)], 1)
    cluster = parse_cluster("name: one\nnodes:\n  - {kind: H100, devices: 1}\n")
    for z in range(4):
        cm = CostModel(cluster, model, techniques=Techniques(zero=z))
        assert float(cm.param_memory(0, 1, 1, shards=64)) / GB == pytest.approx(got[z])


def test_zero_sync_moves_an_all_reduce_for_stages_1_and_2_and_half_as_much_again_for_stage_3():
    """ZeRO paper, section 7: stages 1 and 2 reduce-scatter the gradients and all-gather the updated weights,
    the volume of an all-reduce; stage 3 all-gathers the weights in the forward and in the backward too: 1.5x.
    With m micro-batches stage 2 reduce-scatters each one's gradients and stage 3 gathers per micro-batch."""
    R = 2.0
    assert [zero_sync_time(z, R, 0.0, 1) for z in range(4)] == [R, R, R, 1.5 * R]
    assert zero_sync_time(2, R, 0.0, 4) == 4 * R / 2 + R / 2
    assert zero_sync_time(3, R, 0.0, 4) == 4 * 1.5 * R
    # Overlap hides a reduction up to the window; an all-gather after the optimizer is never hidden.
    assert zero_sync_time(0, R, 0.5, 1) == R - 0.5 and zero_sync_time(0, R, 5.0, 1) == 0.0
    assert zero_sync_time(1, R, 5.0, 1) == R / 2


def korthikanti_layer(s: int, h: int, a: int) -> LayerSpec:
    """A transformer layer (per sample, 16-bit, with dropout) carrying Korthikanti et al.'s activation terms:
    34sh + 5as^2 kept, of which 10sh left whole by tensor parallelism alone, 5as^2 the attention's that
    selective recomputation drops, 2sh the input full recomputation keeps."""
    return LayerSpec("layer", "block", 12 * h * h, 24.0 * s * h * h, 34.0 * s * h + 5.0 * a * s * s, 2.0 * s * h,
                     act_replicated_bytes=10.0 * s * h, act_selective_bytes=5.0 * a * s * s, input_bytes=2.0 * s * h)


# The GPT-3 175B, 530B and 1T configurations of Korthikanti et al. 2022 (s 2048, h, a), at their t = 8.
MODELS = {"175B": (2048, 12288, 96), "530B": (2048, 20480, 128), "1T": (2048, 25600, 160)}


@pytest.mark.parametrize("name", MODELS)
def test_activation_memory_per_layer_follows_korthikanti_et_al(name):
    s, h, a = MODELS[name]
    sbh, t = s * h, 8
    # Table 2 of the paper, per layer and sample (b = 1), bytes.
    assert activation_bytes(s, 1, h, a) == pytest.approx(sbh * (34 + 5 * a * s / h))
    assert activation_bytes(s, 1, h, a, t) == pytest.approx(sbh * (10 + 24 / t + 5 * a * s / (h * t)))
    assert activation_bytes(s, 1, h, a, t, True) == pytest.approx(sbh / t * (34 + 5 * a * s / h))
    assert activation_bytes(s, 1, h, a, t, False, "selective") == pytest.approx(sbh * (10 + 24 / t))
    assert activation_bytes(s, 1, h, a, t, True, "selective") == pytest.approx(34 * sbh / t)
    assert activation_bytes(s, 1, h, a, t, False, "full") == pytest.approx(2 * sbh)
    # The paper's headline: sequence parallelism with selective recomputation needs about 5x less than tensor
    # parallelism alone (175B: 23 sbh against 4.25 sbh).
    ratio = activation_bytes(s, 1, h, a, t) / activation_bytes(s, 1, h, a, t, True, "selective")
    assert 4.5 < ratio < 6.5
    # The cost model charges a layer with those terms exactly the formula, for every technique.
    cluster = parse_cluster("name: one\nnodes:\n  - {kind: H100, devices: 8}\n")
    model = ModelSpec(name, [korthikanti_layer(s, h, a)], s)
    for sp in (False, True):
        for r in ("none", "selective", "full"):
            cm = CostModel(cluster, model, techniques=Techniques(recompute=r, sequence_parallel=sp))
            for tp in (1, 2, 8):
                assert float(cm.activation_memory(0, 1, tp, 1)) == pytest.approx(activation_bytes(s, 1, h, a, tp, sp, r))


def test_full_recomputation_repeats_the_forward_in_the_backward():
    cluster = parse_cluster("name: one\nnodes:\n  - {kind: H100, devices: 1}\n")
    model = get_model("tiny")
    kind, intra = cluster.kinds["H100"], cluster.nodes[0].intra
    f0, b0 = CostModel(cluster, model).layer_times(kind, 2, 1, intra)
    f1, b1 = CostModel(cluster, model, techniques=Techniques(recompute="full")).layer_times(kind, 2, 1, intra)
    assert f1 == pytest.approx(f0) and b1 == pytest.approx(b0 + f0)  # backward 2 forwards + 1: +33 % of f + b
    assert (f1[-1] + b1[-1]) / (f0[-1] + b0[-1]) == pytest.approx(4 / 3)


def uniform(p: int, layers_per_stage: int, m: int, techniques=Techniques(), pipelines: int = 1):
    """p equal stages (one device each, nothing sent between them) over m micro-batches of one sample."""
    n = p * layers_per_stage
    model = ModelSpec("u", [LayerSpec(f"l{i}", "block", 1000, 1e12, 0.0, 0.0) for i in range(n)], 1)
    cluster = parse_cluster(f"name: u\nnodes:\n  - {{kind: H100, devices: {p * pipelines}}}\n")
    pipes = [Pipeline([Stage("H100", [j * p + i], (i * layers_per_stage, (i + 1) * layers_per_stage))
                       for i in range(p)], 1, m, m) for j in range(pipelines)]
    cm = CostModel(cluster, model)
    return cm, Plan("u", m * pipelines, 1, pipes, "u", techniques=techniques)


@pytest.mark.parametrize("p,m", [(2, 1), (4, 8), (8, 8), (4, 32)])
def test_1f1b_bubble_is_p_minus_1_over_m_plus_p_minus_1_of_the_step(p, m):
    cm, pl = uniform(p, 1, m)
    est = cm.evaluate(pl)
    t = est.stages[0][0].fwd + est.stages[0][0].bwd
    assert est.pipeline_times[0] == pytest.approx((m + p - 1) * t)
    assert est.bubble_fraction == pytest.approx((p - 1) / (m + p - 1)) == pytest.approx(bubble_fraction(p, m))


@pytest.mark.parametrize("p,m,v", [(4, 8, 2), (4, 8, 4), (8, 16, 2)])
def test_interleaving_divides_the_bubble_by_the_virtual_stages(p, m, v):
    """Narayanan et al. 2021, section 2.2: with v chunks per device the bubble is (p - 1)/(v m) of the ideal
    time m t: T = m t + (p - 1) t / v."""
    cm, pl = uniform(p, v, m, Techniques(virtual_stages=v))
    est = cm.evaluate(pl)
    t = est.stages[0][0].fwd + est.stages[0][0].bwd
    assert est.pipeline_times[0] == pytest.approx(m * t + (p - 1) * t / v)
    assert (est.pipeline_times[0] - m * t) / (m * t) == pytest.approx((p - 1) / (v * m))
    assert est.bubble_fraction == pytest.approx(bubble_fraction(p, m, v))
    assert interleaved_total(p * t, t, 1) == p * t


@pytest.mark.parametrize("p,v", [(2, 2), (3, 2), (4, 3), (4, 4), (6, 2)])
def test_simulated_interleaved_schedule_equals_the_closed_form(p, v):
    """Stepping through Megatron-LM's interleaved order (hal.plan.simulate) takes m t + (p - 1) t / v on equal
    stages with nothing sent, for every m that is a multiple of p."""
    from hal.plan.simulate import simulate
    for m in (p, 2 * p, 5 * p):
        cm, pl = uniform(p, v, m, Techniques(virtual_stages=v))
        est, sim = cm.evaluate(pl), simulate(pl, cm)
        t = est.stages[0][0].fwd + est.stages[0][0].bwd
        assert sim.step_time == pytest.approx(est.step_time) == pytest.approx(m * t + (p - 1) * t / v)
        chunks = {e.chunk for e in sim.events if e.op == "F"}
        assert chunks == set(range(v))  # every stage ran each of its chunks
        assert sum(e.op == "F" for e in sim.events) == m * p * v


def test_interleaving_needs_micro_batches_in_multiples_of_the_depth():
    """The interleaved order deadlocks unless m is a multiple of p (Megatron-LM refuses such runs): such a
    pipeline runs plain 1F1B, and the closed form, the planner's fast path and the simulator price it so."""
    from hal.plan.simulate import _run_pipeline, simulate
    cm, pl = uniform(4, 2, 6, Techniques(virtual_stages=2))
    est, sim = cm.evaluate(pl), simulate(pl, cm)
    t = est.stages[0][0].fwd + est.stages[0][0].bwd
    assert est.pipeline_times[0] == pytest.approx((6 + 4 - 1) * t) == pytest.approx(sim.step_time)
    with pytest.raises(RuntimeError, match="deadlocked"):
        _run_pipeline(0, est.stages[0], 5, [], None, 4)  # 5 micro-batches over 4 stages, v = 4


def test_interleaving_holds_more_micro_batches_in_flight_as_korthikanti_et_al_give():
    """Stage 0 holds p (1 + (p - 1)/(p v)) micro-batches' activations (section 4.2.3): Megatron-LM's
    2(p - 1) + (v - 1) p + 1 warm-up chunks of 1/v of a stage each."""
    for p, v in ((4, 2), (8, 2), (8, 4), (16, 3)):
        exact = p * (1 + (p - 1) / (p * v))
        assert interleaved_in_flight(p, 0, v) == -(-(2 * (p - 1) + (v - 1) * p + 1) // v)
        assert exact <= interleaved_in_flight(p, 0, v) < exact + 1
        assert interleaved_in_flight(p, 0, 1) == p and interleaved_in_flight(p, p - 1, 1) == 1
    cm, pl = uniform(4, 2, 8, Techniques(virtual_stages=2))
    assert [s.in_flight for s in cm.evaluate(pl).stages[0]] == [6, 5, 4, 3]
    # A stage with fewer layers than chunks cannot be interleaved: it does not fit.
    cm, pl = uniform(4, 1, 8, Techniques(virtual_stages=2))
    assert not cm.evaluate(pl).fits


def test_overlap_hides_the_all_reduce_behind_the_last_backward():
    """exposed = max(0, T_allreduce - overlap_fraction x the shortest backward of one micro-batch)."""
    cm, plain = uniform(2, 1, 4, pipelines=2)
    est = cm.evaluate(plain)
    bwd = min(s.bwd for ss in est.stages for s in ss)
    for frac in (0.0, 1e-9, 1.0):
        cm2 = CostModel(cm.cluster, cm.model, replace(cm.options, overlap_fraction=frac))
        hidden = cm2.evaluate(replace(plain, techniques=Techniques(overlap=True)))
        assert hidden.allreduce_time == pytest.approx(max(0.0, est.allreduce_time - frac * bwd))
        assert hidden.step_time == pytest.approx(est.step_time - est.allreduce_time + hidden.allreduce_time)


def test_zero_shards_the_state_and_the_optimizer_step_over_the_replicas_of_a_stage():
    cm, plain = uniform(2, 1, 4, pipelines=2)
    est = cm.evaluate(plain)
    z1 = cm.evaluate(replace(plain, techniques=Techniques(zero=1)))
    assert z1.optimizer_time == pytest.approx(est.optimizer_time / 2)
    assert z1.allreduce_time == pytest.approx(est.allreduce_time)  # reduce-scatter + all-gather
    per = z1.stages[0][0].memory / est.stages[0][0].memory  # no activations here: state only
    assert per == pytest.approx((2 + 2 + 12 / 2) / 16)


def test_llama_2_7b_on_8_a100_zero_1_at_tp_1_fits_and_beats_the_tp_2_plan():
    """Issue 12: without ZeRO llama-2-7b (108 GB of weights and Adam state) does not fit one 80 GB A100, and the
    planner is forced into tensor parallelism (4 x tp 2); ZeRO-1 over 8 replicas (4 + 12/8 bytes per parameter,
    37 GB) fits at tp 1 and is faster."""
    cluster = parse_cluster("name: a100x8\nnodes:\n  - {kind: A100, devices: 8}\n")
    model = get_model("llama-2-7b")
    forced = plan(cluster, model, 64)
    assert {s.tp for p in forced.plan.pipelines for s in p.stages} == {2} and forced.plan.techniques == Techniques()
    zero = plan(cluster, model, 64, PlannerOptions(techniques=TechniqueSpace(zero=(0, 1))))
    assert zero.plan.techniques.zero == 1 and zero.estimate.fits
    assert len(zero.plan.pipelines) == 8 and all(len(p.stages) == 1 and p.stages[0].tp == 1 for p in zero.plan.pipelines)
    assert zero.estimate.step_time < forced.estimate.step_time
    assert plan(cluster, model, 64, PlannerOptions(techniques=ALL_TECHNIQUES)).estimate.step_time <= zero.estimate.step_time


def test_the_runtime_default_plans_no_technique_and_old_plan_files_read_as_none():
    assert PlannerOptions().techniques == RUNTIME and RUNTIME.settings(get_model("tiny")) == [Techniques()]
    cluster = parse_cluster("name: a100x8\nnodes:\n  - {kind: A100, devices: 8}\n")
    p = plan(cluster, get_model("llama-2-7b"), 64).plan
    d = json.loads(p.to_json())
    assert d["techniques"] == {"zero": 0, "recompute": "none", "sequence_parallel": False, "virtual_stages": 1,
                               "overlap": False}
    del d["techniques"]
    assert Plan.from_dict(d).techniques == Techniques()
    t = Techniques(zero=2, recompute="full", sequence_parallel=True, virtual_stages=2, overlap=True)
    assert Plan.from_json(replace(p, techniques=t).to_json()).techniques == t
    for bad in ({"zero": 4}, {"recompute": "some"}, {"virtual_stages": 0}, {"overlap": 1}, {"zeroo": 1}):
        with pytest.raises(ValueError, match="techniques"):
            Techniques.from_dict(bad)


def test_dominated_settings_are_left_out_of_the_search():
    s = ALL_TECHNIQUES.settings(get_model("llama-2-7b"))  # flash attention: selective saves nothing
    assert all(t.sequence_parallel and t.overlap for t in s)
    assert {t.recompute for t in s} == {"none", "full"} and {t.zero for t in s} == {0, 1, 2, 3}
    assert len(s) == 4 * 2 * 2
    assert {t.zero for t in TechniqueSpace(zero=(0, 1)).settings(get_model("tiny"))} == {1}  # no overlap: 1 beats 0


def test_the_fluid_bound_that_skips_settings_is_below_every_plans_pipeline_phase():
    """planner._fluid_bound: the batch's compute spread over every device; a setting whose bound is no shorter
    than the best step found is not searched, so it must be below the pipeline phase of any plan."""
    from hal.plan.planner import _fluid_bound
    from tests.plan.brute_force import brute_force
    from tests.plan.test_optimality import SMALL, random_case
    for seed in (1, 2, 5, 6, 7, 9, 10, 11):  # the quick ones
        cluster, model, batch = random_case(seed)
        for t in (Techniques(), Techniques(recompute="full", virtual_stages=2)):
            ref = brute_force(cluster, model, batch, SMALL.micro_batch_sizes, SMALL.tp_degrees, True,
                              techniques=(t,))
            if ref is None:
                continue
            cm = CostModel(cluster, model, techniques=t)
            assert _fluid_bound(cm, SMALL, batch) <= max(ref[1].pipeline_times) * (1 + 1e-12), seed
            even = plan(cluster, model, batch, replace(SMALL, techniques=TechniqueSpace(
                recompute=(t.recompute,), virtual_stages=(t.virtual_stages,))))
            assert _fluid_bound(cm, SMALL, batch) <= max(even.estimate.pipeline_times) * (1 + 1e-12), seed
