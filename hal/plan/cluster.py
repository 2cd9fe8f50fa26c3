"""Clusters and device kinds: what the planner may use, read from YAML and checked with file:line errors.

A device kind is a prior (datasheet preset, `source: datasheet`) or a measurement (`source: measured`, from
`profile_devices`). A cluster is a list of nodes; a node holds `devices` devices of one kind joined by an
intra-node link and reaches other nodes through its inter-node link (bandwidth per device). Identical nodes
are grouped into device classes: the planner reasons per class, never per device.

Units inside this package are SI: bytes, seconds, FLOP/s, bytes/s. YAML fields carry their unit in the name.

Cluster file:

    name: mixed-256
    kinds:                        # optional: new kinds or overrides of presets
      - {name: H100-tuned, base: H100, efficiency: 0.55, source: measured, confidence: high}
      - {profile: profiles/h100.json}          # a measured profile written by profile_devices
    links:
      inter_node: {bandwidth_gb_s: 50, latency_us: 10}   # per device; default for every node
      cross_kind: {bandwidth_gb_s: 25, latency_us: 20}   # optional: slowest path between kinds
    nodes:
      - {name: h100, kind: H100, devices: 8, replicas: 8,
         intra_node: {bandwidth_gb_s: 450, latency_us: 2}}  # default: half the kind's chip link
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = ["Link", "DeviceKind", "Node", "DeviceClass", "Cluster", "ClusterError", "load_presets",
           "load_cluster", "parse_cluster", "preset_cluster_path", "PRESET_DIR"]

GB = 1e9
TB = 1e12
US = 1e-6
PRESET_DIR = Path(__file__).resolve().parent / "presets"


class ClusterError(ValueError):
    """A cluster or preset file is wrong; the message starts with `file:line: field:`."""


@dataclass(frozen=True)
class Link:
    """A point-to-point path: `bandwidth` bytes/s in one direction, `latency` seconds per message."""
    bandwidth: float
    latency: float

    def time(self, nbytes: float) -> float:
        return self.latency + nbytes / self.bandwidth

    def to_dict(self) -> dict:
        return {"bandwidth_gb_s": self.bandwidth / GB, "latency_us": self.latency / US}


@dataclass(frozen=True)
class DeviceKind:
    """One chip type. `peak_flops` is dense 16-bit peak; `efficiency` the share of it that training reaches.

    `profile_kind`/`relative_speed`: measured per-layer times recorded for `profile_kind` apply to this kind,
    divided by `relative_speed` (how emulated devices borrow the host's measurements)."""
    name: str
    peak_flops: float
    memory_bytes: float
    memory_bandwidth: float
    chip_link: Link
    efficiency: float = 0.4
    source: str = "datasheet"
    confidence: str = "medium"
    vendor: str = ""
    description: str = ""
    emulated: bool = False
    profile_kind: str = ""
    relative_speed: float = 1.0

    @property
    def label(self) -> str:
        return f"{self.name} (emulated)" if self.emulated else self.name

    @property
    def measured_kind(self) -> str:
        return self.profile_kind or self.name

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["chip_link"] = self.chip_link.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "DeviceKind":
        d = dict(d)
        link = d.pop("chip_link")
        if "bandwidth_gb_s" in link:
            link = Link(link["bandwidth_gb_s"] * GB, link["latency_us"] * US)
        else:
            link = Link(**link)
        return cls(chip_link=link, **d)


@dataclass(frozen=True)
class Node:
    name: str
    kind: str
    devices: int
    intra: Link
    inter: Link
    first_device: int  # global id of the node's first device; ids are dense in file order

    @property
    def device_ids(self) -> range:
        return range(self.first_device, self.first_device + self.devices)


@dataclass(frozen=True)
class DeviceClass:
    """Identical nodes (same kind, size and links): the planner's unit of reasoning."""
    name: str
    kind: str
    devices_per_node: int
    nodes: tuple[int, ...]  # indices into Cluster.nodes
    intra: Link
    inter: Link

    @property
    def count(self) -> int:
        return self.devices_per_node * len(self.nodes)


@dataclass
class Cluster:
    name: str
    kinds: dict[str, DeviceKind]
    nodes: list[Node]
    cross_kind: Link | None = None
    path: str = ""
    _node_of: list[int] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        self._node_of = [i for i, n in enumerate(self.nodes) for _ in range(n.devices)]

    @property
    def num_devices(self) -> int:
        return len(self._node_of)

    def node_of(self, device: int) -> Node:
        return self.nodes[self._node_of[device]]

    def node_index(self, device: int) -> int:
        return self._node_of[device]

    def kind_of(self, device: int) -> DeviceKind:
        return self.kinds[self.node_of(device).kind]

    def used_kinds(self) -> list[str]:
        return list(dict.fromkeys(n.kind for n in self.nodes))

    def device_classes(self) -> list[DeviceClass]:
        groups: dict[tuple, list[int]] = {}
        for i, n in enumerate(self.nodes):
            groups.setdefault((n.kind, n.devices, n.intra, n.inter), []).append(i)
        classes, seen = [], {}
        for (kind, per_node, intra, inter), idx in groups.items():
            seen[kind] = seen.get(kind, 0) + 1
            name = kind if seen[kind] == 1 else f"{kind}#{seen[kind]}"
            classes.append(DeviceClass(name, kind, per_node, tuple(idx), intra, inter))
        return classes

    def subset(self, kinds: set[str]) -> "Cluster":
        """The same cluster with only nodes of `kinds` (device ids renumbered)."""
        nodes, first = [], 0
        for n in self.nodes:
            if n.kind in kinds:
                nodes.append(dataclasses.replace(n, first_device=first))
                first += n.devices
        return Cluster(self.name + ":" + "+".join(sorted(kinds)), self.kinds, nodes, self.cross_kind, self.path)

    def to_dict(self) -> dict:
        return {"name": self.name, "devices": self.num_devices,
                "kinds": {k: v.to_dict() for k, v in self.kinds.items() if k in self.used_kinds()},
                "nodes": [{"name": n.name, "kind": n.kind, "devices": n.devices, "first_device": n.first_device,
                           "intra_node": n.intra.to_dict(), "inter_node": n.inter.to_dict()} for n in self.nodes],
                "cross_kind": self.cross_kind.to_dict() if self.cross_kind else None}


# --- YAML with line numbers -------------------------------------------------------------------------------
class _Marked(dict):
    """A mapping that remembers the line of itself and of each of its keys."""
    line: int = 0
    key_lines: dict


class _MarkedList(list):
    line: int = 0


def _from_node(node: yaml.Node) -> Any:
    if isinstance(node, yaml.MappingNode):
        out = _Marked()
        out.line, out.key_lines = node.start_mark.line + 1, {}
        for k, v in node.value:
            key = _from_node(k)
            out[key] = _from_node(v)
            out.key_lines[key] = k.start_mark.line + 1
        return out
    if isinstance(node, yaml.SequenceNode):
        out = _MarkedList(_from_node(v) for v in node.value)
        out.line = node.start_mark.line + 1
        return out
    return _SCALARS.construct_object(node)  # type: ignore[arg-type]


_SCALARS = yaml.SafeLoader("")


def _compose(text: str, path: str) -> Any:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark else 0
        raise ClusterError(f"{path}:{line}: <yaml>: {getattr(e, 'problem', e)}") from None
    if node is None:
        raise ClusterError(f"{path}:1: <file>: empty file")
    return _from_node(node)


class _Reader:
    """Field access that raises ClusterError naming file, line and dotted field."""

    def __init__(self, path: str):
        self.path = path

    def fail(self, obj: Any, key: str | None, where: str, msg: str) -> ClusterError:
        line = getattr(obj, "line", 0)
        if key is not None and isinstance(obj, _Marked) and key in obj.key_lines:
            line = obj.key_lines[key]
        return ClusterError(f"{self.path}:{line}: {where}: {msg}")

    def mapping(self, obj: Any, where: str, allowed: set[str]) -> _Marked:
        if not isinstance(obj, _Marked):
            raise self.fail(obj, None, where, f"expected a mapping, got {type(obj).__name__}")
        for k in obj:
            if k not in allowed:
                raise self.fail(obj, k, f"{where}.{k}", f"unknown field (allowed: {', '.join(sorted(allowed))})")
        return obj

    def get(self, obj: _Marked, key: str, where: str, typ: type | tuple, default: Any = ..., positive=False):
        if key not in obj:
            if default is ...:
                raise self.fail(obj, None, f"{where}.{key}", "required field is missing")
            return default
        v = obj[key]
        ok = isinstance(v, typ) and not (isinstance(v, bool) and bool not in (typ if isinstance(typ, tuple) else (typ,)))
        if not ok:
            name = typ.__name__ if isinstance(typ, type) else "/".join(t.__name__ for t in typ)
            raise self.fail(obj, key, f"{where}.{key}", f"expected {name}, got {v!r}")
        if positive and not v > 0:
            raise self.fail(obj, key, f"{where}.{key}", f"must be > 0, got {v!r}")
        return v

    def link(self, obj: _Marked, key: str, where: str, default: Link | None) -> Link | None:
        if key not in obj:
            return default
        m = self.mapping(obj[key], f"{where}.{key}", {"bandwidth_gb_s", "latency_us", "name"})
        bw = self.get(m, "bandwidth_gb_s", f"{where}.{key}", (int, float), positive=True)
        lat = self.get(m, "latency_us", f"{where}.{key}", (int, float), 0.0)
        if lat < 0:
            raise self.fail(m, "latency_us", f"{where}.{key}.latency_us", "must be >= 0")
        return Link(bw * GB, lat * US)


_KIND_FIELDS = {"name", "vendor", "description", "peak_tflops", "memory_gb", "memory_bandwidth_tb_s",
                "chip_link", "efficiency", "source", "confidence", "base", "emulated", "relative_speed",
                "profile_kind", "profile"}


def _kind_from(r: _Reader, m: _Marked, where: str, presets: dict[str, DeviceKind]) -> DeviceKind:
    r.mapping(m, where, _KIND_FIELDS)
    if "profile" in m:
        from hal.plan.profile_devices import DeviceProfile  # no torch at import: profile files are JSON
        p = Path(r.get(m, "profile", where, str))
        if not p.is_absolute():
            p = Path(r.path).parent / p
        try:
            return DeviceProfile.load(p).to_kind(presets)
        except (OSError, ValueError, KeyError) as e:
            raise r.fail(m, "profile", f"{where}.profile", f"cannot read measured profile {p}: {e}") from None
    name = r.get(m, "name", where, str)
    base = None
    if "base" in m:
        base = presets.get(r.get(m, "base", where, str))
        if base is None:
            raise r.fail(m, "base", f"{where}.base", f"unknown kind {m['base']!r} (known: {', '.join(sorted(presets))})")
    need = ... if base is None else None
    num = (int, float)
    peak = r.get(m, "peak_tflops", where, num, need, positive=True)
    mem = r.get(m, "memory_gb", where, num, need, positive=True)
    bw = r.get(m, "memory_bandwidth_tb_s", where, num, need, positive=True)
    link = r.link(m, "chip_link", where, base.chip_link if base else None)
    if link is None:
        raise r.fail(m, None, f"{where}.chip_link", "required field is missing")
    eff = r.get(m, "efficiency", where, num, base.efficiency if base else 0.4)
    if not 0 < eff <= 1:
        raise r.fail(m, "efficiency", f"{where}.efficiency", f"must be in (0, 1], got {eff}")
    source = r.get(m, "source", where, str, base.source if base else ...)
    if source not in ("datasheet", "measured", "emulated"):
        raise r.fail(m, "source", f"{where}.source", f"must be datasheet, measured or emulated, got {source!r}")
    conf = r.get(m, "confidence", where, str, base.confidence if base else ...)
    if conf not in ("low", "medium", "high"):
        raise r.fail(m, "confidence", f"{where}.confidence", f"must be low, medium or high, got {conf!r}")
    return DeviceKind(
        name=name,
        peak_flops=peak * TB if peak is not None else base.peak_flops,
        memory_bytes=mem * GB if mem is not None else base.memory_bytes,
        memory_bandwidth=bw * TB if bw is not None else base.memory_bandwidth,
        chip_link=link, efficiency=eff, source=source, confidence=conf,
        vendor=r.get(m, "vendor", where, str, base.vendor if base else ""),
        description=r.get(m, "description", where, str, base.description if base else ""),
        emulated=r.get(m, "emulated", where, bool, base.emulated if base else False),
        profile_kind=r.get(m, "profile_kind", where, str, base.profile_kind if base else ""),
        relative_speed=r.get(m, "relative_speed", where, num, base.relative_speed if base else 1.0, positive=True),
    )


_PRESETS: dict[str, DeviceKind] | None = None


def load_presets(directory: Path | None = None) -> dict[str, DeviceKind]:
    """Every `*.yaml` kind in `directory` (default: the package's datasheet presets), by name."""
    global _PRESETS
    if directory is None and _PRESETS is not None:
        return dict(_PRESETS)
    out: dict[str, DeviceKind] = {}
    for p in sorted((directory or PRESET_DIR).glob("*.yaml")):
        r = _Reader(str(p))
        kind = _kind_from(r, _compose(p.read_text(), str(p)), "kind", {})
        out[kind.name] = kind
    if directory is None:
        _PRESETS = dict(out)
    return out


def preset_cluster_path(name: str) -> Path | None:
    p = PRESET_DIR / "clusters" / f"{name}.yaml"
    return p if p.exists() else None


def load_cluster(path: str | Path) -> Cluster:
    """Reads a cluster file (or the name of a preset cluster, e.g. `mixed-256`)."""
    p = Path(path)
    if not p.exists() and preset_cluster_path(str(path)):
        p = preset_cluster_path(str(path))  # type: ignore[assignment]
    try:
        text = p.read_text()
    except OSError as e:
        raise ClusterError(f"{p}:0: <file>: {e.strerror or e}") from None
    return parse_cluster(text, str(p))


def parse_cluster(text: str, path: str = "<string>", presets: dict[str, DeviceKind] | None = None) -> Cluster:
    r = _Reader(path)
    top = r.mapping(_compose(text, path), "cluster", {"name", "kinds", "links", "nodes"})
    kinds = dict(presets if presets is not None else load_presets())
    if "kinds" in top:
        lst = top["kinds"]
        if not isinstance(lst, list):
            raise r.fail(top, "kinds", "kinds", "expected a list of kinds")
        for i, m in enumerate(lst):
            k = _kind_from(r, m, f"kinds[{i}]", kinds)
            kinds[k.name] = k
    links = r.mapping(top.get("links", _Marked()), "links", {"inter_node", "cross_kind"})
    default_inter = r.link(links, "inter_node", "links", Link(25 * GB, 10 * US))
    cross = r.link(links, "cross_kind", "links", None)
    nodes_raw = top.get("nodes")
    if not isinstance(nodes_raw, list) or not nodes_raw:
        raise r.fail(top, "nodes" if "nodes" in top else None, "nodes", "expected a non-empty list of nodes")
    nodes: list[Node] = []
    first = 0
    for i, m in enumerate(nodes_raw):
        where = f"nodes[{i}]"
        r.mapping(m, where, {"name", "kind", "devices", "replicas", "intra_node", "inter_node"})
        kind = r.get(m, "kind", where, str)
        if kind not in kinds:
            raise r.fail(m, "kind", f"{where}.kind", f"unknown kind {kind!r} (known: {', '.join(sorted(kinds))})")
        n = r.get(m, "devices", where, int, positive=True)
        reps = r.get(m, "replicas", where, int, 1, positive=True)
        name = r.get(m, "name", where, str, f"{kind.lower()}-{i}")
        chip = kinds[kind].chip_link
        intra = r.link(m, "intra_node", where, Link(chip.bandwidth / 2, chip.latency))
        inter = r.link(m, "inter_node", where, default_inter)
        for j in range(reps):
            nodes.append(Node(name if reps == 1 else f"{name}.{j}", kind, n, intra, inter, first))  # type: ignore[arg-type]
            first += n
    return Cluster(r.get(top, "name", "cluster", str, Path(path).stem), kinds, nodes, cross, path)


def cluster_from_json(d: dict) -> Cluster:
    kinds = {k: DeviceKind.from_dict(v) for k, v in d["kinds"].items()}
    mk = lambda l: Link(l["bandwidth_gb_s"] * GB, l["latency_us"] * US)  # noqa: E731
    nodes = [Node(n["name"], n["kind"], n["devices"], mk(n["intra_node"]), mk(n["inter_node"]), n["first_device"])
             for n in d["nodes"]]
    return Cluster(d["name"], kinds, nodes, mk(d["cross_kind"]) if d.get("cross_kind") else None)


def dumps(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=True)
