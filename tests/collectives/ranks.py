"""One rank of a collectives test (started by launch.py): `python ranks.py SCENARIO`.

Env: RANK, WORLD_SIZE, HAL_TEST_PORT (the TCPStore's), HAL_TEST_DEVICES (each rank's device, comma-separated).
Each scenario batches many checks (a torch process costs seconds to start), raises on the first wrong value
and prints `OK <n checks>` last. Every rank's inputs are a function of (rank, check), so each rank computes
the float64 reference of all ranks' contributions itself with numpy.
"""
from __future__ import annotations

import json
import os
import sys
import time
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist

import hal.torch  # noqa: F401
from hal import collectives

RANK = int(os.environ["RANK"])
WORLD = int(os.environ["WORLD_SIZE"])
DEVICES = os.environ["HAL_TEST_DEVICES"].split(",")
DEVICE = torch.device(DEVICES[RANK])
TIMEOUT = float(os.environ.get("HAL_TEST_TIMEOUT", "30"))
R = dist.ReduceOp

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int32, torch.int64, torch.int8,
          torch.uint8]
checks = 0


def init(backend: str = "hal") -> None:
    collectives.register()
    addr = os.environ.get("HAL_TEST_ADDR", "127.0.0.1")
    dist.init_process_group(backend, init_method=f"tcp://{addr}:{os.environ['HAL_TEST_PORT']}", rank=RANK,
                            world_size=WORLD, timeout=timedelta(seconds=TIMEOUT))


def values(rank: int, shape: tuple[int, ...], dtype: torch.dtype, salt: int, low: int = -4, high: int = 5) -> np.ndarray:
    """Small integers (exact in every dtype, sums included); unsigned dtypes get non-negative ones."""
    rng = np.random.default_rng(1000 * salt + rank)
    lo = 0 if dtype == torch.uint8 else low
    return rng.integers(lo, high, size=shape).astype(np.float64)


def tensor(a: np.ndarray, dtype: torch.dtype, device: torch.device = DEVICE) -> torch.Tensor:
    return torch.from_numpy(a).to(dtype).to(device)


def same(got: torch.Tensor, want: np.ndarray, what: str, exact: bool = True) -> None:
    global checks
    checks += 1
    g = got.detach().to("cpu").to(torch.float64).numpy()
    if g.shape != want.shape:
        raise AssertionError(f"{what}: shape {g.shape}, expected {want.shape}")
    tol = 0 if exact else (2e-2 if got.dtype in (torch.float16, torch.bfloat16) else 1e-6)
    if not np.allclose(g, want, rtol=tol, atol=tol):
        raise AssertionError(f"rank {RANK} {what}: got {g.ravel()[:8]}, expected {want.ravel()[:8]}")


def reference(op: R.RedOpType, arrays: list[np.ndarray], dtype: torch.dtype) -> np.ndarray:
    stack = np.stack(arrays)
    if op == R.SUM:
        return stack.sum(0)
    if op == R.AVG:
        s = stack.sum(0) / WORLD
        return np.trunc(s) if not dtype.is_floating_point else s
    if op == R.MAX:
        return stack.max(0)
    if op == R.MIN:
        return stack.min(0)
    if op == R.PRODUCT:
        return stack.prod(0)
    ints = stack.astype(np.int64)
    fn = {R.BAND: np.bitwise_and, R.BOR: np.bitwise_or, R.BXOR: np.bitwise_xor}[op]
    return fn.reduce(ints, axis=0).astype(np.float64)


def wrap(x: np.ndarray, dtype: torch.dtype) -> np.ndarray:
    """The reference as |dtype| holds it (integer sums wrap like the hardware's)."""
    return torch.from_numpy(x).to(dtype).to(torch.float64).numpy() if not dtype.is_floating_point else x


