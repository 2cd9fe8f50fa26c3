"""The API a training script calls: apply a plan across the job's processes and train step by step.

    job = hal.parallel.init_job()
    plan, why = hal.parallel.trainer.resolve_plan(job, plan_fn, n_layers)   # --plan, or planned for these devices
    trainer = hal.parallel.setup(job, plan, layers_fn, optimizer_fn, loss_fn)
    for step in range(start, steps):
        stats = trainer.step(inputs, targets)       # every rank passes the same global batch (CPU tensors)
    trainer.save_checkpoint(directory, step, extra) / trainer.load_checkpoint(directory)

Every rank builds the whole model from `layers_fn()` (a list of modules; same seed, so every replica starts
from the same weights) and keeps the layers its stage holds, on its device. A step is: the 1F1B schedule over
the pipeline's micro-batches (`pipeline.py`), the sum of gradients over the replicas of each layer
(`data_parallel.py`), the optimizer step, and one small exchange of every rank's loss and timings (Gloo).
With ZeRO-1 in the plan (`plan.techniques.zero == 1`), the sums of the replicated layers are reduce-scatters,
the optimizer steps (and keeps the state of) this rank's 1/N of them, and an all-gather of the updated weights
follows the step (`zero.py`).

Checkpoints are device-neutral: per layer (by its index in the model), its parameters and optimizer state on the
CPU, written by rank 0 from the first pipeline's stages (replicas hold the same weights), so a job resumes on any
other mix of devices and any other plan.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist
from torch import nn

from hal.parallel import PlanMismatch
from hal.parallel.data_parallel import GradientSync
from hal.parallel.devices import check_plan, idle_devices
from hal.parallel.flat import FlatParams
from hal.parallel.job import Job
from hal.parallel.pipeline import StageRunner, StageTimes
from hal.parallel.roles import Role, batch_rows, check_structure, micro_batches, role_of, segments, tp_groups
from hal.parallel.tensor_parallel import Shard, TensorParallel, shard_layer, shards_of
from hal.parallel.zero import ZeroOptimizer, all_gather_single, zero_buckets
from hal.plan.cluster import Cluster
from hal.plan.plan import Plan

__all__ = ["setup", "resolve_plan", "Trainer", "StepStats", "RankStats"]


def resolve_plan(job: Job, plan_fn: Callable[[Cluster], Plan] | None, n_layers: int) -> tuple[Plan, str]:
    """The plan this job runs and why: the launcher's --plan while it matches the job's devices; otherwise (a
    restart on fewer devices, or no --plan) `plan_fn(live cluster)`, computed on rank 0 and sent to all.

    On the first round a --plan that does not match is an error (PlanMismatch), not silently replaced."""
    reason = ""
    if job.plan_path:
        try:
            plan = Plan.from_json(Path(job.plan_path).read_text())
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise PlanMismatch(f"--plan {job.plan_path}: cannot be read as a plan: {type(e).__name__}: {e}") from e
        try:
            check_plan(plan, job.records, whose=job.plan_path)
            check_structure(plan, n_layers)
            return plan, f"from {job.plan_path}" + _idle_note(plan, job)
        except PlanMismatch as e:
            if job.restart == 0 or plan_fn is None:
                raise
            reason = f"re-planned for the {job.world_size} devices left ({e})"
    if plan_fn is None:
        raise PlanMismatch("no plan: start the job with hal launch --plan PLAN.json, or pass a plan_fn")
    box: list = [None]
    if job.rank == 0:
        try:
            box[0] = plan_fn(job.cluster()).to_dict()
        except Exception as e:  # noqa: BLE001 - every rank must learn that planning failed, not wait for a plan
            box[0] = {"error": f"{type(e).__name__}: {e}"}
    dist.broadcast_object_list(box, src=0)
    if "error" in box[0]:
        raise PlanMismatch(f"planning for the job's {job.world_size} devices failed: {box[0]['error']}")
    plan = Plan.from_dict(box[0])
    check_plan(plan, job.records, whose="planned")
    check_structure(plan, n_layers)
    return plan, (reason or f"planned for the job's {job.world_size} devices") + _idle_note(plan, job)


def _idle_note(plan: Plan, job: Job) -> str:
    idle = idle_devices(plan, job.records)
    return f"; idle (the plan does not use them): {', '.join(r.label for r in idle)}" if idle else ""


@dataclass
class RankStats:
    rank: int
    kind: str
    pipeline: int
    stage: int
    step_s: float
    wait_s: float        # blocked on pipeline neighbours
    compute_s: float     # forward + backward
    allreduce_s: float   # gradient sums with the other replicas
    optimizer_s: float   # optimizer step and the device's final synchronization
    cpu_s: float = 0.0   # host CPU time the rank's process used in the step (all its threads)


@dataclass
class StepStats:
    step_s: float                  # the slowest rank's step (wall clock, each rank's device synchronized)
    loss: float                    # the global batch's mean loss
    samples: int
    ranks: list[RankStats] = field(default_factory=list)
    events: list = field(default_factory=list)   # this rank's (op, micro-batch, t0, t1, t2) when recorded

    @property
    def bubble_fraction(self) -> float:
        """The share of the ranks' step time spent waiting for pipeline neighbours (mean over ranks)."""
        busy = [r for r in self.ranks if r.pipeline >= 0 and r.step_s > 0]
        return sum(r.wait_s / r.step_s for r in busy) / max(1, len(busy))


