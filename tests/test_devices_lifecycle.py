"""Lifetimes of the software devices' streams (devices/common): destruction frees their threads, and a child
of fork() can exit although the parent's worker threads do not exist in it."""
from __future__ import annotations

import os
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.conftest import run_python_json

TESTS_C = Path(__file__).resolve().parent / "c"
sys.path.insert(0, str(TESTS_C))
from plugin_ffi import Plugin, ffi, plugin_path  # noqa: E402

CONFIGS = {"cpu": None, "emu": "e:1:mem=64MiB"}


def load(name: str) -> Plugin:
    path = plugin_path(name)
    if path is None:
        pytest.skip(f"libhal_plugin_{name}.so is not built")
    return Plugin.load(path)


def thread_count() -> int:
    return len(os.listdir("/proc/self/task"))


@pytest.mark.parametrize("name", ["cpu", "emu"])
def test_destroyed_streams_leave_no_threads(name):
    """stream_destroy waits for queued work, joins the worker and frees it: 200 streams leave nothing behind."""
    plugin = load(name)
    plugin.check(plugin.initialize(CONFIGS[name]))
    try:
        baseline = thread_count()
        streams = [plugin.stream(0) for _ in range(200)]
        assert thread_count() == baseline + 200  # One worker each.
        ran = []

        @ffi.callback("void(void*)")
        def record(_):
            time.sleep(0.001)
            ran.append(1)

        for stream in streams:
            plugin.check(plugin.api.launch_host_func(stream, record, ffi.NULL))
        for stream in streams:
            plugin.check(plugin.api.stream_destroy(stream))
        assert len(ran) == 200  # Destroy waited for the queued work.
        assert thread_count() == baseline
    finally:
        plugin.api.shutdown()


# The parent's side of both fork tests: waits up to 30 s for child |pid|; `done[0] == 0` means it hung.
WAIT_FOR_CHILD = """deadline = time.monotonic() + 30
while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
    time.sleep(0.02)
if done[0] == 0:
    os.kill(pid, 9)
    os.waitpid(pid, 0)
"""


def fork_script(template: str, **values: str) -> str:
    return textwrap.dedent(template).format(wait_for_child=WAIT_FOR_CHILD, **values)


# In a child of fork() the plugin refuses the parent's streams and events (their workers are not there)
# except to destroy them, and shuts down; the parent's work is unaffected.
FORK_PLUGIN = """
    import json, os, sys, time
    sys.path.insert(0, {tests_c!r})
    from plugin_ffi import OK, UNAVAILABLE, Plugin, ffi
    plugin = Plugin.load({path!r})
    plugin.check(plugin.initialize({config!r}))
    stream, event, ptr = plugin.stream(0), plugin.event(0), plugin.allocate(0, 4096)
    plugin.check(plugin.api.memset_async(stream, ptr, 1, 4096))
    plugin.check(plugin.api.event_record(event, stream))
    slow = ffi.callback("void(void*)", lambda _: time.sleep(0.3))
    plugin.check(plugin.api.launch_host_func(stream, slow, ffi.NULL))  # Still queued at the fork.
    pid = os.fork()
    if pid == 0:
        refused = [plugin.api.stream_synchronize(stream), plugin.api.stream_query(stream),
                   plugin.api.event_synchronize(event), plugin.api.memset_async(stream, ptr, 2, 16)]
        message = plugin.last_error()
        freed = [plugin.api.event_destroy(event), plugin.api.stream_destroy(stream),
                 plugin.api.memory_free(0, ptr)]
        plugin.api.shutdown()
        ok = refused == [UNAVAILABLE] * 4 and "after fork()" in message and freed == [OK] * 3
        sys.stdout.write(json.dumps({{"refused": refused, "message": message, "freed": freed}}) + "\\n")
        sys.stdout.flush()
        os._exit(0 if ok else 1)
    {wait_for_child}
    parent = [plugin.api.stream_synchronize(stream), plugin.api.event_synchronize(event)]
    print(json.dumps({{"child": os.waitstatus_to_exitcode(done[1]) if done[0] else "hung", "parent": parent}}))
"""


@pytest.mark.parametrize("name", ["cpu", "emu"])
def test_fork_child_frees_the_parents_streams_without_waiting(name):
    path = plugin_path(name) or pytest.skip(f"libhal_plugin_{name}.so is not built")
    result = run_python_json(fork_script(FORK_PLUGIN, tests_c=str(TESTS_C), path=str(path), config=CONFIGS[name]),
                             timeout=90)
    assert result == {"child": 0, "parent": [0, 0]}


# The user's view: a child forked after device use exits normally (sys.exit runs atexit, which shuts the
# runtime and the plugins down in the child).
FORK_RUNTIME = """
    import json, os, sys, time
    import hal
    dev = hal.device({device!r})
    buf = dev.alloc(1 << 16)
    buf.copy_from(bytes(range(256)) * 256)
    buf.fill(7, stream=dev.Stream())
    dev.synchronize()
    pid = os.fork()
    if pid == 0:
        sys.exit(3)
    {wait_for_child}
    still_works = buf.fill(9).to_bytes() == bytes([9]) * (1 << 16)
    print(json.dumps({{"child": os.waitstatus_to_exitcode(done[1]) if done[0] else "hung", "parent": still_works}}))
"""


@pytest.mark.needs_native
@pytest.mark.parametrize("device", ["cpu:0", "emu:0"])
def test_forked_child_exits_through_atexit(device):
    result = run_python_json(fork_script(FORK_RUNTIME, device=device), timeout=90)
    assert result == {"child": 3, "parent": True}
