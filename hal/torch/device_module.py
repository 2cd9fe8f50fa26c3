"""`torch.hal`: the device module of the `hal` torch backend (what `torch.cuda` is for CUDA).

Devices are HAL's global devices: `hal:N` is `hal.devices()[N]`. Streams are `torch.hal.Stream`, a
`torch.Stream` that converts to and from `hal.Stream` (one runtime stream, one current stream per thread and
device for torch and HAL alike); events are torch's generic `torch.Event`. Memory figures come from HAL's
caching allocator in torch.cuda's layout (the same numbers `torch.accelerator.memory_*` report). Each device
has its own default generator. torch itself asks this module for `get_amp_supported_dtype` (torch.autocast) and
for inductor's code generators (`Scheduling`, ...: torch.compile). Where HAL has no answer (memory snapshots,
telemetry) the function raises NotImplementedError saying so.
"""
from __future__ import annotations

import contextlib
import dataclasses
import threading
from typing import Any, Iterator, Union

import torch

from hal import _torch_C
from hal._device import DeviceProperties as _HalDeviceProperties
from hal.torch.compile import InductorUnsupported

__all__ = [
    "is_available", "is_initialized", "device_count", "current_device", "set_device", "device", "synchronize",
    "get_device_name", "get_device_properties", "Stream", "Event", "current_stream", "default_stream",
    "set_stream", "stream", "memory_allocated", "max_memory_allocated", "memory_reserved", "max_memory_reserved",
    "memory_stats", "reset_peak_memory_stats", "reset_accumulated_memory_stats", "empty_cache", "mem_get_info",
    "manual_seed", "manual_seed_all", "seed", "seed_all", "initial_seed", "get_rng_state", "set_rng_state",
    "get_rng_state_all", "set_rng_state_all", "default_generators", "fallback_stats", "reset_fallback_stats",
    "op_stats", "reset_op_stats", "device_operators",
    "set_fallback_blocklist", "get_fallback_blocklist", "init", "get_device_capability", "is_bf16_supported",
    "device_of", "memory_summary", "memory_snapshot", "utilization", "temperature", "power_draw", "clock_rate",
    "list_gpu_processes", "get_amp_supported_dtype",
]

DeviceLike = Union[int, str, torch.device, None]
_initialized = False


def _index(device: DeviceLike = None) -> int:
    """The hal device index of `device` (None, -1 or a bare "hal": the current device)."""
    if device is None:
        return current_device()
    if isinstance(device, int):
        return current_device() if device < 0 else device
    if isinstance(device, str):
        device = torch.device(device)
    if isinstance(device, torch.device):
        if device.type != "hal":
            raise ValueError(f"expected a hal device, got {device}")
        return current_device() if device.index is None else device.index
    raise TypeError(f"expected a hal device (int, str or torch.device), got {type(device).__name__}")


# --- Devices --------------------------------------------------------------------------------------------

def _lazy_init() -> None:
    """Starts the HAL runtime (loads the plugins). Raises in a child forked after initialization."""
    global _initialized
    if _initialized:
        return
    _torch_C._lazy_init()
    _initialized = True


def is_initialized() -> bool:
    return _initialized


def _is_in_bad_fork() -> bool:
    return _torch_C._in_bad_fork()


def is_available() -> bool:
    """Whether at least one HAL device is visible. Never raises."""
    return device_count() > 0


def device_count() -> int:
    """Number of HAL devices (every plugin's). Never raises: 0 when the runtime cannot start."""
    return _torch_C._device_count()


def current_device() -> int:
    return _torch_C._current_device()


def set_device(device: DeviceLike) -> None:
    _lazy_init()
    _torch_C._set_device(_index(device))


class device:
    """Context manager that makes `device` current (None or -1: no change)."""

    def __init__(self, device: DeviceLike):
        self.idx = -1 if device is None else _index(device)
        self.prev_idx = -1

    def __enter__(self) -> "device":
        if self.idx >= 0:
            _lazy_init()
            self.prev_idx = _torch_C._exchange_device(self.idx)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.idx >= 0:
            _torch_C._set_device(self.prev_idx)


def synchronize(device: DeviceLike = None) -> None:
    """Waits for all work on every stream of `device`."""
    _lazy_init()
    _torch_C._synchronize(_index(device))


