"""Benchmark of the torch bridge: hal:N against plain CPU torch, as ratios measured in the same run.

    python bench/bench_torch.py [--device N] [--quick]

Each pair is timed in interleaved rounds and the best round counts (see interleaved()).

1. torch.empty(1 MiB) allocate + free on hal:N vs on CPU          (goal: <= 1.5x CPU time)
2. nn.TransformerEncoderLayer(d_model=512) forward + backward     (goal: <= 1.2x CPU time; emu at speed 1.0)
3. .to("hal:N") and .cpu() of 64 MiB vs a CPU clone() of it       (goal: >= 80 % of clone throughput)

The default device is the first emu device at relative speed 1.0 (its memory is reachable only through
memory_map and its streams run on a worker thread), else hal:0.
"""
from __future__ import annotations

import argparse
import time
from typing import Callable

import torch
from torch import nn

import hal.torch  # noqa: F401  (registers the backend when the entry point did not)


def interleaved(fns: dict[str, Callable[[], object]], rounds: int, inner: int = 1) -> dict[str, float]:
    """Best seconds per call of each fn: `rounds` rounds, each timing `inner` calls of every fn in turn.

    The machine is shared and noisy: interleaving gives the baseline and the measurement the same conditions,
    and the best round is the one least disturbed. Every fn runs once before timing (warm-up).
    """
    for fn in fns.values():
        fn()
    best = {name: float("inf") for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            for _ in range(inner):
                fn()
            best[name] = min(best[name], (time.perf_counter() - t0) / inner)
    return best


def default_device() -> int:
    for i in range(torch.hal.device_count()):
        p = torch.hal.get_device_properties(i)
        if torch.hal.get_device_name(i).startswith("emu:") and p.relative_speed >= 1.0:
            return i
    return 0


def bench_alloc(dev: torch.device, quick: bool) -> tuple[float, float]:
    n = 1 << 20
    t = interleaved({"hal": lambda: torch.empty(n, dtype=torch.uint8, device=dev),
                     "cpu": lambda: torch.empty(n, dtype=torch.uint8, device="cpu")},
                    rounds=5 if quick else 20, inner=2000)
    return t["hal"], t["cpu"]


def bench_transformer(dev: torch.device, quick: bool) -> tuple[float, float]:
    torch.manual_seed(0)
    kwargs = dict(d_model=512, nhead=8, dim_feedforward=2048, dropout=0.0, batch_first=True)
    layer = nn.TransformerEncoderLayer(**kwargs)
    layer_dev = nn.TransformerEncoderLayer(**kwargs).to(dev)
    layer_dev.load_state_dict(layer.state_dict())
    x = torch.randn(8, 128, 512)
    x_dev = x.to(dev)

    def step(model, inp, sync):
        def run():
            model.zero_grad(set_to_none=True)
            model(inp).sum().backward()
            sync()
        return run

    t = interleaved({"hal": step(layer_dev, x_dev, lambda: torch.hal.synchronize(dev)),
                     "cpu": step(layer, x, lambda: None)}, rounds=3 if quick else 9)
    return t["hal"], t["cpu"]


def bench_transfer(dev: torch.device, quick: bool) -> tuple[float, float, float]:
    host = torch.randn(16 << 20)  # 64 MiB
    on_dev = host.to(dev)
    t = interleaved({"to": lambda: host.to(dev), "back": lambda: on_dev.cpu(), "clone": lambda: host.clone()},
                    rounds=5 if quick else 15)
    return t["to"], t["back"], t["clone"]


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
