"""The model's per-layer times on each of the job's device kinds, measured by the job itself.

A worker sees only its own device, so the job measures cooperatively: the lowest rank of each kind profiles the
layers on its device (`hal.plan.profile_layers`), and every rank gathers the measurements into one ModelSpec,
which rank 0 caches as JSON. A restart finds the cache and measures only kinds it lacks. Collective.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Sequence

import torch.distributed as dist

from hal.parallel.job import Job
from hal.plan.model import ModelSpec

__all__ = ["measure_spec"]


def _cached(path: Path | None, kinds: set[str], micro_batches: Sequence[int]) -> ModelSpec | None:
    if path is None or not path.exists():
        return None
    try:
        spec = ModelSpec.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    have = spec.layers[0].measured if spec.layers else {}
    return spec if all(k in have and all(b in have[k] for b in micro_batches) for k in kinds) else None


def measure_spec(job: Job, name: str, build_layers: Callable[[], list], make_input: Callable[[int], Any],
                 micro_batches: Sequence[int], seq_len: int, loss_fn: Callable | None = None,
                 optimizer: Callable | None = None, repeats: int = 3, cache: str | Path | None = None,
                 log: Callable[[str], None] | None = None) -> ModelSpec:
    """The ModelSpec of `build_layers()` with forward/backward/optimizer times per micro-batch size for every
    kind in the job (see the module's docstring)."""
    from hal.plan.profile_layers import profile_torch_layers
    kinds = {r.kind for r in job.records}
    path = Path(cache) if cache else None
    box: list = [_cached(path, kinds, micro_batches) is not None if job.rank == 0 else None]
    dist.broadcast_object_list(box, src=0)
    if box[0]:
        return _cached(path, kinds, micro_batches)
    firsts = {}
    for r, rec in enumerate(job.records):
        firsts.setdefault(rec.kind, r)
    mine = None
    if firsts[job.record.kind] == job.rank:
        if log:
            log(f"profiling {name} on {job.record.label}, micro-batches {list(micro_batches)}")
        try:
            mine = profile_torch_layers(build_layers(), make_input, device=str(job.device), kind=job.record.kind,
                                        micro_batches=micro_batches, seq_len=seq_len, name=name, repeats=repeats,
                                        optimizer=optimizer, loss_fn=loss_fn, stat="median").to_dict()
        except Exception as e:  # noqa: BLE001 - the others must learn it rather than wait
            mine = {"error": f"{job.record.label}: {type(e).__name__}: {e}"}
    parts: list = [None] * job.world_size
    dist.all_gather_object(parts, mine)
    errors = [p["error"] for p in parts if p and "error" in p]
    if errors:
        raise RuntimeError("profiling the model failed: " + "; ".join(errors))
    spec = None
    for p in parts:
        if p is None:
            continue
        s = ModelSpec.from_dict(p)
        if spec is None:
            spec = s
        else:
            for a, b in zip(spec.layers, s.layers):
                a.measured.update(b.measured)
                a.measured_optimizer.update(b.measured_optimizer)
    if job.rank == 0 and path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(spec.to_dict()))
        tmp.replace(path)
    return spec
