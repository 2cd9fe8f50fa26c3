"""Run a plan for real: one process, one thread per pipeline stage, tensors moved between stages with .to().

    ex = PlanExecutor(plan, cluster, layer_factory, device_of=lambda device_id: "cpu", batch=tokens,
                      loss_fn=lm_loss)
    m = ex.step()          # one training step: 1F1B per pipeline, gradient all-reduce, Adam
    m.step_time

Timing modes:
  * "wall": the step's wall-clock time. For real devices (torch device strings such as "cuda:0" or, once the
    HAL torch backend exists, "hal:N"), where stages truly run in parallel.
  * "virtual": for stages that share one host (torch CPU, emulated devices). Compute runs one operation at a
    time under a lock so each is timed without contention; each stage keeps a clock, advanced by the measured
    time of its operations divided by the device's relative speed (emulated devices: labelled so in every
    report) and carried with each tensor to the next stage. The step is the latest clock, plus the measured
    all-reduce and the slowest optimizer step. This runs the real tensors and gradients; only the clock is
    reconstructed.

`validation_report` compares predicted and measured step times (MAPE, worst case) and draws the scatter.
"""
from __future__ import annotations

import queue
import statistics
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from hal.plan.cluster import Cluster
from hal.plan.plan import Plan
from hal.plan.simulate import one_f_one_b_order

__all__ = ["StepMeasurement", "PlanExecutor", "ValidationRow", "validation_report"]


@dataclass
class StepMeasurement:
    step_time: float
    pipeline_times: list[float]
    allreduce_time: float
    optimizer_time: float
    loss: float
    mode: str
    emulated: bool


class _Stage:
    def __init__(self, modules: list, device: str, speed: float, first: bool, last: bool):
        import torch
        self.modules = [m.to(device) for m in modules]
        self.device, self.speed, self.first, self.last = device, speed, first, last
        self.params = [p for m in self.modules for p in m.parameters()]
        self.optimizer = torch.optim.Adam(self.params, lr=1e-4) if self.params else None
        self.fwd_in: queue.Queue = queue.Queue()
        self.bwd_in: queue.Queue = queue.Queue()
        self.clock = 0.0


