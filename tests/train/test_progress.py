"""Rank 0's progress display, metrics log and summary picture (hal.train.progress)."""
from __future__ import annotations

import io
import json

import pytest

from hal.train.progress import PLAIN_LINES, Progress, read_metrics, summary_png

PNG = b"\x89PNG\r\n\x1a\n"


def run_steps(progress: Progress, steps, loss=2.0):
    for step in steps:
        progress.update(step, loss=loss / step, step_s=0.25, tokens=1000, samples=8, extra={"lr": 0.01})


def test_a_resumed_job_continues_the_same_metrics_log(tmp_path):
    path = tmp_path / "run" / "metrics.jsonl"
    with Progress(10, title="job", metrics_path=path, live=False, stream=io.StringIO(),
                  predicted_step_s=0.2) as p:
        run_steps(p, range(1, 6))
    with Progress(10, title="job", metrics_path=path, live=False, stream=io.StringIO(), start_step=4) as p:
        run_steps(p, range(5, 11))  # resumed from the checkpoint of step 4
    records = read_metrics(path)
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 5, 6, 7, 8, 9, 10]
    first = records[0]
    assert set(first) == {"step", "loss", "step_s", "tokens", "tokens_per_s", "samples", "time",
                          "predicted_step_s", "lr"}
    assert first["tokens_per_s"] == pytest.approx(4000) and first["predicted_step_s"] == 0.2
    assert records[-1]["predicted_step_s"] is None and records[-1]["loss"] == pytest.approx(0.2)
    assert records[0]["time"] <= records[-1]["time"]


def test_each_line_is_on_disk_as_soon_as_it_is_recorded(tmp_path):
    path = tmp_path / "m.jsonl"
    with Progress(5, title="job", metrics_path=path, live=False, stream=io.StringIO()) as p:
        run_steps(p, [1, 2])
        assert [r["step"] for r in read_metrics(path)] == [1, 2]  # before the block ends


def test_plain_output_is_bounded_and_has_the_first_and_last_step(tmp_path):
    out = io.StringIO()
    with Progress(300, title="tiny on 3 devices", metrics_path=tmp_path / "m.jsonl", stream=out,
                  predicted_step_s=0.2) as p:  # a StringIO is not a terminal: plain lines
        p.note("resumed from step 0 on 3 devices")
        run_steps(p, range(1, 301))
    lines = out.getvalue().splitlines()
    assert lines[0] == "resumed from step 0 on 3 devices"
    steps = lines[1:]
    assert PLAIN_LINES - 2 <= len(steps) <= PLAIN_LINES + 2, lines
    assert steps[0].startswith("tiny on 3 devices: step 1/300 ") and "step 300/300" in steps[-1]
    assert "250.0 ms vs 200.0 predicted (x1.25)" in steps[-1] and "4.00k tokens/s" in steps[-1]
    assert len(read_metrics(tmp_path / "m.jsonl")) == 300  # every step is logged, whatever is printed


def test_live_display_shows_the_notes_and_the_last_step(tmp_path):
    out = io.StringIO()
    with Progress(20, title="live job", metrics_path=tmp_path / "m.jsonl", live=True, stream=out) as p:
        p.note("resumed from step 12 on 3 devices")
        run_steps(p, range(1, 21))
    text = out.getvalue()
    assert "resumed from step 12 on 3 devices" in text and "20/20" in text and "live job" in text


def test_bad_updates_are_refused_and_the_log_stays_clean(tmp_path):
    path = tmp_path / "m.jsonl"
    with Progress(10, title="job", metrics_path=path, live=False, stream=io.StringIO()) as p:
        run_steps(p, [1])
        with pytest.raises(ValueError, match="step 11 is past total_steps 10"):
            p.update(11, 1.0, 0.1, 10, 1)
        with pytest.raises(ValueError, match="step_s"):
            p.update(2, 1.0, -0.1, 10, 1)
        with pytest.raises(TypeError, match="tokens"):
            p.update(2, 1.0, 0.1, "10", 1)
        with pytest.raises(ValueError, match=r"\['step'\]"):
            p.update(2, 1.0, 0.1, 10, 1, extra={"step": 3})
        with pytest.raises(TypeError, match="not JSON"):
            p.update(2, 1.0, 0.1, 10, 1, extra={"obj": object()})
    assert [r["step"] for r in read_metrics(path)] == [1]
    with pytest.raises(RuntimeError, match="outside"):
        p.update(2, 1.0, 0.1, 10, 1)


