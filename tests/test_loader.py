"""The plugin loader and the device registry of the C++ runtime (csrc/runtime/{plugin,registry}.cpp),
plus the stream/event/copy surface, against the fixture plugins of tests/plugins/fixture_plugin.c.

inspect_plugin needs no init, so it runs in this process; every init scenario runs in a fresh subprocess."""
from __future__ import annotations

import os
import shutil

import pytest

from plugin_fixtures import fixture_plugins, hal_env, init_snippet, run_hal  # noqa: F401 (fixture)

_C = pytest.importorskip("hal._C")

REQUIRED = ["initialize", "shutdown", "get_last_error", "device_count", "device_get_properties",
            "device_get_memory_info", "memory_allocate", "memory_free", "stream_create", "stream_destroy",
            "stream_synchronize", "stream_query", "stream_wait_event", "event_create", "event_destroy",
            "event_record", "event_synchronize", "event_query", "event_elapsed_time", "memcpy_h2d_async",
            "memcpy_d2h_async", "memcpy_d2d_async"]

# variant -> fragments the refusal (inspect_plugin.error and the load error) must contain; "{path}" is
# replaced by the plugin's path.
REFUSALS = {
    "not_a_library": ["cannot load plugin {path}", "not a loadable shared library"],
    "no_entry": ["cannot load plugin {path}", "missing entry symbol hal_plugin_get_api"],
    "null_table": ["cannot load plugin {path}", "hal_plugin_get_api() returned NULL"],
    "major2": ["cannot load plugin {path}", "incompatible ABI major version", "plugin ABI 2.0", "loader ABI 1.2"],
    "missing_required": ["cannot load plugin {path}", "missing required entries: stream_query, event_query"],
    "bad_name": ["cannot load plugin {path}", "invalid plugin name 'Bad-Name'"],
    "half_ops": ["cannot load plugin {path}", "incomplete operators entries (kernel.h: all or none): has op_list "
                 "but lacks op_launch"],
}


# --- Inspection (no init) ---------------------------------------------------------------------------

@pytest.mark.parametrize("variant", sorted(REFUSALS))
def test_inspect_reports_refusal(fixture_plugins, variant):
    path = str(fixture_plugins[variant])
    info = _C.inspect_plugin(path)
    assert info.error is not None
    for fragment in REFUSALS[variant]:
        assert fragment.format(path=path) in info.error
    assert info.device_count == -1
    assert len(info.entries) == 46  # ABI 1.1: 22 required, 17 optional of 1.0, 7 compute entries


def test_inspect_reports_versions_and_entries_even_when_refused(fixture_plugins):
    info = _C.inspect_plugin(str(fixture_plugins["major2"]))
    assert (info.abi_major, info.abi_minor, info.name) == (2, 0, "major2")
    missing = _C.inspect_plugin(str(fixture_plugins["missing_required"]))
    assert missing.entries["stream_query"] is False and missing.entries["memcpy_d2d_async"] is True


def test_inspect_good_plugin_does_not_initialize(fixture_plugins):
    info = _C.inspect_plugin(str(fixture_plugins["init_fails"]))  # initialize would fail: not called here
    assert info.error is None and info.name == "initfail" and info.version == "0.0.1-test"
    good = _C.inspect_plugin(str(fixture_plugins["good"]))
    assert all(good.entries[name] for name in REQUIRED)
    assert good.entries["memset_async"] and good.entries["launch_host_func"]
    assert not good.entries["host_allocate"] and not good.entries["allreduce"]
    assert list(good.entries)[:3] == ["initialize", "shutdown", "get_last_error"]


def test_old_table_reads_entries_beyond_struct_size_as_null(fixture_plugins):
    # The old fixture fills its optional entries, but its struct_size ends at memcpy_d2d_async.
    info = _C.inspect_plugin(str(fixture_plugins["old_table"]))
    assert info.error is None
    assert info.entries["memcpy_d2d_async"] is True
    assert not any(info.entries[name] for name in ("memset_async", "launch_host_func", "memory_map",
                                                    "memcpy_peer_async"))


def test_newer_minor_is_accepted(fixture_plugins):
    info = _C.inspect_plugin(str(fixture_plugins["newer"]))
    assert info.error is None and (info.abi_major, info.abi_minor) == (1, 7)


# --- Loading next to a good plugin ---------------------------------------------------------------------

