"""Properties (device.h): what each device declares, and the struct_size protocol that lets old callers and
new plugins (and the reverse) share hal_device_properties_t."""
from __future__ import annotations

from hal.conformance.abi import ffi as abi
from hal.conformance.abi.case import case
from hal.conformance.abi.ffi import ffi

GUARD = 0xA5
FULL = ffi.sizeof("hal_device_properties_t")


@case("properties")
def test_every_device_declares_itself(ctx):
    """Name, vendor, kind, capacity agreeing with memory_info, relative speed of emulated devices."""
    for d in range(ctx.count):
        p = ctx.properties(d)
        name, vendor = ffi.string(p.name).decode(errors="replace"), ffi.string(p.vendor).decode(errors="replace")
        assert name and vendor, f"device {d}: empty name or vendor ({name!r}, {vendor!r})"
        assert p.kind in (abi.KIND_OTHER, abi.KIND_CPU, abi.KIND_GPU, abi.KIND_NPU), f"device {d}: kind {p.kind}"
        free, total = ctx.p.memory_info(d)
        assert p.total_memory_bytes > 0, f"device {d}: total_memory_bytes is 0"
        assert total == p.total_memory_bytes, (f"device {d}: memory_info's total {total} != the properties' "
                                               f"total_memory_bytes {p.total_memory_bytes}")
        assert free <= total, f"device {d}: memory_info's free {free} > total {total}"
        if p.flags & abi.FLAG_EMULATED:
            assert p.relative_speed > 0, f"device {d} is emulated but states no relative_speed"
        if p.flags & abi.FLAG_MAPPABLE:
            assert ctx.p.has("memory_map"), f"device {d} sets HAL_DEVICE_FLAG_MAPPABLE but has no memory_map"


def _call_with_size(ctx, struct_size: int, buffer_size: int):
    """device_get_properties with `struct_size` set, into guard bytes that reach well past the full struct
    (a plugin that ignores struct_size writes into them instead of past the end of our buffer)."""
    buffer_size = max(buffer_size, FULL) + 64
    raw = ffi.new("uint8_t[]", buffer_size)
    ffi.memmove(raw, bytes([GUARD]) * buffer_size, buffer_size)
    props = ffi.cast("hal_device_properties_t*", raw)
    props.struct_size = struct_size
    status = ctx.p.api.device_get_properties(ctx.device, props)
    return status, bytes(ffi.buffer(raw, buffer_size))


@case("properties")
def test_older_caller_struct_size(ctx):
    """An older caller's smaller struct_size: nothing written beyond it."""
    full = ctx.properties()
    for size in (ffi.offsetof("hal_device_properties_t", "kind"), ffi.offsetof("hal_device_properties_t", "peak_flops"),
                 ffi.offsetof("hal_device_properties_t", "relative_speed")):
        status, data = _call_with_size(ctx, size, size)
        assert status in (abi.OK, abi.INVALID_ARGUMENT), (f"struct_size {size}: {abi.status_name(status)} "
                                                          f"({ctx.p.last_error()})")
        touched = [i for i in range(size, len(data)) if data[i] != GUARD]
        assert not touched, (f"struct_size {size}: the plugin wrote {len(touched)} bytes beyond it (from offset "
                             f"{touched[0]}): it ignores struct_size")
        if status == abi.OK and size > ffi.offsetof("hal_device_properties_t", "kind"):
            props = ffi.cast("hal_device_properties_t*", ffi.from_buffer(bytearray(data)))
            assert ffi.string(props.name) == ffi.string(full.name), f"struct_size {size}: name not written"


@case("properties")
def test_newer_caller_struct_size(ctx):
    """A newer caller's larger struct_size: the known fields written, the rest untouched."""
    size = FULL + 32
    status, data = _call_with_size(ctx, size, size)
    assert status == abi.OK, f"struct_size {size}: {abi.status_name(status)} ({ctx.p.last_error()})"
    touched = [i for i in range(FULL, len(data)) if data[i] != GUARD]
    assert not touched, f"struct_size {size}: the plugin wrote beyond its own struct (offset {touched[0]})"
