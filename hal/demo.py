"""`hal demo`: the mixed-cluster demo on EMULATED devices (`hal demo --tour`: the low-level API tour).

    hal demo                      # what `make demo` runs
    python -m hal.demo [--quick] [--out DIR] [--steps N] [--batch B] [--tour] [--refresh]
    HAL_DEMO_QUICK=1 HAL_DEMO_OUT=DIR hal demo      # the same options through the environment

1. lists the devices and makes the cluster: four emulated chips (2 x emu-fast, 2 x emu-slow; unless
   HAL_EMU_DEVICES is set, at 0.4 and 0.2 of one host core: with what a training process does besides its
   paced kernels, all four fit on a 2-core host with room to spare, and the report shows the cores they used);
2. trains a small GPT on Shakespeare (hal/train/job.py) on one device of each kind alone, through `hal launch`:
   the job profiles the layers on the device first (cached in OUT/profile.json);
3. trains it on every device alone at the same time (one independent job per device): the ideal is the sum of
   these throughputs; each kind's profile is calibrated by measured / predicted of these standalone steps;
4. runs the job on all four devices through `hal launch` (one process per device; the processes plan for the
   devices, train with checkpoints, show their progress), then every device alone at the same time again (the
   ideal is the mean of the two, which bracket the job: a host whose speed drifts shows as their difference),
   then the same pipelines with the even split;
5. reports measured vs predicted step time, tokens/s, the fraction of the ideal, the speedup over the even
   split, and writes OUT/summary.png and OUT/demo.json (OUT: --out, default ./hal-demo-out/).

Exit status 0 when the planned job's loss is finite and falls, 1 otherwise (with a message). See docs/training.md.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import hal
from hal._format import fmt_bytes as _fmt_bytes, print_table
from hal.inventory import print_devices
from hal.plan.local import host_cores

__all__ = ["add_arguments", "run", "main", "TRAINING_EMU_DEVICES", "Phase", "launch_job", "launch_jobs"]

# The emulated cluster of the training demo. A device's kernels are paced (cpu / speed), but what a training
# process does around them is not (Python, autograd, dispatch, the collectives' threads): measured, a device at
# 0.5 keeps 0.6 of a core busy. At 0.5 and 0.25 the four then need about 1.9 of this host's 2 cores and their
# times jitter with every other process; at 0.4 and 0.2 they need about 1.5 (the report prints what they used).
# ops=0: the chips run torch's tuned CPU kernels paced at their speed, not emu's own kernels (plain C loops, a
# plugin sample several times slower), so a speed stays a fraction of a host core.
TRAINING_EMU_DEVICES = "emu-fast:2:speed=0.4:ops=0;emu-slow:2:speed=0.2:ops=0"


# --- the low-level tour (hal demo --tour) ---------------------------------------------------------------------
def _copy_round_trip(dev: hal.Device, nbytes: int) -> tuple[float, float]:
    """GB/s host->device and device->host for `nbytes`, checking the data survives the trip."""
    src = np.random.default_rng(dev.index).integers(0, 255, nbytes, dtype=np.uint8)
    out = np.full(nbytes, 0xAB, dtype=np.uint8)  # Poisoned: a copy that did nothing is caught.
    buf = dev.alloc(nbytes)
    t0 = time.perf_counter()
    buf.copy_from(src)
    t1 = time.perf_counter()
    buf.copy_to(out)
    t2 = time.perf_counter()
    if not np.array_equal(src, out):
        raise RuntimeError(f"{dev.name}: data changed on a host->device->host round trip")
    buf.free()
    return nbytes / (t1 - t0) / 1e9, nbytes / (t2 - t1) / 1e9


def _timed_d2d(dev: hal.Device, nbytes: int) -> float:
    """Milliseconds for one device-to-device copy, timed by the device's own events."""
    a, b = dev.alloc(nbytes), dev.alloc(nbytes)
    s = dev.Stream()
    start, end = dev.Event(), dev.Event()
    start.record(s)
    b.copy_from(a, stream=s, non_blocking=True)
    end.record(s)
    end.synchronize()
    return start.elapsed_time(end)


