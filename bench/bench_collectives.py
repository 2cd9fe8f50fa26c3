"""Allreduce across processes of this host: the `hal` torch.distributed backend against torch's Gloo.

    python bench/bench_collectives.py [--quick] [--max-mib 256] [--series KEY ...] [--plot PATH]

nccl-tests conventions: size = bytes of the fp32 tensor each rank sums in place (`dist.all_reduce`), count =
its elements, time = mean time of one allreduce over the timed iterations, the slowest rank's (max over ranks);
algbw = size / time; busbw = algbw * 2(n-1)/n, the bytes a ring allreduce moves per rank, so busbw compares
across rank counts. GB/s = 1e9 bytes/s.

Each series is a fresh set of rank processes started by this script with a TCPStore it serves on a free port.
Per size each rank checks one allreduce's result, then runs warmup iterations, a barrier, and the timed
iterations ending with a device synchronize. Every rank process is killed when the series ends, on error and
on timeout too. Ratios are against series measured in the same run; goals: hal busbw >= 3x Gloo, hierarchical
(cpu + emu islands) >= 2x `HAL_COLLECTIVES=host`, both at >= 16 MiB.

The bound: every rank must at least read its S input bytes and write its S result bytes, so an allreduce of n
ranks moves at least n*S bytes in and n*S bytes out of memory: the traffic of a memcpy of n*S bytes. Hence
time >= n*S / C, with C the host's best memcpy rate (bytes copied per second, measured here with one core and
with all cores, on buffers larger than the last-level cache), so algbw <= C/n and busbw <= C * 2(n-1)/n^2.
Sizes whose n*S fit in the cache can beat it. Emulated devices (emu) are software on this CPU, and all ranks
share this host's cores: the figures describe the emulation and this machine, not any silicon.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
DEFAULT_PLOT = REPO / "docs" / "img" / "collectives_busbw.png"
FLOAT32_BYTES = 4
LARGE = 16 << 20  # The goals hold from this size on.


@dataclass(frozen=True)
class Series:
    key: str
    backend: str
    devices: tuple[str, ...]  # One torch device per rank.
    note: str = ""
    env: dict = field(default_factory=dict)  # Set for the ranks; HAL_COLLECTIVES is unset unless named here.
    against: tuple[str, ...] = ("gloo",)  # Keys of the series its busbw is divided by.


SERIES = [
    Series("gloo", "gloo", ("cpu",) * 4, "CPU tensors", against=()),
    Series("hal-cpu", "hal", ("hal:0",) * 4, "one island"),
    # The same with the plugins' single-copy path (cross-memory attach) instead of their shared-memory slots.
    Series("hal-cpu-direct", "hal", ("hal:0",) * 4, "one island, HAL_SW_COMM_DIRECT=1",
           env={"HAL_SW_COMM_DIRECT": "1"}),
    # Four emulated devices at half a core each: their demand (2 cores) fits this host's 2 cores.
    Series("hal-emu", "hal", ("hal:1", "hal:2", "hal:3", "hal:4"), "one island, speed 0.5 each (4 x 0.5 = 2 cores)",
           env={"HAL_EMU_DEVICES": "emu-half:4:speed=0.5"}),
    Series("mixed-host", "hal", ("hal:0", "hal:0", "hal:1", "hal:2"), "HAL_COLLECTIVES=host",
           env={"HAL_COLLECTIVES": "host"}),
    Series("mixed-hier", "hal", ("hal:0", "hal:0", "hal:1", "hal:2"), "two islands, hierarchical",
           against=("gloo", "mixed-host")),
]
GOALS = [("hal-cpu", "gloo", 3.0), ("hal-emu", "gloo", 3.0), ("mixed-hier", "mixed-host", 2.0)]


def sizes(max_bytes: int) -> list[int]:
    return [1 << k for k in range(10, max_bytes.bit_length(), 2)]  # 1 KiB, 4 KiB, ... up to max_bytes.


def iterations(size: int, quick: bool) -> tuple[int, int]:
    """(warmup, timed) iterations: about a fixed number of bytes per size, within bounds."""
    budget, low, high = (128 << 20, 2, 20) if quick else (1 << 30, 5, 200)
    timed = max(low, min(high, budget // size))
    return max(1, timed // 5), timed


def fmt_size(n: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            return f"{n >> shift} {unit}"
    return f"{n} B"


# ---------------------------------------------------------------------------------------------- rank process

def run_rank(spec: dict) -> None:
    """One rank: prints one JSON line per size ({size, time_s}) on stdout."""
    import torch
    import torch.distributed as dist

    device = torch.device(spec["device"])
    if device.type == "hal":
        import hal.collectives

        hal.collectives.register()  # Idempotent: torch's autoload of an installed HAL has done it already.
        torch.hal.set_device(device.index)
    timeout = timedelta(seconds=spec["op_timeout_s"])
    store = dist.TCPStore("127.0.0.1", spec["port"], is_master=False, timeout=timeout)
    dist.init_process_group(spec["backend"], store=store, rank=spec["rank"], world_size=spec["world"],
                            timeout=timeout)
    sync = {"hal": lambda: torch.hal.synchronize(device.index), "cuda": torch.cuda.synchronize}.get(
        device.type, lambda: None)
    n = spec["world"]
    for size in spec["sizes"]:
        warmup, timed = spec["iters"][str(size)]
        tensor = torch.full((size // FLOAT32_BYTES,), float(spec["rank"] + 1), device=device)
        dist.all_reduce(tensor)
        sync()
        expected = n * (n + 1) / 2  # Exact in fp32.
        if not bool((tensor.cpu() == expected).all()):
            raise SystemExit(f"rank {spec['rank']}: allreduce of {size} bytes gave wrong sums "
                             f"(first {tensor[:4].cpu().tolist()}, expected {expected})")
        tensor.zero_()  # Zeros stay zeros: repeated in-place sums cannot overflow into inf.
        for _ in range(warmup):
            dist.all_reduce(tensor)
        sync()
        dist.barrier()
        start = time.perf_counter()
        for _ in range(timed):
            dist.all_reduce(tensor)
        sync()
        print(json.dumps({"size": size, "time_s": (time.perf_counter() - start) / timed}), flush=True)
        del tensor
    dist.barrier()
    dist.destroy_process_group()


# ---------------------------------------------------------------------------------------------- launcher

def run_series(series: Series, sizes_: list[int], quick: bool, timeout_s: float) -> dict[int, float]:
    """{size: max over ranks of the per-iteration time}; raises RuntimeError naming the failing rank."""
    import torch.distributed as dist

    store = dist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False,
                          timeout=timedelta(seconds=timeout_s))
    iters = {str(s): iterations(s, quick) for s in sizes_}
    env = {k: v for k, v in os.environ.items() if k != "HAL_COLLECTIVES"} | series.env
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    procs, logs = [], []
    with tempfile.TemporaryDirectory(prefix="bench_collectives_") as tmp:
        try:
            for rank, device in enumerate(series.devices):
                spec = {"rank": rank, "world": len(series.devices), "device": device, "port": store.port,
                        "backend": series.backend, "sizes": sizes_, "iters": iters,
                        "op_timeout_s": min(timeout_s, 120)}
                out, err = Path(tmp, f"{rank}.out"), Path(tmp, f"{rank}.err")
                logs.append((out, err))
                with out.open("w") as o, err.open("w") as e:
                    procs.append(subprocess.Popen([sys.executable, __file__, "--rank-spec", json.dumps(spec)],
                                                  stdout=o, stderr=e, env=env, start_new_session=True))
            deadline, failed = time.monotonic() + timeout_s, None
            while failed is None and any(p.poll() is None for p in procs):  # The first rank to fail ends it.
                failed = next((r for r, p in enumerate(procs) if p.poll() not in (None, 0)), None)
                if time.monotonic() > deadline:
                    running = [f"{r} ({series.devices[r]})" for r, p in enumerate(procs) if p.poll() is None]
                    raise RuntimeError(f"ranks {', '.join(running)} still running after {timeout_s:.0f} s")
                time.sleep(0.1)
            if failed is None:
                failed = next((r for r, p in enumerate(procs) if p.returncode != 0), None)
            if failed is not None:
                tail = logs[failed][1].read_text().strip().splitlines()[-6:]
                raise RuntimeError(f"rank {failed} ({series.devices[failed]}) exited with status "
                                   f"{procs[failed].returncode}:\n    " + "\n    ".join(tail))
            times: dict[int, float] = {}
            for out, _ in logs:
                for line in out.read_text().splitlines():
                    row = json.loads(line)
                    times[row["size"]] = max(times.get(row["size"], 0.0), row["time_s"])
            return times
        finally:
            for proc in procs:
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)  # Its session: the rank and anything it started.
                proc.wait()


def copy_rate(nbytes: int, threads: int, repeat: int = 5) -> float:
    """Best bytes copied per second by numpy.copyto over `threads` threads, each on its own slice."""
    src = np.ones(nbytes, dtype=np.uint8)
    dst = np.zeros_like(src)  # Touched: no first-touch page faults in the timing.
    parts = [(dst[s], src[s]) for s in (slice(i * nbytes // threads, (i + 1) * nbytes // threads)
                                        for i in range(threads))]
    best = float("inf")
    with ThreadPoolExecutor(threads) as pool:
        for _ in range(repeat):
            start = time.perf_counter()
            list(pool.map(lambda p: np.copyto(*p), parts))  # numpy releases the GIL while copying.
            best = min(best, time.perf_counter() - start)
    return nbytes / best


def busbw(size: int, time_s: float, n: int) -> float:
    return size / time_s * 2 * (n - 1) / n / 1e9


def device_label(name: str) -> str:
    """'hal:1' -> 'hal:1 (emu:0, emulated)'."""
    if not name.startswith("hal:"):
        return name
    import hal

    dev = hal.devices()[int(name.split(":")[1])]
    return f"{name} ({dev.name}" + (", emulated)" if dev.properties.emulated else ")")


def series_label(series: Series) -> str:
    """'hal-cpu: hal, 4x hal:0 (cpu:0), one island'."""
    ranks: dict[str, int] = {}
    for d in series.devices:
        ranks[d] = ranks.get(d, 0) + 1
    placed = ", ".join((f"{c}x " if c > 1 else "") + device_label(d) for d, c in ranks.items())
    return f"{series.key}: {series.backend}, {placed}; {series.note}"


def bus_bound(rate: float, n: int) -> float:
    """busbw bound in GB/s of n ranks in host memory copying at `rate` bytes/s (module docstring)."""
    return rate * 2 * (n - 1) / n**2 / 1e9


def print_table(series: Series, times: dict[int, float], results: dict, rate: float) -> None:
    n = len(series.devices)
    in_host = not any(d.startswith("cuda") for d in series.devices)  # The bound is host memory's.
    ratio_heads = "".join(f"{'x ' + k:>13s}" for k in series.against)
    print(f"\n## {series_label(series)}")
    print(f"{'size':>12s}{'count':>11s}{'type':>7s}{'redop':>6s}{'time us':>12s}{'algbw GB/s':>12s}"
          f"{'busbw GB/s':>12s}{'of bound':>10s}{ratio_heads}")
    for size, t in sorted(times.items()):
        bw = busbw(size, t, n)
        ratios = ""
        for key in series.against:
            base = results.get(key, {}).get(size)
            ratios += f"{bw / busbw(size, base, n):>12.2f}x" if base else f"{'-':>13s}"
        print(f"{size:>12d}{size // FLOAT32_BYTES:>11d}{'float':>7s}{'sum':>6s}{t * 1e6:>12.1f}"
              f"{size / t / 1e9:>12.3f}{bw:>12.3f}"
              + (f"{bw / bus_bound(rate, n):>9.0%} " if in_host else f"{'-':>10s}") + ratios)


def print_goals(results: dict) -> None:
    print()
    for key, base, factor in GOALS:
        if key not in results or base not in results:
            print(f"goal {key} >= {factor:g}x {base} at >= {fmt_size(LARGE)}: not measured")
            continue
        # Same size, same rank count: the busbw ratio is the inverse time ratio.
        ratios = {s: results[base][s] / t for s, t in results[key].items() if s >= LARGE and s in results[base]}
        if not ratios:
            print(f"goal {key} >= {factor:g}x {base} at >= {fmt_size(LARGE)}: no size that large measured")
            continue
        worst = min(ratios, key=ratios.get)
        verdict = "met" if ratios[worst] >= factor else "NOT met"
        print(f"goal {key} >= {factor:g}x {base} at >= {fmt_size(LARGE)}: {verdict} (lowest "
              f"{ratios[worst]:.2f}x at {fmt_size(worst)}; "
              + ", ".join(f"{fmt_size(s)} {r:.2f}x" for s, r in sorted(ratios.items())) + ")")


def plot(results: dict, series: dict[str, Series], bound_busbw: float, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5.5))
    for key, times in results.items():
        xs = sorted(times)
        n = len(series[key].devices)
        ax.plot(xs, [busbw(s, times[s], n) for s in xs], marker="o", label=series_label(series[key]))
    ax.axhline(bound_busbw, color="black", linestyle="--",
               label=f"memory-bandwidth bound, 4 ranks ({bound_busbw:.2f} GB/s)")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ticks = sorted({s for t in results.values() for s in t})
    ax.set_xticks(ticks, [fmt_size(s) for s in ticks], rotation=45)
    ax.set_xlabel("size per rank (fp32, sum)")
    ax.set_ylabel("busbw GB/s")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")  # The curves rise from lower left: that corner is empty.
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    print(f"\nplot: {path}")


def nccl_series() -> tuple[Series | None, str]:
    """torch's nccl backend on up to 4 CUDA devices (one per rank, as NCCL requires), or why not."""
    import torch

    if not torch.cuda.is_available():
        return None, (f"skipped: torch.cuda.is_available() is False (torch {torch.__version__}, CUDA build "
                      f"{torch.version.cuda or 'none'}): no CUDA device on this host")
    count = min(4, torch.cuda.device_count())
    if count < 2:
        return None, "skipped: 1 CUDA device; NCCL needs one device per rank and at least 2 ranks"
    return (Series("nccl", "nccl", tuple(f"cuda:{i}" for i in range(count)), "CUDA tensors", against=()),
            f"{count} CUDA devices; hal's CUDA island needs a HAL plugin for CUDA, and none is bundled")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="up to 16 MiB, fewer iterations (a smoke run)")
    ap.add_argument("--max-mib", type=int, help="largest size (default 256, 16 with --quick)")
    ap.add_argument("--series", nargs="+", choices=[s.key for s in SERIES] + ["nccl"], help="run only these")
    ap.add_argument("--plot", type=Path, help=f"PNG of busbw vs size (default {DEFAULT_PLOT.relative_to(REPO)} "
                                              "for a full run, none with --quick)")
    ap.add_argument("--timeout", type=float, default=900, help="seconds per series before its ranks are killed")
    ap.add_argument("--rank-spec", help=argparse.SUPPRESS)  # Set by the launcher for a rank process.
    args = ap.parse_args(argv)
    if args.rank_spec:
        run_rank(json.loads(args.rank_spec))
        return 0
    max_bytes = (args.max_mib or (16 if args.quick else 256)) << 20
    sizes_ = sizes(max_bytes)
    nccl, nccl_note = nccl_series()
    chosen = [s for s in SERIES + [nccl] * bool(nccl) if not args.series or s.key in args.series]
    cores = os.cpu_count() or 1

    print(f"allreduce, fp32 sum, 4 ranks on one host: {cores} cores shared by all ranks; "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("emu devices are emulated (software on this CPU); so is every figure with hal:1..4 in it")
    mem_bytes = max(64 << 20, min(256 << 20, max_bytes))  # Larger than the last-level cache.
    one, every = copy_rate(mem_bytes, 1), copy_rate(mem_bytes, cores)
    rate = max(one, every)
    n = 4
    bound_busbw = bus_bound(rate, n)
    print(f"host memcpy of {fmt_size(mem_bytes)}: {one / 1e9:.2f} GB/s on 1 core, {every / 1e9:.2f} GB/s on "
          f"{cores} cores: C = {rate / 1e9:.2f} GB/s")
    print(f"bound: each rank reads at least its S input bytes and writes its S result bytes, so {n} ranks move "
          f"{n}*S in and {n}*S out (a memcpy of {n}*S bytes): time >= {n}*S/C, algbw <= C/{n} = "
          f"{rate / n / 1e9:.2f} GB/s, busbw <= C*2({n}-1)/{n}^2 = {bound_busbw:.2f} GB/s ('of bound')")

    print(f"nccl / CUDA: {nccl_note}")

    results: dict[str, dict[int, float]] = {}
    failed = []
    for series in chosen:
        start = time.monotonic()
        try:
            results[series.key] = run_series(series, sizes_, args.quick, args.timeout)
        except RuntimeError as e:
            print(f"\n## {series_label(series)}\nFAILED: {e}")
            failed.append(series.key)
            continue
        print_table(series, results[series.key], results, rate)
        print(f"({time.monotonic() - start:.0f} s)")
    print_goals(results)
    print(f"load average at the end {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    path = args.plot or (None if args.quick else DEFAULT_PLOT)
    if path and results:
        plot(results, {s.key: s for s in chosen}, bound_busbw, path,
             f"allreduce busbw, 4 ranks on one host ({cores} cores shared by the ranks); "
             "emu = emulated devices")
    if failed:
        print(f"failed series: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
