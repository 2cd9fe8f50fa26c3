"""Streams (stream.h): in-order execution, query, synchronize that waits for the work already running, and
destroy that waits for queued work. Known work comes from a host function (launch_host_func) that blocks
or sleeps; without one, from large copies."""
from __future__ import annotations

import os
import time

from hal.conformance.abi import ffi as abi
from hal.conformance.abi.case import case, deadline_loop, expect_status
from hal.conformance.abi.ffi import ffi

POISON = 0xCD
BIG = 32 << 20


@case("streams")
def test_in_order(ctx):
    """h2d, d2d, d2h queued back to back on one stream without waits: each sees the one before."""
    data = os.urandom(BIG)
    s = ctx.stream()
    a, b = ctx.alloc(BIG), ctx.alloc(BIG)
    out = bytearray([POISON]) * BIG
    api = ctx.p.api
    ctx.p.check(api.memcpy_h2d_async(s, a, ffi.from_buffer(data), BIG), "memcpy_h2d_async")
    ctx.p.check(api.memcpy_d2d_async(s, b, a, BIG), "memcpy_d2d_async")
    ctx.p.check(api.memcpy_d2h_async(s, ffi.from_buffer(out), b, BIG), "memcpy_d2h_async")
    ctx.sync(s)
    assert out == data, "three copies queued in order on one stream did not compose"


@case("streams")
def test_query_sees_pending_work(ctx):
    """stream_query says NOT_READY while queued work waits, OK once it ran; nothing runs ahead of it."""
    s = ctx.stream()
    ptr = ctx.alloc(4096)
    data = os.urandom(4096)
    ctx.write(ptr, data, s)
    expect_status(ctx, ctx.p.api.stream_query(s), abi.OK, "stream_query on an idle stream")
    gate = ctx.gate(s)
    out = bytearray([POISON]) * 4096
    ctx.p.check(ctx.p.api.memcpy_d2h_async(s, ffi.from_buffer(out), ptr, 4096), "memcpy_d2h_async")
    try:
        time.sleep(0.05)
        expect_status(ctx, ctx.p.api.stream_query(s), abi.NOT_READY, "stream_query while a host function holds it")
        assert out == bytearray([POISON]) * 4096, "a d2h copy ran before the host function queued ahead of it"
    finally:
        gate.set()
    for _ in deadline_loop(ctx.timeout / 2):
        if ctx.p.api.stream_query(s) != abi.NOT_READY:
            break
    expect_status(ctx, ctx.p.api.stream_query(s), abi.OK, "stream_query after the work ran")
    assert out == data, "stream_query said OK before the queued d2h copy had landed"


def _slow_copies(ctx, s, ptr, size: int) -> tuple[bytes, bytearray]:
    """Without launch_host_func, known work is large copies: h2d of `size` random bytes, then d2h of them
    into a poisoned buffer. Returns (what must arrive, where it arrives)."""
    data, out = os.urandom(size), bytearray([POISON]) * size
    ctx._keep += [data, out]  # Alive until the cleanup synchronized the stream.
    ctx.p.check(ctx.p.api.memcpy_h2d_async(s, ptr, ffi.from_buffer(data), size), "memcpy_h2d_async")
    ctx.p.check(ctx.p.api.memcpy_d2h_async(s, ffi.from_buffer(out), ptr, size), "memcpy_d2h_async")
    return data, out


@case("streams")
def test_synchronize_waits_for_running_work(ctx):
    """stream_synchronize returns only after the work already running (a host function sleeping 0.3 s, or
    without launch_host_func a 64 MiB round trip), and the copy queued behind it."""
    s = ctx.stream()
    if not ctx.p.has("launch_host_func"):
        ptr = ctx.alloc(BIG * 2)
        data, out = _slow_copies(ctx, s, ptr, BIG * 2)
        ctx.sync(s)
        assert out == data, "stream_synchronize returned before the copies queued on the stream had landed"
        return
    ptr = ctx.alloc(4096)
    data = os.urandom(4096)
    ctx.write(ptr, data, s)
    times = ctx.sleeper(s, 0.3)
    time.sleep(0.05)  # Running now, not merely queued.
    out = bytearray([POISON]) * 4096
    ctx.p.check(ctx.p.api.memcpy_d2h_async(s, ffi.from_buffer(out), ptr, 4096), "memcpy_d2h_async")
    ctx.sync(s)
    returned = time.monotonic()
    assert "end" in times and times["end"] <= returned, "stream_synchronize returned while its host function ran"
    assert out == data, "stream_synchronize returned before the d2h copy queued behind the running work"


@case("streams")
def test_destroy_waits_for_queued_work(ctx):
    """stream_destroy of a stream with queued work (a 0.3 s host function, then a copy; or without
    launch_host_func a 64 MiB round trip) waits for it."""
    s = ctx.p.stream(ctx.device)  # Destroyed here, not by the cleanup.
    if not ctx.p.has("launch_host_func"):
        ptr = ctx.alloc(BIG * 2)
        data, out = _slow_copies(ctx, s, ptr, BIG * 2)
        ctx.p.check(ctx.p.api.stream_destroy(s), "stream_destroy")
        if out != data:
            ctx.abandon(ptr, data, out)
            raise AssertionError("stream_destroy returned before the copies queued on it had landed")
        return
    ptr = ctx.alloc(4096)
    data = os.urandom(4096)
    times = ctx.sleeper(s, 0.3)
    ctx.p.check(ctx.p.api.memcpy_h2d_async(s, ptr, ffi.from_buffer(data), 4096), "memcpy_h2d_async")
    ctx.p.check(ctx.p.api.stream_destroy(s), "stream_destroy")
    if "end" not in times:
        ctx.abandon(ptr, data)
        raise AssertionError("stream_destroy returned before the host function queued on it had run")
    assert ctx.read(ptr, 4096) == data, "stream_destroy returned before the copy queued on it had landed"


@case("streams")
def test_many_streams(ctx):
    """64 streams at once, each with a copy; then all destroyed."""
    ptr = ctx.alloc(64 * 256)
    streams = [ctx.stream() for _ in range(64)]
    sources = [bytes([i]) * 256 for i in range(64)]  # Alive until the copies complete.
    for i, s in enumerate(streams):
        ctx.p.check(ctx.p.api.memcpy_h2d_async(s, abi.at(ptr, 256 * i), ffi.from_buffer(sources[i]), 256),
                    "memcpy_h2d_async")
    for s in streams:
        ctx.destroy_stream(s)
    assert ctx.read(ptr, 64 * 256) == b"".join(bytes([i]) * 256 for i in range(64)), \
        "copies on 64 streams, each destroyed after, did not all land"
