"""The model's per-layer times on each of the job's device kinds, measured by the job itself.

A worker sees only its own device, so the job measures cooperatively: the lowest rank of each kind profiles the
layers on its device (`hal.plan.profile_layers`), one kind after the other while the others wait (emulated
devices share the host's cores: measured side by side, their times would be each other's noise), and every
rank gathers the measurements into one ModelSpec, which rank 0 caches as JSON. A restart finds the cache.
Collective.

`measure_tensor_parallel(job, spec, ...)` adds, for each kind with devices to spare on one node, the times of
each layer's shard on a tensor-parallel stage of t of them (`LayerSpec.measured_tp`): the lowest t ranks of the
kind run the sharded layers together, all-reduces and all, one kind and degree at a time. On emulated devices a
tensor-parallel all-reduce inside a step costs several times what the ring formula over the measured link
says (both ranks synchronise with their devices at every one), so the formula alone under-predicted tp plans
1.7-2.7x (docs/validation.md).

`measure_link(job)` times the job's own all-reduce (the path its gradient and tensor-parallel sums take) and
fits the cost model's Link to it: without a cluster file the planner otherwise assumes a nominal link, which on
emulated devices is 30x too fast.

`calibrated(spec, factors)` scales a kind's measured times by measured / predicted of a whole step (a job of
that kind alone): per-layer profiles miss what a step adds around the layers (the loss, the stats exchange).
"""
from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.distributed as dist

from hal.parallel.flat import FlatParams
from hal.parallel.job import Job
from hal.parallel.tensor_parallel import TensorParallel, shard_layer
from hal.parallel.tensor_parallel import probe as tp_probe
from hal.plan.cluster import Link
from hal.plan.cost import ring_link
from hal.plan.model import ModelSpec

__all__ = ["measure_spec", "measure_tensor_parallel", "measure_link", "calibrated"]


def _load(path: Path | None) -> ModelSpec | None:
    if path is None or not path.exists():
        return None
    try:
        return ModelSpec.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _has(spec: ModelSpec | None, kind: str, micro_batches: Sequence[int]) -> bool:
    have = spec.layers[0].measured if spec is not None and spec.layers else {}
    return kind in have and all(b in have[kind] for b in micro_batches)


def _save(spec: ModelSpec, path: Path | None) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(spec.to_dict()))
        tmp.replace(path)


def _merge(into: ModelSpec | None, part: ModelSpec) -> ModelSpec:
    if into is None or len(into.layers) != len(part.layers):
        return part
    into.merge_measured(part)
    return into


def measure_spec(job: Job, name: str, build_layers: Callable[[], list], make_input: Callable[[int], Any],
                 micro_batches: Sequence[int], seq_len: int, loss_fn: Callable | None = None,
                 optimizer: Callable | None = None, repeats: int = 3, cache: str | Path | None = None,
                 log: Callable[[str], None] | None = None) -> ModelSpec:
    """The ModelSpec of `build_layers()` with forward/backward/optimizer times per micro-batch size for every
    kind in the job (see the module's docstring). Kinds the cache has are not measured again; the others are
    added to it."""
    from hal.plan.profile_layers import profile_torch_layers
    path = Path(cache) if cache else None
    box: list = [None]
    if job.rank == 0:
        cached = _load(path)
        box[0] = cached.to_dict() if cached is not None else None
    dist.broadcast_object_list(box, src=0)
    spec = ModelSpec.from_dict(box[0]) if box[0] is not None else None
    firsts: dict[str, int] = {}
    for r, rec in enumerate(job.records):
        if not _has(spec, rec.kind, micro_batches):
            firsts.setdefault(rec.kind, r)
    if not firsts:
        return spec
    mine = None
    for kind, first in firsts.items():
        if first != job.rank:
            dist.barrier()  # wait for this kind's profile to finish: one kind at a time
            continue
        if log:
            log(f"profiling {name} on {job.record.label}, micro-batches {list(micro_batches)}")
        try:
            mine = profile_torch_layers(build_layers(), make_input, device=str(job.device), kind=job.record.kind,
                                        micro_batches=micro_batches, seq_len=seq_len, name=name, repeats=repeats,
                                        # as the trainer steps it: over one flat buffer (flat.py)
                                        optimizer=(lambda ps: FlatParams(ps).optimizer(optimizer)[0])
                                        if optimizer is not None else None,
                                        loss_fn=loss_fn, stat="median",
                                        tp_probe=tp_probe).to_dict()
        except Exception as e:  # noqa: BLE001 - the others must learn it rather than wait
            mine = {"error": f"{job.record.label}: {type(e).__name__}: {e}"}
        dist.barrier()
    parts: list = [None] * job.world_size
    dist.all_gather_object(parts, mine)
    errors = [p["error"] for p in parts if p and "error" in p]
    if errors:
        raise RuntimeError("profiling the model failed: " + "; ".join(errors))
    for p in parts:
        if p is not None:
            spec = _merge(spec, ModelSpec.from_dict(p))
    if job.rank == 0:
        _save(spec, path)
    return spec