def tour() -> int:
    print("== 1. Devices: every plugin's devices under one numbering ==")
    print_devices()

    print("\n== 2. Copies: 64 MiB host -> device -> host, verified ==")
    for dev in hal.devices():
        h2d, d2h = _copy_round_trip(dev, 64 << 20)
        label = " (emulated)" if dev.emulated else ""
        print(f"  {dev.name:8s}{label:12s} h2d {h2d:6.2f} GB/s   d2h {d2h:6.2f} GB/s   data ok")

    print("\n== 3. Streams and events: a device-to-device copy of 64 MiB, timed on each device ==")
    for dev in hal.devices():
        speed = f"relative speed {dev.properties.relative_speed:.2f} (emulated)" if dev.emulated else "native"
        print(f"  {dev.name:8s} {_timed_d2d(dev, 64 << 20):8.2f} ms   {speed}")

    print("\n== 4. Caching allocator: a freed block is reused, not returned to the plugin ==")
    dev = hal.devices()[-1]
    dev.empty_cache()
    before = dev.memory_stats()
    for _ in range(100):
        dev.alloc(1 << 20).free()
    after = dev.memory_stats()
    print(f"  {dev.name}: 100 alloc/free pairs of 1 MiB -> "
          f"{after.get('num_raw_allocs', 0) - before.get('num_raw_allocs', 0)} plugin allocation(s); "
          f"reserved {_fmt_bytes(after.get('reserved_bytes', 0))}, "
          f"allocated {_fmt_bytes(after.get('allocated_bytes', 0))}")

    print("\n== 5. Errors name what was wrong ==")
    try:
        dev.alloc(dev.properties.total_memory * 4)
    except hal.OutOfMemory as e:
        print(f"  hal.OutOfMemory: {e}")
    return 0


# --- the mixed-cluster demo ----------------------------------------------------------------------------------
def add_arguments(p: argparse.ArgumentParser) -> None:
    """The demo's flags (`hal demo --help`); each also has an environment variable HAL_DEMO_*."""
    p.add_argument("--quick", action="store_true", default=None, help="tiny model and few steps (tests)")
    p.add_argument("--out", help="folder for the runs, the summary PNG and demo.json (default ./hal-demo-out)")
    p.add_argument("--steps", type=int, help="steps of the planned job (default 200; --quick 12)")
    p.add_argument("--batch", type=int, help="global batch in sequences (default 128; --quick 16)")
    p.add_argument("--tour", action="store_true", default=None, help="the low-level API tour instead")
    p.add_argument("--refresh", action="store_true", default=None, help="profile again, ignoring the cache")


def _opt(args: argparse.Namespace, name: str, env: str, default=None, cast=str):
    v = getattr(args, name, None)
    if v is not None:
        return v
    e = os.environ.get(env)
    if e is None or e == "":
        return default
    if cast is bool:
        return e.lower() not in ("0", "false", "no")
    return cast(e)


@dataclass
class Phase:
    name: str            # "alone emu-fast", "planned", "even split"
    run_dir: Path
    devices: str         # hal launch --devices
    steps: int
    split: str = "planned"
    plan: Path | None = None  # hal launch --plan (None: the job plans)


def launch_job(phase: Phase, job_args: list[str], live: bool | None) -> dict:
    """Runs one job through `hal launch`, showing its progress from its metrics; returns its result.json."""
    return launch_jobs([phase], job_args, live)[0]


def launch_jobs(phases: list[Phase], job_args: list[str], live: bool | None) -> list[dict]:
    """Runs the phases' jobs at the same time, each through its own `hal launch`; shows the last one's progress
    from its metrics; returns their result.json, in order. Raises RuntimeError with the end of a failed one's log."""
    import shutil
    import subprocess

    from hal.train.progress import follow
    procs = []
    try:
        for ph in phases:
            shutil.rmtree(ph.run_dir, ignore_errors=True)
            ph.run_dir.mkdir(parents=True)
            cmd = [sys.executable, "-m", "hal.launch", "--devices", ph.devices, "--run-dir", str(ph.run_dir),
                   "--max-restarts", "0", *(["--plan", str(ph.plan)] if ph.plan else []), "-m", "hal.train.job", "--steps", str(ph.steps), "--split", ph.split,
                   "--live", "off", *job_args]
            log = open(ph.run_dir / "launch.log", "w")
            log.write("$ " + " ".join(cmd) + "\n")
            log.flush()
            procs.append((ph, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT), log))
        shown = phases[-1]
        title = f"{shown.name:16s}" if len(phases) == 1 else f"{len(phases)} jobs, e.g. {shown.name}"
        follow(shown.run_dir / "metrics.jsonl", lambda: any(p.poll() is None for _, p, _ in procs), shown.steps,
               title=title, live=live)
    except BaseException:
        for _, p, _ in procs:
            p.terminate()
        for _, p, _ in procs:
            p.wait(30)
        raise
    finally:
        for _, _, log in procs:
            log.close()
    results = []
    for ph, p, _ in procs:
        p.wait()
        if p.returncode != 0:
            path = ph.run_dir / "launch.log"
            tail = path.read_text().splitlines()[-25:]
            raise RuntimeError(f"{ph.name}: `hal launch` exited {p.returncode}; the end of {path}:\n  " +
                               "\n  ".join(tail))
        results.append(json.loads((ph.run_dir / "result.json").read_text()))
    return results


