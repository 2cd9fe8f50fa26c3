"""Benchmark of compute on a device through its plugin's own kernels (ABI 1.1), as ratios measured in one run.

    python bench/bench_kernels.py [--device NAME] [--quick]

The device is the first OpenCL device (the opencl plugin; pocl on this machine's cores), else an emulated emu
device (EMULATED: plain C kernels on the host, a plugin sample, not silicon). Its figures are set against torch
on the CPU of the same machine, measured in the same run, with the same number of threads as the device has
cores (pocl uses them all; emu one).

1. Host cost of one op: a native kernel queued on the device vs the same op through the CPU fallback, on two
   emu devices of one process (one with kernels, one configured ops=0): the routing's overhead.
2. GEMM: GFLOP/s of the device's aten::mm against torch.mm on the CPU, at 512, 1024 and 2048 (goal >= 50 %);
   the CPU's own peak (torch.mm, all cores) is the physical bound printed beside it.
3. A GPT training step (the demo's small GPT, batch 8, AdamW as a loop of ops and fused, each the same on both
   sides): time on the device against torch on the CPU (goal <= 2x the CPU time), and the share of the step's time not spent running ops on the CPU for the
   device (fallback seconds from torch.hal.op_stats, without their waits for the device; goal >= 95 %).
"""
from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HAL_EMU_DEVICES", "bench-ops:1;bench-noops:1:ops=0")

import torch  # noqa: E402

import hal  # noqa: E402
import hal.torch  # noqa: E402,F401  (registers the backend when the entry point did not)


def best_of(fn, rounds: int, inner: int, sync) -> float:
    fn()
    sync()
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        sync()
        best = min(best, (time.perf_counter() - t0) / inner)
    return best


def pick_device(name: str | None) -> "hal.Device":
    devices = hal.devices()
    if name:
        return hal.device(name)
    for d in devices:
        if d.plugin == "opencl":
            return d
    return next(d for d in devices if d.plugin == "emu" and d.operators())


def label(d: "hal.Device") -> str:
    return f"{d.name} ({d.properties.name}{', EMULATED' if d.emulated else ''})"


def bench_host_cost(quick: bool) -> None:
    emus = [d for d in hal.devices() if d.plugin == "emu"]
    native = next((d for d in emus if d.operators()), None)
    plain = next((d for d in emus if not d.operators()), None)
    print("1. host cost of one add (64 floats), chained, EMULATED emu devices")
    if native is None or plain is None:
        print("   skipped: needs an emu device with kernels and one with ops=0 (HAL_EMU_DEVICES)")
        return
    out = {}
    for d in (native, plain):
        dev = d.torch_device
        x = torch.randn(64, device=dev)
        y = torch.randn(64, device=dev)
        out[d.name] = best_of(lambda: torch.add(x, y), 3 if quick else 10, 500 if quick else 2000,
                              lambda: torch.hal.synchronize(dev))
    n, p = out[native.name], out[plain.name]
    print(f"   native kernel ({native.name}): {n * 1e6:6.1f} us per op (queued, then run by the device's stream)")
    print(f"   CPU fallback ({plain.name}, ops=0): {p * 1e6:6.1f} us per op (in place)   native/fallback = {n / p:.2f}x")


def bench_gemm(d: "hal.Device", quick: bool) -> None:
    dev = d.torch_device
    print(f"2. GEMM f32 on {label(d)} vs torch.mm on the CPU")
    if "aten::mm" not in d.operators():
        print("   skipped: the device declares no aten::mm")
        return
    threads = torch.get_num_threads()
    for n in ((512, 1024) if quick else (512, 1024, 2048)):
        a, b = torch.randn(n, n), torch.randn(n, n)
        da, db = a.to(dev), b.to(dev)
        rounds, inner = (2, 1) if quick else (5, 2)
        t_dev = t_cpu = float("inf")
        for _ in range(rounds):  # Interleaved, so both see the same machine.
            t_dev = min(t_dev, best_of(lambda: torch.mm(da, db), 1, inner, lambda: torch.hal.synchronize(dev)))
            t_cpu = min(t_cpu, best_of(lambda: torch.mm(a, b), 1, inner, lambda: None))
        flops = 2 * n ** 3
        print(f"   {n:5d}: device {flops / t_dev / 1e9:8.1f} GFLOP/s   CPU ({threads} threads) "
              f"{flops / t_cpu / 1e9:8.1f} GFLOP/s   device/CPU = {t_cpu / t_dev * 100:5.1f} %")