def check_allreduce() -> None:
    salt = 0
    for dtype in DTYPES:
        ops = [R.SUM, R.AVG, R.MAX, R.MIN, R.PRODUCT]
        if not dtype.is_floating_point:
            ops += [R.BAND, R.BOR, R.BXOR]
        for op in ops:
            salt += 1
            low, high = (-1, 3) if op == R.PRODUCT else (-4, 5)
            shape = (7, 3)
            mine = values(RANK, shape, dtype, salt, low, high)
            want = wrap(reference(op, [values(r, shape, dtype, salt, low, high) for r in range(WORLD)], dtype), dtype)
            t = tensor(mine, dtype)
            dist.all_reduce(t, op=op)
            same(t, want, f"all_reduce {op} {dtype}", exact=op != R.AVG)
    # Non-contiguous (a transposed view) and 0-element tensors, on the device.
    base = tensor(values(RANK, (4, 6), torch.float32, 99), torch.float32)
    view = base.t()
    dist.all_reduce(view)
    same(base, sum(values(r, (4, 6), torch.float32, 99) for r in range(WORLD)), "all_reduce non-contiguous")
    empty = torch.empty(0, 3, device=DEVICE)
    dist.all_reduce(empty)
    same(empty, np.zeros((0, 3)), "all_reduce 0 elements")
    # Coalesced (DDP's buckets; two dtypes).
    ts = [tensor(values(RANK, (5,), torch.float32, 200 + i), torch.float32) for i in range(3)]
    ts.append(tensor(values(RANK, (2, 2), torch.int64, 210), torch.int64))
    with dist._coalescing_manager():
        for t in ts:
            dist.all_reduce(t)
    for i, t in enumerate(ts[:3]):
        same(t, sum(values(r, (5,), torch.float32, 200 + i) for r in range(WORLD)), "coalesced all_reduce")
    same(ts[3], sum(values(r, (2, 2), torch.int64, 210) for r in range(WORLD)), "coalesced all_reduce int64")


def check_other_dtypes() -> None:
    """Dtypes Gloo lacks (they move as bytes and reduce widened), and bool and complex (Gloo's own)."""
    for dtype in (torch.int16, torch.uint16, torch.uint32, torch.float8_e4m3fn, torch.bool, torch.complex64):
        ops = [R.SUM] if dtype in (torch.float8_e4m3fn, torch.complex64) else [R.SUM, R.MAX, R.MIN]
        if dtype == torch.bool:
            ops = [R.MAX, R.MIN]
        for op in ops:
            low, high = (0, 2) if dtype in (torch.bool, torch.float8_e4m3fn) else (0, 9)
            arrays = [values(r, (6,), dtype, 1200 + int(op), low, high) for r in range(WORLD)]
            t = tensor(arrays[RANK], dtype)
            dist.all_reduce(t, op=op)
            same(t.to(torch.float32) if dtype.is_complex else t, wrap(reference(op, arrays, dtype), dtype)
                 if not dtype.is_floating_point else reference(op, arrays, dtype), f"all_reduce {op} {dtype}")
        t = tensor(values(RANK, (5,), dtype, 1300, 0, 2), dtype)
        dist.broadcast(t, src=WORLD - 1)
        same(t.to(torch.float32) if dtype.is_complex else t, values(WORLD - 1, (5,), dtype, 1300, 0, 2),
             f"broadcast {dtype}")
        out = torch.empty(WORLD * 3, dtype=dtype, device=DEVICE)
        dist.all_gather_into_tensor(out, tensor(values(RANK, (3,), dtype, 1400, 0, 2), dtype))
        same(out.to(torch.float32) if dtype.is_complex else out,
             np.concatenate([values(r, (3,), dtype, 1400, 0, 2) for r in range(WORLD)]), f"all_gather {dtype}")
    out = torch.empty(2 * WORLD, dtype=torch.uint32, device=DEVICE)
    dist.all_to_all_single(out, tensor(np.arange(2 * WORLD, dtype=np.float64) + 100 * RANK, torch.uint32))
    same(out, np.concatenate([np.arange(2 * RANK, 2 * RANK + 2, dtype=np.float64) + 100 * r for r in range(WORLD)]),
         "all_to_all_single uint32")


