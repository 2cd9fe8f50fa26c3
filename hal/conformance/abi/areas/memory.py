"""Memory (memory.h): alignment, sizes from 1 byte to near capacity, and the accounting memory_info shows
(an allocation lowers free, a free restores it, a thousand of them leak nothing)."""
from __future__ import annotations

import os

from hal.conformance.abi.case import Skip, case
from hal.conformance.abi.ffi import addr, at

MIB = 1 << 20
SLACK = 1 * MIB  # What accounting may round (pages, headers) without being a leak.


@case("memory")
def test_alignment(ctx):
    """Every allocation is aligned to 256 bytes, whatever its size, and pointers are distinct."""
    ptrs = [ctx.alloc(size) for size in (1, 3, 255, 256, 257, 4097, MIB + 1, 77)]
    bad = [hex(addr(p)) for p in ptrs if addr(p) % 256]
    assert not bad, f"memory_allocate returned pointers not aligned to 256 bytes: {', '.join(bad)}"
    assert len({addr(p) for p in ptrs}) == len(ptrs), "memory_allocate returned the same pointer twice"


@case("memory")
def test_sizes_round_trip(ctx):
    """Allocations of 1 B to 16 MiB hold what is written into all of their bytes."""
    for size in (1, 255, 256, 4099, MIB + 3, 16 * MIB):
        data = os.urandom(size)
        ptr = ctx.alloc(size)
        ctx.write(ptr, data)
        assert ctx.read(ptr, size) == data, f"{size} bytes written to a {size}-byte allocation came back different"
        ctx.free(ptr)


def _accounting(ctx):
    """Skips on a host device whose memory_info is the machine's RAM (it moves with every other process)."""
    free0, _ = ctx.p.memory_info(ctx.device)
    ptr = ctx.alloc(16 * MIB)
    ctx.write(ptr, bytes(16 * MIB))  # Touched, for plugins that count resident pages.
    free1, _ = ctx.p.memory_info(ctx.device)
    if free0 - free1 < 16 * MIB and ctx.is_host_memory():
        raise Skip("memory_info reports the machine's available RAM (a host device without its own limit, "
                   "e.g. cpu without mem=): its accounting cannot be checked")
    return free0, free1, ptr


@case("memory")
def test_memory_info_follows_allocations(ctx):
    """free drops by at least what was allocated, and comes back after memory_free."""
    free0, free1, ptr = _accounting(ctx)
    assert free0 - free1 >= 16 * MIB, (f"memory_info's free went from {free0} to {free1} after a 16 MiB "
                                       "allocation: it does not follow allocations")
    ctx.free(ptr)
    free2, _ = ctx.p.memory_info(ctx.device)
    assert free2 >= free0 - SLACK, f"free was {free0} before a 16 MiB allocation and {free2} after freeing it"


@case("memory")
def test_no_leak_over_many_allocations(ctx):
    """200 allocate / free pairs of 1 MiB leave memory_info's free where it was."""
    free0, _, ptr = _accounting(ctx)
    ctx.free(ptr)
    free0, _ = ctx.p.memory_info(ctx.device)
    for _ in range(200):
        ctx.free(ctx.alloc(MIB))
    free1, _ = ctx.p.memory_info(ctx.device)
    assert free1 >= free0 - SLACK, (f"free went from {free0} to {free1} over 200 allocate/free pairs of 1 MiB: "
                                    f"memory_free leaks ~{(free0 - free1) // 200} bytes each")


@case("memory")
def test_near_capacity(ctx):
    """One allocation of 3/4 of the free memory works, end to end; freeing it gives the memory back."""
    free0, _ = ctx.p.memory_info(ctx.device)
    if ctx.is_host_memory() or free0 > (4 << 30):
        raise Skip(f"{free0 >> 20} MiB free: too much to fill here (give the device a smaller capacity to test it)")
    size = free0 * 3 // 4 // 256 * 256
    ptr = ctx.alloc(size)
    tail = os.urandom(4096)
    end = at(ptr, size - 4096)
    ctx.write(end, tail)
    assert ctx.read(end, 4096) == tail, f"the last 4 KiB of a {size}-byte allocation did not hold their data"
    ctx.free(ptr)
    again = ctx.alloc(size)  # The memory came back: the same size fits again.
    ctx.free(again)
