"""Validation of the cost model on the multi-process training runtime: every plan a real `hal launch` job.

    python bench/plan_validate_launch.py [--plans 16] [--repeats 2] [--steps 8] [--seed HELD_OUT]
                                         [--json out.json] [--plot out.png] [--out DIR]

Held out: the plan set is drawn by --seed, whose default (HELD_OUT_SEED) was never run while this harness and
the cost model were developed; development used seeds 0, 1 and 2 (DEVELOPMENT_SEEDS). docs/validation.md
gives the figures of both.

  1. A profiling job (`hal launch --devices emu -m hal.train.job --profile-only`): the job itself measures the
     GPT's layers on one device of each kind (forward, backward, optimizer step, for every micro-batch size a
     plan or a partial last micro-batch can use) and its all-reduce link, as every training job does, and
     writes its devices and link (RUN/job.json).
  2. The plan set, from that profile and the job's cluster (`hal.parallel.devices.live_cluster`, what the job
     plans with): the planner's best plan and its even split, then plans drawn by a seeded RNG: random
     pipeline depths, layer cuts, micro-batch sizes, tensor parallelism (tp=2 inside one kind) and
     data-parallel degrees per kind, with the planner's batch split, the even split or random uneven shares
     (partial last micro-batches included), and pipelines that cross kinds. Only plans that fit and that the
     runtime accepts (no ZeRO, recomputation, sequence parallelism or interleaving: it refuses them).
  3. Every plan run --repeats times as its own job (`hal launch --plan PLAN.json`, fresh processes, one per
     emulated device, the training runtime hal.parallel), in rounds (the second round in reverse order, so
     a drift of the host's speed does not line up with the plans' order). Each job reuses the profile of
     step 1, measures its own all-reduce link, predicts its step with the cost model (CostModel.evaluate) and
     its memory per rank (the stage's bytes), trains --steps steps and reports the median step after its
     warm-up (3 steps) and each rank's peak device memory over the training steps (hal/train/job.py,
     result.json).
  4. The report (hal/train/validation.py): per plan predicted vs measured step (medians over the runs), the
     repeat spread ((max - min) / median of the runs), MAPE, worst case, bias, and peak memory per rank vs
     the cost model's (MAPE, worst, bias); --json, --plot.

All devices are EMULATED (the HAL bridge runs CPU kernels on their memory and paces every op to its CPU time /
relative speed); every line says so. Unless HAL_EMU_DEVICES is set, the cluster is the demo's: 2 x emu-fast at
0.4 and 2 x emu-slow at 0.2 of one host core, 1.2 cores of paced demand (what the processes do besides the paced
kernels adds to it: the report prints the cores they kept busy), which fits a 2-core host.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from hal.demo import TRAINING_EMU_DEVICES  # noqa: E402
from hal.parallel import PlanMismatch  # noqa: E402
from hal.parallel.devices import DeviceRecord, check_plan, live_cluster  # noqa: E402
from hal.parallel.roles import check_structure  # noqa: E402
from hal.plan.cluster import Link  # noqa: E402
from hal.plan.cost import CostModel, ceil_div  # noqa: E402
from hal.plan.exhaustive import all_class_configs  # noqa: E402
from hal.plan.model import ModelSpec  # noqa: E402
from hal.plan.plan import Pipeline, Plan, Stage  # noqa: E402
from hal.plan.planner import PlannerOptions, build_plan, even_split, plan as best_plan, split_batch  # noqa: E402
from hal.train.validation import PlanRuns, RankMemory, Run, describe, features, summarise  # noqa: E402

HELD_OUT_SEED = 7_202_612  # the committed command's plan set; never run during development
DEVELOPMENT_SEEDS = (0, 1, 2)
MICRO_BATCH_SIZES = (1, 2, 4)
TP_DEGREES = (1, 2)


def _launch(run_dir: Path, job_args: list[str], plan: Path | None, timeout: float) -> tuple[int, str, float]:
    """One `hal launch` of hal.train.job on every emu device; (exit code, the log's tail, wall seconds)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "hal.launch", "--devices", "emu", "--run-dir", str(run_dir), "--max-restarts", "0",
           *(["--plan", str(plan)] if plan else []), "-m", "hal.train.job", "--live", "off", "--checkpoint-every",
           "0", *job_args]
    # The workers import this tree's hal (they inherit the environment), one host thread per process.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]),
           "OMP_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    with open(run_dir / "launch.log", "w") as log:
        log.write("$ " + " ".join(cmd) + "\n")
        log.flush()
        # Its own process group: a job given up on is ended with its workers (the launcher's children).
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            rc = 124
            _stop(proc)
            log.write(f"\nplan_validate_launch: given up after {timeout:g} s (exit 124)\n")
        except BaseException:  # Ctrl-C: the job's group does not get the terminal's signal
            _stop(proc)
            raise
    tail = "\n".join((run_dir / "launch.log").read_text().splitlines()[-12:])
    return rc, tail, time.perf_counter() - t0


