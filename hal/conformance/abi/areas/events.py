"""Events (stream.h): never-recorded events are complete; record / query / synchronize follow the work they
captured; elapsed_time is milliseconds of wall time; a stream waiting on an event recorded on another holds
its work back."""
from __future__ import annotations

import os
import time

from hal.conformance.abi import ffi as abi
from hal.conformance.abi.case import case, expect_status
from hal.conformance.abi.ffi import ffi

POISON = 0xCD


@case("events")
def test_never_recorded_is_complete(ctx):
    """event_query and event_synchronize of an event never recorded succeed at once."""
    e = ctx.event()
    expect_status(ctx, ctx.p.api.event_query(e), abi.OK, "event_query of a never-recorded event")
    expect_status(ctx, ctx.p.api.event_synchronize(e), abi.OK, "event_synchronize of a never-recorded event")


@case("events")
def test_record_query_synchronize(ctx):
    """An event recorded behind held work: NOT_READY, then OK once the work ran; synchronize waits."""
    s = ctx.stream()
    e = ctx.event()
    gate = ctx.gate(s)
    ctx.p.check(ctx.p.api.event_record(e, s), "event_record")
    try:
        time.sleep(0.05)
        expect_status(ctx, ctx.p.api.event_query(e), abi.NOT_READY, "event_query of an event behind held work")
    finally:
        gate.set()
    expect_status(ctx, ctx.p.api.event_synchronize(e), abi.OK, "event_synchronize")
    expect_status(ctx, ctx.p.api.event_query(e), abi.OK, "event_query after event_synchronize")
    expect_status(ctx, ctx.p.api.stream_query(s), abi.OK,
                  "stream_query right after event_synchronize of the stream's last record")


@case("events")
def test_rerecord_replaces_the_point(ctx):
    """Recording again captures the new point: a completed event recorded behind held work is NOT_READY."""
    s = ctx.stream()
    e = ctx.event()
    ctx.p.check(ctx.p.api.event_record(e, s), "event_record")
    ctx.p.check(ctx.p.api.event_synchronize(e), "event_synchronize")
    gate = ctx.gate(s)
    ctx.p.check(ctx.p.api.event_record(e, s), "event_record")
    try:
        time.sleep(0.05)
        expect_status(ctx, ctx.p.api.event_query(e), abi.NOT_READY, "event_query after recording again")
    finally:
        gate.set()
    ctx.p.check(ctx.p.api.event_synchronize(e), "event_synchronize")


@case("events")
def test_elapsed_time_is_wall_milliseconds(ctx):
    """elapsed_time around a host function sleeping 200 ms reads between 0.3x and 3x its wall time in ms."""
    s = ctx.stream()
    start, end = ctx.event(abi.EVENT_TIMING), ctx.event(abi.EVENT_TIMING)
    outer = time.monotonic()
    ctx.p.check(ctx.p.api.event_record(start, s), "event_record")
    times = ctx.sleeper(s, 0.2)
    ctx.p.check(ctx.p.api.event_record(end, s), "event_record")
    ctx.p.check(ctx.p.api.event_synchronize(end), "event_synchronize")
    outer = (time.monotonic() - outer) * 1000  # At least the events' interval, however loaded the machine.
    ms = ctx.p.elapsed_ms(start, end)
    wall = (times["end"] - times["start"]) * 1000  # At most the events' interval.
    assert 0.3 * wall <= ms <= 3 * outer, (f"event_elapsed_time says {ms:g} around {wall:.0f} ms of wall time: "
                                           "not milliseconds (microseconds? seconds?)")
    untimed = ctx.event(0)
    ctx.p.check(ctx.p.api.event_record(untimed, s), "event_record")
    ctx.p.check(ctx.p.api.event_synchronize(untimed), "event_synchronize")
    out = ffi.new("float*")
    expect_status(ctx, ctx.p.api.event_elapsed_time(start, untimed, out), abi.INVALID_ARGUMENT,
                  "event_elapsed_time with an event created without HAL_EVENT_FLAG_TIMING")
    never = ctx.event(abi.EVENT_TIMING)
    expect_status(ctx, ctx.p.api.event_elapsed_time(start, never, out), abi.INVALID_ARGUMENT,
                  "event_elapsed_time with a never-recorded event")


