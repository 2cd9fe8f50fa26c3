"""One timeline plotter (plot.py) serves `hal plan --plot` and `hal demo`."""
from __future__ import annotations

import ast

from hal.plan.plot import plot_timelines
from hal.plan.simulate import Event
from tests.conftest import REPO


def test_plot_timelines_draws_panels_of_events(tmp_path):
    events = [Event(0, 0, "F", 0, 0.0, 0.01), Event(0, 0, "send", 0, 0.01, 0.012), Event(0, 1, "B", 0, 0.02, 0.04),
              Event(-1, -1, "allreduce", -1, 0.04, 0.05), Event(0, 1, "optimizer", -1, 0.05, 0.06),
              Event(3, 0, "F", 0, 0.0, 0.01)]  # a pipeline without a row: left out
    path = tmp_path / "t.png"
    plot_timelines(path, [("predicted", events, 0.06), ("measured", events[:2], 0.012)],
                   [(0, 0, "hal:1 L0-1"), (0, 1, "hal:3 L2-3")], "two panels")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_demo_draws_with_the_jobs_plotter():
    """The demo draws nothing itself: its summary is hal.train.progress's (one plotting module per concern)."""
    tree = ast.parse((REPO / "hal" / "demo.py").read_text())
    names = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module == "hal.train.progress"
                for a in n.names}
    assert "summary_png" in imported and not any("plot" in n or "png" in n for n in names)
    assert "matplotlib" not in (REPO / "hal" / "demo.py").read_text()
