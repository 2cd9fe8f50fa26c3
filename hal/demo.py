"""`hal demo`: a short tour of HAL on this machine's devices (emulated ones are labelled as such)."""
from __future__ import annotations

import argparse
import time

import numpy as np

import hal
from hal.cli import _fmt_bytes, cmd_devices


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


def run(args: argparse.Namespace) -> int:
    print("== 1. Devices: every plugin's devices under one numbering ==")
    cmd_devices(argparse.Namespace(json=False))

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