def _cores_sum(results: list[dict]) -> float | None:
    """Host cores the jobs' processes kept busy, summed over jobs running at the same time (result.json)."""
    used = [r.get("cpu_cores") for r in results]
    return sum(used) if used and all(u is not None for u in used) else None


def _cores(results: list[dict]) -> str:
    used = _cores_sum(results)
    return f"{used:.2f} of {host_cores()}" if used is not None else "-"


def mixed_cluster(args: argparse.Namespace) -> int:
    t_start = time.perf_counter()
    quick = bool(_opt(args, "quick", "HAL_DEMO_QUICK", False, bool))
    out = Path(_opt(args, "out", "HAL_DEMO_OUT", "hal-demo-out")).resolve()
    steps = max(4, int(_opt(args, "steps", "HAL_DEMO_STEPS", 12 if quick else 200, int)))
    refresh = bool(_opt(args, "refresh", "HAL_DEMO_REFRESH", False, bool))
    live = None  # rich's live display on a terminal, plain lines in logs

    from hal.parallel.profile import calibrated
    from hal.plan.local import use_fitting_emulation
    from hal.plan.model import ModelSpec
    from hal.train.progress import read_metrics, summary_png

    print("HAL demo: one training job, one process per device, across a mixed cluster of EMULATED accelerators")
    print("(emu devices are emulated: CPU kernels run on their memory, and a device of relative speed s takes the "
          "kernel's CPU time / s)")
    print(use_fitting_emulation(TRAINING_EMU_DEVICES) + "\n")  # before HAL lists its devices
    print("== 1. Devices ==")
    print_devices()
    devs = [d for d in hal.devices() if d.emulated]
    kinds = list(dict.fromkeys(d.properties.name for d in devs))
    if len(devs) < 2 or len(kinds) < 2:
        print(f"hal demo: needs emulated devices of two kinds (HAL_EMU_DEVICES), found "
              f"{', '.join(f'{d.name} ({d.properties.name})' for d in devs) or 'none'}", file=sys.stderr)
        return 1
    speed = {d.properties.name: float(d.properties.relative_speed) for d in devs}
    count = {k: sum(d.properties.name == k for d in devs) for k in kinds}
    first = {k: next(d.name for d in devs if d.properties.name == k) for k in kinds}
    model = "tiny" if quick else "small"
    batch = max(4, int(_opt(args, "batch", "HAL_DEMO_BATCH", 16 if quick else 128, int)))
    job_args = ["--model", model, "--batch", str(batch), "--micro-batch", "4", "--profile-repeats",
                "3" if quick else "5"]
    print("cluster: " + ", ".join(f"{count[k]} x {k} (EMULATED, {speed[k]:g} of a host core)" for k in kinds))
    out.mkdir(parents=True, exist_ok=True)
    profile = out / "profile.json"
    if refresh:
        profile.unlink(missing_ok=True)
    alone_steps = 4 if quick else 8

    print(f"\n== 2. Each kind alone: the {model} GPT, global batch {batch}, on one device of each kind "
          f"({alone_steps} steps; its layers are profiled on it first, cached in {profile.name}) ==")
    alone = {}
    for k in kinds:
        ph = Phase(f"alone {k}", out / f"alone-{k}", first[k], alone_steps)
        alone[k] = launch_job(ph, [*job_args, "--checkpoint-every", "0", "--profile", str(profile)], live)
        r = alone[k]
        print(f"  {first[k]} ({k}, EMULATED) alone: {r['measured_step_s'] * 1e3:.0f} ms per step, "
              f"{r['tokens_per_s']:.0f} tokens/s (the per-layer profile predicted {r['predicted_step_s'] * 1e3:.0f} "
              f"ms)")
    sequential = sum(alone[k]["tokens_per_s"] * count[k] for k in kinds)

    # Emulated devices share the host's cores: alone one after the other, each has the host to itself, which no
    # job of all of them together can have. The ideal is therefore measured with every device training alone
    # at the same time (one job per device, no communication): what these devices can do side by side here.
    # Steps in proportion to speed, so that all of them run for about the same time, side by side throughout.
    slowest = min(speed.values())

    def side_by_side(tag: str) -> list[dict]:
        return launch_jobs([Phase(f"alone {d.name}", out / f"alone-all{tag}-{d.name.replace(':', '')}", d.name,
                                   round(alone_steps * speed[d.properties.name] / slowest)) for d in devs],
                           [*job_args, "--checkpoint-every", "0", "--profile", str(profile)], live)

    print(f"\n== 3. Every device alone, all at the same time ({len(devs)} independent jobs, {alone_steps} steps: "
          f"the emulated devices share this host's cores as they do in the job) ==")
    together = side_by_side("")
    ideal_before = sum(r["tokens_per_s"] for r in together)
    for d, r in zip(devs, together):
        print(f"  {d.name} ({d.properties.name}, EMULATED): {r['measured_step_s'] * 1e3:.0f} ms per step, "
              f"{r['tokens_per_s']:.0f} tokens/s")
    factors = {k: statistics.median(r["measured_step_s"] / r["predicted_step_s"]
                                    for d, r in zip(devs, together) if d.properties.name == k) for k in kinds}
    spec = calibrated(ModelSpec.from_dict(json.loads(profile.read_text())), factors)
    cal = out / "profile-calibrated.json"
    cal.write_text(json.dumps(spec.to_dict()))
    print(f"  side by side: {ideal_before:.0f} tokens/s, the host's cores busy with them: {_cores(together)} "
          f"({sequential:.0f} tokens/s from the runs one at a time above, each with the host to itself)")
    print("  calibration: each kind's per-layer times x measured/predicted of its standalone steps here ("
          + ", ".join(f"{k} x{f:.2f}" for k, f in factors.items()) + ")")

    even_steps = max(4, steps // 4)
    print(f"\n== 4. The planned job: {len(devs)} processes through `hal launch` (one per device), {steps} steps; "
          f"every device alone side by side again; then the even split, {even_steps} steps ==")
    ck = ["--checkpoint-every", str(max(10, steps // 4)), "--profile", str(cal)]
    planned = launch_job(Phase("planned", out / "planned", "emu", steps), [*job_args, *ck], live)
    after = side_by_side("-after")
    ideal_after = sum(r["tokens_per_s"] for r in after)
    ideal = (ideal_before + ideal_after) / 2
    drift = (ideal_after - ideal_before) / ideal_before
    print(f"  side by side after the job: {ideal_after:.0f} tokens/s ({drift:+.1%} against before"
          + ("; the host's speed drifted: the fraction of the ideal carries that uncertainty" if abs(drift) > 0.03
             else "") + f"); ideal = their mean, {ideal:.0f} tokens/s")
    even = launch_job(Phase("even split", out / "even", "emu", even_steps, "even"), [*job_args, *ck], live)

    def rows_of(r: dict) -> str:
        return "; ".join(f"pipeline {j}: " + " -> ".join(f"{s['kind']} L{s['layers'][0]}-{s['layers'][1] - 1}"
                                                          for s in p["stages"]) + f", {p['samples']} samples"
                         for j, p in enumerate(r["plan"]["pipelines"]))
    print(f"  planned:    {rows_of(planned)}")
    print(f"  even split: {rows_of(even)}")
    if [p["samples"] for p in planned["plan"]["pipelines"]] == [p["samples"] for p in even["plan"]["pipelines"]]:
        print("  (the plan already splits the batch evenly: the two jobs ran the same plan, and their ratio is "
              "the host's noise)")

    print("\n== 5. Report (EMULATED devices, wall clock, median step after the warm-up) ==")
    table = []
    for name, r in (("planned", planned), ("even split", even)):
        table.append([name, f"{r['measured_step_s'] * 1e3:.0f} ms", f"{r['predicted_step_s'] * 1e3:.0f} ms "
                      f"({(r['predicted_step_s'] - r['measured_step_s']) / r['measured_step_s']:+.1%})",
                      f"{r['tokens_per_s']:.0f}", f"{r['tokens_per_s'] / ideal:.1%}",
                      f"{r['bubble_fraction']:.1%}" if r.get("bubble_fraction") is not None else "-",
                      _cores([r])])
    print_table("multi-process job", ["split", "measured step", "predicted", "tokens/s", "of ideal",
                                      "waiting (mean)", "host cores busy"], table)
    speedup = planned["tokens_per_s"] / even["tokens_per_s"]
    print(f"throughput: planned {speedup:.2f}x the even split; {planned['tokens_per_s'] / ideal:.1%} of the ideal "
          f"({ideal:.0f} tokens/s: every device alone at the same time, before and after the job, measured in this "
          f"run; {planned['tokens_per_s'] / ideal_before:.1%} of the one before, "
          f"{planned['tokens_per_s'] / ideal_after:.1%} of the one after); "
          f"{planned['tokens_per_s'] / sequential:.1%} of the devices alone one at a time ({sequential:.0f} tokens/s)")
    print(f"predicted vs measured step: {(planned['predicted_step_s'] - planned['measured_step_s']) / planned['measured_step_s']:+.1%} "
          f"(planned), {(even['predicted_step_s'] - even['measured_step_s']) / even['measured_step_s']:+.1%} (even split)")
    losses = [m["loss"] for m in read_metrics(out / "planned" / "metrics.jsonl")]
    runs = {"planned": {**planned, "emulated": True}, "even split": {**even, "emulated": True},
            "alone, all at once (ideal)": {"emulated": True, "per_kind_tokens_per_s": {
                k: sum(r["tokens_per_s"] for d, r in zip(devs, together) if d.properties.name == k) for k in kinds}}}
    png = summary_png(out / "summary.png", runs, f"hal demo: {model} GPT on {len(devs)} devices, global batch {batch}")
    doc = {"emulated": True, "devices": [f"{d.name} ({d.properties.name}, EMULATED)" for d in devs],
           "emu_config": os.environ.get("HAL_EMU_DEVICES"), "model": model, "global_batch": batch,
           "alone": alone, "alone_together": together, "alone_together_after": after, "ideal_tokens_per_s": ideal,
           "ideal_before_tokens_per_s": ideal_before, "ideal_after_tokens_per_s": ideal_after,
           "host_cores": host_cores(), "cpu_cores": {"planned": planned.get("cpu_cores"),
                                                     "even": even.get("cpu_cores"),
                                                     "alone_together": _cores_sum(together),
                                                     "alone_together_after": _cores_sum(after)},
           "sequential_alone_tokens_per_s": sequential, "calibration": factors, "planned": planned, "even": even,
           "speedup_vs_even": speedup, "fraction_of_ideal": planned["tokens_per_s"] / ideal,
           "fraction_of_sequential_alone": planned["tokens_per_s"] / sequential, "losses": losses,
           "seconds": time.perf_counter() - t_start}
    (out / "demo.json").write_text(json.dumps(doc, indent=1, default=float))
    print(f"\n== 6. Wrote {png} (throughput per kind, predicted vs measured, waiting) and {out / 'demo.json'}; "
          f"each job's metrics.jsonl, launch.log and checkpoints are under {out} ==")

    if not losses or not all(math.isfinite(x) for x in losses):
        print(f"hal demo: FAILED: the planned job's loss is not finite ({losses[-5:]})", file=sys.stderr)
        return 1
    tail = statistics.fmean(losses[-max(1, len(losses) // 10):])
    if not tail < losses[0]:
        print(f"hal demo: FAILED: the loss did not fall (first {losses[0]:.3f}, last {tail:.3f})", file=sys.stderr)
        return 1
    print(f"loss {losses[0]:.3f} -> {tail:.3f} over {len(losses)} steps (planned job): falling, OK")
    print(f"hal demo done in {time.perf_counter() - t_start:.0f} s (all devices EMULATED)")
    return 0


def run(args: argparse.Namespace) -> int:
    if _opt(args, "tour", "HAL_DEMO_TOUR", False, bool):
        return tour()
    return mixed_cluster(args)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="hal demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
