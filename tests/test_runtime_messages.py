"""Messages a user acts on: why a file is not a loadable plugin, devices whose plugin cannot tell its memory,
the `hal` tables without rich, and the one list of ABI entries."""
from __future__ import annotations

import json
import shutil

import pytest

from tests.conftest import NULL_PLUGIN, PLUGIN_DIR, run_python

_C = pytest.importorskip("hal._C")
pytestmark = pytest.mark.needs_native

EMU = PLUGIN_DIR / "libhal_plugin_emu.so"


def patched(tmp_path, name: str, offset: int | None, data: bytes | None, truncate: int | None = None):
    path = tmp_path / f"libhal_plugin_{name}.so"
    if offset is None:
        path.mkdir()
        return path
    raw = bytearray(EMU.read_bytes())
    raw[offset:offset + len(data)] = data
    path.write_bytes(bytes(raw[:truncate]))
    return path


@pytest.mark.parametrize("name, offset, data, truncate, expected", [
    ("aarch64", 18, (183).to_bytes(2, "little"), None, "it is an ELF file for AArch64, but this process is x86-64"),
    ("elf32", 4, b"\x01", None, "it is a 32-bit ELF file, but this process is 64-bit"),
    ("bigendian", 5, b"\x02", None, "it is a big-endian ELF file, but this process is little-endian"),
    ("truncated", 0, b"", 20, "it is a truncated ELF file (20 bytes)"),
    ("object", 16, (1).to_bytes(2, "little"), None, "it is an ELF object file (.o), not a shared library"),
    ("text", 0, b"#!/bin/sh\n", 10, "it is not an ELF file"),
    ("directory", None, None, None, "it is a directory, not a plugin file"),
])
def test_a_refused_file_says_why(tmp_path, name, offset, data, truncate, expected):
    path = patched(tmp_path, name, offset, data, truncate)
    error = _C.inspect_plugin(str(path)).error
    assert f"cannot load plugin {path}: not a loadable shared library: {expected}" in error
    assert "(dlopen: " in error  # glibc's own text follows (for a wrong machine: "No such file or directory")


def test_a_missing_file_keeps_the_loaders_reason(tmp_path):
    assert "No such file or directory" in _C.inspect_plugin(str(tmp_path / "libhal_plugin_gone.so")).error


def test_the_entry_list_is_the_runtimes():
    entries = _C.plugin_entries()
    assert entries[0] == ("initialize", True) and ("memory_map", False) in entries
    assert [name for name, _ in entries] == list(_C.inspect_plugin(str(EMU)).entries)


def hal_cli(*args: str, env: dict | None = None, prelude: str = ""):
    return run_python(f"{prelude}import sys; from hal.cli import main; sys.exit(main({list(args)!r}))", env=env)


def test_devices_lists_a_device_whose_memory_is_unknown():
    env = {"HAL_PLUGIN_PATH": str(NULL_PLUGIN)}
    proc = hal_cli("devices", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    devices = {d["name"]: d for d in json.loads(proc.stdout)["devices"]}
    assert devices["null:0"]["memory_total"] is None and devices["null:0"]["memory_used"] is None
    assert devices["cpu:0"]["index"] == 0 and devices["null:0"]["index"] == len(devices) - 1
    table = hal_cli("devices", env=env)
    assert table.returncode == 0, table.stderr
    [line] = [line for line in table.stdout.splitlines() if "null:0" in line]
    assert "unknown" in line


def test_devices_table_without_rich():
    proc = hal_cli("devices", prelude="import sys; sys.modules['rich'] = None\n")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("HAL devices") and lines[1].split()[:2] == ["torch", "device"]
    assert any("emu:0" in line and "emulated" in line for line in lines)


def test_conformance_names_optional_entries_from_the_runtime():
    proc = hal_cli("info", str(NULL_PLUGIN), "--json")
    entries = json.loads(proc.stdout)["entries"]
    assert list(entries) == [name for name, _ in _C.plugin_entries()]
