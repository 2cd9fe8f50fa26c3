"""The device plugins (cpu, emu, null) against the C ABI, loaded directly: no runtime involved.

Plugins are found in $HAL_TEST_PLUGIN_DIR, else <repo>/hal/plugins (where `pip install -e .` puts them).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "c"))
from plugin_ffi import (  # noqa: E402
    DEVICE_ERROR, EVENT_TIMING, FLAG_EMULATED, FLAG_HOST_ADDRESSABLE, FLAG_MAPPABLE, INVALID_ARGUMENT, KIND_CPU,
    KIND_NPU, KIND_OTHER, NOT_READY, OUT_OF_MEMORY, REPO, UNIMPLEMENTED, HalError, Plugin, ffi, plugin_dir,
    plugin_path,
)

NO_PLUGINS = "no built plugins: set HAL_TEST_PLUGIN_DIR or run `pip install -e .` (builds <repo>/hal/plugins)"


def load(name: str) -> Plugin:
    path = plugin_path(name)
    if path is None:
        pytest.skip(NO_PLUGINS if plugin_dir() is None else f"libhal_plugin_{name}.so not built in {plugin_dir()}")
    return Plugin.load(path)


class initialized:
    """`with initialized(plugin, config):` initializes the plugin and always shuts it down."""

    def __init__(self, plugin: Plugin, config: str | None = None):
        self.plugin, self.config = plugin, config

    def __enter__(self) -> Plugin:
        self.plugin.check(self.plugin.initialize(self.config))
        return self.plugin

    def __exit__(self, *exc) -> None:
        self.plugin.api.shutdown()


# --- The C smoke driver, run on every real plugin ----------------------------------------------------------


@pytest.fixture(scope="session")
def plugin_smoke(tmp_path_factory) -> Path:
    compiler = shutil.which(os.environ.get("CC", "cc"))
    if compiler is None:
        pytest.skip("no C compiler (cc) to build tests/c/plugin_smoke.c")
    binary = tmp_path_factory.mktemp("smoke") / "plugin_smoke"
    subprocess.run([compiler, "-std=c11", "-O2", "-Wall", "-Werror", f"-I{REPO / 'csrc' / 'include'}",
                    str(REPO / "tests" / "c" / "plugin_smoke.c"), "-o", str(binary), "-ldl", "-lpthread"],
                   check=True)
    return binary


@pytest.mark.parametrize("name, config", [
    ("cpu", None),
    ("cpu", "mem=64MiB"),
    ("emu", None),  # The default four devices, two of them at half speed.
    ("emu", "tiny:1:speed=0.25:mem=64MiB:link=4;big:1:mem=1GiB"),
])
def test_smoke(plugin_smoke, name, config):
    load(name)  # Skips when the plugin is not built.
    path = plugin_path(name)
    proc = subprocess.run([str(plugin_smoke), str(path)] + ([config] if config else []),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and ", 0 failed" in proc.stdout, proc.stdout + proc.stderr


# --- Every plugin's table ----------------------------------------------------------------------------------


def project_version() -> str:
    """hal.__version__, the one place the version is written: CMake reads it and hal_add_plugin passes it on."""
    return re.search(r'^__version__ = "([0-9.]+)"', (REPO / "hal" / "__init__.py").read_text(), re.M).group(1)


def skeleton_version() -> str:
    return re.search(r"^project\(hal_plugin_null VERSION ([0-9.]+)", (REPO / "devices" / "null" / "CMakeLists.txt")
                     .read_text(), re.M).group(1)


@pytest.mark.parametrize("name", ["cpu", "emu", "null"])
def test_table(name):
    api = load(name).api
    assert api.struct_size == ffi.sizeof("hal_plugin_api_t")
    assert (api.abi_major, api.abi_minor) == (1, 2)
    assert ffi.string(api.name).decode() == name
    # hal_add_plugin passes the project's version: HAL's for its plugins; the null skeleton, which builds on
    # its own too (the SDK's sample), states its own in project().
    expected = skeleton_version() if name == "null" else project_version()
    assert ffi.string(api.version).decode() == expected
    # Collectives: cpu and emu have all ten (devices/common/sw_collective.c), the null skeleton none.
    entries = ["comm_get_unique_id", "comm_init_rank", "comm_destroy", "comm_abort", "allreduce", "allgather",
               "reduce_scatter", "broadcast", "send", "recv"]
    assert [getattr(api, e) != ffi.NULL for e in entries] == [name != "null"] * len(entries)


# --- null: everything answers UNIMPLEMENTED ----------------------------------------------------------------


def test_null_answers_unimplemented():
    plugin = load("null")
    with initialized(plugin):
        assert plugin.device_count() == 1
        props = plugin.properties(0)
        assert ffi.string(props.name) == b"null device" and props.kind == KIND_OTHER
        assert plugin.last_error() == ""
        calls = {
            "memory_allocate": lambda: plugin.api.memory_allocate(0, 256, ffi.new("void**")),
            "memory_free": lambda: plugin.api.memory_free(0, ffi.NULL),
            "device_get_memory_info": lambda: plugin.api.device_get_memory_info(0, ffi.new("uint64_t*"),
                                                                                 ffi.new("uint64_t*")),
            "stream_create": lambda: plugin.api.stream_create(0, ffi.new("hal_stream_t*")),
            "event_create": lambda: plugin.api.event_create(0, 0, ffi.new("hal_event_t*")),
            "memcpy_h2d_async": lambda: plugin.api.memcpy_h2d_async(ffi.NULL, ffi.NULL, ffi.NULL, 0),
        }
        for entry, call in calls.items():
            assert call() == UNIMPLEMENTED, entry
            assert plugin.last_error() == f"null plugin: {entry} is not implemented"
        for optional in ("host_allocate", "memcpy_peer_async", "memset_async", "launch_host_func", "memory_map"):
            assert getattr(plugin.api, optional) == ffi.NULL, optional


# --- cpu ---------------------------------------------------------------------------------------------------


def test_cpu_properties_and_limit():
    plugin = load("cpu")
    with initialized(plugin, "mem=1MiB"):
        props = plugin.properties(0)
        assert props.kind == KIND_CPU and props.relative_speed == 0
        assert props.flags == FLAG_HOST_ADDRESSABLE | FLAG_MAPPABLE
        assert props.total_memory_bytes == 1 << 20
        ptr = plugin.allocate(0, 512 << 10)
        with pytest.raises(HalError) as error:
            plugin.allocate(0, 768 << 10)
        assert error.value.status == OUT_OF_MEMORY
        assert all(str(n) in error.value.message for n in (786432, 524288, 1048576))
        assert plugin.map(0, ptr, 16) == ptr  # Host memory: the mapping is the pointer itself.
        plugin.check(plugin.api.memory_free(0, ptr))
    assert plugin.initialize("mem=lots") == INVALID_ARGUMENT and "mem=lots" in plugin.last_error()
    with initialized(plugin):
        assert plugin.properties(0).total_memory_bytes > 1 << 28  # Physical memory.


# --- Errors of queued work: reported once by the next synchronize or query, then cleared ---------------------


def failing_copy(plugin, stream, size=4096):
    """Queues a d2d copy whose source is freed before it runs (a caller bug): the copy fails on the worker.

    Returns (destination, a slow host function's callback) with the destination poisoned to 0xAB first.
    """
    a, b = plugin.allocate(0, size), plugin.allocate(0, size)
    plugin.check(plugin.api.memset_async(stream, b, 0xAB, size))
    slow = ffi.callback("void(void*)", lambda _: time.sleep(0.2))
    plugin.check(plugin.api.launch_host_func(stream, slow, ffi.NULL))
    plugin.check(plugin.api.memcpy_d2d_async(stream, b, a, size))
    plugin.check(plugin.api.memory_free(0, a))  # The copy has not run yet.
    return b, slow


def read_back(plugin, stream, ptr, size=4096) -> bytes:
    out = bytearray(size)
    plugin.check(plugin.api.memcpy_d2h_async(stream, ffi.from_buffer(out), ptr, size))
    plugin.check(plugin.api.stream_synchronize(stream))
    return bytes(out)


@pytest.mark.parametrize("name", ["cpu", "emu"])
def test_async_error_is_reported_once_then_cleared(name):
    plugin = load(name)
    with initialized(plugin, "e:1:mem=64MiB" if name == "emu" else None):
        stream = plugin.stream(0)
        before, after = plugin.event(0), plugin.event(0)
        b, _slow = failing_copy(plugin, stream)
        # Queued after the failure, before it is reported: accepted, then skipped (its input is garbage).
        plugin.check(plugin.api.memset_async(stream, b, 0x11, 4096))
        plugin.check(plugin.api.event_record(before, stream))
        assert plugin.api.stream_synchronize(stream) == DEVICE_ERROR
        assert "memcpy_d2d_async queued on device 0 failed" in plugin.last_error()
        assert plugin.api.event_synchronize(before) == DEVICE_ERROR  # Recorded after the failure: reports it.
        assert "memcpy_d2d_async" in plugin.last_error()
        # Reported once: the stream is usable again, and the skipped memset never ran.
        plugin.check(plugin.api.stream_synchronize(stream))
        plugin.check(plugin.api.stream_query(stream))
        plugin.check(plugin.api.event_record(after, stream))
        plugin.check(plugin.api.event_synchronize(after))
        assert read_back(plugin, stream, b) == b"\xab" * 4096
        plugin.check(plugin.api.memset_async(stream, b, 0x22, 4096))
        assert read_back(plugin, stream, b) == b"\x22" * 4096
        for event in (before, after):
            plugin.check(plugin.api.event_destroy(event))
        plugin.check(plugin.api.stream_destroy(stream))
        plugin.check(plugin.api.memory_free(0, b))


@pytest.mark.parametrize("name", ["cpu", "emu"])
def test_async_error_is_reported_once_by_query(name):
    """stream_query says NOT_READY while skipped work drains, then reports the failure once."""
    plugin = load(name)
    with initialized(plugin, "e:1:mem=64MiB" if name == "emu" else None):
        stream = plugin.stream(0)
        b, _slow = failing_copy(plugin, stream)
        assert plugin.api.stream_query(stream) == NOT_READY
        deadline = time.monotonic() + 30
        while (status := plugin.api.stream_query(stream)) == NOT_READY and time.monotonic() < deadline:
            time.sleep(0.01)
        assert status == DEVICE_ERROR and "memcpy_d2d_async" in plugin.last_error()
        plugin.check(plugin.api.stream_query(stream))
        plugin.check(plugin.api.stream_synchronize(stream))
        plugin.check(plugin.api.stream_destroy(stream))
        plugin.check(plugin.api.memory_free(0, b))


@pytest.mark.parametrize("name", ["cpu", "emu"])
def test_failed_stream_still_orders_through_events(name):
    """A wait queued on a failed stream still holds back the work queued after the report."""
    plugin = load(name)
    with initialized(plugin, "e:1:mem=64MiB" if name == "emu" else None):
        failed, other = plugin.stream(0), plugin.stream(0)
        ready = plugin.event(0)
        b, _slow = failing_copy(plugin, failed)
        slower = ffi.callback("void(void*)", lambda _: time.sleep(0.5))
        plugin.check(plugin.api.launch_host_func(other, slower, ffi.NULL))
        plugin.check(plugin.api.memset_async(other, b, 0x33, 4096))
        plugin.check(plugin.api.event_record(ready, other))
        plugin.check(plugin.api.stream_wait_event(failed, ready))
        assert plugin.api.stream_synchronize(failed) == DEVICE_ERROR  # Waited for `ready` too.
        plugin.check(plugin.api.event_query(ready))
        assert read_back(plugin, failed, b) == b"\x33" * 4096
        plugin.check(plugin.api.event_destroy(ready))
        for stream in (failed, other):
            plugin.check(plugin.api.stream_destroy(stream))
        plugin.check(plugin.api.memory_free(0, b))


# --- emu ---------------------------------------------------------------------------------------------------


def test_emu_default_devices(monkeypatch):
    monkeypatch.delenv("HAL_EMU_DEVICES", raising=False)
    plugin = load("emu")
    with initialized(plugin):
        names = [ffi.string(plugin.properties(d).name).decode() for d in range(plugin.device_count())]
        assert names == ["emu-fast", "emu-fast", "emu-slow", "emu-slow"]
        for device, speed in enumerate([1.0, 1.0, 0.5, 0.5]):
            props = plugin.properties(device)
            assert props.relative_speed == speed and props.total_memory_bytes == 2 << 30
            assert props.kind == KIND_NPU and ffi.string(props.vendor) == b"HAL emulator"
            assert props.flags == FLAG_EMULATED | FLAG_MAPPABLE  # Never host-addressable.
        assert plugin.properties(2).peak_flops[0] == plugin.properties(0).peak_flops[0] / 2


def test_emu_config(monkeypatch):
    plugin = load("emu")
    with initialized(plugin, "x:2:speed=0.5:mem=512MiB; y:1:mem=1048576:link=10"):
        assert plugin.device_count() == 3
        x, y = plugin.properties(1), plugin.properties(2)
        assert (ffi.string(x.name), x.relative_speed, x.total_memory_bytes) == (b"x", 0.5, 512 << 20)
        assert (ffi.string(y.name), y.relative_speed, y.total_memory_bytes) == (b"y", 1.0, 1 << 20)
        assert y.host_link_bandwidth == 10e9
    monkeypatch.setenv("HAL_EMU_DEVICES", "from-env:3")
    for config in (None, ""):  # No config: the environment variable.
        with initialized(plugin, config):
            assert plugin.device_count() == 3 and ffi.string(plugin.properties(0).name) == b"from-env"


@pytest.mark.parametrize("config, bad_part", [
    ("a", "missing ':COUNT'"),
    ("a:0", "COUNT '0'"),
    ("a:two", "COUNT 'two'"),
    ("a:1.5", "COUNT '1.5'"),
    (":1", "NAME ''"),
    ("a b:1", "NAME 'a b'"),
    ("a:1:speed=2", "speed '2' is not a number in [0.01, 1]"),
    ("a:1:speed=0", "speed '0'"),
    ("a:1:speed=1e-9", "speed '1e-9' is not a number in [0.01, 1]"),  # A copy would never return.
    ("a:1:speed=1e-300", "speed '1e-300'"),  # Pacing would overflow and silently stop.
    ("a:1:speed=0.009", "speed '0.009'"),
    ("a:1:speed=nan", "speed 'nan'"),
    ("a:1:speed=inf", "speed 'inf'"),
    ("a:1:mem=12XB", "mem '12XB'"),
    ("a:1:mem=0", "mem '0'"),
    ("a:1:mem=4095", "mem '4095' is not a size in [4KiB, 64TiB]"),
    ("a:1:mem=65TiB", "mem '65TiB' is not a size in [4KiB, 64TiB]"),
    ("a:1:mem=1e30", "mem '1e30'"),
    ("a:1:mem=nan", "mem 'nan'"),
    ("a:1:link=-1", "link '-1'"),
    ("a:1:link=1e-9", "link '1e-9' is not a number of GB/s in [0.01, 1000]"),
    ("a:1:link=1e6", "link '1e6' is not a number of GB/s in [0.01, 1000]"),
    ("a:1:link=inf", "link 'inf'"),
    ("a:1:link=nan", "link 'nan'"),
    ("a:1:colour=red", "unknown option 'colour'"),
    ("a:1:speed", "option 'speed' is not key=value"),
    ("ok:1;bad:x", "'bad:x'"),
    ("a:40;b:40", "more than 64 devices"),
    (";;", "declares no devices"),
])
def test_emu_bad_config(config, bad_part):
    plugin = load("emu")
    assert plugin.initialize(config) == INVALID_ARGUMENT
    assert bad_part in plugin.last_error()


@pytest.mark.parametrize("config", ["lo:1:speed=0.01:mem=4KiB:link=0.01", "hi:1:speed=1:mem=64TiB:link=1000"])
def test_emu_config_bounds_are_accepted(config):
    plugin = load("emu")
    with initialized(plugin, config):
        assert plugin.device_count() == 1


def test_emu_capacity_is_enforced():
    plugin = load("emu")
    with initialized(plugin, "small:1:mem=1MiB"):
        ptr = plugin.allocate(0, 512 << 10)
        assert plugin.memory_info(0) == (512 << 10, 1 << 20)
        with pytest.raises(HalError) as error:
            plugin.allocate(0, 768 << 10)
        assert error.value.status == OUT_OF_MEMORY
        message = error.value.message
        assert "requested 786432" in message and "524288 bytes in use" in message and "1048576" in message
        plugin.check(plugin.api.memory_free(0, ptr))
        plugin.check(plugin.api.memory_free(0, plugin.allocate(0, 1 << 20)))  # All of it, once free.


def test_emu_missing_synchronize_shows():
    """Work is asynchronous: reading a d2h destination before synchronizing sees the old bytes."""
    plugin = load("emu")
    with initialized(plugin, "e:1:mem=64MiB"):
        size = 1 << 16
        device_ptr = plugin.allocate(0, size)
        stream = plugin.stream(0)
        source = bytes(range(256)) * (size // 256)
        destination = bytearray(b"\xcd" * size)
        plugin.check(plugin.api.memcpy_h2d_async(stream, device_ptr, source, size))
        plugin.check(plugin.api.stream_synchronize(stream))
        slow = ffi.callback("void(void*)", lambda _: time.sleep(0.3))
        plugin.check(plugin.api.launch_host_func(stream, slow, ffi.NULL))
        plugin.check(plugin.api.memcpy_d2h_async(stream, ffi.from_buffer(destination), device_ptr, size))
        assert plugin.api.stream_query(stream) == NOT_READY
        assert destination == b"\xcd" * size  # Not yet: the copy waits behind the host function.
        plugin.check(plugin.api.stream_synchronize(stream))
        assert destination == source
        plugin.check(plugin.api.stream_destroy(stream))
        plugin.check(plugin.api.memory_free(0, device_ptr))


def test_emu_relative_speed():
    """The same d2d copy takes about 1/speed as long on a slower device (a behaviour, not a benchmark)."""
    plugin = load("emu")
    with initialized(plugin, "fast:1:speed=1.0:mem=256MiB;slow:1:speed=0.25:mem=256MiB"):
        size = 32 << 20
        times = []
        for device in (0, 1):
            a, b = plugin.allocate(device, size), plugin.allocate(device, size)
            stream = plugin.stream(device)
            start, end = plugin.event(device, EVENT_TIMING), plugin.event(device, EVENT_TIMING)
            plugin.check(plugin.api.memset_async(stream, a, 1, size))  # Touch the pages first.
            plugin.check(plugin.api.memset_async(stream, b, 2, size))
            best = float("inf")
            for _ in range(3):
                plugin.check(plugin.api.event_record(start, stream))
                plugin.check(plugin.api.memcpy_d2d_async(stream, b, a, size))
                plugin.check(plugin.api.event_record(end, stream))
                plugin.check(plugin.api.event_synchronize(end))
                best = min(best, plugin.elapsed_ms(start, end))
            times.append(best)
            for handle in (start, end):
                plugin.check(plugin.api.event_destroy(handle))
            plugin.check(plugin.api.stream_destroy(stream))
            for ptr in (a, b):
                plugin.check(plugin.api.memory_free(device, ptr))
        fast, slow = times
        assert slow / fast > 2, f"speed 0.25 took {slow:.2f} ms, speed 1.0 took {fast:.2f} ms"


def test_emu_cross_device_event_wait():
    """A stream of one device waits for an event recorded on another device's stream."""
    plugin = load("emu")
    with initialized(plugin, "e:2:mem=64MiB"):
        size = 1 << 20
        a0, a1 = plugin.allocate(0, size), plugin.allocate(1, size)
        s0, s1 = plugin.stream(0), plugin.stream(1)
        ready = plugin.event(0)
        source = os.urandom(size)
        destination = bytearray(size)
        slow = ffi.callback("void(void*)", lambda _: time.sleep(0.1))
        plugin.check(plugin.api.launch_host_func(s0, slow, ffi.NULL))
        plugin.check(plugin.api.memcpy_h2d_async(s0, a0, source, size))
        plugin.check(plugin.api.event_record(ready, s0))
        plugin.check(plugin.api.stream_wait_event(s1, ready))
        plugin.check(plugin.api.event_destroy(ready))  # Allowed: the queued wait still completes.
        plugin.check(plugin.api.memcpy_peer_async(s1, a1, 1, a0, 0, size))
        plugin.check(plugin.api.memcpy_d2h_async(s1, ffi.from_buffer(destination), a1, size))
        plugin.check(plugin.api.stream_synchronize(s1))
        assert destination == source
        for device, stream, ptr in ((0, s0, a0), (1, s1, a1)):
            plugin.check(plugin.api.stream_destroy(stream))
            plugin.check(plugin.api.memory_free(device, ptr))


def test_emu_rejects_foreign_pointers():
    plugin = load("emu")
    with initialized(plugin, "e:2:mem=64MiB"):
        on0, on1 = plugin.allocate(0, 4096), plugin.allocate(1, 4096)
        stream = plugin.stream(0)
        host = bytearray(8192)
        assert plugin.api.memcpy_h2d_async(stream, on1, ffi.from_buffer(host), 16) == INVALID_ARGUMENT
        assert plugin.api.memcpy_h2d_async(stream, on0, ffi.from_buffer(host), 8192) == INVALID_ARGUMENT  # Overrun.
        assert plugin.api.memcpy_h2d_async(stream, on0, on1, 16) == INVALID_ARGUMENT  # "Host" side is device.
        assert "host-side pointer" in plugin.last_error()
        assert plugin.api.memory_free(1, on0) == INVALID_ARGUMENT
        plugin.check(plugin.api.stream_synchronize(stream))  # Rejected calls queue nothing and fail nothing.
        plugin.check(plugin.api.stream_destroy(stream))
        plugin.check(plugin.api.memory_free(0, on0))
        plugin.check(plugin.api.memory_free(1, on1))


def test_emu_declares_its_operators_unless_configured_without():
    from plugin_ffi import ffi

    plugin = load("emu")
    with initialized(plugin, "a:1;b:1:ops=0"):
        ops, count = ffi.new("hal_op_t**"), ffi.new("uint64_t*")
        plugin.check(plugin.api.op_list(0, ops, count))
        names = [ffi.string(ops[0][i].name).decode() for i in range(count[0])]
        assert "aten::mm" in names and len(names) == len(set(names))
        plugin.check(plugin.api.op_list(1, ops, count))
        assert count[0] == 0
        stream = plugin.stream(1)
        status = plugin.api.op_launch(stream, 0, ffi.NULL, 0, ffi.NULL, 0)
        assert status == 2 and "configured ops=0" in plugin.last_error()  # INVALID_ARGUMENT
        plugin.check(plugin.api.stream_destroy(stream))
    assert plugin.initialize("a:1:ops=2") == 2 and "ops '2' is not 0 or 1" in plugin.last_error()
