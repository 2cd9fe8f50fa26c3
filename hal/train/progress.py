"""Rank 0's view of a training job: a live display, a metrics log that a resumed job continues, a summary PNG.

    with Progress(1000, title="tiny-gpt on 3 devices", metrics_path="run/metrics.jsonl",
                  predicted_step_s=0.21) as progress:
        progress.note("resumed from step 120 on 3 devices")
        progress.update(step, loss=2.31, step_s=0.23, tokens=65536, samples=64)

Each `update` appends one JSON object per line to the metrics file (flushed at once; `read_metrics` reads them
back). The display is a rich progress bar when stderr is a terminal; otherwise (CI logs) a plain line for the
first step, about every twentieth of the run and the last step.
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import IO, Any

__all__ = ["Progress", "follow", "read_metrics", "summary_png"]

# Plain (non-terminal) output: about this many summary lines over a run, plus the first and last step.
PLAIN_LINES = 20
_FIELDS = ("step", "loss", "step_s", "tokens", "tokens_per_s", "samples", "time", "predicted_step_s")


def _fmt_rate(x: float | None) -> str:
    if x is None:
        return "-"
    for unit, scale in (("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.2f}{unit}"
    return f"{x:.1f}"


def _fmt_time(step_s: float, predicted: float | None) -> str:
    if predicted is None or predicted <= 0:
        return f"{step_s * 1e3:.1f} ms"
    return f"{step_s * 1e3:.1f} ms vs {predicted * 1e3:.1f} predicted (x{step_s / predicted:.2f})"


def _number(name: str, value: Any, *, integer: bool = False, minimum: float | None = 0.0,
            finite: bool = True) -> Any:
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok:
        raise TypeError(f"Progress: {name} must be {'an int' if integer else 'a number'}, not {value!r}")
    if finite and not math.isfinite(value):
        raise ValueError(f"Progress: {name} must be finite, not {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"Progress: {name} must be >= {minimum:g}, not {value!r}")
    return value


def _drop_partial_last_line(path: Path) -> int:
    """Cuts a line without its newline (a job killed while writing it) off the end of |path|; the bytes cut."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return 0
    if size == 0:
        return 0
    with open(path, "r+b") as f:
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return 0
        pos, keep = size, 0
        while pos > 0 and not keep:
            start = max(0, pos - 65536)
            f.seek(start)
            chunk = f.read(pos - start)
            i = chunk.rfind(b"\n")
            if i >= 0:
                keep = start + i + 1
            pos = start
        f.truncate(keep)
        f.flush()
        os.fsync(f.fileno())
    return size - keep


class Progress:
    """The display and metrics log of one run (or one resumed part of it); a context manager."""

    def __init__(self, total_steps: int, *, title: str, metrics_path: str | os.PathLike, live: bool | None = None,
                 predicted_step_s: float | None = None, start_step: int = 0, stream: IO[str] | None = None):
        self.total_steps = _number("total_steps", total_steps, integer=True, minimum=1)
        self.start_step = _number("start_step", start_step, integer=True)
        if start_step > total_steps:
            raise ValueError(f"Progress: start_step {start_step} is past total_steps {total_steps}")
        if predicted_step_s is not None:
            _number("predicted_step_s", predicted_step_s)
        if not isinstance(title, str):
            raise TypeError(f"Progress: title must be a str, not {title!r}")
        self.title = title
        self.metrics_path = Path(metrics_path)
        self.predicted_step_s = predicted_step_s
        self.stream = stream if stream is not None else sys.stderr
        if live is None:
            isatty = getattr(self.stream, "isatty", None)
            live = bool(isatty and isatty())
        self.live = bool(live)
        self.every = max(1, math.ceil((total_steps - start_step) / PLAIN_LINES))
        self._file: IO[str] | None = None
        self._bar = None
        self._task = None
        self._updates = 0

    def __enter__(self) -> "Progress":
        self.metrics_path.parent.mkdir(parents=True, exist_ok=True)
        cut = _drop_partial_last_line(self.metrics_path)
        self._file = open(self.metrics_path, "a", encoding="utf-8")
        if self.live:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
            from rich.progress import Progress as RichProgress
            console = Console(file=self.stream)
            self._bar = RichProgress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[rate]} tokens/s"),
                TextColumn("step {task.fields[time]}"), TimeRemainingColumn(), console=console)
            self._bar.start()
            self._task = self._bar.add_task(self.title, total=self.total_steps, completed=self.start_step,
                                            loss="-", rate="-", time="-")
        if cut:
            self.note(f"metrics: dropped a partial last line ({cut} bytes) of {self.metrics_path}, left by an "
                      "interrupted run")
        return self

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
        if self._file is not None:
            self._file.close()
            self._file = None

    def note(self, text: str) -> None:
        """A line above the display (or in the plain log): "resumed from step 120 on 3 devices"."""
        if self._bar is not None:
            self._bar.console.print(text, markup=False, highlight=False)
        else:
            print(text, file=self.stream, flush=True)

    def update(self, step: int, loss: float, step_s: float, tokens: int, samples: int,
               extra: dict | None = None) -> dict:
        """Records step |step| (the steps done so far, 1..total_steps): one metrics line, the display. Returns
        the record written. A non-finite loss is recorded as it is (JSON NaN/Infinity; read_metrics reads it)."""
        if self._file is None:
            raise RuntimeError("Progress.update outside its `with Progress(...)` block")
        _number("step", step, integer=True)
        if step > self.total_steps:
            raise ValueError(f"Progress: step {step} is past total_steps {self.total_steps}")
        _number("loss", loss, minimum=None, finite=False)
        _number("step_s", step_s)
        _number("tokens", tokens, integer=True)
        _number("samples", samples, integer=True)
        record = {"step": step, "loss": float(loss), "step_s": float(step_s), "tokens": tokens,
                  "tokens_per_s": tokens / step_s if step_s > 0 else None, "samples": samples,
                  "time": time.time(), "predicted_step_s": self.predicted_step_s}
        if extra:
            if not isinstance(extra, dict):
                raise TypeError(f"Progress: extra must be a dict, not {type(extra).__name__}")
            clash = sorted(set(extra) & set(_FIELDS))
            if clash:
                raise ValueError(f"Progress: extra keys {clash} would overwrite the record's own fields")
            record.update(extra)
        try:
            line = json.dumps(record)
        except (TypeError, ValueError) as e:
            raise TypeError(f"Progress: the record of step {step} is not JSON ({e}); extra: {extra!r}") from None
        self._file.write(line + "\n")
        self._file.flush()
        self._updates += 1
        self._show(record)
        return record

    def _show(self, r: dict) -> None:
        loss = f"{r['loss']:.4f}"
        rate = _fmt_rate(r["tokens_per_s"])
        step_time = _fmt_time(r["step_s"], self.predicted_step_s)
        if self._bar is not None:
            self._bar.update(self._task, completed=r["step"], loss=loss, rate=rate, time=step_time)
            return
        step = r["step"]
        if self._updates == 1 or step == self.total_steps or (step - self.start_step) % self.every == 0:
            print(f"{self.title}: step {step}/{self.total_steps} loss {loss} {rate} tokens/s step {step_time}",
                  file=self.stream, flush=True)