_STATS = 8  # loss_sum, step_s, wait_s, compute_s, allreduce_s, optimizer_s, samples, cpu_s


class Trainer:
    def __init__(self, job: Job, plan: Plan, layers_fn: Callable[[], list[nn.Module]],
                 optimizer_fn: Callable[[list[nn.Parameter]], torch.optim.Optimizer], loss_fn: Callable,
                 seed: int = 0):
        self.job, self.plan = job, plan
        ranks_of = {d: r for r, d in job.device_ids.items()}
        self.roles: list[Role] = [role_of(plan, ranks_of, r) for r in range(job.world_size)]  # every rank's
        self.role: Role = self.roles[job.rank]
        torch.manual_seed(seed)
        every = list(layers_fn())
        self.num_layers = len(every)
        check_structure(plan, self.num_layers)
        start, end = self.role.layers
        # Collective calls, in the same order on every rank: the tensor-parallel groups, the headers' group,
        # then the gradients' groups.
        tp_group = None
        for ranks in tp_groups(plan, ranks_of):
            group = dist.new_group(list(ranks), timeout=job.timeout)
            if job.rank in ranks:
                tp_group = group
        self.tp = TensorParallel(self.role.tp_rank, self.role.tp_size, tp_group)
        layers = every[start:end]
        self.sharded = [i for i, layer in enumerate(layers) if shard_layer(layer, self.tp)]
        self.layers = nn.ModuleList(layers).to(job.device)
        del every, layers
        if tp_group is not None:
            dist.all_reduce(torch.zeros(1, device=job.device), group=tp_group)  # sets the group up (see GradientSync)
        self.module = nn.Sequential(*self.layers)
        # The stage's parameters and gradients as views of two buffers; an element-wise optimizer of one group
        # steps the whole buffer (flat.py). Under ZeRO-1 each replicated layer's span is padded to a multiple
        # of its replicas, and the optimizer steps this rank's parts of them (zero.py).
        segs = segments(plan, ranks_of)
        buckets = (zero_buckets(segs, job.rank, start, list(self.layers))
                   if plan.techniques.zero == 1 and not self.role.idle else [])
        self.flat = FlatParams(list(self.layers.parameters()), pad=[(ps, len(ranks)) for ps, ranks in buckets])
        self.optimizer, self.flat_optimizer = (self.flat.optimizer(optimizer_fn) if not self.role.idle
                                               else (None, False))
        self.zero: ZeroOptimizer | None = None
        if buckets and self.flat_optimizer:
            self.zero = ZeroOptimizer(self.flat, self.optimizer, buckets, job.rank)
            self.optimizer = self.zero.optimizer
        headers = dist.new_group(backend="gloo", timeout=job.timeout)
        self.sync = GradientSync(segs, job.rank, start, list(self.layers), job.device, job.timeout,
                                 tp_size=self.role.tp_size, flat=self.flat, zero=self.zero)
        self.runner = StageRunner(self.module, loss_fn, job.device, self.role, headers)
        self.rows = batch_rows(plan, self.role.pipeline) if not self.role.idle else (0, 0)
        self.micro = micro_batches(plan, self.role.pipeline) if not self.role.idle else []
        self.weights = [(e - s) / plan.global_batch for s, e in self.micro]

    def describe(self) -> str:
        r = self.role
        if r.idle:
            return f"rank {self.job.rank} ({self.job.record.label}): idle (the plan does not use this device)"
        tp = ""
        if r.tp_size > 1:
            whole = len(self.layers) - len(self.sharded)
            tp = (f", tensor-parallel rank {r.tp_rank} of {r.tp_size} (ranks {list(r.tp_ranks)}; "
                  f"{len(self.sharded)} layer(s) sharded" + (f", {whole} whole on every rank" if whole else "") + ")")
        zero = ""
        if self.zero is not None:
            zero = (f", ZeRO-1: optimizer state of {self.zero.numel} of the stage's {self.flat.numel} elements "
                    f"({len(self.zero.parts)} layer(s) sharded)")
        return (f"rank {self.job.rank} ({self.job.record.label}): pipeline {r.pipeline} stage {r.stage} of "
                f"{r.num_stages}, layers {r.layers[0]}-{r.layers[1] - 1}{tp}, {self.rows[1] - self.rows[0]} samples "
                f"in {len(self.micro)} micro-batch(es){zero}")

    def step(self, inputs: torch.Tensor, targets: torch.Tensor, record: bool = False) -> StepStats:
        """One training step on the global batch (inputs, targets: the same CPU tensors on every rank)."""
        if inputs.shape[0] != self.plan.global_batch or targets.shape[0] != self.plan.global_batch:
            raise ValueError(f"step: the global batch has {inputs.shape[0]} inputs and {targets.shape[0]} targets; "
                             f"the plan is for {self.plan.global_batch}")
        base = self.rows[0]
        ins = [inputs[base + s:base + e] for s, e in self.micro] if self.role.first else None
        tgs = [targets[base + s:base + e] for s, e in self.micro] if self.role.last else None
        clock = time.perf_counter
        t0, cpu0 = clock(), time.process_time()
        if self.role.idle:
            times, t1, t2 = StageTimes(), t0, t0
        else:
            if self.flat.ok:
                self.flat.zero_grad()
            else:
                self.optimizer.zero_grad(set_to_none=True)
            times = self.runner.run(ins, tgs, self.weights, record=record, before_last_backward=self.sync.arm)
            t1 = clock()
            self.sync.all_reduce()
            t2 = clock()
            if self.zero is not None:
                self.zero.step()  # the all-gather of the updated weights included
            else:
                self.optimizer.step()
            self.job.synchronize()
        t3 = clock()
        # A stage's tensor-parallel ranks compute the same losses: rank 0 of each stage counts them.
        counts = self.role.tp_rank == 0
        mine = torch.tensor([times.loss_sum if counts else 0.0, t3 - t0, times.wait_s, times.compute_s, t2 - t1,
                             t3 - t2, self.rows[1] - self.rows[0] if self.role.first and counts else 0,
                             time.process_time() - cpu0], dtype=torch.float64)
        every = torch.empty(self.job.world_size * _STATS, dtype=torch.float64)
        all_gather_single(every, mine)
        rows = every.view(self.job.world_size, _STATS).tolist()
        ranks = []
        for r, row in enumerate(rows):
            rec, role = self.job.records[r], self.roles[r]
            ranks.append(RankStats(r, rec.kind, role.pipeline, role.stage, row[1], row[2], row[3], row[4], row[5],
                                   row[7]))
        return StepStats(max(row[1] for row in rows), sum(row[0] for row in rows), int(sum(row[6] for row in rows)),
                         ranks, times.events)

    # --- checkpoints --------------------------------------------------------------------------------------
    def layer_states(self, zero_state: dict | None = None) -> dict[int, dict]:
        """This rank's layers: {layer index: {"params": {name: CPU tensor}, "optim": {name: {key: value}}}}; a
        sharded layer's tensors are this rank's shards, with "tp": [rank, size] and "shards": their layouts.

        Under ZeRO-1 this rank holds a part of the optimizer's state: `zero_state` is the whole buffer's, from
        `ZeroOptimizer.gather_state` (a collective over the replicas: `gather_layer_states` calls it)."""
        if self.zero is not None and zero_state is None:
            raise ValueError("layer_states: under ZeRO-1 this rank holds a part of the optimizer's state; "
                             "gather_layer_states (every rank calls it) assembles the whole")
        out = {}
        for i, layer in enumerate(self.layers):
            optim = {}
            for name, p in layer.named_parameters():
                if self.zero is not None:
                    st = self.flat.cut_state(zero_state, p)
                elif self.flat_optimizer:
                    st = self.flat.optimizer_state(self.optimizer, p)
                else:
                    st = self.optimizer.state.get(p)
                if st:
                    optim[name] = {k: (v.detach().cpu().clone() if torch.is_tensor(v) else v) for k, v in st.items()}
            state = {"params": {k: v.detach().cpu().clone() for k, v in layer.state_dict().items()}, "optim": optim}
            shards = shards_of(layer)
            if shards:
                state["tp"] = [self.role.tp_rank, self.role.tp_size]
                state["shards"] = {n: [list(s.full), list(s.view), s.dim] for n, s in shards.items()}
            out[self.role.layers[0] + i] = state
        return out

    def load_layer_states(self, layers: dict[int, dict]) -> None:
        """Takes this rank's layers from `layers` (whole tensors, as `gather_layer_states`, from any plan);
        raises ValueError naming a missing layer or a parameter whose shape differs."""
        per_param: dict[int, dict] = {}
        # Under ZeRO-1 the whole state is assembled on the CPU and only the owned parts go to the device.
        on_cpu = self.zero is not None
        for i, layer in enumerate(self.layers):
            index = self.role.layers[0] + i
            if index not in layers:
                raise ValueError(f"checkpoint: has no layer {index} (layers {sorted(layers)})")
            state, shards = layers[index], shards_of(layer)
            shapes = {k: v.shape for k, v in layer.state_dict().items()}
            try:
                params = {k: (_take(shards[k], v, k, index, shapes[k]) if k in shards else v)
                          for k, v in state["params"].items()}
                layer.load_state_dict(params)
            except RuntimeError as e:
                raise ValueError(f"checkpoint: layer {index} does not fit this model: {e}") from None
            for name, p in layer.named_parameters():
                st = state["optim"].get(name)
                if st:
                    # 0-dim tensors (Adam's step) stay on the CPU, where torch.optim keeps them.
                    where = "cpu" if on_cpu else p.device
                    per_param[id(p)] = {
                        k: ((_take(shards[name], v, name, index, p.shape) if name in shards else v).to(where)
                            if torch.is_tensor(v) and v.dim() > 0 else v)
                        for k, v in st.items()}
        if self.zero is not None:
            self.zero.refresh()  # the parameters just loaded, into the optimizer's tensor
            self.zero.load_state(self.flat.assemble_state(per_param, "cpu"))
        elif self.flat_optimizer:
            self.flat.load_optimizer_state(self.optimizer, per_param)
        else:
            for p in self.layers.parameters():
                if id(p) in per_param:
                    self.optimizer.state[p] = per_param[id(p)]

    def gather_layer_states(self) -> dict[int, dict] | None:
        """Every layer's state, whole, on rank 0 (None elsewhere): from the first pipeline's stages, their
        tensor-parallel shards joined (under ZeRO-1, the optimizer's state all-gathered from the replicas).
        Collective."""
        zero_state = self.zero.gather_state(keep=self.role.pipeline == 0) if self.zero is not None else None
        mine = self.layer_states(zero_state) if self.role.pipeline == 0 else {}
        out: list | None = [None] * self.job.world_size if self.job.rank == 0 else None
        dist.gather_object(mine, out, dst=0)
        if out is None:
            return None
        parts: dict[int, list[dict]] = {}
        for part in out:
            for index, state in part.items():
                parts.setdefault(index, []).append(state)
        return {index: _join(ps) for index, ps in sorted(parts.items())}

    def save_checkpoint(self, directory: str | Path, step: int, extra: dict | None = None, keep: int = 3) -> Path | None:
        """Writes a checkpoint after `step` (rank 0; every rank calls it). Returns its path on rank 0."""
        from hal.parallel import checkpoint
        layers = self.gather_layer_states()
        path = None
        if self.job.rank == 0:
            hp = {k: v for k, v in self.optimizer.param_groups[0].items() if k != "params"} if self.optimizer else {}
            state = {"layers": layers, "optim_hparams": {k: v for k, v in hp.items()
                                                          if isinstance(v, (int, float, bool, str, tuple, type(None)))},
                     "step": step, "plan": self.plan.to_dict(), "rng": checkpoint.rng_state(),
                     "devices": [r.to_dict() for r in self.job.records], **(extra or {})}
            path = checkpoint.save(directory, step, state, keep=keep)
        box = [str(path) if path else None]
        dist.broadcast_object_list(box, src=0)  # every rank returns after the file is durable
        return Path(box[0]) if self.job.rank == 0 else None

    def load_checkpoint(self, directory: str | Path) -> dict | None:
        """Restores the newest valid checkpoint in `directory` (read by rank 0, sent to all); returns its
        state without the layers (step, data position, ...), or None when there is none."""
        from hal.parallel import checkpoint
        box: list = [None]
        if self.job.rank == 0:
            try:
                found = checkpoint.load_latest(directory)
                box[0] = found[1] if found is not None else None
            except Exception as e:  # noqa: BLE001 - every rank must learn it, not wait for a state
                box[0] = {"error": f"{type(e).__name__}: {e}"}
        dist.broadcast_object_list(box, src=0)
        state = box[0]
        if state is None:
            return None
        if "error" in state:
            raise ValueError(f"checkpoint in {directory}: {state['error']}")
        self.load_layer_states(state["layers"])
        if self.job.rank == 0 and "rng" in state:
            checkpoint.set_rng_state(state["rng"])
        return {k: v for k, v in state.items() if k != "layers"}

    def close(self) -> None:
        self.job.close()


