"""The Python API's own behaviour: current streams, and clear errors for bad input."""
from __future__ import annotations

import numpy as np
import pytest

import hal

pytestmark = pytest.mark.needs_native


def test_current_stream_is_per_device_and_restored():
    a, b = hal.device("emu:0"), hal.device("emu:1")
    assert hal.current_stream(a) == a.default_stream
    s = a.Stream()
    with hal.stream(s):
        assert hal.current_stream(a) == s
        assert hal.current_stream(b) == b.default_stream     # Other devices keep theirs.
        buf = a.alloc(16)                                    # Allocations follow the current stream.
        assert buf._allocation.stream.handle == s.handle
    assert hal.current_stream(a) == a.default_stream


def test_a_stream_of_another_device_cannot_be_current_here():
    s = hal.device("emu:0").Stream()
    with pytest.raises(hal.InvalidArgument, match="emu:0.*emu:1"):
        hal.device("emu:1")._native.exchange_current_stream(s._native)


def test_unknown_device_names_the_available_ones():
    with pytest.raises(hal.InvalidArgument) as err:
        hal.device("npu:7")
    assert "npu:7" in str(err.value) and "emu:0" in str(err.value)
    with pytest.raises(TypeError):
        hal.device(1.5)


def test_buffer_size_and_layout_errors():
    dev = hal.device("cpu:0")
    buf = dev.alloc(16)
    with pytest.raises(ValueError, match="16"):
        buf.copy_from(np.zeros(3, dtype=np.float32))
    with pytest.raises(ValueError, match="contiguous"):
        buf.copy_from(np.zeros((4, 4), dtype=np.uint8)[:, ::4])
    with pytest.raises(ValueError, match="read-only"):
        buf.copy_to(b"x" * 16)
    with pytest.raises(ValueError, match="step 1"):
        buf[::2]
    with pytest.raises(ValueError, match="whole number"):
        dev.alloc(12).to_numpy(np.float64)
    with pytest.raises(ValueError, match="0..255"):
        buf.fill(256)


def test_views_share_memory():
    dev = hal.device("emu:0")
    buf = dev.alloc(64).fill(0)
    view = buf[16:32]
    assert view.ptr == buf.ptr + 16 and len(view) == 16
    view.fill(7)
    out = buf.to_numpy()
    assert (out[16:32] == 7).all() and (out[:16] == 0).all() and (out[32:] == 0).all()


def test_a_stream_waits_for_an_event_of_another_plugin_without_blocking_the_host():
    # emu and cpu share no queue: the cpu stream's host-function thread waits for the emu record, the host
    # does not; the record waited for is the one current at the wait, not a later one.
    import threading

    s_emu, s_cpu = hal.Stream("emu:0"), hal.Stream("cpu:0")
    first, second, order = threading.Event(), threading.Event(), []
    s_emu._native.launch_host_func(lambda: (first.wait(20), order.append("emu")))
    event = s_emu.record_event(hal.Event("emu:0", timing=False))
    s_cpu.wait_event(event)  # returns at once
    s_cpu._native.launch_host_func(lambda: order.append("cpu"))
    s_emu._native.launch_host_func(lambda: (second.wait(20), order.append("emu, later")))
    event.record(s_emu)  # a later record: the wait above is for the earlier one
    assert order == []  # the host got here while the emu stream was held
    first.set()
    s_cpu.synchronize()
    assert order == ["emu", "cpu"]
    second.set()
    s_emu.synchronize()
    assert order == ["emu", "cpu", "emu, later"]
