"""torch.hal streams made from hal streams keep them alive (a runtime stream lives as long as a handle to it;
torch refers to streams only by id)."""
from __future__ import annotations

import gc
import weakref

import torch

import hal


def _hal_stream(dev):
    s = hal.device(dev.index).Stream()
    return s, weakref.ref(s._native)


def test_from_hal_holds_the_hal_stream(emu_dev):
    s, native = _hal_stream(emu_dev)
    ts = torch.hal.Stream.from_hal(s)
    del s
    gc.collect()
    assert native() is not None
    assert ts.hal_stream._native is native() and ts.stream_id == native().handle
    x = torch.randn(1000)
    with torch.hal.stream(ts):
        d = x.to(emu_dev, non_blocking=True)
    ts.synchronize()
    assert torch.equal(d.cpu(), x)


def test_set_stream_keeps_a_hal_stream_alive_while_current(emu_dev):
    s, native = _hal_stream(emu_dev)
    torch.hal.set_stream(s)
    try:
        del s
        gc.collect()
        assert native() is not None and torch.hal.current_stream(emu_dev).stream_id == native().handle
    finally:
        torch.hal.set_stream(torch.hal.default_stream(emu_dev))
    gc.collect()
    assert native() is None  # released once another stream is current: nothing leaks


def test_stream_context_keeps_a_temporary_hal_stream_alive(emu_dev):
    s, native = _hal_stream(emu_dev)
    block = torch.hal.stream(s)
    del s
    with block:
        gc.collect()
        assert native() is not None
        current = torch.hal.current_stream(emu_dev)
        assert current.stream_id == native().handle and current.hal_stream.handle == current.stream_id
        x = torch.randn(100)
        assert torch.equal(x.to(emu_dev).cpu(), x)
    assert torch.hal.current_stream(emu_dev) == torch.hal.default_stream(emu_dev)
