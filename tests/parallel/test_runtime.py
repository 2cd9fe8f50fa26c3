"""The training runtime across processes: uneven data parallelism and uneven pipelines over two device kinds
give the full-batch, sequential model's losses and gradients (fp32, tight tolerance)."""
from __future__ import annotations

import json

import pytest
import torch

from hal.plan.plan import Pipeline, Plan, Stage
from tests.parallel import model
from tests.parallel.launch import KIND, assert_ok, run_job

pytestmark = pytest.mark.needs_native
STEPS, BATCH = 3, 16


def pipe(stages: list[tuple[str, int | list[int], tuple[int, int]]], mbs: int, samples: int) -> Pipeline:
    """Stages of (kind, device id or ids (tensor parallelism), layers)."""
    return Pipeline([Stage(k, d if isinstance(d, list) else [d], layers) for k, d, layers in stages], mbs,
                    -(-samples // mbs), samples)


def run_plan(tmp_path, devices: list[str], plan: Plan, steps: int = STEPS, **env: str) -> dict[int, dict]:
    out = tmp_path / f"out-{len(list(tmp_path.glob('out-*')))}"
    out.mkdir()
    results = run_job(devices, {"HAL_TEST_PLAN": plan.to_json(), "HAL_TEST_OUT": str(out),
                                "HAL_TEST_STEPS": str(steps), "HAL_TEST_BATCH": str(plan.global_batch), **env})
    assert_ok(results)
    return {r: torch.load(out / f"rank-{r}.pt", weights_only=False) for r in range(len(devices))}


def check_against_reference(out: dict[int, dict], steps: int = STEPS, first: int = 0, grads: bool = True) -> None:
    """Every rank's layers, last gradients (unless `grads` is False: under ZeRO-1 a replica's gradients are its
    own, summed only in the part it owns) and losses (of steps first..steps-1) are the reference's."""
    ref_layers, ref_losses, ref_grads = model.reference(steps, BATCH)
    ref_losses = ref_losses[first:]
    per_layer = [len(list(l.parameters())) for l in ref_layers]
    starts = [sum(per_layer[:i]) for i in range(len(per_layer))]
    seen = set()
    for r, o in out.items():
        assert o["kind"] == KIND[DEVICES_OF[len(out)][o["device_id"]]], o  # the plan's kind for the rank's device
        for layer, ps in o["params"].items():
            seen.add(layer)
            shards = o["shards"][layer]
            part = lambda i, t: shards[i].take(t).reshape(ps[i].shape) if shards[i] is not None else t  # noqa: E731
            for i, (a, b) in enumerate(zip(ps, ref_layers[layer].parameters())):
                torch.testing.assert_close(a, part(i, b.detach()), rtol=1e-5, atol=1e-6)
            for i, (a, b) in enumerate(zip(o["grads"][layer] if grads else [],
                                           ref_grads[-1][starts[layer]:starts[layer] + per_layer[layer]])):
                torch.testing.assert_close(a, part(i, b), rtol=1e-5, atol=1e-6)
        # Every rank reports the global batch's loss (summed over the last stages' weighted losses).
        assert o["losses"] == pytest.approx(ref_losses, rel=1e-5, abs=1e-6)
    assert seen == set(range(model.N_LAYERS))


# Devices emu:0, emu:1 are "fast", emu:2, emu:3 "slow": ids in the job's order 0, 1 (fast), 2, 3 (slow).
DEVICES = ["emu:0", "emu:1", "emu:2"]
ALL4 = ["emu:0", "emu:1", "emu:2", "emu:3"]
DEVICES_OF = {4: ALL4, 3: DEVICES, 2: ["emu:0", "emu:2"]}  # device id -> HAL name, for jobs of 4, 3 and 2 devices


@pytest.mark.parametrize("shares", [(5, 2, 9), (1, 1, 14), (8, 7, 1)])
def test_uneven_data_parallel_equals_the_full_batch(tmp_path, shares):
    """Three replicas with uneven shares and micro-batches (partial last ones included)."""
    plan = Plan("test", BATCH, 1, [pipe([("fast", 0, (0, 4))], 2, shares[0]),
                                   pipe([("fast", 1, (0, 4))], 4, shares[1]),
                                   pipe([("slow", 2, (0, 4))], 3, shares[2])])
    out = run_plan(tmp_path, DEVICES, plan)
    check_against_reference(out)
    # The sums overlap the last backward: a hook starts each layer's sum once its gradients are final, so none is
    # left for after the backward (each of the 4 layers with parameters is a bucket).
    for o in out.values():
        assert o["buckets"] == {"started_in_backward": 4, "total": 4}, o["buckets"]


def test_uneven_pipeline_over_two_kinds_equals_the_sequential_model(tmp_path):
    """One pipeline of three uneven stages (fast: layer 0, slow: layers 1-2, fast: layer 3), 1F1B over 6
    micro-batches (the last partial)."""
    plan = Plan("test", BATCH, 1, [pipe([("fast", 0, (0, 1)), ("slow", 2, (1, 3)), ("fast", 1, (3, 4))], 3, BATCH)])
    check_against_reference(run_plan(tmp_path, DEVICES, plan))


def test_pipelines_with_different_splits_share_gradients_per_layer(tmp_path):
    """Pipeline 0: two stages (fast 0-2, slow 3); pipeline 1: one stage (fast 0-3), uneven shares: layers 0-2
    and layer 3 are summed in different groups."""
    plan = Plan("test", BATCH, 1, [pipe([("fast", 0, (0, 3)), ("slow", 2, (3, 4))], 2, 11),
                                   pipe([("fast", 1, (0, 4))], 5, 5)])
    check_against_reference(run_plan(tmp_path, DEVICES, plan))


def test_a_checkpoint_written_on_one_mix_resumes_on_another(tmp_path):
    """Two steps on three devices (data parallel), checkpoint; two more on two devices of the other kinds'
    mix (one pipeline: fast then slow): the model, Adam's state and the data position carry over exactly."""
    ckpt = tmp_path / "ckpt"
    first = Plan("test", BATCH, 1, [pipe([("fast", 0, (0, 4))], 4, 6), pipe([("fast", 1, (0, 4))], 4, 6),
                                    pipe([("slow", 2, (0, 4))], 2, 4)])
    run_plan(tmp_path, DEVICES, first, steps=2, HAL_TEST_SAVE=str(ckpt))
    second = Plan("test", BATCH, 1, [pipe([("fast", 0, (0, 2)), ("slow", 1, (2, 4))], 4, BATCH)])
    out = run_plan(tmp_path, ["emu:0", "emu:2"], second, steps=2, HAL_TEST_LOAD=str(ckpt))
    check_against_reference(out, steps=4, first=2)


def test_a_device_the_plan_leaves_out_idles_and_the_others_train_the_full_batch(tmp_path):
    """The planner may leave out a device that would not help: its rank only joins the job's collectives."""
    plan_two = Plan("test", BATCH, 1, [pipe([("fast", 0, (0, 4))], 4, 10), pipe([("slow", 2, (0, 4))], 3, 6)])
    out = run_plan(tmp_path, DEVICES, plan_two)
    idle = [o for o in out.values() if o["role"]["pipeline"] < 0]
    assert len(idle) == 1 and idle[0]["device_id"] == 1 and idle[0]["params"] == {}, [o["role"] for o in out.values()]
    assert "idle" in idle[0]["why"]
    check_against_reference(out)


# --- tensor parallelism inside a stage -----------------------------------------------------------------------
def test_tensor_parallel_stage_with_a_whole_replica_equals_the_full_batch(tmp_path):
    """Pipeline 0: one stage on both fast devices (tp 2: layers 1-2 sharded, 0 and 3 whole on each); pipeline 1:
    the slow device alone. Their tp sizes differ: gradients are summed whole-size, each shard at its place."""
    plan = Plan("test", BATCH, 1, [pipe([("fast", [0, 1], (0, 4))], 3, 10), pipe([("slow", 2, (0, 4))], 4, 6)])
    out = run_plan(tmp_path, DEVICES, plan)
    tp = [o for o in out.values() if o["device_id"] in (0, 1)]
    assert {o["role"]["tp_rank"] for o in tp} == {0, 1}
    # Layers 1 and 2 are sharded on both (their up and down maps' weights: half of each), 0 and 3 are whole.
    for o in tp:
        assert all(s is not None for layer in (1, 2) for s in o["shards"][layer][:3]), o["shards"]
        assert all(s is None for layer in (0, 3) for s in o["shards"][layer]), o["shards"]
        assert o["params"][1][0].shape == (model.HIDDEN, model.HIDDEN)  # up.weight: 2 x HIDDEN rows, split in 2
    check_against_reference(out)


def test_tensor_parallel_stages_between_whole_ones_and_shard_replicas_equal_the_full_batch(tmp_path):
    """Pipeline 0: slow device 2 (layer 0) -> fast devices 0, 1 with tp 2 (layers 1-2) -> slow device 3
    (layer 3): activations fan out from one rank to two and back. Pipeline 1 is not possible with the devices
    left, so a second job runs two tp-2 replicas, fast [0, 1] and slow [2, 3]: each shard is summed with its
    counterpart only."""
    one = Plan("test", BATCH, 1, [pipe([("slow", 2, (0, 1)), ("fast", [0, 1], (1, 3)), ("slow", 3, (3, 4))], 4,
                                       BATCH)])
    check_against_reference(run_plan(tmp_path, ALL4, one))
    two = Plan("test", BATCH, 1, [pipe([("fast", [0, 1], (0, 4))], 4, 11), pipe([("slow", [2, 3], (0, 4))], 5, 5)])
    check_against_reference(run_plan(tmp_path, ALL4, two))


def test_a_checkpoint_written_with_tensor_parallelism_resumes_without_it(tmp_path):
    """Checkpoints hold whole tensors: two steps with a tp-2 stage, then two more on a plain pipeline (and
    back: tp-2 from a checkpoint of whole tensors)."""
    ckpt = tmp_path / "ckpt"
    first = Plan("test", BATCH, 1, [pipe([("fast", [0, 1], (0, 3)), ("slow", 2, (3, 4))], 4, BATCH)])
    run_plan(tmp_path, DEVICES, first, steps=2, HAL_TEST_SAVE=str(ckpt))
    second = Plan("test", BATCH, 1, [pipe([("fast", 0, (0, 2)), ("slow", 1, (2, 4))], 4, BATCH)])
    check_against_reference(run_plan(tmp_path, ["emu:0", "emu:2"], second, steps=2, HAL_TEST_LOAD=str(ckpt),
                                     HAL_TEST_SAVE=str(tmp_path / "ckpt2")), steps=4, first=2)
    third = Plan("test", BATCH, 1, [pipe([("slow", 2, (0, 2)), ("fast", [0, 1], (2, 4))], 4, BATCH)])
    check_against_reference(run_plan(tmp_path, DEVICES, third, steps=2, HAL_TEST_LOAD=str(tmp_path / "ckpt2")),
                            steps=6, first=4)