def get_device_name(device: DeviceLike = None) -> str:
    """`<plugin>:<local index>` (e.g. `emu:1`) of `hal:N`."""
    return _torch_C._device_info(_index(device))[0]


def init() -> None:
    """Starts the HAL runtime now rather than on first use (as torch.cuda.init)."""
    _lazy_init()


@dataclasses.dataclass(frozen=True)
class DeviceProperties(_HalDeviceProperties):
    """HAL's `hal.DeviceProperties` plus the fields code written for `torch.cuda` reads."""

    major: int = 0  # get_device_capability(): HAL devices have no compute-capability version.
    minor: int = 0
    is_integrated: bool = False  # The device works on host memory (host_addressable).


def get_device_properties(device: DeviceLike = None):
    """HAL's `DeviceProperties` of `hal:N` (name, vendor, kind, total_memory, peak figures, emulated, ...), with
    torch.cuda's `major`, `minor` (both 0, see get_device_capability) and `is_integrated`."""
    import hal

    props = hal.device(_index(device)).properties
    fields = {f.name: getattr(props, f.name) for f in dataclasses.fields(props)}
    return DeviceProperties(**fields, is_integrated=props.host_addressable)


def get_device_capability(device: DeviceLike = None) -> tuple[int, int]:
    """(0, 0) for every HAL device: the (major, minor) version is a CUDA notion HAL devices do not have, and
    (0, 0) makes capability checks written for CUDA (`>= (8, 0)`) take their conservative path. Ask
    `get_device_properties(i).peak_flops` which dtypes a device declares, and `is_bf16_supported()`."""
    props = get_device_properties(device)
    return props.major, props.minor


def is_bf16_supported(including_emulation: bool = True, device: DeviceLike = None) -> bool:
    """Whether bfloat16 works on `device` (default: the current one). Every HAL device runs bfloat16 ops (the
    CPU kernels of the fallback), so with `including_emulation` (torch.cuda's default) this is True; without it,
    whether the device declares bfloat16 throughput (`"bf16"` in its `peak_flops`)."""
    props = get_device_properties(device)
    return including_emulation or "bf16" in props.peak_flops


class device_of(device):
    """Context manager that makes the device of tensor `obj` current (no change for a tensor not on hal)."""

    def __init__(self, obj: torch.Tensor):
        super().__init__(obj.device.index if obj.device.type == "hal" else -1)


def _no_telemetry(what: str) -> NotImplementedError:
    return NotImplementedError(f"hal: torch.hal.{what}() is not available: HAL's plugin ABI reports no device "
                               f"telemetry (utilization, temperature, power, clocks, processes)")


def utilization(device: DeviceLike = None) -> int:
    raise _no_telemetry("utilization")


def temperature(device: DeviceLike = None) -> int:
    raise _no_telemetry("temperature")


def power_draw(device: DeviceLike = None) -> int:
    raise _no_telemetry("power_draw")


def clock_rate(device: DeviceLike = None) -> int:
    raise _no_telemetry("clock_rate")


def list_gpu_processes(device: DeviceLike = None) -> str:
    raise _no_telemetry("list_gpu_processes")


# --- Streams and events ------------------------------------------------------------------------------------

_PRIVATEUSE1 = 20  # c10::DeviceType::PrivateUse1, the number torch.Stream(device_type=...) takes.


