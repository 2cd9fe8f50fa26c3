"""Validation of the cost model against measured training steps on the local hal:N devices (wall clock).

The in-process executor's validation (one process, one thread per stage). The cost model is now validated on the
multi-process training runtime, every plan a `hal launch` job: bench/plan_validate_launch.py (docs/validation.md).

    python bench/plan_validate.py [--devices hal:1,hal:2,hal:3,hal:4] [--plans 24] [--plot docs/img/validation.png]
                                  [--json out.json] [--refresh]
    python bench/plan_validate.py --mode virtual      # the older torch-CPU harness on a VIRTUAL clock

Real path (default, --mode wall): every figure comes from the devices the plans run on.
  1. Profile the small transformer layer by layer ON one device of each kind (forward, backward, Adam step per
     micro-batch size: hal:1 for emu-fast, hal:3 for emu-slow), cached under ~/.cache/hal/profiles/.
  2. Fit latency + size / bandwidth of hal:i -> hal:j tensor copies (within and across kinds).
  3. Build >= 20 plans (the planner's best, random layer splits / pipeline depths / data-parallel shares /
     micro-batch sizes per device class, even splits, and pipelines that cross kinds), predict each one's step
     and run it with hal.plan.execute (one thread per stage on hal:N, tensors moved with .to(), all-reduce
     through a device, Adam): the median of --steps steps after a warm-up, wall clock.
  4. Report predicted vs measured for two predictions: the cost model exactly as the planner uses it, and the
     same cost model with the all-reduce the executor really does (`executor_step`: through the first
     replica's device, not a ring). MAPE and the worst case; the scatter plot.

The emu devices are EMULATED (the HAL bridge runs CPU kernels on their memory and paces each op to its CPU
time / relative speed); every line of output says so. Unless HAL_EMU_DEVICES is set, the script configures
2 x emu-fast at 0.5 and 2 x emu-slow at 0.25 of one host core, so that the four fit on a 2-core host
(`hal.plan.local.use_fitting_emulation`).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from hal.plan.cost import CostModel  # noqa: E402
from hal.plan.exhaustive import all_class_configs  # noqa: E402
from hal.plan.execute import PlanExecutor, ValidationRow, executor_step, validation_report  # noqa: E402
from hal.plan.model import TransformerConfig  # noqa: E402
from hal.plan.plan import Pipeline, Plan, Stage  # noqa: E402
from hal.plan.planner import PlannerOptions, build_plan, even_split, plan, split_batch  # noqa: E402
from hal.plan.torch_model import build_layers, lm_loss, make_tokens  # noqa: E402

CFG = TransformerConfig("validate-small", layers=4, hidden=256, heads=4, ffn=1024, vocab=2048, seq=128,
                        gated_mlp=False, dtype_bytes=4)


def describe(p: Plan, cluster) -> str:
    """e.g. "F[0-2|3-5] mb2x4 + S[0-5] mb1x2": per pipeline, kind letter per stage, layer ranges, mbs x count."""
    out = []
    for q in p.pipelines:
        kinds = "".join(dict.fromkeys(s.kind.split("-")[-1][0].upper() for s in q.stages))
        ranges = "|".join(f"{s.layers[0]}-{s.layers[1] - 1}" for s in q.stages)
        devs = ",".join(str(s.device_ids[0]) for s in q.stages)
        out.append(f"{kinds}{devs}[{ranges}] {q.micro_batch_size}x{q.num_micro_batches}")
    return " + ".join(out)


def make_plans(cluster, cm, spec, batch: int, n: int, mbs_options, seed: int) -> list[tuple[str, Plan]]:
    options = PlannerOptions(micro_batch_sizes=mbs_options, tp_degrees=(1,))
    classes = cluster.device_classes()
    per_class = [all_class_configs(cm, c, options, batch) for c in classes]
    rng = random.Random(seed)
    plans, seen = [], set()

    def add(tag: str, p: Plan | None) -> None:
        if p is None or p.signature() in seen or not cm.evaluate(p).fits:
            return
        seen.add(p.signature())
        plans.append((tag, p))

    best = plan(cluster, spec, batch, options).plan
    add("planner", best)
    add("even", even_split(best))
    # Pipelines across kinds (not in the planner's space, but costed by the same model).
    kinds = [c.kind for c in classes]
    if len(kinds) >= 2:
        ids = {c.kind: list(cluster.nodes[[nd.kind for nd in cluster.nodes].index(c.kind)].device_ids)
               for c in classes}
        a, b = kinds[0], kinds[1]
        L = len(spec.layers)
        for cut, mbs in ((L - 2, 2), (L // 2, 2), (L - 1, 4)):
            add("cross", Plan(spec.name, batch, spec.seq_len, [Pipeline(
                [Stage(a, [ids[a][0]], (0, cut)), Stage(b, [ids[b][0]], (cut, L))], mbs, batch // mbs, batch)]))
    tries = 0
    while len(plans) < n and tries < 20_000:
        tries += 1
        combo = [rng.choice(cs) for cs in per_class if rng.random() < 0.7]
        if not combo or sum(c.dp for c in combo) > batch:
            continue
        _, ms = split_batch([(c.total, c.slowest, c.dp * c.mbs) for c in combo], batch)
        p = build_plan(cm, combo, ms, batch)
        if p is not None and rng.random() < 0.25 and len(p.pipelines) > 1:
            add("random, even split", even_split(p))
        else:
            add("random", p)
    return plans[:n]


def run_wall(args) -> int:
    from hal.plan.local import hal_cluster, hal_torch_devices, profiled_model, use_fitting_emulation
    torch.set_num_threads(1)  # one core per operation: device threads compete for the host, not inside an op
    t_start = time.perf_counter()
    print(use_fitting_emulation())  # before HAL lists its devices
    devs = hal_torch_devices(args.devices)
    print("devices (EMULATED ones run CPU kernels on their own memory, paced to their relative speed):")
    for d in devs:
        print(f"  {d.label}  relative speed {d.relative_speed:g}")
    mbs_options = (1, 2, 4)
    speeds = {d.kind: d.relative_speed for d in devs}
    key = f"{CFG.name}-{args.profile_stat}-" + "-".join(f"{k}x{speeds[k]:g}" for k in sorted(speeds)) + \
        f"-{torch.__version__}"
    spec, cached = profiled_model(CFG.name, lambda: build_layers(CFG), lambda b: make_tokens(CFG, b), devs,
                                  mbs_options, CFG.seq, loss_fn=lm_loss, repeats=args.repeats,
                                  optimizer=lambda ps: torch.optim.Adam(ps, lr=1e-4), cache_key=key,
                                  refresh=args.refresh, log=lambda s: print("  " + s), stat=args.profile_stat)
    print(f"per-layer profile of {CFG.name} ({spec.params / 1e6:.2f} M parameters, {len(spec.layers)} layers): "
          f"{'cached' if cached else 'measured'} ({time.perf_counter() - t_start:.1f} s)")
    cluster, order, links = hal_cluster(devs)
    for kind, l in links["intra"].items():
        print(f"  copies within {kind}: {l.latency * 1e6:.0f} us + size / {l.bandwidth / 1e9:.2f} GB/s")
    if links["cross"]:
        print(f"  copies across kinds: {links['cross'].latency * 1e6:.0f} us + size / "
              f"{links['cross'].bandwidth / 1e9:.2f} GB/s")
    cm = CostModel(cluster, spec)
    plans = make_plans(cluster, cm, spec, args.batch, args.plans, mbs_options, args.seed)
    tokens = make_tokens(CFG, args.batch, seed=1)
    measured = []
    for tag, p in plans:
        ex = PlanExecutor(p, cluster, lambda: build_layers(CFG), lambda d: order[d], tokens, lm_loss, mode="wall")
        m = ex.measure(steps=args.steps, warmup=1)
        measured.append(m)
        print(f"  ran {describe(p, cluster):52s} {tag:18s} measured {m.step_time * 1e3:7.1f} ms", flush=True)
    rows_cm, rows_ex, results = [], [], []
    for (tag, p), m in zip(plans, measured):
        name = describe(p, cluster)
        pred_cm = cm.evaluate(p).step_time
        pred_ex, _ = executor_step(p, cm)
        rows_cm.append(ValidationRow(name, pred_cm, m.step_time))
        rows_ex.append(ValidationRow(name, pred_ex, m.step_time))
        results.append({"plan": p.to_dict(), "name": name, "tag": tag, "predicted_cost_model_s": pred_cm,
                        "predicted_executor_allreduce_s": pred_ex, "measured_s": m.step_time,
                        "measured_allreduce_s": m.allreduce_time, "measured_optimizer_s": m.optimizer_time})
    rep_cm = validation_report(rows_cm, True, mode="wall")
    rep_ex = validation_report(rows_ex, True, mode="wall")
    print("\n== cost model as the planner uses it (devices independent) ==")
    print(rep_cm.text())
    print("\n== the same cost model with the executor's all-reduce (through the first replica's device) ==")
    print(rep_ex.text())
    if args.plot:
        _plot(rows_cm, rows_ex, rep_cm, rep_ex, args.plot,
              ", ".join(f"{k} x{v:g}" for k, v in sorted(speeds.items())))
        print(f"wrote {args.plot}")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "emulated": True, "mode": "wall", "devices": [d.label for d in devs],
            "emu_config": os.environ.get("HAL_EMU_DEVICES"), "profile_stat": args.profile_stat,
            "links": {"intra": {k: [l.latency, l.bandwidth] for k, l in links["intra"].items()},
                      "cross": [links["cross"].latency, links["cross"].bandwidth] if links["cross"] else None},
            "mape_cost_model": rep_cm.mape, "worst_cost_model": rep_cm.worst.error,
            "mape_executor_allreduce": rep_ex.mape, "worst_executor_allreduce": rep_ex.worst.error,
            "plans": results},
            indent=1, default=float))
        print(f"wrote {args.json}")
    print(f"total {time.perf_counter() - t_start:.1f} s (EMULATED devices, wall clock)")
    return 0


def _plot(rows_cm, rows_ex, rep_cm, rep_ex, path, kinds: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5.6, 5.2))
    m = [r.measured * 1e3 for r in rows_cm]
    ax.scatter(m, [r.predicted * 1e3 for r in rows_cm], s=16, marker="x", color="#c44e52",
               label=f"cost model as planned (ring all-reduce): MAPE {rep_cm.mape:.1%}")
    ax.scatter(m, [r.predicted * 1e3 for r in rows_ex], s=18, color="#4c72b0",
               label=f"with the executor's all-reduce: MAPE {rep_ex.mape:.1%}")
    vals = m + [r.predicted * 1e3 for r in rows_cm + rows_ex]
    lo, hi = min(vals) * 0.9, max(vals) * 1.05
    ax.plot([lo, hi], [lo, hi], "k--", linewidth=0.8)
    ax.fill_between([lo, hi], [lo * 0.9, hi * 0.9], [lo * 1.1, hi * 1.1], color="0.9", label="±10 %", zorder=0)
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel("measured step time, wall clock (ms)")
    ax.set_ylabel("predicted step time (ms)")
    ax.set_title(f"{len(rows_cm)} plans on hal:N, EMULATED devices ({kinds})", fontsize=8.5)
    ax.legend(fontsize=7.5, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def run_virtual(args) -> int:
    """The older harness: torch CPU for every device, emulated half-speed devices on a VIRTUAL clock."""
    from hal.plan.local import ProbedDevice, local_cluster
    from hal.plan.profile_layers import profile_torch_layers
    from hal.plan.profile_devices import cached_profile
    torch.set_num_threads(1)
    cpu = cached_profile("cpu", "cpu")
    rs = 0.5
    probe = lambda: [ProbedDevice("cpu:0", "cpu", cpu.peak_flops, cpu.memory_bytes, cpu.memory_bandwidth,  # noqa
                                  profile_kind="cpu")] * 2 + \
        [ProbedDevice("emu:0", f"emu x{rs:g}", cpu.peak_flops * rs, cpu.memory_bytes, cpu.memory_bandwidth * rs,
                      True, rs, "cpu")] * 2
    cluster = local_cluster(probe)
    mbs_options = (1, 2, 4)
    spec = profile_torch_layers(build_layers(CFG), lambda b: make_tokens(CFG, b), kind="cpu",
                                micro_batches=mbs_options, seq_len=CFG.seq, name=CFG.name, repeats=9,
                                optimizer=lambda ps: torch.optim.Adam(ps, lr=1e-4), loss_fn=lm_loss)
    cm = CostModel(cluster, spec)
    plans = make_plans(cluster, cm, spec, args.batch, args.plans, mbs_options, args.seed)
    tokens = make_tokens(CFG, args.batch, seed=1)
    rows = []
    for tag, p in plans:
        ex = PlanExecutor(p, cluster, lambda: build_layers(CFG), lambda d: "cpu", tokens, lm_loss, mode="virtual")
        rows.append(ValidationRow(describe(p, cluster), cm.evaluate(p).step_time,
                                  ex.measure(steps=5, warmup=1).step_time))
    rep = validation_report(rows, emulated=True, plot=args.plot, mode="virtual")
    print(rep.text())
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--plans", type=int, default=24)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=5, help="measured steps per plan (median), after 1 warm-up")
    ap.add_argument("--repeats", type=int, default=11, help="profiler repeats per layer")
    ap.add_argument("--profile-stat", default="median", choices=["median", "min"],
                    help="per-layer figure: median of paired forward / forward+backward runs (default; the steps "
                         "are medians too) or the fastest run")
    ap.add_argument("--devices", default="hal:1,hal:2,hal:3,hal:4", help="hal devices the plans may use")
    ap.add_argument("--mode", default="wall", choices=["wall", "virtual"],
                    help="wall: real hal:N devices (default); virtual: torch CPU with a VIRTUAL clock")
    ap.add_argument("--refresh", action="store_true", help="profile again, ignoring the cache")
    ap.add_argument("--plot", help="scatter of predicted vs measured (PNG)")
    ap.add_argument("--json", help="every plan, prediction and measurement (JSON)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    return run_wall(args) if args.mode == "wall" else run_virtual(args)


if __name__ == "__main__":
    sys.exit(main())