def _take(shard: Shard, whole: torch.Tensor, name: str, index: int, shape) -> torch.Tensor:
    """This rank's part of a whole tensor from a checkpoint, in the shape its sharded parameter has."""
    if tuple(whole.shape) != shard.full:
        raise ValueError(f"checkpoint: layer {index} parameter {name} has shape {list(whole.shape)}; this model's "
                         f"is {list(shard.full)}")
    return shard.take(whole).reshape(shape)


def _join(states: list[dict]) -> dict:
    """One layer's whole state from its tensor-parallel ranks' states (or the one state of a whole layer)."""
    first = min(states, key=lambda st: st.get("tp", [0])[0])
    if "tp" not in first:
        return {"params": first["params"], "optim": first["optim"]}
    states = sorted(states, key=lambda st: st["tp"][0])
    size = first["tp"][1]
    if [st["tp"][0] for st in states] != list(range(size)):
        raise ValueError(f"checkpoint: a layer sharded {size} ways came from tensor-parallel ranks "
                         f"{[st['tp'][0] for st in states]}")
    shards = {n: Shard(tuple(f), tuple(v), d, 0, size) for n, (f, v, d) in first["shards"].items()}
    params = {k: (shards[k].join([st["params"][k] for st in states]) if k in shards else v)
              for k, v in first["params"].items()}
    optim = {}
    for name, st0 in first["optim"].items():
        optim[name] = {k: (shards[name].join([st["optim"][name][k] for st in states])
                           if name in shards and torch.is_tensor(v) and v.dim() > 0 else v) for k, v in st0.items()}
    return {"params": params, "optim": optim}


def setup(job: Job, plan: Plan, layers_fn: Callable[[], list[nn.Module]],
          optimizer_fn: Callable[[list[nn.Parameter]], torch.optim.Optimizer], loss_fn: Callable,
          seed: int = 0) -> Trainer:
    """This rank's part of `plan` (see the module's docstring). Collective: every rank calls it."""
    return Trainer(job, plan, layers_fn, optimizer_fn, loss_fn, seed)
