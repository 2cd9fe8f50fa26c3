"""The operators area of `hal conformance`: every operator a device declares (ABI 1.1, kernel.h) is checked against
torch's CPU kernel on the calls PyTorch's own OpInfo samples make of it.

Where the calls come from: for a declared overload (say aten::add.Tensor), the OpInfos of torch's op database
whose names relate to it (add, ...) generate their sample inputs (reference inputs where they have them: those
add broadcasting, empty and extremal tensors) for each declared dtype, and run on the CPU, with the backward
for differentiable dtypes, the in-place variant where there is one and out= for out overloads, under a dispatch mode that records every call of that overload with its exact
arguments (strides, offsets, broadcast views, Python numbers). So backward-only operators (gelu_backward,
native_layer_norm_backward) get the calls autograd really makes.

Which devices: the first of each plugin's devices with one set of declarations (devices that declare the same
operators run the same kernels); HAL_CONFORMANCE_ALL_DEVICES=1 checks every device.

What each call is checked on: the call as recorded, then with every tensor argument made non-contiguous (every
stride doubled) and placed at a storage offset, and, for calls whose tensors share one shape, with a large
tensor (the first dimension repeated to at least 2^18 elements). A variant the CPU kernel itself refuses is
skipped. On the device (arguments copied with their exact layout), the results, and the arguments the operator
writes, must match the CPU's (torch.testing.assert_close: rtol 1e-4 / atol 1e-5 for f32 and f64, the defaults
for lower precisions) or, for f32, the same call computed in f64 (long sums round differently in another order:
the f64 result is the truth both are held to; for f16 / bf16 the same in f32), and the call must run natively: a call the plugin declines falls back and is reported.

A declared operator fails when any call gives a wrong result or raises where the CPU does not, or when none of
its calls ran natively; it is skipped, saying so, when no OpInfo exercises it. Needs torch and expecttest
(torch's test utilities import it).
"""
from __future__ import annotations

import os
import re
from functools import lru_cache

import pytest

torch = pytest.importorskip("torch", reason="the operators area needs torch")
pytest.importorskip("expecttest", reason="the operators area needs expecttest (pip install expecttest)")

import hal  # noqa: E402
from hal.conformance.suite import _init_for_conformance  # noqa: E402

MAX_CALLS = 12        # recorded calls per (operator, dtype)
LARGE = 1 << 18       # elements of the "large" variant

DTYPES = {"f32": torch.float32, "f64": torch.float64, "f16": torch.float16, "bf16": torch.bfloat16,
          "i8": torch.int8, "u8": torch.uint8, "i16": torch.int16, "i32": torch.int32, "i64": torch.int64,
          "bool": torch.bool, "c64": torch.complex64, "c128": torch.complex128}


def _declared() -> list[tuple[str, str, tuple[str, ...]]]:
    _init_for_conformance()
    import hal.torch  # noqa: F401 - registers the backend

    out, seen = [], set()
    for d in hal.devices():
        ops = d.operators()
        key = (d.plugin, tuple(sorted((n, tuple(t)) for n, t in ops.items())))
        if key in seen and not os.environ.get("HAL_CONFORMANCE_ALL_DEVICES"):
            continue  # The same declarations as an earlier device of the plugin: the same kernels.
        seen.add(key)
        for name, dtypes in ops.items():
            out.append((d.name, name, tuple(dtypes)))
    return out


def pytest_generate_tests(metafunc):
    if "declared_op" in metafunc.fixturenames:
        try:
            cases = _declared()
        except Exception as e:  # noqa: BLE001 - reported by the test instead of a collection error
            cases = [("?", f"unavailable: {e}", ())]
        metafunc.parametrize("declared_op", cases, ids=[f"{d}-{n}" for d, n, _ in cases] or None)


def overload_of(name: str):
    """torch.ops.aten.add.Tensor for "aten::add.Tensor", or None."""
    m = re.fullmatch(r"(\w+)::(\w+)(?:\.(\w+))?", name)
    if m is None:
        return None
    packet = getattr(getattr(torch.ops, m[1], None), m[2], None)
    return None if packet is None else getattr(packet, m[3] or "default", None)


@lru_cache(maxsize=1)
def _op_db():
    from torch.testing._internal.common_methods_invocations import op_db

    return op_db


