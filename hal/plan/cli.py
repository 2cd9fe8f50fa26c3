"""`hal plan`: plan training of a model on a cluster that mixes device types.

    hal plan --cluster mixed-256 --model llama-2-70b --global-batch 1024 [--seq 4096] [--json plan.json]
             [--plot plan.png] [--explain]
    hal plan --local --model tiny --global-batch 32

Exit status: 0 a plan was found, 1 no plan fits in memory, 2 bad input (a one-line message naming it).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from hal._format import print_table

__all__ = ["add_parser", "run", "main", "BAD_INPUT", "NO_PLAN"]

NO_PLAN, BAD_INPUT = 1, 2


class _BadInput(Exception):
    """Bad input found after parsing; the message names it."""


def _checked(check):
    """An argparse type from a check that raises ValueError (one source for the limits: the planner's)."""
    def parse(text: str):
        try:
            return check(int(text))
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e) if "invalid literal" not in str(e) else
                                             f"expected an integer, got {text!r}") from None
    return parse


def _ints(check):
    def parse(text: str) -> tuple[int, ...]:
        return tuple(_checked(check)(x) for x in text.split(","))
    return parse


def _batch(n: int) -> int:
    from hal.plan.planner import check_global_batch
    return check_global_batch(n)


def _seq(n: int) -> int:
    from hal.plan.limits import MAX_SEQ, check_number
    return check_number(n, 1, MAX_SEQ, integer=True)


def _micro_batch(n: int) -> int:
    from hal.plan.planner import PlannerOptions, check_options
    return check_options(PlannerOptions(micro_batch_sizes=(n,))).micro_batch_sizes[0]


def _tp(n: int) -> int:
    from hal.plan.planner import PlannerOptions, check_options
    return check_options(PlannerOptions(tp_degrees=(n,))).tp_degrees[0]


