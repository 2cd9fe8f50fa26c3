"""The validation layer (csrc/runtime/validation.{h,cpp}): HAL_VALIDATE=1 checks every call into a plugin and
reports the first violation with the call and its arguments, and leaks at exit.

Every scenario runs in a fresh interpreter (the layer is chosen when the plugins load). Violations are
planted through hal._C's raw entry points (raw_allocate / raw_free, Device._raw_call), which bypass the
runtime's own bookkeeping, and through the fixture plugin's `misbehave=` configs (results that contradict
the ABI)."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from plugin_fixtures import ROOT, fixture_plugins, hal_env  # noqa: F401 (fixture)

pytest.importorskip("hal._C")

PLUGIN_DIR = ROOT / "hal" / "plugins"

PRELUDE = f"""
import json
from hal import _C
def emit(obj):
    print('@@' + json.dumps(obj), flush=True)
_C.init(plugin_dirs=[{str(PLUGIN_DIR)!r}], use_env=False)
dev = _C.find_device("cpu:0")
stream = dev.default_stream()
"""


def run(code: str, validate: str | None = "1", prelude: str = PRELUDE, **env: str):
    """Runs |code| after |prelude| with HAL_VALIDATE=|validate|; returns (process, last emitted object)."""
    proc = subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)],
                          env=hal_env(HAL_VALIDATE=validate, **env), cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    emitted = [json.loads(line[2:]) for line in proc.stdout.splitlines() if line.startswith("@@")]
    return proc, (emitted[-1] if emitted else None)


def caught(expr: str) -> str:
    """Snippet lines that run |expr| and emit {type, message} of the hal error it raises."""
    return f"""
try:
    {expr}
    emit(dict(type=None, message=""))
except _C.HalError as e:
    emit(dict(type=type(e).__name__, message=str(e)))
