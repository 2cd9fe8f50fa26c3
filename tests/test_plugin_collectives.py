"""The bundled plugins' shared-memory collectives (devices/common/sw_collective.c) through hal._C.Communicator:
worlds of 2 to 4 processes on cpu:0 and on emu:0, driven by the conformance suite's workers
(hal/conformance/collectives.py), each running many checks. No test leaves a /dev/shm segment behind."""
from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest

from hal import _C
from hal.conformance.collectives import (check_bad_arguments, inputs, leftover_segments, run_world)

pytestmark = pytest.mark.needs_native

DEVICES = ["cpu:0", "emu:0"]
# Small slots make chunk boundaries cheap to cross: 4 KiB holds 1024 f32 (512 f64, 4096 i8) elements, so
# 1025 is one chunk + 1 for f32 and 5000 several chunks for every dtype.
SMALL_SLOTS = {"HAL_SW_COMM_SLOT_BYTES": "4096"}
COUNTS = "0,1,7,1025,5000"
# The two data paths: the shared-memory slots (the default; small ones, to cross chunk boundaries) and
# single-copy (cross-memory attach; =1 makes init fail where it cannot work, so a passing run used it; auto
# takes it where every rank reaches every other, else the slots).
PATHS = {"direct": {"HAL_SW_COMM_DIRECT": "1"}, "slots": SMALL_SLOTS,
         "auto": {"HAL_SW_COMM_DIRECT": "auto", **SMALL_SLOTS}}


def run_on_path(path: str, *args, env=None, **kwargs):
    results = run_world(*args, env={**PATHS[path], **(env or {})}, **kwargs)
    if path == "direct" and any("single-copy path cannot work here" in out for _, out in results):
        pytest.skip(f"cross-memory attach is not allowed on this host: {results[0][1].strip()[-300:]}")
    return results


@pytest.fixture(autouse=True)
def no_segment_left():
    yield
    assert not leftover_segments(), f"left in /dev/shm: {leftover_segments()}"


def device(name: str):
    import hal
    return hal.device(name)._native


def assert_all_ok(results):
    for rank, (code, out) in enumerate(results):
        assert code == 0 and "OK" in out, f"rank {rank} exited {code}:\n{out}"


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("name", DEVICES)
@pytest.mark.parametrize("nranks", [2, 3, 4])
def test_every_op_dtype_and_count_matches_numpy(name, nranks, path):
    assert_all_ok(run_on_path(path, name, nranks, "operations", extra=["--counts", COUNTS]))


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("name", DEVICES)
def test_tensors_larger_than_the_default_slots_stream_through_in_chunks(name, path):
    count = 3 * (2 << 20) // 4 + 1  # Three chunks of f32 at the default 2 MiB slots, and one element.
    assert_all_ok(run_on_path(path, name, 2, "large", extra=["--counts", str(count)],
                              env={"HAL_SW_COMM_SLOT_BYTES": str(2 << 20)}))


@pytest.mark.parametrize("name", DEVICES)
def test_bad_arguments_raise_at_the_call_naming_them(name):
    check_bad_arguments(name)


def test_a_malformed_slot_size_is_refused_naming_the_variable(monkeypatch):
    monkeypatch.setenv("HAL_SW_COMM_SLOT_BYTES", "lots")
    with pytest.raises(_C.InvalidArgument, match="HAL_SW_COMM_SLOT_BYTES='lots'"):
        _C.Communicator(device("cpu:0"), 1, _C.comm_unique_id(device("cpu:0")), 0, 100)


def test_a_malformed_direct_setting_is_refused_naming_the_variable(monkeypatch):
    monkeypatch.setenv("HAL_SW_COMM_DIRECT", "yes")
    with pytest.raises(_C.InvalidArgument, match="HAL_SW_COMM_DIRECT='yes' is not 0, 1 or auto"):
        _C.Communicator(device("cpu:0"), 1, _C.comm_unique_id(device("cpu:0")), 0, 100)