def check_broadcast_gather() -> None:
    for root in range(WORLD):
        for dtype in (torch.float32, torch.bfloat16, torch.int64, torch.uint8):
            t = tensor(values(RANK, (3, 5), dtype, 300 + root), dtype)
            dist.broadcast(t, src=root)
            same(t, values(root, (3, 5), dtype, 300 + root), f"broadcast root {root} {dtype}")
    # all_gather with uneven sizes, on non-contiguous inputs.
    outs = [torch.empty(r + 1, 2, device=DEVICE) for r in range(WORLD)]
    mine = tensor(values(RANK, (2, RANK + 1), torch.float32, 400), torch.float32).t()
    if WORLD > 1:
        dist.all_gather(outs, mine)
        for r in range(WORLD):
            same(outs[r], values(r, (2, r + 1), torch.float32, 400).T, "all_gather uneven")
    # Equal sizes (one island: the plugin's all-gather), into non-contiguous outputs.
    outs = [torch.empty(3, 2, dtype=torch.bfloat16, device=DEVICE).t() for _ in range(WORLD)]
    dist.all_gather(outs, tensor(values(RANK, (2, 3), torch.bfloat16, 420), torch.bfloat16))
    for r in range(WORLD):
        same(outs[r], values(r, (2, 3), torch.bfloat16, 420), "all_gather equal sizes")
    for dtype in (torch.float16, torch.int32):
        out = torch.empty(WORLD * 6, dtype=dtype, device=DEVICE)
        dist.all_gather_into_tensor(out, tensor(values(RANK, (6,), dtype, 410), dtype))
        same(out, np.concatenate([values(r, (6,), dtype, 410) for r in range(WORLD)]), f"all_gather_into_tensor {dtype}")
    out = torch.empty(0, device=DEVICE)
    dist.all_gather_into_tensor(out, torch.empty(0, device=DEVICE))
    same(out, np.zeros(0), "all_gather_into_tensor 0 elements")
    # reduce_scatter, both forms, SUM and AVG.
    for op in (R.SUM, R.AVG, R.MAX):
        full = [values(r, (WORLD * 4,), torch.float32, 500) for r in range(WORLD)]
        want = reference(op, full, torch.float32)[RANK * 4:(RANK + 1) * 4]
        out = torch.empty(4, device=DEVICE)
        dist.reduce_scatter_tensor(out, tensor(full[RANK], torch.float32), op=op)
        same(out, want, f"reduce_scatter_tensor {op}", exact=op != R.AVG)
        out = torch.empty(4, device=DEVICE)
        dist.reduce_scatter(out, [tensor(full[RANK][i * 4:(i + 1) * 4], torch.float32) for i in range(WORLD)], op=op)
        same(out, want, f"reduce_scatter {op}", exact=op != R.AVG)
    # The coalescing manager's fast paths (FSDP's): all_gather_into_tensor and reduce_scatter_tensor.
    gathered = [torch.empty(WORLD * 3, device=DEVICE) for _ in range(2)]
    scattered = [torch.empty(3, device=DEVICE) for _ in range(2)]
    with dist._coalescing_manager():
        for i, g in enumerate(gathered):
            dist.all_gather_into_tensor(g, tensor(values(RANK, (3,), torch.float32, 450 + i), torch.float32))
    with dist._coalescing_manager():
        for i, out in enumerate(scattered):
            dist.reduce_scatter_tensor(out, tensor(values(RANK, (WORLD * 3,), torch.float32, 460 + i), torch.float32))
    for i in range(2):
        same(gathered[i], np.concatenate([values(r, (3,), torch.float32, 450 + i) for r in range(WORLD)]),
             "coalesced all_gather_into_tensor")
        same(scattered[i], sum(values(r, (WORLD * 3,), torch.float32, 460 + i) for r in range(WORLD))[RANK * 3:RANK * 3 + 3],
             "coalesced reduce_scatter_tensor")
    # reduce / gather / scatter through the host.
    for root in range(WORLD):
        t = tensor(values(RANK, (3,), torch.float32, 600 + root), torch.float32)
        dist.reduce(t, dst=root, op=R.SUM)
        if RANK == root:
            same(t, sum(values(r, (3,), torch.float32, 600 + root) for r in range(WORLD)), "reduce")
        got = [torch.empty(3, device=DEVICE) for _ in range(WORLD)] if RANK == root else None
        dist.gather(tensor(values(RANK, (3,), torch.float32, 700), torch.float32), got, dst=root)
        if RANK == root:
            for r in range(WORLD):
                same(got[r], values(r, (3,), torch.float32, 700), "gather")
        out = torch.empty(2, device=DEVICE)
        parts = [tensor(values(root, (2,), torch.float32, 800 + i), torch.float32) for i in range(WORLD)]
        dist.scatter(out, parts if RANK == root else None, src=root)
        same(out, values(root, (2,), torch.float32, 800 + RANK), "scatter")