@pytest.mark.parametrize("variant", sorted(REFUSALS) + ["init_fails"])
def test_broken_plugin_is_recorded_and_others_load(fixture_plugins, variant):
    good, bad = fixture_plugins["good"], fixture_plugins[variant]
    state = run_hal(init_snippet([bad, good], use_env=False) + "emit(state)")
    assert state["devices"] == ["fixture:0", "fixture:1"]
    assert state["plugins"] == ["fixture"]
    assert len(state["errors"]) == 1
    path, message = state["errors"][0]
    assert path == str(bad)
    if variant == "init_fails":
        expected = [f"plugin 'initfail' at {bad}", "initialize failed: HAL_STATUS_DEVICE_ERROR",
                    "fixture init failed: no device present", "[native code 42]"]
    else:
        expected = [f.format(path=bad) for f in REFUSALS[variant]]
    for fragment in expected:
        assert fragment in message


def test_newer_and_older_plugins_load_and_work(fixture_plugins):
    code = init_snippet([fixture_plugins["newer"], fixture_plugins["old_table"], fixture_plugins["abi10"]],
                        use_env=False) + """
abi10 = [p for p in _C.plugins() if p.name == "abi10"][0]
b = _C.find_device("abi10:0").allocate(64)
del b
old = _C.find_device("old:0")
s = old.default_stream()
a = old.allocate(4096)
s.memset(a.ptr, 7, 4096)            # no memset_async: falls back to a filled host buffer
out = bytearray(4096)
s.copy_d2h(out, a.ptr)
s.synchronize()
try:
    s.launch_host_func(lambda: None)
    unimplemented = None
except _C.Unimplemented as e:
    unimplemented = [str(e), e.code]
emit(dict(state=state, filled=set(out) == {7}, supports=old.supports("memset_async"), unimpl=unimplemented,
          abi10=[abi10.abi_major, abi10.abi_minor, dict(abi10.entries)["recv"], dict(abi10.entries)["op_list"]]))
"""
    r = run_hal(code)
    assert r["state"]["devices"] == ["newer:0", "newer:1", "old:0", "old:1", "abi10:0", "abi10:1"]
    assert r["state"]["errors"] == []
    # An ABI 1.0 plugin (no compute entries; its table ends at recv) loads under the 1.1 loader.
    assert r["abi10"] == [1, 0, False, False]
    assert r["filled"] and r["supports"] is False
    assert r["unimpl"] == ["plugin 'old' does not support launch_host_func", "HAL_STATUS_UNIMPLEMENTED"]


def test_plugin_entry_error_carries_message_and_native_code(fixture_plugins):
    good = fixture_plugins["good"]
    code = init_snippet([good], use_env=False, configs={"fixture": "fail_alloc=1"}) + """
try:
    _C.get_device(0).allocate(100)
except _C.DeviceError as e:
    emit([str(e), e.code, e.plugin, e.device, e.native_code])
"""
    message, code_name, plugin, device, native = run_hal(code)
    assert message == (f"fixture:0 (plugin 'fixture' at {good}): memory_allocate failed: HAL_STATUS_DEVICE_ERROR: "
                       "fixture: simulated driver failure [native code 700]")
    assert (code_name, plugin, device, native) == ("HAL_STATUS_DEVICE_ERROR", "fixture", "fixture:0", 700)


# --- Discovery ------------------------------------------------------------------------------------------

def test_current_directory_is_never_searched(fixture_plugins, tmp_path):
    shutil.copy(fixture_plugins["good"], tmp_path / "libhal_plugin_fixture.so")
    for plugin_path in (None, "", ":", "::"):
        env = hal_env(HAL_PLUGIN_PATH=plugin_path)
        state = run_hal(init_snippet() + "emit(state)", env=env, cwd=tmp_path)
        assert state == {"devices": [], "plugins": [], "errors": []}, plugin_path


def test_explicit_relative_path_is_resolved(fixture_plugins, tmp_path):
    shutil.copy(fixture_plugins["good"], tmp_path / "libhal_plugin_fixture.so")
    state = run_hal(init_snippet(["./libhal_plugin_fixture.so"], use_env=False) + "emit(state)", cwd=tmp_path)
    assert state["devices"] == ["fixture:0", "fixture:1"]


def test_env_plugin_path_files_and_directories(fixture_plugins):
    good_dir = fixture_plugins["good"].parent
    env = hal_env(HAL_PLUGIN_PATH=f":{good_dir}::{fixture_plugins['good2']}:")
    code = init_snippet() + "emit([state, [p.path for p in _C.plugins()]])"
    state, paths = run_hal(code, env=env)
    assert state["plugins"] == ["fixture", "fixture2"] and state["errors"] == []
    assert paths == [str(fixture_plugins["good"]), str(fixture_plugins["good2"])]
    # use_env=False ignores it.
    assert run_hal(init_snippet(use_env=False) + "emit(state)", env=env)["plugins"] == []


