"""Which devices this node's workers run on, checked against the cluster file and the plan before any start."""
from __future__ import annotations

from hal.errors import HalError
from hal.launch.plan_file import LaunchError
from hal.parallel import PlanMismatch
from hal.parallel.devices import DeviceRecord, check_cluster_node, check_plan, local_records, select_devices
from hal.plan.cluster import Cluster
from hal.plan.plan import Plan

__all__ = ["node_devices"]


def node_devices(spec: str | None, node_rank: int, nproc: int | None, cluster: Cluster | None,
                 plan: Plan | None, plan_path: str = "", single_node: bool = True) -> list[DeviceRecord]:
    """The records of the devices this node runs one worker each on, in local-index order.

    `spec` goes to `select_devices`; with a cluster file the node must be the file's node `node_rank` (its
    records replace the local ones); `nproc` keeps the first ones; on a single node the plan must match."""
    try:
        chosen = select_devices(spec)
    except (ValueError, HalError) as e:
        raise LaunchError(str(e)) from None
    records = local_records(chosen, node_rank)
    try:
        if cluster is not None:
            records = check_cluster_node(cluster, node_rank, records)
    except PlanMismatch as e:
        raise LaunchError(f"--cluster: {e}") from None
    if nproc is not None:
        if nproc > len(records):
            raise LaunchError(f"--nproc-per-node {nproc}: node {node_rank} has {len(records)} selected "
                              f"device(s) ({', '.join(r.name for r in records)}); one process runs per device")
        records = records[:nproc]
    if not records:
        raise LaunchError(f"node {node_rank}: no device selected")
    if plan is not None and single_node:
        try:
            check_plan(plan, records, whose=plan_path)
        except PlanMismatch as e:
            raise LaunchError(str(e)) from None
    return records