def check_alltoall_p2p() -> None:
    # all_to_all_single with uneven splits: rank r sends (r + j + 1) elements to rank j.
    in_splits = [RANK + j + 1 for j in range(WORLD)]
    out_splits = [r + RANK + 1 for r in range(WORLD)]
    src = values(RANK, (sum(in_splits),), torch.float32, 900)
    out = torch.empty(sum(out_splits), device=DEVICE)
    dist.all_to_all_single(out, tensor(src, torch.float32), out_splits, in_splits)
    want = []
    for r in range(WORLD):
        rs = values(r, (sum(r + j + 1 for j in range(WORLD)),), torch.float32, 900)
        start = sum(r + j + 1 for j in range(RANK))
        want.append(rs[start:start + r + RANK + 1])
    same(out, np.concatenate(want), "all_to_all_single uneven")
    outs = [torch.empty(2, dtype=torch.int64, device=DEVICE) for _ in range(WORLD)]
    dist.all_to_all(outs, [tensor(np.full(2, 10 * RANK + j, dtype=np.float64), torch.int64) for j in range(WORLD)])
    for r in range(WORLD):
        same(outs[r], np.full(2, 10 * r + RANK, dtype=np.float64), "all_to_all lists")
    # A ring of send/recv, posted together (batch_isend_irecv), and a blocking pair.
    nxt, prv = (RANK + 1) % WORLD, (RANK - 1) % WORLD
    got = torch.empty(5, device=DEVICE)
    works = dist.batch_isend_irecv([dist.P2POp(dist.isend, tensor(values(RANK, (5,), torch.float32, 1000), torch.float32), nxt),
                                    dist.P2POp(dist.irecv, got, prv)])
    for w in works:
        w.wait()
    same(got, values(prv, (5,), torch.float32, 1000), "isend/irecv ring")
    if RANK == 0:
        dist.send(tensor(np.arange(4.0), torch.float32), dst=WORLD - 1)
    elif RANK == WORLD - 1:
        t = torch.empty(4, device=DEVICE)
        dist.recv(t, src=0)
        same(t, np.arange(4.0), "send/recv")
    if RANK == WORLD - 1:
        dist.send(tensor(np.full(3, 7.0), torch.int32), dst=0)
    elif RANK == 0:
        t = torch.empty(3, dtype=torch.int32, device=DEVICE)
        sender = dist.recv(t)  # From any rank.
        assert sender == WORLD - 1, sender
        same(t, np.full(3, 7.0), "recv from any source")
    dist.barrier()


def scenario_ops() -> None:
    init(os.environ.get("HAL_TEST_BACKEND", "hal"))
    check_allreduce()
    check_other_dtypes()
    check_broadcast_gather()
    check_alltoall_p2p()
    if os.environ.get("HAL_COLLECTIVES") != "host":
        print(json.dumps(layout()))
    dist.destroy_process_group()


def scenario_async() -> None:
    """Two async ops in flight, waited for later, in reverse; futures carry the outputs."""
    init()
    a = torch.full((1 << 16,), float(RANK + 1), device=DEVICE)
    b = torch.full((3,), float(RANK), device=DEVICE)
    wa = dist.all_reduce(a, async_op=True)
    wb = dist.all_reduce(b, op=R.MAX, async_op=True)
    fut = wb.get_future()
    assert wb.wait() and wa.wait()
    same(fut.wait()[0], np.full(3, float(WORLD - 1)), "future value")
    same(a, np.full(1 << 16, WORLD * (WORLD + 1) / 2), "async all_reduce")
    assert wa.is_completed() and wa.exception() is None
    # The caller's stream order: a value written on the current stream just before the call is what is reduced.
    c = torch.zeros(1 << 15, device=DEVICE)
    c.add_(RANK + 2)
    dist.all_reduce(c)
    same(c, np.full(1 << 15, sum(r + 2 for r in range(WORLD))), "stream order")
    # ...also when the value comes from an async copy still queued on a side stream (the current one).
    side = torch.hal.Stream(DEVICE)
    d = torch.zeros(1 << 22, device=DEVICE)
    torch.hal.synchronize()
    src = torch.full((1 << 22,), float(RANK + 1)).pin_memory()
    with torch.hal.stream(side):
        for _ in range(4):
            d.copy_(src, non_blocking=True)
        w = dist.all_reduce(d, async_op=True)
    w.wait()
    same(d, np.full(1 << 22, WORLD * (WORLD + 1) / 2), "stream order on a side stream")
    # A subgroup (its own worker, store prefix and communicator) next to the world group.
    ends = dist.new_group([0, WORLD - 1])
    if RANK in (0, WORLD - 1):
        e = torch.full((5,), float(RANK + 1), device=DEVICE)
        dist.all_reduce(e, group=ends)
        same(e, np.full(5, float(1 + WORLD)), "all_reduce in a subgroup")
    dist.all_reduce(c)
    same(c, np.full(1 << 15, WORLD * sum(r + 2 for r in range(WORLD))), "the world group after the subgroup's op")
    dist.destroy_process_group()


