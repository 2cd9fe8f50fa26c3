"""Measuring devices through torch: matmul FLOP/s, memory and host<->device bandwidth, link fits.

What it measures is a DeviceProfile (device_profile.py: plain JSON, read by the planner core without torch),
cached per device kind. torch is imported inside the measuring functions only.
"""
from __future__ import annotations

import os
import statistics
import time
from typing import Callable, Sequence

import numpy as np

from hal.plan.device_profile import DeviceProfile, cache_dir

__all__ = ["fit_latency_bandwidth", "device_synchronizer", "timed_runs", "measure_matmul", "measure_memory_bandwidth",
           "measure_host_transfer", "measure_copy_link", "profile_device", "cached_profile"]


def fit_latency_bandwidth(sizes: Sequence[float], times: Sequence[float]) -> tuple[float, float]:
    """Least-squares fit of t = latency + size / bandwidth; returns (latency s, bandwidth bytes/s).

    Generic: used for copies now and for collectives once they are measured."""
    x, y = np.asarray(sizes, float), np.asarray(times, float)
    if len(x) < 2 or np.ptp(x) == 0:
        raise ValueError("need at least two distinct sizes to fit latency and bandwidth")
    A = np.stack([np.ones_like(x), x], axis=1)
    (lat, inv_bw), *_ = np.linalg.lstsq(A, y, rcond=None)
    if inv_bw <= 0:  # sizes too small to see bandwidth: all latency
        inv_bw = float(np.max(y / x))
    return max(float(lat), 0.0), 1.0 / float(inv_bw)


def device_synchronizer(device: str) -> Callable[[], None]:
    """A function that waits for the work queued on torch device `device` (cuda, hal:N, ...); a no-op for cpu."""
    import torch
    dev = torch.device(device)
    if dev.type == "cuda":
        return lambda: torch.cuda.synchronize(dev)
    module = getattr(torch, dev.type, None)  # torch.hal for hal:N, and other out-of-tree backends alike.
    if dev.type != "cpu" and module is not None and hasattr(module, "synchronize"):
        return lambda: module.synchronize(dev.index)
    return lambda: None


def timed_runs(fn: Callable[[], object], sync: Callable[[], None], repeats: int) -> list[float]:
    """Seconds of each of `repeats` runs of `fn`, each one waited for with `sync`."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return times


def _median(fn, sync, repeats: int) -> float:
    fn()
    sync()
    return statistics.median(timed_runs(fn, sync, repeats))


def measure_matmul(device: str, shapes: Sequence[tuple[int, int, int]] = ((1024, 1024, 1024),),
                   dtypes: Sequence[str] = ("float32",), repeats: int = 5) -> list[dict]:
    import torch
    sync, out = device_synchronizer(device), []
    for dtype in dtypes:
        dt = getattr(torch, dtype)
        for m, n, k in shapes:
            a = torch.randn(m, k, device=device, dtype=dt)
            b = torch.randn(k, n, device=device, dtype=dt)
            t = _median(lambda: torch.mm(a, b), sync, repeats)
            out.append({"m": m, "n": n, "k": k, "dtype": dtype, "flops_per_s": 2.0 * m * n * k / t})
    return out


def measure_memory_bandwidth(device: str, nbytes: int = 64 << 20, repeats: int = 5) -> float:
    import torch
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device).fill_(1.0)
    dst = torch.empty_like(src)
    t = _median(lambda: dst.copy_(src), device_synchronizer(device), repeats)
    return 2.0 * nbytes / t


def measure_host_transfer(device: str, nbytes: int = 64 << 20, repeats: int = 5) -> tuple[float, float]:
    """(host->device, device->host) bytes/s of one contiguous copy."""
    import torch
    host = torch.empty(nbytes // 4, dtype=torch.float32).fill_(1.0)
    dev = torch.empty_like(host, device=device)
    sync = device_synchronizer(device)
    h2d = _median(lambda: dev.copy_(host), sync, repeats)
    d2h = _median(lambda: host.copy_(dev), sync, repeats)
    return nbytes / h2d, nbytes / d2h


def measure_copy_link(device: str, sizes: Sequence[int] = (1 << 12, 1 << 16, 1 << 20, 1 << 24),
                      repeats: int = 5) -> dict:
    import torch
    sync, times = device_synchronizer(device), []
    for s in sizes:
        src = torch.empty(s // 4, dtype=torch.float32, device=device)
        times.append(_median(lambda: src.clone(), sync, repeats))
    lat, bw = fit_latency_bandwidth(sizes, times)
    return {"latency": lat, "bandwidth": bw}


def _device_memory(device: str) -> float:
    import torch
    dev = torch.device(device)
    if dev.type == "cuda":
        return float(torch.cuda.get_device_properties(dev).total_memory)
    try:
        return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 8.0 * 2 ** 30


def profile_device(device: str = "cpu", kind: str | None = None, quick: bool = True) -> DeviceProfile:
    import torch
    shapes = ((512, 512, 512),) if quick else ((1024, 1024, 1024), (4096, 4096, 4096))
    dtypes = ("float32",) if torch.device(device).type == "cpu" else ("float32", "bfloat16")
    h2d, d2h = measure_host_transfer(device, 16 << 20 if quick else 256 << 20)
    return DeviceProfile(kind=kind or torch.device(device).type, device=device,
                         matmul=measure_matmul(device, shapes, dtypes, 3 if quick else 10),
                         memory_bandwidth=measure_memory_bandwidth(device, 32 << 20 if quick else 512 << 20),
                         host_to_device=h2d, device_to_host=d2h, copy_link=measure_copy_link(device),
                         memory_bytes=_device_memory(device), torch_version=torch.__version__,
                         measured_at=time.time())


def cached_profile(device: str = "cpu", kind: str | None = None, refresh: bool = False,
                   quick: bool = True) -> DeviceProfile:
    """The cached profile of a device kind, measuring (and caching) it when absent or `refresh`."""
    name = kind or device.split(":")[0]
    path = cache_dir() / f"{name}.json"
    if path.exists() and not refresh:
        try:
            return DeviceProfile.load(path)
        except (ValueError, TypeError, KeyError):
            pass  # a stale or foreign file: measure again
    prof = profile_device(device, name, quick)
    try:
        prof.save(path)
    except OSError:
        pass  # a read-only home must not stop planning
    return prof
