"""hal.plan: partition training across device types (`hal plan`).

    from hal.plan import load_cluster, get_model, plan
    result = plan(load_cluster("mixed-256"), get_model("llama-2-70b"), global_batch=1024)
    print(result.estimate.step_time, result.plan.to_json())

The core (cluster, model specs, cost model, planner, simulator) needs no torch and imports nothing above it;
the profilers (profile_devices, profile_layers, local) and the executor (execute) import torch when called, and
are imported only by name: `from hal.plan.profile_layers import profile_torch_layers`. docs/planner.md explains the cost model.
"""
from hal.plan.cluster import Cluster, ClusterError, DeviceKind, Link, load_cluster, load_presets, parse_cluster
from hal.plan.cost import CostModel, CostOptions, Estimate
from hal.plan.exhaustive import exhaustive_plan
from hal.plan.model import LayerSpec, ModelSpec, TransformerConfig, TRANSFORMER_PRESETS, get_model, transformer
from hal.plan.plan import Pipeline, Plan, Stage
from hal.plan.planner import NoPlanFits, PlannerOptions, PlanResult, even_split, plan
from hal.plan.simulate import SimResult, simulate

__all__ = ["Cluster", "ClusterError", "DeviceKind", "Link", "load_cluster", "load_presets", "parse_cluster",
           "CostModel", "CostOptions", "Estimate", "exhaustive_plan", "LayerSpec", "ModelSpec", "TransformerConfig",
           "TRANSFORMER_PRESETS", "get_model", "transformer", "Pipeline", "Plan", "Stage",
           "NoPlanFits", "PlannerOptions", "PlanResult", "even_split", "plan", "SimResult", "simulate"]
