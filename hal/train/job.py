"""The demo's training job: a small GPT on Shakespeare, one process per device, as `hal launch` starts it.

    hal launch [--devices emu] [--run-dir DIR] hal/train/job.py [--steps 200] [--batch 32] [--split planned] [--tp 1,2]
    hal launch ... -m hal.train.job ...                      # the same, by module

Each process: joins the job (`hal.parallel.init_job`), measures the model's layers on its device kind (the
lowest rank of each kind; cached in the run folder), plans for the job's live devices (or takes the launcher's
--plan), resumes from the newest valid checkpoint in RUN_DIR/checkpoints, and trains; a checkpoint is written
every --checkpoint-every steps and at the end. Rank 0 shows the progress (step, loss, tokens/s, measured vs
predicted step time), appends each step to RUN_DIR/metrics.jsonl and writes RUN_DIR/result.json at the end.

After a lost device the launcher restarts the job on the devices left: it re-plans for them and resumes from
the last checkpoint; the steps after it are trained again (metrics.jsonl shows them twice, with their round).

--profile-only: measure the profile (--profile-micro-batches sizes) and the link, write RUN_DIR/job.json (the
job's devices and link, what a planner outside the job needs to plan and predict as the job does) and exit;
bench/plan_validate_launch.py starts with it. result.json's "memory" has each rank's device memory over the
training steps (measured peak, HAL's allocator) next to the cost model's figure for its stage.

--split even: the planner's pipelines with the global batch split evenly (the baseline the demo compares with).

--ideal-probe-every K (0: off): after every K-th step every rank trains the whole model alone for
--ideal-probe-seconds, all ranks side by side (hal.parallel.probe); result.json's "ideal_probe" has each probe's
figures and, per stretch of planned steps between two probes, the planned tokens/s against the ideal (the sum of
the ranks' tokens/s alone) of the probes around it. The probes change nothing the job computes.
HAL_TRAIN_KILL_AT=STEP:DEVICE (tests): on the first round, the rank on DEVICE (e.g. emu:2) SIGKILLs itself
when it reaches STEP.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import signal
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

import hal.parallel
from hal.parallel import EXIT_CONFIG, PlanMismatch
from hal.parallel.job import JobConfigError
from hal.parallel.probe import AloneProbe, ProbeError, check_fits, summarize
from hal.parallel.profile import measure_link, measure_spec, measure_tensor_parallel
from hal.parallel.trainer import resolve_plan
from hal.plan.cost import CostModel
from hal.plan.planner import NoPlanFits, PlannerOptions, even_split, plan as make_plan
from hal.train.corpus import Corpus
from hal.train.model import CONFIGS, build_layers, loss_fn, profile_loss

__all__ = ["main", "parse_args"]

WARMUP_STEPS = 3  # the first steps of a round warm kernels and allocators up: not in the measured medians


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="hal.train.job", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=sorted(CONFIGS), default="small")
    p.add_argument("--steps", type=int, default=200, help="steps in all (a resumed job trains the rest)")
    p.add_argument("--batch", type=int, default=32, help="global batch, in sequences")
    p.add_argument("--micro-batch", type=int, default=4, help="micro-batch size the planner uses")
    p.add_argument("--split", choices=("planned", "even"), default="planned")
    p.add_argument("--tp", default="1", help="tensor-parallel degrees the planner may use inside an island of one "
                                            "kind, comma-separated powers of two (default 1: none)")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint-every", type=int, default=50, help="steps between checkpoints, and one at the end (0: none)")
    p.add_argument("--profile", help="the layer profile JSON to use or write (default RUN_DIR/profile.json)")
    p.add_argument("--profile-repeats", type=int, default=3)
    p.add_argument("--profile-micro-batches", default=None,
                   help="micro-batch sizes the profile covers, comma-separated (default: --micro-batch); a --plan "
                        "of other sizes, or with partial last micro-batches, is predicted best when they are here")
    p.add_argument("--profile-only", action="store_true",
                   help="measure the profile and the all-reduce link, write them (the profile JSON and "
                        "RUN_DIR/job.json: the job's devices and link) and exit without training")
    p.add_argument("--live", choices=("auto", "on", "off"), default="auto", help="the live display (rank 0)")
    p.add_argument("--ideal-probe-every", type=int, default=0, metavar="K",
                   help="after every K-th step, every rank trains the whole model alone, side by side with "
                        "the others, to measure the ideal inside the job (0: never; it needs steps >= 2K)")
    p.add_argument("--ideal-probe-seconds", type=float, default=5.0, metavar="S",
                   help="each probe's timed window, the same on every rank (default 5)")
    a = p.parse_args(argv)
    for name in ("steps", "batch", "micro_batch"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if a.checkpoint_every < 0:
        p.error("--checkpoint-every must be >= 0")
    if a.ideal_probe_every < 0:
        p.error(f"--ideal-probe-every must be >= 0 (0: no probes), got {a.ideal_probe_every}")
    if a.ideal_probe_every and a.steps < 2 * a.ideal_probe_every:
        p.error(f"--ideal-probe-every {a.ideal_probe_every}: the ideal is paired with the planned steps between two "
                f"probes, and {a.steps} steps make fewer than two (use K <= {a.steps // 2} or more --steps)")
    if not (a.ideal_probe_seconds > 0 and math.isfinite(a.ideal_probe_seconds)):
        p.error(f"--ideal-probe-seconds must be a positive number of seconds, got {a.ideal_probe_seconds}")
    try:
        a.tp = tuple(int(t) for t in a.tp.split(","))
    except ValueError:
        p.error(f"--tp: expected comma-separated integers, got {a.tp!r}")
    if any(t < 1 or t & (t - 1) for t in a.tp):
        p.error(f"--tp: degrees must be powers of two, got {list(a.tp)}")
    try:
        a.profile_micro_batches = (tuple(sorted({int(b) for b in a.profile_micro_batches.split(",")}))
                                   if a.profile_micro_batches else (a.micro_batch,))
    except ValueError:
        p.error(f"--profile-micro-batches: expected comma-separated integers, got {a.profile_micro_batches!r}")
    if min(a.profile_micro_batches) < 1:
        p.error(f"--profile-micro-batches: sizes must be >= 1, got {list(a.profile_micro_batches)}")
    return a


def _kill_point() -> tuple[int, str] | None:
    v = os.environ.get("HAL_TRAIN_KILL_AT", "")
    if not v:
        return None
    step, _, device = v.partition(":")
    return int(step), device


def _per_kind(plan, seq: int) -> dict[str, int]:
    """Tokens per step by the kinds of each pipeline ("emu-fast", or "emu-fast+emu-slow" for a mixed one)."""
    out: dict[str, int] = {}
    for p in plan.pipelines:
        k = "+".join(p.kinds)
        out[k] = out.get(k, 0) + p.samples * seq
    return out


class _Memory:
    """This rank's device memory over the training steps: the peak of the bytes HAL's caching allocator gave to
    tensors (torch.hal.max_memory_allocated; not the allocator's reserve) from the first step on, and what is
    held after the last one."""

    def __init__(self, job):
        self.job = job
        self.on = job.device.type == "hal"
        self.peak = 0  # the peak of the steps before the last pause (an ideal probe's model is not the job's)
        if self.on:
            job.synchronize()
            self.before = torch.hal.memory_allocated(job.device)
            torch.hal.reset_peak_memory_stats(job.device)

    def pause(self) -> None:
        if self.on:
            self.job.synchronize()
            self.peak = max(self.peak, torch.hal.max_memory_allocated(self.job.device))

    def resume(self) -> None:
        if self.on:
            self.job.synchronize()
            torch.hal.reset_peak_memory_stats(self.job.device)

    def gather(self) -> list[dict]:
        mine = {"peak_bytes": None, "before_bytes": None, "after_bytes": None}
        if self.on:
            self.job.synchronize()
            mine = {"peak_bytes": int(max(self.peak, torch.hal.max_memory_allocated(self.job.device))),
                    "before_bytes": int(self.before), "after_bytes": int(torch.hal.memory_allocated(self.job.device))}
        out: list = [None] * self.job.world_size
        dist.all_gather_object(out, mine)
        return out


def _predicted_memory(cost: CostModel, estimate, plan, role) -> dict:
    """The cost model's bytes per device of `role`'s stage: parameters with their gradients and optimizer state,
    and the activations of the micro-batches it holds at peak (CostModel.stage_memory)."""
    if role.idle:
        return {"predicted_bytes": None, "predicted_param_bytes": None, "predicted_activation_bytes": None}
    sc = estimate.stages[role.pipeline][role.stage]
    st = plan.pipelines[role.pipeline].stages[role.stage]
    params = float(cost.param_memory(st.layers[0], st.layers[1], st.tp))
    return {"predicted_bytes": sc.memory, "predicted_param_bytes": params,
            "predicted_activation_bytes": sc.memory - params, "in_flight": sc.in_flight}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)  # one process per device; an emulated device paces one host core's work
    try:
        job = hal.parallel.init_job()
    except JobConfigError as e:
        print(f"hal.train.job: {e}", file=sys.stderr)
        return EXIT_CONFIG
    say = (lambda s: print(s, file=sys.stderr, flush=True)) if job.rank == 0 else (lambda s: None)
    cfg = CONFIGS[args.model]
    corpus = Corpus(seed=args.seed)
    if corpus.vocab != cfg.vocab:
        cfg = type(cfg)(cfg.name, cfg.layers, cfg.hidden, cfg.heads, cfg.seq, corpus.vocab)
    layers_fn = lambda: build_layers(cfg)  # noqa: E731
    optimizer_fn = lambda ps: torch.optim.Adam(ps, lr=args.lr, foreach=True)  # noqa: E731
    run_dir = job.run_dir
    n_layers = cfg.layers + 2
    make_input = lambda b: corpus.batch(0, b, cfg.seq)[0]  # noqa: E731 - the profiles' input of b sequences
    profile_path = Path(args.profile or run_dir / "profile.json")
    spec = measure_spec(job, cfg.name, layers_fn, make_input, args.profile_micro_batches, cfg.seq, profile_loss,
                        optimizer_fn, repeats=args.profile_repeats, cache=profile_path, log=say)
    if max(args.tp) > 1:  # a tensor-parallel stage's shards, measured on the devices it would run on
        spec = measure_tensor_parallel(job, spec, layers_fn, make_input, args.profile_micro_batches, args.tp,
                                       profile_loss, repeats=args.profile_repeats, cache=profile_path, log=say)
    job.link = measure_link(job)  # what the sums between these devices cost here (the planner's link)
    if args.profile_only:
        if job.rank == 0:
            # What a planner outside the job needs to plan for exactly these devices: hal.parallel.devices.
            # live_cluster(records, None, link) is the cluster the job itself plans and predicts with.
            (run_dir / "job.json").write_text(json.dumps({
                "records": [r.to_dict() for r in job.records], "model": cfg.name, "seq": cfg.seq,
                "link": ({"bandwidth": job.link.bandwidth, "latency": job.link.latency}
                         if job.link is not None else None),
                "profile": str(profile_path.resolve()),
                "profile_micro_batches": list(args.profile_micro_batches), "time": time.time()}, indent=1))
            say(f"hal.train.job: profiled {cfg.name} on {job.world_size} device(s); wrote {run_dir / 'job.json'}")
        job.close()
        return 0

    def plan_fn(cluster):
        # The runtime runs partial last micro-batches: the planner may split the batch sample by sample.
        best = make_plan(cluster, spec, args.batch, PlannerOptions(micro_batch_sizes=(args.micro_batch,),
                                                                  tp_degrees=args.tp, partial_micro_batches=True)).plan
        return even_split(best) if args.split == "even" else best

    try:
        plan, why = resolve_plan(job, plan_fn, n_layers)
    except (PlanMismatch, NoPlanFits) as e:
        print(f"hal.train.job: rank {job.rank} ({job.record.label}): {e}", file=sys.stderr)
        return EXIT_CONFIG
    cluster = job.cluster()
    cost = CostModel(cluster, spec)
    estimate = cost.evaluate(plan)
    predicted = estimate.step_time
    trainer = hal.parallel.setup(job, plan, layers_fn, optimizer_fn, loss_fn, seed=args.seed)
    ckpt_dir = run_dir / "checkpoints"
    state = trainer.load_checkpoint(ckpt_dir)
    start = 0
    if state is not None:
        if state.get("model") != cfg.name:
            say(f"hal.train.job: the checkpoint in {ckpt_dir} is of model {state.get('model')!r}, not {cfg.name!r}")
            return EXIT_CONFIG
        start = int(state["step"])
    say(f"hal.train.job: {job.world_size} processes, {'; '.join(r.label for r in job.records)}; plan {why}; "
        f"predicted step {predicted * 1e3:.0f} ms" + (f"; resumed after step {start}" if state else "")
        + (f"; all-reduce between the devices measured as {job.link.latency * 1e6:.0f} us + bytes / "
           f"{job.link.bandwidth / 1e9:.2f} GB/s per ring step" if job.link is not None else ""))
    say(trainer.describe())
    probe = None
    if args.ideal_probe_every:
        # The whole model alone on this device (its parameters, gradients, optimizer state and one micro-batch's
        # activations, by the cost model) next to what this rank's stage holds.
        need = float(cost.param_memory(0, n_layers, 1)) + float(cost.activation_memory(0, n_layers, 1,
                                                                                       args.micro_batch))
        held = _predicted_memory(cost, estimate, plan, trainer.role)["predicted_param_bytes"] or 0.0
        try:
            probe = AloneProbe(job, layers_fn, optimizer_fn, loss_fn, micro_batch=args.micro_batch,
                               seconds=args.ideal_probe_seconds, seq=cfg.seq, seed=args.seed)
            check_fits(job, need, held)
        except (ValueError, ProbeError) as e:
            say(f"hal.train.job: --ideal-probe-every: {e}")
            trainer.close()
            return EXIT_CONFIG
        say(f"hal.train.job: an ideal probe after every {args.ideal_probe_every} steps: every rank trains the whole "
            f"model alone for {args.ideal_probe_seconds:g} s, side by side")
    probes, step_s = [], {}
    kill = _kill_point()
    tokens = args.batch * cfg.seq
    measured, every_step, bubbles, breakdown = [], [], [], []
    rounds = int(job.restart)
    from hal.train.progress import Progress
    progress = None
    if job.rank == 0:
        live = {"auto": None, "on": True, "off": False}[args.live]
        emulated = any(r.emulated for r in job.records)
        title = (f"{cfg.name} on {job.world_size} {'EMULATED ' if emulated else ''}device(s), {args.split} split")
        progress = Progress(args.steps, title=title, metrics_path=run_dir / "metrics.jsonl", live=live,
                            predicted_step_s=predicted, start_step=start)
        progress.__enter__()
        if state is not None:
            progress.note(f"resumed from the checkpoint after step {start}, on {job.world_size} device(s) ({why})")
    losses = []
    # Device memory of the training steps alone (not of the profiling, which ran every layer on one device).
    memory = _Memory(job)
    try:
        for step in range(start, args.steps):
            if kill and rounds == 0 and step == kill[0] and job.record.name == kill[1]:
                os.kill(os.getpid(), signal.SIGKILL)
            x, y = corpus.batch(step, args.batch, cfg.seq)
            stats = trainer.step(x, y)
            losses.append(stats.loss)
            every_step.append(stats.step_s)
            step_s[step + 1] = stats.step_s
            if step - start >= WARMUP_STEPS:
                measured.append(stats.step_s)
                bubbles.append(stats.bubble_fraction)
                breakdown.append(stats.ranks)
            if progress is not None:
                progress.update(step + 1, stats.loss, stats.step_s, tokens, stats.samples,
                                extra={"round": rounds, "devices": job.world_size, "bubble": stats.bubble_fraction})
            done = step + 1
            if args.checkpoint_every and (done % args.checkpoint_every == 0 or done == args.steps):
                trainer.save_checkpoint(ckpt_dir, done, {"model": cfg.name, "data": {"step": done}})
            if probe is not None and done % args.ideal_probe_every == 0:
                memory.pause()  # the probe's model is not the job's: not in its memory figures
                probes.append(probe.run(x, y, done))
                memory.resume()
                if progress is not None:
                    p = probes[-1]
                    progress.note(f"ideal probe after step {done}: {p.ideal_tokens_per_s:.0f} tokens/s, every device "
                                  f"alone side by side (" + ", ".join(f"{r.device} {r.samples_per_s * cfg.seq:.0f}"
                                                                      for r in p.ranks) + ")")
    except ProbeError as e:
        say(f"hal.train.job: {e}")
        trainer.close()
        return EXIT_CONFIG
    finally:
        if progress is not None:
            progress.__exit__(None, None, None)
    measured_memory = memory.gather()  # collective: every rank
    if job.rank == 0:
        # Steps after the warm-up; a round too short to have any counts all its steps.
        med = statistics.median(measured or every_step) if every_step else float("nan")
        per_kind = _per_kind(plan, cfg.seq)
        result = {
            "emulated": any(r.emulated for r in job.records), "devices": [r.label for r in job.records],
            "kinds": sorted({r.kind for r in job.records}), "model": cfg.name, "global_batch": args.batch,
            "seq": cfg.seq, "split": args.split, "plan": plan.to_dict(), "plan_why": why, "round": rounds,
            "resumed_after_step": start if state is not None else None, "steps": args.steps,
            "steps_this_round": len(losses), "loss_first": losses[0] if losses else None,
            "loss_last": losses[-1] if losses else None,
            "loss_last10": statistics.fmean(losses[-10:]) if losses else None,
            "predicted_step_s": predicted, "measured_step_s": med,
            "tokens_per_s": tokens / med if med and math.isfinite(med) else None,
            "per_kind_tokens_per_s": {k: v / med for k, v in per_kind.items()} if med and math.isfinite(med) else {},
            "bubble_fraction": statistics.median(bubbles) if bubbles else None,
            # The job's all-reduce as measured at its start (the planner's link between its devices).
            "link": job.link.to_dict() if job.link is not None else None,
            # Host cores the job's processes kept busy in a step (their CPU time / the step's wall time): what the
            # emulated devices really demand of the host, their speeds plus what is not paced (dispatch, Python).
            "cpu_cores": statistics.median(sum(r.cpu_s for r in b) / max(r.step_s for r in b) for b in breakdown)
            if breakdown else None,
            # Each rank's median seconds per step in each part of it (steps after the warm-up).
            "ranks": [{"rank": r, "device": job.records[r].label, "kind": job.records[r].kind,
                       **{part: statistics.median(getattr(b[r], part) for b in breakdown)
                          for part in ("step_s", "compute_s", "wait_s", "allreduce_s", "optimizer_s", "cpu_s")}}
                      for r in range(job.world_size)] if breakdown else [],
            # Each rank's device memory in the training steps (measured: HAL's caching allocator, bytes held by
            # tensors) and the cost model's figure for its stage (predicted; None on an idle rank).
            "memory": [{"rank": r, "device": job.records[r].label, **measured_memory[r],
                        **_predicted_memory(cost, estimate, plan, trainer.roles[r])}
                       for r in range(job.world_size)],
            # The ideal measured inside the job (--ideal-probe-every; hal.parallel.probe.summarize), or None.
            "ideal_probe": ({"every": args.ideal_probe_every, "seconds": args.ideal_probe_seconds,
                             "micro_batch": args.micro_batch,
                             **summarize(probes, step_s, tokens, skip_through=start + WARMUP_STEPS)}
                            if probe is not None else None),
            "time": time.time()}
        (run_dir / "result.json").write_text(json.dumps(result, indent=1))
        say(f"hal.train.job: done: loss {result['loss_first']} -> {result['loss_last']}, step {med * 1e3:.0f} ms "
            f"measured vs {predicted * 1e3:.0f} ms predicted, {result['tokens_per_s'] or 0:.0f} tokens/s")
        ip = result["ideal_probe"]
        if ip is not None and ip["fraction_median"] is not None:
            say(f"hal.train.job: {ip['fraction_median']:.1%} of the ideal from {len(ip['probes'])} in-job probes "
                f"(median over {len(ip['windows'])} windows, {ip['fraction_min']:.1%} to {ip['fraction_max']:.1%})")
    trainer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
