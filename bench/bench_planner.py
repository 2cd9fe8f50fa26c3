"""Planner speed and quality. Prints; asserts nothing (timings depend on the machine).

  * search time against the number of devices and of device kinds (llama-2-70b, 8-device nodes, kinds from the
    presets plus a slower H100 variant for the tenth), and on the preset clusters;
  * the same with every technique searched (ZeRO, recomputation, sequence parallelism, interleaving, overlap:
    `hal plan`'s default; the tables above are the runtime's space, PlannerOptions' default);
  * quality: the planner's step over the brute force's (tests/plan/brute_force.py: the same declared space,
    cross-kind pipelines included, the same cost model) on seeded random small clusters, and over the
    techniques' space on the optimality test's TECHNIQUE_SEEDS.

    python bench/bench_planner.py [--repeats 3] [--small-cases 60]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hal.plan.cluster import load_cluster, parse_cluster  # noqa: E402
from hal.plan.model import get_model  # noqa: E402
from hal.plan.planner import ALL_TECHNIQUES, NoPlanFits, PlannerOptions, plan  # noqa: E402
from tests.plan.brute_force import brute_force  # noqa: E402
from tests.plan.test_optimality import MODES, SMALL, TECHNIQUE_SEEDS, random_case, reference  # noqa: E402

KINDS = ["H100", "A100", "H20", "L40S", "MI300X", "Ascend910B", "Gaudi2", "Gaudi3", "MLU370", "H100-slow"]


def scaled_cluster(kinds: int, devices: int):
    """`devices` (rounded to whole 8-device nodes) spread evenly over the first `kinds` of KINDS."""
    nodes = max(1, devices // kinds // 8)
    text = ("name: scaled\nkinds:\n  - {name: H100-slow, base: H100, efficiency: 0.3}\n"
            "links:\n  inter_node: {bandwidth_gb_s: 50, latency_us: 10}\n  cross_kind: {bandwidth_gb_s: 25, latency_us: 20}\n"
            "nodes:\n" + "".join(f"  - {{kind: {k}, devices: 8, replicas: {nodes}}}\n" for k in KINDS[:kinds]))
    return parse_cluster(text)


def timed(cluster, model, batch: int, repeats: int, options: PlannerOptions | None = None):
    """(median wall seconds, median CPU seconds of this process, result): on a shared machine the CPU time is
    the steadier figure."""
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        r = plan(cluster, model, batch, options)
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall), statistics.median(cpu), r


def bench_scaling(repeats: int) -> None:
    model, batch = get_model("llama-2-70b"), 2048
    print(f"search time, {model.name} ({len(model.layers)} layers), global batch {batch} (median of {repeats}):")
    print(f"  {'kinds':>5} {'devices':>7} {'wall s':>7} {'cpu s':>7} {'configs':>7} {'combos':>7} {'step s':>7}  pipelines")
    for kinds, devices in [(1, 1000), (2, 1000), (4, 1000), (6, 1000), (8, 1000), (10, 1000),
                           (4, 100), (4, 10000), (10, 100), (10, 10000)]:
        cluster = scaled_cluster(kinds, devices)
        wall, cpu, r = timed(cluster, model, batch, repeats)
        shapes = sorted({"->".join(p.kinds) for p in r.plan.pipelines})
        print(f"  {kinds:5d} {cluster.num_devices:7d} {wall:7.3f} {cpu:7.3f} {r.evaluated:7d} {r.combinations:7d} "
              f"{r.estimate.step_time:7.2f}  {', '.join(shapes)}")
    for cluster_name, model_name, b in [("large-1024", "gpt3-175b", 1536), ("mixed-256", "llama-2-70b", 1024),
                                        ("mixed-256", "llama-2-13b", 512)]:
        cluster = load_cluster(cluster_name)
        wall, cpu, r = timed(cluster, get_model(model_name), b, repeats)
        print(f"  {cluster_name} ({cluster.num_devices} devices, {len(cluster.device_classes())} classes) {model_name} "
              f"batch {b}: {wall:.3f} s wall, {cpu:.3f} s cpu, step {r.estimate.step_time:.2f} s")


def bench_techniques(repeats: int) -> None:
    model, batch, options = get_model("llama-2-70b"), 2048, PlannerOptions(techniques=ALL_TECHNIQUES)
    print(f"every technique (hal plan's default), {model.name}, global batch {batch} (median of {repeats}):")
    print(f"  {'kinds':>5} {'devices':>7} {'wall s':>7} {'cpu s':>7} {'step s':>7}  techniques")
    for kinds, devices in [(1, 1000), (4, 1000), (10, 1000), (10, 10000)]:
        cluster = scaled_cluster(kinds, devices)
        wall, cpu, r = timed(cluster, model, batch, repeats, options)
        print(f"  {kinds:5d} {cluster.num_devices:7d} {wall:7.3f} {cpu:7.3f} {r.estimate.step_time:7.2f}  "
              f"{r.plan.techniques.label()}")
    for cluster_name, model_name, b in [("mixed-256", "llama-2-70b", 1024)]:
        cluster = load_cluster(cluster_name)
        wall, cpu, r = timed(cluster, get_model(model_name), b, repeats, options)
        print(f"  {cluster_name} {model_name} batch {b}: {wall:.3f} s wall, {cpu:.3f} s cpu, step "
              f"{r.estimate.step_time:.2f} s ({r.plan.techniques.label()})")


def _against_brute_force(seeds, case, options) -> tuple[list, int, float, float]:
    """(planner / brute force step ratios with their seeds, cases without any plan, planner s, brute force s):
    `case(seed)` gives (cluster, model, batch, the brute force's result or None)."""
    ratios, t_plan, t_ref, none = [], 0.0, 0.0, 0
    for seed in seeds:
        t0 = time.perf_counter()
        cluster, model, batch, ref = case(seed)
        t1 = time.perf_counter()
        try:
            found = plan(cluster, model, batch, options).estimate.step_time
        except NoPlanFits:
            found = float("inf")
        t_ref, t_plan = t_ref + t1 - t0, t_plan + time.perf_counter() - t1
        if ref is None:
            none += 1
            continue
        ratios.append((found / ref[1].step_time, seed))
    return ratios, none, t_plan, t_ref


def bench_quality(cases: int) -> None:
    def case(seed):
        cluster, model, batch = random_case(seed)
        return cluster, model, batch, brute_force(cluster, model, batch, SMALL.micro_batch_sizes, SMALL.tp_degrees)
    ratios, none, t_plan, t_ref = _against_brute_force(range(cases), case, SMALL)
    worst, seed = max(ratios)
    print(f"quality on {cases} random small clusters ({none} without any plan): planner / brute force optimal in "
          f"{sum(r <= 1 + 1e-9 for r, _ in ratios)} of {len(ratios)}, within 2 % in {sum(r <= 1.02 for r, _ in ratios)}, "
          f"worst {worst:.4f} (seed {seed}); planner {t_plan:.2f} s in total, brute force {t_ref:.1f} s")


def bench_quality_techniques() -> None:
    ratios, none, t_plan, t_ref = _against_brute_force(TECHNIQUE_SEEDS, lambda seed: reference(seed, True, True),
                                                       MODES["techniques"])
    worst, seed = max(ratios)
    print(f"quality over the techniques (64 settings) on {len(TECHNIQUE_SEEDS)} random small clusters ({none} without "
          f"any plan): optimal in {sum(r <= 1 + 1e-9 for r, _ in ratios)} of {len(ratios)}, worst {worst:.4f} "
          f"(seed {seed}); planner {t_plan:.2f} s in total, brute force {t_ref:.1f} s")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--small-cases", type=int, default=60)
    a = ap.parse_args()
    bench_scaling(a.repeats)
    bench_techniques(max(1, a.repeats // 3))
    bench_quality(a.small_cases)
    bench_quality_techniques()
