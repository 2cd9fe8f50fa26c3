"""`torch.autocast("hal", dtype=torch.bfloat16 | torch.float16)`: the CPU's autocast policy, applied to hal tensors.

Ops on hal tensors without a native kernel run the CPU kernels (docs/torch.md), so hal autocasts exactly the
ops the CPU autocasts and to the same dtypes: under autocast an op computes what CPU autocast computes for the
same inputs. The op list is read from torch at registration (every aten op with an `AutocastCPU` kernel), so it
follows the installed torch. Each op gets one of CPU autocast's three policies:

- lower precision (`_LOWER_PRECISION`: matmuls, linear, convolutions, prelu, attention): floating inputs other
  than float64 are cast to the autocast dtype;
- promote (`_PROMOTE`: cat, stack, index_copy): floating inputs other than float64 are cast to float32 if any of
  them is float32, else to the autocast dtype;
- float32 (every other op on CPU's list: losses, reductions such as prod, linear algebra, FFTs, 3d pooling):
  floating inputs other than float64 are cast to float32.

Every other op runs unchanged (a fallthrough of the `AutocastPrivateUse1` key). Unlike torch's C++ autocast,
casts of float32 weights are not cached for the autocast region: each use casts again (same numbers, more
copies).
"""
from __future__ import annotations

from typing import Any, Callable

import torch

__all__ = ["SUPPORTED_DTYPES", "install"]

SUPPORTED_DTYPES = [torch.bfloat16, torch.float16]

_KEY = "AutocastPrivateUse1"
_LOWER_PRECISION = frozenset({
    "conv1d", "conv1d.padding", "conv2d", "conv2d.padding", "conv3d", "conv3d.padding", "bmm", "mm", "linalg_vecdot",
    "baddbmm", "addmm", "_addmm_activation", "addbmm", "linear", "_convolution.deprecated", "matmul", "conv_tbc",
    "mkldnn_rnn_layer", "conv_transpose1d", "conv_transpose2d.input", "conv_transpose3d.input", "prelu",
    "scaled_dot_product_attention", "_native_multi_head_attention",
})
_PROMOTE = frozenset({"stack", "cat", "index_copy"})

_libraries: list[torch.library.Library] = []  # Registrations live as long as their Library object.


def cpu_policy_ops() -> list[str]:
    """The aten ops (`name` or `name.overload`) CPU autocast handles, from torch's dispatcher."""
    ops = torch._C._dispatch_get_registrations_for_dispatch_key("AutocastCPU")
    return sorted(op.removeprefix("aten::") for op in ops if op.startswith("aten::"))


def policy(op: str) -> str:
    """`lower_precision`, `promote` or `fp32`: what hal autocast does to the floating inputs of `op`."""
    return "lower_precision" if op in _LOWER_PRECISION else "promote" if op in _PROMOTE else "fp32"


def _eligible(t: Any) -> bool:
    return isinstance(t, torch.Tensor) and t.device.type == "hal" and t.is_floating_point() and t.dtype != torch.float64


def _tensors(args: Any) -> list[torch.Tensor]:
    if isinstance(args, (list, tuple)):
        return [t for a in args for t in _tensors(a)]
    if isinstance(args, dict):
        return _tensors(list(args.values()))
    return [args] if _eligible(args) else []


def _cast(value: Any, dtype: torch.dtype) -> Any:
    if _eligible(value):
        return value.to(dtype)
    if isinstance(value, (list, tuple)):
        return type(value)(_cast(v, dtype) for v in value)
    if isinstance(value, dict):
        return {k: _cast(v, dtype) for k, v in value.items()}
    return value


def _kernel(op: torch._ops.OpOverload, rule: str) -> Callable[..., Any]:
    exclude = torch._C.DispatchKeySet(torch._C.DispatchKey.AutocastPrivateUse1)

    def autocast_kernel(*args: Any, **kwargs: Any) -> Any:
        if rule == "fp32":
            dtype = torch.float32
        elif rule == "promote" and any(t.dtype == torch.float32 for t in _tensors((args, kwargs))):
            dtype = torch.float32
        else:
            dtype = torch.get_autocast_dtype("hal")
        with torch._C._ExcludeDispatchKeyGuard(exclude):
            return op(*_cast(args, dtype), **_cast(kwargs, dtype))

    return autocast_kernel


def install() -> None:
    """Registers the hal autocast kernels and the fallthrough for every other op. Idempotent."""
    if any(lib.ns == "aten" for lib in _libraries):
        return
    if not torch._C._dispatch_has_backend_fallback(torch._C.DispatchKey.AutocastPrivateUse1):
        # torch registers this fallthrough for its own autocast keys only; a C++ bridge may register it too.
        fallthrough = torch.library.Library("_", "IMPL")
        fallthrough.fallback(torch.library.fallthrough_kernel, _KEY)
        _libraries.append(fallthrough)  # Before the kernels: ops outside the list must never fail to dispatch.
    kernels = torch.library.Library("aten", "IMPL")
    for name in cpu_policy_ops():
        packet, _, overload = name.partition(".")
        op = getattr(getattr(torch.ops.aten, packet), overload or "default")
        kernels.impl(name, _kernel(op, policy(name)), _KEY)
    _libraries.append(kernels)
