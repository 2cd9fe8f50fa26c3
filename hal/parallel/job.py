"""A training job's process: its rank, its device, the process group, and every rank's device.

`init_job()` is the first call of a training script that `hal launch` starts (one process per device). It reads
the launcher's environment (docs/training.md: the worker contract), puts the process on its device, joins the
default process group (`cpu:gloo,hal:hal`: CPU tensors over Gloo, `hal:N` tensors over the `hal` backend) and
gathers every rank's `DeviceRecord`, so that each rank knows the job's devices in one numbering
(`hal.parallel.devices`). Started without the launcher (no RANK), the process is a job of one rank.
"""
from __future__ import annotations

import functools
import os
import socket
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

from hal.parallel.devices import DeviceRecord, live_cluster, local_records, ordered
from hal.plan.cluster import Cluster, Link

__all__ = ["Job", "JobConfigError", "init_job", "DEFAULT_TIMEOUT_S"]

# Collectives and point-to-point messages that wait longer than this fail (HAL_JOB_TIMEOUT overrides): a dead
# rank is then an error and a restart, never a hang.
DEFAULT_TIMEOUT_S = 120.0


class JobConfigError(ValueError):
    """The worker's environment cannot make a job (no device, a bad variable): a restart would not help."""


def _env_int(name: str, default: int) -> int:
    v = os.environ.get(name, "")
    try:
        return int(v) if v.strip() else default
    except ValueError:
        raise JobConfigError(f"{name}={v!r} is not an integer") from None


@dataclass
class Job:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    record: DeviceRecord                     # this rank's device
    records: list[DeviceRecord]              # every rank's, by rank
    restart: int = 0                         # TORCHELASTIC_RESTART_COUNT: 0 on the first round
    run_dir: Path = field(default_factory=lambda: Path("hal-run"))
    plan_path: str | None = None             # hal launch --plan
    cluster_path: str | None = None          # hal launch --cluster
    lost: list[str] = field(default_factory=list)   # this node's devices lost so far (HAL_LAUNCH_LOST)
    timeout: timedelta = timedelta(seconds=DEFAULT_TIMEOUT_S)
    # The job's all-reduce as the cost model's Link (hal.parallel.profile.measure_link); without a cluster file
    # the planner's view uses it for the links between the job's devices. None: a nominal link.
    link: Link | None = None

    @functools.cached_property
    def device_ids(self) -> dict[int, int]:
        """rank -> the rank's device id (its position in `ordered(records)`, what a plan's device ids mean)."""
        order = ordered(self.records)
        return {r: order.index(rec) for r, rec in enumerate(self.records)}

    @property
    def device_id(self) -> int:
        return self.device_ids[self.rank]

    def rank_of(self, device_id: int) -> int:
        for r, d in self.device_ids.items():
            if d == device_id:
                return r
        raise KeyError(f"no rank runs device {device_id} (the job has {self.world_size} devices)")

    def cluster(self) -> Cluster:
        """The planner's view of the job's live devices (kinds and links from the cluster file when there is
        one; else the links as `link` measured them)."""
        if self.cluster_path:
            from hal.plan.cluster import load_cluster
            return live_cluster(self.records, load_cluster(self.cluster_path))
        return live_cluster(self.records, None, self.link)

    def describe(self) -> str:
        return f"rank {self.rank} of {self.world_size} on {self.record.label}"

    def synchronize(self) -> None:
        if self.device.type == "hal":
            torch.hal.synchronize(self.device.index)

    def close(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()


def _my_device() -> tuple[torch.device, DeviceRecord]:
    import hal
    import hal.torch  # noqa: F401 - registers the torch device even where the entry point is not installed
    node_rank = _env_int("HAL_LAUNCH_NODE_RANK", 0)
    local_index = _env_int("HAL_LAUNCH_LOCAL_INDEX", _env_int("LOCAL_RANK", 0))
    devices = list(hal.devices())
    if not devices:
        raise JobConfigError("this worker sees no HAL device (HAL_VISIBLE_DEVICES="
                           f"{os.environ.get('HAL_VISIBLE_DEVICES', '')!r})")
    if "HAL_LAUNCH_DEVICE" in os.environ or len(devices) == 1:
        index = 0  # the launcher left exactly this worker's device visible: hal:0
    else:
        index = _env_int("LOCAL_RANK", 0)
        if index >= len(devices):
            raise JobConfigError(f"LOCAL_RANK {index}: only {len(devices)} HAL device(s) are visible")
    rec = local_records([devices[index]], node_rank, socket.gethostname())[0]
    rec = DeviceRecord(rec.node_rank, local_index, rec.name if "HAL_LAUNCH_DEVICE" not in os.environ
                       else os.environ["HAL_LAUNCH_DEVICE"], rec.kind, rec.emulated, rec.relative_speed,
                       rec.memory_bytes, rec.host)
    torch.hal.set_device(index)
    return torch.device("hal", index), rec


def init_job(timeout_s: float | None = None) -> Job:
    """Joins the job; see the module's docstring. Raises JobConfigError naming what is wrong with the
    configuration; a process group that cannot form raises torch's errors (a restart may help)."""
    import hal.collectives
    hal.collectives.register()
    if timeout_s is None:
        timeout_s = float(os.environ.get("HAL_JOB_TIMEOUT", "") or DEFAULT_TIMEOUT_S)
    timeout = timedelta(seconds=timeout_s)
    device, rec = _my_device()
    launched = "RANK" in os.environ
    rank, world = (_env_int("RANK", 0), _env_int("WORLD_SIZE", 1)) if launched else (0, 1)
    if not dist.is_initialized():
        if launched:
            dist.init_process_group("cpu:gloo,hal:hal", timeout=timeout)
        else:
            dist.init_process_group("cpu:gloo,hal:hal", store=dist.HashStore(), rank=0, world_size=1,
                                    timeout=timeout)
    records: list = [None] * world
    dist.all_gather_object(records, rec.to_dict())
    records = [DeviceRecord.from_dict(r) for r in records]
    seen: dict[tuple, int] = {}
    for r, x in enumerate(records):
        key = (x.node_rank, x.local_index)
        if key in seen:
            raise JobConfigError(f"ranks {seen[key]} and {r} both run node {x.node_rank}'s device {x.local_index} "
                               f"({x.name}): every node needs its own --node-rank")
        seen[key] = r
    lost = [s for s in os.environ.get("HAL_LAUNCH_LOST", "").split(",") if s]
    return Job(rank, world, _env_int("LOCAL_RANK", 0), device, rec, records,
               _env_int("TORCHELASTIC_RESTART_COUNT", 0),
               Path(os.environ.get("HAL_LAUNCH_RUN_DIR") or "hal-run").resolve(),
               os.environ.get("HAL_LAUNCH_PLAN") or None, os.environ.get("HAL_LAUNCH_CLUSTER") or None, lost,
               timeout)
