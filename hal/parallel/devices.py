"""The job's devices: what each rank runs on, how they are numbered, the cluster the planner sees, plan checks.

A device is known to the job by a `DeviceRecord` (which node, which of that node's devices, what kind). The
launcher makes records for its node before starting any worker (to check a plan up front); each worker makes
its own and the runtime gathers them from every rank. Both then number the devices the same way, whatever
order ranks arrived in:

    node by node in node-rank order; inside a node, kind by kind (first appearance); then by local index.

A plan's device ids are positions in that order; `live_cluster` is the planner's view of exactly those devices
(one planner node per node and kind), with the kinds' figures from a cluster file when there is one. No torch
here: the launcher imports this module.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from hal.parallel import PlanMismatch
from hal.plan.cluster import Cluster, DeviceKind, Link, Node
from hal.plan.local import self_measured_kind
from hal.plan.plan import Plan

__all__ = ["DeviceRecord", "select_devices", "local_records", "ordered", "live_cluster", "check_plan",
           "idle_devices", "check_cluster_node", "DEFAULT_LINK"]

# Between processes on one host the runtime's send/recv and all-reduce go through host memory; the planner's
# default for links it was not given a measurement of.
DEFAULT_LINK = Link(5e9, 50e-6)


@dataclass(frozen=True)
class DeviceRecord:
    node_rank: int          # the launcher's --node-rank: stable across restarts, unlike elastic's group rank
    local_index: int        # position in the node's selected devices at launch: stable when others are lost
    name: str               # HAL's name on its node, e.g. "emu:1"
    kind: str               # the device kind: the plugin's device name ("emu-fast", the CPU's model)
    emulated: bool
    relative_speed: float   # emulated devices: the speed they emulate (1.0 for real ones)
    memory_bytes: float
    host: str = ""

    @property
    def label(self) -> str:
        return f"node {self.node_rank} {self.name} ({self.kind}{', EMULATED' if self.emulated else ''})"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "DeviceRecord":
        return cls(**d)


def select_devices(spec: str | None = None) -> list:
    """HAL's devices on this machine a job runs on (hal.Device objects, in HAL's order).

    `spec`: None/"" = every device that is not the host's CPU (the CPU when there is no other): not the cpu
    plugin's device, nor a real CPU device of another plugin (an OpenCL CPU device such as pocl's computes on the
    same cores; emulated devices are accelerators, whatever host runs them); "all"; a plugin ("emu", "cpu",
    "opencl"); a kind ("emu-fast"); or names ("emu:0,emu:2"). Raises ValueError naming what is not there."""
    import hal
    every = list(hal.devices())
    if not spec:
        chosen = [d for d in every if not d.name.startswith("cpu:")
                  and not (d.properties.kind == "cpu" and not d.properties.emulated)] or every
        if not chosen:
            raise ValueError("this machine has no HAL device (hal devices lists none)")
        return chosen
    if spec.strip() == "all":
        return every
    chosen: list = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        hits = [d for d in every if d.name == part or d.name.split(":")[0] == part or d.properties.name == part]
        if not hits:
            raise ValueError(f"--devices {spec!r}: no device matches {part!r} (devices here: "
                             f"{', '.join(f'{d.name} ({d.properties.name})' for d in every) or 'none'})")
        chosen += [d for d in hits if d not in chosen]
    return chosen


def local_records(devices: list, node_rank: int = 0, host: str = "") -> list[DeviceRecord]:
    """Records for `devices` (hal.Device objects, as from `select_devices`), local indices in that order."""
    out = []
    for i, d in enumerate(devices):
        p = d.properties
        out.append(DeviceRecord(node_rank, i, d.name, str(p.name), bool(p.emulated),
                                float(p.relative_speed) if p.emulated else 1.0, float(p.total_memory), host))
    return out


def ordered(records: list[DeviceRecord]) -> list[DeviceRecord]:
    """`records` in device-id order (see the module's docstring)."""
    out: list[DeviceRecord] = []
    for node in sorted({r.node_rank for r in records}):
        mine = sorted((r for r in records if r.node_rank == node), key=lambda r: r.local_index)
        for kind in dict.fromkeys(r.kind for r in mine):
            out += [r for r in mine if r.kind == kind]
    return out


def live_cluster(records: list[DeviceRecord], base: Cluster | None = None, link: Link | None = None) -> Cluster:
    """The planner's cluster of exactly `records` (ids as `ordered`): one planner node per (node, kind).

    Kinds come from `base` (a cluster file) where it names them, else from the records. Raises PlanMismatch
    when the file is given and lacks a kind that a device has."""
    recs = ordered(records)
    kinds: dict[str, DeviceKind] = {}
    nodes: list[Node] = []
    first = 0
    groups: list[tuple[int, str, int]] = []
    for r in recs:
        if groups and groups[-1][:2] == (r.node_rank, r.kind):
            groups[-1] = (r.node_rank, r.kind, groups[-1][2] + 1)
        else:
            groups.append((r.node_rank, r.kind, 1))
    for node_rank, kind, n in groups:
        if kind not in kinds:
            if base is not None:
                if kind not in base.kinds:
                    raise PlanMismatch(f"node {node_rank}: its devices are of kind {kind!r}, which the cluster "
                                       f"file {base.path or base.name} does not define (kinds: "
                                       f"{', '.join(base.used_kinds())})")
                kinds[kind] = base.kinds[kind]
            else:
                # The runtime plans from per-layer times measured on each kind (hal.parallel.profile).
                r = next(r for r in recs if r.kind == kind)
                kinds[kind] = self_measured_kind(kind, r.relative_speed, r.memory_bytes, DEFAULT_LINK, r.emulated,
                                                 f"{r.name} on node {r.node_rank}")
        intra = link or kinds[kind].chip_link
        inter = link or (base.nodes[0].inter if base is not None and base.nodes else DEFAULT_LINK)
        nodes.append(Node(f"node{node_rank}-{kind}", kind, n, intra, inter, first))
        first += n
    name = (base.name if base is not None else "live") + f" ({len(recs)} devices)"
    return Cluster(name, kinds, nodes, link or (base.cross_kind if base is not None else None))


def check_plan(plan: Plan, records: list[DeviceRecord], whose: str = "") -> None:
    """Raises PlanMismatch unless every device of `plan` is one of `records` (ids as `ordered`) of the kind the
    plan expects. The message names the node, the device, the expected and the found kind."""
    recs = ordered(records)
    where = f" ({whose})" if whose else ""
    t = plan.techniques
    refused = ([f"ZeRO-{t.zero}"] if t.zero not in (0, 1) else []) + \
              ([f"{t.recompute} recompute"] if t.recompute != "none" else []) + \
              (["sequence parallel"] if t.sequence_parallel else []) + \
              ([f"interleaved x{t.virtual_stages}"] if t.virtual_stages > 1 else [])
    if refused:
        # hal.parallel runs data, pipeline and tensor parallelism with overlapped gradient sums, and ZeRO-1
        # (zero.py), nothing else: run without them, such a plan may not fit its devices' memory, and its
        # predictions do not hold.
        raise PlanMismatch(f"plan{where}: it uses {', '.join(refused)}, which hal.parallel does not run (it runs "
                           f"data, pipeline and tensor parallelism and ZeRO-1); make it with "
                           f"`hal plan --techniques runtime`")
    for j, p in enumerate(plan.pipelines):
        for i, st in enumerate(p.stages):
            for d in st.device_ids:
                if not 0 <= d < len(recs):
                    raise PlanMismatch(f"plan{where}: pipeline {j} stage {i} runs on device {d}, but the job has "
                                       f"{len(recs)} device(s): " + ", ".join(f"{k} = {r.label}"
                                                                          for k, r in enumerate(recs)))
                r = recs[d]
                if r.kind != st.kind:
                    raise PlanMismatch(f"plan{where}: device {d} is node {r.node_rank} {r.name}: the plan expects "
                                       f"kind {st.kind!r} there (pipeline {j} stage {i}), found {r.kind!r}")
    used = plan.devices
    if len(set(used)) != len(used):
        raise PlanMismatch(f"plan{where}: a device appears in two stages ({sorted(used)})")


def idle_devices(plan: Plan, records: list[DeviceRecord]) -> list[DeviceRecord]:
    """The job's devices `plan` gives no role (the planner leaves out devices that would not speed it up)."""
    used = set(plan.devices)
    return [r for k, r in enumerate(ordered(records)) if k not in used]


def check_cluster_node(cluster: Cluster, node_rank: int, records: list[DeviceRecord]) -> list[DeviceRecord]:
    """With a cluster file, node `node_rank` is the file's node of that index: its devices must be here. Returns
    the records of the devices it uses (the first `devices` ones of its kind); raises PlanMismatch saying what
    is missing."""
    if not 0 <= node_rank < len(cluster.nodes):
        raise PlanMismatch(f"--node-rank {node_rank}: the cluster file {cluster.path or cluster.name} has "
                           f"{len(cluster.nodes)} node(s) (0..{len(cluster.nodes) - 1})")
    node = cluster.nodes[node_rank]
    mine = [r for r in records if r.kind == node.kind]
    if len(mine) < node.devices:
        found = ", ".join(f"{r.name} ({r.kind})" for r in records) or "none"
        raise PlanMismatch(f"node {node_rank} ({node.name!r} in {cluster.path or cluster.name}): expects "
                           f"{node.devices} x {node.kind}, found {len(mine)} of that kind here (devices: {found})")
    return [DeviceRecord(node_rank, i, r.name, r.kind, r.emulated, r.relative_speed, r.memory_bytes, r.host)
            for i, r in enumerate(mine[:node.devices])]