def _stop(proc: subprocess.Popen) -> None:
    """Ends a launch and its workers (its process group): SIGTERM, then SIGKILL."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=15)
            return
        except subprocess.TimeoutExpired:
            continue


def _runtime_accepts(p: Plan, records: list[DeviceRecord], n_layers: int) -> bool:
    try:
        check_plan(p, records)
        check_structure(p, n_layers)
        return True
    except PlanMismatch:
        return False


def _random_shares(rng: random.Random, n: int, batch: int) -> list[int]:
    """n positive integers summing to `batch`, uneven (weights uniform in [0.2, 1])."""
    w = [rng.uniform(0.2, 1.0) for _ in range(n)]
    shares = [max(1, int(batch * x / sum(w))) for x in w]
    while sum(shares) > batch:
        shares[shares.index(max(shares))] -= 1
    while sum(shares) < batch:
        shares[rng.randrange(n)] += 1
    return shares


def _with_shares(p: Plan, shares: list[int]) -> Plan:
    pipes = [Pipeline(list(q.stages), q.micro_batch_size, ceil_div(s, q.micro_batch_size), s)
             for q, s in zip(p.pipelines, shares)]
    return Plan(p.model, p.global_batch, p.seq_len, pipes, p.cluster)


def _draw_config(rng: random.Random, configs: list):
    """One of a class's configurations: its tensor-parallel degree, then its pipeline depth, drawn uniformly
    first (most configurations are of deep pipelines, many cuts each), then the rest (cuts, micro-batch size,
    data-parallel degree)."""
    tp = rng.choice(sorted({c.tp for c in configs}))
    pp = rng.choice(sorted({c.pp for c in configs if c.tp == tp}))
    return rng.choice([c for c in configs if c.tp == tp and c.pp == pp])


def make_plans(cluster, cm: CostModel, spec: ModelSpec, records: list[DeviceRecord], batch: int, n: int,
               seed: int) -> list[tuple[str, Plan]]:
    """The plan set (see the module's docstring): the planner's plan and its even split, then drawn by `seed`."""
    options = PlannerOptions(micro_batch_sizes=MICRO_BATCH_SIZES, tp_degrees=TP_DEGREES, partial_micro_batches=True)
    classes = cluster.device_classes()
    per_class = [all_class_configs(cm, c, options, batch) for c in classes]
    L = len(spec.layers)
    rng = random.Random(seed)
    plans, seen = [], set()

    def add(tag: str, p: Plan | None) -> None:
        if p is None or p.signature() in seen or len(p.pipelines) > batch:
            return
        if not cm.evaluate(p).fits or not _runtime_accepts(p, records, L):
            return
        seen.add(p.signature())
        plans.append((tag, p))

    best = best_plan(cluster, spec, batch, options).plan
    add("planner", best)
    add("planner, even split", even_split(best))
    ids = {c.kind: [d for i in c.nodes for d in cluster.nodes[i].device_ids] for c in classes}
    kinds = [c.kind for c in classes]
    tries = 0
    while len(plans) < n and tries < 20_000:
        tries += 1
        if len(kinds) >= 2 and rng.random() < 0.15:
            # Pipelines that cross kinds (a stage of each; outside the planner's default space, costed alike).
            a, b = rng.sample(kinds, 2)
            dp = rng.randint(1, min(len(ids[a]), len(ids[b])))
            cut, mbs = rng.randint(1, L - 1), rng.choice(MICRO_BATCH_SIZES)
            shares = _random_shares(rng, dp, batch) if dp > 1 else [batch]
            add("cross-kind", Plan(spec.name, batch, spec.seq_len, [
                Pipeline([Stage(a, [ids[a][k]], (0, cut)), Stage(b, [ids[b][k]], (cut, L))], mbs,
                         ceil_div(s, mbs), s) for k, s in enumerate(shares)], cluster.name))
            continue
        combo = [_draw_config(rng, cs) for cs in per_class if cs and rng.random() < 0.7]
        if not combo or sum(c.dp for c in combo) > batch:
            continue
        split = split_batch([(c.total, c.slowest, c.dp * c.mbs) for c in combo], batch)
        if split is None:
            continue
        p = build_plan(cm, combo, split[1], batch)
        if p is None:
            continue
        r = rng.random()
        if len(p.pipelines) > 1 and r < 0.25:
            add("random, even split", even_split(p))
        elif len(p.pipelines) > 1 and r < 0.6:
            add("random, random shares", _with_shares(p, _random_shares(rng, len(p.pipelines), batch)))
        else:
            add("random", p)
    return plans[:n]


def _read_run(run_dir: Path) -> Run:
    r = json.loads((run_dir / "result.json").read_text())
    mem = [RankMemory(m["rank"], m["device"], m.get("predicted_bytes"), m.get("peak_bytes")) for m in r["memory"]]
    h = run_dir / "harness.json"
    load = json.loads(h.read_text()).get("load") if h.exists() else None
    return Run(r["predicted_step_s"], r["measured_step_s"], mem, r.get("cpu_cores"), load)


def _collect(out: Path) -> tuple[list[PlanRuns], dict]:
    """The plans of a run folder and the runs that finished (--report-only): a run folder without result.json
    marks its plan failed, with its log's last lines."""
    index = json.loads((out / "plans" / "index.json").read_text())
    results = []
    for entry in index["plans"]:
        p = Plan.from_json((out / "plans" / entry["file"]).read_text())
        pr = PlanRuns(describe(p), entry["tag"], features=features(p))
        stem = Path(entry["file"]).stem
        for run_dir in sorted((out / "runs").glob(f"{stem}-r*")):
            if (run_dir / "result.json").exists():
                pr.runs.append(_read_run(run_dir))
            else:
                log = run_dir / "launch.log"
                tail = log.read_text().splitlines()[-3:] if log.exists() else ["no launch.log"]
                pr.refused = f"{run_dir.name}: no result.json: " + " | ".join(tail)
        results.append(pr)
    return results, index


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--plans", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=2, help="jobs per plan (fresh processes each)")
    ap.add_argument("--steps", type=int, default=8, help="steps per job; the job's median skips its 3 warm-up steps")
    ap.add_argument("--batch", type=int, default=32, help="global batch (sequences of 64 characters)")
    ap.add_argument("--model", default="small", help="hal.train.job --model (default: the demo's small GPT)")
    ap.add_argument("--seed", type=int, default=HELD_OUT_SEED,
                    help=f"the plan set's seed (default: the held-out {HELD_OUT_SEED}; development used "
                         f"{', '.join(map(str, DEVELOPMENT_SEEDS))})")
    ap.add_argument("--profile-repeats", type=int, default=5, help="profiler repeats per layer")
    ap.add_argument("--profile", type=Path, help="reuse this profile and RUN/job.json instead of profiling again "
                                                 "(the job.json next to it)")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "out" / "validate-launch",
                    help="run folders (profile, plans, every job's result.json and launch.log)")
    ap.add_argument("--timeout", type=float, default=300, help="seconds before a job is given up")
    ap.add_argument("--json", help="every plan, run, prediction and measurement (JSON)")
    ap.add_argument("--plot", help="predicted vs measured step time and peak memory (PNG)")
    ap.add_argument("--report-only", action="store_true",
                    help="run nothing: the report (and --json, --plot) of the runs already in --out, e.g. of a "
                         "run cut short")
    args = ap.parse_args(argv)
    if min(args.plans, args.repeats, args.steps, args.batch) < 1:
        ap.error("--plans, --repeats, --steps and --batch must be >= 1")
    from hal.plan.local import host_cores, use_fitting_emulation
    if args.report_only:
        return _report_only(args)
    t_start = time.perf_counter()
    load_start = os.getloadavg()
    held_out = args.seed == HELD_OUT_SEED
    print("plan validation on the multi-process runtime: every plan a `hal launch` job, EMULATED devices")
    print(use_fitting_emulation(TRAINING_EMU_DEVICES))  # sets HAL_EMU_DEVICES for the jobs unless the user did
    which = ("HELD OUT: not used during development" if held_out else
             "a development seed" if args.seed in DEVELOPMENT_SEEDS else "not the held-out seed")
    print(f"plan set: seed {args.seed} ({which}); "
          f"host load average {load_start[0]:.2f} on {host_cores()} cores at the start")
    out = args.out.resolve()
    for stale in ("plans", "runs"):  # a previous run's folders would mix into this one's (and --report-only's)
        shutil.rmtree(out / stale, ignore_errors=True)
    mbs_all = ",".join(str(b) for b in range(1, max(MICRO_BATCH_SIZES) + 1))  # partial last micro-batches too
    common = ["--model", args.model, "--batch", str(args.batch), "--micro-batch", str(max(MICRO_BATCH_SIZES)),
              "--profile-micro-batches", mbs_all, "--profile-repeats", str(args.profile_repeats),
              "--tp", ",".join(str(t) for t in TP_DEGREES)]  # the profile measures tp stages' shards too
    if args.profile:
        profile = args.profile.resolve()
        job_json = profile.parent / "job.json"
    else:
        profile = out / "profile" / "profile.json"
        profile.unlink(missing_ok=True)
        job_json = out / "profile" / "job.json"
        rc, tail, wall = _launch(out / "profile", [*common, "--profile", str(profile), "--profile-only"], None,
                                 args.timeout)
        if rc != 0:
            print(f"the profiling job failed (exit {rc}):\n{tail}", file=sys.stderr)
            return 1
        print(f"profiled the layers on each kind, micro-batches {mbs_all}, and the all-reduce link ({wall:.0f} s)")
    info = json.loads(job_json.read_text())
    records = [DeviceRecord.from_dict(r) for r in info["records"]]
    link = Link(info["link"]["bandwidth"], info["link"]["latency"]) if info["link"] else None
    cluster = live_cluster(records, None, link)
    spec = ModelSpec.from_dict(json.loads(profile.read_text()))
    cm = CostModel(cluster, spec)
    print("devices (EMULATED: CPU kernels on their own memory, paced to their relative speed): "
          + ", ".join(r.label + f" x{r.relative_speed:g}" for r in records))
    if link:
        print(f"  the profiling job's all-reduce: {link.latency * 1e6:.0f} us + bytes / {link.bandwidth / 1e9:.2f} "
              f"GB/s per ring step (each job measures its own)")
    plans = make_plans(cluster, cm, spec, records, args.batch, args.plans, args.seed)
    print(f"{len(plans)} plans, {args.repeats} job(s) each, {args.steps} steps per job "
          f"(global batch {args.batch}, model {info['model']}, {spec.params / 1e6:.2f} M parameters, "
          f"{len(spec.layers)} layers)")
    plan_dir = out / "plans"
    plan_dir.mkdir(parents=True, exist_ok=True)
    for i, (tag, p) in enumerate(plans):
        (plan_dir / f"{i:02d}.json").write_text(p.to_json())
    (plan_dir / "index.json").write_text(json.dumps({"seed": args.seed, "held_out": held_out, "plans": [
        {"file": f"{i:02d}.json", "tag": tag, "name": describe(p)} for i, (tag, p) in enumerate(plans)]}, indent=1))
    results = [PlanRuns(describe(p), tag, features=features(p)) for tag, p in plans]
    job_args = [*common, "--profile", str(profile), "--steps", str(args.steps)]
    for rep in range(args.repeats):
        order = list(range(len(plans)))
        if rep % 2:
            order.reverse()
        for i in order:
            pr = results[i]
            if pr.refused:
                continue
            run_dir = out / "runs" / f"{i:02d}-r{rep}"
            rc, tail, wall = _launch(run_dir, job_args, plan_dir / f"{i:02d}.json", args.timeout)
            if rc != 0 or not (run_dir / "result.json").exists():
                pr.refused = f"exit {rc}: " + " | ".join(tail.splitlines()[-3:])
                print(f"  [{rep + 1}/{args.repeats}] plan {i + 1:2d} {pr.name}: FAILED (exit {rc}); see "
                      f"{run_dir / 'launch.log'}", flush=True)
                continue
            (run_dir / "harness.json").write_text(json.dumps({"load": os.getloadavg()[0], "wall_s": wall}))
            run = _read_run(run_dir)
            pr.runs.append(run)
            print(f"  [{rep + 1}/{args.repeats}] plan {i + 1:2d} {pr.name:56s} predicted {run.predicted * 1e3:6.1f} "
                  f"ms, measured {run.measured * 1e3:6.1f} ms (EMULATED; job {wall:.0f} s, load {run.load:.1f})",
                  flush=True)
    load_end = os.getloadavg()
    try:
        summary = summarise(results, emulated=any(r.emulated for r in records))
    except ValueError as e:
        print(f"plan_validate_launch: {e}", file=sys.stderr)
        return 1
    print(f"\n== the cost model vs `hal launch` jobs (hal.parallel), {summary.label} ==")
    print(summary.text())
    cores = [r.cpu_cores for p in summary.scored for r in p.runs if r.cpu_cores is not None]
    if cores:
        print(f"host cores the jobs' processes kept busy: median {statistics.median(cores):.2f}, max "
              f"{max(cores):.2f} of {host_cores()} (paced demand: "
              f"{sum(r.relative_speed for r in records if r.emulated):g}); load average {load_start[0]:.2f} at the "
              f"start, {load_end[0]:.2f} at the end")
    if args.plot:
        _plot(summary, args.plot, ", ".join(dict.fromkeys(f"{r.kind} x{r.relative_speed:g}" for r in records)),
              args.seed)
        print(f"wrote {args.plot}")
    if args.json:
        Path(args.json).write_text(json.dumps({
            **summary.to_dict(), "mode": "hal launch (multi-process runtime)", "seed": args.seed,
            "held_out": held_out, "emu_config": os.environ.get("HAL_EMU_DEVICES"), "model": info["model"],
            "global_batch": args.batch, "steps": args.steps, "warmup_steps": 3, "repeats_asked": args.repeats,
            "profile_link": info["link"], "devices": [r.label for r in records],
            "plan_files": [p.to_dict() for _, p in plans], "load_average": [load_start[0], load_end[0]],
            "host_cores": host_cores(), "seconds": time.perf_counter() - t_start}, indent=1))
        print(f"wrote {args.json}")
    print(f"total {time.perf_counter() - t_start:.0f} s (EMULATED devices, wall clock)")
    return 0