def scenario_errors() -> None:
    """Bad arguments raise clear errors at the call, and the group keeps working."""
    global checks
    init()
    for bad, needle in ((lambda: dist.all_reduce(torch.ones(2, device=DEVICE), op=dist._make_nccl_premul_sum(2.0)), "PREMUL"),
                        (lambda: dist.all_gather_into_tensor(torch.empty(3, device=DEVICE),
                                                             torch.ones(2, device=DEVICE)), "elements"),
                        (lambda: dist.all_reduce(torch.ones(2, device=DEVICE), op=R.BXOR), "integer or bool"),
                        (lambda: dist.all_reduce(torch.ones(2, dtype=torch.uint64, device=DEVICE), op=R.MAX),
                         "uint64"),
                        (lambda: dist.all_reduce(torch.ones(2, dtype=torch.bool, device=DEVICE), op=R.AVG), "bool"),
                        (lambda: dist.all_reduce(torch.zeros(2, dtype=torch.float8_e5m2fnuz, device=DEVICE)),
                         "not supported")):
        try:
            bad()
        except (ValueError, TypeError, RuntimeError) as e:
            assert needle in str(e), str(e)
            checks += 1
        else:
            raise AssertionError(f"no error (expected one about {needle})")
    t = torch.ones(2, device=DEVICE)
    dist.all_reduce(t)
    same(t, np.full(2, float(WORLD)), "after errors")
    dist.destroy_process_group()


def scenario_kill() -> None:
    """The last rank dies (SIGKILL) after the first all-reduce; the others must fail within the timeout."""
    init()
    t = torch.ones(4, device=DEVICE)
    dist.all_reduce(t)
    if RANK == WORLD - 1:
        os.kill(os.getpid(), 9)
    began = time.monotonic()
    try:
        dist.all_reduce(torch.ones(1 << 10, device=DEVICE))
    except Exception as e:  # noqa: BLE001 - the test inspects the message.
        print(json.dumps({"error": f"{type(e).__name__}: {e}", "seconds": time.monotonic() - began}))
        os._exit(0)  # The group is broken; skip the teardown.
    raise AssertionError("all_reduce with a dead peer did not fail")


def scenario_hang() -> None:
    """The last rank stops taking part (alive, asleep); the others' next op fails within the timeout."""
    init()
    dist.all_reduce(torch.ones(4, device=DEVICE))
    if RANK == WORLD - 1:
        time.sleep(TIMEOUT + 3)  # Past the others' timeout, then away.
        os._exit(0)
    began = time.monotonic()
    try:
        dist.broadcast(torch.ones(1 << 10, device=DEVICE), src=WORLD - 1)
    except Exception as e:  # noqa: BLE001 - the test inspects the message.
        print(json.dumps({"error": f"{type(e).__name__}: {e}", "seconds": time.monotonic() - began}))
        os._exit(0)
    raise AssertionError("broadcast from a hung peer did not fail")