# The optimizer's two forms compared, each the same on both sides: torch's CPU default (a loop of per-tensor
# ops) and fused (one kernel a step: torch's _fused_adamw_ on the CPU, the plugin's on the device).
OPTIMIZERS = {"AdamW(foreach=False)": {"foreach": False}, "AdamW(fused=True)": {"fused": True}}


def gpt_step_factory(dev, batch: int, optimizer: dict):
    from hal.train.model import CONFIGS, build_layers, loss_fn

    cfg = CONFIGS["small"]
    torch.manual_seed(0)
    model = torch.nn.Sequential(*build_layers(cfg)).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, **optimizer)
    tokens = torch.randint(0, cfg.vocab, (batch, cfg.seq + 1)).to(dev)

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(tokens[:, :-1]), tokens[:, 1:])
        loss.backward()
        opt.step()
        return loss

    return step


def bench_gpt_step(d: "hal.Device", quick: bool) -> None:
    dev = d.torch_device
    print(f"3. GPT training step (gpt-small, batch 8) on {label(d)} vs torch on the CPU")
    rounds = 2 if quick else 5
    for name, optimizer in OPTIMIZERS.items():
        dev_step, cpu_step = gpt_step_factory(dev, 8, optimizer), gpt_step_factory("cpu", 8, optimizer)
        t_cpu = t_dev = float("inf")
        for _ in range(rounds):  # Interleaved, so both see the same machine.
            t_cpu = min(t_cpu, best_of(cpu_step, 1, 1, lambda: None))
            t_dev = min(t_dev, best_of(dev_step, 1, 1, lambda: torch.hal.synchronize(dev)))
        torch.hal.reset_op_stats()
        dev_step()
        torch.hal.synchronize(dev)
        stats = torch.hal.op_stats()
        calls = {p: sum(s[p]["calls"] for s in stats.values()) for p in ("native", "decomposed", "fallback")}
        fallback_s = sum(s["fallback"]["seconds"] for s in stats.values())
        falling = sorted(((s["fallback"]["seconds"], n) for n, s in stats.items() if s["fallback"]["calls"]),
                         reverse=True)
        print(f"   {name:21s} step: device {t_dev * 1e3:8.1f} ms   CPU {t_cpu * 1e3:8.1f} ms   "
              f"device/CPU = {t_dev / t_cpu:.2f}x (goal <= 2x)")
        print(f"   {'':21s} ops: {calls['native']} native, {calls['decomposed']} decomposed, {calls['fallback']} "
              f"fallback; time outside CPU fallbacks {100 * (1 - fallback_s / t_dev):5.1f} % of the step (goal >= 95 %)")
        if falling:
            print("   falling back (host seconds in one step): " +
                  ", ".join(f"{n} {s * 1e3:.1f} ms" for s, n in falling[:8]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", help="HAL device name (default: the first opencl device, else emu)")
    parser.add_argument("--quick", action="store_true", help="fewer rounds and sizes (a smoke run)")
    args = parser.parse_args()
    d = pick_device(args.device)
    print(f"bench_kernels: {label(d)}; CPU baseline torch {torch.__version__}, {torch.get_num_threads()} threads")
    bench_host_cost(args.quick)
    bench_gemm(d, args.quick)
    bench_gpt_step(d, args.quick)


if __name__ == "__main__":
    main()
