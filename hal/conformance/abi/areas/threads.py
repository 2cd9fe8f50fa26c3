"""Threading (plugin.h: every entry may be called from any thread at once): many threads allocating,
copying and freeing, streams and events made and used concurrently; each repeated, since racy faults show
only sometimes."""
from __future__ import annotations

import os
import threading

from hal.conformance.abi import ffi as abi
from hal.conformance.abi.case import case
from hal.conformance.abi.ffi import ffi

THREADS, ROUNDS = 8, 3


def _in_threads(fn, threads: int = THREADS) -> list[str]:
    errors: list[str] = []
    start = threading.Barrier(threads)

    def body(i: int):
        try:
            start.wait()
            fn(i)
        except Exception as e:  # Reported with the thread that saw it.
            errors.append(f"thread {i}: {e}")

    workers = [threading.Thread(target=body, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return errors


@case("threading")
def test_concurrent_allocate_copy_free(ctx):
    """8 threads x 25 rounds: allocate, write a pattern of their own, read it back, free; 3 times over."""
    p, api = ctx.p, ctx.p.api

    def work(i: int):
        stream = p.stream(ctx.device)
        try:
            for r in range(25):
                size = 4096 * (1 + (i + r) % 7)
                data = bytes([(i * 31 + r) % 256]) * (size - 1) + bytes([i])
                ptr = p.allocate(ctx.device, size)
                try:
                    out = bytearray(size)
                    p.check(api.memcpy_h2d_async(stream, ptr, ffi.from_buffer(data), size), "memcpy_h2d_async")
                    p.check(api.memcpy_d2h_async(stream, ffi.from_buffer(out), ptr, size), "memcpy_d2h_async")
                    p.check(api.stream_synchronize(stream), "stream_synchronize")
                    assert out == data, f"round {r}: read back another thread's data (or none) at {hex(abi.addr(ptr))}"
                finally:
                    p.free(ctx.device, ptr)
        finally:
            api.stream_destroy(stream)

    for round_ in range(ROUNDS):
        errors = _in_threads(work)
        assert not errors, f"run {round_ + 1} of {ROUNDS}: " + "; ".join(errors[:4])


@case("threading")
def test_concurrent_streams_and_events(ctx):
    """8 threads x 20: create a stream and an event, copy, record, wait across, synchronize, destroy."""
    p, api = ctx.p, ctx.p.api
    shared = ctx.alloc(THREADS * 4096)
    data = os.urandom(THREADS * 4096)

    def work(i: int):
        for r in range(20):
            s1, s2 = p.stream(ctx.device), p.stream(ctx.device)
            e = p.event(ctx.device)
            try:
                part, mine = abi.at(shared, 4096 * i), data[4096 * i:4096 * (i + 1)]  # Alive until synchronized.
                p.check(api.memcpy_h2d_async(s1, part, ffi.from_buffer(mine), 4096), "memcpy_h2d_async")
                p.check(api.event_record(e, s1), "event_record")
                p.check(api.stream_wait_event(s2, e), "stream_wait_event")
                out = bytearray(4096)
                p.check(api.memcpy_d2h_async(s2, ffi.from_buffer(out), part, 4096), "memcpy_d2h_async")
                p.check(api.stream_synchronize(s2), "stream_synchronize")
                assert out == mine, f"round {r}: s2 read before s1's copy landed"
            finally:
                api.event_destroy(e)
                api.stream_destroy(s1)
                api.stream_destroy(s2)

    for round_ in range(ROUNDS):
        errors = _in_threads(work)
        assert not errors, f"run {round_ + 1} of {ROUNDS}: " + "; ".join(errors[:4])