def _one_line_error(message: str) -> None:
    print(f"hal plan: {message} (see hal plan --help)", file=sys.stderr)
    sys.exit(BAD_INPUT)


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("plan", help="plan training across device types",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.error = _one_line_error  # a usage error is one line, like every other bad input
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--cluster", help="cluster YAML file, or the name of a preset cluster (mixed-256, small-8, "
                                       "large-1024, a100-8)")
    src.add_argument("--local", action="store_true", help="plan for this machine's devices, probed now")
    p.add_argument("--model", required=True, help="llama-2-7b, llama-2-13b, llama-2-70b, gpt3-175b, tiny, or a "
                                                   "model profile JSON (ModelSpec.to_dict)")
    p.add_argument("--global-batch", type=_checked(_batch), required=True, help="sequences per step (1 to 2^53)")
    p.add_argument("--seq", type=_checked(_seq), help="sequence length (default: the model's; 1 to 2^24)")
    p.add_argument("--json", help="write the plan and its predictions here")
    p.add_argument("--plot", help="draw the predicted pipeline timeline here (PNG)")
    p.add_argument("--micro-batches", type=_ints(_micro_batch), help="micro-batch sizes to try (default 1,2,4,8)")
    p.add_argument("--tp", type=_ints(_tp), help="tensor-parallel degrees to try, powers of two (default 1,2,4,8)")
    p.add_argument("--techniques", choices=("all", "runtime"), default="all",
                   help="all (default): also search ZeRO 0-3, recomputation, sequence parallelism, interleaved "
                        "1F1B and overlapped gradient sync; runtime: none of them, the space hal launch plans in (hal.parallel "
                        "also runs ZeRO-1, from a plan file)")
    p.add_argument("--no-compare", action="store_true", help="skip the even-split and single-kind comparisons")
    p.add_argument("--explain", action="store_true", help="why the chosen plan beats the runners-up: each one's "
                                                           "step term by term (fill, steady, all-reduce, optimizer)")
    p.add_argument("--refresh-profile", action="store_true", help="with --local: measure again, ignore the cache")
    p.set_defaults(func=run)
    return p


def _table(title: str, columns: list[str], rows: list[list[str]]) -> None:
    print_table(title, columns, rows, width=160)


def _gib(x: float) -> str:
    return f"{x / 2 ** 30:.1f}"


def _fmt_s(t: float) -> str:
    return f"{t * 1e3:.2f} ms" if t < 1 else f"{t:.3f} s"


def _load_model(name: str, seq: int | None):
    from hal.plan.limits import load_json
    from hal.plan.model import ModelSpec, get_model
    if not name.endswith(".json"):
        return get_model(name, seq)
    try:
        spec = ModelSpec.from_dict(load_json(name))
    except OSError as e:
        raise _BadInput(f"--model {name}: cannot read the model profile: {e.strerror or e}") from None
    except ValueError as e:  # JSON syntax (json.JSONDecodeError is a ValueError) or a bad field
        raise _BadInput(f"--model {name}: {e}") from None
    if seq and seq != spec.seq_len:
        raise _BadInput(f"--seq {seq}: cannot change the sequence length ({spec.seq_len}) of a measured model profile")
    return spec


def _check_output(flag: str, path: str | None) -> None:
    """Fails before planning when `path` cannot be written (what is written comes after a long search)."""
    if path is None:
        return
    p = Path(path)
    parent = p.parent if str(p.parent) else Path(".")
    if p.is_dir():
        raise _BadInput(f"{flag} {path}: is a directory")
    if not parent.is_dir():
        raise _BadInput(f"{flag} {path}: the directory {parent} does not exist")
    if not os.access(p if p.exists() else parent, os.W_OK):
        raise _BadInput(f"{flag} {path}: not writable")


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except _BadInput as e:
        print(f"hal plan: {e}", file=sys.stderr)
        return BAD_INPUT


def _run(args: argparse.Namespace) -> int:
    from hal.plan.cluster import ClusterError, load_cluster
    from hal.plan.cost import CostModel
    from hal.plan.planner import ALL_TECHNIQUES, RUNTIME, NoPlanFits, PlannerOptions, even_split, plan
    from hal.plan.simulate import simulate

    _check_output("--json", args.json)
    _check_output("--plot", args.plot)
    if args.json and args.plot and Path(args.json).resolve() == Path(args.plot).resolve():
        raise _BadInput(f"--json and --plot name the same file {args.json}")
    try:
        if args.local:
            from hal.plan.local import default_probe, local_cluster
            cluster = local_cluster(lambda: default_probe(refresh=args.refresh_profile))
        else:
            cluster = load_cluster(args.cluster)
        model = _load_model(args.model, args.seq)
    except ClusterError as e:
        raise _BadInput(str(e)) from None
    except KeyError as e:
        raise _BadInput(f"--model: {e.args[0]}") from None
    except ValueError as e:
        raise _BadInput(f"--model {args.model}: {e}") from None
    kw = {}
    if args.micro_batches:
        kw["micro_batch_sizes"] = args.micro_batches
    if args.tp:
        kw["tp_degrees"] = args.tp
    options = PlannerOptions(**kw, techniques=ALL_TECHNIQUES if args.techniques == "all" else RUNTIME)
    try:
        result = plan(cluster, model, args.global_batch, options)
    except NoPlanFits as e:
        print(str(e), file=sys.stderr)
        return NO_PLAN
    except ValueError as e:  # a cluster and model whose figures give no finite prediction
        raise _BadInput(str(e)) from None
    p, est = result.plan, result.estimate
    cm = CostModel(cluster, model, options.cost)
    try:
        sim, not_simulated = simulate(p, cm), None
    except ValueError as e:  # the schedule is too long to step through; the closed form stands
        sim, not_simulated = None, str(e)

    emulated = any(k.emulated for k in cluster.kinds.values() if k.name in cluster.used_kinds())
    print(f"cluster {cluster.name}: {cluster.num_devices} devices"
          f"{' (EMULATED devices present: figures describe emulation, not silicon)' if emulated else ''}")
    print(f"model {model.name}: {model.params / 1e9:.2f} B parameters, {len(model.layers)} layers, "
          f"sequence {model.seq_len}; global batch {args.global_batch}")
    for name in cluster.used_kinds():
        k = cluster.kinds[name]
        print(f"  {k.label}: {k.peak_flops / 1e12:.1f} TFLOP/s x efficiency {k.efficiency:.2f}, "
              f"{_gib(k.memory_bytes)} GiB, source {k.source} (confidence {k.confidence})")

    totals = {}
    for n in cluster.nodes:
        totals[n.kind] = totals.get(n.kind, 0) + n.devices
    rows = []
    per_kind = p.predicted["per_kind"]
    for kind in cluster.used_kinds():
        k = cluster.kinds[kind]
        info = per_kind.get(kind)
        if info is None:
            rows.append([k.label, f"0/{totals[kind]}", "unused", "-", "-", f"- / {_gib(k.memory_bytes)}", "-"])
            continue
        pipes = [q for q in p.pipelines if kind in q.kinds]  # a cross-kind pipeline counts under each kind
        shapes: dict[tuple, int] = {}
        for q in pipes:
            own = [s for s in q.stages if s.kind == kind]
            shape = (len(own), own[0].tp, "->".join(q.kinds) if len(q.kinds) > 1 else "")
            shapes[shape] = shapes.get(shape, 0) + 1
        layout = ", ".join(f"{n}x(pp{pp} tp{tp}{' of ' + via if via else ''})"
                           for (pp, tp, via), n in sorted(shapes.items()))
        split = "/".join(str(s.layers[1] - s.layers[0]) for s in pipes[0].stages if s.kind == kind)
        mb = sorted({(q.micro_batch_size, q.num_micro_batches) for q in pipes})
        mbs = ", ".join(f"{m}x{b}" for b, m in mb)
        rows.append([k.label, f"{info['devices']}/{totals[kind]}", layout, split,
                     f"{info['samples']} ({info['samples'] / p.global_batch:.0%}) as {mbs}",
                     f"{_gib(info['memory_used'])} / {_gib(info['memory_total'])}", f"{info['utilisation']:.0%}"])
    _table("plan (per device kind)", ["kind", "devices", "pipelines", "layers/stage", "batch share (mb x size)",
                                      "memory GiB used/total", "utilisation"], rows)
    t = p.techniques
    beyond = t.zero > 1 or t.recompute != "none" or t.sequence_parallel or t.virtual_stages > 1
    print(f"techniques: {t.label()}"
          + (" (hal.parallel runs ZeRO-1 and overlapped sums, not the others: plan with --techniques runtime for "
             "hal launch)" if beyond else ""))
    print(f"predicted step time {_fmt_s(est.step_time)} = pipeline {_fmt_s(max(est.pipeline_times))} + all-reduce "
          f"{_fmt_s(est.allreduce_time)} + optimizer {_fmt_s(est.optimizer_time)}; bubble {est.bubble_fraction:.1%}")
    print(f"throughput {est.tokens_per_s:,.0f} tokens/s, {est.samples_per_s:,.2f} samples/s"
          f"{' (emulated)' if emulated else ''}")
    if sim is not None:
        print(f"simulated (event by event): step {_fmt_s(sim.step_time)}, bubble {sim.bubble_fraction:.1%}")
    else:
        print(f"simulated (event by event): skipped: {not_simulated}")
    comparisons = {}
    if not args.no_compare:
        even = cm.evaluate(even_split(p))
        comparisons["even_split"] = {"step_time_s": even.step_time, "fits": even.fits}
        print(f"vs even batch split over the same pipelines: {_fmt_s(even.step_time)} "
              f"({even.step_time / est.step_time:.2f}x slower)" + ("" if even.fits else " [does not fit]"))
        for kind in cluster.used_kinds():
            label = cluster.kinds[kind].label
            try:
                alone = plan(cluster, model, args.global_batch, options, kinds={kind}).estimate
                comparisons[kind] = {"step_time_s": alone.step_time}
                print(f"vs {label} alone: {_fmt_s(alone.step_time)} ({alone.step_time / est.step_time:.2f}x slower)")
            except NoPlanFits as e:
                comparisons[kind] = {"error": str(e)}
                print(f"vs {label} alone: does not fit")
    if args.explain:
        from hal.plan.explain import explain
        print("why this plan (terms of the cost model; fill and steady: the slowest pipeline):")
        for line in explain(cm, (p, est), result.runners_up):
            print(f"  {line}")
    print(f"searched {result.evaluated} class configurations, {result.combinations} combinations")
    if args.json:
        doc = {"plan": p.to_dict(), "cluster": cluster.to_dict(), "model": {"name": model.name,
               "params": model.params, "layers": len(model.layers), "seq_len": model.seq_len},
               "simulated": ({"step_time_s": sim.step_time, "bubble_fraction": sim.bubble_fraction} if sim else
                             {"skipped": not_simulated}),
               "comparisons": comparisons, "emulated": emulated}
        try:
            Path(args.json).write_text(json.dumps(doc, indent=1, sort_keys=True, default=float))
        except OSError as e:
            raise _BadInput(f"--json {args.json}: {e.strerror or e}") from None
        print(f"wrote {args.json}")
    if args.plot:
        if sim is None:
            hint = "--techniques runtime" if p.techniques.virtual_stages > 1 else "a smaller --global-batch"
            raise _BadInput(f"--plot {args.plot}: no timeline to draw: {not_simulated}; use {hint}")
        try:
            from hal.plan.plot import plot_timeline
            plot_timeline(p, sim, cluster, args.plot)
        except ImportError as e:
            raise _BadInput(f"--plot {args.plot}: needs matplotlib ({e})") from None
        except (OSError, ValueError) as e:  # unwritable, or a file ending matplotlib cannot write
            raise _BadInput(f"--plot {args.plot}: {getattr(e, 'strerror', None) or e}") from None
        print(f"wrote {args.plot}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hal")
    sub = parser.add_subparsers(dest="command", required=True)
    add_parser(sub)
    args = parser.parse_args(["plan", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
