"""`hal plan` end to end, in subprocesses: table, JSON, PNG, exit codes; the core never imports torch."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run_cli(*args: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    full = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""), **(env or {})}
    return subprocess.run([sys.executable, "-m", "hal.plan.cli", *args], capture_output=True, text=True, env=full,
                          cwd=cwd or REPO, timeout=120)


def test_plan_mixed_cluster_llama70b_writes_json_and_png(tmp_path):
    out_json, out_png = tmp_path / "plan.json", tmp_path / "plan.png"
    # The timeline is of plain 1F1B: the techniques hal.parallel runs (an interleaved plan has none to draw).
    r = run_cli("--cluster", "mixed-256", "--model", "llama-2-70b", "--global-batch", "1024",
                "--json", str(out_json), "--plot", str(out_png), "--techniques", "runtime")
    assert r.returncode == 0, r.stderr
    for word in ("H100", "Ascend910B", "MI300X", "memory", "utilisation", "predicted step time", "tokens/s",
                 "samples/s", "even batch split", "alone"):
        assert word in r.stdout, word
    doc = json.loads(out_json.read_text())
    plan = doc["plan"]
    assert sum(p["samples"] for p in plan["pipelines"]) == 1024
    assert plan["predicted"]["step_time_s"] > 0
    assert {s["kind"] for p in plan["pipelines"] for s in p["stages"]} <= {"H100", "Ascend910B", "MI300X"}
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plan_cluster_file_with_seq(tmp_path):
    path = REPO / "hal" / "plan" / "presets" / "clusters" / "small-8.yaml"
    r = run_cli("--cluster", str(path), "--model", "llama-2-7b", "--global-batch", "64", "--seq", "2048",
                "--no-compare")
    assert r.returncode == 0, r.stderr
    assert "sequence 2048" in r.stdout


def test_plan_that_cannot_fit_exits_1(tmp_path):
    c = tmp_path / "c.yaml"
    c.write_text("name: tiny-cluster\nnodes:\n  - {kind: MLU370, devices: 2}\n")
    r = run_cli("--cluster", str(c), "--model", "gpt3-175b", "--global-batch", "8")
    assert r.returncode == 1
    assert "no plan fits:" in r.stderr and "smallest memory shortfall:" in r.stderr and "MLU370" in r.stderr


def test_bad_cluster_file_exits_2_with_location(tmp_path):
    c = tmp_path / "c.yaml"
    c.write_text("nodes:\n  - {kind: H100, devices: 0}\n")
    r = run_cli("--cluster", str(c), "--model", "tiny", "--global-batch", "8")
    assert r.returncode == 2
    assert f"{c}:2: nodes[0].devices" in r.stderr


def test_core_does_not_import_torch():
    code = ("import sys, hal.plan; from hal.plan import plan, load_cluster, get_model, simulate, CostModel\n"
            "r = plan(load_cluster('small-8'), get_model('tiny'), 16)\n"
            "simulate(r.plan, CostModel(load_cluster('small-8'), get_model('tiny')))\n"
            "assert 'torch' not in sys.modules, 'torch imported'\nprint('ok')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_plan_finds_a_cross_kind_pipeline_where_no_island_holds_the_model(tmp_path):
    cluster = tmp_path / "h100x2-mi300x.yaml"
    cluster.write_text("name: h100x2-mi300x\nnodes:\n  - {kind: H100, devices: 2}\n  - {kind: MI300X, devices: 1}\n")
    r = run_cli("--cluster", str(cluster), "--model", "llama-2-13b", "--global-batch", "16", "--no-compare")
    assert r.returncode == 0, r.stderr
    rows = [line for line in r.stdout.splitlines() if line.startswith("│ H100") or line.startswith("│ MI300X")]
    assert len(rows) == 2 and all("MI300X->H100" in row or "H100->MI300X" in row for row in rows), r.stdout
