"""The ideal measured inside a job: between planned steps, every rank trains the whole model alone, side by side.

A plan is judged against the *ideal*: the sum over the job's devices of each one's tokens/s training the model
alone (no communication), all of them at the same time (on a shared host they share its cores as they do in
the job). Measured as separate jobs a minute or more away from the planned one, the ideal carries the host's
drift between them (10-20 % on a shared 2-core VM), more than the margins it is meant to judge. A probe
measures it inside the job, every K planned steps, so that a drift hits the planned steps and the probes next
to them alike; `summarize` pairs each stretch of planned steps with the probes on either side.

A probe (`AloneProbe.run`, collective: every rank calls it after the same planned step):

  1. each rank builds the whole model from `layers_fn` on its device, with its own `optimizer_fn` optimizer
     (over one flat buffer, as a one-device job's trainer steps it). The weights are the ones the job started
     from (`layers_fn` under the job's seed): a rank of a pipeline holds only its stage's current weights, the
     others' would take communication, and a dense kernel's time does not depend on the values. Every torch
     RNG state of the process (CPU and the HAL devices) is saved before and restored after, and the job's
     model, optimizer and data are not touched: the job's losses are those of a job without probes;
  2. one untimed micro-batch and optimizer step (allocations, the optimizer's state);
  3. a barrier: an all-gather of each rank's status, so that a rank that failed (out of memory) makes every
     rank raise the same ProbeError instead of leaving the others waiting;
  4. the timed window, the same wall duration (`seconds`) on every rank, so that no device trains alone while
     another idles (it would have the host's cores to itself, which the job never gives it): micro-batches of
     the job's size over the step's global batch in order, an optimizer step after each global batch and one
     at the end for the micro-batches since the last (what a one-device job does per step). A rank starts
     another micro-batch while its clock plus half its mean micro-batch time is within `seconds`: every rank
     ends within about half a micro-batch of the duration. The device is synchronized after each micro-batch
     (the clock reads what the device has done);
  5. the probe's model is freed, then a barrier (the all-gather of every rank's samples and seconds): every
     rank starts the next planned step at the same time, as after a planned step.

A device that cannot hold the whole model (with what its own stage holds) makes no probe: `check_fits`, before
the first step, is an error on every rank naming the device, the bytes needed and its capacity. Skipping that
rank instead would leave its device out of the ideal, and the fraction of the ideal would flatter the plan.
"""
from __future__ import annotations

import gc
import math
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch
import torch.distributed as dist
from torch import nn

from hal.parallel.flat import FlatParams
from hal.parallel.job import Job

__all__ = ["AloneProbe", "ProbeError", "RankProbe", "Probe", "check_fits", "summarize"]


class ProbeError(RuntimeError):
    """A probe cannot run (a device too small for the whole model, an error on a rank): every rank raises it,
    with the same message naming the rank and why."""


@dataclass
class RankProbe:
    rank: int
    device: str
    kind: str
    samples: int           # sequences trained in the timed window
    seconds: float         # the timed window's wall time on this rank (its device synchronized)
    micro_batches: int
    optimizer_steps: int
    start: float           # time.time() at the window's start and end: how far apart the ranks ended
    end: float

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.seconds if self.seconds > 0 else 0.0


@dataclass
class Probe:
    after_step: int        # the planned steps done before it
    seq: int
    ranks: list[RankProbe] = field(default_factory=list)
    wall_s: float = 0.0    # rank 0's wall time in the probe, model building and barriers included

    @property
    def ideal_tokens_per_s(self) -> float:
        """The sum over ranks of each one's tokens/s alone in this probe."""
        return sum(r.samples_per_s for r in self.ranks) * self.seq

    @property
    def end_spread_s(self) -> float:
        """How far apart the ranks' windows ended (one host's clock; across nodes, their clocks' offset too)."""
        return max(r.end for r in self.ranks) - min(r.end for r in self.ranks)

    def to_dict(self) -> dict:
        return {"after_step": self.after_step, "ideal_tokens_per_s": self.ideal_tokens_per_s,
                "end_spread_s": self.end_spread_s, "wall_s": self.wall_s,
                "ranks": [{**{k: v for k, v in asdict(r).items() if k not in ("start", "end")},
                           "tokens_per_s": r.samples_per_s * self.seq} for r in self.ranks]}


def _gather_status(job: Job, mine: dict, what: str) -> list[dict]:
    """All-gather of every rank's status (a barrier); a rank's error becomes every rank's ProbeError."""
    out: list = [None] * job.world_size
    dist.all_gather_object(out, mine)
    bad = [(r, s) for r, s in enumerate(out) if s.get("error")]
    if bad:
        raise ProbeError(f"{what}: " + "; ".join(f"rank {r} ({job.records[r].label}): {s['error']}" for r, s in bad))
    return out


