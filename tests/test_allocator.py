"""The per-device caching allocator (csrc/runtime/allocator.cpp), through hal._C, on the fixture plugin.

Each test runs in a fresh interpreter (the runtime is process-global): `d` is fixture:0, `stats()` its
memory_stats(). Sizes: small requests (<= 1 MiB) round to 512 B inside 2 MiB segments; large ones round
to 512 B in segments rounded to 2 MiB."""
from __future__ import annotations

import pytest

from plugin_fixtures import fixture_plugins, init_snippet, run_hal  # noqa: F401 (fixture)

pytest.importorskip("hal._C")

MiB = 1 << 20


def run(fixture_plugins, body: str, capacity: int = 64 * MiB):
    prelude = init_snippet([fixture_plugins["good"]], use_env=False,
                           configs={"fixture": f"capacity={capacity}"})
    prelude += "d = _C.get_device(0)\nstats = d.memory_stats\n"
    return run_hal(prelude + body)


def test_free_then_allocate_reuses_the_block(fixture_plugins):
    r = run(fixture_plugins, """
a = d.allocate(1000); p = a.ptr; a.free(); a.free()   # free is idempotent
b = d.allocate(1000)
emit([b.ptr == p, stats()])
""")
    same, s = r
    assert same
    assert s["num_cache_hits"] == 1 and s["num_raw_allocs"] == 1 and s["num_allocs"] == 2 and s["num_frees"] == 1


def test_small_blocks_split_one_segment_and_merge_back(fixture_plugins):
    r = run(fixture_plugins, """
a = d.allocate(1000); b = d.allocate(3000)
split = [b.ptr - a.ptr, stats()["reserved_bytes"], stats()["num_raw_allocs"], stats()["allocated_bytes"]]
base = a.ptr
a.free(); b.free()
c = d.allocate(1 << 20)                               # fits only if the two blocks merged with the rest
emit([split, c.ptr == base, stats()["num_raw_allocs"]])
""")
    split, merged, raw = r
    assert split == [1024, 2 * MiB, 1, 1024 + 3072]
    assert merged and raw == 1


def test_large_blocks_round_segments_and_split(fixture_plugins):
    r = run(fixture_plugins, """
a = d.allocate(5 * 2**20 + 1)
first = [stats()["reserved_bytes"], stats()["allocated_bytes"]]
base = a.ptr; a.free()
b = d.allocate(3 * 2**20)          # best fit in the 6 MiB segment; remainder 3 MiB > 1 MiB: split
c = d.allocate(3 * 2**20)          # the remainder
emit([first, b.ptr == base, c.ptr - base, stats()["num_raw_allocs"]])
""")
    first, reused, offset, raw = r
    assert first == [6 * MiB, 6 * MiB]  # remainder (1 MiB - 512) is too small to split off a large block
    assert reused and offset == 3 * MiB and raw == 1


def test_zero_bytes_gives_null_without_plugin_call(fixture_plugins):
    assert run(fixture_plugins, """
a = d.allocate(0)
emit([a.ptr, stats()["num_raw_allocs"], stats()["num_allocs"]])
""") == [0, 0, 0]


def test_blocks_are_reused_only_on_their_stream(fixture_plugins):
    r = run(fixture_plugins, """
s1, s2 = _C.Stream(d), _C.Stream(d)
a = d.allocate(4096, s1); p = a.ptr; a.free()
b = d.allocate(4096, s2)
c = d.allocate(4096, s1)
emit([b.ptr != p, c.ptr == p, b.stream == s2, stats()["num_raw_allocs"]])
""")
    assert r == [True, True, True, 2]


