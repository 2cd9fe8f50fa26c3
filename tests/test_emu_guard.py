"""emu device memory is not host memory: dereferencing a device pointer on the host crashes.

Like torch_openreg's guarded memory, this makes host-side use of device memory fail in tests instead of
working by luck. The control: the same bytes are readable through memory_map's alias.
"""
from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

TESTS_C = Path(__file__).resolve().parent / "c"
sys.path.insert(0, str(TESTS_C))
from plugin_ffi import Plugin, ffi, plugin_dir, plugin_path  # noqa: E402

DATA = b"written by h2d, read through the alias"

# Allocates on emu, writes DATA with h2d, proves the alias sees it, then reads the device pointer itself.
CHILD = textwrap.dedent(
    """
    import ctypes, sys
    sys.path.insert(0, sys.argv[1])
    from plugin_ffi import Plugin, ffi
    plugin = Plugin.load(sys.argv[2])
    plugin.check(plugin.initialize("guarded:1:mem=16MiB"))
    data = sys.argv[3].encode()
    device_ptr = plugin.allocate(0, 4096)
    stream = plugin.stream(0)
    plugin.check(plugin.api.memcpy_h2d_async(stream, device_ptr, data, len(data)))
    plugin.check(plugin.api.stream_synchronize(stream))
    alias = plugin.map(0, device_ptr, len(data))
    print("alias:", ctypes.string_at(int(ffi.cast("uintptr_t", alias)), len(data)).decode(), flush=True)
    print("device:", ctypes.string_at(int(ffi.cast("uintptr_t", device_ptr)), len(data)), flush=True)
    """
)


def test_host_dereference_of_emu_memory_crashes():
    path = plugin_path("emu")
    if path is None:
        pytest.skip("no built emu plugin: set HAL_TEST_PLUGIN_DIR or run `pip install -e .` "
                    f"(looked in {plugin_dir() or '<repo>/hal/plugins'})")

    # Control, in this process: the alias from memory_map reads what h2d wrote, and writes reach d2h.
    plugin = Plugin.load(path)
    plugin.check(plugin.initialize("guarded:1:mem=16MiB"))
    try:
        device_ptr = plugin.allocate(0, 4096)
        stream = plugin.stream(0)
        plugin.check(plugin.api.memcpy_h2d_async(stream, device_ptr, DATA, len(DATA)))
        plugin.check(plugin.api.stream_synchronize(stream))
        alias = int(ffi.cast("uintptr_t", plugin.map(0, device_ptr, 4096)))
        assert alias != int(ffi.cast("uintptr_t", device_ptr))
        assert ctypes.string_at(alias, len(DATA)) == DATA
        ctypes.memset(alias, ord("z"), 4)
        back = bytearray(4)
        plugin.check(plugin.api.memcpy_d2h_async(stream, ffi.from_buffer(back), device_ptr, 4))
        plugin.check(plugin.api.stream_synchronize(stream))
        assert back == b"zzzz"
        plugin.check(plugin.api.memory_unmap(0, ffi.cast("void*", alias), 4096))
        plugin.check(plugin.api.stream_destroy(stream))
        plugin.check(plugin.api.memory_free(0, device_ptr))
    finally:
        plugin.api.shutdown()

    # The guard, in a child process: reading the device pointer itself is a segmentation fault.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONFAULTHANDLER"}
    proc = subprocess.run([sys.executable, "-c", CHILD, str(TESTS_C), str(path), DATA.decode()],
                          capture_output=True, text=True, timeout=60, env=env)
    assert f"alias: {DATA.decode()}" in proc.stdout, proc.stdout + proc.stderr  # Got as far as the read.
    assert "device:" not in proc.stdout, "the host read emu device memory"
    assert proc.returncode == -signal.SIGSEGV, proc.stdout + proc.stderr


def test_emu_map0_devices_cannot_be_mapped():
    """`map=0` makes a discrete-style device: not MAPPABLE, and memory_map refuses, naming the device."""
    from plugin_ffi import FLAG_MAPPABLE, HalError

    path = plugin_path("emu")
    if path is None:
        pytest.skip("no built emu plugin")
    plugin = Plugin.load(path)
    plugin.check(plugin.initialize("open:1:mem=16MiB;opaque:1:mem=16MiB:map=0"))
    try:
        assert plugin.properties(0).flags & FLAG_MAPPABLE
        assert not plugin.properties(1).flags & FLAG_MAPPABLE
        ptr = plugin.allocate(1, 4096)
        with pytest.raises(HalError, match=r"device 1 \(opaque\) is configured with map=0"):
            plugin.map(1, ptr, 4096)
        plugin.check(plugin.api.memory_free(1, ptr))
    finally:
        plugin.api.shutdown()
    assert plugin.initialize("bad:1:map=yes") != 0
    assert "map 'yes' is not 0 or 1" in plugin.last_error()