def test_an_id_of_another_plugin_is_refused():
    with pytest.raises(_C.InvalidArgument, match="belongs to plugin 'cpu'"):
        _C.Communicator(device("emu:0"), 2, _C.comm_unique_id(device("cpu:0")), 0, 100)


@pytest.mark.parametrize("mistake, message", [
    ((3, 1), "rank 1 says nranks is 3, but the ranks that joined .* say 2"),
    ((2, 0), "rank 0 of .* is taken twice: by pid .* and by pid"),
])
def test_a_rank_that_cannot_join_is_named_here_and_on_the_waiting_ranks(mistake, message):
    """Two ranks of one process (threads): the first waits for the clique, the second disagrees with it."""
    dev = device("cpu:0")
    unique_id = _C.comm_unique_id(dev)
    waiting_error: list[Exception] = []

    def first_rank():
        try:
            _C.Communicator(dev, 2, unique_id, 0, 30000)
        except _C.HalError as e:
            waiting_error.append(e)

    waiting = threading.Thread(target=first_rank)
    waiting.start()
    try:
        # The id names the segment (after 32 bytes of magic and plugin name); once it has its size, the first
        # rank is a moment from having joined.
        segment = "/dev/shm" + unique_id[32:96].split(b"\0")[0].decode()
        while not (os.path.exists(segment) and os.path.getsize(segment) > 0):
            time.sleep(0.01)
        time.sleep(0.2)
        with pytest.raises(_C.InvalidArgument, match=message):
            _C.Communicator(dev, mistake[0], unique_id, mistake[1], 100)
    finally:
        waiting.join(timeout=60)
    assert len(waiting_error) == 1 and "a rank could not join" in str(waiting_error[0]), waiting_error


@pytest.mark.parametrize("name", DEVICES)
def test_missing_peers_time_out_at_init_naming_them(name):
    for code, out in run_world(name, 4, "init", ranks=[0, 2], extra=["--timeout-ms", "1500"]):
        assert code == 3 and "timed out" in out and "rank(s) 1, 3 to join" in out, out


@pytest.mark.parametrize("name", DEVICES)
def test_a_killed_peer_fails_the_survivors_naming_it(name):
    results = run_world(name, 4, "dead-peer", extra=["--victim", "2", "--timeout-ms", "60000"])
    assert results[2][0] == -signal.SIGKILL
    for rank in (0, 1, 3):
        code, out = results[rank]
        # Well within the 60 s timeout: the survivors see the death, not their deadline.
        assert code == 0 and "rank 2 (pid" in out and ("died" in out or "failed the communicator" in out), out


@pytest.mark.parametrize("name", DEVICES)
def test_a_hung_peer_times_out_the_others_naming_it_and_learns_why(name):
    assert_all_ok(run_world(name, 3, "hung-peer", extra=["--victim", "2", "--timeout-ms", "1000"]))


@pytest.mark.parametrize("name", DEVICES)
def test_abort_from_another_thread_unblocks_a_waiting_synchronize(name):
    assert_all_ok(run_world(name, 2, "abort"))


def test_a_single_rank_runs_every_op_in_process():
    dev = device("emu:0")
    comm = _C.Communicator(dev, 1, _C.comm_unique_id(dev), 0, 5000)
    assert (comm.rank, comm.nranks, comm.device.name) == (0, 1, "emu:0")
    assert all(comm.supports(op) for op in ["allreduce", "allgather", "reduce_scatter", "broadcast", "send", "recv"])
    stream = dev.default_stream()
    x = inputs("bf16", 100, 0, 5)
    a, b = dev.allocate(x.nbytes), dev.allocate(x.nbytes)
    stream.copy_h2d(a.ptr, x)
    comm.allreduce(a.ptr, b.ptr, x.size, "bf16", "avg", stream)
    out = np.empty_like(x)
    stream.copy_d2h(out, b.ptr)
    stream.synchronize()
    np.testing.assert_array_equal(out, x)
    del comm  # Garbage collection destroys it.


