"""ABI 1.2: the extension chain (hal/extension.h) as the loader reads it, and the first extension, "hal.topology"
(hal/topology.h), through the runtime (csrc/runtime/topology.cpp) and the Python API (Device.links, hal.topology),
against the fixture plugins (tests/plugins/fixture_plugin.c, FIXTURE_EXT) and emu."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from plugin_fixtures import ROOT, fixture_plugins, hal_env, init_snippet, run_hal  # noqa: F401 (fixture)

_C = pytest.importorskip("hal._C")

# Broken chains -> what the refusal says after "malformed extension chain (extension.h): ".
MALFORMED = {
    "ext_cycle": "link 2 points back to link 0 (a cycle)",
    "ext_zero_size": "link 0 has struct_size 0 < sizeof(hal_extension_t) 32",
    "ext_bad_name": "link 0 has an invalid name 'Vendor Thing' (must match [a-z0-9_.]+)",
    "ext_twice": "link 2 repeats the name 'hal.topology'",
}


def test_the_chain_is_read_in_order_with_unknown_extensions_listed(fixture_plugins):
    info = _C.inspect_plugin(str(fixture_plugins["ext"]))
    assert info.error is None and (info.abi_major, info.abi_minor) == (1, 2)
    assert info.extensions == [("vendor.unknown_thing", 3), ("hal.topology", 1)]


@pytest.mark.parametrize("variant", ["abi11", "abi10", "good"])
def test_plugins_without_a_chain_have_no_extensions(fixture_plugins, variant):
    # abi11's table ends before `extensions`: the chain it still sets beyond its struct_size is never read.
    info = _C.inspect_plugin(str(fixture_plugins[variant]))
    assert info.error is None and info.extensions == []


@pytest.mark.parametrize("variant", sorted(MALFORMED))
def test_a_malformed_chain_is_refused_naming_the_link(fixture_plugins, variant):
    path = str(fixture_plugins[variant])
    info = _C.inspect_plugin(path)
    assert info.error == f"cannot load plugin {path}: malformed extension chain (extension.h): {MALFORMED[variant]}"
    # At init it is a load error; the other plugins load.
    state = run_hal(init_snippet(paths=[path, fixture_plugins["good"]], use_env=False) + "emit(state)")
    assert state["plugins"] == ["fixture"]
    assert state["errors"] == [[path, info.error]]


def test_links_of_the_topology_extension(fixture_plugins):
    code = init_snippet(paths=[fixture_plugins["ext"], fixture_plugins["good"]], use_env=False,
                        configs={"ext": "devices=3"}) + """
def links(name):
    found = _C.find_device(name).links()
    return None if found is None else [[l.peer, l.peer_index, l.kind, l.peer_access, l.bandwidth, l.latency]
                                       for l in found]
emit(dict(ext0=links("ext:0"), ext2=links("ext:2"), plain=links("fixture:0"),
          extensions=_C.find_device("ext:1").extensions(), plain_extensions=_C.find_device("fixture:0").extensions()))
"""
    r = run_hal(code)
    assert r["ext0"] == [["host", -1, "pcie", False, 1e9, 0.0], ["ext:1", 1, "fabric", True, 2e9, 2e-6],
                         ["ext:2", 2, "fabric", True, 3e9, 2e-6]]
    assert r["ext2"] == [["host", -1, "pcie", False, 1e9, 0.0], ["ext:0", 0, "fabric", True, 1e9, 2e-6],
                         ["ext:1", 1, "fabric", True, 2e9, 2e-6]]
    assert r["plain"] is None and r["plain_extensions"] == []  # No topology: nothing is known.
    assert r["extensions"] == [["vendor.unknown_thing", 3], ["hal.topology", 1]]


def test_hidden_devices_are_left_out_of_the_links(fixture_plugins):
    code = init_snippet(paths=[fixture_plugins["ext"]], configs={"ext": "devices=3"}) + """
emit([[l.peer, l.peer_index] for l in _C.find_device("ext:0").links()])
"""
    r = run_hal(code, env=hal_env(HAL_VISIBLE_DEVICES="ext:0,ext:2"))
    assert r == [["host", -1], ["ext:2", 1]]


def test_emu_and_cpu_declare_their_topology_through_the_python_api():
    code = f"""
import hal
hal.init(use_env=False, configs={{"emu": "fast:2:speed=1.0:link=8;slow:1:speed=0.5"}})
topo = hal.topology()
emit(dict(cpu=[[l.peer, l.kind, l.peer_access] for l in topo["cpu:0"]],
          fast0=[[l.peer, l.kind, l.peer_access, l.bandwidth] for l in topo["emu:0"]],
          slow=[[l.peer, l.bandwidth] for l in topo["emu:2"]],
          extensions=hal.device("emu:0").extensions()))
"""
    for validate in (None, "1"):  # The validation layer hands the chain through unchanged.
        r = run_hal(code, env=hal_env(HAL_VALIDATE=validate))
        assert r["cpu"] == [["host", "same_memory", True]]
        assert r["fast0"] == [["host", "pcie", False, 8e9], ["emu:1", "fabric", True, 20e9],
                              ["emu:2", "fabric", True, 10e9]]
        assert r["slow"] == [["host", 16e9], ["emu:0", 10e9], ["emu:1", 10e9]]
        assert r["extensions"] == {"hal.topology": 1}


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", f"import sys; from hal.cli import main; sys.exit(main({list(args)!r}))"],
                          env=env or hal_env(), cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_hal_info_and_hal_devices_show_extensions_and_links(fixture_plugins):
    info = _cli("info", str(fixture_plugins["ext"]), "--json")
    assert info.returncode == 0, info.stderr
    assert json.loads(info.stdout)["extensions"] == {"vendor.unknown_thing": 3, "hal.topology": 1}
    assert "extensions hal.topology v1" in _cli("info", str(ROOT / "hal" / "plugins" / "libhal_plugin_emu.so")).stdout
    env = hal_env(HAL_VISIBLE_DEVICES="cpu:0,emu:0,emu:1")
    devices = json.loads(_cli("devices", "--json", env=env).stdout)["devices"]
    emu0 = next(d for d in devices if d["name"] == "emu:0")
    assert [(l["peer"], l["kind"], l["peer_access"]) for l in emu0["links"]] == [("host", "pcie", False),
                                                                                 ("emu:1", "fabric", True)]
    table = _cli("devices", "--topology", env=env)
    assert table.returncode == 0 and "Links (hal.topology" in table.stdout and "fabric" in table.stdout