def _report_only(args) -> int:
    out = args.out.resolve()
    results, index = _collect(out)
    info = json.loads((out / "profile" / "job.json").read_text()) if (out / "profile" / "job.json").exists() else {}
    records = [DeviceRecord.from_dict(r) for r in info.get("records", [])]
    try:
        summary = summarise(results, emulated=any(r.emulated for r in records) or not records)
    except ValueError as e:
        print(f"plan_validate_launch: {e}", file=sys.stderr)
        return 1
    seed = index.get("seed")
    print(f"== the cost model vs `hal launch` jobs (hal.parallel), {summary.label}: the runs in {out}, plan set "
          f"seed {seed}{' (HELD OUT)' if index.get('held_out') else ''} ==")
    print(summary.text())
    if args.plot:
        _plot(summary, args.plot, ", ".join(dict.fromkeys(f"{r.kind} x{r.relative_speed:g}" for r in records)), seed)
        print(f"wrote {args.plot}")
    if args.json:
        Path(args.json).write_text(json.dumps({**summary.to_dict(), "mode": "hal launch (multi-process runtime)",
                                               "seed": seed, "held_out": index.get("held_out"),
                                               "devices": [r.label for r in records], "report_only": str(out)},
                                              indent=1))
        print(f"wrote {args.json}")
    return 0


