"""The executor (a validation tool) on the local hal:N devices (EMULATED emu devices): same numbers as one CPU device.

Needs the HAL torch backend and at least two emu devices (the default HAL_EMU_DEVICES gives four)."""
from __future__ import annotations


import pytest

torch = pytest.importorskip("torch")

from hal.plan.model import TransformerConfig  # noqa: E402
from hal.plan.plan import Pipeline, Plan, Stage  # noqa: E402

CFG = TransformerConfig("t", 2, 32, 2, 64, 64, 8, gated_mlp=False, dtype_bytes=4)


def _emu_devices():
    try:
        from hal.plan.local import hal_torch_devices
        devs = [d for d in hal_torch_devices() if d.emulated]
    except Exception as e:  # noqa: BLE001
        pytest.skip(f"no hal torch backend: {e}")
    if len(devs) < 2:
        pytest.skip("needs two emulated hal devices")
    return devs


def _cluster(devs):
    from hal.plan.local import hal_cluster
    return hal_cluster(devs, measure_links=False)


def _reference(tokens, lr=1e-3):
    """One CPU device, the whole batch at once: loss, gradients, weights after one Adam step."""
    from hal.plan.torch_model import build_layers, lm_loss
    layers = build_layers(CFG)
    params = [p for m in layers for p in m.parameters()]
    opt = torch.optim.Adam(params, lr=lr)
    x = tokens
    for m in layers:
        x = m(x)
    loss = lm_loss(x, tokens)
    loss.backward()
    grads = [p.grad.clone() for p in params]
    opt.step()
    return float(loss.detach()), grads, [p.detach().clone() for p in params]


def _executor_params(ex):
    by_layer = {}
    for pipe, stages in zip(ex.plan.pipelines, ex.pipes):
        for st, s in zip(pipe.stages, stages):
            for li, m in zip(range(*st.layers), s.modules):
                by_layer.setdefault(li, m)
    return [p for li in sorted(by_layer) for p in by_layer[li].parameters()]


def test_two_stage_pipeline_on_hal_matches_cpu():
    from hal.plan.execute import PlanExecutor
    from hal.plan.torch_model import build_layers, lm_loss, make_tokens
    devs = _emu_devices()
    cluster, order, _ = _cluster(devs)
    fast, slow = order[0], order[-1]
    kinds = list(cluster.kinds)
    tokens = make_tokens(CFG, 4, seed=3)
    # Stage 0 on the first device of the first kind, stage 1 on the last device (another kind when there is one).
    p = Plan("t", 4, CFG.seq, [Pipeline([Stage(kinds[0], [0], (0, 2)), Stage(kinds[-1], [len(order) - 1], (2, 4))],
                                        2, 2, 4)])
    ex = PlanExecutor(p, cluster, lambda: build_layers(CFG), lambda d: order[d], tokens, lm_loss, mode="wall",
                      lr=1e-3)
    assert ex.pipes[0][0].device == fast and ex.pipes[0][1].device == slow
    # Gradients before the optimizer: run the step without Adam by reading them inside a patched optimizer.
    seen = {}
    for s in ex.pipes[0]:
        step = s.optimizer.step

        def grab(step=step, s=s):
            seen[s.device] = [p.grad.detach().cpu().clone() for p in s.params]
            return step()
        s.optimizer.step = grab
    m = ex.step()
    ref_loss, ref_grads, ref_weights = _reference(tokens)
    assert m.emulated and m.mode == "wall" and m.step_time > 0
    assert m.loss == pytest.approx(ref_loss, rel=1e-5)
    grads = seen[fast] + seen[slow]
    assert len(grads) == len(ref_grads)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-6)
    for p_, r in zip(_executor_params(ex), ref_weights):
        assert p_.device.type == "hal"
        torch.testing.assert_close(p_.detach().cpu(), r, rtol=1e-4, atol=1e-6)
    ops = {e.op for e in m.events}
    assert {"F", "B", "send", "optimizer"} <= ops


def test_data_parallel_on_two_emu_devices_matches_full_batch():
    from hal.plan.execute import PlanExecutor
    from hal.plan.torch_model import build_layers, lm_loss, make_tokens
    devs = _emu_devices()
    cluster, order, _ = _cluster(devs)
    kinds = list(cluster.kinds)
    last = len(order) - 1
    tokens = make_tokens(CFG, 6, seed=4)
    # Uneven shares (4 + 2), different micro-batch counts, one replica per device.
    p = Plan("t", 6, CFG.seq, [Pipeline([Stage(kinds[0], [0], (0, 4))], 2, 2, 4),
                               Pipeline([Stage(kinds[-1], [last], (0, 4))], 2, 1, 2)])
    ex = PlanExecutor(p, cluster, lambda: build_layers(CFG), lambda d: order[d], tokens, lm_loss, mode="wall",
                      lr=1e-3)
    m = ex.step()
    ref_loss, _, ref_weights = _reference(tokens)
    assert m.loss == pytest.approx(ref_loss, rel=1e-5)
    for rep in ex.pipes:
        ps = [p_ for m_ in rep[0].modules for p_ in m_.parameters()]
        for p_, r in zip(ps, ref_weights):
            torch.testing.assert_close(p_.detach().cpu(), r, rtol=1e-4, atol=1e-6)
    assert m.allreduce_time > 0


def test_executor_step_is_the_simulation_with_the_executors_allreduce():
    from hal.plan.cluster import GB
    from hal.plan.cost import CostModel
    from hal.plan.execute import executor_allreduce_time, executor_step
    from hal.plan.local import ProbedDevice, local_cluster
    from hal.plan.model import get_model
    from hal.plan.simulate import simulate
    cluster = local_cluster(lambda: [ProbedDevice("a", "a", 1e11, 16 * GB, 2e10)] * 2 +
                            [ProbedDevice("b", "b", 5e10, 16 * GB, 1e10)] * 2)
    spec = get_model("tiny")
    cm = CostModel(cluster, spec)
    p = Plan("tiny", 8, spec.seq_len, [
        Pipeline([Stage("a", [0], (0, 3)), Stage("b", [2], (3, 6))], 1, 5, 5),
        Pipeline([Stage("a", [1], (0, 6))], 1, 3, 3)])
    sim = simulate(p, cm)
    t, events = executor_step(p, cm, record=True)
    ar = executor_allreduce_time(p, cm)
    assert ar > 0
    assert t == pytest.approx(max(sim.pipeline_times) + ar + sim.optimizer_time, rel=1e-12)
    assert {e.op for e in events} >= {"F", "B", "send", "allreduce", "optimizer"}
    assert max(e.end for e in events) == pytest.approx(t, rel=1e-12)
    # One pipeline: no all-reduce, the simulation itself.
    one = Plan("tiny", 5, spec.seq_len, [p.pipelines[0]])
    assert executor_step(one, cm)[0] == pytest.approx(simulate(one, cm).step_time, rel=1e-12)