def follow(metrics_path: str | os.PathLike, running, total_steps: int, *, title: str, live: bool | None = None,
           stream: IO[str] | None = None, poll_s: float = 0.25) -> list[dict]:
    """Shows the progress of a job that another process runs (e.g. `hal launch`), from the metrics lines it
    appends, until `running()` returns False; returns the records read. Read-only: the log is never changed."""
    import io
    stream = stream if stream is not None else sys.stderr
    view = Progress(total_steps, title=title, metrics_path=os.devnull, live=live, stream=stream)
    view._file = io.StringIO()  # the view's own log goes nowhere: the job writes the metrics
    if view.live:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
        from rich.progress import Progress as RichProgress
        view._bar = RichProgress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[rate]} tokens/s"),
            TextColumn("step {task.fields[time]}"), TimeRemainingColumn(), console=Console(file=stream))
        view._bar.start()
        view._task = view._bar.add_task(title, total=total_steps, completed=0, loss="-", rate="-", time="-")
    path, at, partial, records = Path(metrics_path), 0, "", []
    try:
        while True:
            alive = running()
            if path.exists():
                with open(path, encoding="utf-8") as f:
                    f.seek(at)
                    chunk = f.read()
                    at = f.tell()
                lines = (partial + chunk).split("\n")
                partial = lines.pop()  # a line still being written
                for line in lines:
                    if not line.strip():
                        continue
                    try:
                        r = json.loads(line)
                    except ValueError:
                        continue
                    records.append(r)
                    view.predicted_step_s = r.get("predicted_step_s")
                    if r.get("round") and records[:-1] and r["round"] != records[-2].get("round"):
                        view.note(f"round {r['round']}: the job restarted on {r.get('devices', '?')} device(s), "
                                  f"from step {r['step']}")
                    view._updates += 1
                    view._show(r)
            if not alive:
                return records
            time.sleep(poll_s)
    finally:
        if view._bar is not None:
            view._bar.stop()


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """The records of a metrics file, in order. A last line cut short (no newline: the writer was killed) is
    left out; any other line that is not a JSON object raises ValueError naming the file and line."""
    path = Path(path)
    data = path.read_bytes()
    lines = data.split(b"\n")
    records = []
    for i, raw in enumerate(lines):
        last = i == len(lines) - 1
        if not raw.strip():
            continue
        try:
            record = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            if last:  # no newline after it: a write that did not finish
                break
            raise ValueError(f"{path}, line {i + 1}: not a JSON record ({e})") from None
        if not isinstance(record, dict):
            if last:
                break
            raise ValueError(f"{path}, line {i + 1}: a JSON {type(record).__name__}, not a record (object)")
        records.append(record)
    return records