def measure_tensor_parallel(job: Job, spec: ModelSpec, build_layers: Callable[[], list], make_input: Callable[[int], Any],
                            micro_batches: Sequence[int], degrees: Sequence[int], loss_fn: Callable | None = None,
                            repeats: int = 3, cache: str | Path | None = None,
                            log: Callable[[str], None] | None = None) -> ModelSpec:
    """`spec` with `measured_tp[kind][t][mbs]` for every degree t > 1 of `degrees` and kind with t devices on
    one node (see the module's docstring); what `spec` already has is not measured again. Collective."""
    path = Path(cache) if cache else None
    todo = []  # (kind, t, ranks)
    for t in sorted({d for d in degrees if d > 1}):
        per_node: dict[tuple[str, int], list[int]] = {}
        for r, rec in enumerate(job.records):
            per_node.setdefault((rec.kind, rec.node_rank), []).append(r)
        done = set()
        for (kind, _), ranks in sorted(per_node.items(), key=lambda kv: kv[1][0]):
            have = spec.layers[0].measured_tp.get(kind, {}).get(t, {}) if spec.layers else {}
            if len(ranks) >= t and kind not in done and not all(b in have for b in micro_batches):
                todo.append((kind, t, tuple(ranks[:t])))
                done.add(kind)
    if not todo:
        return spec
    mine: list[dict] = []  # per (kind, degree) whose tp group this rank leads: its times (or its error)
    for kind, t, ranks in todo:
        group = dist.new_group(list(ranks), timeout=job.timeout)  # every rank, in the same order
        if job.rank not in ranks:
            dist.barrier()  # one kind and degree at a time: emulated devices share the host's cores
            continue
        if log:
            log(f"profiling {spec.name}'s shards on a tensor-parallel stage of {t} x {kind}, micro-batches "
                f"{list(micro_batches)}")
        try:
            times = _time_shards(job, TensorParallel(ranks.index(job.rank), t, group), build_layers, make_input,
                                 micro_batches, loss_fn, repeats)
            if job.rank == ranks[0]:
                mine.append({"kind": kind, "t": t, "times": times})
        except Exception as e:  # noqa: BLE001 - the others must learn it rather than wait
            mine.append({"error": f"{job.record.label}: {type(e).__name__}: {e}"})
        dist.barrier()
    parts: list = [None] * job.world_size
    dist.all_gather_object(parts, mine)
    errors = [q["error"] for ps in parts for q in ps if "error" in q]
    if errors:
        raise RuntimeError("profiling the model's tensor-parallel shards failed: " + "; ".join(errors))
    for part in (q for ps in parts for q in ps):
        for layer, per_mbs in zip(spec.layers, part["times"]):
            layer.measured_tp.setdefault(part["kind"], {}).setdefault(part["t"], {}).update(
                {int(b): tuple(v) for b, v in per_mbs.items()})
    if job.rank == 0:
        _save(spec, path)
    return spec


