"""Pinned host memory (memory.h, optional): host_allocate gives distinct, host-addressable buffers that copy
to and from the device; host_free(NULL) does nothing."""
from __future__ import annotations

import os

from hal.conformance.abi import ffi as abi
from hal.conformance.abi.case import case, expect_status, require
from hal.conformance.abi.ffi import ffi


@case("pinned")
def test_buffers_are_distinct_and_host_addressable(ctx):
    """Four pinned buffers each hold their own pattern."""
    require(ctx, "host_allocate", "host_free")
    sizes = (1, 4096, 1 << 20, 3 << 20)
    bufs = [ctx.host_alloc(size) for size in sizes]
    for i, (ptr, size) in enumerate(zip(bufs, sizes)):
        ffi.memmove(ptr, bytes([i + 1]) * size, size)
    for i, (ptr, size) in enumerate(zip(bufs, sizes)):
        assert bytes(ffi.buffer(ptr, size)) == bytes([i + 1]) * size, \
            f"pinned buffer {i} ({size} bytes) lost its contents: buffers overlap"


@case("pinned")
def test_copies_through_pinned_memory(ctx):
    """h2d from and d2h into pinned memory, asynchronously, then synchronize."""
    require(ctx, "host_allocate", "host_free")
    n = 4 << 20
    src, dst = ctx.host_alloc(n), ctx.host_alloc(n)
    data = os.urandom(n)
    ffi.memmove(src, data, n)
    ffi.memmove(dst, b"\xcd" * n, n)
    s = ctx.stream()
    ptr = ctx.alloc(n)
    ctx.p.check(ctx.p.api.memcpy_h2d_async(s, ptr, src, n), "memcpy_h2d_async")
    ctx.p.check(ctx.p.api.memcpy_d2h_async(s, dst, ptr, n), "memcpy_d2h_async")
    ctx.sync(s)
    assert bytes(ffi.buffer(dst, n)) == data, "a round trip through pinned buffers returned other bytes"


@case("pinned")
def test_free_null(ctx):
    """host_free(NULL) does nothing and succeeds."""
    require(ctx, "host_allocate", "host_free")
    expect_status(ctx, ctx.p.api.host_free(ffi.NULL), abi.OK, "host_free(NULL)")
