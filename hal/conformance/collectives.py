"""The runtime stage's collectives area (`hal conformance --runtime`): a plugin's collectives (collective.h)
across processes, through HAL's runtime and its communicator (hal._C), not the plugin's table alone. The cffi
suite's own collectives area (abi/areas/collectives.py) runs a smaller world straight on the table.

Runs when the plugin declares collectives (comm_init_rank), else skips saying so. Each world is a set of
worker processes (`python -m hal.conformance.collectives worker ...`) on the plugin's device 0, sharing one
unique id the test makes; each worker runs many checks (spawning costs about a second) and exits 0 only when
all passed. Checked: every declared operation, reduce op and dtype against numpy (float64), in place,
non-zero roots, send/recv pairs, count 0, bad arguments raising at the call, a missing peer timing out at
init naming it, a killed peer failing the others naming it, and abort from another thread failing a waiting
synchronize here and the peers' collectives.

tests/test_plugin_collectives.py drives the same workers with more world sizes, counts and both bundled
plugins.
"""
from __future__ import annotations

import argparse
import glob
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from hal import _C

DTYPES = ["f32", "f16", "bf16", "f64", "f8e4m3", "i8", "u8", "i32", "i64"]
REDUCIBLE = ["f32", "f16", "bf16", "f64", "i8", "u8", "i32", "i64"]  # f8e4m3 only moves.
REDUCE_OPS = ["sum", "prod", "min", "max", "avg"]
OPS = ["allreduce", "allgather", "reduce_scatter", "broadcast", "send", "recv"]
# How numpy stores each dtype (bf16 and f8e4m3 as their raw bits).
STORAGE = {"f32": np.float32, "f16": np.float16, "bf16": np.uint16, "f64": np.float64, "f8e4m3": np.uint8,
           "i8": np.int8, "u8": np.uint8, "i32": np.int32, "i64": np.int64}
WORLD_TIMEOUT_S = 120  # A whole world of workers; a hang fails the test instead of the suite.


# --- Values ------------------------------------------------------------------------------------------------

def _bf16_from(x: np.ndarray) -> np.ndarray:
    """float64 -> bf16 bits, rounding to nearest even (through float32, exact for the values used here)."""
    bits = np.asarray(x, np.float32).view(np.uint32).astype(np.uint64)
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)