# --- the summary picture --------------------------------------------------------------------------------------

def _value(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
        return None
    return float(x)


def _label(name: str, run: dict) -> str:
    return f"{name}\n(EMULATED)" if run.get("emulated") else name


def _no_data(ax, what: str) -> None:
    ax.text(0.5, 0.5, f"no {what}", ha="center", va="center", transform=ax.transAxes, color="gray")
    ax.set_xticks([])
    ax.set_yticks([])


def summary_png(path: str | os.PathLike, runs: dict[str, dict], title: str) -> Path:
    """One PNG of three panels comparing |runs| ({name: figures}): (a) tokens/s per device kind
    (figures["per_kind_tokens_per_s"] = {kind: tokens/s}), (b) predicted vs measured step time
    ("predicted_step_s", "measured_step_s"), (c) bubble fraction ("bubble_fraction"). A run with
    figures["emulated"] true is labelled EMULATED. Missing values are left out. Returns the path."""
    if not isinstance(runs, dict) or not all(isinstance(r, dict) for r in runs.values()):
        bad = [k for k, r in runs.items() if not isinstance(r, dict)] if isinstance(runs, dict) else runs
        raise TypeError(f"summary_png: runs must map run names to dicts of figures; not dicts: {bad!r}")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = [str(n) for n in runs]
    figs = list(runs.values())
    fig = Figure(figsize=(16, 5))
    FigureCanvasAgg(fig)
    ax_tp, ax_time, ax_bubble = fig.subplots(1, 3)
    any_emulated = any(r.get("emulated") for r in figs)
    fig.suptitle(f"{title} (EMULATED devices)" if any_emulated else title)

    # (a) throughput per device kind, one bar group per kind, one bar per run
    kinds: list[str] = []
    for r in figs:
        per_kind = r.get("per_kind_tokens_per_s")
        if isinstance(per_kind, dict):
            kinds += [str(k) for k, v in per_kind.items() if _value(v) is not None and str(k) not in kinds]
    with_tp = [(n, r) for n, r in zip(names, figs) if isinstance(r.get("per_kind_tokens_per_s"), dict)]
    if kinds and with_tp:
        width = 0.8 / len(with_tp)
        for j, (n, r) in enumerate(with_tp):
            per_kind = {str(k): _value(v) for k, v in r["per_kind_tokens_per_s"].items()}
            xs = [i + (j - (len(with_tp) - 1) / 2) * width for i, k in enumerate(kinds) if per_kind.get(k) is not None]
            ys = [per_kind[k] for k in kinds if per_kind.get(k) is not None]
            ax_tp.bar(xs, ys, width, label=_label(n, r).replace("\n", " "))
        ax_tp.set_xticks(range(len(kinds)), kinds)
        ax_tp.set_ylabel("tokens/s")
        ax_tp.legend(fontsize="small")
    else:
        _no_data(ax_tp, "throughput figures")
    ax_tp.set_title("(a) throughput per device kind")

    # (b) predicted vs measured step time
    timed = [(n, r, _value(r.get("predicted_step_s")), _value(r.get("measured_step_s"))) for n, r in zip(names, figs)]
    timed = [t for t in timed if t[2] is not None or t[3] is not None]
    if timed:
        labelled = set()
        for i, (n, r, pred, meas) in enumerate(timed):
            for what, value, dx, color in (("predicted", pred, -0.2, "#4c72b0"), ("measured", meas, 0.2, "#dd8452")):
                if value is not None:
                    ax_time.bar(i + dx, value * 1e3, 0.4, color=color, label=None if what in labelled else what)
                    labelled.add(what)
            if pred and meas is not None:
                ax_time.annotate(f"x{meas / pred:.2f}", (i, max(pred, meas) * 1e3), ha="center", va="bottom",
                                 fontsize="small")
        ax_time.set_xticks(range(len(timed)), [_label(n, r) for n, r, _, _ in timed], fontsize="small")
        ax_time.set_ylabel("step time (ms)")
        ax_time.margins(y=0.12)
        ax_time.legend(fontsize="small")
    else:
        _no_data(ax_time, "step times")
    ax_time.set_title("(b) step time: predicted vs measured")

    # (c) bubble fraction
    bubbles = [(n, r, _value(r.get("bubble_fraction"))) for n, r in zip(names, figs)]
    bubbles = [b for b in bubbles if b[2] is not None]
    if bubbles:
        ax_bubble.bar(range(len(bubbles)), [b * 100 for _, _, b in bubbles], 0.6, color="#8172b2")
        ax_bubble.set_xticks(range(len(bubbles)), [_label(n, r) for n, r, _ in bubbles], fontsize="small")
        ax_bubble.set_ylabel("pipeline bubble (% of step)")
    else:
        _no_data(ax_bubble, "bubble fractions")
    ax_bubble.set_title("(c) bubble fraction")

    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path