def _plot(summary, path: str, kinds: str, seed: int) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10.4, 5.0))
    ps = summary.scored
    meas = [p.measured * 1e3 for p in ps]
    pred = [p.predicted * 1e3 for p in ps]
    lo_err = [(p.measured - min(r.measured for r in p.runs)) * 1e3 for p in ps]
    hi_err = [(max(r.measured for r in p.runs) - p.measured) * 1e3 for p in ps]
    ax.errorbar(meas, pred, xerr=[lo_err, hi_err], fmt="o", ms=4, color="#4c72b0", ecolor="0.5", elinewidth=0.8,
                label=f"plans (bars: min-max of the runs): MAPE {summary.mape:.1%}, median spread "
                      f"{summary.median_spread:.1%}")
    _diagonal(ax, meas + pred)
    ax.set_xlabel("measured step time, median of the runs (ms)")
    ax.set_ylabel("predicted step time, cost model (ms)")
    ax.set_title(f"step time: {len(ps)} plans as `hal launch` jobs, seed {seed}", fontsize=9)
    ax.legend(fontsize=7.5, loc="best")  # where it hides no plan
    mm = [(pr / 2**20, me / 2**20) for _, _, _, pr, me in summary.memory_rows]
    if mm:
        bx.scatter([m for _, m in mm], [p for p, _ in mm], s=14, color="#c44e52",
                   label=f"ranks: MAPE {summary.memory_mape:.1%}")
        _diagonal(bx, [v for pair in mm for v in pair])
        bx.legend(fontsize=7.5, loc="best")
    bx.set_xlabel("measured peak device memory of the rank (MiB)")
    bx.set_ylabel("predicted memory of its stage, cost model (MiB)")
    bx.set_title("memory per rank", fontsize=9)
    fig.suptitle(f"cost model vs the multi-process runtime, EMULATED devices ({kinds}), wall clock", fontsize=9.5)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _diagonal(ax, vals) -> None:
    lo, hi = min(vals) * 0.85, max(vals) * 1.1
    ax.plot([lo, hi], [lo, hi], "k--", linewidth=0.8)
    ax.fill_between([lo, hi], [lo * 0.9, hi * 0.9], [lo * 1.1, hi * 1.1], color="0.9", label="±10 %", zorder=0)
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)


if __name__ == "__main__":
    sys.exit(main())
