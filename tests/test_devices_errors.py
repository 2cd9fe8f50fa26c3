"""Errors of queued work, as a user of the hal API sees them: the next synchronize raises once, then the
stream (here the default stream) works again. The plugin-level rule is tested in test_plugins_abi.py."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import run_python_json

pytestmark = pytest.mark.needs_native

TESTS_C = Path(__file__).resolve().parent / "c"

# The failing op is a caller bug the hal API cannot commit by itself: the copy's source is freed, through
# the very plugin library the runtime loaded, while the copy still waits behind a slow host function.
RECOVERY = """
    import json, sys, time
    sys.path.insert(0, {tests_c!r})
    import hal
    from plugin_ffi import ffi
    dev = hal.device({device!r})
    size = 4 << 20  # A large request: its own segment, so the buffer's pointer is the plugin's allocation.
    src, dst = dev.alloc(size), dev.alloc(size)
    api = ffi.dlopen(dev.plugin_path).hal_plugin_get_api()
    stream = dev.default_stream
    stream._native.launch_host_func(lambda: time.sleep(0.3))
    stream._native.copy_d2d(dst.ptr, src.ptr, size)
    freed = api.memory_free(dev.local_index, ffi.cast("void*", src.ptr))
    try:
        stream.synchronize()
        raised = None
    except hal.DeviceError as error:
        raised = str(error)
    data = bytes(range(256)) * (size // 256)
    recovered = dst.copy_from(data).to_bytes() == data  # On the default stream, synchronized.
    print(json.dumps({{"freed": freed, "raised": raised, "recovered": recovered}}))
"""


@pytest.mark.parametrize("device", ["cpu:0", "emu:0"])
def test_failed_queued_copy_raises_once_then_the_stream_works(device):
    result = run_python_json(RECOVERY.format(tests_c=str(TESTS_C), device=device), timeout=90)
    assert result["freed"] == 0
    assert result["raised"] is not None and "memcpy_d2d_async queued on device 0 failed" in result["raised"]
    assert result["recovered"] is True