def test_a_forked_child_cannot_use_the_parents_communicator():
    dev = device("cpu:0")
    comm = _C.Communicator(dev, 1, _C.comm_unique_id(dev), 0, 5000)
    a = dev.allocate(64)
    pid = os.fork()
    if pid == 0:  # The child: any use fails clearly; exit 0 only then.
        try:
            comm.allreduce(a.ptr, a.ptr, 4, "f32", "sum", dev.default_stream())
        except _C.HalError as e:
            os._exit(0 if "fork" in str(e) or "parent" in str(e) else 2)
        os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    comm.destroy()


def two_ranks_in_threads(dev, body):
    """Runs body(comm, stream) as ranks 0 and 1 of one clique, on two threads of this process."""
    unique_id, results, errors = _C.comm_unique_id(dev), {}, []

    def rank(r):
        try:
            comm = _C.Communicator(dev, 2, unique_id, r, 20000)
            results[r] = body(comm, _C.Stream(dev), r)
            comm.destroy()
        except Exception as e:  # Reported below, on the test's thread.
            errors.append(e)

    threads = [threading.Thread(target=rank, args=(r,)) for r in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    return results


def half_bits_to_f32(dtype: str, bits: np.ndarray) -> np.ndarray:
    from hal.conformance.collectives import _to_float64
    with np.errstate(invalid="ignore"):  # NaN bit patterns stay NaN.
        return _to_float64(dtype, bits.view(np.float16) if dtype == "f16" else bits).astype(np.float32)


@pytest.mark.parametrize("dtype", ["f16", "bf16"])
def test_half_precision_sums_accumulate_in_f32_and_round_to_nearest_even(dtype):
    from hal.conformance.collectives import _bf16_from
    rng = np.random.default_rng(3)
    bits = np.arange(1 << 16, dtype=np.uint16)
    finite = bits[np.isfinite(half_bits_to_f32(dtype, bits))]
    parts = [rng.permutation(finite), rng.permutation(finite)]  # Every finite value, summed with another.
    dev = device("cpu:0")

    def allreduce(comm, stream, r):
        a, out = dev.allocate(parts[r].nbytes), np.empty_like(parts[r])
        stream.copy_h2d(a.ptr, parts[r])
        comm.allreduce(a.ptr, a.ptr, parts[r].size, dtype, "sum", stream)
        stream.copy_d2h(out, a.ptr)
        stream.synchronize()
        return out

    got = two_ranks_in_threads(dev, allreduce)
    with np.errstate(over="ignore"):  # Sums past the largest finite value round to infinity, as they must.
        total = half_bits_to_f32(dtype, parts[0]) + half_bits_to_f32(dtype, parts[1])  # The f32 accumulation.
        want = total.astype(np.float16).view(np.uint16) if dtype == "f16" else _bf16_from(total)
    for r in (0, 1):
        np.testing.assert_array_equal(got[r], want)


def test_a_slower_emulated_device_paces_its_collectives_and_still_agrees():
    dev = device("emu:2")  # emu-slow: speed 0.5, its copies and reductions paced like its other work.
    assert dev.properties().relative_speed < 1
    x = np.arange(3000, dtype=np.float64)

    def allreduce(comm, stream, r):
        a, out, mine = dev.allocate(x.nbytes), np.empty_like(x), x * (r + 1)  # Alive until synchronized.
        stream.copy_h2d(a.ptr, mine)
        comm.allreduce(a.ptr, a.ptr, x.size, "f64", "max", stream)
        stream.copy_d2h(out, a.ptr)
        stream.synchronize()
        return out

    for out in two_ranks_in_threads(dev, allreduce).values():
        np.testing.assert_array_equal(out, x * 2)
