"""ZeRO-1 in the runtime (hal/parallel/zero.py): the optimizer's state sharded over a layer's replicas gives the
all-reduce's update (fp32, tight tolerance) with 1/N of the state per rank, and its checkpoints are the same
device-neutral files, loadable under any plan, ZeRO or not."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from hal.parallel import PlanMismatch
from hal.parallel import checkpoint as ckpt
from hal.parallel.devices import DeviceRecord, check_plan
from hal.plan.plan import Plan, Techniques
from tests.parallel import model
from tests.parallel.test_runtime import ALL4, BATCH, DEVICES, check_against_reference, pipe, run_plan

ZERO1 = Techniques(zero=1)


def layer_sizes() -> list[int]:
    return [sum(p.numel() for p in layer.parameters()) for layer in model.layers()]


def assert_same_params(a: dict[int, dict], b: dict[int, dict]) -> None:
    """Two runs of the same plan (ranks alike): every rank's parameters agree to fp32 rounding."""
    for r in a:
        assert a[r]["params"].keys() == b[r]["params"].keys()
        for layer, ps in a[r]["params"].items():
            for x, y in zip(ps, b[r]["params"][layer]):
                torch.testing.assert_close(x, y, rtol=1e-6, atol=1e-7)
        assert a[r]["losses"] == pytest.approx(b[r]["losses"], rel=1e-6, abs=1e-7)