def _base(name: str) -> str:
    """"_log_softmax_backward_data" -> "log_softmax": the name an OpInfo would carry."""
    base = name.strip("_")
    for prefix in ("native_",):
        base = base[len(prefix):] if base.startswith(prefix) else base
    for suffix in ("_backward_data", "_backward", "_forward", "_dense", "_out"):
        base = base[: -len(suffix)] if base.endswith(suffix) else base
    return base.strip("_")


# Operators whose OpInfos carry other names: the functions that reach them, in the order their samples are taken
# (a plugin's kernel may cover the first and decline the last, as opencl does transposed convolutions).
OPINFO_NAMES = {"convolution": ("conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d"),
                "max_pool2d_with_indices": ("max_pool2d",)}


def _short_names(info) -> set[str]:
    names = {info.name, info.name.split(".")[-1], getattr(info, "aten_name", "") or ""}
    names |= {a.name for a in getattr(info, "aliases", ()) or ()}
    return {n.split(".")[-1] for n in names}


def candidate_infos(overload) -> list:
    packet = overload._schema.name.split("::")[1]
    base = _base(packet)
    named = OPINFO_NAMES.get(base, ())
    exact, related, mapped = [], [], []
    for info in _op_db():
        short = _short_names(info)
        if packet in short or base in short:
            exact.append(info)
        elif short & set(named):
            mapped.append((min(named.index(n) for n in short & set(named)), info))
        elif any(base in n for n in short):
            related.append(info)
    return exact + [info for _, info in sorted(mapped, key=lambda m: m[0])] + related


class _Recorder(torch.utils._python_dispatch.TorchDispatchMode):
    def __init__(self, target, limit: int):
        super().__init__()
        self.target, self.limit, self.calls = target, limit, []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func == self.target and len(self.calls) < self.limit:
            self.calls.append(_snapshot((args, kwargs)))
        return func(*args, **kwargs)


def _exact_copy(t, device="cpu"):
    """A tensor with t's values, dtype, sizes, strides and storage offset, over a copy of its whole storage."""
    base = torch.empty(0, dtype=t.dtype).set_(t.untyped_storage().clone() if device == "cpu" else t.untyped_storage())
    base = base.detach()
    if device != "cpu":
        base = base.to(device)
    return base.as_strided(t.size(), t.stride(), t.storage_offset())


def _map(tree, fn):
    return torch.utils._pytree.tree_map(lambda x: fn(x) if isinstance(x, torch.Tensor) else x, tree)


def _snapshot(tree):
    return _map(tree, lambda t: _exact_copy(t.detach()))


@lru_cache(maxsize=None)
def recorded_calls(name: str, dtype_name: str) -> list:
    overload = overload_of(name)
    dtype = DTYPES[dtype_name]
    calls, seen = [], set()
    for info in candidate_infos(overload):
        if dtype not in info.supported_dtypes("cpu"):
            continue
        grad = dtype.is_floating_point and info.supports_autograd
        make = info.reference_inputs if getattr(info, "reference_inputs_func", None) else info.sample_inputs
        try:
            samples = list(make("cpu", dtype, requires_grad=grad))
        except Exception:  # noqa: BLE001 - a sample generator that needs what this machine lacks
            continue
        for sample in samples:
            rec = _Recorder(overload, MAX_CALLS - len(calls))
            try:
                with rec:
                    out = info(sample.input, *sample.args, **sample.kwargs)
                    if grad:
                        outs = [o for o in torch.utils._pytree.tree_leaves(out)
                                if isinstance(o, torch.Tensor) and o.requires_grad and o.is_floating_point()]
                        if outs:
                            torch.autograd.backward([o.sum() for o in outs])
            except Exception:  # noqa: BLE001 - samples that error on purpose (error_inputs) or need more
                pass
            if overload._overloadname.endswith("out") and getattr(info, "supports_out", False):
                try:  # out= overloads (mul.out) are called with out=, a result of the right shape given.
                    with torch.no_grad():
                        like = info(sample.input, *sample.args, **sample.kwargs)
                    if isinstance(like, torch.Tensor):
                        with rec, torch.no_grad():
                            info(sample.input, *sample.args, **sample.kwargs, out=torch.empty_like(like))
                except Exception:  # noqa: BLE001 - e.g. an out= of another dtype
                    pass
            inplace = getattr(info, "inplace_variant", None)
            if inplace is not None and isinstance(sample.input, torch.Tensor):
                try:  # In-place overloads (add_.Tensor, fill_.Scalar) are called by the in-place variant.
                    with rec, torch.no_grad():
                        inplace(sample.input.detach().clone(), *sample.args, **sample.kwargs)
                except Exception:  # noqa: BLE001 - e.g. a result dtype the input cannot hold
                    pass
            for call in rec.calls:
                key = _signature(call)
                if key not in seen:
                    seen.add(key)
                    calls.append(call)
            if len(calls) >= MAX_CALLS:
                return calls
    return calls