def test_record_stream_defers_reuse_until_the_other_stream_passes_the_free(fixture_plugins):
    r = run(fixture_plugins, """
import threading
s = d.default_stream(); other = _C.Stream(d)
gate = threading.Event()
other.launch_host_func(lambda: gate.wait(10))        # |other| is busy until the gate opens
a = d.allocate(4096); p = a.ptr
a.record_stream(other)
a.free()
b = d.allocate(4096)                                 # must not get p: |other| has not passed the free
pending = [b.ptr != p, stats()["active_blocks"], stats()["allocated_bytes"]]
gate.set(); other.synchronize()
c = d.allocate(4096)                                 # now it may
emit([pending, c.ptr == p, stats()["active_blocks"]])
""")
    pending, reused, active = r
    assert pending == [True, 2, 4096]
    assert reused and active == 2


def test_without_record_stream_the_block_is_reused_at_once(fixture_plugins):
    r = run(fixture_plugins, """
import threading
other = _C.Stream(d); gate = threading.Event()
other.launch_host_func(lambda: gate.wait(10))
a = d.allocate(4096); p = a.ptr; a.free()
b = d.allocate(4096)
gate.set()
emit(b.ptr == p)
""")
    assert r is True


def test_out_of_memory_empties_the_cache_and_retries(fixture_plugins):
    r = run(fixture_plugins, """
a = d.allocate(3 * 2**20); a.free()                  # 4 MiB segment stays cached
b = d.allocate(6 * 2**20)                            # 4 + 6 > 8 MiB: the plugin says OOM; retry succeeds
s = stats()
emit([s["num_ooms"], s["num_raw_frees"], s["reserved_bytes"], b.nbytes, s["num_alloc_retries"]])
""", capacity=8 * MiB)
    assert r == [0, 1, 6 * MiB, 6 * MiB, 1]


def test_true_out_of_memory_names_device_sizes_and_capacity(fixture_plugins):
    r = run(fixture_plugins, """
a = d.allocate(5 * 2**20)                           # 6 MiB segment
b = d.allocate(1000); c = d.allocate(1000); c.free() # 2 MiB segment, partly cached
try:
    d.allocate(7 * 2**20)
    emit(None)
except _C.OutOfMemory as e:
    emit([str(e), e.code, e.device, isinstance(e, MemoryError), isinstance(e, _C.HalError), stats()["num_ooms"]])
""", capacity=8 * MiB)
    message, code, device, is_memory_error, is_hal_error, ooms = r
    assert message.startswith("fixture:0: out of memory: tried to allocate 7.00 MiB (7340032 bytes); "
                              "6.00 MiB in use, 2.00 MiB cached, 8.00 MiB capacity")
    assert "requested 8388608 bytes" in message          # the plugin's own message follows
    assert (code, device, is_memory_error, is_hal_error, ooms) == ("HAL_STATUS_OUT_OF_MEMORY", "fixture:0",
                                                                   True, True, 1)


def test_stats_add_up_and_peaks_reset(fixture_plugins):
    r = run(fixture_plugins, """
blocks = [d.allocate(n) for n in (100, 5000, 2**20, 3 * 2**20)]
mid = stats()
for b in blocks: b.free()
after = stats()
d.reset_peak_memory_stats()
reset = stats()
d.empty_cache()
empty = stats()
emit([mid, after, reset, empty])
""")
    mid, after, reset, empty = r
    # 3 MiB takes its whole 4 MiB segment: a large remainder is split off only when > 1 MiB.
    assert mid["allocated_bytes"] == 512 + 5120 + MiB + 4 * MiB
    assert mid["reserved_bytes"] >= mid["allocated_bytes"] and mid["active_blocks"] == 4
    assert after["allocated_bytes"] == 0 and after["active_blocks"] == 0
    assert after["allocated_bytes_peak"] == mid["allocated_bytes"] and after["reserved_bytes"] == mid["reserved_bytes"]
    assert after["num_allocs"] == after["num_frees"] == 4
    assert reset["allocated_bytes_peak"] == 0 and reset["reserved_bytes_peak"] == mid["reserved_bytes"]
    assert empty["reserved_bytes"] == 0 and empty["num_raw_frees"] == empty["num_raw_allocs"]


