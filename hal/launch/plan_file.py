"""Reading the files a launch is given: the cluster file and the plan file, with errors naming file and field."""
from __future__ import annotations

import json
from pathlib import Path

from hal.plan.cluster import Cluster, ClusterError, load_cluster
from hal.plan.plan import Plan

__all__ = ["LaunchError", "read_cluster", "read_plan", "MAX_PLAN_FILE_BYTES"]

MAX_PLAN_FILE_BYTES = 16 << 20


class LaunchError(ValueError):
    """Bad input to `hal launch`, found before any worker starts: the launcher prints it and exits 2."""


def read_cluster(path: str) -> Cluster:
    try:
        return load_cluster(path)
    except ClusterError as e:
        raise LaunchError(f"--cluster: {e}") from None


def read_plan(path: str) -> Plan:
    p = Path(path)
    try:
        if p.stat().st_size > MAX_PLAN_FILE_BYTES:
            raise LaunchError(f"--plan {p}: {p.stat().st_size} bytes, more than a plan can be "
                              f"({MAX_PLAN_FILE_BYTES} bytes)")
        text = p.read_text()
    except OSError as e:
        raise LaunchError(f"--plan {p}: cannot read it: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise LaunchError(f"--plan {p}: not text: {e}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise LaunchError(f"--plan {p}:{e.lineno}:{e.colno}: not valid JSON: {e.msg}") from None
    if not isinstance(data, dict):
        raise LaunchError(f"--plan {p}: expected a JSON object (a plan from `hal plan --json`), "
                          f"found {type(data).__name__}")
    try:
        plan = Plan.from_dict(data)
    except KeyError as e:
        raise LaunchError(f"--plan {p}: missing field {e.args[0]!r} (is this a plan from `hal plan`?)") from None
    except (TypeError, ValueError, IndexError, AttributeError) as e:
        raise LaunchError(f"--plan {p}: a field has the wrong type or shape: {e}") from None
    if not plan.pipelines:
        raise LaunchError(f"--plan {p}: the plan has no pipelines")
    for j, pipe in enumerate(plan.pipelines):
        for i, st in enumerate(pipe.stages):
            if not isinstance(st.kind, str) or not all(isinstance(d, int) for d in st.device_ids):
                raise LaunchError(f"--plan {p}: pipeline {j} stage {i}: 'kind' must be a string and "
                                  f"'device_ids' a list of integers")
    return plan