def check_fits(job: Job, need_bytes: float | None, held_bytes: float = 0.0) -> None:
    """Raises ProbeError on every rank when a rank's device cannot hold the probe's whole model (`need_bytes`:
    its parameters, gradients, optimizer state and one micro-batch's activations) next to what its own stage
    holds (`held_bytes`). Collective. A device whose capacity is unknown (CPU) passes."""
    cap = float(job.record.memory_bytes or 0)
    error = None
    if need_bytes is not None and cap > 0 and need_bytes + held_bytes > cap:
        error = (f"the ideal probe trains the whole model alone on each device and needs about "
                 f"{need_bytes / 2**20:.1f} MiB next to the {held_bytes / 2**20:.1f} MiB its stage holds; the "
                 f"device has {cap / 2**20:.1f} MiB (run without --ideal-probe-every, or on devices that each "
                 f"hold the model)")
    _gather_status(job, {"error": error}, "ideal probe: a device cannot hold the whole model")


class AloneProbe:
    """Trains a private whole model alone on this rank's device for `seconds`, every rank at the same time (see
    the module's docstring). `micro_batch`: the job's micro-batch size; `seq`: tokens per sequence."""

    def __init__(self, job: Job, layers_fn: Callable[[], list[nn.Module]],
                 optimizer_fn: Callable[[list[nn.Parameter]], torch.optim.Optimizer], loss_fn: Callable, *,
                 micro_batch: int, seconds: float, seq: int, seed: int = 0):
        if micro_batch < 1:
            raise ValueError(f"AloneProbe: micro_batch must be >= 1, got {micro_batch}")
        if not (seconds > 0 and math.isfinite(seconds)):
            raise ValueError(f"AloneProbe: seconds must be a positive number, got {seconds}")
        budget = job.timeout.total_seconds()
        if seconds > budget / 2:
            # The ranks wait for each other at the barriers; a window near the collective timeout would fail.
            raise ValueError(f"AloneProbe: a window of {seconds:g} s is more than half the job's collective "
                             f"timeout ({budget:g} s, HAL_JOB_TIMEOUT)")
        self.job, self.layers_fn, self.optimizer_fn, self.loss_fn = job, layers_fn, optimizer_fn, loss_fn
        self.micro_batch, self.seconds, self.seq, self.seed = micro_batch, float(seconds), seq, seed

    # --- RNG: the job's streams must not see the probe ------------------------------------------------------
    def _rng_states(self):
        hal_states = None
        if hasattr(torch, "hal") and torch.hal.is_available():
            hal_states = torch.hal.get_rng_state_all()
        return torch.get_rng_state(), hal_states

    @staticmethod
    def _set_rng_states(states) -> None:
        cpu, hal_states = states
        torch.set_rng_state(cpu)
        if hal_states is not None:
            torch.hal.set_rng_state_all(hal_states)

    def run(self, inputs: torch.Tensor, targets: torch.Tensor, after_step: int) -> Probe:
        """One probe on the global batch (inputs, targets: the step's CPU tensors, not changed). Returns every
        rank's figures on every rank. Collective; raises ProbeError (on every rank) when a rank fails."""
        t_in = time.perf_counter()
        saved = self._rng_states()
        where = f"ideal probe after step {after_step}"
        trained: _Alone | None = None
        error = figures = None
        try:
            try:
                trained = _Alone(self, inputs, targets)
                trained.warm_up()
            except Exception as e:  # noqa: BLE001 - every rank must learn it at the barrier, not wait there
                error = f"{type(e).__name__}: {e}"
            _gather_status(self.job, {"error": error}, where)
            try:
                figures = asdict(trained.window(self.seconds))
            except Exception as e:  # noqa: BLE001
                error = f"{type(e).__name__}: {e}"
        finally:
            trained = None  # the probe's model, gradients and optimizer state
            gc.collect()
            self._set_rng_states(saved)
        # The closing barrier comes after the clean-up (a collection takes tens of ms, unevenly over the ranks):
        # every rank starts the next planned step together.
        out = _gather_status(self.job, {"error": error, "figures": figures}, where)
        return Probe(after_step, self.seq, [RankProbe(**s["figures"]) for s in out], time.perf_counter() - t_in)


