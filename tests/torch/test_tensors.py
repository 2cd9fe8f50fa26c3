"""Factories, copies in every direction, views, the fallback and its blocklist."""
from __future__ import annotations

import math

import pytest
import torch


def test_factories(dev):
    assert torch.zeros(3, 4, device=dev).cpu().eq(0).all()
    assert torch.full((2, 2), 7.0, device=dev).cpu().eq(7).all()
    assert torch.arange(6, device=dev).cpu().tolist() == list(range(6))
    e = torch.empty_strided((2, 3), (1, 2), device=dev)
    assert e.stride() == (1, 2) and e.device == dev


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.int64, torch.bfloat16, torch.bool])
def test_host_round_trip(dev, dtype):
    x = (torch.randn(5, 7) * 10).to(dtype)
    assert torch.equal(x.to(dev).cpu(), x)


def test_copies_with_strides_and_dtype_changes(dev):
    x = torch.randn(6, 8)
    # Host -> device into a non-contiguous destination, with a dtype change.
    d = torch.zeros(8, 6, device=dev, dtype=torch.float64).t()
    d.copy_(x)
    assert torch.equal(d.cpu(), x.double())
    # Device (non-contiguous) -> host (contiguous), and a broadcast source.
    assert torch.equal(d.cpu().contiguous(), x.double())
    b = torch.empty(4, 3, device=dev)
    b.copy_(torch.tensor([1.0, 2.0, 3.0]))
    assert torch.equal(b.cpu(), torch.tensor([1.0, 2.0, 3.0]).expand(4, 3))
    # Device -> device on one device: transpose and dtype change.
    e = torch.empty(8, 6, device=dev, dtype=torch.float16)
    e.copy_(d.t())
    assert torch.equal(e.cpu(), x.t().half())
    assert torch.equal(x.to(dev)[:, ::2].cpu(), x[:, ::2])


def test_copies_across_plugins(cpu_dev, emu_dev, emu_dev2):
    x = torch.randn(64, 33)
    on_cpu = x.to(cpu_dev)
    on_emu = on_cpu.to(emu_dev)             # cpu plugin -> emu plugin (staged through the host)
    on_emu2 = on_emu.to(emu_dev2)           # emu -> emu, another device of the same plugin
    back = on_emu2.to(cpu_dev, dtype=torch.float64)  # emu -> cpu plugin with a dtype change
    assert on_emu.device == emu_dev and on_emu2.device == emu_dev2 and back.device == cpu_dev
    assert torch.equal(back.cpu(), x.double())
    assert torch.equal(on_emu.t().to(cpu_dev).cpu(), x.t())  # strided source across plugins
    # Both plugins' tensors live at once and compute together (after moving to one device).
    assert torch.allclose((on_cpu + on_emu.to(cpu_dev)).cpu(), 2 * x)


def test_non_blocking_copies_are_ordered_by_the_stream(emu_dev):
    x = torch.randn(1 << 20)
    d = x.to(emu_dev, non_blocking=True)
    y = (d * 2).cpu()  # the fallback synchronizes the current stream before reading
    assert torch.equal(y, x * 2)
    h = torch.empty_like(x)
    h.copy_(d, non_blocking=True)
    torch.hal.current_stream(emu_dev).synchronize()
    assert torch.equal(h, x)


def test_views_alias_device_memory(dev):
    x = torch.arange(12.0, device=dev)
    v = x.view(3, 4)
    v[1].fill_(-1)                # in place through a view (fallback on an aliasing view)
    assert x.cpu()[4:8].eq(-1).all()
    t = v.t()
    assert t.data_ptr() == x.data_ptr() and t.stride() == (1, 4)
    s = x.as_strided((2, 2), (1, 2), 1)
    assert s.cpu().tolist() == [[1.0, 3.0], [2.0, -1.0]]
    r = v.reshape(2, 6)
    assert r.data_ptr() == x.data_ptr()
    u = x.unfold(0, 4, 4)         # a view op with only a CPU kernel: comes back as a view of x
    assert u.data_ptr() == x.data_ptr()
    x.add_(1)
    assert torch.equal(u.cpu(), x.cpu().unfold(0, 4, 4))


def test_set_and_resize(dev):
    a = torch.arange(4.0, device=dev)
    b = torch.empty(0, device=dev)
    b.set_(a)
    assert b.data_ptr() == a.data_ptr()
    b.set_(a.untyped_storage(), 1, (3,), (1,))
    assert b.cpu().tolist() == [1.0, 2.0, 3.0]
    a.resize_(10)
    a[4:] = 5
    assert a.cpu()[:4].tolist() == [0.0, 1.0, 2.0, 3.0] and a.cpu()[4:].eq(5).all()
    out = torch.empty(0, device=dev)
    torch.add(torch.ones(3, device=dev), 1, out=out)  # out= resized by the CPU kernel
    assert out.shape == (3,) and out.cpu().eq(2).all()


def test_scalar_and_item(dev):
    x = torch.tensor([1.5, 2.5], device=dev)
    assert x.sum().item() == 4.0
    assert float(x[1]) == 2.5
    assert bool((x > 2).any())


def test_fallback_counts_ops(dev):
    torch.hal.reset_fallback_stats()
    a = torch.ones(3, device=dev)
    torch.atan2(a, a).mul_(3)  # Neither has a kernel of emu's own (emu_ops.c); both fall back.
    stats = torch.hal.fallback_stats()
    # Structured ops reach the backend as their out= overload (atan2 -> atan2.out, mul_.Tensor -> mul.out).
    assert sum(n for k, n in stats.items() if k.startswith("aten::atan2")) == 1
    assert sum(n for k, n in stats.items() if k.startswith("aten::mul")) == 1


def test_fallback_blocklist_names_op_and_device(emu_dev):
    a = torch.ones(3, device=emu_dev)
    torch.hal.set_fallback_blocklist(["aten::atan2", "sin.out", "aten::add"])
    try:
        with pytest.raises(RuntimeError, match=r"aten::atan2\.out.*hal:%d \(emu:" % emu_dev.index):
            torch.atan2(a, a)
        with pytest.raises(RuntimeError, match="blocklist"):
            a.sin()
        assert a.cos().cpu().allclose(torch.ones(3).cos())  # not listed: still falls back
        assert (a + a).cpu().eq(2).all()  # listed, but emu runs it itself (emu_ops.c): no fallback to block
    finally:
        torch.hal.set_fallback_blocklist([])
    assert torch.atan2(a, a).cpu().allclose(torch.full((3,), math.pi / 4))


def test_blocklist_from_environment(emu_dev):
    from tests.conftest import run_python as run_py

    proc = run_py(f"""
        import torch, hal.torch
        a = torch.ones(2, device="hal:{emu_dev.index}")
        try:
            a.cos()
        except RuntimeError as e:
            print("blocked", "aten::cos" in str(e))
    """, env={"HAL_FALLBACK_BLOCKLIST": "cos, aten::log"})
    assert proc.returncode == 0, proc.stderr
    assert "blocked True" in proc.stdout


def test_emu_memory_is_not_read_by_the_host_directly(emu_dev):
    # The emu plugin keeps device memory unreadable by the host: results only make sense if every host access
    # went through a mapping or a copy.
    x = torch.randn(1000, device=emu_dev)
    assert torch.allclose(x.cpu().exp(), x.exp().cpu())