@case("events")
def test_elapsed_time_not_ready(ctx):
    """elapsed_time to an event that has not completed is NOT_READY."""
    s = ctx.stream()
    start, end = ctx.event(abi.EVENT_TIMING), ctx.event(abi.EVENT_TIMING)
    ctx.p.check(ctx.p.api.event_record(start, s), "event_record")
    gate = ctx.gate(s)
    ctx.p.check(ctx.p.api.event_record(end, s), "event_record")
    out = ffi.new("float*")
    try:
        time.sleep(0.05)
        expect_status(ctx, ctx.p.api.event_elapsed_time(start, end, out), abi.NOT_READY,
                      "event_elapsed_time to an event behind held work")
    finally:
        gate.set()
    ctx.p.check(ctx.p.api.event_synchronize(end), "event_synchronize")


@case("events")
def test_cross_stream_wait(ctx):
    """Work on s2 waiting on an event recorded on s1 runs after s1's work, and sees its result."""
    s1, s2 = ctx.stream(), ctx.stream()
    e = ctx.event()
    n = 1 << 20
    data = os.urandom(n)
    a = ctx.alloc(n)
    ctx.write(a, bytes([POISON]) * n, s1)
    gate = ctx.gate(s1)
    ctx.p.check(ctx.p.api.memcpy_h2d_async(s1, a, ffi.from_buffer(data), n), "memcpy_h2d_async")
    ctx.p.check(ctx.p.api.event_record(e, s1), "event_record")
    ctx.p.check(ctx.p.api.stream_wait_event(s2, e), "stream_wait_event")
    out = bytearray([POISON]) * n
    ctx.p.check(ctx.p.api.memcpy_d2h_async(s2, ffi.from_buffer(out), a, n), "memcpy_d2h_async")
    try:
        time.sleep(0.05)
        expect_status(ctx, ctx.p.api.stream_query(s2), abi.NOT_READY, "stream_query of a stream waiting on an event")
        assert out == bytearray([POISON]) * n, "work queued after stream_wait_event ran before the event completed"
    finally:
        gate.set()
    ctx.sync(s2)
    assert out == data, "s2 read the buffer before s1's copy, which it waited for, had landed"


@case("events")
def test_destroyed_event_still_orders(ctx):
    """Destroying an event a stream waits on is allowed; the wait still holds until the work completes."""
    s1, s2 = ctx.stream(), ctx.stream()
    e = ctx.p.event(ctx.device)
    times = ctx.sleeper(s1, 0.2)
    ctx.p.check(ctx.p.api.event_record(e, s1), "event_record")
    ctx.p.check(ctx.p.api.stream_wait_event(s2, e), "stream_wait_event")
    ctx.p.check(ctx.p.api.event_destroy(e), "event_destroy")
    marks: dict = {}
    ctx.host_func(s2, lambda: marks.setdefault("at", time.monotonic()))
    ctx.sync(s2)
    assert "end" in times and marks["at"] >= times["end"], "the wait on a destroyed event let s2 run early"


@case("events")
def test_cross_device_wait(ctx):
    """stream_wait_event with an event of another device of the plugin (stream.h allows it)."""
    from hal.conformance.abi.case import Skip
    if ctx.count < 2:
        raise Skip("one device")
    other = 1 if ctx.device != 1 else 0
    s_other, s = ctx.stream(other), ctx.stream()
    e = ctx.event(device=other)
    times = ctx.sleeper(s_other, 0.2)
    ctx.p.check(ctx.p.api.event_record(e, s_other), "event_record")
    ctx.p.check(ctx.p.api.stream_wait_event(s, e), "stream_wait_event")
    marks: dict = {}
    ctx.host_func(s, lambda: marks.setdefault("at", time.monotonic()))
    ctx.sync(s)
    assert "end" in times and marks["at"] >= times["end"], "a wait on another device's event did not hold the stream"
