"""Which path an op on hal tensors takes, from the group's topology (every rank decides the same way).

    one island whose plugin has collectives   -> the plugin's communicator (island.py)
    several islands, some with collectives    -> all-reduce: hierarchical.py (leaders.py: how leaders exchange);
                                                 other ops: the host path
    otherwise, HAL_COLLECTIVES=host, or an op/dtype the plugin lacks, or a deterministic sum -> host.py

Built at the first collective on a hal tensor (topology exchange, communicators, the leaders' exchange).
"""
from __future__ import annotations

from datetime import timedelta

import torch
import torch.distributed as dist

from hal.collectives import deterministic
from hal.collectives.hierarchical import Hierarchical
from hal.collectives.island import OPS, REDUCIBLE, Island
from hal.collectives.leaders import GlooLeaders, SharedMemoryLeaders, cpu_device_index
from hal.collectives.topology import Topology, exchange, local_peer

R = dist.ReduceOp


class Paths:
    def __init__(self, store: dist.Store, rank: int, size: int, timeout: timedelta, device_index: int) -> None:
        self.device_index = device_index
        self.topology: Topology = exchange(store, rank, size, local_peer(rank, device_index), "hal/topology")
        islands = self.topology.islands
        mine = self.topology.island_of(rank)
        self.island = Island(dist.PrefixStore(f"hal/island/{mine[0]}", store), "comm", mine, rank, device_index,
                             timeout.total_seconds()) if len(mine) > 1 else None
        self.single = len(islands) == 1 and self.island is not None
        self.hierarchical = None
        self.leaders = None
        if not self.single and any(len(g) > 1 for g in islands):
            heads = [g[0] for g in islands]
            cpu = self._shared_memory_device(store, rank, size)
            # Ranks on the cpu device join a shared-memory exchange with their own tensors (its memory is theirs):
            # they skip their island's reduction and broadcast and every staging copy.
            direct = {p.rank for p in self.topology.peers if p.plugin == "cpu"} if cpu is not None else set()
            heads = sorted(set(heads) | direct)
            if rank in heads:
                self.leaders = (SharedMemoryLeaders(dist.PrefixStore("hal/leaders/shm", store), heads, rank, cpu,
                                                    timeout.total_seconds()) if cpu is not None else
                                GlooLeaders(dist.PrefixStore("hal/leaders", store), heads.index(rank), len(heads),
                                            timeout))
            self.hierarchical = Hierarchical(None if rank in direct else self.island, self.leaders, device_index,
                                             size, direct=rank in direct)
        self.deterministic = deterministic.enabled()

    def _shared_memory_device(self, store: dist.Store, rank: int, size: int) -> int | None:
        """The cpu device's torch index when the island leaders can exchange through its shared-memory
        collectives: every rank on one host, and every rank sees a cpu device with collectives
        (HAL_VISIBLE_DEVICES may hide it; they agree through the store). None: Gloo."""
        one_host = len({p.host for p in self.topology.peers}) == 1
        cpu = cpu_device_index() if one_host else None
        prefix = dist.PrefixStore("hal/leaders-cpu", store)
        prefix.set(str(rank), "1" if cpu is not None else "0")
        return cpu if all(prefix.get(str(r)) == b"1" for r in range(size)) else None

    def on_island(self, op: str, dtype: torch.dtype, red: R.RedOpType | None = None) -> Island | None:
        """The communicator for |op| when the whole group is one island whose plugin can do it."""
        if not self.single or (red is not None and self.deterministic and deterministic.applies(dtype, red)):
            return None
        return self.island if self.island.supports(op, dtype, red) else None

    def across_islands(self, dtype: torch.dtype, red: R.RedOpType) -> Hierarchical | None:
        """The hierarchical all-reduce, for the dtypes and ops every plugin's all-reduce has (the same answer on
        every rank, whatever its own island)."""
        if self.hierarchical is None or (self.deterministic and deterministic.applies(dtype, red)):
            return None
        return self.hierarchical if dtype in REDUCIBLE and red in OPS else None

    def abort(self) -> None:
        if self.island is not None:
            self.island.abort()
        if self.leaders is not None:
            self.leaders.abort()

    def destroy(self) -> None:
        if self.island is not None:
            self.island.destroy()
        if self.leaders is not None:
            self.leaders.destroy()
