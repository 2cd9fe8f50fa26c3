"""Kernels (kernel.h, optional): the operators each device declares are listed consistently, and a declared
aten::add.Tensor on f32 computes a + alpha * b. Programs (program_create ...) are only checked to be whole
(loading area) and an unknown format refused: what source a plugin takes is its own."""
from __future__ import annotations

import array

from hal.conformance.abi import ffi as abi
from hal.conformance.abi.case import Unsupported, case, require
from hal.conformance.abi.ffi import ffi

HAL_DTYPE_END = 16
TENSOR, INT = 1, 2


def _ops(ctx, device: int) -> dict[str, tuple[int, int]]:
    ops, count = ffi.new("hal_op_t**"), ffi.new("uint64_t*")
    ctx.p.check(ctx.p.api.op_list(device, ops, count), "op_list")
    return {ffi.string(ops[0][i].name).decode(): (i, ops[0][i].dtypes) for i in range(count[0])}


@case("kernels")
def test_op_list_is_consistent(ctx):
    """Per device: names unique and non-empty, dtypes known bits, the same table on every call."""
    require(ctx, "op_list", "op_launch")
    for d in range(ctx.count):
        ops, count = ffi.new("hal_op_t**"), ffi.new("uint64_t*")
        ctx.p.check(ctx.p.api.op_list(d, ops, count), "op_list")
        first, n = ops[0], count[0]
        names = [ffi.string(first[i].name).decode() for i in range(n)]
        assert all(names), f"device {d}: an operator with an empty name"
        dupes = sorted({x for x in names if names.count(x) > 1})
        assert not dupes, f"device {d}: operators listed twice: {', '.join(dupes[:5])}"
        bad = [x for i, x in enumerate(names) if first[i].dtypes == 0 or first[i].dtypes >> HAL_DTYPE_END]
        assert not bad, f"device {d}: operators with no dtype or unknown dtype bits: {', '.join(bad[:5])}"
        ctx.p.check(ctx.p.api.op_list(d, ops, count), "op_list")
        assert ops[0] == first and count[0] == n, f"device {d}: op_list answered another table the second time"


@case("kernels")
def test_add_tensor_f32(ctx):
    """aten::add.Tensor on f32 (when declared): a + 2 * b, 1000 elements; an op index out of range is refused."""
    require(ctx, "op_list", "op_launch")
    ops = _ops(ctx, ctx.device)
    if "aten::add.Tensor" not in ops or not ops["aten::add.Tensor"][1] & (1 << abi.DTYPE_F32):
        raise Unsupported("the device does not declare aten::add.Tensor for f32")
    index = ops["aten::add.Tensor"][0]
    n = 1000
    a, b = array.array("f", (i * 0.5 for i in range(n))), array.array("f", (1.0 - i for i in range(n)))
    s = ctx.stream()
    pa, pb, pc = ctx.alloc(4 * n), ctx.alloc(4 * n), ctx.alloc(4 * n)
    ctx.write(pa, a.tobytes(), s)
    ctx.write(pb, b.tobytes(), s)
    sizes, strides = ffi.new("int64_t[1]", [n]), ffi.new("int64_t[1]", [1])

    def tensor(ptr):
        return {"data": ptr, "dtype": abi.DTYPE_F32, "ndim": 1, "sizes": sizes, "strides": strides, "offset": 0}

    args = ffi.new("hal_value_t[3]")
    args[0].kind, args[0].u.tensor = TENSOR, tensor(pa)
    args[1].kind, args[1].u.tensor = TENSOR, tensor(pb)
    args[2].kind, args[2].u.i = INT, 2
    results = ffi.new("hal_tensor_t[1]", [tensor(pc)])
    ctx.p.check(ctx.p.api.op_launch(s, index, args, 3, results, 1), "op_launch")
    out = array.array("f")
    out.frombytes(ctx.read(pc, 4 * n, s))
    wrong = [i for i in range(n) if abs(out[i] - (a[i] + 2 * b[i])) > 1e-4 * (1 + abs(a[i] + 2 * b[i]))]
    assert not wrong, f"add.Tensor(a, b, alpha=2) element {wrong[0]}: {out[wrong[0]]} != {a[wrong[0]] + 2 * b[wrong[0]]}"
    status = ctx.p.api.op_launch(s, len(ops) + 5, args, 3, results, 1)
    assert status == abi.INVALID_ARGUMENT, (f"op_launch with op index {len(ops) + 5} of {len(ops)}: "
                                            f"{abi.status_name(status)}, the ABI says INVALID_ARGUMENT")


@case("kernels")
def test_program_of_an_unknown_format(ctx):
    """program_create in a format no plugin takes: UNIMPLEMENTED, the message listing the formats it takes."""
    require(ctx, "program_create", "program_destroy", "kernel_create", "kernel_destroy", "kernel_launch")
    out = ffi.new("hal_program_t*")
    source = b"kernel void k() {}"
    status = ctx.p.api.program_create(ctx.device, b"hal-conformance-no-such-format", source, len(source), ffi.NULL, out)
    if status == abi.OK:
        ctx.p.api.program_destroy(out[0])
    assert status == abi.UNIMPLEMENTED, (f"program_create in an unknown format: {abi.status_name(status)}, the ABI "
                                         "says HAL_STATUS_UNIMPLEMENTED")
    assert ctx.p.last_error(), "program_create refused an unknown format with an empty message"
