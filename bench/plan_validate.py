"""Validation of the cost model against measured training steps: >= 20 plans of a small transformer.

Profiles the model layer by layer on the same devices (measured forward/backward/optimizer times, not
datasheets), predicts each plan's step with the cost model, runs the plan with hal.plan.execute and reports
MAPE and the worst case. Today the devices are torch CPU: two "cpu" stages at native speed and two emulated
devices at half speed (virtual time, labelled EMULATED). With the HAL torch backend, pass --devices hal:0,hal:1,...
and --mode wall.

    python bench/plan_validate.py [--plans 24] [--plot validation.png]
"""
from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from hal.plan.cost import CostModel  # noqa: E402
from hal.plan.exhaustive import all_class_configs  # noqa: E402
from hal.plan.execute import PlanExecutor, ValidationRow, validation_report  # noqa: E402
from hal.plan.local import ProbedDevice, local_cluster  # noqa: E402
from hal.plan.model import TransformerConfig, profile_torch_layers  # noqa: E402
from hal.plan.planner import PlannerOptions, build_plan, plan, split_batch  # noqa: E402
from hal.plan.profile_devices import cached_profile  # noqa: E402
from hal.plan.torch_model import build_layers, lm_loss, make_tokens  # noqa: E402

CFG = TransformerConfig("validate-small", layers=4, hidden=256, heads=4, ffn=1024, vocab=2048, seq=128,
                        gated_mlp=False, dtype_bytes=4)


def _merge_min(spec, other) -> None:
    for a, b in zip(spec.layers, other.layers):
        for kind, per in b.measured.items():
            for mbs, (f, bw) in per.items():
                f0, b0 = a.measured[kind][mbs]
                a.measured[kind][mbs] = (min(f0, f), min(b0, bw))
        for kind, t in b.measured_optimizer.items():
            a.measured_optimizer[kind] = min(a.measured_optimizer[kind], t)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--plans", type=int, default=24)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--devices", default="cpu,cpu,cpu,cpu", help="torch device per device id")
    ap.add_argument("--emulated-speed", type=float, default=0.5, help="relative speed of devices 2 and 3")
    ap.add_argument("--mode", default="virtual", choices=["virtual", "wall"])
    ap.add_argument("--plot", help="scatter of predicted vs measured (PNG)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)  # one core per operation: timings stable on a shared 2-core host
    devices = args.devices.split(",")
    t_start = time.perf_counter()

    cpu = cached_profile("cpu", "cpu")
    rs = args.emulated_speed
    probe = lambda: [ProbedDevice("cpu:0", "cpu", cpu.peak_flops, cpu.memory_bytes, cpu.memory_bandwidth,
                                  profile_kind="cpu")] * 2 + \
                    [ProbedDevice("emu:0", f"emu x{rs:g}", cpu.peak_flops * rs, cpu.memory_bytes,
                                  cpu.memory_bandwidth * rs, True, rs, "cpu")] * 2  # noqa: E731
    cluster = local_cluster(probe)
    mbs_options = (1, 2, 4)
    def profile():
        return profile_torch_layers(build_layers(CFG), lambda b: make_tokens(CFG, b), device=devices[0], kind="cpu",
                                    micro_batches=mbs_options, seq_len=CFG.seq, name=CFG.name, repeats=9,
                                    optimizer=lambda ps: torch.optim.Adam(ps, lr=1e-4), loss_fn=lm_loss)
    spec = profile()
    print(f"profiled {CFG.name}: {spec.params / 1e6:.2f} M parameters, {len(spec.layers)} layers, on "
          f"{devices[0]} in {time.perf_counter() - t_start:.1f} s")
    cm = CostModel(cluster, spec)
    options = PlannerOptions(micro_batch_sizes=mbs_options, tp_degrees=(1,))
    classes = cluster.device_classes()
    per_class = [all_class_configs(cm, c, options, args.batch) for c in classes]
    rng = random.Random(args.seed)
    plans, seen = [], set()
    best = plan(cluster, spec, args.batch, options)
    plans.append(("planner best", best.plan))
    seen.add(best.plan.signature())
    tries = 0
    while len(plans) < args.plans and tries < 10_000:
        tries += 1
        combo = [rng.choice(cs) for cs in per_class if rng.random() < 0.75]
        if not combo or sum(c.dp for c in combo) > args.batch:
            continue
        _, ms = split_batch([(c.A, c.S, c.dp * c.mbs) for c in combo], args.batch)
        p = build_plan(cm, combo, ms, args.batch)
        if p is None or p.signature() in seen or not cm.evaluate(p).fits:
            continue
        seen.add(p.signature())
        name = " | ".join(f"{c.cls.name}:pp{c.pp} dp{c.dp} mb{c.mbs} L{list(c.bounds)}" for c in combo)
        plans.append((name[:40], p))

    tokens = make_tokens(CFG, args.batch, seed=1)
    measured = []
    for name, p in plans:
        ex = PlanExecutor(p, cluster, lambda: build_layers(CFG), lambda d: devices[d % len(devices)], tokens,
                          lm_loss, mode=args.mode)
        measured.append(ex.measure(steps=5, warmup=1).step_time)
    # Profile again after the runs and keep the faster figure per layer: on a shared host, load that came and
    # went during the first profile must not bias every prediction (both sides take their fastest runs).
    _merge_min(spec, profile())
    cm = CostModel(cluster, spec)
    rows = [ValidationRow(name, cm.evaluate(p).step_time, t) for (name, p), t in zip(plans, measured)]
    rep = validation_report(rows, emulated=any(k.emulated for k in cluster.kinds.values()), plot=args.plot)
    print(rep.text())
    print(f"total {time.perf_counter() - t_start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