class Stream(torch.Stream):
    """A stream of a hal device: a `torch.Stream` (usable wherever torch takes one) that converts to and from
    HAL's own `hal.Stream`. Both name the same runtime stream: `stream_id` is `hal.Stream.handle`.

    `torch.hal.Stream("hal:1")` takes a stream from the device's pool of 8 (as `torch.Stream(device=...)`);
    `torch.hal.Stream.from_hal(s)` wraps an existing `hal.Stream`; `.hal_stream` goes the other way.
    """

    def __new__(cls, device: DeviceLike = None, priority: int = 0) -> "Stream":
        _lazy_init()
        return super().__new__(cls, device=torch.device("hal", _index(device)), priority=priority)

    @classmethod
    def _wrap(cls, device_index: int, stream_id: int) -> "Stream":
        return torch.Stream.__new__(cls, stream_id=stream_id, device_index=device_index, device_type=_PRIVATEUSE1)

    @classmethod
    def from_torch(cls, stream: torch.Stream) -> "Stream":
        """The same stream as a torch.hal.Stream (`stream` must be a hal stream)."""
        if stream.device.type != "hal":
            raise ValueError(f"expected a stream of a hal device, got one of {stream.device}")
        return stream if isinstance(stream, cls) else cls._wrap(stream.device_index, stream.stream_id)

    @classmethod
    def from_hal(cls, stream: Any) -> "Stream":
        """The torch stream of a `hal.Stream` (same runtime stream; its device is `hal:<global index>`). It holds
        `stream`: a runtime stream lives as long as a handle to it, and torch refers to streams only by id."""
        wrapped = cls._wrap(stream.device.index, stream.handle)
        wrapped._hal_stream = stream
        return wrapped

    @property
    def hal_stream(self) -> Any:
        """This stream as a `hal.Stream`, for HAL's own API (buffers, copies, events)."""
        held = getattr(self, "_hal_stream", None)
        if held is not None:
            return held
        import hal
        from hal._stream import Stream as HalStream

        dev = hal.device(self.device_index)
        return HalStream._wrap(dev, dev._native.stream(self.stream_id))


def Event(enable_timing: bool = False, blocking: bool = False, interprocess: bool = False) -> torch.Event:
    return torch.Event(device=torch.device("hal", current_device()), enable_timing=enable_timing,
                       blocking=blocking, interprocess=interprocess)


def current_stream(device: DeviceLike = None) -> Stream:
    """This thread's current stream on `device`. It is also HAL's current stream: `hal.current_stream(i)` and
    `torch.hal.current_stream(i)` name the same stream (the bridge keeps it; see docs/torch.md)."""
    _lazy_init()
    index = _index(device)
    return Stream._wrap(index, _torch_C._current_stream_id(index))


def default_stream(device: DeviceLike = None) -> Stream:
    _lazy_init()
    return Stream._wrap(_index(device), 0)


def _as_torch_stream(s: Any) -> torch.Stream:
    """A torch.Stream, or a hal.Stream converted to one."""
    return s if isinstance(s, torch.Stream) else Stream.from_hal(s)


# The hal.Stream last made current by set_stream, per thread and device: the runtime keeps the current stream
# by id only, and a hal stream dies with its last handle.
_set_streams = threading.local()


def set_stream(stream: Any) -> None:
    """Makes `stream` (a torch.hal.Stream, torch.Stream or hal.Stream) current on its device. A hal.Stream is kept
    alive while it is current (until the next set_stream on that device and thread)."""
    s = _as_torch_stream(stream)
    torch.accelerator.set_stream(s)
    held = _set_streams.__dict__.setdefault("by_device", {})
    held[s.device_index] = getattr(s, "_hal_stream", None)


@contextlib.contextmanager
def stream(s: Any) -> Iterator[None]:
    """Makes `s` (a torch.hal.Stream, torch.Stream or hal.Stream) the current stream of its device, and its
    device the current device, for the block (None: no change)."""
    if s is None:
        yield
        return
    s = _as_torch_stream(s)
    with device(s.device_index):
        prev = torch.accelerator.current_stream(s.device_index)
        torch.accelerator.set_stream(s)
        try:
            yield
        finally:
            torch.accelerator.set_stream(prev)


# --- Memory (HAL's per-device caching allocator) ------------------------------------------------------------

def memory_allocated(device: DeviceLike = None) -> int:
    return torch.accelerator.memory_allocated(_index(device))


def max_memory_allocated(device: DeviceLike = None) -> int:
    return torch.accelerator.max_memory_allocated(_index(device))


def memory_reserved(device: DeviceLike = None) -> int:
    return torch.accelerator.memory_reserved(_index(device))


def max_memory_reserved(device: DeviceLike = None) -> int:
    return torch.accelerator.max_memory_reserved(_index(device))


def memory_stats(device: DeviceLike = None) -> dict[str, Any]:
    return dict(torch.accelerator.memory_stats(_index(device)))


def reset_peak_memory_stats(device: DeviceLike = None) -> None:
    torch.accelerator.reset_peak_memory_stats(_index(device))


def reset_accumulated_memory_stats(device: DeviceLike = None) -> None:
    torch.accelerator.reset_accumulated_memory_stats(_index(device))


def empty_cache() -> None:
    """Returns every fully free cached segment of every device to its plugin."""
    torch.accelerator.empty_cache()