"""


def test_use_after_free_is_reported_with_the_call_and_its_arguments():
    proc, out = run("""
    p = dev.raw_allocate(4096)
    dev.raw_free(p)
    try:
        stream.copy_d2h(bytearray(64), p, 64)
        emit(dict(ptr=hex(p), type=None))
    except _C.HalError as e:
        emit(dict(ptr=hex(p), type=type(e).__name__, message=str(e)))
    """)
    assert proc.returncode == 0, proc.stderr
    ptr = out["ptr"]
    assert out["type"] == "InvalidArgument"
    message = out["message"]
    for piece in ["memcpy_d2h_async failed: HAL_STATUS_INVALID_ARGUMENT: HAL validation: memcpy_d2h_async(stream=0x",
                  f"src={ptr}, size_bytes=64)", f"src {ptr} (64 bytes) lies in memory freed by memory_free at call #",
                  f"(the allocation at {ptr} of 4096 bytes, memory_allocate at call #", "a use after free",
                  "into plugin 'cpu']"]:
        assert piece in message, (piece, message)
    # Printed to stderr too, and the exit report names it as the first violation.
    assert "HAL validation: memcpy_d2h_async(" in proc.stderr
    assert "HAL validation: plugin 'cpu':" in proc.stderr and "1 violation," in proc.stderr
    assert "first violation: memcpy_d2h_async(" in proc.stderr


def test_double_free_and_interior_free_and_out_of_bounds():
    proc, out = run("""
    p = dev.raw_allocate(4096)
    q = dev.raw_allocate(4096)
    dev.raw_free(p)
    found = {}
    for name, call in [("double", lambda: dev.raw_free(p)), ("interior", lambda: dev.raw_free(q + 256)),
                       ("oob", lambda: stream.copy_h2d(q + 4000, bytes(200))),
                       ("never", lambda: dev.raw_free(0x1000))]:
        try:
            call()
            found[name] = None
        except _C.InvalidArgument as e:
            found[name] = str(e)
    dev.raw_free(q)
    emit(dict(p=hex(p), q=hex(q), found=found))
    """)
    assert proc.returncode == 0, proc.stderr
    found, p, q = out["found"], out["p"], out["q"]
    assert f"memory_free(device=0, ptr={p}): ptr was already freed by memory_free at call #" in found["double"]
    assert "(double free; 4096 bytes allocated by memory_allocate at call #" in found["double"]
    assert f"ptr lies 256 bytes inside the allocation at {q}" in found["interior"]
    assert "not at its start" in found["interior"]
    assert "memcpy_h2d_async(" in found["oob"] and "size_bytes=200)" in found["oob"]
    assert f"runs 104 bytes past the end of the allocation at {q} (4096 bytes on device 0" in found["oob"]
    assert "out of bounds" in found["oob"]
    assert "memory_free(device=0, ptr=0x1000): ptr was never returned by memory_allocate of this plugin" in found["never"]


def test_leak_is_reported_at_exit_and_cached_memory_is_not():
    proc, out = run("""
    import hal
    leaked = dev.raw_allocate(12345)
    held = dev.allocate(1 << 20)           # A live block of the caching allocator: not a leak.
    cached = dev.allocate(4096); cached.free()  # Back in the cache: not a leak.
    report = _C.validation_report()
    emit(dict(ptr=hex(leaked), cpu=[r for r in report if r["plugin"] == "cpu"][0]))
    """)
    assert proc.returncode == 0, proc.stderr
    ptr, cpu = out["ptr"], out["cpu"]
    line = f"memory_allocate(device=0, size_bytes=12345) -> {ptr} at call #"
    assert len(cpu["leaks"]) == 1 and cpu["leaks"][0].startswith(line) and cpu["leaks"][0].endswith(", never freed")
    assert cpu["leaked_bytes"] == 12345 and cpu["violations"] == 0
    assert any("held by the caching allocator" in live for live in cpu["live"])
    # At exit, on stderr:
    assert "HAL validation: plugin 'cpu':" in proc.stderr
    assert "no violations, 1 leaked allocation (12.06 KiB)" in proc.stderr
    assert f"HAL validation:   leaked: {line}" in proc.stderr


def test_destroyed_stream_and_event_are_reported():
    proc, out = run("""
    found = {}
    s = dev._raw_call("stream_create")
    e = dev._raw_call("event_create")
    dev._raw_call("stream_destroy", [s])
    dev._raw_call("event_destroy", [e])
    for name, entry, args in [("sync", "stream_synchronize", [s]), ("record", "event_record", [e, 0]),
                              ("destroy", "event_destroy", [e])]:
        try:
            dev._raw_call(entry, args)
            found[name] = None
        except _C.InvalidArgument as err:
            found[name] = str(err)
    emit(dict(s=hex(s), e=hex(e), found=found))
    """)
    assert proc.returncode == 0, proc.stderr
    found, s, e = out["found"], out["s"], out["e"]
    assert f"stream_synchronize(stream={s}): stream {s} was destroyed by stream_destroy at call #" in found["sync"]
    assert "(a use after destroy)" in found["sync"]
    assert f"event_record(event={e}, stream=NULL): event {e} was destroyed by event_destroy at call #" in found["record"]
    assert f"event_destroy(event={e}): event {e} was destroyed by event_destroy at call #" in found["destroy"]


def test_argument_checks_device_index_size_zero():
    proc, out = run("""
    found = {}
    for name, args, local in [("index", [64], 7), ("zero", [0], None)]:
        try:
            dev._raw_call("memory_allocate", args, local)
            found[name] = None
        except _C.InvalidArgument as err:
            found[name] = str(err)
    emit(found)
    """)
    assert proc.returncode == 0, proc.stderr
    assert "memory_allocate(device=7, size_bytes=64, out_ptr=0x" in out["index"]
    assert "device 7 is out of range (the plugin has 1 devices)" in out["index"]
    assert "memory_allocate(device=0, size_bytes=0, out_ptr=0x" in out["zero"]
    assert "size_bytes is 0 (memory.h: > 0)" in out["zero"]


# misbehave config of the fixture plugin -> (what the snippet does, pieces of the error it raises).
CONTRADICTIONS = {
    "misaligned": ("d.raw_allocate(4096)", ["memory_allocate(device=0, size_bytes=4096, out_ptr=0x",
                                            "aligned to less than the 256 bytes memory.h promises (contradicts the ABI)"]),
    "overlap": ("d.raw_allocate(4096); d.raw_allocate(4096)", ["which overlaps the live allocation at 0x",
                                                               "(4096 bytes on device 0, memory_allocate at call #"]),
    "meminfo": ("d.memory_info()", ["device_get_memory_info(device=0, out_free_bytes=0x",
                                    "returned free 67108865 bytes > total 67108864 bytes (contradicts the ABI)"]),
    "status": ("d.default_stream().synchronize()", ["stream_synchronize(stream=0x",
                                                   "returned status 42, which is not a hal_status_e value"]),
    "not_ready": ("d.default_stream().synchronize()", ["returned HAL_STATUS_NOT_READY, which only stream_query, "
                                                      "event_query and event_elapsed_time may return"]),
}


@pytest.mark.parametrize("how", sorted(CONTRADICTIONS))
def test_results_that_contradict_the_abi(fixture_plugins, how):
    action, pieces = CONTRADICTIONS[how]
    prelude = f"""
import json
from hal import _C
def emit(obj):
    print('@@' + json.dumps(obj), flush=True)
