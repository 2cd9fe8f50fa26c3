"""`hal plan`: plan training of a model on a cluster that mixes device types.

    hal plan --cluster mixed-256 --model llama-2-70b --global-batch 1024 [--seq 4096] [--json plan.json]
             [--plot plan.png]
    hal plan --local --model tiny --global-batch 32

Exit status: 0 a plan was found, 1 bad input, 2 no plan fits in memory.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from hal._format import print_table

__all__ = ["add_parser", "run", "main"]


def _ints(text: str) -> tuple[int, ...]:
    try:
        vals = tuple(int(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not vals or min(vals) < 1:
        raise argparse.ArgumentTypeError("values must be >= 1")
    return vals


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("plan", help="plan training across device types",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--cluster", help="cluster YAML file, or the name of a preset cluster (mixed-256, small-8, "
                                       "large-1024)")
    src.add_argument("--local", action="store_true", help="plan for this machine's devices, probed now")
    p.add_argument("--model", required=True, help="llama-2-7b, llama-2-13b, llama-2-70b, gpt3-175b, tiny, or a "
                                                   "model profile JSON (ModelSpec.to_dict)")
    p.add_argument("--global-batch", type=int, required=True, help="sequences per step")
    p.add_argument("--seq", type=int, help="sequence length (default: the model's)")
    p.add_argument("--json", help="write the plan and its predictions here")
    p.add_argument("--plot", help="draw the predicted pipeline timeline here (PNG)")
    p.add_argument("--micro-batches", type=_ints, help="micro-batch sizes to try (default 1,2,4,8)")
    p.add_argument("--tp", type=_ints, help="tensor-parallel degrees to try (default 1,2,4,8)")
    p.add_argument("--no-compare", action="store_true", help="skip the even-split and single-kind comparisons")
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
    from hal.plan.model import ModelSpec, get_model
    if name.endswith(".json") and Path(name).exists():
        spec = ModelSpec.from_dict(json.loads(Path(name).read_text()))
        if seq and seq != spec.seq_len:
            raise ValueError("--seq cannot change the sequence length of a measured model profile")
        return spec
    return get_model(name, seq)


def run(args: argparse.Namespace) -> int:
    from hal.plan.cluster import ClusterError, load_cluster
    from hal.plan.cost import CostModel
    from hal.plan.planner import NoPlanFits, PlannerOptions, even_split, plan
    from hal.plan.simulate import simulate

    try:
        if args.local:
            from hal.plan.local import default_probe, local_cluster
            cluster = local_cluster(lambda: default_probe(refresh=args.refresh_profile))
        else:
            cluster = load_cluster(args.cluster)
        model = _load_model(args.model, args.seq)
    except (ClusterError, KeyError, ValueError, OSError) as e:
        print(f"hal plan: {e.args[0] if isinstance(e, KeyError) else e}", file=sys.stderr)
        return 1
    if args.global_batch < 1:
        print("hal plan: --global-batch must be >= 1", file=sys.stderr)
        return 1
    kw = {}
    if args.micro_batches:
        kw["micro_batch_sizes"] = args.micro_batches
    if args.tp:
        kw["tp_degrees"] = args.tp
    options = PlannerOptions(**kw)
    try:
        result = plan(cluster, model, args.global_batch, options)
    except NoPlanFits as e:
        print(str(e), file=sys.stderr)
        return 2
    p, est = result.plan, result.estimate
    cm = CostModel(cluster, model, options.cost)
    sim = simulate(p, cm)

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
        pipes = [q for q in p.pipelines if q.stages[0].kind == kind]
        layouts = sorted({(len(q.stages), q.stages[0].tp) for q in pipes})
        layout = ", ".join(f"{len(pipes)}x(pp{pp} tp{tp})" for pp, tp in layouts)
        split = "/".join(str(s.layers[1] - s.layers[0]) for s in pipes[0].stages)
        mb = sorted({(q.micro_batch_size, q.num_micro_batches) for q in pipes})
        mbs = ", ".join(f"{m}x{b}" for b, m in mb)
        rows.append([k.label, f"{info['devices']}/{totals[kind]}", layout, split,
                     f"{info['samples']} ({info['samples'] / p.global_batch:.0%}) as {mbs}",
                     f"{_gib(info['memory_used'])} / {_gib(info['memory_total'])}", f"{info['utilisation']:.0%}"])
    _table("plan (per device kind)", ["kind", "devices", "pipelines", "layers/stage", "batch share (mb x size)",
                                      "memory GiB used/total", "utilisation"], rows)
    print(f"predicted step time {_fmt_s(est.step_time)} = pipeline {_fmt_s(max(est.pipeline_times))} + all-reduce "
          f"{_fmt_s(est.allreduce_time)} + optimizer {_fmt_s(est.optimizer_time)}; bubble {est.bubble_fraction:.1%}")
    print(f"throughput {est.tokens_per_s:,.0f} tokens/s, {est.samples_per_s:,.2f} samples/s"
          f"{' (emulated)' if emulated else ''}")
    print(f"simulated (event by event): step {_fmt_s(sim.step_time)}, bubble {sim.bubble_fraction:.1%}")
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
    print(f"searched {result.evaluated} class configurations, {result.combinations} combinations")
    if args.json:
        doc = {"plan": p.to_dict(), "cluster": cluster.to_dict(), "model": {"name": model.name,
               "params": model.params, "layers": len(model.layers), "seq_len": model.seq_len},
               "simulated": {"step_time_s": sim.step_time, "bubble_fraction": sim.bubble_fraction},
               "comparisons": comparisons, "emulated": emulated}
        Path(args.json).write_text(json.dumps(doc, indent=1, sort_keys=True, default=float))
        print(f"wrote {args.json}")
    if args.plot:
        from hal.plan.plot import plot_timeline
        plot_timeline(p, sim, cluster, args.plot)
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