def _describe(call) -> str:
    """The call's arguments for a message: tensors by dtype, shape and strides (offset), the rest as they are."""
    def one(x):
        if isinstance(x, torch.Tensor):
            off = f"+{x.storage_offset()}" if x.storage_offset() else ""
            return f"{str(x.dtype).replace('torch.', '')}{list(x.shape)}/{list(x.stride())}{off}"
        return repr(x)
    args, kwargs = call
    return "(" + ", ".join([one(a) if not isinstance(a, (list, tuple)) else "[" + ", ".join(map(one, a)) + "]"
                            for a in args] + [f"{k}={one(v)}" for k, v in kwargs.items()]) + ")"


def _signature(call) -> str:
    return repr(_map(call, lambda t: ("T", tuple(t.shape), t.stride(), t.storage_offset(), str(t.dtype))))


# --- Variants -------------------------------------------------------------------------------------------------

def _strided(t, offset: int):
    """t's values in a non-contiguous layout (every stride doubled, broadcast strides kept at 0) at storage offset
    |offset|."""
    if t.dim() == 0 or t.numel() <= 1:
        return t
    sizes, strides, step = list(t.shape), [0] * t.dim(), 2
    for d in reversed(range(t.dim())):
        if t.stride(d) != 0:
            strides[d] = step
            step *= max(sizes[d], 1) * 2
    need = offset + sum((n - 1) * st for n, st in zip(sizes, strides)) + 1
    out = torch.empty(need, dtype=t.dtype).as_strided(sizes, strides, offset)
    # Along broadcast dimensions every value is the same: write the one stored element.
    index = tuple(slice(None) if st else slice(0, 1) for st in strides)
    out[index].copy_(t[index])
    return out


