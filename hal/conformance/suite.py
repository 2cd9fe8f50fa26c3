"""The device contract through HAL's Python API and runtime: run against every device of a plugin
(`hal conformance PLUGIN.so --runtime`, after the cffi areas of hal/conformance/abi that give the verdict) or
of every bundled plugin (the project's own tests, tests/test_contract.py).

Each test writes random data and reads it back into poisoned memory, so a copy that silently did nothing, or
landed in the wrong place, fails. Tests of optional ABI entries skip, naming the entry, when the plugin
leaves it out.

Which devices: with HAL_CONFORMANCE_PLUGIN set (what `hal conformance` does), only that plugin is loaded, with
HAL_CONFORMANCE_CONFIG as its configuration; otherwise the default plugins (cpu, emu).
"""
from __future__ import annotations

import gc
import os
import threading

import numpy as np
import pytest

import hal

POISON = 0xCD


def _init_for_conformance() -> None:
    plugin = os.environ.get("HAL_CONFORMANCE_PLUGIN")
    if plugin and not hal.is_initialized():
        name = hal.inspect_plugin(plugin).name
        config = os.environ.get("HAL_CONFORMANCE_CONFIG")
        hal.init([plugin], use_env=False, use_package_plugins=False,
                 configs={name: config} if config and name else None)


def _devices() -> list:
    _init_for_conformance()
    return hal.devices()


def pytest_generate_tests(metafunc):
    """Every test taking `dev` runs once per visible device, named by the device (cpu:0, emu:0, ...)."""
    if "dev" in metafunc.fixturenames:
        try:
            names = [d.name for d in _devices()]
        except Exception as e:  # Reported by test_plugin_loads instead of a collection error.
            names = [f"unavailable: {e}"]
        metafunc.parametrize("dev_name", names, ids=names)


@pytest.fixture
def dev(dev_name):
    return hal.device(dev_name)


def needs(dev, entry: str) -> None:
    """Skips the calling test when the plugin leaves out the optional ABI entry `entry`."""
    if not dev.supports(entry):
        pytest.skip(f"plugin '{dev.plugin}' does not support {entry} (optional)")


def rand_bytes(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8)


def poisoned(n: int) -> np.ndarray:
    return np.full(n, POISON, dtype=np.uint8)


def test_plugin_loads():
    devices = _devices()
    errors = hal.load_errors()
    assert not errors, f"plugins failed to load: {errors}"
    assert devices, "the plugin declares no device"
    assert len({d.name for d in devices}) == len(devices)


def test_properties_are_declared(dev):
    p = dev.properties
    assert p.name and p.vendor and p.kind in {"cpu", "gpu", "npu", "other"}
    free, total = dev.memory_info()
    assert total == p.total_memory > 0 and 0 <= free <= total
    if p.emulated:
        assert p.relative_speed > 0, "an emulated device states its relative speed"
    if p.mappable or p.host_addressable:
        assert dev.supports("memory_map"), "a mappable device must implement memory_map"


@pytest.mark.parametrize("nbytes", [1, 255, 4096, (1 << 20) + 3, 8 << 20])
def test_host_device_round_trip(dev, nbytes):
    src = rand_bytes(nbytes, seed=nbytes)
    out = poisoned(nbytes)
    buf = dev.alloc(nbytes)
    assert buf.ptr % 256 == 0
    buf.copy_from(src).copy_to(out)
    np.testing.assert_array_equal(out, src)


def test_typed_arrays_and_bytes(dev):
    x = np.random.default_rng(1).standard_normal((17, 33)).astype(np.float32)
    buf = dev.alloc(x.nbytes).copy_from(x)
    np.testing.assert_array_equal(buf.to_numpy(np.float32, x.shape), x)
    buf2 = dev.alloc(5).copy_from(b"hello")
    assert buf2.to_bytes() == b"hello"


def test_device_to_device_with_offsets(dev):
    n = 1 << 16
    src = rand_bytes(n, seed=2)
    a, b = dev.alloc(n).copy_from(src), dev.alloc(n).fill(POISON)
    b[100:1100].copy_from(a[5000:6000])
    out = b.to_numpy()
    np.testing.assert_array_equal(out[100:1100], src[5000:6000])
    assert (out[:100] == POISON).all() and (out[1100:] == POISON).all()


