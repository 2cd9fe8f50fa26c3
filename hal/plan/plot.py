"""Pictures: the pipeline timeline of a plan, and predicted-vs-measured step times. matplotlib, Agg backend."""
from __future__ import annotations

from pathlib import Path

from hal.plan.cluster import Cluster
from hal.plan.plan import Plan
from hal.plan.simulate import Event, SimResult

__all__ = ["plot_timeline", "plot_timelines", "plot_validation"]

_COLORS = {"F": "#4c72b0", "B": "#55a868", "send": "#c44e52", "allreduce": "#8172b2", "optimizer": "#ccb974"}


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plot_timeline(plan: Plan, sim: SimResult, cluster: Cluster, path: str | Path, max_rows: int = 48) -> None:
    """The predicted timeline of a plan: one row per stage (its tp devices) of the first pipeline of each
    distinct layout; the step-wide all-reduce and optimizer close every row."""
    seen, rows = set(), []  # (pipeline index, stage index, label)
    for j, pipe in enumerate(plan.pipelines):
        sig = (tuple(s.kind for s in pipe.stages), tuple(s.layers for s in pipe.stages), pipe.num_micro_batches)
        if sig in seen:
            continue
        seen.add(sig)
        for i, st in enumerate(pipe.stages):
            ids = st.device_ids
            dev = f"{ids[0]}" if len(ids) == 1 else f"{ids[0]}-{ids[-1]}"
            rows.append((j, i, f"{cluster.kinds[st.kind].label} dev {dev} L{st.layers[0]}-{st.layers[1] - 1}"))
    emulated = any(cluster.kinds[s.kind].emulated for p in plan.pipelines for s in p.stages)
    title = (f"{plan.model} on {plan.cluster or 'cluster'}: batch {plan.global_batch}, bubble "
             f"{sim.bubble_fraction:.1%} (predicted{', EMULATED devices' if emulated else ''})")
    plot_timelines(path, [("predicted", sim.events, sim.step_time)], rows[:max_rows], title)


def plot_timelines(path: str | Path, panels: list[tuple[str, list[Event], float]],
                   rows: list[tuple[int, int, str]], title: str) -> None:
    """One panel per (name, events, step time), on one time axis; `rows` are (pipeline, stage, label).
    Events of pipelines and stages without a row are left out; the all-reduce spans every row."""
    plt = _pyplot()
    index = {(j, i): r for r, (j, i, _) in enumerate(rows)}
    span = max(t for _, _, t in panels)
    scale, unit = (1e3, "ms") if span < 1 else (1.0, "s")
    fig, axes = plt.subplots(len(panels), 1, figsize=(11, 0.6 + len(panels) * (0.9 + 0.3 * len(rows))),
                             sharex=True, squeeze=False)
    for ax, (name, events, step) in zip(axes[:, 0], panels):
        bars: dict[tuple[int, str], list[tuple[float, float]]] = {}
        for e in events:
            targets = range(len(rows)) if e.op == "allreduce" else [index.get((e.pipeline, e.stage))]
            for r in targets:
                if r is not None and e.end > e.start:
                    bars.setdefault((r, e.op), []).append((e.start * scale, (e.end - e.start) * scale))
        for (r, op), spans in bars.items():
            ax.broken_barh(spans, (r - 0.4, 0.8), facecolors=_COLORS[op], linewidth=0)
        ax.set_yticks(range(len(rows)), [label for _, _, label in rows], fontsize=7)
        ax.invert_yaxis()
        ax.axvline(step * scale, color="k", linewidth=0.8, linestyle="--")
        ax.set_title(f"{name}: step {step * scale:.3g} {unit}", fontsize=9)
        ax.set_xlim(0, span * scale * 1.02)
    axes[-1, 0].set_xlabel(f"time in step ({unit})")
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in _COLORS.values()]
    fig.legend(handles, list(_COLORS), loc="lower right", fontsize=7, ncol=5)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_validation(predicted: list[float], measured: list[float], path: str | Path, title: str) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.scatter(measured, predicted, s=18)
    lo, hi = min(predicted + measured), max(predicted + measured)
    ax.plot([lo, hi], [lo, hi], "k--", linewidth=0.8)
    ax.set_xlabel("measured step time (s)")
    ax.set_ylabel("predicted step time (s)")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