def _to_float64(dtype: str, raw: np.ndarray) -> np.ndarray:
    if dtype == "bf16":
        return (raw.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    return raw.astype(np.float64)


def _from_float64(dtype: str, x: np.ndarray) -> np.ndarray:
    if dtype == "bf16":
        return _bf16_from(x)
    return x.astype(STORAGE[dtype])


def inputs(dtype: str, count: int, rank: int, seed: int) -> np.ndarray:
    """Rank |rank|'s input: small integers, so sums and products of a few ranks are exact in every dtype."""
    rng = np.random.default_rng([seed, rank])
    if dtype == "f8e4m3":
        return rng.integers(0, 256, count, dtype=np.uint8)
    low = 0 if dtype == "u8" else -3
    return _from_float64(dtype, rng.integers(low, 4, count).astype(np.float64))


def expected(dtype: str, op: str, parts: list[np.ndarray]) -> np.ndarray:
    """The reduction of |parts| in float64, in the dtype's storage."""
    x = np.stack([_to_float64(dtype, p) for p in parts])
    if op == "sum":
        r = x.sum(0)
    elif op == "prod":
        r = x.prod(0)
    elif op == "min":
        r = x.min(0)
    elif op == "max":
        r = x.max(0)
    else:
        r = x.sum(0) / len(parts)
        if dtype in ("i8", "u8", "i32", "i64"):
            r = np.trunc(r)  # Integer averages truncate.
    return _from_float64(dtype, r)


def _close(dtype: str, got: np.ndarray, want: np.ndarray) -> bool:
    if dtype in ("f16", "bf16", "f32", "f64"):
        tolerance = {"f16": 1e-3, "bf16": 8e-3, "f32": 1e-6, "f64": 1e-12}[dtype]
        return np.allclose(_to_float64(dtype, got), _to_float64(dtype, want), rtol=tolerance, atol=tolerance)
    return np.array_equal(got, want)


# --- Worker ------------------------------------------------------------------------------------------------

class Rank:
    """One worker's view: its device, stream and communicator, and device buffers made from numpy."""

    def __init__(self, device: str, nranks: int, rank: int, unique_id: bytes, timeout_ms: int):
        self.dev = _C.find_device(device)
        self.stream = self.dev.default_stream()
        self.rank, self.nranks = rank, nranks
        self.comm = _C.Communicator(self.dev, nranks, unique_id, rank, timeout_ms)
        self._held: list = []

    def buffer(self, array: np.ndarray) -> int:
        """Device memory holding a copy of |array|; both stay alive until release() (the copy is async)."""
        allocation = self.dev.allocate(max(array.nbytes, 64))
        self._held += [allocation, array]
        if array.nbytes:
            self.stream.copy_h2d(allocation.ptr, array)
        return allocation.ptr

    def read(self, ptr: int, like: np.ndarray) -> np.ndarray:
        out = np.empty_like(like)
        if out.nbytes:
            self.stream.copy_d2h(out, ptr)
        self.stream.synchronize()
        return out

    def release(self) -> None:
        self.stream.synchronize()
        self._held.clear()


def _poison(like: np.ndarray) -> np.ndarray:
    return np.full(like.nbytes, 0xCD, np.uint8).view(like.dtype).reshape(like.shape)


def check_operations(me: Rank, counts: list[int], seed: int = 0) -> int:
    """Every supported operation x reduce op x dtype x count against numpy; returns how many checks ran."""
    n, r, checks = me.nranks, me.rank, 0
    failures: list[str] = []

    def check(label: str, dtype: str, got: np.ndarray, want: np.ndarray) -> None:
        nonlocal checks
        checks += 1
        if not _close(dtype, got, want):
            bad = np.flatnonzero(got != want)[:5]
            failures.append(f"{label}: first differences at {bad.tolist()}: got {got[bad].tolist()}, "
                            f"want {want[bad].tolist()}")

    for case, (dtype, count) in enumerate((d, c) for d in DTYPES for c in counts):
        parts = [inputs(dtype, count, q, seed + case) for q in range(n)]
        mine = parts[r]
        for op in REDUCE_OPS if dtype in REDUCIBLE else []:
            want = expected(dtype, op, parts)
            send, recv = me.buffer(mine), me.buffer(_poison(mine))
            me.comm.allreduce(send, recv, count, dtype, op, me.stream)
            check(f"allreduce {count} x {dtype} {op}", dtype, me.read(recv, mine), want)
            inplace = me.buffer(mine)
            me.comm.allreduce(inplace, inplace, count, dtype, op, me.stream)
            check(f"allreduce {count} x {dtype} {op} in place", dtype, me.read(inplace, mine), want)
            if me.comm.supports("reduce_scatter"):
                blocks = [inputs(dtype, count * n, q, seed + case + 7919) for q in range(n)]
                want = expected(dtype, op, blocks)[r * count:(r + 1) * count]
                send, recv = me.buffer(blocks[r]), me.buffer(_poison(want))
                me.comm.reduce_scatter(send, recv, count, dtype, op, me.stream)
                check(f"reduce_scatter {count} x {dtype} {op}", dtype, me.read(recv, want), want)
        if me.comm.supports("allgather"):
            want = np.concatenate(parts)
            send, recv = me.buffer(mine), me.buffer(_poison(want))
            me.comm.allgather(send, recv, count, dtype, me.stream)
            check(f"allgather {count} x {dtype}", dtype, me.read(recv, want), want)
        if me.comm.supports("broadcast"):
            for root in sorted({0, n - 1}):
                send, recv = me.buffer(mine), me.buffer(_poison(mine))
                me.comm.broadcast(send, recv, count, dtype, root, me.stream)
                check(f"broadcast {count} x {dtype} root {root}", dtype, me.read(recv, mine), parts[root])
                inplace = me.buffer(mine)
                me.comm.broadcast(inplace, inplace, count, dtype, root, me.stream)
                check(f"broadcast {count} x {dtype} root {root} in place", dtype, me.read(inplace, mine),
                      parts[root])
        if n > 1 and me.comm.supports("send") and me.comm.supports("recv"):
            # A ring: even ranks send first, odd ones receive first, so no send waits for a rank that sends.
            right, left = (r + 1) % n, (r - 1) % n
            send, recv = me.buffer(mine), me.buffer(_poison(mine))
            first_send = r % 2 == 0
            for sends in (first_send, not first_send):
                if sends:
                    me.comm.send(send, count, dtype, right, me.stream)
                else:
                    me.comm.recv(recv, count, dtype, left, me.stream)
            check(f"send/recv {count} x {dtype} from rank {left}", dtype, me.read(recv, mine), parts[left])
        me.release()
    if failures:
        raise AssertionError(f"rank {r} of {n}: {len(failures)} of {checks} checks failed:\n  " +
                             "\n  ".join(failures[:20]))
    return checks


def check_large(me: Rank, count: int) -> int:
    """One f32 allreduce (sum) and allgather of |count| elements: many chunks at the plugin's chunk size."""
    parts = [inputs("f32", count, q, 99) for q in range(me.nranks)]
    send, recv = me.buffer(parts[me.rank]), me.buffer(_poison(parts[me.rank]))
    me.comm.allreduce(send, recv, count, "f32", "sum", me.stream)
    assert np.array_equal(me.read(recv, parts[0]), expected("f32", "sum", parts)), "large allreduce"
    if me.comm.supports("allgather"):
        gathered = np.concatenate(parts)
        recv = me.buffer(_poison(gathered))
        me.comm.allgather(send, recv, count, "f32", me.stream)
        assert np.array_equal(me.read(recv, gathered), gathered), "large allgather"
    me.release()
    return 2


def _failing_allreduce(me: Rank, error: type, why_not: str) -> str:
    """Queues an allreduce; returns the message of the |error| its synchronize must raise."""
    send = me.buffer(np.ones(1000, np.float32))
    me.comm.allreduce(send, send, 1000, "f32", "sum", me.stream)
    try:
        me.stream.synchronize()
    except error as e:
        return str(e)
    raise AssertionError(why_not)


def check_dead_peer(me: Rank, victim: int) -> str:
    """|victim| is killed after joining; every other rank's allreduce then fails naming it."""
    if me.rank == victim:
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(0.2)  # Let it die first: a rank that is merely late must not count as dead.
    message = _failing_allreduce(me, _C.Timeout, "the allreduce succeeded although a rank was killed")
    assert f"rank {victim}" in message and "allreduce" in message, message
    return message


def check_hung_peer(me: Rank, victim: int, hang_s: float) -> str:
    """|victim| is alive but issues its allreduce only after |hang_s| (past the others' timeout): the others
    time out naming it and how long they waited; the victim's late allreduce then fails saying why."""
    if me.rank == victim:
        time.sleep(hang_s)
    message = _failing_allreduce(me, _C.Timeout, "the allreduce succeeded although a rank hung past the timeout")
    if me.rank == victim:
        assert "failed the communicator" in message and "timed out" in message, message
    else:
        assert "timed out after" in message and f"waiting for rank {victim} (pid" in message, message
    return message


def check_abort(me: Rank) -> str:
    """Rank 0 aborts from another thread while its main thread waits on a collective that rank 1 joins
    late; rank 0's synchronize fails with Aborted, and so does rank 1's collective, naming rank 0."""
    if me.rank == 0:
        threading.Timer(0.3, me.comm.abort).start()
    else:
        time.sleep(1.0)
    message = _failing_allreduce(me, _C.Aborted, "the collective succeeded although rank 0 aborted")
    if me.rank != 0:
        assert "rank 0 aborted" in message, message
    send = me.buffer(np.ones(4, np.float32))
    try:  # A failed communicator only accepts destroy.
        me.comm.allreduce(send, send, 4, "f32", "sum", me.stream)
    except _C.Aborted as e:
        assert "only accepts comm_destroy" in str(e), str(e)
    else:
        raise AssertionError("a failed communicator accepted another collective")
    return message


def check_bad_arguments(device: str) -> int:
    """Mistakes raise at the call, naming the argument (one rank: no peer is needed)."""
    from hal.conformance.suite import _devices
    _devices()
    me = Rank(device, 1, 0, _C.comm_unique_id(_C.find_device(device)), 10000)
    x = np.ones(16, np.float32)
    ptr = me.buffer(x)
    c, s = me.comm, me.stream
    cases = [
        (lambda: c.allreduce(ptr, ptr, 16, "f33", "sum", s), _C.InvalidArgument, "dtype 'f33'"),
        (lambda: c.allreduce(ptr, ptr, 16, "f32", "mean", s), _C.InvalidArgument, "op 'mean'"),
        (lambda: c.allreduce(ptr, ptr, 16, "f8e4m3", "sum", s), _C.Unimplemented, "f8e4m3"),
        (lambda: c.allreduce(ptr, ptr, 1 << 20, "f32", "sum", s), _C.InvalidArgument, "sendbuf"),
        (lambda: c.allreduce(ptr, ptr + (1 << 40), 4, "f32", "sum", s), _C.InvalidArgument, "recvbuf"),
        (lambda: c.allreduce(ptr, ptr, 1 << 62, "f32", "sum", s), _C.InvalidArgument, "overflow"),
        (lambda: c.broadcast(ptr, ptr, 16, "f32", 1, s), _C.InvalidArgument, "root 1"),
        (lambda: c.supports("alltoall"), _C.InvalidArgument, "op 'alltoall'"),
        (lambda: _C.Communicator(me.dev, 2, b"x" * 128, 0, 100), _C.InvalidArgument, "unique id"),
        (lambda: _C.Communicator(me.dev, 2, b"x" * 7, 0, 100), _C.InvalidArgument, "unique_id has 7 bytes"),
        (lambda: _C.Communicator(me.dev, 0, _C.comm_unique_id(me.dev), 0, 100), _C.InvalidArgument, "nranks"),
        (lambda: _C.Communicator(me.dev, 2, _C.comm_unique_id(me.dev), 2, 100), _C.InvalidArgument, "rank 2"),
    ]
    if c.supports("send"):
        cases.append((lambda: c.send(ptr, 16, "f32", 0, s), _C.InvalidArgument, "peer 0"))
    others = [d for d in range(_C.device_count())
              if _C.get_device(d).plugin == me.dev.plugin and _C.get_device(d).name != me.dev.name]
    if others:
        other = _C.get_device(others[0]).default_stream()
        cases.append((lambda: c.allreduce(ptr, ptr, 16, "f32", "sum", other), _C.InvalidArgument, "stream"))
    for call, error, words in cases:
        try:
            call()
        except error as e:
            assert words in str(e), f"expected {words!r} in: {e}"
        else:
            raise AssertionError(f"no {error.__name__} for a call expected to name {words!r}")
    c.allreduce(ptr, ptr, 0, "f32", "sum", s)  # Count 0 is a no-op, in order.
    assert (me.read(ptr, x) == x).all()
    me.release()
    c.destroy()
    c.destroy()  # Idempotent.
    try:
        c.allreduce(ptr, ptr, 16, "f32", "sum", s)
    except _C.InvalidArgument as e:
        assert "destroyed" in str(e), str(e)
    else:
        raise AssertionError("a destroyed communicator accepted a collective")
    return len(cases)


def worker(argv: list[str]) -> int:
    """`python -m hal.conformance.collectives worker SCENARIO DEVICE NRANKS RANK ID_HEX [options]`."""
    p = argparse.ArgumentParser(prog="hal.conformance.collectives worker")
    p.add_argument("scenario", choices=["operations", "large", "init", "dead-peer", "hung-peer", "abort"])
    p.add_argument("device")
    p.add_argument("nranks", type=int)
    p.add_argument("rank", type=int)
    p.add_argument("unique_id")
    p.add_argument("--counts", default="0,1,7,1000")
    p.add_argument("--timeout-ms", type=int, default=60000)
    p.add_argument("--victim", type=int, default=1)
    args = p.parse_args(argv)
    from hal.conformance.suite import _devices
    _devices()  # Loads the plugin under test (or the default ones), as the suite does.
    try:
        me = Rank(args.device, args.nranks, args.rank, bytes.fromhex(args.unique_id), args.timeout_ms)
    except _C.Timeout as e:
        print(f"TIMEOUT {e}", flush=True)
        return 3
    if args.scenario == "operations":
        print(f"OK {check_operations(me, [int(c) for c in args.counts.split(',')])} checks", flush=True)
    elif args.scenario == "large":
        print(f"OK {check_large(me, int(args.counts))} checks", flush=True)
    elif args.scenario == "dead-peer":
        print(f"OK {check_dead_peer(me, args.victim)}", flush=True)
    elif args.scenario == "hung-peer":
        print(f"OK {check_hung_peer(me, args.victim, 2.5 * args.timeout_ms / 1000)}", flush=True)
    elif args.scenario == "abort":
        print(f"OK {check_abort(me)}", flush=True)
    else:
        print("OK joined", flush=True)
    me.comm.destroy()
    return 0


# --- The tests: worlds of worker processes -------------------------------------------------------------------

def run_world(device: str, nranks: int, scenario: str, *, ranks: list[int] | None = None, env: dict | None = None,
              extra: list[str] = ()) -> list[tuple[int, str]]:
    """Starts |ranks| (default: all) of a world of |nranks| workers on |device|; returns (exit code, output)
    per rank once all ended. Kills them all if the world outlives WORLD_TIMEOUT_S."""
    from hal.conformance.suite import _devices
    _devices()
    unique_id = _C.comm_unique_id(_C.find_device(device)).hex()
    procs = [subprocess.Popen([sys.executable, "-m", "hal.conformance.collectives", "worker", scenario, device,
                               str(nranks), str(rank), unique_id, *extra],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env={**os.environ, **(env or {})})
             for rank in (range(nranks) if ranks is None else ranks)]
    deadline, results = time.monotonic() + WORLD_TIMEOUT_S, []
    try:
        for proc in procs:
            out, _ = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
            results.append((proc.returncode, out))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return results


def leftover_segments() -> list[str]:
    """Shared-memory segments of ids this process made (the bundled plugins' naming), which must be gone."""
    return glob.glob(f"/dev/shm/hal-*-{os.getpid()}-*")


def collective_devices() -> list[str]:
    """Device 0 of every plugin under test that declares collectives."""
    from hal.conformance.suite import _devices
    return [d.name for d in _devices() if d.local_index == 0 and d.supports("comm_init_rank")]


def pytest_generate_tests(metafunc):
    if "comm_device" in metafunc.fixturenames:
        from hal.conformance.suite import _devices
        try:
            names = [d.name for d in _devices() if d.local_index == 0] or ["none"]
        except Exception as e:  # Reported by the suite's test_plugin_loads.
            names = [f"unavailable: {e}"]
        metafunc.parametrize("comm_device", names, ids=names, indirect=True)


@pytest.fixture
def comm_device(request):
    name = request.param
    if name not in collective_devices():
        pytest.skip(f"{name}: the plugin declares no collectives (comm_init_rank is optional)")
    yield name
    assert not leftover_segments(), "shared-memory segments were left in /dev/shm"


def _assert_all_ok(results: list[tuple[int, str]]) -> None:
    for rank, (code, out) in enumerate(results):
        assert code == 0 and "OK" in out, f"rank {rank} exited {code}:\n{out}"


@pytest.mark.parametrize("nranks", [2, 3])
def test_collectives_match_numpy(comm_device, nranks):
    _assert_all_ok(run_world(comm_device, nranks, "operations"))


def test_collective_arguments_are_checked_at_the_call(comm_device):
    check_bad_arguments(comm_device)


def test_missing_peer_times_out_at_init_naming_it(comm_device):
    results = run_world(comm_device, 3, "init", ranks=[0, 1], extra=["--timeout-ms", "1500"])
    for code, out in results:
        assert code == 3 and "TIMEOUT" in out and "rank(s) 2" in out, out


def test_killed_peer_fails_the_others_naming_it(comm_device):
    results = run_world(comm_device, 3, "dead-peer", extra=["--victim", "1"])
    assert results[1][0] == -signal.SIGKILL
    for code, out in (results[0], results[2]):
        assert code == 0 and "rank 1" in out, out


def test_hung_peer_times_out_naming_it(comm_device):
    _assert_all_ok(run_world(comm_device, 2, "hung-peer", extra=["--victim", "1", "--timeout-ms", "1000"]))


def test_abort_from_another_thread_fails_this_rank_and_the_peers(comm_device):
    _assert_all_ok(run_world(comm_device, 2, "abort"))


if __name__ == "__main__":
    if sys.argv[1:2] != ["worker"]:
        sys.exit("usage: python -m hal.conformance.collectives worker SCENARIO DEVICE NRANKS RANK ID_HEX")
    sys.exit(worker(sys.argv[2:]))
