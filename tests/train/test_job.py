"""The demo's training job under `hal launch`: a rank SIGKILLed mid-run -> the job resumes from the last
checkpoint on the devices left, re-planned, and finishes with every step accounted for and the same model an
uninterrupted run reaches (the runtime's arithmetic does not depend on the device mix)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from hal.train.progress import read_metrics

pytestmark = pytest.mark.needs_native
# Two kinds, 0.5 + 0.5 + 0.25 = 1.25 cores of demand: fits a 2-core host.
EMU = "fast:2:speed=0.5;slow:1:speed=0.25"
STEPS, EVERY, KILL = 8, 3, 5


def launch(run_dir, *job_args: str, env: dict | None = None, timeout: float = 240,
           plan: str | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "hal.launch", "--devices", "emu", "--run-dir", str(run_dir), "--max-restarts", "2",
           *(["--plan", plan] if plan else []),
           "-m", "hal.train.job", "--model", "tiny", "--batch", "8", "--micro-batch", "2", "--steps", str(STEPS),
           "--checkpoint-every", str(EVERY), "--profile-repeats", "1", "--live", "off", *job_args]
    full = {**os.environ, "HAL_EMU_DEVICES": EMU, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(cmd, env=full, capture_output=True, text=True, timeout=timeout)


def test_sigkill_resumes_from_the_last_checkpoint_on_the_devices_left(tmp_path):
    killed = launch(tmp_path / "killed", env={"HAL_TRAIN_KILL_AT": f"{KILL}:emu:2"})
    assert killed.returncode == 0, killed.stderr[-6000:]
    assert "killed by SIGKILL: device lost" in killed.stderr
    metrics = read_metrics(tmp_path / "killed" / "metrics.jsonl")
    first = [m["step"] for m in metrics if m["round"] == 0]
    second = [m["step"] for m in metrics if m["round"] == 1]
    last_ckpt = (KILL // EVERY) * EVERY
    assert first == list(range(1, KILL + 1))             # rank 2 died as step KILL + 1 began
    assert second == list(range(last_ckpt + 1, STEPS + 1))  # resumed after the last checkpoint, to the end
    assert {m["devices"] for m in metrics if m["round"] == 1} == {2}
    assert sorted(set(first) | set(second)) == list(range(1, STEPS + 1))  # every step accounted for
    launched = json.loads((tmp_path / "killed" / "launch.json").read_text())
    assert [l["device"] for l in launched["lost"]] == ["emu:2"] and launched["lost"][0]["exitcode"] == -9, launched
    result = json.loads((tmp_path / "killed" / "result.json").read_text())
    assert result["resumed_after_step"] == last_ckpt and result["round"] == 1
    assert "re-planned" in result["plan_why"] or "planned for the job's 2 devices" in result["plan_why"]
    assert {s["kind"] for p in result["plan"]["pipelines"] for s in p["stages"]} == {"fast"}

    whole = launch(tmp_path / "whole")
    assert whole.returncode == 0, whole.stderr[-6000:]
    ref = read_metrics(tmp_path / "whole" / "metrics.jsonl")
    assert [m["step"] for m in ref] == list(range(1, STEPS + 1))
    # The same losses step by step (rounds 0 and 1 alike), and so the same model at the end.
    by_step = {m["step"]: m["loss"] for m in ref}
    for m in metrics:
        assert m["loss"] == pytest.approx(by_step[m["step"]], rel=1e-5, abs=1e-6), m


def test_a_plan_that_does_not_match_the_devices_stops_before_any_worker(tmp_path):
    plan = {"model": "gpt-tiny", "global_batch": 8, "seq_len": 32, "cluster": "x", "predicted": {},
            "pipelines": [{"stages": [{"kind": "slow", "device_ids": [0], "tp": 1, "layers": [0, 4]}],
                           "micro_batch_size": 2, "num_micro_batches": 4, "samples": 8}]}
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    cmd = [sys.executable, "-m", "hal.launch", "--devices", "emu", "--plan", str(tmp_path / "plan.json"),
           "--run-dir", str(tmp_path / "run"), "-m", "hal.train.job", "--model", "tiny", "--steps", "2"]
    r = subprocess.run(cmd, env={**os.environ, "HAL_EMU_DEVICES": EMU}, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stderr
    assert "device 0" in r.stderr and "'slow'" in r.stderr and "'fast'" in r.stderr, r.stderr
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def _plan(pipelines: list[tuple[list[tuple[str, list[int]]], int]]) -> dict:
    """gpt-tiny plans of whole-model stages: [([(kind, device ids)], samples)], micro-batches of 2."""
    return {"model": "gpt-tiny", "global_batch": 8, "seq_len": 32, "cluster": "x", "predicted": {},
            "pipelines": [{"stages": [{"kind": k, "device_ids": ids, "tp": len(ids), "layers": [0, 4]}
                                      for k, ids in stages],
                           "micro_batch_size": 2, "num_micro_batches": -(-n // 2), "samples": n}
                          for stages, n in pipelines]}


def test_a_plan_with_tensor_parallelism_trains_the_gpt_as_a_plain_one(tmp_path):
    """Both fast devices as one tp-2 stage (the blocks split by heads and MLP features) next to the slow one:
    the same losses as data parallelism alone; the profile tells the planner which layers split."""
    for name, pipes in (("tp", [([("fast", [0, 1])], 5), ([("slow", [2])], 3)]),
                        ("plain", [([("fast", [0])], 3), ([("fast", [1])], 2), ([("slow", [2])], 3)])):
        (tmp_path / f"{name}.json").write_text(json.dumps(_plan(pipes)))
        # --tp 1,2 on the tp run: the job also profiles the layers' shards on a tp-2 stage of "fast".
        r = launch(tmp_path / name, *(["--tp", "1,2"] if name == "tp" else []), plan=str(tmp_path / f"{name}.json"))
        assert r.returncode == 0, r.stderr[-6000:]
        if name == "tp":
            assert "tensor-parallel rank 0 of 2 (ranks [0, 1]; 2 layer(s) sharded, 2 whole on every rank)" in r.stderr
    tp, plain = (read_metrics(tmp_path / n / "metrics.jsonl") for n in ("tp", "plain"))
    assert [m["step"] for m in tp] == [m["step"] for m in plain] == list(range(1, STEPS + 1))
    for a, b in zip(tp, plain):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4), (a, b)
    assert tp[-1]["loss"] < tp[0]["loss"]
    layers = json.loads((tmp_path / "tp" / "profile.json").read_text())["layers"]
    assert [l["tp_split"] for l in layers] == [False, True, True, False]  # embedding and head stay whole
    assert all(l["tp_comm_bytes"] > 0 for l in layers[1:3]) and layers[0]["tp_comm_bytes"] == 0
    # The shards' times, measured on the two fast devices (the one slow device makes no tp-2 stage).
    assert all(set(l["measured_tp"]) == {"fast"} and set(l["measured_tp"]["fast"]) == {"2"} for l in layers)
    assert all(f > 0 and b >= 0 for l in layers for f, b in l["measured_tp"]["fast"]["2"].values())
    # The job measured its own all-reduce for the planner's link (not the nominal 50 us one).
    link = json.loads((tmp_path / "tp" / "result.json").read_text())["link"]
    assert link["latency_us"] > 0 and link["bandwidth_gb_s"] > 0, link