def test_peer_copy_to_every_other_device(dev):
    n = (1 << 20) + 17
    src = rand_bytes(n, seed=3)
    a = dev.alloc(n).copy_from(src)
    for other in _devices():
        if other != dev:
            b = other.alloc(n).fill(POISON)
            b.copy_from(a)
            np.testing.assert_array_equal(b.to_numpy(), src, err_msg=f"{dev.name} -> {other.name}")


def test_fill(dev):  # memset_async is optional: the runtime falls back to a copy from the host.
    buf = dev.alloc(1000).fill(7)
    assert (buf.to_numpy() == 7).all()
    buf[10:20].fill(9)
    out = buf.to_numpy()
    assert (out[10:20] == 9).all() and out[9] == 7 and out[20] == 7


def test_stream_ordering_through_an_event(dev):
    """Work on stream 2 that waits on an event recorded on stream 1 sees stream 1's results."""
    n = 32 << 20
    src = rand_bytes(n, seed=4)
    s1, s2 = dev.Stream(), dev.Stream()
    a, b = dev.alloc(n, stream=s1), dev.alloc(n, stream=s2)
    out = poisoned(n)
    a.copy_from(src, stream=s1, non_blocking=True)
    done = s1.record_event()
    s2.wait_event(done)
    b.copy_from(a, stream=s2, non_blocking=True)
    b.copy_to(out, stream=s2, non_blocking=True)
    s2.synchronize()
    np.testing.assert_array_equal(out, src)
    a.record_stream(s2)


def test_missing_synchronize_shows_up(dev):
    """A non-blocking copy behind unfinished work has not landed until the stream is synchronized."""
    needs(dev, "launch_host_func")
    gate = threading.Event()
    s = dev.Stream()
    buf = dev.alloc(4096, stream=s).copy_from(rand_bytes(4096, seed=5), stream=s)
    s._native.launch_host_func(lambda: gate.wait(10))
    out = poisoned(4096)
    buf.copy_to(out, stream=s, non_blocking=True)
    assert not s.query()
    assert (out == POISON).all(), "the copy ran before the work queued ahead of it"
    gate.set()
    s.synchronize()
    np.testing.assert_array_equal(out, rand_bytes(4096, seed=5))


def test_non_blocking_copy_keeps_its_source_alive(dev):
    n = 4 << 20
    s = dev.Stream()
    buf = dev.alloc(n, stream=s)
    buf.copy_from(rand_bytes(n, seed=6), stream=s, non_blocking=True)  # The only reference is HAL's.
    gc.collect()
    s.synchronize()
    np.testing.assert_array_equal(buf.to_numpy(stream=s), rand_bytes(n, seed=6))


def test_event_timing(dev):
    s = dev.Stream()
    start, end = dev.Event(), dev.Event()
    a, b = dev.alloc(64 << 20, stream=s), dev.alloc(64 << 20, stream=s)
    start.record(s)
    b.copy_from(a, stream=s, non_blocking=True)
    end.record(s)
    end.synchronize()
    assert end.query() and start.query()
    assert start.elapsed_time(end) > 0
    untimed = dev.Event(timing=False)
    untimed.record(s)
    untimed.synchronize()
    with pytest.raises(hal.HalError):
        start.elapsed_time(untimed)


def test_memory_stats_rise_and_fall(dev):
    dev.synchronize()
    base = dev.memory_stats()["allocated_bytes"]
    bufs = [dev.alloc(1 << 20) for _ in range(3)]
    stats = dev.memory_stats()
    assert stats["allocated_bytes"] >= base + 3 * (1 << 20)
    assert stats["reserved_bytes"] >= stats["allocated_bytes"]
    assert stats["allocated_bytes_peak"] >= stats["allocated_bytes"]
    del bufs
    gc.collect()
    assert dev.memory_stats()["allocated_bytes"] == base


def test_out_of_memory_names_the_numbers(dev):
    total = dev.properties.total_memory
    if dev.properties.host_addressable and dev.properties.kind == "cpu":
        pytest.skip("a host device's capacity is the machine's RAM: asking for more may succeed (overcommit)")
    with pytest.raises(hal.OutOfMemory) as err:
        dev.alloc(total + (1 << 30))
    msg = str(err.value)
    assert dev.name in msg and str(total + (1 << 30)) in msg and "capacity" in msg
    assert isinstance(err.value, MemoryError)
    assert dev.memory_stats()["num_ooms"] >= 1
