"""Run a plan for real: one process, one thread per pipeline stage, tensors moved between stages with .to().

    ex = PlanExecutor(plan, cluster, layer_factory, device_of=lambda device_id: f"hal:{ids[device_id]}",
                      batch=tokens, loss_fn=lm_loss, mode="wall")
    m = ex.step()          # one training step: 1F1B per pipeline, gradient all-reduce, Adam
    m.step_time, m.events  # wall-clock seconds; what each stage did when (for timelines)

A validation tool for the cost model (bench/plan_validate.py, docs/validation.md); training runs across processes
with `hal launch` and `hal.parallel` (docs/training.md). Here every device of the plan is driven from one
process, one thread per stage; activations and their gradients move between stage devices as tensor
copies (`.to()`, which blocks the sending thread, as the cost model assumes); the data-parallel gradient
all-reduce goes through the first replica's device (flattened per layer: gather, sum, copy back); then each
device runs its Adam step in its own thread.

Timing modes (a clock, chosen once per executor: `_WallClock` or `_VirtualClock`):
  * "wall" (the real path): the step's wall-clock time on real torch devices: the local `hal:N` devices (the
    emulated ones among them really run slower: the HAL bridge paces each op of a device with relative speed
    s < 1 to its kernel's CPU time / s), `cuda:N`, or plain "cpu". Stages truly run concurrently; emulated ones
    share the host's cores, which is harmless while their total demand fits the host (see `executor_step`).
  * "virtual" (kept for torch-only machines; every report labels it VIRTUAL): stages share one host, compute
    runs one operation at a time under a lock so each is timed without contention, and each stage keeps a
    clock advanced by the measured time divided by the device's relative speed, carried with each tensor to the
    next stage. The tensors and gradients are real; only the clock is reconstructed.

`executor_step` is the cost model's prediction of what this executor runs; `validation_report` compares predicted
and measured step times (MAPE, worst case) and draws the scatter.
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
from hal.plan.profile_devices import device_synchronizer
from hal.plan.simulate import Event, one_f_one_b_order

__all__ = ["StepMeasurement", "PlanExecutor", "ValidationRow", "ValidationReport", "validation_report",
           "executor_step", "executor_allreduce_time"]


@dataclass
class StepMeasurement:
    step_time: float
    pipeline_times: list[float]
    allreduce_time: float
    optimizer_time: float
    loss: float
    mode: str
    emulated: bool
    events: list[Event] = field(default_factory=list)  # pipeline, stage, op (F/B/send/allreduce/optimizer), k


def _run_threads(threads: list, errors: list) -> None:
    """Starts `threads`, waits for all of them, then raises the first error they appended to `errors`."""
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


class _Stage:
    def __init__(self, modules: list, device: str, speed: float, first: bool, last: bool, lr: float):
        import torch
        self.modules = [m.to(device) for m in modules]
        self.device, self.first, self.last = device, first, last
        self.speed = speed  # the kind's relative speed: what a virtual clock divides host time by
        self.params = [p for m in self.modules for p in m.parameters()]
        self.optimizer = torch.optim.Adam(self.params, lr=lr) if self.params else None
        self.fwd_in: queue.Queue = queue.Queue()
        self.bwd_in: queue.Queue = queue.Queue()
        self.clock = 0.0  # virtual clock: the stage's time; wall clock: unused
        self.sync = device_synchronizer(device)


class _WallClock:
    """Real time: stages run concurrently on their devices; a step takes what the host saw it take."""
    mode = "wall"

    def start(self, stages: list[_Stage]) -> None:
        self.t0 = time.perf_counter()

    def run(self, fn: Callable[[], Any], st: _Stage, compute: bool = True) -> tuple[Any, float, float]:
        """Runs `fn` for stage `st`: (result, start, end) in seconds since the step started. Compute waits for
        the stage's device; a copy (`compute=False`) returns when it is done."""
        start = time.perf_counter() - self.t0
        out = fn()
        if compute:
            st.sync()
        return out, start, time.perf_counter() - self.t0

    def receive(self, st: _Stage, sent_at: float) -> None:
        """A tensor sent at `sent_at` reached `st`: in real time it arrived when it did."""

    def optimizers(self, stages: list[tuple[int, int, _Stage]], events: list) -> float:
        """Every device's Adam step at once, one thread each; the seconds until the last is done."""
        errors: list = []

        def step(j: int, i: int, s: _Stage) -> None:
            try:
                _, start, end = self.run(s.optimizer.step, s)
                events.append(Event(j, i, "optimizer", -1, start, end))
            except BaseException as e:  # noqa: BLE001 - re-raised in the calling thread
                errors.append(e)
        t0 = time.perf_counter()
        _run_threads([threading.Thread(target=step, args=a, daemon=True) for a in stages], errors)
        return time.perf_counter() - t0

    def step_times(self, pipes: list[list[_Stage]], pipelines_end: float, allreduce: tuple[float, float],
                   optimizer: float, events: list) -> tuple[float, list[float]]:
        """(step, per-pipeline times) once everything ran; `allreduce` is its (start, seconds)."""
        start, seconds = allreduce
        if seconds > 0 and len(pipes) > 1:
            events.append(Event(-1, -1, "allreduce", -1, start - self.t0, start - self.t0 + seconds))
        return time.perf_counter() - self.t0, [pipelines_end - self.t0] * len(pipes)


