"""`hal plan --local`: this machine as a cluster, from an injectable probe.

The default probe measures the CPU through torch (cached profile) and lists HAL's devices when `import hal`
works. Emulated HAL devices get the CPU's measured figures times their `relative_speed` and are labelled
emulated everywhere. When HAL lists no device (or cannot be imported), the cluster is the CPU alone.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from hal.plan.cluster import Cluster, DeviceKind, Link, Node
from hal.plan.profile_devices import MEASURED_EFFICIENCY

__all__ = ["ProbedDevice", "default_probe", "local_cluster"]


@dataclass(frozen=True)
class ProbedDevice:
    name: str               # "cpu", "emu:1", ...
    kind: str               # devices of one kind share figures
    peak_flops: float
    memory_bytes: float
    memory_bandwidth: float
    emulated: bool = False
    relative_speed: float = 1.0
    profile_kind: str = ""  # whose measured per-layer times apply (the host's, for emulated devices)


def _hal_devices() -> list:
    try:
        import hal  # the public API only; loads the runtime lazily
        return list(hal.devices())
    except Exception:  # noqa: BLE001 - no runtime, no plugins, a broken build: plan for the CPU alone
        return []


def default_probe(refresh: bool = False, hal_devices: Callable[[], list] = _hal_devices) -> list[ProbedDevice]:
    from hal.plan.profile_devices import cached_profile
    cpu = cached_profile("cpu", "cpu", refresh=refresh)
    out: list[ProbedDevice] = []
    for d in hal_devices():
        p = d.properties
        if getattr(p, "emulated", False):
            rs = float(p.relative_speed)
            out.append(ProbedDevice(d.name, f"{p.name} x{rs:g}", cpu.peak_flops * rs, float(p.total_memory),
                                    cpu.memory_bandwidth * rs, True, rs, "cpu"))
        else:
            peak = max((getattr(p, "peak_flops", None) or {}).values(), default=0.0)
            bw = float(getattr(p, "memory_bandwidth", 0.0) or 0.0)
            if d.name.startswith("cpu") or not peak or not bw:
                continue  # the host is measured below; a device without figures cannot be planned for yet
            out.append(ProbedDevice(d.name, p.name, float(peak), float(p.total_memory), bw))
    if not out:
        out.append(ProbedDevice("cpu", "cpu", cpu.peak_flops, cpu.memory_bytes, cpu.memory_bandwidth,
                                profile_kind="cpu"))
    return out


def local_cluster(probe: Callable[[], list[ProbedDevice]] | None = None) -> Cluster:
    """One node per device kind found by `probe`; links between them are host memory copies."""
    devices = (probe or default_probe)()
    if not devices:
        raise RuntimeError("the local probe found no device")
    kinds: dict[str, DeviceKind] = {}
    counts: dict[str, int] = {}
    for d in devices:
        counts[d.kind] = counts.get(d.kind, 0) + 1
        link = Link(d.memory_bandwidth / 2, 5e-6)
        kinds[d.kind] = DeviceKind(
            name=d.kind, peak_flops=d.peak_flops, memory_bytes=d.memory_bytes, memory_bandwidth=d.memory_bandwidth,
            chip_link=link, efficiency=MEASURED_EFFICIENCY, source="emulated" if d.emulated else "measured",
            confidence="low" if d.emulated else "high", description=f"probed {d.name}", emulated=d.emulated,
            profile_kind=d.profile_kind, relative_speed=d.relative_speed)
    nodes, first = [], 0
    for name, n in counts.items():
        link = kinds[name].chip_link
        nodes.append(Node(name, name, n, link, link, first))
        first += n
    return Cluster("local", kinds, nodes)