def test_bundled_plugins_come_first_then_env_then_explicit_paths(fixture_plugins):
    # The package's folder (plugin_dirs) first, so a plugin added on HAL_PLUGIN_PATH or by path never
    # renumbers the bundled devices (cpu:0 stays hal:0).
    newer, old = fixture_plugins["newer"], fixture_plugins["old_table"]
    code = init_snippet([fixture_plugins["good2"]], dirs=[fixture_plugins["good"].parent]) + "emit(state)"
    state = run_hal(code, env=hal_env(HAL_PLUGIN_PATH=f"{old}:{newer}"))
    assert state["plugins"] == ["fixture", "old", "newer", "fixture2"]
    assert state["devices"][:2] == ["fixture:0", "fixture:1"] and state["devices"][-2:] == ["fixture2:0", "fixture2:1"]


def test_a_plugin_path_never_renumbers_the_bundled_devices(fixture_plugins):
    env = hal_env(HAL_PLUGIN_PATH=str(fixture_plugins["good"]))
    names = run_hal("import hal\nemit([d.name for d in hal.devices()])", env=env)
    assert names[0] == "cpu:0" and names[-2:] == ["fixture:0", "fixture:1"]


def test_a_bundled_plugin_wins_over_one_of_the_same_name_on_the_plugin_path(fixture_plugins, tmp_path):
    copy = tmp_path / "libhal_plugin_fixture.so"
    shutil.copy(fixture_plugins["good"], copy)
    code = init_snippet(dirs=[fixture_plugins["good"].parent]) + "emit([state, [p.path for p in _C.plugins()]])"
    state, paths = run_hal(code, env=hal_env(HAL_PLUGIN_PATH=str(copy)))
    assert paths == [str(fixture_plugins["good"])]
    [[path, message]] = state["errors"]
    assert path == str(copy) and "duplicate plugin 'fixture'" in message


def test_same_real_path_twice_is_silently_deduplicated(fixture_plugins, tmp_path):
    good = fixture_plugins["good"]
    os.symlink(good, tmp_path / "libhal_plugin_link.so")
    odd = f"{good.parent}/../{good.parent.name}/{good.name}"
    state = run_hal(init_snippet([good, odd, tmp_path / "libhal_plugin_link.so"], use_env=False) + "emit(state)")
    assert state == {"devices": ["fixture:0", "fixture:1"], "plugins": ["fixture"], "errors": []}


def test_duplicate_plugin_name_keeps_the_first(fixture_plugins, tmp_path):
    good = fixture_plugins["good"]
    copy = tmp_path / "libhal_plugin_fixture.so"
    shutil.copy(good, copy)
    state = run_hal(init_snippet([good, copy], use_env=False) + "emit(state)")
    assert state["plugins"] == ["fixture"] and state["devices"] == ["fixture:0", "fixture:1"]
    [[path, message]] = state["errors"]
    assert path == str(copy)
    assert f"duplicate plugin 'fixture' at {copy}" in message and f"already loaded from {good}" in message


def test_config_map_and_env_override(fixture_plugins):
    good = fixture_plugins["good"]
    code = init_snippet([good], configs={"fixture": "devices=3"}) + "emit(state['devices'])"
    assert run_hal(code) == ["fixture:0", "fixture:1", "fixture:2"]
    assert run_hal(code, env=hal_env(HAL_PLUGIN_CONFIG_FIXTURE="devices=1")) == ["fixture:0"]


def test_visible_devices_filters_and_orders(fixture_plugins):
    paths = [fixture_plugins["good"], fixture_plugins["good2"]]
    code = init_snippet(paths) + "emit([state['devices'], [_C.get_device(i).local_index for i in range(2)]])"
    devices, locals_ = run_hal(code, env=hal_env(HAL_VISIBLE_DEVICES="fixture2, fixture:1,fixture:1"))
    assert devices == ["fixture2:0", "fixture2:1", "fixture:1"]
    assert locals_ == [0, 1]


def test_visible_devices_unknown_name_is_an_error(fixture_plugins):
    code = f"""
try:
    _C.init(plugin_paths=[{str(fixture_plugins['good'])!r}])
except _C.InvalidArgument as e:
    emit([str(e), isinstance(e, ValueError), _C.is_initialized()])
"""
    message, is_value_error, initialized = run_hal(code, env=hal_env(HAL_VISIBLE_DEVICES="fixture:0,emu:3"))
    assert "unknown device 'emu:3'" in message and "fixture:0, fixture:1" in message
    assert is_value_error and not initialized


def test_init_repeats_only_with_same_arguments(fixture_plugins):
    good = str(fixture_plugins["good"])
    code = f"""
_C.init(plugin_paths=[{good!r}], use_env=False)
_C.init(plugin_paths=[{good!r}], use_env=False)
try:
    _C.init(plugin_paths=[], use_env=False)
    emit("no error")
except _C.InvalidArgument as e:
    emit(str(e))
"""
    assert "already initialized with different options" in run_hal(code)