class _VirtualClock:
    """VIRTUAL time for stages that share one host: each operation runs alone under a lock and advances its
    stage's clock by the host time it took divided by the device's relative speed (copies: not divided); a
    tensor carries its sender's clock to the receiver."""
    mode = "virtual"

    def __init__(self) -> None:
        self.lock = threading.Lock()

    def start(self, stages: list[_Stage]) -> None:
        for s in stages:
            s.clock = 0.0

    def _timed(self, fn: Callable[[], Any], st: _Stage, compute: bool = True) -> tuple[Any, float]:
        with self.lock:
            t0 = time.perf_counter()
            out = fn()
            return out, (time.perf_counter() - t0) / (st.speed if compute else 1.0)

    def run(self, fn: Callable[[], Any], st: _Stage, compute: bool = True) -> tuple[Any, float, float]:
        out, dt = self._timed(fn, st, compute)
        start = st.clock
        st.clock += dt
        return out, start, st.clock

    def receive(self, st: _Stage, sent_at: float) -> None:
        st.clock = max(st.clock, sent_at)

    def optimizers(self, stages: list[tuple[int, int, _Stage]], events: list) -> float:
        """The slowest device's Adam step, each timed alone."""
        return max((self._timed(s.optimizer.step, s)[1] for _, _, s in stages), default=0.0)

    def step_times(self, pipes: list[list[_Stage]], pipelines_end: float, allreduce: tuple[float, float],
                   optimizer: float, events: list) -> tuple[float, list[float]]:
        times = [max(s.clock for s in stages) for stages in pipes]
        return max(times) + allreduce[1] + optimizer, times


_CLOCKS = {"wall": _WallClock, "virtual": _VirtualClock}


