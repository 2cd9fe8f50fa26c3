"""Benchmark of the torch bridge: hal:N against plain CPU torch, as ratios measured in the same run.

    python bench/bench_torch.py [--device N] [--quick]

1. torch.empty(1 MiB) allocate + free on hal:N vs on CPU          (goal: <= 1.5x CPU time)
2. nn.TransformerEncoderLayer(d_model=512) forward + backward     (goal: <= 1.2x CPU time; emu at speed 1.0)
3. .to("hal:N") and .cpu() of 64 MiB vs a CPU clone() of it       (goal: >= 80 % of clone throughput)

The default device is the first emu device at relative speed 1.0 (its memory is reachable only through
memory_map and its streams run on a worker thread), else hal:0.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

import hal.torch  # noqa: F401  (registers the backend when the entry point did not)


def best_of(fn, repeats: int, inner: int = 1) -> float:
    """Median seconds per call of fn over `repeats` timings of `inner` calls each (after one warm-up)."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        times.append((time.perf_counter() - t0) / inner)
    return statistics.median(times)


def default_device() -> int:
    for i in range(torch.hal.device_count()):
        p = torch.hal.get_device_properties(i)
        if torch.hal.get_device_name(i).startswith("emu:") and p.relative_speed >= 1.0:
            return i
    return 0


def bench_alloc(dev: torch.device, quick: bool) -> tuple[float, float]:
    n = 1 << 20
    inner = 2000 if quick else 20000

    def on(device):
        return lambda: torch.empty(n, dtype=torch.uint8, device=device)

    return best_of(on(dev), 5, inner), best_of(on("cpu"), 5, inner)


def bench_transformer(dev: torch.device, quick: bool) -> tuple[float, float]:
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(d_model=512, nhead=8, dim_feedforward=2048, dropout=0.0, batch_first=True)
    x = torch.randn(8, 128, 512)
    layer_dev, x_dev = nn.TransformerEncoderLayer(d_model=512, nhead=8, dim_feedforward=2048, dropout=0.0,
                                                  batch_first=True).to(dev), x.to(dev)
    layer_dev.load_state_dict(layer.state_dict())

    def step(model, inp, sync):
        def run():
            model.zero_grad(set_to_none=True)
            model(inp).sum().backward()
            sync()
        return run

    repeats = 3 if quick else 7
    t_dev = best_of(step(layer_dev, x_dev, lambda: torch.hal.synchronize(dev)), repeats)
    t_cpu = best_of(step(layer, x, lambda: None), repeats)
    return t_dev, t_cpu


def bench_transfer(dev: torch.device, quick: bool) -> tuple[float, float, float]:
    host = torch.randn(16 << 20)  # 64 MiB
    on_dev = host.to(dev)
    repeats = 5 if quick else 15
    t_to = best_of(lambda: host.to(dev), repeats)
    t_back = best_of(lambda: on_dev.cpu(), repeats)
    t_clone = best_of(lambda: host.clone(), repeats)
    return t_to, t_back, t_clone


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", type=int, default=None, help="hal device index (default: first emu at speed 1.0)")
    ap.add_argument("--quick", action="store_true", help="fewer repetitions")
    args = ap.parse_args()
    index = default_device() if args.device is None else args.device
    dev = torch.device("hal", index)
    print(f"device {dev} = {torch.hal.get_device_name(index)}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")

    t_dev, t_cpu = bench_alloc(dev, args.quick)
    print(f"empty(1 MiB) alloc+free      hal {t_dev * 1e6:8.2f} us   cpu {t_cpu * 1e6:8.2f} us   "
          f"ratio {t_dev / t_cpu:5.2f}x  (goal <= 1.5x)")
    t_dev, t_cpu = bench_transformer(dev, args.quick)
    print(f"TransformerEncoderLayer f+b  hal {t_dev * 1e3:8.2f} ms   cpu {t_cpu * 1e3:8.2f} ms   "
          f"ratio {t_dev / t_cpu:5.2f}x  (goal <= 1.2x)")
    t_to, t_back, t_clone = bench_transfer(dev, args.quick)
    gib = 64 / 1024
    print(f"64 MiB .to(hal)              {gib / t_to:6.2f} GiB/s   clone {gib / t_clone:6.2f} GiB/s   "
          f"{100 * t_clone / t_to:5.1f} % of clone  (goal >= 80 %)")
    print(f"64 MiB .cpu()                {gib / t_back:6.2f} GiB/s   clone {gib / t_clone:6.2f} GiB/s   "
          f"{100 * t_clone / t_back:5.1f} % of clone  (goal >= 80 %)")
    stats = torch.hal.fallback_stats()
    top = sorted(stats.items(), key=lambda kv: -kv[1])[:5]
    print("most frequent fallback ops:", ", ".join(f"{k} x{v}" for k, v in top))


if __name__ == "__main__":
    main()
