"""Measured device profiles through torch: matmul FLOP/s, memory and host<->device bandwidth, link fits.

A profile is cached per device kind as JSON in $HAL_CACHE_DIR/profiles/ (default ~/.cache/hal/profiles/) and
turns into a DeviceKind with `source: measured`: its `peak_flops` is the best matmul rate measured and its
`efficiency` (MEASURED_EFFICIENCY) the share of that which whole training layers reach. Per-layer times from
the model profiler replace both when present. torch is imported inside the measuring functions only.
"""
from __future__ import annotations

import json
import os
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from hal.plan.cluster import DeviceKind, Link

__all__ = ["DeviceProfile", "fit_latency_bandwidth", "measure_matmul", "measure_memory_bandwidth",
           "measure_host_transfer", "profile_device", "cache_dir", "cached_profile", "MEASURED_EFFICIENCY"]

MEASURED_EFFICIENCY = 0.75  # layers (attention, norms, element-wise) reach ~3/4 of the best matmul rate


def cache_dir() -> Path:
    base = os.environ.get("HAL_CACHE_DIR")
    return (Path(base) if base else Path.home() / ".cache" / "hal") / "profiles"


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


@dataclass
class DeviceProfile:
    kind: str
    device: str
    matmul: list[dict] = field(default_factory=list)   # {m, n, k, dtype, flops_per_s}
    memory_bandwidth: float = 0.0                       # bytes/s, (read + written) / time of a large copy
    host_to_device: float = 0.0
    device_to_host: float = 0.0
    copy_link: dict | None = None                       # fitted {latency, bandwidth} of device copies
    memory_bytes: float = 0.0
    emulated: bool = False
    relative_speed: float = 1.0
    torch_version: str = ""
    measured_at: float = 0.0

    @property
    def peak_flops(self) -> float:
        return max((r["flops_per_s"] for r in self.matmul), default=0.0)

    def to_kind(self, presets: dict[str, DeviceKind] | None = None) -> DeviceKind:
        link = Link(self.copy_link["bandwidth"], self.copy_link["latency"]) if self.copy_link else \
            Link(self.memory_bandwidth / 2 or 1e9, 1e-6)
        return DeviceKind(name=self.kind, peak_flops=self.peak_flops, memory_bytes=self.memory_bytes,
                          memory_bandwidth=self.memory_bandwidth, chip_link=link, efficiency=MEASURED_EFFICIENCY,
                          source="measured", confidence="high", description=f"measured on {self.device}",
                          emulated=self.emulated, relative_speed=self.relative_speed)

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=1, sort_keys=True))

    @classmethod
    def load(cls, path: Path) -> "DeviceProfile":
        return cls(**json.loads(Path(path).read_text()))


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


def _median(fn, sync, repeats: int) -> float:
    fn()
    sync()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


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