class PlanExecutor:
    def __init__(self, plan: Plan, cluster: Cluster, layer_factory: Callable[[], list], device_of: Callable[[int], str],
                 batch: Any, loss_fn: Callable[[Any, Any], Any], mode: str = "virtual", lr: float = 1e-4):
        if mode not in _CLOCKS:
            raise ValueError(f"mode must be virtual or wall, got {mode!r}")
        self.plan, self.cluster, self.mode, self.loss_fn = plan, cluster, mode, loss_fn
        self.clock = _CLOCKS[mode]()
        self.batch = batch
        self.emulated = any(cluster.kinds[s.kind].emulated for p in plan.pipelines for s in p.stages)
        devices = {device_of(d) for d in plan.devices}
        if any(d.startswith("hal") for d in devices):
            import hal.torch  # noqa: F401 - registers the `hal` torch backend where the entry point is missing
        self.pipes: list[list[_Stage]] = []
        for pipe in plan.pipelines:
            layers = layer_factory()  # same seed for every replica: data parallelism starts in sync
            stages = []
            for i, st in enumerate(pipe.stages):
                stages.append(_Stage(layers[st.layers[0]:st.layers[1]], device_of(st.device_ids[0]),
                                     cluster.kinds[st.kind].relative_speed, i == 0, i == len(pipe.stages) - 1, lr))
            self.pipes.append(stages)

    # --- one stage, one thread ------------------------------------------------------------------------------
    def _run_stage(self, j: int, i: int, errors: list, losses: list, events: list) -> None:
        clock = self.clock
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
                        x = self.batch[lo:hi].to(st.device)
                    else:
                        x, sent_at = st.fwd_in.get()
                        if x is None:
                            return  # a neighbour failed
                        clock.receive(st, sent_at)
                        x = x.requires_grad_(x.is_floating_point())

                    def fwd(x=x):
                        y = x
                        for mod in st.modules:
                            y = mod(y)
                        if st.last:
                            tokens = self.batch[lo:hi].to(st.device)
                            y = self.loss_fn(y, tokens) * ((hi - lo) / self.plan.global_batch)
                        return y
                    y, start, end = clock.run(fwd, st)
                    events.append(Event(j, i, "F", k, start, end))
                    saved[k] = (x, y)
                    if st.last:
                        losses.append(float(y.detach()))
                    else:
                        nxt = stages[i + 1]
                        z, start, end = clock.run(lambda: y.detach().to(nxt.device, copy=True), st, compute=False)
                        events.append(Event(j, i, "send", k, start, end))
                        nxt.fwd_in.put((z, end))
                else:
                    x, y = saved.pop(k)
                    grad = None
                    if not st.last:
                        grad, sent_at = st.bwd_in.get()
                        if grad is None:
                            return
                        clock.receive(st, sent_at)
                    _, start, end = clock.run(lambda: y.backward(grad), st)
                    events.append(Event(j, i, "B", k, start, end))
                    if not st.first:
                        prev = stages[i - 1]
                        g, start, end = clock.run(lambda: x.grad.detach().to(prev.device, copy=True), st,
                                                  compute=False)
                        events.append(Event(j, i, "send", k, start, end))
                        prev.bwd_in.put((g, end))
        except BaseException as e:  # noqa: BLE001 - re-raised in the calling thread
            errors.append(e)
            for s in self.pipes[j]:  # unblock neighbours
                s.fwd_in.put((None, 0.0))
                s.bwd_in.put((None, 0.0))

    # --- the step -------------------------------------------------------------------------------------------
    def _allreduce(self) -> None:
        """Sums gradients of each layer over the pipelines that hold it (each pipeline's loss is already scaled
        by its share of the global batch). In process, through the first holder's device: each other replica's
        gradients, flattened into one buffer per layer, are copied there and added; the sum is copied back.
        Not a ring: 2 (n - 1) copies of the layer's gradients, one after another."""
        import torch
        by_layer: dict[int, list] = {}
        for pipe, stages in zip(self.plan.pipelines, self.pipes):
            for st, s in zip(pipe.stages, stages):
                for li, mod in zip(range(*st.layers), s.modules):
                    by_layer.setdefault(li, []).append(mod)
        for mods in by_layer.values():
            if len(mods) < 2:
                continue
            grads = [[p.grad for p in m.parameters()] for m in mods]
            if not grads[0]:
                continue
            flats = [torch.cat([g.reshape(-1) for g in gs]) for gs in grads]
            total = flats[0]
            for f in flats[1:]:
                total += f.to(total.device)
            for gs, f in zip(grads, flats):
                t = total if f is total else total.to(f.device)
                off = 0
                for g in gs:
                    g.copy_(t[off:off + g.numel()].view_as(g))
                    off += g.numel()

    def step(self) -> StepMeasurement:
        for stages in self.pipes:
            for s in stages:
                for p in s.params:
                    p.grad = None
        errors: list = []
        losses: list = []
        events: list[Event] = []
        threads = [threading.Thread(target=self._run_stage, args=(j, i, errors, losses, events), daemon=True)
                   for j, stages in enumerate(self.pipes) for i in range(len(stages))]
        self.clock.start([s for stages in self.pipes for s in stages])
        _run_threads(threads, errors)
        pipelines_end = time.perf_counter()
        if len(self.pipes) > 1:
            self._allreduce()
            for stages in self.pipes:
                for s in stages:
                    s.sync()
        allreduce = time.perf_counter() - pipelines_end
        with_optimizer = [(j, i, s) for j, ss in enumerate(self.pipes) for i, s in enumerate(ss)
                          if s.optimizer is not None]
        opt = self.clock.optimizers(with_optimizer, events)
        step, pipeline_times = self.clock.step_times(self.pipes, pipelines_end, (pipelines_end, allreduce), opt,
                                                     events)
        return StepMeasurement(step, pipeline_times, allreduce, opt, sum(losses), self.mode, self.emulated, events)

    def measure(self, steps: int = 3, warmup: int = 1, stat: str | None = None) -> StepMeasurement:
        """`warmup` steps, then `steps` steps; returns the median one (wall mode) or the fastest (virtual mode,
        where the model profiler's fastest-run figures are the comparison). `stat` = "median" or "min"."""
        stat = stat or ("median" if self.mode == "wall" else "min")
        for _ in range(warmup):
            self.step()
        runs = sorted((self.step() for _ in range(steps)), key=lambda r: r.step_time)
        return runs[0] if stat == "min" else runs[(len(runs) - 1) // 2]


def executor_step(plan: Plan, cm, record: bool = False) -> tuple[float, list[Event]]:
    """The cost model's step for what PlanExecutor runs: the event simulation of the plan (1F1B per pipeline,
    sends blocking the sender, then the optimizers; `simulate`) with the data-parallel all-reduce the executor
    does (`executor_allreduce_time`) instead of the ring the cost model assumes. Returns (step time, events).

    Emulated devices share the host's cores; this assumes they do not slow each other down, which holds when
    their total demand (the sum of their relative speeds, in cores: see `local.use_fitting_emulation`) fits the
    host, because the bridge paces each by the CPU time of its kernels."""
    from hal.plan.simulate import simulate
    sim = simulate(plan, cm, record=record)
    compute_end = max(sim.pipeline_times)
    ar = executor_allreduce_time(plan, cm) if len(plan.pipelines) > 1 else 0.0
    shift = ar - sim.allreduce_time
    events = [e for e in sim.events if e.op != "allreduce"]
    for e in events:
        if e.op == "optimizer":
            e.start += shift
            e.end += shift
    if record and ar > 0:
        events.append(Event(-1, -1, "allreduce", -1, compute_end, compute_end + ar))
    return compute_end + ar + sim.optimizer_time, events


def executor_allreduce_time(plan: Plan, cm) -> float:
    """PlanExecutor's in-process all-reduce: for each layer held by n > 1 pipelines, n - 1 copies of its
    gradients to the first holder and n - 1 copies of the sum back, one after another, over the links between
    the stage devices (latency + bytes / bandwidth each)."""
    holders: dict[int, list[int]] = {}
    for pipe in plan.pipelines:
        for st in pipe.stages:
            for li in range(*st.layers):
                holders.setdefault(li, []).append(st.device_ids[0])
    t = 0.0
    for li, devs in holders.items():
        nbytes = cm.params[li] * cm.model.dtype_bytes
        if len(devs) < 2 or nbytes <= 0:
            continue
        for d in devs[1:]:
            t += 2 * cm.link_between(devs[0], d).time(nbytes)
    return t


@dataclass
class ValidationRow:
    name: str
    predicted: float
    measured: float

    @property
    def error(self) -> float:
        return abs(self.predicted - self.measured) / self.measured

    @property
    def signed_error(self) -> float:
        return (self.predicted - self.measured) / self.measured


@dataclass
class ValidationReport:
    rows: list[ValidationRow]
    emulated: bool
    mode: str = "virtual"
    mape: float = field(init=False)
    worst: ValidationRow = field(init=False)

    def __post_init__(self) -> None:
        self.mape = statistics.fmean(r.error for r in self.rows)
        self.worst = max(self.rows, key=lambda r: r.error)

    @property
    def tag(self) -> str:
        if self.mode == "virtual":
            return " (EMULATED devices, VIRTUAL clock)" if self.emulated else " (VIRTUAL clock)"
        return " (EMULATED devices, wall clock)" if self.emulated else " (wall clock)"

    def text(self) -> str:
        lines = [f"{'plan':58s} {'predicted':>11s} {'measured':>11s} {'error':>7s}"]
        lines += [f"{r.name:58s} {r.predicted * 1e3:9.1f}ms {r.measured * 1e3:9.1f}ms {r.signed_error:+7.1%}"
                  for r in self.rows]
        lines.append(f"{len(self.rows)} plans{self.tag}: MAPE {self.mape:.1%}, worst {self.worst.error:.1%} "
                     f"({self.worst.name})")
        return "\n".join(lines)


def validation_report(rows: Sequence[ValidationRow], emulated: bool, plot: str | None = None,
                      mode: str = "virtual", title: str | None = None) -> ValidationReport:
    rep = ValidationReport(list(rows), emulated, mode)
    if plot:
        from hal.plan.plot import plot_validation
        plot_validation([r.predicted for r in rows], [r.measured for r in rows], plot,
                        title or f"cost model vs measured: {len(rows)} plans, MAPE {rep.mape:.1%}{rep.tag}")
    return rep