@pytest.mark.needs_native
def test_zero1_gives_the_all_reduce_update_over_uneven_replicas_with_a_third_of_the_state(tmp_path):
    """Three replicas of 5, 2 and 9 samples on two kinds: three steps with and without ZeRO-1 end with the same
    parameters (and the full-batch model's); each rank's Adam state is its third of each layer (padded)."""
    plan = Plan("test", BATCH, 1, [pipe([("fast", 0, (0, 4))], 2, 5), pipe([("fast", 1, (0, 4))], 4, 2),
                                   pipe([("slow", 2, (0, 4))], 3, 9)])
    plain = run_plan(tmp_path, DEVICES, plan)
    zero = run_plan(tmp_path, DEVICES, replace(plan, techniques=ZERO1))
    assert_same_params(plain, zero)
    check_against_reference(zero, grads=False)
    sizes = layer_sizes()
    for o in zero.values():
        assert o["zero"] == {"parts": 4, "replicas": [3, 3, 3, 3], "rest": 0}, o["zero"]
        assert o["optim_elements"] == {"exp_avg": sum(-(-n // 3) for n in sizes),
                                       "exp_avg_sq": sum(-(-n // 3) for n in sizes)}, o["optim_elements"]
        assert o["optim_elements"]["exp_avg"] < o["stage_elements"] / 3 + 4
        # The reduce-scatters start in the last backward, as the all-reduces do.
        assert o["buckets"] == {"started_in_backward": 4, "total": 4}, o["buckets"]
    for o in plain.values():
        assert o["zero"] is None and o["optim_elements"]["exp_avg"] == o["stage_elements"] == sum(sizes)


@pytest.mark.needs_native
def test_zero1_over_pipelines_of_different_splits_shards_each_segment_in_its_group(tmp_path):
    """Pipeline 0: fast 0-2, slow 3; pipeline 1: fast 0-3 (11 and 5 samples): layers 0-2 are sharded between
    devices 0 and 1, layer 3 between 2 and 1, which holds half of every layer's state."""
    plan = Plan("test", BATCH, 1, [pipe([("fast", 0, (0, 3)), ("slow", 2, (3, 4))], 2, 11),
                                   pipe([("fast", 1, (0, 4))], 5, 5)], techniques=ZERO1)
    zero = run_plan(tmp_path, DEVICES, plan)
    assert_same_params(run_plan(tmp_path, DEVICES, replace(plan, techniques=Techniques())), zero)
    check_against_reference(zero, grads=False)
    sizes = layer_sizes()
    by_device = {o["device_id"]: o for o in zero.values()}
    assert by_device[1]["optim_elements"]["exp_avg"] == sum(-(-n // 2) for n in sizes)
    assert by_device[0]["optim_elements"]["exp_avg"] == sum(-(-n // 2) for n in sizes[:3])
    assert by_device[2]["optim_elements"]["exp_avg"] == -(-sizes[3] // 2)


@pytest.mark.needs_native
def test_zero1_leaves_padded_tensor_parallel_segments_whole(tmp_path):
    """Pipeline 0: fast [0, 1] with tp 2 (layers 0-2), slow 2 (layer 3); pipeline 1: slow 3 (all layers). Layers
    0-2 have replicas of tp sizes 2 and 1 (a padded segment: summed whole-size, stepped whole), layer 3 is
    sharded between devices 2 and 3: device 3 steps its half of layer 3 and layers 0-2 whole, in one tensor."""
    plan = Plan("test", BATCH, 1, [pipe([("fast", [0, 1], (0, 3)), ("slow", 2, (3, 4))], 4, 10),
                                   pipe([("slow", 3, (0, 4))], 3, 6)], techniques=ZERO1)
    out = run_plan(tmp_path, ALL4, plan)
    check_against_reference(out, grads=False)
    sizes = layer_sizes()
    by_device = {o["device_id"]: o for o in out.values()}
    assert by_device[0]["zero"] is None and by_device[1]["zero"] is None
    assert by_device[2]["zero"] == {"parts": 1, "replicas": [2], "rest": 0}
    assert by_device[3]["zero"] == {"parts": 1, "replicas": [2], "rest": sum(sizes[:3])}
    assert by_device[3]["optim_elements"]["exp_avg"] == sum(sizes[:3]) + -(-sizes[3] // 2)


@pytest.mark.needs_native
def test_zero1_checkpoints_are_the_plain_ones_and_resume_under_any_plan(tmp_path):
    """Two steps on three replicas with ZeRO-1 write the checkpoint the same steps write without it; it resumes
    on a plain pipeline of two devices, whose checkpoint resumes under ZeRO-1 on two uneven pipelines: the
    model, Adam's state and the data position carry over exactly."""
    first = Plan("test", BATCH, 1, [pipe([("fast", 0, (0, 4))], 4, 6), pipe([("fast", 1, (0, 4))], 4, 6),
                                    pipe([("slow", 2, (0, 4))], 2, 4)], techniques=ZERO1)
    run_plan(tmp_path, DEVICES, first, steps=2, HAL_TEST_SAVE=str(tmp_path / "zero"))
    run_plan(tmp_path, DEVICES, replace(first, techniques=Techniques()), steps=2,
             HAL_TEST_SAVE=str(tmp_path / "plain"))
    (_, z), (_, p) = ckpt.load_latest(tmp_path / "zero"), ckpt.load_latest(tmp_path / "plain")
    assert z["layers"].keys() == p["layers"].keys() == set(range(model.N_LAYERS))
    for index, layer in p["layers"].items():
        other = z["layers"][index]
        assert other["params"].keys() == layer["params"].keys() and other["optim"].keys() == layer["optim"].keys()
        for k, v in layer["params"].items():
            torch.testing.assert_close(other["params"][k], v, rtol=1e-6, atol=1e-7)
        for name, st in layer["optim"].items():
            assert other["optim"][name].keys() == st.keys()
            for k, v in st.items():
                assert other["optim"][name][k].shape == v.shape, (index, name, k)
                torch.testing.assert_close(other["optim"][name][k], v, rtol=1e-6, atol=1e-9)
    second = Plan("test", BATCH, 1, [pipe([("fast", 0, (0, 2)), ("slow", 1, (2, 4))], 4, BATCH)])
    check_against_reference(run_plan(tmp_path, ["emu:0", "emu:2"], second, steps=2,
                                     HAL_TEST_LOAD=str(tmp_path / "zero"), HAL_TEST_SAVE=str(tmp_path / "ckpt2")),
                            steps=4, first=2)
    third = Plan("test", BATCH, 1, [pipe([("fast", 0, (0, 3)), ("slow", 2, (3, 4))], 2, 11),
                                    pipe([("fast", 1, (0, 4))], 5, 5)], techniques=ZERO1)
    check_against_reference(run_plan(tmp_path, DEVICES, third, steps=2, HAL_TEST_LOAD=str(tmp_path / "ckpt2")),
                            steps=6, first=4, grads=False)


def test_check_plan_accepts_zero1_and_names_what_it_refuses():
    records = [DeviceRecord(0, 0, "emu:0", "fast", True, 0.5, 1e9)]
    plan = Plan("test", BATCH, 1, [pipe([("fast", 0, (0, 4))], 4, BATCH)])
    check_plan(replace(plan, techniques=ZERO1), records)
    for t, words in [(Techniques(zero=2), "ZeRO-2"), (Techniques(zero=1, recompute="full"), "full recompute"),
                     (Techniques(sequence_parallel=True), "sequence parallel"),
                     (Techniques(virtual_stages=2), "interleaved x2")]:
        with pytest.raises(PlanMismatch, match=f"it uses {words}, which hal.parallel does not run"):
            check_plan(replace(plan, techniques=t), records)