def test_reset_accumulated_stats_keeps_current_values_and_peaks(fixture_plugins):
    r = run(fixture_plugins, """
a = d.allocate(1000); b = d.allocate(1000); b.free()
before = stats()
d.reset_accumulated_memory_stats()
after = stats()
c = d.allocate(1000)
emit([before, after, stats()])
""")
    before, after, later = r
    counters = ["num_allocs", "num_frees", "num_raw_allocs", "num_raw_frees", "num_ooms", "num_cache_hits",
                "num_alloc_retries"]
    assert before["num_allocs"] == 2 and before["num_frees"] == 1 and before["num_raw_allocs"] == 1
    assert all(after[k] == 0 for k in counters)
    assert {k: v for k, v in after.items() if k not in counters} == {k: v for k, v in before.items()
                                                                        if k not in counters}
    assert later["num_allocs"] == 1 and later["num_cache_hits"] == 1 and later["active_blocks"] == 2
    assert later["allocated_blocks"] == 2 and later["segments"] == 1


def test_find_allocation_accepts_interior_pointers(fixture_plugins):
    r = run(fixture_plugins, """
a = d.allocate(1000); b = d.allocate(3 * 2**20); c = d.allocate(600); c_ptr = c.ptr; c.free()
emit([a.ptr, b.ptr, d.find_allocation(a.ptr), d.find_allocation(a.ptr + 999), d.find_allocation(a.ptr + 1023),
      d.find_allocation(b.ptr + 3 * 2**20 - 1), d.find_allocation(c_ptr), d.find_allocation(c_ptr + 10),
      d.find_allocation(1)])
""")
    a, b, exact, inside, rounded_end, large, freed, freed_inside, unknown = r
    assert exact == inside == rounded_end == [a, 1024]       # (start, rounded size)
    assert large == [b, 4 * MiB]                             # 3 MiB keeps its whole 4 MiB segment
    assert freed is None and freed_inside is None and unknown is None


def test_raw_allocations_bypass_the_cache(fixture_plugins):
    r = run(fixture_plugins, """
p = d.raw_allocate(1000)
free_during = d.memory_info()[0]
d.raw_free(p)
after = [d.memory_info()[0], stats()["num_raw_allocs"]]
a = d.allocate(4096)
host = d.map(a.ptr, 4096)                           # the fixture maps identically
d.unmap(host, 4096)
emit([p != 0, free_during, *after, host == a.ptr])
""", capacity=8 * MiB)
    assert r == [True, 8 * MiB - 1000, 8 * MiB, 0, True]


def test_multithreaded_stress_ends_balanced(fixture_plugins):
    r = run(fixture_plugins, """
import random, threading
streams = [d.default_stream(), _C.Stream(d), _C.Stream(d)]
errors = []
def work(seed):
    rng = random.Random(seed)
    live = []
    try:
        for i in range(400):
            if live and rng.random() < 0.45:
                live.pop(rng.randrange(len(live))).free()
            else:
                n = rng.choice([rng.randint(1, 4096), rng.randint(4097, 2**20), rng.randint(2**20, 3 * 2**20)])
                a = d.allocate(n, rng.choice(streams))
                if rng.random() < 0.2:
                    a.record_stream(rng.choice(streams))
                live.append(a)
        for a in live: a.free()
    except Exception as e:
        errors.append(repr(e))
threads = [threading.Thread(target=work, args=(s,)) for s in range(4)]
for t in threads: t.start()
for t in threads: t.join()
d.synchronize()
d.empty_cache()
emit([errors, stats()])
""", capacity=1 << 30)
    errors, s = r
    assert errors == []
    assert s["allocated_bytes"] == 0 and s["active_blocks"] == 0
    assert s["num_allocs"] == s["num_frees"] > 800
    assert s["reserved_bytes"] == 0 and s["num_raw_allocs"] == s["num_raw_frees"]
    assert s["num_cache_hits"] > 0


def test_benchmark_hook(fixture_plugins):
    cached, raw = run(fixture_plugins, """
emit([_C._bench_alloc_pairs(d, 4096, 1000), _C._bench_alloc_pairs(d, 4096, 1000, raw=True)])
""")
    assert cached > 0 and raw > 0
