"""`hal demo --quick`: the multi-process demo end to end (each kind alone, planned and even-split jobs through
`hal launch`, the report and its files)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.needs_native


def test_hal_demo_quick_runs_end_to_end(tmp_path):
    env = dict(os.environ, HAL_CACHE_DIR=str(tmp_path / "cache"), HAL_DEMO_QUICK="1", HAL_DEMO_OUT=str(tmp_path / "out"))
    env.pop("HAL_EMU_DEVICES", None)  # the demo's own emulated cluster, fitting this host
    r = subprocess.run([sys.executable, "-m", "hal.cli", "demo"], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    assert "EMULATED" in r.stdout
    assert "falling, OK" in r.stdout
    doc = json.loads((tmp_path / "out" / "demo.json").read_text())
    assert doc["emulated"] is True
    assert set(doc["alone"]) == {"emu-fast", "emu-slow"} and len(doc["alone_together"]) == 4
    assert doc["planned"]["plan"]["global_batch"] == doc["global_batch"]
    assert len(doc["planned"]["devices"]) == 4 and doc["ideal_tokens_per_s"] > 0
    assert doc["losses"][-1] < doc["losses"][0]
    assert (tmp_path / "out" / "summary.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for run in ("planned", "even", "alone-emu-fast", "alone-emu-slow"):
        assert (tmp_path / "out" / run / "metrics.jsonl").stat().st_size > 0