class _Alone:
    """One probe's private model on this rank's device and its training loop (steps 1, 2 and 4 above)."""

    def __init__(self, probe: AloneProbe, inputs: torch.Tensor, targets: torch.Tensor):
        self.job, self.loss_fn = probe.job, probe.loss_fn
        self.inputs, self.targets = inputs, targets
        self.batch = inputs.shape[0]
        self.slices = [(s, min(s + probe.micro_batch, self.batch)) for s in range(0, self.batch, probe.micro_batch)]
        torch.manual_seed(probe.seed)  # the weights the job started from (the caller restores the RNG)
        self.model = nn.Sequential(*probe.layers_fn()).to(self.job.device)
        self.model.train()
        self.flat = FlatParams(list(self.model.parameters()))
        self.opt, _ = self.flat.optimizer(probe.optimizer_fn)

    def micro(self, s: int, e: int) -> None:
        x, y = self.inputs[s:e].to(self.job.device), self.targets[s:e].to(self.job.device)
        loss = self.loss_fn(self.model(x), y) * ((e - s) / self.batch)  # its share of the batch, as in a step
        loss.backward()
        self.job.synchronize()

    def optimizer_step(self) -> None:
        self.opt.step()
        if self.flat.ok:
            self.flat.zero_grad()
        else:
            self.opt.zero_grad(set_to_none=True)
        self.job.synchronize()

    def warm_up(self) -> None:
        self.micro(*self.slices[0])
        self.optimizer_step()

    def window(self, seconds: float) -> RankProbe:
        clock = time.perf_counter
        samples = n_micro = n_opt = i = 0
        wall0, t0 = time.time(), clock()
        while True:
            s, e = self.slices[i]
            self.micro(s, e)
            samples, n_micro, i = samples + e - s, n_micro + 1, i + 1
            if i == len(self.slices):  # a global batch done: its optimizer step
                self.optimizer_step()
                n_opt, i = n_opt + 1, 0
            elapsed = clock() - t0
            if elapsed + 0.5 * elapsed / n_micro > seconds:  # the next would end past the window by over half
                break
        if i:  # the micro-batches since the last optimizer step get theirs
            self.optimizer_step()
            n_opt += 1
        took = clock() - t0
        job = self.job
        return RankProbe(job.rank, job.record.label, job.record.kind, samples, took, n_micro, n_opt, wall0,
                         time.time())


def summarize(probes: list[Probe], step_s: dict[int, float], tokens_per_step: int, skip_through: int = 0) -> dict:
    """The planned job against the ideal from its probes. A window is the planned steps between two consecutive
    probes (steps after_step + 1 .. next after_step; those <= `skip_through`, the warm-up, left out); its ideal
    is the mean of the two probes' (they bracket it), its planned tokens/s the tokens of its steps over the
    sum of their step times (the probes' time is in no step's). `step_s`: step number (1-based, the steps done)
    -> its step time."""
    windows = []
    for a, b in zip(probes, probes[1:]):
        steps = [s for s in range(a.after_step + 1, b.after_step + 1) if s > skip_through and s in step_s]
        took = sum(step_s[s] for s in steps)
        ideal = (a.ideal_tokens_per_s + b.ideal_tokens_per_s) / 2
        if not steps or not took > 0 or not ideal > 0:
            continue
        planned = tokens_per_step * len(steps) / took
        windows.append({"after_steps": [a.after_step, b.after_step], "steps": [steps[0], steps[-1]],
                        "planned_steps": len(steps), "planned_tokens_per_s": planned, "ideal_tokens_per_s": ideal,
                        "fraction": planned / ideal, "first_step_s": step_s[steps[0]],
                        "median_step_s": statistics.median(step_s[s] for s in steps)})
    fr = [w["fraction"] for w in windows]
    all_steps = [s for w in windows for s in range(w["steps"][0], w["steps"][1] + 1) if s in step_s]
    took = sum(step_s[s] for s in all_steps)
    alone: dict[str, dict] = {}  # rank -> its device and median tokens/s alone over the probes
    for rank in sorted({r.rank for p in probes for r in p.ranks}):
        rs = [(r, p.seq) for p in probes for r in p.ranks if r.rank == rank]
        alone[str(rank)] = {"device": rs[0][0].device, "kind": rs[0][0].kind,
                            "tokens_per_s_median": statistics.median(r.samples_per_s * seq for r, seq in rs)}
    return {"probes": [p.to_dict() for p in probes], "windows": windows,
            "fraction_median": statistics.median(fr) if fr else None,
            "fraction_min": min(fr) if fr else None, "fraction_max": max(fr) if fr else None,
            "ideal_tokens_per_s_median": (statistics.median(w["ideal_tokens_per_s"] for w in windows)
                                          if windows else None),
            "planned_tokens_per_s": tokens_per_step * len(all_steps) / took if took > 0 else None,
            "alone_per_rank": alone,
            "probe_wall_s": sum(p.wall_s for p in probes)}