def test_device_lookup_and_properties(fixture_plugins):
    good = fixture_plugins["good"]
    code = init_snippet([good], use_env=False, configs={"fixture": "capacity=8388608"}) + """
d = _C.find_device("fixture:1")
p = d.properties()
try:
    _C.find_device("emu:9")
except _C.InvalidArgument as e:
    unknown = str(e)
try:
    _C.get_device(5)
except _C.InvalidArgument as e:
    out_of_range = str(e)
info = _C.plugins()[0]
emit(dict(index=d.index, name=d.name, plugin=d.plugin, path=d.plugin_path, local=d.local_index,
          pname=p.name, vendor=p.vendor, kind=p.kind, emulated=p.emulated, mappable=p.mappable,
          host=p.host_addressable, total=p.total_memory, flops=p.peak_flops, speed=p.relative_speed,
          mem=list(d.memory_info()), unknown=unknown, oor=out_of_range, count=info.device_count,
          version=info.version, abi=[info.abi_major, info.abi_minor], err=info.error,
          same=_C.get_device(1) is not None and _C.get_device(1).name == d.name))
"""
    r = run_hal(code)
    assert (r["index"], r["name"], r["plugin"], r["path"], r["local"]) == (1, "fixture:1", "fixture", str(good), 1)
    assert (r["pname"], r["vendor"], r["kind"]) == ("Fixture Device 1", "HAL tests", "other")
    assert r["emulated"] and r["mappable"] and not r["host"]
    assert r["total"] == 8388608 and r["mem"] == [8388608, 8388608]
    assert r["flops"] == {"f32": 1e9, "bf16": 2e9} and r["speed"] == 1.0
    assert "unknown device 'emu:9' (available: fixture:0, fixture:1)" in r["unknown"]
    assert "device index 5 out of range" in r["oor"]
    assert (r["count"], r["version"], r["abi"], r["err"]) == (2, "0.0.1-test", [1, 2], None)


def test_device_count_is_zero_before_init():
    assert run_hal("emit([_C.device_count(), _C.is_initialized()])") == [0, False]


# --- Streams, events, copies ----------------------------------------------------------------------------

def test_copies_events_and_host_funcs(fixture_plugins):
    code = init_snippet([fixture_plugins["good"], fixture_plugins["good2"]], use_env=False) + """
import threading, time
d0, d1, e0 = _C.find_device("fixture:0"), _C.find_device("fixture:1"), _C.find_device("fixture2:0")
s0 = _C.Stream(d0)
data = bytes(range(256)) * 64
a = d0.allocate(len(data), s0)
s0.copy_h2d(a.ptr, data)
b = d0.allocate(len(data), s0)
s0.copy_d2d(b.ptr, a.ptr, len(data))
start, end = _C.Event(d0), _C.Event(d0)
start.record(s0)
gate = threading.Event()
ran = []
s0.launch_host_func(lambda: (gate.wait(5), ran.append(1)))   # keeps s0 busy until the gate opens
end.record(s0)
busy = [s0.query(), end.query()]
time.sleep(0.02)
gate.set()
end.synchronize()
elapsed = start.elapsed_time(end)
out = bytearray(len(data))
s0.copy_d2h(out, b.ptr)
s0.synchronize()
# Peer copy within the plugin, and a staged copy across plugins.
s1 = d1.default_stream()
c = d1.allocate(len(data), s1)
_C.copy_peer(s1, c.ptr, s0, b.ptr, len(data))
x = e0.allocate(len(data))
_C.copy_peer(e0.default_stream(), x.ptr, s1, c.ptr, len(data))
out2 = bytearray(len(data))
e0.default_stream().copy_d2h(out2, x.ptr)
e0.synchronize()
streams = [s0 == s0, s0 != d0.default_stream(), s0.handle, d0.default_stream().handle, hash(s0) == hash(s0)]
emit(dict(roundtrip=bytes(out) == data, busy=busy, ran=ran, elapsed=elapsed, peer=bytes(out2) == data,
          streams=streams))
"""
    r = run_hal(code)
    assert r["roundtrip"] and r["peer"] and r["ran"] == [1]
    assert r["busy"] == [False, False]
    assert r["elapsed"] >= 10
    assert r["streams"] == [True, True, 1, 0, True]


def test_shutdown_leaves_handles_harmless(fixture_plugins):
    code = init_snippet([fixture_plugins["good"]], use_env=False) + """
d = _C.get_device(0)
a = d.allocate(1000)
e = _C.Event(d)
_C._shutdown()
a.free()            # a no-op now
try:
    d.allocate(10)
    err = None
except _C.DeviceError as x:
    err = str(x)
emit(err)
"""
    assert "shut down" in run_hal(code)