def _large(call):
    """The call with its tensors' first dimension repeated to at least LARGE elements, when all its tensors share
    one shape (elementwise-like calls); else None."""
    tensors = [x for x in torch.utils._pytree.tree_leaves(call) if isinstance(x, torch.Tensor)]
    if not tensors or len({tuple(x.shape) for x in tensors}) != 1 or tensors[0].dim() == 0 or tensors[0].numel() == 0:
        return None
    repeat = -(-LARGE // tensors[0].numel())
    if repeat <= 1:
        return None
    return _map(call, lambda t: t.repeat(repeat, *[1] * (t.dim() - 1)))


def variants(call):
    yield "as recorded", call
    yield "non-contiguous, offset", _map(call, lambda t: _strided(t, 3))
    large = _large(call)
    if large is not None:
        yield "large", large


# --- The check ------------------------------------------------------------------------------------------------

def _tolerances(dtype):
    if dtype in (torch.float32, torch.float64, torch.complex64, torch.complex128):
        return {"rtol": 1e-4, "atol": 1e-5}
    return {}


def _written(overload) -> list[int]:
    return [i for i, a in enumerate(overload._schema.arguments) if a.alias_info is not None and a.alias_info.is_write]


def _native_calls(name: str) -> int:
    import hal.torch

    return hal.torch.op_stats().get(name, {}).get("native", {}).get("calls", 0)


# The dtype a call is recomputed in when a result differs from the CPU's (check_call).
WIDER = {torch.float32: torch.float64, torch.float16: torch.float32, torch.bfloat16: torch.float32}


def _reference_wider(overload, args, kwargs, dtype) -> "list | None":
    """The results (and written arguments) of the call with its tensors of |dtype| widened (f32 to f64, f16 and
    bf16 to f32), in check_call's order; None when the operator does not take the wider dtype."""
    wide = WIDER[dtype]
    up = lambda t: _exact_copy(t).to(wide) if t.dtype == dtype else _exact_copy(t)  # noqa: E731
    a_up, k_up = _map((args, kwargs), up)
    try:
        out = overload(*a_up, **k_up)
    except Exception:  # noqa: BLE001
        return None
    leaves = list(torch.utils._pytree.tree_leaves(out))
    leaves += [a_up[i] for i in _written(overload) if i < len(args) and isinstance(args[i], torch.Tensor)]
    return leaves


def check_call(device: str, name: str, overload, call, label: str = "") -> str:
    """"native", "fallback", or raises AssertionError describing the mismatch; "skip" when the CPU refuses it."""
    args, kwargs = call
    ref_args, ref_kwargs = _map((args, kwargs), _exact_copy)
    try:
        expected = overload(*ref_args, **ref_kwargs)
    except Exception:  # noqa: BLE001 - a variant the operator does not accept
        return "skip"
    dev_args, dev_kwargs = _map((args, kwargs), lambda t: _exact_copy(t, device))
    before = _native_calls(name)
    try:
        got = overload(*dev_args, **dev_kwargs)
        torch.hal.synchronize(torch.device(device))
    except Exception as e:  # noqa: BLE001
        raise AssertionError(f"{name} raised on {label or device} where the CPU did not: {type(e).__name__}: {e}") from e
    ran_native = _native_calls(name) > before
    pairs = list(zip(torch.utils._pytree.tree_leaves(got), torch.utils._pytree.tree_leaves(expected)))
    for i in _written(overload):
        if i < len(args) and isinstance(args[i], torch.Tensor):
            pairs.append((dev_args[i], ref_args[i]))
    references = {}
    for k, (g, e) in enumerate(pairs):
        if not isinstance(e, torch.Tensor):
            continue
        assert isinstance(g, torch.Tensor) and g.device.type == "hal", f"{name}: a result is not a hal tensor"
        got = g.cpu()
        try:
            torch.testing.assert_close(got, e, equal_nan=True, check_stride=False, **_tolerances(e.dtype))
            continue
        except AssertionError:
            pass
        # Long f32 sums differ with their order, and f16 / bf16 results with where the CPU rounds: the truth is
        # the same call in a wider dtype (f64 for f32; f32 for f16 and bf16), rounded to the result's. The
        # device passes when it is as close to that as the tolerance asks, whatever the CPU's own rounding.
        if e.dtype in WIDER and e.dtype not in references:
            references[e.dtype] = _reference_wider(overload, args, kwargs, e.dtype)
        reference = references.get(e.dtype)
        truth = reference[k] if reference is not None and k < len(reference) else e
        torch.testing.assert_close(got, truth.to(e.dtype) if truth.dtype != e.dtype else truth, equal_nan=True,
                                   check_stride=False, **_tolerances(e.dtype),
                                   msg=lambda m: f"{name} on {label or device} differs from the CPU for "
                                                 f"{_describe(call)}: {m}")
    return "native" if ran_native else "fallback"


def test_declared_operator_matches_the_cpu(declared_op):
    device_name, name, dtypes = declared_op
    if device_name == "?":
        pytest.fail(name)
    overload = overload_of(name)
    assert overload is not None, f"{device_name} declares {name!r}, which this torch does not know"
    device = hal.device(device_name).torch_device
    counts = {"native": 0, "fallback": 0, "skip": 0}
    sampled = []
    for dtype_name in dtypes:
        if dtype_name not in DTYPES:
            continue
        calls = recorded_calls(name, dtype_name)
        if calls:
            sampled.append(dtype_name)
        for call in calls:
            for label, variant in variants(call):
                try:
                    counts[check_call(str(device), name, overload, variant, f"{device} ({device_name})")] += 1
                except AssertionError as e:
                    raise AssertionError(f"[{dtype_name}, {label}] {e}") from None
    if not sampled:
        pytest.skip(f"{name}: no OpInfo sample exercises it (declared dtypes {', '.join(dtypes)})")
    assert counts["native"] > 0, (f"{name} is declared by {device_name} but none of its {counts['fallback']} calls "
                                  f"ran natively (the plugin declined them all)")
    if os.environ.get("HAL_CONFORMANCE_VERBOSE"):
        print(f"{device_name} {name}: {counts} (dtypes sampled: {', '.join(sampled)})")