def _time_shards(job: Job, tp: TensorParallel, build_layers, make_input, micro_batches, loss_fn,
                 repeats: int) -> list[dict[int, tuple[float, float]]]:
    """Per layer, {mbs: (forward s, backward s)} of this rank's shard (median of `repeats`), every rank of the
    tp group running the same layer on the same input at once (as a tp stage does)."""
    torch.manual_seed(0)
    layers = [m.to(job.device) for m in build_layers()]
    for m in layers:
        shard_layer(m, tp)
    ping = torch.zeros(1, device=job.device)

    def timed(fn) -> float:
        dist.all_reduce(ping, group=tp.group)  # start together
        job.synchronize()
        t0 = time.perf_counter()
        fn()
        job.synchronize()
        return time.perf_counter() - t0

    out: list[dict[int, tuple[float, float]]] = [{} for _ in layers]
    for mbs in micro_batches:
        x = make_input(mbs)
        x = x.to(job.device) if isinstance(x, torch.Tensor) else x
        x0 = x
        for li, m in enumerate(layers):
            inp = x.detach().requires_grad_(x.is_floating_point()) if isinstance(x, torch.Tensor) else x
            last = loss_fn is not None and li == len(layers) - 1

            def run(m=m, inp=inp, last=last):
                o = m(inp)
                return loss_fn(o, x0) if last else o

            y = run()
            grad = None if last else torch.ones_like(y) / y.numel()

            def fwd_bwd(run=run, grad=grad):
                run().backward(grad)

            fwd_bwd()  # warm-up
            pairs = [(timed(run), timed(fwd_bwd)) for _ in range(repeats)]
            f = statistics.median(a for a, _ in pairs)
            out[li][mbs] = (f, statistics.median(max(b - a, 0.0) for a, b in pairs))
            x = (y if not last else x).detach()
    return out


def measure_link(job: Job, small_bytes: int = 256, large_bytes: int = 4 << 20, repeats: int = 7) -> Link | None:
    """The Link under which the cost model's ring all-reduce takes what the job's all-reduce over all its ranks
    takes here (median of `repeats` each of a small and a large fp32 tensor on the ranks' devices). None for a
    job of one rank, or one over several nodes (a world all-reduce there says nothing of the links inside a
    node). Collective: every rank calls it."""
    n = job.world_size
    if n <= 1 or len({r.node_rank for r in job.records}) > 1:
        return None
    medians = []
    for nbytes in (small_bytes, large_bytes):
        t = torch.zeros(max(1, nbytes // 4), dtype=torch.float32, device=job.device)
        dist.all_reduce(t)  # the group's device paths are set up by the first one
        times = []
        for _ in range(repeats):
            job.synchronize()
            dist.barrier()
            t0 = time.perf_counter()
            dist.all_reduce(t)
            job.synchronize()
            times.append(time.perf_counter() - t0)
        medians.append(statistics.median(times))
    # Every rank adopts rank 0's figures, so that all plan and predict alike.
    box = [medians]
    dist.broadcast_object_list(box, src=0)
    (small, large) = box[0]
    return ring_link(n, (small_bytes, small), (large_bytes, large))


def calibrated(spec: ModelSpec, factors: dict[str, float]) -> ModelSpec:
    """A copy of `spec` with kind k's measured forward, backward (whole and tensor-parallel shards) and optimizer
    times times factors[k]."""
    out = ModelSpec.from_dict(spec.to_dict())
    for layer in out.layers:
        for kind, f in factors.items():
            if not (f > 0):
                raise ValueError(f"calibration factor for {kind}: {f!r}; must be > 0")
            if kind in layer.measured:
                layer.measured[kind] = {b: (fw * f, bw * f) for b, (fw, bw) in layer.measured[kind].items()}
            if kind in layer.measured_optimizer:
                layer.measured_optimizer[kind] *= f
            for t, per in layer.measured_tp.get(kind, {}).items():
                layer.measured_tp[kind][t] = {b: (fw * f, bw * f) for b, (fw, bw) in per.items()}
    return out