def mem_get_info(device: DeviceLike = None) -> tuple[int, int]:
    """(free, total) bytes as the plugin reports them."""
    return torch.accelerator.get_memory_info(_index(device))


def memory_summary(device: DeviceLike = None, abbreviated: bool = False) -> str:
    """A table of `memory_stats(device)` in torch.cuda.memory_summary's shape, with what HAL does not track
    marked n/a (`abbreviated` is accepted for compatibility: the table has no per-pool rows to leave out)."""
    from hal.torch.memory_summary import format_summary

    index = _index(device)
    emulated = ", emulated" if get_device_properties(index).emulated else ""
    return format_summary(f"hal:{index} ({get_device_name(index)}{emulated})", memory_stats(index))


def memory_snapshot() -> list[dict[str, Any]]:
    """Not available: torch.cuda's snapshot lists every segment and block of the allocator, and HAL's caching
    allocator keeps only totals (memory_stats / memory_summary)."""
    raise NotImplementedError("hal: torch.hal.memory_snapshot() is not available: HAL's caching allocator keeps no "
                              "per-segment or per-block record; use torch.hal.memory_stats(device) or "
                              "torch.hal.memory_summary(device) for its totals")


# --- Random numbers (one default generator per device) -------------------------------------------------------

class _DefaultGenerators:
    """`torch.hal.default_generators[i]`: the default torch.Generator of hal:i."""

    def __getitem__(self, i: int) -> torch.Generator:
        return _torch_C._default_generator(_index(i))

    def __len__(self) -> int:
        return device_count()

    def __iter__(self) -> Iterator[torch.Generator]:
        return (self[i] for i in range(len(self)))


default_generators = _DefaultGenerators()


def manual_seed(seed: int) -> None:
    """Seeds the current device's generator."""
    default_generators[current_device()].manual_seed(int(seed))


def manual_seed_all(seed: int) -> None:
    for g in default_generators:
        g.manual_seed(int(seed))


def seed() -> None:
    default_generators[current_device()].seed()


def seed_all() -> None:
    s = torch.Generator().seed()
    manual_seed_all(s)


def initial_seed() -> int:
    return default_generators[current_device()].initial_seed()


def get_rng_state(device: DeviceLike = "hal") -> torch.Tensor:
    return default_generators[_index(device)].get_state()


def set_rng_state(new_state: torch.Tensor, device: DeviceLike = "hal") -> None:
    default_generators[_index(device)].set_state(new_state)


def get_rng_state_all() -> list[torch.Tensor]:
    return [g.get_state() for g in default_generators]


def set_rng_state_all(new_states: list[torch.Tensor]) -> None:
    for g, s in zip(default_generators, new_states):
        g.set_state(s)


# --- Autocast (hal/torch/autocast.py) ---------------------------------------------------------------------

def get_amp_supported_dtype() -> list[torch.dtype]:
    """The dtypes `torch.autocast("hal", dtype=...)` accepts (what torch.autocast asks a backend module)."""
    from hal.torch.autocast import SUPPORTED_DTYPES

    return list(SUPPORTED_DTYPES)


# --- torch.compile (hal/torch/compile.py) ---------------------------------------------------------------
# Inductor looks these names up in a PrivateUse1 backend's device module; each one refuses hal graphs clearly.
Scheduling = PythonWrapperCodegen = CppWrapperCodegen = WrapperFxCodegen = InductorUnsupported


# --- The CPU fallback ---------------------------------------------------------------------------------------

def fallback_stats() -> dict[str, int]:
    from hal.torch import fallback_stats as f

    return f()


def reset_fallback_stats() -> None:
    from hal.torch import reset_fallback_stats as f

    f()


def set_fallback_blocklist(names: "list[str] | tuple[str, ...]") -> None:
    from hal.torch import set_fallback_blocklist as f

    f(names)


def get_fallback_blocklist() -> list[str]:
    from hal.torch import get_fallback_blocklist as f

    return f()


# --- Native operators (the plugins' kernels) -----------------------------------------------------------------

def op_stats() -> dict[str, dict]:
    from hal.torch import op_stats as f

    return f()


def reset_op_stats() -> None:
    from hal.torch import reset_op_stats as f

    f()


def device_operators(device: "int | str | torch.device") -> dict[str, list[str]]:
    from hal.torch import device_operators as f

    return f(device)
