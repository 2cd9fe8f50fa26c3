"""`hal plan --local`: this machine as a cluster, from an injectable probe.

The default probe measures the CPU through torch (cached profile) and lists HAL's devices when `import hal`
works. Emulated HAL devices get the CPU's measured figures times their `relative_speed` and are labelled
emulated everywhere. When HAL lists no device (or cannot be imported), the cluster is the CPU alone.

Links come from the plugins' "hal.topology" extension where they declare one (`hal.Device.links()`): a kind's
chip link is the slowest declared link between two of its devices, the path between kinds the slowest declared
link between devices of different kinds, or, where they do not reach each other directly (other plugins), the
copy through the host (the slower host link; the two hops' latencies). A figure a plugin leaves at 0 (unknown)
or a device without topology falls back to half the device's memory bandwidth and 5 us, as before.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

from hal.plan.cluster import Cluster, DeviceKind, Link, Node
from hal.plan.device_profile import MEASURED_EFFICIENCY, cache_dir
from hal.plan.limits import load_json
from hal.plan.profile_devices import device_synchronizer

__all__ = ["ProbedDevice", "default_probe", "local_cluster", "HalTorchDevice", "hal_torch_devices", "measure_transfer",
           "hal_cluster", "self_measured_kind", "profiled_model", "FITTING_EMU_DEVICES", "use_fitting_emulation",
           "host_cores"]


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
    # hal.Device.links(): objects with peer ("host" or a device name), bandwidth (bytes/s), latency (s); 0 is
    # unknown. None: the plugin declares no topology.
    links: Sequence[Any] | None = None


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
        links = _links_of(d)
        if getattr(p, "emulated", False):
            rs = float(p.relative_speed)
            out.append(ProbedDevice(d.name, f"{p.name} x{rs:g}", cpu.peak_flops * rs, float(p.total_memory),
                                    cpu.memory_bandwidth * rs, True, rs, "cpu", links))
        else:
            peak = max((getattr(p, "peak_flops", None) or {}).values(), default=0.0)
            bw = float(getattr(p, "memory_bandwidth", 0.0) or 0.0)
            if d.name.startswith("cpu") or not peak or not bw:
                continue  # the host is measured below; a device without figures cannot be planned for yet
            out.append(ProbedDevice(d.name, p.name, float(peak), float(p.total_memory), bw, links=links))
    if not out:
        out.append(ProbedDevice("cpu", "cpu", cpu.peak_flops, cpu.memory_bytes, cpu.memory_bandwidth,
                                profile_kind="cpu"))
    return out


def _links_of(device) -> list | None:
    try:
        return device.links()
    except Exception:  # noqa: BLE001 - an older runtime or a test double without topology: figures only
        return None


_DEFAULT_LATENCY = 5e-6


def _slowest(links: list, default: Link) -> Link:
    """The slowest of `links` (declared figures; an unknown one, 0, takes `default`'s), or `default`."""
    if not links:
        return default
    return Link(min(l.bandwidth if l.bandwidth > 0 else default.bandwidth for l in links),
                max(l.latency if l.latency > 0 else default.latency for l in links))


def _declared_links(devices: list[ProbedDevice]) -> tuple[dict[str, Link], Link | None]:
    """(kind -> its chip link, the path between kinds) from the devices' declared topology; a kind or the
    cross-kind path with nothing declared is left out (None)."""
    kind_of = {d.name: d.kind for d in devices}
    fallback = {d.kind: Link(d.memory_bandwidth / 2, _DEFAULT_LATENCY) for d in devices}
    same: dict[str, list] = {}
    across: list[Link] = []
    direct: set[frozenset[str]] = set()
    host: dict[str, list[Link]] = {}  # kind -> its devices' declared host links
    for d in devices:
        for l in d.links or ():
            peer = kind_of.get(l.peer)
            if l.peer == "host":
                host.setdefault(d.kind, []).append(_slowest([l], fallback[d.kind]))
            elif peer == d.kind:
                same.setdefault(d.kind, []).append(l)
            elif peer is not None:
                across.append(_slowest([l], fallback[d.kind]))
                direct.add(frozenset((d.kind, peer)))
    chip = {k: _slowest(ls, fallback[k]) for k, ls in same.items()}
    kinds = list(dict.fromkeys(d.kind for d in devices))
    for i, a in enumerate(kinds):
        for b in kinds[i + 1:]:
            # Kinds with no direct declared link exchange through the host: the slower host link, both hops'
            # latencies.
            if frozenset((a, b)) not in direct and a in host and b in host:
                hops = host[a] + host[b]
                across.append(Link(min(h.bandwidth for h in hops), 2 * max(h.latency for h in hops)))
    return chip, (_slowest(across, across[0]) if across else None)


def local_cluster(probe: Callable[[], list[ProbedDevice]] | None = None) -> Cluster:
    """One node per device kind found by `probe`; links from the devices' declared topology (see above)."""
    devices = (probe or default_probe)()
    if not devices:
        raise RuntimeError("the local probe found no device")
    chip, cross = _declared_links(devices)
    kinds: dict[str, DeviceKind] = {}
    counts: dict[str, int] = {}
    for d in devices:
        counts[d.kind] = counts.get(d.kind, 0) + 1
        link = chip.get(d.kind, Link(d.memory_bandwidth / 2, _DEFAULT_LATENCY))
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
    return Cluster("local", kinds, nodes, cross)


# --- an emulated cluster that fits this host ---------------------------------------------------------------------
# An emulated device of relative speed s < 1 keeps s of one host core busy while it computes (the bridge and the
# emu plugin pace it by the CPU time its work took: T = cpu / s, sleeping the difference). As long as the sum of
# the speeds fits the host's cores, each device keeps its emulated speed whatever else the host does, and step
# times are stable. The plugin's default (2 x 1.0 + 2 x 0.5 = 3 cores) does not fit a 2-core host; this does.
# ops=0: torch's CPU kernels paced at the speed (emu's own kernels are plain C loops, not a host core's speed).
FITTING_EMU_DEVICES = "emu-fast:2:speed=0.5:ops=0;emu-slow:2:speed=0.25:ops=0"


def host_cores() -> int:
    """The cores this process may run on."""
    import os
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def use_fitting_emulation(config: str = FITTING_EMU_DEVICES) -> str:
    """Sets HAL_EMU_DEVICES to `config` unless the user set it or HAL is already initialized (call it before
    anything lists devices). Returns a line saying which emulated cluster is used and whether it fits the host:
    the speeds come from the devices HAL lists (the emu plugin owns the format of HAL_EMU_DEVICES)."""
    import os

    import hal
    if os.environ.get("HAL_EMU_DEVICES"):
        source = f"HAL_EMU_DEVICES={os.environ['HAL_EMU_DEVICES']!r}, set by the user"
    elif hal.is_initialized():
        source = "as HAL was already initialized (the plugin's default unless configured)"
    else:
        os.environ["HAL_EMU_DEVICES"] = config
        source = f"HAL_EMU_DEVICES={config!r}; set it to override"
    speeds = [float(d.properties.relative_speed) for d in hal.devices() if d.emulated]
    cores, demand = host_cores(), sum(speeds)
    fits = (f"so the {len(speeds)} fit on this {cores}-core host ({demand:g} cores of demand)" if demand <= cores else
            f"which need {demand:g} cores, more than this host's {cores}: emulated times will not be stable")
    return (f"emulated devices at {' and '.join(f'{s:g}x' for s in dict.fromkeys(speeds))} of one host core, "
            f"{fits} ({source})")


# --- the local hal:N devices, measured on themselves (torch imported inside) --------------------------------------
@dataclass(frozen=True)
class HalTorchDevice:
    index: int              # hal:N
    name: str               # "emu:0", "cpu:0"
    kind: str               # device kind: the plugin's device name ("emu-fast", "emu-slow", the CPU's model)
    emulated: bool
    relative_speed: float   # as the plugin reports it (emulated devices: the speed they emulate)
    memory_bytes: float

    @property
    def torch(self) -> str:
        return f"hal:{self.index}"

    @property
    def label(self) -> str:
        return f"{self.torch} ({self.name}, {self.kind}{', EMULATED' if self.emulated else ''})"


def hal_torch_devices(spec: str | None = None) -> list[HalTorchDevice]:
    """HAL's devices as torch devices, registering the `hal` backend. `spec` "hal:1,hal:3" (or "1,3") selects."""
    import hal
    import hal.torch  # noqa: F401 - registers the backend even where the torch entry point is not installed
    devs = {d.index: d for d in hal.devices()}
    wanted = list(devs) if not spec else [int(s.strip().split(":")[-1]) for s in spec.split(",") if s.strip()]
    out = []
    for i in wanted:
        if i not in devs:
            raise ValueError(f"hal:{i} does not exist (devices: {', '.join(f'hal:{j}' for j in devs)})")
        p = devs[i].properties
        out.append(HalTorchDevice(i, devs[i].name, p.name, bool(p.emulated),
                                  float(p.relative_speed) if p.emulated else 1.0, float(p.total_memory)))
    return out


def measure_transfer(src: str, dst: str, sizes=(1 << 12, 1 << 16, 1 << 19, 1 << 22), repeats: int = 7) -> Link:
    """Fitted latency + size / bandwidth of `tensor.to(dst)` for a tensor on `src` (median of `repeats`)."""
    import statistics
    import time

    import torch

    from hal.plan.profile_devices import fit_latency_bandwidth
    s_src, s_dst = device_synchronizer(src), device_synchronizer(dst)
    times = []
    for n in sizes:
        x = torch.empty(n // 4, dtype=torch.float32, device=src).fill_(1.0)
        x.to(dst)
        s_dst()
        ts = []
        for _ in range(repeats):
            s_src()
            t0 = time.perf_counter()
            x.to(dst)
            s_dst()
            ts.append(time.perf_counter() - t0)
        times.append(statistics.median(ts))
    lat, bw = fit_latency_bandwidth(sizes, times)
    return Link(bw, lat)


def self_measured_kind(name: str, relative_speed: float, memory_bytes: float, link: Link, emulated: bool,
                       description: str) -> DeviceKind:
    """A kind whose per-layer times are measured on a device of itself (`profile_kind` = its own name, relative
    speed 1: nothing is scaled); its nominal figures only matter for a model without measurements."""
    return DeviceKind(name=name, peak_flops=1e11 * relative_speed, memory_bytes=memory_bytes,
                      memory_bandwidth=2e10 * relative_speed, chip_link=link, efficiency=MEASURED_EFFICIENCY,
                      source="emulated" if emulated else "measured", confidence="low" if emulated else "high",
                      description=description, emulated=emulated, profile_kind=name, relative_speed=1.0)


def hal_cluster(devices: list[HalTorchDevice], measure_links: bool = True,
                links: dict | None = None) -> tuple[Cluster, list[str], dict]:
    """The chosen hal:N devices as a planner cluster: one node per kind, cluster device ids in node order.

    Returns (cluster, torch device per cluster device id, links as {"intra": {kind: Link}, "cross": Link}).
    Kinds carry `profile_kind` = their own name and relative speed 1: their per-layer times are measured on a
    device of that kind (see `profiled_model`), so nothing is scaled. Links are fitted from timed `.to()`
    copies between two devices of a kind (intra) and between kinds (cross-kind; the slowest pair measured),
    unless `links` (a previous result) is given."""
    by_kind: dict[str, list[HalTorchDevice]] = {}
    for d in devices:
        by_kind.setdefault(d.kind, []).append(d)
    if links is None:
        links = {"intra": {}, "cross": None}
        if measure_links:
            for kind, ds in by_kind.items():
                a, b = (ds[0], ds[1]) if len(ds) > 1 else (ds[0], ds[0])
                links["intra"][kind] = measure_transfer(a.torch, b.torch)
            firsts = [ds[0] for ds in by_kind.values()]
            cross = [measure_transfer(a.torch, b.torch) for a in firsts for b in firsts if a is not b]
            if cross:
                links["cross"] = Link(min(l.bandwidth for l in cross), max(l.latency for l in cross))
    default = Link(5e9, 20e-6)
    kinds: dict[str, DeviceKind] = {}
    nodes, order, first = [], [], 0
    for kind, ds in by_kind.items():
        intra = links["intra"].get(kind, default)
        d0 = ds[0]
        kinds[kind] = self_measured_kind(kind, d0.relative_speed, d0.memory_bytes, intra, d0.emulated,
                                         f"hal devices {', '.join(d.torch for d in ds)}")
        cross = links["cross"] or intra
        nodes.append(Node(kind, kind, len(ds), intra, cross, first))
        order += [d.torch for d in ds]
        first += len(ds)
    return Cluster("local-hal", kinds, nodes), order, links


def profile_cache_path(key: str):
    return cache_dir() / f"layers-{key}.json"


def profiled_model(name: str, build_layers: Callable[[], list], make_input: Callable[[int], Any],
                   devices: list[HalTorchDevice], micro_batches, seq_len: int, loss_fn=None, optimizer=None,
                   repeats: int = 5, cache_key: str | None = None, refresh: bool = False, log=None,
                   stat: str = "min"):
    """Per-layer forward/backward/optimizer times measured on one device of each kind in `devices`, merged into
    one ModelSpec (`measured[kind]`). Cached as JSON under the profile cache when `cache_key` is given. The
    fastest of `repeats` runs by default: on a host shared with other work, load only ever adds time."""
    import json

    from hal.plan.model import ModelSpec
    from hal.plan.profile_layers import profile_torch_layers
    first_of: dict[str, HalTorchDevice] = {}
    for d in devices:
        first_of.setdefault(d.kind, d)
    path = profile_cache_path(cache_key) if cache_key else None
    if path is not None and path.exists() and not refresh:
        try:
            spec = ModelSpec.from_dict(load_json(path))
            if all(k in spec.layers[0].measured and all(b in spec.layers[0].measured[k] for b in micro_batches)
                   for k in first_of):
                return spec, True
        except (OSError, ValueError, KeyError, TypeError, IndexError):
            pass
    spec = None
    for kind, d in first_of.items():
        if log:
            log(f"profiling {len(build_layers())} layers on {d.label}, micro-batches {list(micro_batches)}")
        s = profile_torch_layers(build_layers(), make_input, device=d.torch, kind=kind, micro_batches=micro_batches,
                                 seq_len=seq_len, name=name, repeats=repeats, optimizer=optimizer, loss_fn=loss_fn,
                                 stat=stat)
        if spec is None:
            spec = s
        else:
            spec.merge_measured(s)
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(spec.to_dict()))
        except OSError:
            pass
    return spec, False
