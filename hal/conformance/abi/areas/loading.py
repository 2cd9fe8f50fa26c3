"""Loading and versioning (plugin.h): what HAL's loader reads from the table before it uses the plugin, then
initialize, device_count and, last of the whole run, shutdown."""
from __future__ import annotations

import re

from hal.conformance.abi import ffi as abi
from hal.conformance.abi.case import Skip, case, loader_refusal, ready


@case("loading", device=False)
def test_table_header(ctx):
    """struct_size, ABI version, name and version string of the table."""
    t = ctx.p.raw
    assert t.abi_major == abi.ABI_MAJOR, (f"ABI major {t.abi_major}: HAL's loader takes major {abi.ABI_MAJOR} only "
                                          "(a new major may change anything)")
    size_1_0 = abi.TABLE_SIZE_1_0
    assert t.struct_size >= size_1_0, f"struct_size {t.struct_size} is smaller than the ABI 1.0 table ({size_1_0})"
    if t.abi_minor >= 1:
        full = abi.ffi.sizeof("hal_plugin_api_t")
        assert t.struct_size >= full, f"ABI 1.{t.abi_minor} but struct_size {t.struct_size} < the 1.1 table ({full})"
    assert re.fullmatch(r"[a-z0-9_]+", ctx.p.name), f"name {ctx.p.name!r} is not [a-z0-9_]+"
    assert ctx.p.version, "the table's version string is empty or NULL"


@case("loading", device=False)
def test_required_entries(ctx):
    """Every entry up to memcpy_d2d_async is present."""
    missing = [e for e in abi.REQUIRED_ENTRIES if not ctx.p.has(e)]
    assert not missing, f"required entries are NULL: {', '.join(missing)}"


@case("loading", device=False)
def test_groups_are_whole(ctx):
    """Optional groups (pinned, mapping, collectives, operators, programs) are all there or all absent."""
    for group, entries in abi.GROUPS.items():
        present = [e for e in entries if ctx.p.has(e)]
        assert len(present) in (0, len(entries)), (f"half the {group} group: has {', '.join(present)}, lacks "
                                                   f"{', '.join(e for e in entries if e not in present)}")


@case("loading", device=False)
def test_initialize(ctx):
    """initialize succeeds (with --config), leaves get_last_error empty; device_count is stable."""
    refusal = loader_refusal(ctx.p)
    if refusal:
        raise Skip(f"HAL's loader refuses this plugin: {refusal}")
    try:
        ready(ctx)
    except Exception:
        if ctx.initialized is None:
            raise AssertionError(f"initialize failed: {ctx.p.last_error()}") from None
        # Zero devices: the plugin loaded; the device areas report "no device".
    assert ctx.p.last_error() == "", f"get_last_error after a successful call is {ctx.p.last_error()!r}"
    counts = {ctx.p.device_count() for _ in range(3)}
    assert len(counts) == 1 and min(counts) >= 0, f"device_count answers {sorted(counts)}"


@case("loading", device=False)
def test_shutdown(ctx):
    """shutdown returns once every handle is released (the run's last test)."""
    if not ctx.initialized:
        raise Skip("the plugin was not initialized in this process")
    ctx.p.api.shutdown()
    ctx.initialized = False