def scenario_abort() -> None:
    """Rank 0 aborts while its all-reduce waits for rank 1, which joins late: the work fails at once, the group
    refuses new ops; destroy_process_group stops the threads on the other rank."""
    import threading

    init()
    dist.all_reduce(torch.ones(2, device=DEVICE))
    if RANK == 0:
        w = dist.all_reduce(torch.ones(1 << 12, device=DEVICE), async_op=True)
        time.sleep(0.5)
        began = time.monotonic()
        dist.distributed_c10d._get_default_group().abort()
        try:
            w.wait()
        except dist.DistBackendError as e:
            assert "aborted" in str(e), str(e)
            assert time.monotonic() - began < TIMEOUT / 2
        else:
            raise AssertionError("an aborted work succeeded")
        try:
            dist.all_reduce(torch.ones(2, device=DEVICE))
        except dist.DistBackendError as e:
            assert "aborted" in str(e) or "shut down" in str(e), str(e)
        else:
            raise AssertionError("an op on an aborted group succeeded")
        print("aborted")
        os._exit(0)
    before = {t.name for t in threading.enumerate()}
    assert any(n.startswith("hal-pg") for n in before), before
    time.sleep(3)
    try:
        dist.all_reduce(torch.ones(1 << 12, device=DEVICE))
    except Exception:  # noqa: BLE001 - rank 0 aborted; this op fails (peer gone or timeout).
        pass
    dist.destroy_process_group()
    time.sleep(0.2)
    left = [t.name for t in threading.enumerate() if t.name.startswith("hal-pg")]
    assert not left, left


def layout() -> dict:
    """The default group's topology as this rank saw it (after a collective on a hal tensor)."""
    pg = dist.distributed_c10d._get_default_group()
    paths = pg._paths
    return {"hosts": len({p.host for p in paths.topology.peers}), "islands": paths.topology.islands,
            "hierarchical": paths.hierarchical is not None, "single": paths.single,
            "leaders": type(paths.leaders).__name__ if paths.leaders is not None else None}


def sum_digest(group: dist.ProcessGroup) -> str:
    """A digest of the bits of many all-reduces of wide-ranging floats over |group|."""
    import hashlib

    digest = hashlib.sha256()
    for dtype in (torch.float32, torch.bfloat16, torch.float16, torch.float64):
        for n in (1, 1000, 4097):
            for op in (R.SUM, R.AVG):
                rng = np.random.default_rng(n * 7 + RANK)
                mine = rng.standard_normal(n) * 10.0 ** rng.uniform(-3, 3, n)
                if dtype == torch.float16:
                    mine = np.clip(mine, -600, 600)
                t = tensor(mine, dtype)
                dist.all_reduce(t, op=op, group=group)
                digest.update(t.to("cpu").view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def scenario_deterministic() -> None:
    """Digests of sums in deterministic mode (the world group, HAL_DETERMINISTIC_REDUCE=1) and without it (a
    second group made with the mode off), compared across device mixes by the test."""
    import hashlib

    global checks
    init()
    digest = sum_digest(dist.group.WORLD)
    # float32 Kahan: within two float32 roundings of the exact sum, relative to the terms' magnitude.
    xs = [np.float32(np.random.default_rng(50 + r).standard_normal(2048) * 1e3) for r in range(WORLD)]
    t = tensor(xs[RANK].astype(np.float64), torch.float32)
    dist.all_reduce(t)
    stack = np.stack([x.astype(np.float64) for x in xs])
    error = np.abs(t.to("cpu").double().numpy() - stack.sum(0))
    assert np.all(error <= 2 * np.finfo(np.float32).eps * np.abs(stack).sum(0)), error.max()
    checks += 1
    out = torch.empty(8, dtype=torch.bfloat16, device=DEVICE)
    dist.reduce_scatter_tensor(out, tensor(np.random.default_rng(60 + RANK).standard_normal(8 * WORLD), torch.bfloat16))
    shard = hashlib.sha256(out.to("cpu").view(torch.uint8).numpy().tobytes()).hexdigest()
    os.environ["HAL_DETERMINISTIC_REDUCE"] = "0"  # Read when a group is made.
    plain = sum_digest(dist.new_group(list(range(WORLD))))
    print(json.dumps({"digest": digest, "shard": shard, "plain": plain}))
    dist.destroy_process_group()


def scenario_hosts() -> None:
    """All-reduces across two 'hosts' (network namespaces); reports the topology seen."""
    init()
    for n in (3, 1 << 20, (5 << 20) + 3):
        mine = values(RANK, (n,), torch.float32, n % 97)
        t = tensor(mine, torch.float32)
        dist.all_reduce(t)
        same(t, sum(values(r, (n,), torch.float32, n % 97) for r in range(WORLD)), f"all_reduce {n} across hosts")
    print(json.dumps(layout()))
    dist.destroy_process_group()


if __name__ == "__main__":
    globals()[f"scenario_{sys.argv[1]}"]()
    print(f"OK {checks}")
