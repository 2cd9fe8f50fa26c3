"""hal:N tensors and streams meeting the rest of the world: HAL's own stream API, DLPack, raw pointers,
pinned host memory, and the generated Tensor.hal() / is_hal methods."""
from __future__ import annotations

import pytest
import torch
from torch.utils import dlpack

import hal
import hal._stream
from hal import _torch_C


# --- Streams: torch.hal.Stream <-> hal.Stream, one current stream ---------------------------------------------

def test_streams_convert_both_ways(emu_dev):
    s = torch.hal.Stream(emu_dev)
    assert isinstance(s, torch.Stream) and s.device == emu_dev
    hs = s.hal_stream
    assert isinstance(hs, hal.Stream) and hs.device.index == emu_dev.index and hs.handle == s.stream_id
    assert torch.hal.Stream.from_hal(hs) == s
    fresh = hal.device(emu_dev.index).Stream()                 # made by HAL, used by torch
    ts = torch.hal.Stream.from_hal(fresh)
    assert ts.device == emu_dev and ts.stream_id == fresh.handle and ts.hal_stream == fresh
    assert torch.hal.default_stream(emu_dev).hal_stream == hal.device(emu_dev.index).default_stream


def test_torch_stream_accepts_hal_streams(emu_dev):
    hs = hal.device(emu_dev.index).Stream()
    x = torch.randn(1 << 16)
    with torch.hal.stream(hs):
        assert torch.hal.current_stream(emu_dev).hal_stream == hs
        assert torch.accelerator.current_stream(emu_dev.index).stream_id == hs.handle
        d = x.to(emu_dev, non_blocking=True)                  # queued on hs
    assert torch.hal.current_stream(emu_dev) == torch.hal.default_stream(emu_dev)
    hs.synchronize()
    assert torch.equal(d.cpu(), x)


def test_bridge_stream_api(emu_dev):
    i = emu_dev.index
    s = torch.hal.Stream(emu_dev)
    assert _torch_C._current_stream_id(i) == 0
    assert _torch_C._exchange_stream_id(i, s.stream_id) == 0
    assert torch.hal.current_stream(emu_dev) == s
    assert _torch_C._exchange_stream_id(i, 0) == s.stream_id
    with pytest.raises(RuntimeError, match="stream"):
        _torch_C._exchange_stream_id(i, 1 << 40)


def test_hal_and_torch_share_the_current_stream(emu_dev):
    dev = hal.device(emu_dev.index)
    hs = dev.Stream()
    with hal.stream(hs):                                       # set through HAL, seen by torch
        assert torch.hal.current_stream(emu_dev).stream_id == hs.handle
    ts = torch.hal.Stream(emu_dev)
    with torch.hal.stream(ts):                                 # set through torch, seen by HAL
        assert hal.current_stream(dev) == ts.hal_stream
    assert hal.current_stream(dev) == dev.default_stream


# --- DLPack ------------------------------------------------------------------------------------------------

def test_dlpack_capsules_round_trip_without_copy(dev):
    t = torch.arange(12.0, device=dev).reshape(3, 4)
    for src in (t, t[1:, 1:]):                                 # a view: interior data pointer, strides
        back = dlpack.from_dlpack(dlpack.to_dlpack(src))
        assert back.device == dev and back.data_ptr() == src.data_ptr() and back.stride() == src.stride()
        assert torch.equal(back.cpu(), src.cpu())
    shared = dlpack.from_dlpack(t.__dlpack__())
    shared.add_(1)                                             # same memory
    assert torch.equal(t.cpu(), torch.arange(1.0, 13.0).reshape(3, 4))


def test_dlpack_protocol_path_is_torch_limited(emu_dev):
    # torch 2.13's Tensor.__dlpack_device__ compares the device type with the literal "privateuse1", so a
    # renamed backend is rejected there (and torch.from_dlpack(tensor), which asks it, with it).
    t = torch.ones(2, device=emu_dev)
    with pytest.raises(ValueError, match="Unknown device type hal for Dlpack"):
        t.__dlpack_device__()
    with pytest.raises(ValueError, match="Unknown device type hal for Dlpack"):
        torch.from_dlpack(t)


# --- Raw pointers ---------------------------------------------------------------------------------------------

def test_device_from_pointer_finds_interior_pointers(cpu_dev, emu_dev):
    for d in (cpu_dev, emu_dev):
        t = torch.empty(1000, device=d)
        assert _torch_C._device_from_ptr(t.data_ptr()) == d.index
        assert _torch_C._device_from_ptr(t[10:].data_ptr()) == d.index
        assert _torch_C._device_from_ptr(t.data_ptr() + t.nbytes - 1) == d.index
    gone = torch.empty(1 << 22, dtype=torch.uint8, device=emu_dev)  # a large block of its own
    p = gone.data_ptr() + 100
    del gone
    for bad in (12345, p):
        with pytest.raises(RuntimeError, match="not inside a live allocation"):
            _torch_C._device_from_ptr(bad)


# --- Pinned memory and generated methods ------------------------------------------------------------------

@pytest.mark.parametrize("current", ["cpu", "emu"])
def test_pinned_memory_from_the_plugin(cpu_dev, emu_dev, current):
    d = cpu_dev if current == "cpu" else emu_dev
    with torch.hal.device(d):
        e = torch.empty(1000, pin_memory=True)
        p = torch.randn(1000).pin_memory()
    assert e.is_pinned() and p.is_pinned() and not torch.randn(4).is_pinned()
    assert p[10:].is_pinned()                                  # interior pointers of pinned blocks count too
    on_dev = p.to(emu_dev, non_blocking=True)
    back = torch.empty(1000, pin_memory=True)
    back.copy_(on_dev, non_blocking=True)
    torch.hal.current_stream(emu_dev).synchronize()
    assert torch.equal(back, p)


def test_generated_methods(cpu_dev, emu_dev):
    t = torch.ones(3)
    assert not t.is_hal
    h = t.hal(emu_dev.index)
    assert h.is_hal and h.device == emu_dev
    with torch.hal.device(cpu_dev):
        assert t.hal().device == cpu_dev
    m = torch.nn.Linear(2, 2).hal(emu_dev.index)
    assert all(p.is_hal and p.device == emu_dev for p in m.parameters())
    s = torch.ones(4).untyped_storage().hal(emu_dev.index)
    assert s.is_hal and s.device == emu_dev
