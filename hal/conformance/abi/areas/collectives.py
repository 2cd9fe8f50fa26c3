"""Collectives (collective.h, optional): two processes, each loading the plugin through cffi on its own,
make one communicator from a unique id passed between them, and run allreduce (and broadcast, allgather
when present) on device 0; every rank checks its results. A rank that hangs is killed at the timeout and
named with the entry it was in.

`python -m hal.conformance.abi.areas.collectives SPEC` is one rank."""
from __future__ import annotations

import array
import json
import os
import subprocess
import sys
import tempfile

from hal.conformance.abi import ffi as abi
from hal.conformance.abi.case import case, require
from hal.conformance.abi.ffi import ffi

NRANKS, COUNT = 2, 4096


@case("collectives")
def test_two_ranks(ctx):
    """allreduce (sum), broadcast and allgather if present, across 2 processes on device 0."""
    require(ctx, "comm_get_unique_id", "comm_init_rank", "comm_destroy", "comm_abort", "allreduce")
    uid = ffi.new("hal_comm_unique_id_t*")
    ctx.p.check(ctx.p.api.comm_get_unique_id(uid), "comm_get_unique_id")
    with tempfile.TemporaryDirectory(prefix="hal-conformance-ranks-") as scratch:
        procs = []
        for rank in range(NRANKS):
            spec = {"plugin": str(ctx.p.path), "config": ctx.config, "device": ctx.device, "rank": rank,
                    "id": bytes(uid.bytes).hex(), "entry_file": os.path.join(scratch, f"rank{rank}")}
            procs.append(subprocess.Popen([sys.executable, "-m", __name__, json.dumps(spec)], stdout=subprocess.PIPE,
                                          stderr=subprocess.STDOUT, text=True))
        problems = []
        for rank, proc in enumerate(procs):
            try:
                out, _ = proc.communicate(timeout=max(ctx.timeout * 0.7, 5))
            except subprocess.TimeoutExpired:
                for other in procs:
                    other.kill()
                entry_file = os.path.join(scratch, f"rank{rank}")
                entry = open(entry_file).read() if os.path.exists(entry_file) else "?"
                problems.append(f"rank {rank} hung in {entry or 'no entry'}")
                break
            last = out.strip().splitlines()[-1] if out.strip() else ""
            if proc.returncode != 0 or last != "ok":
                problems.append(f"rank {rank} (exit {proc.returncode}): {last or out[-300:]}")
        for proc in procs:
            proc.wait()
        assert not problems, "; ".join(problems)


def _rank(spec: dict) -> None:
    def on_entry(names):
        with open(spec["entry_file"], "w") as f:
            f.write(", ".join(names))

    p = abi.Plugin(spec["plugin"], on_entry=on_entry)
    p.check(p.initialize(spec["config"]), "initialize")
    dev, rank, api = spec["device"], spec["rank"], p.api
    uid = ffi.new("hal_comm_unique_id_t*")
    ffi.memmove(uid.bytes, bytes.fromhex(spec["id"]), 128)
    comm = ffi.new("hal_comm_t*")
    p.check(api.comm_init_rank(dev, NRANKS, uid, rank, ffi.NULL, comm), "comm_init_rank")
    s = p.stream(dev)
    n = COUNT * 4
    send, recv = p.allocate(dev, n * NRANKS), p.allocate(dev, n * NRANKS)

    def put(ptr, values):
        data = array.array("f", values).tobytes()
        p.check(api.memcpy_h2d_async(s, ptr, ffi.from_buffer(data), len(data)), "memcpy_h2d_async")
        p.check(api.stream_synchronize(s), "stream_synchronize")

    def get(ptr, count):
        out = bytearray(4 * count)
        p.check(api.memcpy_d2h_async(s, ffi.from_buffer(out), ptr, len(out)), "memcpy_d2h_async")
        p.check(api.stream_synchronize(s), "stream_synchronize")
        return array.array("f", bytes(out))

    put(send, [rank + 1.0 + i % 7 for i in range(COUNT)])
    p.check(api.allreduce(comm[0], send, recv, COUNT, abi.DTYPE_F32, abi.REDUCE_SUM, s), "allreduce")
    got = get(recv, COUNT)
    want = [sum(r + 1.0 + i % 7 for r in range(NRANKS)) for i in range(COUNT)]
    assert list(got) == want, f"allreduce sum: element 0 is {got[0]}, not {want[0]}"
    if p.has("broadcast"):
        put(send, [float(rank * 100 + i % 5) for i in range(COUNT)])
        p.check(api.broadcast(comm[0], send, recv, COUNT, abi.DTYPE_F32, 0, s), "broadcast")
        assert list(get(recv, COUNT)) == [float(i % 5) for i in range(COUNT)], "broadcast from rank 0 differs"
    if p.has("allgather"):
        put(send, [float(rank)] * COUNT)
        p.check(api.allgather(comm[0], send, recv, COUNT, abi.DTYPE_F32, s), "allgather")
        got = get(recv, COUNT * NRANKS)
        assert list(got) == [float(r) for r in range(NRANKS) for _ in range(COUNT)], "allgather is not in rank order"
    p.check(api.comm_destroy(comm[0]), "comm_destroy")
    p.check(api.stream_destroy(s), "stream_destroy")
    p.free(dev, send)
    p.free(dev, recv)
    api.shutdown()


if __name__ == "__main__":
    try:
        _rank(json.loads(sys.argv[1]))
    except Exception as e:
        print(f"{type(e).__name__}: {e}", flush=True)
        sys.exit(1)
    print("ok", flush=True)
