"""The ideal measured inside the job (hal.parallel.probe, hal/train/job.py --ideal-probe-every): the probes
change nothing the job computes, result.json reports them with sane figures, bad values are clear errors."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from datetime import timedelta
from types import SimpleNamespace

import pytest
import torch

from hal.parallel.checkpoint import load_latest
from hal.parallel.probe import AloneProbe, Probe, RankProbe, summarize
from hal.train.job import parse_args
from hal.train.progress import read_metrics
from tests.conftest import run_python

EMU = "fast:2:speed=0.5;slow:1:speed=0.25"  # 1.25 cores of demand: fits a 2-core host
STEPS, EVERY, SECONDS = 8, 2, 0.3
# A pipeline of two stages on the fast devices (each holds half the layers: its probe is still the whole
# model) next to the slow device with the whole model: 5 + 3 samples in micro-batches of 2.
PLAN = {"model": "gpt-tiny", "global_batch": 8, "seq_len": 32, "cluster": "x", "predicted": {},
        "pipelines": [{"stages": [{"kind": "fast", "device_ids": [0], "tp": 1, "layers": [0, 2]},
                                  {"kind": "fast", "device_ids": [1], "tp": 1, "layers": [2, 4]}],
                       "micro_batch_size": 2, "num_micro_batches": 3, "samples": 5},
                      {"stages": [{"kind": "slow", "device_ids": [2], "tp": 1, "layers": [0, 4]}],
                       "micro_batch_size": 2, "num_micro_batches": 2, "samples": 3}]}


def launch(run_dir, plan, profile, *job_args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "hal.launch", "--devices", "emu", "--run-dir", str(run_dir), "--max-restarts", "0",
           "--plan", str(plan), "-m", "hal.train.job", "--model", "tiny", "--batch", "8", "--micro-batch", "2",
           "--steps", str(STEPS), "--checkpoint-every", "4", "--profile-repeats", "1", "--profile", str(profile),
           "--live", "off", *job_args]
    full = {**os.environ, "HAL_EMU_DEVICES": EMU, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(cmd, env=full, capture_output=True, text=True, timeout=240)


@pytest.mark.needs_native
def test_probes_change_nothing_the_job_computes_and_report_the_ideal(tmp_path):
    plan, profile = tmp_path / "plan.json", tmp_path / "profile.json"
    plan.write_text(json.dumps(PLAN))
    plain = launch(tmp_path / "plain", plan, profile)  # profiles the layers once; the probed run reuses them
    assert plain.returncode == 0, plain.stderr[-6000:]
    probed = launch(tmp_path / "probed", plan, profile, "--ideal-probe-every", str(EVERY),
                    "--ideal-probe-seconds", str(SECONDS))
    assert probed.returncode == 0, probed.stderr[-6000:]
    assert "ideal probe after step 2:" in probed.stderr and "of the ideal from 4 in-job probes" in probed.stderr

    # The same losses, bit for bit; the same weights, optimizer state and RNG state in the last checkpoint.
    a, b = (read_metrics(tmp_path / n / "metrics.jsonl") for n in ("plain", "probed"))
    assert [m["step"] for m in a] == [m["step"] for m in b] == list(range(1, STEPS + 1))
    assert [m["loss"] for m in a] == [m["loss"] for m in b]
    (sa, ca), (sb, cb) = (load_latest(tmp_path / n / "checkpoints") for n in ("plain", "probed"))
    assert sa == sb == STEPS
    assert torch.equal(ca["rng"]["torch"], cb["rng"]["torch"])
    for index, layer in ca["layers"].items():
        for k, v in layer["params"].items():
            assert torch.equal(v, cb["layers"][index]["params"][k]), (index, k)
        for name, st in layer["optim"].items():
            for key, v in st.items():
                other = cb["layers"][index]["optim"][name][key]
                assert torch.equal(v, other) if torch.is_tensor(v) else v == other, (index, name, key)

    ra, rb = (json.loads((tmp_path / n / "result.json").read_text()) for n in ("plain", "probed"))
    assert ra["ideal_probe"] is None
    # The probe's model is no part of the job's memory figures: the same growth over the steps (what the ranks
    # hold before the first step differs: the plain run's profiling left some of its tensors cached).
    assert ([m["peak_bytes"] - m["before_bytes"] for m in ra["memory"]]
            == [m["peak_bytes"] - m["before_bytes"] for m in rb["memory"]])
    ip = rb["ideal_probe"]
    assert (ip["every"], ip["seconds"], ip["micro_batch"]) == (EVERY, SECONDS, 2)
    assert [p["after_step"] for p in ip["probes"]] == [2, 4, 6, 8]
    for p in ip["probes"]:
        assert [r["rank"] for r in p["ranks"]] == [0, 1, 2]
        assert all("EMULATED" in r["device"] for r in p["ranks"])
        for r in p["ranks"]:
            # Whole micro-batches for about the window (ended within half a micro-batch, plus the last step).
            assert r["samples"] > 0 and r["samples"] == 2 * r["micro_batches"], r
            assert r["optimizer_steps"] == math.ceil(r["micro_batches"] / 4), r
            assert 0.5 * SECONDS < r["seconds"] < 3 * SECONDS, r
            assert r["tokens_per_s"] == pytest.approx(r["samples"] * 32 / r["seconds"])
        assert p["ideal_tokens_per_s"] == pytest.approx(sum(r["tokens_per_s"] for r in p["ranks"]))
        assert p["end_spread_s"] < SECONDS
    # Windows between consecutive probes; the first 3 steps (the warm-up) are in none.
    assert [w["steps"] for w in ip["windows"]] == [[4, 4], [5, 6], [7, 8]]
    for w, (p, q) in zip(ip["windows"], zip(ip["probes"], ip["probes"][1:])):
        assert w["ideal_tokens_per_s"] == pytest.approx((p["ideal_tokens_per_s"] + q["ideal_tokens_per_s"]) / 2)
        assert 0 < w["fraction"] < 2 and w["fraction"] == pytest.approx(w["planned_tokens_per_s"]
                                                                           / w["ideal_tokens_per_s"])
    fr = sorted(w["fraction"] for w in ip["windows"])
    assert (ip["fraction_min"], ip["fraction_median"], ip["fraction_max"]) == (fr[0], fr[1], fr[2])
    steps = {m["step"]: m["step_s"] for m in b}
    assert ip["planned_tokens_per_s"] == pytest.approx(8 * 32 * 5 / sum(steps[s] for s in range(4, 9)))
    assert set(ip["alone_per_rank"]) == {"0", "1", "2"}


def test_summarize_pairs_each_stretch_of_steps_with_the_probes_around_it():
    def probe(after: int, per_rank: list[float]) -> Probe:
        return Probe(after, 10, [RankProbe(r, f"emu:{r} (EMULATED)", "k", int(s), 1.0, int(s), 1, 0.0, 0.0)
                                 for r, s in enumerate(per_rank)])
    probes = [probe(5, [30, 10]), probe(10, [50, 10])]  # ideal 400 and 600 tokens/s
    step_s = {s: 0.5 for s in range(1, 11)}
    out = summarize(probes, step_s, tokens_per_step=100, skip_through=7)
    (w,) = out["windows"]
    assert w["steps"] == [8, 10] and w["planned_steps"] == 3
    assert w["ideal_tokens_per_s"] == pytest.approx(500) and w["planned_tokens_per_s"] == pytest.approx(200)
    assert out["fraction_median"] == pytest.approx(0.4) and out["planned_tokens_per_s"] == pytest.approx(200)
    assert out["alone_per_rank"]["0"]["tokens_per_s_median"] == pytest.approx(400)
    # One probe makes no window: no fraction, not a made-up one.
    assert summarize(probes[:1], step_s, 100)["fraction_median"] is None


@pytest.mark.parametrize("args, message", [
    (["--ideal-probe-every", "-1"], "--ideal-probe-every must be >= 0"),
    (["--ideal-probe-every", "5", "--steps", "9"], "fewer than two"),
    (["--ideal-probe-every", "x"], "invalid int value"),
    (["--ideal-probe-every", "2", "--ideal-probe-seconds", "0"], "--ideal-probe-seconds must be a positive"),
    (["--ideal-probe-every", "2", "--ideal-probe-seconds", "nan"], "--ideal-probe-seconds must be a positive"),
])
def test_a_bad_probe_option_is_a_clear_error(args, message, capsys):
    with pytest.raises(SystemExit) as e:
        parse_args(args)
    assert e.value.code == 2
    assert message in capsys.readouterr().err
    assert parse_args(["--ideal-probe-every", "0"]).ideal_probe_every == 0  # off, the default
    assert parse_args([]).ideal_probe_every == 0


def test_a_window_near_the_collective_timeout_is_refused():
    job = SimpleNamespace(timeout=timedelta(seconds=20))
    with pytest.raises(ValueError, match="more than half the job's collective timeout"):
        AloneProbe(job, list, None, None, micro_batch=2, seconds=15, seq=32)


def test_a_device_that_cannot_hold_the_whole_model_is_an_error_naming_it():
    r = run_python("""
        import torch.distributed as dist
        from types import SimpleNamespace
        from hal.parallel.probe import ProbeError, check_fits
        dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
        rec = SimpleNamespace(memory_bytes=8 << 20, label="node 0 emu:0 (small, EMULATED)")
        job = SimpleNamespace(record=rec, records=[rec], world_size=1)
        check_fits(job, 4 << 20, 2 << 20)  # fits
        try:
            check_fits(job, 7 << 20, 2 << 20)
        except ProbeError as e:
            print(e)
        dist.destroy_process_group()
    """, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "rank 0 (node 0 emu:0 (small, EMULATED))" in r.stdout and "7.0 MiB" in r.stdout
    assert "8.0 MiB" in r.stdout and "2.0 MiB its stage holds" in r.stdout
