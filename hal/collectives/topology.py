"""Who is where: ranks exchange (host, plugin, device) through the store; ranks of one plugin on one host form
an island, the set of ranks one plugin's own collectives (shared memory, NCCL, ...) can join.

The exchange runs at a group's first collective on a hal tensor (every rank reaches it in the same op order),
not at group creation, so a group used only for CPU tensors never touches a device.
"""
from __future__ import annotations

import json
import os
import socket
from dataclasses import asdict, dataclass

import torch.distributed as dist


def host_key() -> str:
    """What makes two processes one host for shared memory: hostname, boot id, network namespace and the
    /dev/shm filesystem. Separate network namespaces count as separate hosts (they talk over TCP like two
    machines). `HAL_HOST_ID` overrides it (tests pretend to be several hosts)."""
    override = os.environ.get("HAL_HOST_ID", "").strip()
    if override:
        return override
    parts = [socket.gethostname()]
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            parts.append(f.read().strip())
    except OSError:
        parts.append("?")
    for path in ("/proc/self/ns/net", "/dev/shm"):
        try:
            st = os.stat(path)
            parts.append(f"{st.st_dev}:{st.st_ino}" if path.endswith("net") else str(st.st_dev))
        except OSError:
            parts.append("?")
    return "/".join(parts)


@dataclass(frozen=True)
class Peer:
    rank: int
    host: str
    plugin: str
    device: str  # "<plugin>:<local index>"
    kind: str  # the device's product name, as its properties give it
    pid: int
    collectives: bool  # the plugin implements the collective entries (and hal._C binds them)

    @property
    def island_key(self) -> tuple[str, str]:
        return (self.host, self.plugin) if self.collectives else (self.host, f"{self.plugin}/rank{self.rank}")


@dataclass(frozen=True)
class Topology:
    peers: tuple[Peer, ...]

    @property
    def islands(self) -> list[list[int]]:
        """Ranks grouped by (host, plugin), each sorted, ordered by their first rank. A plugin without
        collectives gives every rank its own island (its devices cannot reduce among themselves)."""
        groups: dict[tuple[str, str], list[int]] = {}
        for p in self.peers:
            groups.setdefault(p.island_key, []).append(p.rank)
        return sorted((sorted(g) for g in groups.values()), key=lambda g: g[0])

    def island_of(self, rank: int) -> list[int]:
        return next(g for g in self.islands if rank in g)

    def describe(self) -> str:
        return "; ".join(f"[{', '.join(f'{r}:{self.peers[r].device}' for r in g)}] on {self.peers[g[0]].host[:24]}"
                         for g in self.islands)


def local_peer(rank: int, device_index: int) -> Peer:
    import torch

    from hal import _C

    torch.hal.init()  # The runtime as the torch bridge starts it (its plugin directories).
    dev = _C.get_device(device_index)
    try:
        kind = dev.properties().name
    except Exception:  # noqa: BLE001 - the name is informational.
        kind = dev.name
    collectives = hasattr(_C, "Communicator") and dev.supports("comm_init_rank")
    return Peer(rank=rank, host=host_key(), plugin=dev.plugin, device=dev.name, kind=kind, pid=os.getpid(),
                collectives=collectives)


def exchange(store: dist.Store, rank: int, size: int, mine: Peer, key: str) -> Topology:
    """Publishes |mine| under |key| and reads every rank's (the store's get blocks up to its timeout)."""
    store.set(f"{key}/{rank}", json.dumps(asdict(mine)))
    peers = [mine if r == rank else Peer(**json.loads(store.get(f"{key}/{r}"))) for r in range(size)]
    return Topology(tuple(peers))
