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
