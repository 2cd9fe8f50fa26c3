"""Decompositions into a device's own kernels (the Python side of csrc/torch/decompositions.cpp).

An op a device's plugin has no kernel for runs as PyTorch's decomposition of it (torch._decomp) when every op
that decomposition calls is one the device runs natively: a kernel of its plugin, an op HAL's bridge runs itself
on every device (views, factories, copies), or an op that decomposes so in turn. Otherwise the op falls back to
the CPU whole (one fallback, not several partial ones).

Whether an op decomposes so is decided once per (device, op, dtypes of its tensors), at its first such call: the decomposition runs on meta
tensors shaped like that call's arguments, under a dispatch mode that records the ops it calls. The answer is
cached (by the bridge) for the life of the process.
"""
from __future__ import annotations

import threading
from functools import lru_cache

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map

__all__ = ["plan", "run", "decomposition_of"]

_lock = threading.Lock()
_plans: dict[tuple, bool] = {}  # (device, op, dtypes of its tensors) -> decomposes into the device's kernels


@lru_cache(maxsize=None)
def _overload(name: str):
    base, _, overload = name.partition("::")[2].partition(".")
    packet = getattr(torch.ops.aten, base, None)
    return None if packet is None else getattr(packet, overload or "default", None)


@lru_cache(maxsize=1)
def _table():
    from torch._decomp import decomposition_table

    return decomposition_table


def decomposition_of(name: str):
    """PyTorch's decomposition of the overload `name` ("aten::gelu"), or None."""
    op = _overload(name)
    return None if op is None else _table().get(op)


@lru_cache(maxsize=None)
def _native(device: int) -> dict[str, frozenset[str]]:
    """The device's declared operators and the torch dtypes each takes."""
    from hal import _torch_C

    names = {"f32": "float32", "f64": "float64", "f16": "float16", "bf16": "bfloat16", "i8": "int8", "u8": "uint8",
             "i16": "int16", "i32": "int32", "i64": "int64", "bool": "bool", "c64": "complex64", "c128": "complex128"}
    return {name: frozenset(f"torch.{names.get(d, d)}" for d in dtypes)
            for name, dtypes in _torch_C._device_operators(device)}


@lru_cache(maxsize=1)
def _by_hal() -> frozenset[str]:
    from hal.torch.coverage import handled_by_hal

    # Also the copies HAL runs itself (copy_ / _copy_from, _to_copy through them).
    return handled_by_hal() | {"aten::copy_", "aten::_copy_from", "aten::_copy_from_and_resize", "aten::clone",
                               "aten::_to_copy", "aten::to.dtype", "aten::to.dtype_layout", "aten::to.device",
                               "aten::to.other", "aten::empty_like", "aten::detach", "aten::lift_fresh"}


class _Recorder(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.calls: list = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.calls.append((func, args, kwargs or {}))
        return func(*args, **(kwargs or {}))


def _to_meta(x):
    if isinstance(x, torch.Tensor):
        return torch.empty_strided(x.shape, x.stride(), dtype=x.dtype, device="meta")
    return x


def _name(op) -> str:
    n = op._schema.name
    return n + ("." + op._overloadname if op._overloadname != "default" else "")


def _dtypes(args, kwargs) -> tuple:
    return tuple(str(x.dtype) for x in torch.utils._pytree.tree_leaves((args, kwargs)) if isinstance(x, torch.Tensor))


def _decomposes(device: int, name: str, args, kwargs, depth: int = 0) -> bool:
    key = (device, name, _dtypes(args, kwargs))
    if key in _plans:
        return _plans[key]
    decomp = decomposition_of(name)
    answer = False
    if decomp is not None and depth < 8:
        rec = _Recorder()
        try:
            with rec:
                decomp(*tree_map(_to_meta, args), **tree_map(_to_meta, kwargs))
            answer = True
        except Exception:  # noqa: BLE001 - a decomposition that cannot run on meta (reads values): not for us
            answer = False
        if answer:
            for func, a, kw in rec.calls:
                called = _name(func)
                if called == name:
                    answer = False  # decomposes into itself
                elif called in _by_hal():
                    pass
                elif called in _native(device) and set(_dtypes(a, kw)) <= _native(device)[called]:
                    pass
                else:
                    answer = _decomposes(device, called, a, kw, depth + 1)
                if not answer:
                    break
    _plans[key] = answer
    return answer


def plan(device: int, name: str, args: tuple, kwargs: dict) -> bool:
    """Whether `name` on hal:`device` decomposes into the device's kernels (see the module's docstring)."""
    declared = frozenset().union(*_native(device).values()) if _native(device) else frozenset()
    if not set(_dtypes(args, kwargs)) <= declared:
        return False  # A dtype none of the device's kernels takes: its pieces would all fall back.
    with _lock:
        return _decomposes(device, name, args, kwargs)


def run(name: str, args: tuple, kwargs: dict):
    """Runs the decomposition of `name` on the call's (hal) arguments."""
    return decomposition_of(name)(*args, **kwargs)