_C.init(plugin_paths=[{str(fixture_plugins["good"])!r}], use_env=False, configs={{"fixture": "misbehave={how}"}})
d = _C.find_device("fixture:0")
"""
    proc, out = run(caught(action), prelude=prelude)
    assert proc.returncode == 0, proc.stderr
    assert out["type"] == "DeviceError", out  # HAL_STATUS_INTERNAL: a bug in the plugin.
    assert "HAL_STATUS_INTERNAL: HAL validation: " in out["message"]
    for piece in pieces:
        assert piece in out["message"], (piece, out["message"])
    assert "into plugin 'fixture']" in out["message"]


def test_off_by_default_with_the_plugins_own_table():
    proc, out = run("""
    p = dev.raw_allocate(4096)
    dev.raw_free(p)
    emit(dict(enabled=_C.validation_enabled(), report=_C.validation_report()))
    """, validate=None)
    assert proc.returncode == 0, proc.stderr
    assert out == {"enabled": False, "report": []}
    assert "HAL validation" not in proc.stderr


def test_clean_run_is_quiet_at_exit():
    proc, out = run("""
    b = dev.allocate(1000)
    stream.copy_h2d(b.ptr, bytes(1000))
    out = bytearray(1000)
    stream.copy_d2h(out, b.ptr)
    stream.synchronize()
    b.free()
    emit([dict(plugin=r["plugin"], violations=r["violations"], leaks=r["leaks"]) for r in _C.validation_report()])
    """)
    assert proc.returncode == 0, proc.stderr
    assert out and all(r["violations"] == 0 and r["leaks"] == [] for r in out), out
    assert "HAL validation" not in proc.stderr


def test_abort_mode_aborts_at_the_first_violation(tmp_path):
    log = tmp_path / "validate.log"
    proc, _ = run("""
    p = dev.raw_allocate(256)
    dev.raw_free(p)
    dev.raw_free(p)
    print("not reached")
    """, validate="abort", HAL_VALIDATE_LOG=str(log))
    assert proc.returncode != 0
    assert "not reached" not in proc.stdout
    assert "ptr was already freed by memory_free at call #" in proc.stderr
    assert "aborting at the first violation (HAL_VALIDATE=abort)" in proc.stderr
    assert "ptr was already freed" in log.read_text()  # HAL_VALIDATE_LOG keeps it too.


def test_torch_on_a_validated_device_has_no_false_positives():
    pytest.importorskip("torch")
    proc, out = run("""
    import torch
    import hal.torch  # noqa: F401
    x = torch.ones(3, 5, device="hal:1")
    y = (x * 2 + 1).sum(0)
    z = y.cpu()
    w = torch.arange(12.0, device="hal:1").reshape(3, 4).t().contiguous()
    del x, y, w
    torch.hal.synchronize()
    emit(dict(z=z.tolist(), reports=[dict(plugin=r["plugin"], violations=r["violations"], first=r["first_violation"],
                                       leaks=r["leaks"]) for r in _C.validation_report()]))
    """, prelude="import json\nfrom hal import _C\ndef emit(obj):\n    print('@@' + json.dumps(obj), flush=True)\n")
    assert proc.returncode == 0, proc.stderr
    assert out["z"] == [9.0] * 5  # three rows of 2 * 1 + 1
    for r in out["reports"]:
        assert r["violations"] == 0 and r["leaks"] == [], r
    assert "HAL validation" not in proc.stderr


def test_freeing_mapped_memory_and_unmapping_twice_are_reported():
    proc, out = run("""
    emu = _C.find_device("emu:0")
    p = emu.raw_allocate(4096)
    host = emu.map(p, 4096)
    found = {}
    for name, call in [("mapped", lambda: emu.raw_free(p)), ("unmap", lambda: emu.unmap(host, 4096)),
                       ("free", lambda: emu.raw_free(p)), ("again", lambda: emu.unmap(host, 4096))]:
        try:
            call()
            found[name] = None
        except _C.InvalidArgument as e:
            found[name] = str(e)
    emit(dict(p=hex(p), host=hex(host), found=found))
    """)
    assert proc.returncode == 0, proc.stderr
    found = out["found"]
    assert f"memory_free(device=0, ptr={out['p']}): ptr is still mapped at {out['host']} (4096 bytes" in found["mapped"]
    assert "memory_unmap must come before the allocation is freed" in found["mapped"]
    assert found["unmap"] is None and found["free"] is None  # In order, both are fine.
    assert f"memory_unmap(device=0, host_ptr={out['host']}, size_bytes=4096): (host_ptr, size_bytes) is not a live " \
           "mapping of device 0" in found["again"]
