"""HAL as a torch device: every HAL device is `hal:N` in PyTorch, all plugins side by side in one process.

    import torch                       # with HAL installed, the `hal` backend autoloads (entry point)
    x = torch.randn(4, device="hal:1") # or: import hal.torch
    model.to("hal:0")

PyTorch allows one out-of-tree backend per process (PrivateUse1); HAL renames it `hal` and multiplexes every
plugin behind it, so `hal:N` is HAL's global device N (`hal.devices()[N]`), whichever vendor it belongs to.
`torch.hal` is the device module (device count, streams, memory statistics, RNG, fallback statistics).
Ops without a native kernel run the CPU kernel, in place on device memory the host can reach (see
docs/torch.md). Importing this module imports torch and the bridge `hal._torch_C`, but loads no plugin:
devices start on first use.
"""
from __future__ import annotations

import importlib
import os
import threading
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from hal._device import Device

__all__ = ["BACKEND_NAME", "register", "is_registered", "torch_device_of", "fallback_stats",
           "reset_fallback_stats", "set_fallback_blocklist", "get_fallback_blocklist", "op_stats", "reset_op_stats",
           "device_operators"]

BACKEND_NAME = "hal"
_PACKAGE_PLUGIN_DIR = Path(__file__).resolve().parent.parent / "plugins"
_lock = threading.RLock()
_registered = False


def register() -> None:
    """Registers the `hal` torch backend in this process. Idempotent; runs when this module is imported.

    Raises RuntimeError when another out-of-tree backend already owns PrivateUse1 (torch allows one).
    """
    global _registered
    with _lock:
        if _registered:
            return
        import torch

        current = torch._C._get_privateuse1_backend_name()
        if current != BACKEND_NAME:
            if current != "privateuseone":
                raise RuntimeError(f"hal: torch's single out-of-tree backend slot (PrivateUse1) is already taken by "
                                   f"{current!r}; HAL cannot register as 'hal' in this process")
            torch.utils.rename_privateuse1_backend(BACKEND_NAME)
        from hal import _torch_C

        dirs = [str(_PACKAGE_PLUGIN_DIR)] if _PACKAGE_PLUGIN_DIR.is_dir() else []
        _torch_C._set_default_runtime_options(plugin_paths=[], plugin_dirs=dirs, use_env=True, configs={})
        device_module = importlib.import_module("hal.torch.device_module")
        if getattr(torch, BACKEND_NAME, None) is not device_module:
            torch._register_device_module(BACKEND_NAME, device_module)
        if not hasattr(torch.Tensor, "is_" + BACKEND_NAME):
            torch.utils.generate_methods_for_privateuse1_backend(
                for_tensor=True, for_module=True, for_packed_sequence=True, for_storage=True)
        importlib.import_module("hal.torch.module_conversion").install()
        importlib.import_module("hal.torch.autocast").install()
        from hal import _device

        _device._torch_device_of = torch_device_of  # Answers hal.Device.torch_device (the API layer's hook).
        env = os.environ.get("HAL_FALLBACK_BLOCKLIST", "")
        if env.strip():
            set_fallback_blocklist([n.strip() for n in env.split(",") if n.strip()])
        _registered = True


def is_registered() -> bool:
    return _registered


def torch_device_of(device: "Device") -> "torch.device":
    """The torch device of a HAL device: the torch-native one where torch has it (`cuda` plugin devices are
    `cuda:<local index>`), else `hal:<global index>`."""
    import torch

    if device.plugin == "cuda":
        return torch.device("cuda", device.local_index)
    register()
    return torch.device(BACKEND_NAME, device.index)


def fallback_stats() -> dict[str, int]:
    """How many times each op ran through the CPU fallback, by `aten::name.overload`, since the last reset."""
    from hal import _torch_C

    return dict(_torch_C._fallback_stats())


def reset_fallback_stats() -> None:
    from hal import _torch_C

    _torch_C._reset_fallback_stats()


def set_fallback_blocklist(names: "list[str] | tuple[str, ...]") -> None:
    """Ops that must NOT fall back to the CPU kernel: calling one on a hal tensor raises, naming op and device.

    A name is `aten::add.Tensor` / `add.Tensor` (one overload) or `aten::add` / `add` (every overload).
    Replaces the previous list; `[]` clears it. Env `HAL_FALLBACK_BLOCKLIST` (comma-separated) sets it at
    registration.
    """
    from hal import _torch_C

    _torch_C._set_fallback_blocklist(list(names))


def get_fallback_blocklist() -> list[str]:
    from hal import _torch_C

    return list(_torch_C._fallback_blocklist())


def op_stats() -> dict[str, dict]:
    """How each op on hal tensors ran since the last reset, by `aten::name.overload`:

        {"aten::mm": {"native": {"calls": 12, "seconds": 0.0031}, "decomposed": {...},
                      "fallback": {"calls": 0, "seconds": 0.0, "waited_seconds": 0.0}, "declined": 0}}

    native: the device plugin's own kernel (kernel.h), queued on the current stream (seconds: host time until
    queued, not device time); view ops, which move no data on any device, count here too. decomposed: through
    PyTorch's decomposition into ops the plugin has. fallback: the CPU kernel (in place where the host can
    map the memory, staged otherwise); its seconds leave out waited_seconds, the time it first waited for the
    device's earlier work (queued kernels), which is the device's time. declined: calls the plugin turned down
    (they then fell back).
    """
    from hal import _torch_C

    out = {}
    for name, s in _torch_C._op_stats().items():
        out[name] = {path: {"calls": s[path][0], "seconds": s[path][1]} for path in ("native", "decomposed", "fallback")}
        out[name]["fallback"]["waited_seconds"] = s["fallback"][2]
        out[name]["declined"] = s["declined"]
    return out


def reset_op_stats() -> None:
    from hal import _torch_C

    _torch_C._reset_op_stats()


def device_operators(device: "int | str | torch.device") -> dict[str, list[str]]:
    """The operators device `hal:N` runs with kernels of its own plugin: {"aten::mm": ["f32", "f64"], ...}."""
    import torch
    from hal import _torch_C

    index = device if isinstance(device, int) else torch.device(device).index or 0
    return dict(_torch_C._device_operators(index))


def __getattr__(name: str) -> Any:
    # hal.torch.<x> for what torch.hal has (device_count, Stream, memory_allocated, ...).
    if name.startswith("_") or name == "device_module":
        raise AttributeError(f"module 'hal.torch' has no attribute {name!r}")
    try:
        return getattr(importlib.import_module("hal.torch.device_module"), name)
    except AttributeError:
        raise AttributeError(f"module 'hal.torch' has no attribute {name!r}") from None


# Registration runs on import; it warns instead of raising so that the autoload entry point (which imports
# this module inside `import torch`) can never break torch. Using a device after a failed registration raises.
try:
    register()
except Exception as _e:  # noqa: BLE001
    warnings.warn(f"hal: the 'hal' torch backend was not registered ({type(_e).__name__}: {_e})", RuntimeWarning,
                  stacklevel=2)
