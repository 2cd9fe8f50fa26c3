"""Copies (stream.h): host to device, device to host and device to device, into poisoned memory so a copy
that did nothing or landed elsewhere fails; sizes from 0, unaligned offsets; memset and peer copies if
present."""
from __future__ import annotations

import os

from hal.conformance.abi.case import Skip, case, require
from hal.conformance.abi.ffi import at, ffi

POISON = 0xCD


@case("copies")
def test_host_device_round_trip(ctx):
    """h2d then d2h of 0 B to 8 MiB returns the data."""
    s = ctx.stream()
    for size in (0, 1, 255, 4096, (1 << 20) + 3, 8 << 20):
        ptr = ctx.alloc(max(size, 1))
        data = os.urandom(size)
        ctx.write(ptr, data, s)
        assert ctx.read(ptr, size, s) == data, f"{size} bytes: h2d then d2h returned other bytes"
        ctx.free(ptr)


@case("copies")
def test_zero_size_copies_are_no_ops(ctx):
    """A 0-byte copy of each kind succeeds and changes nothing."""
    s = ctx.stream()
    a, b = ctx.alloc(256), ctx.alloc(256)
    ctx.write(a, b"\x01" * 256, s)
    ctx.write(b, b"\x02" * 256, s)
    host = bytearray(b"\x03" * 16)
    api = ctx.p.api
    zeros = bytes(16)
    ctx.p.check(api.memcpy_h2d_async(s, a, ffi.from_buffer(zeros), 0), "memcpy_h2d_async")
    ctx.p.check(api.memcpy_d2h_async(s, ffi.from_buffer(host), a, 0), "memcpy_d2h_async")
    ctx.p.check(api.memcpy_d2d_async(s, a, b, 0), "memcpy_d2d_async")
    ctx.sync(s)
    assert ctx.read(a, 256, s) == b"\x01" * 256 and host == b"\x03" * 16, "a 0-byte copy wrote something"


@case("copies")
def test_device_to_device_with_offsets(ctx):
    """d2d between base+offset pointers copies exactly that range; the bytes around it stay poisoned."""
    n = 1 << 16
    src = os.urandom(n)
    s = ctx.stream()
    a, b = ctx.alloc(n), ctx.alloc(n)
    ctx.write(a, src, s)
    ctx.write(b, bytes([POISON]) * n, s)
    ctx.p.check(ctx.p.api.memcpy_d2d_async(s, at(b, 100), at(a, 5001), 1000), "memcpy_d2d_async")
    out = ctx.read(b, n, s)
    assert out[100:1100] == src[5001:6001], "d2d from a+5001 to b+100: the destination range holds other bytes"
    assert out[:100] == bytes([POISON]) * 100 and out[1100:] == bytes([POISON]) * (n - 1100), \
        "d2d with offsets wrote outside its destination range (offsets ignored?)"


@case("copies")
def test_unaligned_host_copies(ctx):
    """h2d and d2h at odd offsets of an allocation and of the host buffer."""
    n = 8192
    s = ctx.stream()
    ptr = ctx.alloc(n)
    ctx.write(ptr, bytes([POISON]) * n, s)
    data = os.urandom(4093)
    host = bytearray(b"\0" * 3 + data)
    ctx.p.check(ctx.p.api.memcpy_h2d_async(s, at(ptr, 7), ffi.from_buffer(host) + 3, len(data)), "memcpy_h2d_async")
    ctx.sync(s)
    out = ctx.read(ptr, n, s)
    assert out[7:7 + len(data)] == data and out[:7] == bytes([POISON]) * 7 and \
        out[7 + len(data):] == bytes([POISON]) * (n - 7 - len(data)), "h2d to base+7 landed elsewhere"
    back = bytearray(b"\xee" * (len(data) + 5))
    ctx.p.check(ctx.p.api.memcpy_d2h_async(s, ffi.from_buffer(back) + 5, at(ptr, 7), len(data)), "memcpy_d2h_async")
    ctx.sync(s)
    assert back[5:] == data and back[:5] == b"\xee" * 5, "d2h from base+7 to an odd host address"


@case("copies")
def test_memset(ctx):
    """memset_async (optional) sets exactly its range."""
    require(ctx, "memset_async")
    s = ctx.stream()
    ptr = ctx.alloc(1000)
    ctx.write(ptr, b"\x07" * 1000, s)
    ctx.p.check(ctx.p.api.memset_async(s, at(ptr, 10), 9, 10), "memset_async")
    out = ctx.read(ptr, 1000, s)
    assert out[10:20] == b"\x09" * 10 and out[:10] == b"\x07" * 10 and out[20:] == b"\x07" * 980, \
        "memset_async of bytes 10..20 set other bytes"


@case("copies")
def test_peer_copy(ctx):
    """memcpy_peer_async (optional) between device 0 and another device of the plugin."""
    require(ctx, "memcpy_peer_async")
    if ctx.count < 2:
        raise Skip("one device: no peer to copy to")
    other = 1 if ctx.device != 1 else 0
    n = (1 << 20) + 17
    src = os.urandom(n)
    s = ctx.stream()
    a, b = ctx.alloc(n), ctx.alloc(n, device=other)
    ctx.write(a, src, s)
    ctx.write(b, bytes([POISON]) * n, ctx.stream(other))
    ctx.p.check(ctx.p.api.memcpy_peer_async(s, b, other, a, ctx.device, n), "memcpy_peer_async")
    ctx.sync(s)
    assert ctx.read(b, n, ctx.stream(other)) == src, f"peer copy device {ctx.device} -> {other} differs"
