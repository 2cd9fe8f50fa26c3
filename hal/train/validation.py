"""The cost model against training jobs: each plan run R times through `hal launch`, predicted vs measured.

bench/plan_validate_launch.py runs the plans; this module is its arithmetic, free of torch and of devices:

    runs = [PlanRuns(name, tag, [Run(predicted_s, measured_s, [RankMemory(...)]), ...]), ...]
    summary = summarise(runs, emulated=True)
    print(summary.text())        # per plan, then MAPE, worst, bias, repeat spread, memory error
    summary.to_dict()            # the same, for --json

Per plan, over its runs (the same plan launched R times, fresh processes each time):
  * measured   the median of the runs' measured step times (each itself the job's median after its warm-up);
  * predicted  the median of the runs' predictions (each job predicts its own step from the profile and from
               the all-reduce link it measured at its start, so the prediction varies a little between runs);
  * error      (predicted - measured) / measured: negative = the model is optimistic (the step is slower);
  * spread     (max - min) / median of the measured step times: the run-to-run noise, the floor under any
               error the model could reach.
Memory, per rank that the plan uses: the cost model's bytes for its stage against the peak bytes the device's
allocator held for tensors during the training steps (the median over runs; the peak barely moves).
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from hal.plan.plan import Plan

__all__ = ["RankMemory", "Run", "PlanRuns", "Summary", "summarise", "spread", "describe", "features", "signed_error"]


def signed_error(predicted: float, measured: float) -> float:
    """(predicted - measured) / measured."""
    return (predicted - measured) / measured


def spread(values: list[float]) -> float:
    """(max - min) / median: 0 for one value."""
    if not values:
        raise ValueError("spread of no values")
    med = statistics.median(values)
    return (max(values) - min(values)) / med if med else 0.0


def describe(plan: Plan) -> str:
    """A plan in one line: per pipeline, the kind letters and device ids of its stages (a tensor-parallel stage's
    ids joined by '+'), each stage's layers, then micro-batch size x count and the pipeline's samples.

    e.g. "F0[0-5] 4x3=12 + S2+3[0-5] 2x4=8" (kinds: the first letter of the kind's last word, emu-fast -> F)."""
    out = []
    for q in plan.pipelines:
        kinds = "".join(dict.fromkeys(s.kind.split("-")[-1][:1].upper() for s in q.stages))
        devs = ",".join("+".join(str(d) for d in s.device_ids) for s in q.stages)
        ranges = "|".join(f"{s.layers[0]}-{s.layers[1] - 1}" for s in q.stages)
        out.append(f"{kinds}{devs}[{ranges}] {q.micro_batch_size}x{q.num_micro_batches}={q.samples}")
    return " + ".join(out)


def features(plan: Plan) -> tuple[str, ...]:
    """What the plan uses, for the report's error per feature: "tensor parallel" (a stage of tp > 1), "pipeline"
    (a pipeline of several stages), "data parallel" (several pipelines), "cross-kind pipeline" (a pipeline whose
    stages are of different kinds), "both kinds" (devices of more than one kind), "partial micro-batch" (a
    pipeline whose samples are not a multiple of its micro-batch size)."""
    pipes = plan.pipelines
    out = []
    if any(s.tp > 1 for q in pipes for s in q.stages):
        out.append("tensor parallel")
    if any(len(q.stages) > 1 for q in pipes):
        out.append("pipeline")
    if len(pipes) > 1:
        out.append("data parallel")
    if any(len(q.kinds) > 1 for q in pipes):
        out.append("cross-kind pipeline")
    if len({s.kind for q in pipes for s in q.stages}) > 1:
        out.append("both kinds")
    if any(q.samples % q.micro_batch_size for q in pipes):
        out.append("partial micro-batch")
    return tuple(out)


@dataclass
class RankMemory:
    rank: int
    device: str
    predicted: float | None   # the cost model's bytes for the rank's stage (None: the plan leaves it idle)
    measured: float | None    # peak bytes held by tensors on the device during the training steps


@dataclass
class Run:
    predicted: float          # seconds per step, the job's own prediction
    measured: float           # seconds per step, the job's median after its warm-up
    memory: list[RankMemory] = field(default_factory=list)
    cpu_cores: float | None = None  # host cores the job's processes kept busy (result.json)
    load: float | None = None       # the host's 1-minute load average when the job ended


@dataclass
class PlanRuns:
    name: str
    tag: str                  # where the plan comes from: "planner", "random", "cross-kind", ...
    runs: list[Run] = field(default_factory=list)
    refused: str | None = None  # why the runtime refused it or a run failed (the plan is then not scored)
    features: tuple[str, ...] = ()  # `features(plan)`

    @property
    def ok(self) -> bool:
        return self.refused is None and bool(self.runs)

    @property
    def measured(self) -> float:
        return statistics.median(r.measured for r in self.runs)

    @property
    def predicted(self) -> float:
        return statistics.median(r.predicted for r in self.runs)

    @property
    def error(self) -> float:
        return signed_error(self.predicted, self.measured)

    @property
    def spread(self) -> float:
        return spread([r.measured for r in self.runs])

    def memory(self) -> list[tuple[int, str, float, float]]:
        """(rank, device, predicted, measured) per rank the plan uses: measured = the median over runs."""
        by_rank: dict[int, list[RankMemory]] = {}
        for run in self.runs:
            for m in run.memory:
                if m.predicted is not None and m.measured is not None:
                    by_rank.setdefault(m.rank, []).append(m)
        return [(r, ms[0].device, statistics.median(m.predicted for m in ms), statistics.median(m.measured for m in ms))
                for r, ms in sorted(by_rank.items())]


@dataclass
class Summary:
    plans: list[PlanRuns]
    emulated: bool
    scored: list[PlanRuns] = field(init=False)
    mape: float = field(init=False)
    worst: PlanRuns = field(init=False)
    mean_error: float = field(init=False)      # signed: < 0 means the model is optimistic on average
    under: int = field(init=False)             # plans predicted faster than measured
    over: int = field(init=False)              # plans predicted slower than measured
    median_spread: float = field(init=False)
    max_spread: float = field(init=False)
    memory_rows: list[tuple[str, int, str, float, float]] = field(init=False)  # plan, rank, device, pred, meas
    memory_mape: float | None = field(init=False)
    memory_worst: tuple[str, int, str, float, float] | None = field(init=False)
    memory_under: int = field(init=False)      # ranks predicted to need less than they held
    memory_over: int = field(init=False)

    def __post_init__(self) -> None:
        self.scored = [p for p in self.plans if p.ok]
        if not self.scored:
            raise ValueError("no plan was run: nothing to summarise"
                             + "".join(f"\n  {p.name}: {p.refused}" for p in self.plans if p.refused))
        errors = [p.error for p in self.scored]
        self.mape = statistics.fmean(abs(e) for e in errors)
        self.worst = max(self.scored, key=lambda p: abs(p.error))
        self.mean_error = statistics.fmean(errors)
        self.under = sum(e < 0 for e in errors)
        self.over = sum(e > 0 for e in errors)
        spreads = [p.spread for p in self.scored]
        self.median_spread, self.max_spread = statistics.median(spreads), max(spreads)
        self.memory_rows = [(p.name, r, d, pr, me) for p in self.scored for r, d, pr, me in p.memory() if me > 0]
        if self.memory_rows:
            merr = [signed_error(pr, me) for *_, pr, me in self.memory_rows]
            self.memory_mape = statistics.fmean(abs(e) for e in merr)
            self.memory_worst = max(self.memory_rows, key=lambda row: abs(signed_error(row[3], row[4])))
            self.memory_under = sum(e < 0 for e in merr)
            self.memory_over = sum(e > 0 for e in merr)
        else:
            self.memory_mape, self.memory_worst, self.memory_under, self.memory_over = None, None, 0, 0

    def by_feature(self) -> dict[str, tuple[int, float, float]]:
        """feature -> (plans, MAPE, mean signed error) over the scored plans that use it, and "without it" rows
        for features some but not all plans use ("no tensor parallel", ...)."""
        out = {}
        names = list(dict.fromkeys(f for p in self.scored for f in p.features))
        for name in names:
            for label, group in ((name, [p for p in self.scored if name in p.features]),
                                 (f"no {name}", [p for p in self.scored if name not in p.features])):
                if group:
                    out[label] = (len(group), statistics.fmean(abs(p.error) for p in group),
                                  statistics.fmean(p.error for p in group))
        return out

    @property
    def label(self) -> str:
        return "EMULATED devices, wall clock" if self.emulated else "wall clock"

    @property
    def repeats(self) -> tuple[int, int]:
        counts = [len(p.runs) for p in self.scored]
        return min(counts), max(counts)

    def text(self) -> str:
        lo, hi = self.repeats
        reps = f"{lo}" if lo == hi else f"{lo}-{hi}"
        lines = [f"{'#':>2s} {'plan':56s} {'origin':22s} {'predicted':>10s} {'measured':>10s} {'error':>7s} "
                 f"{'spread':>7s}"]
        for i, p in enumerate(self.plans, 1):
            if not p.ok:
                lines.append(f"{i:2d} {p.name:56s} {p.tag:22s} refused or failed: {p.refused}")
                continue
            lines.append(f"{i:2d} {p.name:56s} {p.tag:22s} {p.predicted * 1e3:8.1f}ms {p.measured * 1e3:8.1f}ms "
                         f"{p.error:+7.1%} {p.spread:7.1%}")
        n = len(self.scored)
        lines.append(f"step time, {n} plans x {reps} runs ({self.label}): MAPE {self.mape:.1%}, worst "
                     f"{abs(self.worst.error):.1%} ({self.worst.name}); mean signed error {self.mean_error:+.1%} "
                     f"({self.under} predicted faster than measured, {self.over} slower); repeat spread "
                     f"(max - min) / median: median {self.median_spread:.1%}, max {self.max_spread:.1%}")
        if self.memory_mape is not None:
            name, rank, dev, pr, me = self.memory_worst
            lines.append(f"peak device memory, {len(self.memory_rows)} ranks of {n} plans ({self.label}): MAPE "
                         f"{self.memory_mape:.1%}, worst {abs(signed_error(pr, me)):.1%} (rank {rank} of {name}: "
                         f"{pr / 2**20:.1f} MiB predicted, {me / 2**20:.1f} MiB measured); {self.memory_under} "
                         f"ranks predicted below their peak, {self.memory_over} above")
        groups = self.by_feature()
        if groups:
            lines.append("by feature (plans: MAPE, mean signed error):")
            for k, (n, m, e) in groups.items():
                if k.startswith("no "):
                    continue
                other = groups.get(f"no {k}")
                lines.append(f"  {k:22s} {n:2d}: {m:6.1%} {e:+7.1%}" + (
                    f"   without it {other[0]:2d}: {other[1]:6.1%} {other[2]:+7.1%}" if other else ""))
        refused = [p for p in self.plans if not p.ok]
        if refused:
            lines.append(f"{len(refused)} plan(s) refused or failed, not scored")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        lo, hi = self.repeats
        return {
            "emulated": self.emulated, "label": self.label, "plans_scored": len(self.scored),
            "plans_refused": len(self.plans) - len(self.scored), "repeats": [lo, hi],
            "mape": self.mape, "worst": abs(self.worst.error), "worst_plan": self.worst.name,
            "mean_signed_error": self.mean_error, "under_predicted": self.under, "over_predicted": self.over,
            "median_spread": self.median_spread, "max_spread": self.max_spread,
            "memory_mape": self.memory_mape,
            "memory_worst": (abs(signed_error(self.memory_worst[3], self.memory_worst[4]))
                             if self.memory_worst else None),
            "memory_under_predicted": self.memory_under, "memory_over_predicted": self.memory_over,
            "by_feature": {k: {"plans": n, "mape": m, "mean_signed_error": e}
                           for k, (n, m, e) in self.by_feature().items()},
            "plans": [{"name": p.name, "tag": p.tag, "features": list(p.features), "refused": p.refused,
                       **({"predicted_s": p.predicted, "measured_s": p.measured, "error": p.error, "spread": p.spread,
                           "runs": [{"predicted_s": r.predicted, "measured_s": r.measured, "cpu_cores": r.cpu_cores,
                                     "load": r.load, "memory": [vars(m) for m in r.memory]} for r in p.runs],
                           "memory": [{"rank": r, "device": d, "predicted_bytes": pr, "measured_peak_bytes": me}
                                      for r, d, pr, me in p.memory()]} if p.ok else {})}
                      for p in self.plans]}


def summarise(plans: list[PlanRuns], emulated: bool) -> Summary:
    """The report over `plans` (those refused or without runs are listed, not scored); see the module's
    docstring. Raises ValueError when no plan ran."""
    return Summary(list(plans), emulated)
