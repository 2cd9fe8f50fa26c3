"""Devices: every device of every loaded plugin, under one global numbering.

A device has a global index (its place in `devices()`, and its torch index `hal:N`) and a name
`<plugin>:<local index>` such as `emu:1`. `HAL_VISIBLE_DEVICES` (e.g. `cpu:0,emu:1` or `emu`) hides the rest.
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Callable, Union

from hal import _C
from hal.runtime import ensure_initialized

if TYPE_CHECKING:
    from hal.buffer import Buffer
    from hal._stream import Event, Stream

__all__ = ["Device", "DeviceProperties", "Link", "devices", "device", "device_count", "synchronize", "topology"]

DeviceLike = Union["Device", int, str]

# Installed by the torch bridge (hal.torch, a layer above this one) when it loads; this layer never imports it.
_torch_device_of: "Callable[[Device], Any] | None" = None


@dataclasses.dataclass(frozen=True)
class DeviceProperties:
    """What a device declares about itself. Figures that the plugin does not know are 0."""

    name: str
    vendor: str
    kind: str  # "cpu", "gpu", "npu" or "other"
    total_memory: int  # bytes
    emulated: bool  # Figures describe an emulation, not silicon: label it wherever it is shown.
    host_addressable: bool  # The host may dereference device pointers.
    mappable: bool  # Device memory can be mapped into the host (Device.map).
    relative_speed: float  # Emulated devices: speed relative to the host machine (1.0 = native).
    peak_flops: dict[str, float]  # Dense peak FLOP/s per dtype name ("f32", "bf16", ...), known ones only.
    memory_bandwidth: float  # bytes/s
    link_bandwidth: float  # bytes/s, device to device
    host_link_bandwidth: float  # bytes/s, host to device

    @classmethod
    def _from_native(cls, p: "_C.DeviceProperties") -> "DeviceProperties":
        return cls(name=p.name, vendor=p.vendor, kind=p.kind, total_memory=p.total_memory, emulated=p.emulated,
                   host_addressable=p.host_addressable, mappable=p.mappable, relative_speed=p.relative_speed,
                   peak_flops=dict(p.peak_flops), memory_bandwidth=p.memory_bandwidth,
                   link_bandwidth=p.link_bandwidth, host_link_bandwidth=p.host_link_bandwidth)


@dataclasses.dataclass(frozen=True)
class Link:
    """One link of a device, as its plugin declares it (the "hal.topology" extension, hal/topology.h).
    Figures describe one direction, device -> peer; 0 means unknown (for emulated devices, the emulation)."""

    peer: str  # The peer's device name ("emu:1"), or "host".
    peer_index: int  # Its global index (`hal:N`); -1 for the host.
    kind: str  # "same_memory", "pcie", "fabric", "host_staged", "network" or "other"
    peer_access: bool  # Copies to the peer are direct, not staged through the host.
    bandwidth: float  # bytes/s
    latency: float  # seconds


class Device:
    """One device. Cheap to create; equal devices compare equal. Use `hal.device(...)` to get one."""

    __slots__ = ("_native", "_properties")

    def __init__(self, native: "_C.Device"):
        self._native = native
        self._properties: DeviceProperties | None = None

    # Identity ------------------------------------------------------------------------------------------
    @property
    def index(self) -> int:
        """Global index across all plugins; also the torch index (`hal:N`)."""
        return self._native.index

    @property
    def name(self) -> str:
        """`<plugin>:<local index>`, e.g. `emu:1`."""
        return self._native.name

    @property
    def plugin(self) -> str:
        return self._native.plugin

    @property
    def plugin_path(self) -> str:
        return self._native.plugin_path

    @property
    def local_index(self) -> int:
        return self._native.local_index

    @property
    def properties(self) -> DeviceProperties:
        if self._properties is None:
            self._properties = DeviceProperties._from_native(self._native.properties())
        return self._properties

    @property
    def emulated(self) -> bool:
        return self.properties.emulated

    @property
    def torch_device(self):
        """The torch device for this HAL device: `hal:N`, or the torch-native device where one exists
        (a `cuda` plugin's devices are `cuda:<local index>`)."""
        if _torch_device_of is None:
            import torch  # noqa: F401 - torch's backend autoload imports the bridge, which installs the hook.
        if _torch_device_of is None:
            raise RuntimeError("the HAL torch backend is not loaded (TORCH_DEVICE_BACKEND_AUTOLOAD=0?): "
                               "`import hal.torch` first")
        return _torch_device_of(self)

    def supports(self, entry: str) -> bool:
        """Whether the plugin implements the optional ABI entry `entry` (e.g. "memory_map")."""
        return self._native.supports(entry)

    def operators(self) -> dict[str, list[str]]:
        """The ATen operators the device's plugin runs with kernels of its own (ABI 1.1, kernel.h), with the
        dtypes it declares for each: {"aten::mm": ["f32", "f64"], ...}; empty for a plugin without any."""
        return dict(self._native.operators())

    def extensions(self) -> dict[str, int]:
        """The extensions of the device's plugin (ABI 1.2, hal/extension.h): {name: version}."""
        return dict(self._native.extensions())

    def links(self) -> "list[Link] | None":
        """Which devices (and the host) this device reaches, over what, how fast: the plugin's "hal.topology"
        extension. None when the plugin declares no topology (then only `properties`' figures are known);
        devices hidden by HAL_VISIBLE_DEVICES are left out."""
        native = self._native.links()
        if native is None:
            return None
        return [Link(peer=l.peer, peer_index=l.peer_index, kind=l.kind, peer_access=l.peer_access,
                     bandwidth=l.bandwidth, latency=l.latency) for l in native]

    # Memory --------------------------------------------------------------------------------------------
    def alloc(self, nbytes: int, stream: "Stream | None" = None) -> "Buffer":
        """`nbytes` of device memory from the caching allocator, for use on `stream` (default: current)."""
        from hal.buffer import Buffer

        return Buffer.allocate(self, nbytes, stream)

    def memory_info(self) -> tuple[int, int]:
        """(free, total) bytes, as the plugin sees the device."""
        return tuple(self._native.memory_info())

    def memory_stats(self) -> dict[str, int]:
        """Caching allocator statistics: allocated/reserved bytes (current and peak), counts, OOMs."""
        return dict(self._native.memory_stats())

    def reset_peak_memory_stats(self) -> None:
        self._native.reset_peak_memory_stats()

    def empty_cache(self) -> None:
        """Returns every cached, unused block to the plugin."""
        self._native.empty_cache()

    # Execution -----------------------------------------------------------------------------------------
    def synchronize(self) -> None:
        """Waits for all work HAL queued on this device. Ctrl-C interrupts the wait (KeyboardInterrupt)."""
        from hal._stream import _release_device_host_refs

        self._native.synchronize()
        _release_device_host_refs(self.index)

    def Stream(self) -> "Stream":  # noqa: N802 - reads as a constructor: dev.Stream()
        from hal._stream import Stream

        return Stream(self)

    def Event(self, timing: bool = True) -> "Event":  # noqa: N802
        from hal._stream import Event

        return Event(self, timing=timing)

    @property
    def default_stream(self) -> "Stream":
        from hal._stream import Stream

        return Stream._wrap(self, self._native.default_stream())

    # Python protocol -----------------------------------------------------------------------------------
    def __eq__(self, other: object) -> bool:
        return isinstance(other, Device) and other.index == self.index

    def __hash__(self) -> int:
        return hash(("hal.Device", self.index))

    def __repr__(self) -> str:
        tag = ", emulated" if self.emulated else ""
        return f"hal.Device({self.name!r}, index={self.index}{tag})"


_cache: dict[int, Device] = {}


def device_count() -> int:
    ensure_initialized()
    return _C.device_count()


def devices() -> list[Device]:
    """Every visible device, in global index order."""
    return [device(i) for i in range(device_count())]


def device(spec: DeviceLike) -> Device:
    """A device by global index (`2`), name (`"emu:1"`), torch-style name (`"hal:2"`) or Device."""
    if isinstance(spec, Device):
        return spec
    ensure_initialized()
    if isinstance(spec, str) and spec.startswith("hal:") and spec[4:].isdigit():
        spec = int(spec[4:])
    if isinstance(spec, bool) or not isinstance(spec, (int, str)):
        raise TypeError(f"hal.device() takes an index, a name like 'emu:1' or a Device, not {spec!r}")
    native = _C.get_device(spec) if isinstance(spec, int) else _C.find_device(spec)
    dev = _cache.get(native.index)
    if dev is None:
        dev = _cache.setdefault(native.index, Device(native))
    return dev


def topology() -> "dict[str, list[Link] | None]":
    """Device name -> its links (`Device.links()`), for every visible device: what the planner and the
    collectives may assume about who reaches whom. Devices of different plugins always reach each other
    through the host (their `host` links)."""
    return {d.name: d.links() for d in devices()}


def synchronize(spec: DeviceLike | None = None) -> None:
    """Waits for all queued work on one device, or on every device when none is given."""
    for d in [device(spec)] if spec is not None else devices():
        d.synchronize()
