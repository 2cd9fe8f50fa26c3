"""`hal demo`: the mixed-cluster demo on EMULATED devices (`hal demo --tour`: the low-level API tour).

    hal demo                      # what `make demo` runs
    python -m hal.demo [--quick] [--out DIR] [--steps N] [--tour] [--refresh]
    HAL_DEMO_QUICK=1 HAL_DEMO_OUT=DIR hal demo      # the same options through the environment

1. lists the devices: the CPU and four emulated chips (2 x emu-fast, 2 x emu-slow; unless HAL_EMU_DEVICES is set,
   at 0.5 and 0.25 of one host core, so that all four fit on a 2-core host and emulated time stays stable);
2. profiles a small transformer layer by layer ON each emulated kind (forward, backward, Adam; cached, so a
   second run is quick) and the hal:i -> hal:j copies between them;
3. plans it across the mixed cluster with the planner: prints the plan and the predicted step against the even
   batch split;
4. trains it for some steps with that plan on hal:1..hal:4 (one thread per device, activations moved with
   .to(), gradients all-reduced through a device) and then with the even split, printing the loss;
5. compares measured step times with the predictions, and the measured speedup of the planned uneven split over
   the even split;
6. writes the timeline (predicted and measured) as a PNG into --out (default ./hal-demo-out/).

Exit status 0 when the loss is finite and decreasing, 1 otherwise (with a message).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

import hal
from hal._format import fmt_bytes as _fmt_bytes, print_table
from hal.inventory import print_devices

__all__ = ["add_arguments", "run", "main"]


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
    p.add_argument("--out", help="folder for the timeline PNG and the plan JSON (default ./hal-demo-out)")
    p.add_argument("--steps", type=int, help="training steps per plan (default 8; --quick 4)")
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


def _cfg(quick: bool):
    from hal.plan.model import TransformerConfig
    if quick:
        return TransformerConfig("demo-tiny", layers=2, hidden=64, heads=2, ffn=256, vocab=256, seq=32,
                                 gated_mlp=False, dtype_bytes=4)
    return TransformerConfig("demo-small", layers=4, hidden=192, heads=4, ffn=768, vocab=1024, seq=64,
                             gated_mlp=False, dtype_bytes=4)


def _table(title: str, columns: list[str], rows: list[list[str]]) -> None:
    print_table(title, columns, rows)


def _plan_rows(p, cluster, order, est) -> list[list[str]]:
    rows = []
    for j, (q, sc) in enumerate(zip(p.pipelines, est.stages)):
        for i, (st, c) in enumerate(zip(q.stages, sc)):
            kind = cluster.kinds[st.kind]
            rows.append([str(j), order[st.device_ids[0]], kind.label, f"{st.layers[0]}-{st.layers[1] - 1}",
                         f"{q.samples} ({q.samples / p.global_batch:.0%})" if i == 0 else "",
                         f"{q.num_micro_batches} x {q.micro_batch_size}" if i == 0 else "",
                         f"{q.num_micro_batches * (c.fwd + c.bwd) * 1e3:.0f} ms"])
    return rows


def mixed_cluster(args: argparse.Namespace) -> int:
    t_start = time.perf_counter()
    quick = bool(_opt(args, "quick", "HAL_DEMO_QUICK", False, bool))
    out = Path(_opt(args, "out", "HAL_DEMO_OUT", "hal-demo-out"))
    steps = max(2, int(_opt(args, "steps", "HAL_DEMO_STEPS", 4 if quick else 8, int)))
    refresh = bool(_opt(args, "refresh", "HAL_DEMO_REFRESH", False, bool))

    import torch

    from hal.plan.cost import CostModel
    from hal.plan.execute import PlanExecutor, executor_step
    from hal.plan.local import hal_cluster, hal_torch_devices, profiled_model, use_fitting_emulation
    from hal.plan.planner import NoPlanFits, PlannerOptions, even_split, plan
    from hal.plan.plot import plot_timelines
    from hal.plan.torch_model import build_layers, lm_loss, make_pattern_tokens
    torch.set_num_threads(1)  # each device thread computes on one host core

    print("HAL demo: plan and train a small transformer across a mixed cluster of EMULATED accelerators")
    print("(emu devices are emulated: CPU kernels run on their memory, and a device of relative speed s takes the "
          "kernel's CPU time / s)")
    print(use_fitting_emulation() + "\n")  # before HAL lists its devices
    print("== 1. Devices ==")
    print_devices()
    every = hal_torch_devices()
    devs = [d for d in every if d.emulated]
    kinds = sorted({d.kind for d in devs})
    if len(devs) < 2:
        print(f"hal demo: needs at least two emulated devices (set HAL_EMU_DEVICES), found {len(devs)}",
              file=sys.stderr)
        return 1
    print(f"cluster: {', '.join(d.torch for d in devs)} = " + ", ".join(
        f"{sum(d.kind == k for d in devs)} x {k} (EMULATED, relative speed "
        f"{next(d.relative_speed for d in devs if d.kind == k):g})" for k in kinds))

    cfg = _cfg(quick)
    batch = 8 if quick else 48
    # Micro-batches of 4 sequences: smaller ones of this small model are dominated by the per-op dispatch of one
    # Python process driving four devices, which the cost model does not model (docs/validation.md).
    mbs_options = (1, 2) if quick else (4,)
    print(f"\n== 2. Profile: {cfg.name} ({cfg.layers} blocks, hidden {cfg.hidden}, sequence {cfg.seq}) measured "
          f"layer by layer on each emulated kind ==")
    speeds = {d.kind: d.relative_speed for d in devs}
    key = f"{cfg.name}-median-" + "-".join(f"{k}x{speeds[k]:g}" for k in kinds) + f"-{torch.__version__}"
    spec, cached = profiled_model(cfg.name, lambda: build_layers(cfg), lambda b: make_pattern_tokens(cfg, b), devs,
                                  mbs_options, cfg.seq, loss_fn=lm_loss, repeats=3 if quick else 5,
                                  optimizer=lambda ps: torch.optim.Adam(ps, lr=1e-4), cache_key=key,
                                  refresh=refresh, log=lambda s: print("  " + s), stat="median")
    cluster, order, links = hal_cluster(devs)
    print(f"  per-layer forward/backward/Adam times: {'from the cache' if cached else 'measured now, cached'} "
          f"({spec.params / 1e6:.2f} M parameters, {len(spec.layers)} layers)")
    for k, l in links["intra"].items():
        print(f"  copies within {k}: {l.latency * 1e6:.0f} us + size / {l.bandwidth / 1e9:.1f} GB/s (measured)")
    if links["cross"]:
        print(f"  copies across kinds: {links['cross'].latency * 1e6:.0f} us + size / "
              f"{links['cross'].bandwidth / 1e9:.1f} GB/s (measured)")
    print(f"\n== 3. Plan: global batch {batch} sequences over the {len(devs)} emulated devices, micro-batches of "
          f"{' or '.join(map(str, mbs_options))} ==")
    options = PlannerOptions(micro_batch_sizes=mbs_options, tp_degrees=(1,))
    try:
        result = plan(cluster, spec, batch, options)
    except NoPlanFits as e:
        print(f"hal demo: {e}", file=sys.stderr)
        return 1
    cm = CostModel(cluster, spec)
    planned = result.plan
    even = even_split(planned)
    est, est_even = result.estimate, cm.evaluate(even)
    # What the executor runs: the cost model's step with its all-reduce (through a device, not a ring).
    sh, sh_events = executor_step(planned, cm, record=True)
    sh_even, _ = executor_step(even, cm)
    _table("planned (EMULATED devices)", ["pipeline", "device", "kind", "layers", "batch share", "micro-batches",
                                          "compute"], _plan_rows(planned, cluster, order, est))
    print(f"predicted step: {est.step_time * 1e3:.0f} ms (cost model as planned), {sh * 1e3:.0f} ms (with the "
          f"executor's all-reduce)")
    print(f"even batch split over the same pipelines: {est_even.step_time * 1e3:.0f} ms / {sh_even * 1e3:.0f} ms "
          f"-> predicted speedup of the plan {est_even.step_time / est.step_time:.2f}x / {sh_even / sh:.2f}x")

    print(f"\n== 4. Train: {steps} steps with the plan and {steps} with the even split, in turn, on "
          f"{', '.join(order)} (EMULATED) ==")
    data = [make_pattern_tokens(cfg, batch, seed=100 + s) for s in range(steps + 1)]
    same = even.signature() == planned.signature()
    if same:
        print("  (the plan already splits the batch evenly: the even-split run repeats it)")
    # The two placements train step by step in turn, so that a change in the host's load while the demo runs
    # slows both alike instead of tilting the comparison.
    runs = {name: PlanExecutor(p, cluster, lambda: build_layers(cfg), lambda d: order[d], data[0], lm_loss,
                               mode="wall", lr=3e-3) for name, p in (("planned", planned), ("even split", even))}
    results = {name: {"losses": [], "times": [], "last": None} for name in runs}
    for s in range(steps):
        for name, ex in runs.items():
            ex.batch = data[s % len(data)]
            m = ex.step()
            r = results[name]
            r["losses"].append(m.loss)
            r["times"].append(m.step_time)
            r["last"] = m
            print(f"  {name:10s} step {s + 1:2d}  loss {m.loss:7.4f}  step time {m.step_time * 1e3:6.0f} ms")

    print("\n== 5. Measured vs predicted (EMULATED devices, wall clock, median step) ==")
    # The first steps warm each device's kernels and allocator up: not counted (two of them from 5 steps on).
    warm = 2 if steps >= 5 else 1 if steps > 2 else 0
    med = {k: statistics.median(v["times"][warm:]) for k, v in results.items()}
    rows = []
    for name, e, s in (("planned", est, sh), ("even split", est_even, sh_even)):
        rows.append([name, f"{med[name] * 1e3:.0f} ms", f"{e.step_time * 1e3:.0f} ms "
                     f"({(e.step_time - med[name]) / med[name]:+.0%})", f"{s * 1e3:.0f} ms ({(s - med[name]) / med[name]:+.0%})"])
    _table("step time", ["plan", "measured", "predicted: cost model", "predicted: executor's all-reduce"], rows)
    speedup = med["even split"] / med["planned"]
    print(f"measured speedup of the planned split over the even split: {speedup:.2f}x "
          f"(predicted {est_even.step_time / est.step_time:.2f}x by the cost model, {sh_even / sh:.2f}x with the "
          f"executor's all-reduce)")
    print("note: the emulated devices compute on this host's cores, paced by the CPU time of their kernels; on real "
          "accelerators each has its own.")

    out.mkdir(parents=True, exist_ok=True)
    png = out / "timeline.png"
    labels = [(j, i, f"{order[st.device_ids[0]]} {cluster.kinds[st.kind].name} L{st.layers[0]}-{st.layers[1] - 1}")
              for j, q in enumerate(planned.pipelines) for i, st in enumerate(q.stages)]
    last = results["planned"]["last"]
    plot_timelines(png, [("predicted (cost model, executor's all-reduce)", sh_events, sh),
                         ("measured (last planned step, wall clock)", last.events, last.step_time)], labels,
                   f"hal demo: planned step on EMULATED devices ({', '.join(f'{k} x{speeds[k]:g}' for k in kinds)}), "
                   f"predicted vs measured")
    doc = {"emulated": True, "devices": [d.label for d in devs], "model": cfg.name, "global_batch": batch,
           "emu_config": os.environ.get("HAL_EMU_DEVICES"), "plan": planned.to_dict(),
           "predicted_s": {"planned": est.step_time, "even": est_even.step_time, "planned_executor_allreduce": sh,
                           "even_executor_allreduce": sh_even},
           "measured_median_s": med, "speedup_measured": speedup,
           "losses": {k: v["losses"] for k, v in results.items()}}
    (out / "demo.json").write_text(json.dumps(doc, indent=1, default=float))
    print(f"\n== 6. Wrote {png.resolve()} (predicted and measured timelines) and {(out / 'demo.json').resolve()} ==")

    bad = []
    for name, r in results.items():
        ls = r["losses"]
        if not all(math.isfinite(x) for x in ls):
            bad.append(f"{name}: loss is not finite ({ls})")
        elif not statistics.fmean(ls[len(ls) // 2:]) < ls[0]:  # each step sees a new batch: allow noise
            bad.append(f"{name}: loss did not decrease (first {ls[0]:.4f}, mean of the last half "
                       f"{statistics.fmean(ls[len(ls) // 2:]):.4f})")
    if bad:
        print("hal demo: FAILED: " + "; ".join(bad), file=sys.stderr)
        return 1
    a, b = results["planned"]["losses"], results["even split"]["losses"]
    print(f"loss {a[0]:.3f} -> {a[-1]:.3f} (planned), {b[0]:.3f} -> {b[-1]:.3f} (even split: same model, same "
          f"data, different placement); finite and decreasing: OK")
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
