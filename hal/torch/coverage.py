"""How much of PyTorch's core ATen IR a device runs with kernels of its own plugin (`hal ops PLUGIN.so`).

Core ATen IR is the set of about 190 operator overloads PyTorch tags `core` (torch.Tag.core): every other
operator decomposes into them, so it is the contract PyTorch itself gives new backends. A plugin's declared
operators (ABI 1.1, kernel.h) are compared with it; operators outside the core set count separately (backward
and fused operators such as gelu_backward or _fused_adamw_ are not core but save decompositions).

Some core operators need no kernel on any device: HAL's torch bridge runs them itself (factories, copies and
views: empty_strided, as_strided, view, ...; every operator returning a view of its argument; the sym_*
queries of sizes). They are listed apart, and the plugin's share is of the others.
"""
from __future__ import annotations

import dataclasses
from functools import lru_cache

__all__ = ["core_aten_ops", "Coverage", "coverage"]


@lru_cache(maxsize=1)
def core_aten_ops() -> tuple[str, ...]:
    """Every overload of this torch tagged core, as "aten::name.overload", sorted."""
    import torch

    core = []
    for name in torch._C._dispatch_get_all_op_names():
        if not name.startswith("aten::"):
            continue
        base, _, overload = name[len("aten::"):].partition(".")
        packet = getattr(torch.ops.aten, base, None)
        op = getattr(packet, overload or "default", None) if packet is not None else None
        if op is not None and torch.Tag.core in op.tags:
            core.append(name)
    return tuple(sorted(core))


@lru_cache(maxsize=1)
def handled_by_hal() -> frozenset[str]:
    """The core overloads HAL's bridge runs for every device without a plugin kernel (see above). Call before
    the bridge reaches any device (plugin operators get kernels registered then)."""
    import torch

    import hal.torch  # noqa: F401 - the bridge's own kernels are registered when it loads

    out = set()
    for name in core_aten_ops():
        base, _, overload = name[len("aten::"):].partition(".")
        op = getattr(getattr(torch.ops.aten, base), overload or "default")
        views = any(r.alias_info is not None and not r.alias_info.is_write for r in op._schema.returns)
        if views or base.startswith("sym_") or torch._C._dispatch_has_kernel_for_dispatch_key(name, "PrivateUse1"):
            out.add(name)
    return frozenset(out)


@dataclasses.dataclass
class Coverage:
    device: str
    core_total: int                         # core overloads that need a kernel (those HAL runs itself excluded)
    by_hal: list[str]                       # core overloads HAL's bridge runs itself on every device
    native_core: dict[str, list[str]]       # core overload -> declared dtypes
    missing_core: list[str]                 # core overloads without a kernel
    native_other: dict[str, list[str]]      # declared overloads outside core ATen IR
    unknown: list[str]                      # declared names this torch does not know

    @property
    def fraction(self) -> float:
        return len(self.native_core) / self.core_total if self.core_total else 0.0

    def as_dict(self) -> dict:
        return {**dataclasses.asdict(self), "fraction": self.fraction}


def coverage(device: str, declared: dict[str, list[str]]) -> Coverage:
    import torch

    by_hal = handled_by_hal()
    core = [n for n in core_aten_ops() if n not in by_hal]
    core_set = set(core)
    native_core = {n: d for n, d in declared.items() if n in core_set}
    other, unknown = {}, []
    for name, dtypes in declared.items():
        if name in core_set or name in by_hal:
            continue
        base, _, overload = name.partition("::")[2].partition(".")
        packet = getattr(torch.ops.aten, base, None) if name.startswith("aten::") else None
        if packet is None or getattr(packet, overload or "default", None) is None:
            unknown.append(name)
        else:
            other[name] = dtypes
    return Coverage(device, len(core), sorted(by_hal), native_core, [n for n in core if n not in native_core], other,
                    unknown)
