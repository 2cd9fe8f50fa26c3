"""Native operators (ABI 1.1, csrc/torch/operators.cpp): ops on hal tensors run the device plugin's own kernels
when it declares them, queued on the current stream, and fall back otherwise; several plugins' kernels coexist
in one process, routed by the device; torch.hal.op_stats says which path each op took."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from plugin_fixtures import fixture_plugins, hal_env  # noqa: E402,F401 (fixture)


def native_calls(name: str) -> int:
    return torch.hal.op_stats().get(name, {}).get("native", {}).get("calls", 0)


def test_emu_declares_its_kernels(emu_dev):
    ops = torch.hal.device_operators(emu_dev)
    assert ops["aten::mm"] == ["f32", "f64"] and "aten::add.Tensor" in ops and "aten::fill_.Scalar" in ops
    assert torch.hal.device_operators(torch.device("hal", 0)) == {}  # the cpu plugin has none


def test_declared_ops_run_natively_and_match_the_cpu(emu_dev):
    a, b = torch.randn(5, 7), torch.randn(7)
    x, y = a.to(emu_dev), b.to(emu_dev)
    torch.hal.reset_op_stats()
    torch.hal.reset_fallback_stats()
    out = (x * 0.5 + y).relu() - x.t().mm(x).sum() * 0  # a Python number, broadcasting, a transposed view
    expected = (a * 0.5 + b).relu() - a.t().mm(a).sum() * 0
    torch.testing.assert_close(out.cpu(), expected)
    stats = torch.hal.op_stats()
    for name in ("aten::mul.Tensor", "aten::add.Tensor", "aten::relu", "aten::mm", "aten::sub.Tensor"):
        assert stats[name]["native"]["calls"] >= 1 and stats[name]["fallback"]["calls"] == 0, (name, stats[name])
    # emu has no sum: the CPU kernel runs in place (a structured op falls back as its out= overload).
    assert sum(v["fallback"]["calls"] for k, v in stats.items() if k.startswith("aten::sum")) == 1
    assert not any(k.startswith(("aten::mul", "aten::add", "aten::mm")) for k in torch.hal.fallback_stats())


def test_a_call_the_kernel_does_not_cover_falls_back_and_is_counted_as_declined(emu_dev):
    x = torch.randn(4, device=emu_dev)
    y = torch.randn(4, dtype=torch.float64, device=emu_dev)
    torch.hal.reset_op_stats()
    out = x + y  # mixed dtypes: emu's kernels take one dtype per call
    torch.testing.assert_close(out.cpu(), x.cpu() + y.cpu())
    s = torch.hal.op_stats()
    assert s["aten::add.Tensor"]["declined"] == 1 and s["aten::add.Tensor"]["fallback"]["calls"] == 1
    assert s["aten::add.Tensor"]["native"]["calls"] == 0
    z = torch.ones(3, dtype=torch.int64, device=emu_dev) + 2  # i64: not among the declared dtypes
    assert z.cpu().tolist() == [3, 3, 3] and torch.hal.op_stats()["aten::add.Tensor"]["declined"] == 1


def test_shape_errors_are_the_ops_own(emu_dev):
    x, y = torch.randn(2, 3, device=emu_dev), torch.randn(4, 5, device=emu_dev)
    with pytest.raises(RuntimeError, match=r"\[2, 3\] X \[4, 5\]|cannot be multiplied"):  # the Meta kernel's check
        torch.mm(x, y)


def test_in_place_and_out_variants_write_their_arguments(emu_dev):
    x = torch.zeros(3, 4, device=emu_dev)
    view = x[:, 1]
    before = native_calls("aten::fill_.Scalar")
    view.fill_(2.5)  # a strided view: the kernel writes through its strides only
    assert native_calls("aten::fill_.Scalar") == before + 1
    assert x.cpu().tolist() == [[0, 2.5, 0, 0]] * 3
    out = torch.empty(2, 2, device=emu_dev)
    torch.mm(torch.eye(2, device=emu_dev), torch.full((2, 2), 3.0, device=emu_dev), out=out)
    assert out.cpu().tolist() == [[3, 3], [3, 3]]


def test_native_kernels_are_ordered_on_the_current_stream(emu_dev):
    # A kernel queued on a side stream is seen by later work on that stream, and by the default stream after
    # it waits for an event: the ordering rules of stream.h hold for kernels like for copies.
    s = torch.hal.Stream(emu_dev)
    a = torch.randn(256, 256, device=emu_dev)
    with torch.hal.stream(s):
        b = a.mm(a).neg()
        e = torch.hal.Event()
        e.record(s)
    torch.hal.current_stream(emu_dev).wait_event(e)
    torch.testing.assert_close(b.cpu(), -(a.cpu() @ a.cpu()), rtol=1e-4, atol=1e-4)


def test_autograd_through_native_kernels(emu_dev):
    w = torch.randn(6, 3, device=emu_dev, requires_grad=True)
    x = torch.randn(4, 6, device=emu_dev)
    (x.mm(w).tanh() * 2).sum().backward()
    wc, xc = w.detach().cpu().requires_grad_(), x.cpu()
    (xc.mm(wc).tanh() * 2).sum().backward()
    torch.testing.assert_close(w.grad.cpu(), wc.grad, rtol=1e-4, atol=1e-5)


def test_programs_are_unimplemented_without_the_entries(emu_dev):
    import hal

    with pytest.raises(hal.Unimplemented, match="program_create"):
        hal.Program(hal.device(torch.hal.get_device_name(emu_dev.index)), "__kernel void k() {}")


def test_kernels_of_two_plugins_coexist_and_an_abi_1_0_plugin_falls_back(fixture_plugins):
    # emu, opencl (where there is OpenCL) and a fixture plugin all declare aten::neg; the fixture's computes
    # -x + 100 (its config), so the result says whose kernel ran on which device. An ABI 1.0 plugin's device
    # runs neg through the fallback.
    code = f"""
