"""Planner speed: 1024 devices of 3 kinds x a 96-layer model against the 1 s goal, and quality against
exhaustive search on small clusters (same cost model).

    python bench/bench_planner.py [--repeats 5]
"""
from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hal.plan.cluster import load_cluster, parse_cluster  # noqa: E402
from hal.plan.exhaustive import exhaustive_plan  # noqa: E402
from hal.plan.model import TransformerConfig, get_model, transformer  # noqa: E402
from hal.plan.planner import PlannerOptions, plan  # noqa: E402

GOAL_S = 1.0


def bench_large(repeats: int) -> None:
    cases = [("large-1024", "gpt3-175b", 1536), ("large-1024", "llama-2-70b", 2048), ("mixed-256", "llama-2-70b", 1024)]
    for cluster_name, model_name, batch in cases:
        cluster, model = load_cluster(cluster_name), get_model(model_name)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            r = plan(cluster, model, batch)
            times.append(time.perf_counter() - t0)
        best, med = min(times), statistics.median(times)
        status = "OK" if med < GOAL_S else "OVER"
        print(f"{cluster_name:11s} ({cluster.num_devices:4d} devices, {len(cluster.device_classes())} classes) "
              f"{model_name:12s} ({len(model.layers)} layers) batch {batch}: median {med:.3f} s, best {best:.3f} s "
              f"[{status} vs {GOAL_S:.0f} s goal]; {r.evaluated} configs, {r.combinations} combinations, "
              f"step {r.estimate.step_time:.2f} s, {r.estimate.tokens_per_s:,.0f} tokens/s")


def bench_small(cases: int) -> None:
    kinds = ["H100", "A100", "L40S", "MI300X", "Ascend910B", "MLU370", "Gaudi2", "H20"]
    opts = PlannerOptions(micro_batch_sizes=(1, 2), tp_degrees=(1, 2, 4))
    worst, t_fast, t_exh = 1.0, 0.0, 0.0
    for seed in range(cases):
        rng = random.Random(1000 + seed)
        nodes = []
        for k in rng.sample(kinds, 2):
            d = rng.choice([1, 2, 4])
            nodes.append(f"  - {{kind: {k}, devices: {d}, replicas: {rng.choice([1, 2]) if d < 4 else 1}}}")
        text = "name: s\nlinks:\n  inter_node: {bandwidth_gb_s: %d, latency_us: 10}\nnodes:\n" % rng.choice([5, 25, 100])
        cluster = parse_cluster(text + "\n".join(nodes))
        model = transformer(TransformerConfig("t", rng.choice([2, 3]), 2048, 16, 8192, 32000, rng.choice([512, 2048])))
        batch = rng.choice([8, 16])
        t0 = time.perf_counter()
        fast = plan(cluster, model, batch, opts)
        t1 = time.perf_counter()
        _, ref, n = exhaustive_plan(cluster, model, batch, opts)
        t2 = time.perf_counter()
        t_fast, t_exh = t_fast + t1 - t0, t_exh + t2 - t1
        ratio = fast.estimate.step_time / ref.step_time
        worst = max(worst, ratio)
        print(f"  case {seed}: {cluster.num_devices} devices {[c.name for c in cluster.device_classes()]}, "
              f"planner/exhaustive = {ratio:.4f} ({n} plans searched exhaustively)")
    print(f"small cases: worst planner/exhaustive {worst:.4f} (goal <= 1.02); planner {t_fast:.2f} s in total, "
          f"exhaustive {t_exh:.2f} s")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--small-cases", type=int, default=8)
    a = ap.parse_args()
    bench_large(a.repeats)
    bench_small(a.small_cases)
