"""A measured device profile: plain JSON that the profiler (profile_devices.py) writes and a cluster file's
`profile:` kind reads. No torch here: reading a profile is part of the planner core.

A profile is cached per device kind as JSON in $HAL_CACHE_DIR/profiles/ (default ~/.cache/hal/profiles/) and
turns into a DeviceKind with `source: measured` (`DeviceKind.from_profile`): its `peak_flops` is the best
matmul rate measured and its `efficiency` (MEASURED_EFFICIENCY) the share of that which whole training layers
reach.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from hal.plan.limits import check_number, load_json

__all__ = ["DeviceProfile", "MEASURED_EFFICIENCY", "cache_dir"]

MEASURED_EFFICIENCY = 0.75  # layers (attention, norms, element-wise) reach ~3/4 of the best matmul rate

_RATE = (0.0, 1e19)  # FLOP/s, bytes/s and bytes: [0, 1e19]


def cache_dir() -> Path:
    base = os.environ.get("HAL_CACHE_DIR")
    return (Path(base) if base else Path.home() / ".cache" / "hal") / "profiles"


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

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=1, sort_keys=True))

    @classmethod
    def from_dict(cls, d: Any) -> "DeviceProfile":
        """Checks every field (type, finite, in range); raises ValueError naming the first bad one."""
        if not isinstance(d, dict):
            raise ValueError(f"expected a JSON object, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        for k in d:
            if k not in known:
                raise ValueError(f"{k}: unknown field (allowed: {', '.join(sorted(known))})")
        for k in ("kind", "device"):
            if k not in d:
                raise ValueError(f"{k}: required field is missing")

        def check(where: str, v: Any, lo: float, hi: float, **kw) -> None:
            try:
                check_number(v, lo, hi, **kw)
            except ValueError as e:
                raise ValueError(f"{where}: {e}") from None

        for k in ("kind", "device", "torch_version"):
            if k in d and not isinstance(d[k], str):
                raise ValueError(f"{k}: expected str, got {d[k]!r}")
        if not isinstance(d.get("emulated", False), bool):
            raise ValueError(f"emulated: expected bool, got {d['emulated']!r}")
        for k in ("memory_bandwidth", "host_to_device", "device_to_host", "memory_bytes", "measured_at"):
            if k in d:
                check(k, d[k], *_RATE)
        check("relative_speed", d.get("relative_speed", 1.0), 1e-6, 1e6)
        matmul = d.get("matmul", [])
        if not isinstance(matmul, list):
            raise ValueError(f"matmul: expected a list, got {type(matmul).__name__}")
        for i, r in enumerate(matmul):
            if not isinstance(r, dict) or "flops_per_s" not in r:
                raise ValueError(f"matmul[{i}]: expected an object with flops_per_s")
            check(f"matmul[{i}].flops_per_s", r["flops_per_s"], *_RATE)
        link = d.get("copy_link")
        if link is not None:
            if not isinstance(link, dict) or set(link) != {"latency", "bandwidth"}:
                raise ValueError("copy_link: expected {latency, bandwidth}")
            check("copy_link.latency", link["latency"], 0.0, 1e3)
            check("copy_link.bandwidth", link["bandwidth"], *_RATE, lo_open=True)
        return cls(**d)

    @classmethod
    def load(cls, path: Path) -> "DeviceProfile":
        """Raises OSError, or ValueError naming the bad field."""
        return cls.from_dict(load_json(path))
