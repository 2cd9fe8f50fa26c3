"""The planner core is torch-free and imports nothing above it; the profilers and the executor import torch lazily."""
from __future__ import annotations

import ast
import json
from pathlib import Path

from tests.conftest import REPO, run_python

PLAN = REPO / "hal" / "plan"
CORE = ["__init__", "limits", "device_profile", "cluster", "model", "plan", "cost", "placement", "stage_split",
        "batch_split", "planner", "exhaustive", "explain",
        "simulate"]
NOT_FOR_THE_CORE = ("torch", "hal.torch", "hal._C", "hal.cli", "hal.demo", "hal.plan.profile_devices",
                    "hal.plan.profile_layers", "hal.plan.local", "hal.plan.execute", "hal.plan.torch_model",
                    "hal.plan.plot", "hal.plan.cli")
TORCH_SIDE = ("torch", "hal.torch", "hal._C", "hal.plan.profile_devices", "hal.plan.profile_layers", "hal.plan.local",
              "hal.plan.execute", "hal.plan.torch_model")


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(module, at module level) for every import statement in the file, nested ones included."""
    tree = ast.parse(path.read_text())
    top = set(map(id, tree.body))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, id(node) in top) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.append((node.module, id(node) in top))
    return out


def _is(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def test_core_modules_import_nothing_above_them():
    for name in CORE:
        for module, _ in _imports(PLAN / f"{name}.py"):
            assert not any(_is(module, bad) for bad in NOT_FOR_THE_CORE), f"hal/plan/{name}.py imports {module}"


def test_profilers_and_executor_import_torch_only_when_called():
    for name in ("profile_devices", "profile_layers", "local", "execute", "plot", "cli"):
        for module, top in _imports(PLAN / f"{name}.py"):
            assert not (top and (_is(module, "torch") or _is(module, "hal.torch"))), f"{name}.py imports {module}"


def test_nothing_in_the_planner_imports_the_cli_or_the_demo():
    for path in PLAN.glob("*.py"):
        for module, _ in _imports(path):
            assert not (_is(module, "hal.cli") or _is(module, "hal.demo")), f"{path.name} imports {module}"


def test_planning_from_cluster_files_never_loads_torch_or_the_profilers(tmp_path):
    profile = {"kind": "measured-x", "device": "x:0", "memory_bandwidth": 1e12, "memory_bytes": 80e9,
               "matmul": [{"m": 1, "n": 1, "k": 1, "dtype": "float32", "flops_per_s": 4e14}]}
    (tmp_path / "x.json").write_text(json.dumps(profile))
    (tmp_path / "c.yaml").write_text("kinds:\n  - {profile: x.json}\nnodes:\n  - {kind: measured-x, devices: 4}\n"
                                     "  - {kind: H100, devices: 4}\n")
    r = run_python(f"""
        import sys
        import hal.plan
        from hal.plan import CostModel, get_model, load_cluster, plan, simulate
        from hal.plan.cli import main
        for c in (load_cluster("mixed-256"), load_cluster({str(tmp_path / "c.yaml")!r})):
            r = plan(c, get_model("llama-2-7b"), 64)
            simulate(r.plan, CostModel(c, get_model("llama-2-7b")))
        assert main(["--cluster", "small-8", "--model", "tiny", "--global-batch", "16"]) == 0
        loaded = [m for m in {TORCH_SIDE!r} if m in sys.modules]
        print("loaded:", loaded)
        """, env={"PYTHONPATH": str(REPO)}, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "loaded: []"
