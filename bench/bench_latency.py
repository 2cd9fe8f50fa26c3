"""Latency of one small blocking copy (copy + synchronize) through the hal API, against a host memcpy.

    python bench/bench_latency.py [--nbytes 4096] [--iters 3000] [--devices cpu:0,emu:0]

Per device: the median over rounds of the mean time of `Buffer.copy_from(array)` (a host->device copy on the
current stream, then an interruptible synchronize), and, interleaved with it, `numpy.copyto` of the same
bytes (the physical bound: every device here lives in host RAM). Small copies are dominated by the queue
round trip to the stream's worker thread, not by bandwidth.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import hal


def mean_us(fn, iters: int) -> float:
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    return (time.perf_counter() - start) / iters * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nbytes", type=int, default=4096)
    ap.add_argument("--iters", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--devices", default="cpu:0,emu:0")
    args = ap.parse_args()
    src = np.ones(args.nbytes, dtype=np.uint8)
    dst = np.empty_like(src)
    print(f"{'device':<22}{'copy+sync us':>14}{'memcpy us':>12}{'ratio':>9}")
    for name in args.devices.split(","):
        dev = hal.device(name)
        buf = dev.alloc(args.nbytes)
        for _ in range(100):
            buf.copy_from(src)
        copies, memcpys = [], []
        for _ in range(args.rounds):  # Alternating rounds: both see the same machine.
            copies.append(mean_us(lambda: buf.copy_from(src), args.iters))
            memcpys.append(mean_us(lambda: np.copyto(dst, src), args.iters))
        c, m = statistics.median(copies), statistics.median(memcpys)
        label = name + (" (emulated)" if dev.properties.emulated else "")
        print(f"{label:<22}{c:>14.1f}{m:>12.2f}{c / m:>8.0f}x")


if __name__ == "__main__":
    main()