class PlanExecutor:
    def __init__(self, plan: Plan, cluster: Cluster, layer_factory: Callable[[], list], device_of: Callable[[int], str],
                 batch: Any, loss_fn: Callable[[Any, Any], Any], mode: str = "virtual"):
        if mode not in ("virtual", "wall"):
            raise ValueError(f"mode must be virtual or wall, got {mode!r}")
        self.plan, self.cluster, self.mode, self.loss_fn = plan, cluster, mode, loss_fn
        self.batch = batch
        self.emulated = any(cluster.kinds[s.kind].emulated for p in plan.pipelines for s in p.stages)
        self._lock = threading.Lock()
        self.pipes: list[list[_Stage]] = []
        for pipe in plan.pipelines:
            layers = layer_factory()  # same seed for every replica: data parallelism starts in sync
            stages = []
            for i, st in enumerate(pipe.stages):
                kind = cluster.kinds[st.kind]
                stages.append(_Stage(layers[st.layers[0]:st.layers[1]], device_of(st.device_ids[0]),
                                     kind.relative_speed, i == 0, i == len(pipe.stages) - 1))
            self.pipes.append(stages)

    # --- timing helpers -----------------------------------------------------------------------------------
    def _timed(self, fn: Callable[[], Any], speed: float) -> tuple[Any, float]:
        """Runs fn; returns (result, emulated seconds). Serialised in virtual mode."""
        if self.mode == "wall":
            return fn(), 0.0
        with self._lock:
            t0 = time.perf_counter()
            out = fn()
            return out, (time.perf_counter() - t0) / speed

    def _send(self, t, device: str) -> tuple[Any, float]:
        def move():
            return t.detach().to(device, copy=True)
        if self.mode == "wall":
            return move(), 0.0
        with self._lock:
            t0 = time.perf_counter()
            out = move()
            return out, time.perf_counter() - t0  # links are not scaled by relative speed

    # --- one stage, one thread ------------------------------------------------------------------------------
    def _run_stage(self, j: int, i: int, errors: list, losses: list) -> None:
        try:
            pipe, stages = self.plan.pipelines[j], self.pipes[j]
            st = stages[i]
            m, mbs = pipe.num_micro_batches, pipe.micro_batch_size
            offset = sum(p.samples for p in self.plan.pipelines[:j])
            saved: dict[int, tuple] = {}
            for op, k in one_f_one_b_order(len(stages), i, m):
                lo = offset + k * mbs
                hi = offset + min((k + 1) * mbs, pipe.samples)
                if op == "F":
                    if st.first:
                        x, ready = self.batch[lo:hi].to(st.device), 0.0
                    else:
                        x, ready = st.fwd_in.get()
                        x = x.requires_grad_(x.is_floating_point())

                    def fwd(x=x):
                        y = x
                        for mod in st.modules:
                            y = mod(y)
                        if st.last:
                            tokens = self.batch[lo:hi].to(st.device)
                            y = self.loss_fn(y, tokens) * ((hi - lo) / self.plan.global_batch)
                        return y
                    y, dt = self._timed(fwd, st.speed)
                    st.clock = max(st.clock, ready) + dt
                    saved[k] = (x, y)
                    if st.last:
                        losses.append(float(y.detach()))
                    else:
                        nxt = stages[i + 1]
                        z, ts = self._send(y, nxt.device)
                        st.clock += ts
                        nxt.fwd_in.put((z, st.clock))
                else:
                    x, y = saved.pop(k)
                    if st.last:
                        grad, ready = None, 0.0
                    else:
                        grad, ready = st.bwd_in.get()
                    _, dt = self._timed(lambda: y.backward(grad), st.speed)
                    st.clock = max(st.clock, ready) + dt
                    if not st.first:
                        prev = stages[i - 1]
                        g, ts = self._send(x.grad, prev.device)
                        st.clock += ts
                        prev.bwd_in.put((g, st.clock))
        except BaseException as e:  # noqa: BLE001 - re-raised in the calling thread
            errors.append(e)
            for s in self.pipes[j]:  # unblock neighbours
                s.fwd_in.put((None, 0.0))
                s.bwd_in.put((None, 0.0))

    # --- the step -------------------------------------------------------------------------------------------
    def _allreduce(self) -> None:
        """Sums gradients of each layer over the pipelines that hold it (each pipeline's loss is already scaled
        by its share of the global batch). In process: host-side sums, not a ring."""
        by_layer: dict[int, list] = {}
        for pipe, stages in zip(self.plan.pipelines, self.pipes):
            for st, s in zip(pipe.stages, stages):
                for li, mod in zip(range(*st.layers), s.modules):
                    by_layer.setdefault(li, []).append(mod)
        for mods in by_layer.values():
            if len(mods) < 2:
                continue
            for ps in zip(*(m.parameters() for m in mods)):
                total = ps[0].grad.detach().clone()
                for p in ps[1:]:
                    total += p.grad.detach().to(total.device)
                for p in ps:
                    p.grad.copy_(total.to(p.grad.device))

    def step(self) -> StepMeasurement:
        for stages in self.pipes:
            for s in stages:
                s.clock = 0.0
                for p in s.params:
                    p.grad = None
        errors: list = []
        losses: list = []
        threads = [threading.Thread(target=self._run_stage, args=(j, i, errors, losses), daemon=True)
                   for j, stages in enumerate(self.pipes) for i in range(len(stages))]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
        t1 = time.perf_counter()
        pipeline_times = [max(s.clock for s in stages) for stages in self.pipes]
        ar_t0 = time.perf_counter()
        if len(self.pipes) > 1:
            self._allreduce()
        ar = time.perf_counter() - ar_t0
        opt = 0.0
        for stages in self.pipes:
            for s in stages:
                if s.optimizer is not None:
                    _, dt = self._timed(s.optimizer.step, s.speed)
                    opt = max(opt, dt)
        t2 = time.perf_counter()
        if self.mode == "wall":
            pipeline_times = [t1 - t0] * len(self.pipes)
            step = t2 - t0
            opt = t2 - ar_t0 - ar
        else:
            step = max(pipeline_times) + ar + opt
        return StepMeasurement(step, pipeline_times, ar, opt, sum(losses), self.mode, self.emulated)

    def measure(self, steps: int = 3, warmup: int = 1) -> StepMeasurement:
        """The fastest of `steps` steps after `warmup` (contention on a shared host only adds time; the model
        profiler takes the fastest run too)."""
        for _ in range(warmup):
            self.step()
        return min((self.step() for _ in range(steps)), key=lambda r: r.step_time)


@dataclass
class ValidationRow:
    name: str
    predicted: float
    measured: float

    @property
    def error(self) -> float:
        return abs(self.predicted - self.measured) / self.measured


@dataclass
class ValidationReport:
    rows: list[ValidationRow]
    emulated: bool
    mape: float = field(init=False)
    worst: ValidationRow = field(init=False)

    def __post_init__(self) -> None:
        self.mape = statistics.fmean(r.error for r in self.rows)
        self.worst = max(self.rows, key=lambda r: r.error)

    def text(self) -> str:
        tag = " (EMULATED devices: virtual time)" if self.emulated else ""
        lines = [f"{'plan':40s} {'predicted':>12s} {'measured':>12s} {'error':>7s}"]
        lines += [f"{r.name:40s} {r.predicted * 1e3:10.2f}ms {r.measured * 1e3:10.2f}ms {r.error:7.1%}"
                  for r in self.rows]
        lines.append(f"{len(self.rows)} plans{tag}: MAPE {self.mape:.1%}, worst {self.worst.error:.1%} "
                     f"({self.worst.name})")
        return "\n".join(lines)


def validation_report(rows: Sequence[ValidationRow], emulated: bool, plot: str | None = None) -> ValidationReport:
    rep = ValidationReport(list(rows), emulated)
    if plot:
        from hal.plan.plot import plot_validation
        plot_validation([r.predicted for r in rows], [r.measured for r in rows], plot,
                        f"cost model vs measured: {len(rows)} plans, MAPE {rep.mape:.1%}"
                        + (" (emulated devices)" if emulated else ""))
    return rep