import json, torch, hal
hal.init([{str(fixture_plugins["one_kernel"])!r}, {str(fixture_plugins["abi10"])!r}],
         configs={{"onekernel": "neg_bias=100"}})
import hal.torch
names = [d.name for d in hal.devices()]
dev = lambda name: torch.device("hal", names.index(name))
x = torch.tensor([1.0, 2.0])
out = {{}}
for name in ["emu:0", "onekernel:0", "abi10:0"] + [n for n in names if n == "opencl:0"]:
    torch.hal.reset_op_stats()
    y = x.to(dev(name)).neg()
    st = torch.hal.op_stats()  # (elsewhere neg runs as its composite's neg.out, in place)
    out[name] = [y.cpu().tolist(), sum(v["native"]["calls"] for k, v in st.items() if k.startswith("aten::neg")),
                 sum(v["fallback"]["calls"] for k, v in st.items() if k.startswith("aten::neg"))]
torch.hal.reset_op_stats()
t = torch.arange(6.0).reshape(2, 3).to(dev("onekernel:0")).t()  # non-contiguous: the fixture declines it
out["declined"] = [t.neg().cpu().tolist(), torch.hal.op_stats()["aten::neg"]["declined"]]
print(json.dumps(out))
"""
    proc = subprocess.run([sys.executable, "-c", code], env=hal_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["emu:0"] == [[-1.0, -2.0], 1, 0]
    assert out["onekernel:0"] == [[99.0, 98.0], 1, 0]
    assert out["abi10:0"] == [[-1.0, -2.0], 0, 1]
    if "opencl:0" in out:  # With an OpenCL runtime (pocl in CI) its own neg kernel runs there, beside the others.
        assert out["opencl:0"] == [[-1.0, -2.0], 1, 0]
    else:  # Only where this machine has no OpenCL device either.
        import hal

        assert not any(d.plugin == "opencl" for d in hal.devices())
    assert out["declined"] == [[[-0.0, -3.0], [-1.0, -4.0], [-2.0, -5.0]], 1]


def test_ops_without_a_kernel_run_as_their_decomposition_into_the_plugins_kernels(emu_dev):
    a, b, c = torch.randn(3, 4), torch.randn(4, 5), torch.randn(3, 5)
    torch.hal.reset_op_stats()
    out = torch.addmm(c.to(emu_dev), a.to(emu_dev), b.to(emu_dev), beta=0.5, alpha=2.0)
    torch.testing.assert_close(out.cpu(), torch.addmm(c, a, b, beta=0.5, alpha=2.0))
    s = torch.hal.op_stats()
    # addmm reaches the backend as addmm.out; its decomposition is mm, mul and add: all emu kernels.
    assert s["aten::addmm.out"]["decomposed"]["calls"] == 1 and s["aten::addmm.out"]["fallback"]["calls"] == 0
    assert s["aten::mm"]["native"]["calls"] == 1
    # silu decomposes into sigmoid, which emu lacks: the whole op falls back once instead of in pieces.
    x = torch.randn(6)
    torch.testing.assert_close(torch.nn.functional.silu(x.to(emu_dev)).cpu(), torch.nn.functional.silu(x))
    s = torch.hal.op_stats()
    assert "aten::sigmoid" not in s


def test_copies_within_a_device_use_the_plugins_copy_kernel(emu_dev):
    a = torch.randn(3, 4)
    x = a.to(emu_dev)
    torch.hal.reset_op_stats()
    t, e = x.t().contiguous(), x.expand(2, 3, 4).clone()  # strided and broadcast copies on the device
    assert torch.equal(t.cpu(), a.t()) and torch.equal(e.cpu(), a.expand(2, 3, 4))
    assert torch.hal.op_stats()["aten::copy_"]["native"]["calls"] == 2
    d = x.double()  # a dtype change: emu's copy_ declines it (one dtype per call), the host path converts
    torch.testing.assert_close(d.cpu(), a.double())
    with pytest.raises(RuntimeError, match="refer to a single memory location"):  # as the CPU refuses it
        x[1:].copy_(x[:-1])