def test_read_metrics_skips_a_truncated_last_line_and_rejects_a_corrupt_middle_one(tmp_path):
    path = tmp_path / "m.jsonl"
    good = [json.dumps({"step": s, "loss": 1.0}) for s in (1, 2)]
    path.write_text("\n".join(good) + "\n" + '{"step": 3, "lo')
    assert [r["step"] for r in read_metrics(path)] == [1, 2]
    path.write_text(good[0] + "\n" + '{"step": 2, "lo\n' + good[1] + "\n")
    with pytest.raises(ValueError, match=rf"{path.name}, line 2"):
        read_metrics(path)
    path.write_text(good[0] + "\n[1, 2]\n" + good[1] + "\n")
    with pytest.raises(ValueError, match="line 2.*not a record"):
        read_metrics(path)


def test_a_resume_after_a_torn_line_drops_it_and_keeps_the_log_readable(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps({"step": 1, "loss": 1.0}) + "\n" + '{"step": 2, "lo')  # killed mid-write
    out = io.StringIO()
    with Progress(5, title="job", metrics_path=path, live=False, stream=out, start_step=1) as p:
        run_steps(p, [2, 3])
    assert [r["step"] for r in read_metrics(path)] == [1, 2, 3]
    assert "dropped a partial last line" in out.getvalue()


def check_png(path):
    from matplotlib import image
    assert path.read_bytes()[:8] == PNG
    pixels = image.imread(path)
    assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels.shape[1] > 100
    return pixels


def test_summary_png_with_partial_data(tmp_path):
    runs = {"planned": {"per_kind_tokens_per_s": {"emu-fast": 5000.0, "cpu": 800.0}, "predicted_step_s": 0.2,
                        "measured_step_s": 0.23, "bubble_fraction": 0.12, "emulated": True},
            "even split": {"per_kind_tokens_per_s": {"emu-fast": 3000.0, "cpu": None}, "measured_step_s": 0.4},
            "alone (ideal sum)": {"per_kind_tokens_per_s": {"emu-slow": 1000}},
            "broken": {"bubble_fraction": "n/a", "predicted_step_s": float("nan")}}
    path = summary_png(tmp_path / "out" / "summary.png", runs, "tiny on 3 devices")
    assert path == tmp_path / "out" / "summary.png"
    check_png(path)
    empty = summary_png(tmp_path / "empty.png", {"nothing": {}}, "no data yet")
    check_png(empty)


def test_summary_png_labels_emulated_runs(tmp_path, monkeypatch):
    from matplotlib.figure import Figure
    texts = []
    real_savefig = Figure.savefig

    def savefig(fig, *args, **kwargs):
        for ax in fig.axes:
            texts.extend(t.get_text() for t in ax.get_xticklabels())
            if ax.get_legend() is not None:
                texts.extend(t.get_text() for t in ax.get_legend().get_texts())
        texts.append(fig.get_suptitle())
        return real_savefig(fig, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", savefig)
    summary_png(tmp_path / "s.png", {"planned": {"per_kind_tokens_per_s": {"a": 1.0}, "bubble_fraction": 0.1,
                                                 "emulated": True},
                                     "real": {"per_kind_tokens_per_s": {"a": 2.0}, "bubble_fraction": 0.2}}, "t")
    assert "planned (EMULATED)" in texts and "planned\n(EMULATED)" in texts and "real" in texts
    assert not any("real" in t and "EMULATED" in t for t in texts)
    assert "t (EMULATED devices)" in texts


def test_summary_png_refuses_runs_that_are_not_dicts(tmp_path):
    with pytest.raises(TypeError, match="planned"):
        summary_png(tmp_path / "s.png", {"planned": 3.0}, "t")
    assert not (tmp_path / "s.png").exists()


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def test_live_is_the_default_on_a_terminal_only(tmp_path):
    assert Progress(5, title="t", metrics_path=tmp_path / "m", stream=FakeTerminal()).live
    assert not Progress(5, title="t", metrics_path=tmp_path / "m", stream=io.StringIO()).live
    assert not Progress(5, title="t", metrics_path=tmp_path / "m", stream=FakeTerminal(), live=False).live
