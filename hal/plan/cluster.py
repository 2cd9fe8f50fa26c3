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
      - {name: mi, kind: MI300X, devices: 8,
         nics: {count: 2, bandwidth_gb_s: 50, latency_us: 5}}  # instead of inter_node: NICs the devices share

Topology. A node's `nics` (count, bandwidth per NIC) replaces its `inter_node` link: its devices share them
evenly, so each device's path off the node is a NIC's bandwidth / ceil(devices / count) (every device of a
node sends at once in the data-parallel rings and, conservatively, in the pipelines' sends). `links.pairs`
sets the path between two named nodes (per device, both directions), which replaces the default path of
those two (their inter-node links, and the cross-kind link between kinds):

    links:
      pairs:
        - {between: [h100.0, mi], bandwidth_gb_s: 5, latency_us: 30}

The cost model sends between the two over it and prices each data-parallel ring over the slowest hop of the
ring through its nodes in order (cost.CostModel.ring_hops). Nodes a pair names form device classes of their own.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hal.plan.device_profile import MEASURED_EFFICIENCY, DeviceProfile
from hal.plan.limits import (FIGURE_MAX, FIGURE_MIN, MAX_CLUSTER_FILE_BYTES, MAX_DEVICES, MAX_DEVICES_PER_NODE,
                             MAX_REPLICAS, MAX_YAML_DEPTH, check_number, read_bounded)

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

    @classmethod
    def from_profile(cls, p: DeviceProfile) -> "DeviceKind":
        """The kind a measured profile describes; raises ValueError when it lacks a figure the cost model needs."""
        for what, v in (("matmul (best rate)", p.peak_flops), ("memory_bytes", p.memory_bytes),
                        ("memory_bandwidth", p.memory_bandwidth)):
            if not v > 0:
                raise ValueError(f"{what}: must be > 0 in a profile the planner uses, got {v!r}")
        link = Link(p.copy_link["bandwidth"], p.copy_link["latency"]) if p.copy_link else \
            Link(p.memory_bandwidth / 2, 1e-6)
        return cls(name=p.kind, peak_flops=p.peak_flops, memory_bytes=p.memory_bytes,
                   memory_bandwidth=p.memory_bandwidth, chip_link=link, efficiency=MEASURED_EFFICIENCY,
                   source="measured", confidence="high", description=f"measured on {p.device}",
                   emulated=p.emulated, relative_speed=p.relative_speed)


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
    pairs: dict[frozenset[int], Link] = field(default_factory=dict)  # node indices -> the path between the two
    _classes: list | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # A cluster's nodes and paths are not changed once it is built (subset() makes a new one).
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
        """Identical nodes grouped (computed once: the planner asks for them at every step)."""
        if self._classes is None:
            self._classes = self._group_classes()
        return list(self._classes)

    def _group_classes(self) -> list[DeviceClass]:
        groups: dict[tuple, list[int]] = {}
        paired = {i for pair in self.pairs for i in pair}
        for i, n in enumerate(self.nodes):  # a node with a path of its own is not like the others
            groups.setdefault((n.kind, n.devices, n.intra, n.inter, i if i in paired else -1), []).append(i)
        classes, seen = [], {}
        for (kind, per_node, intra, inter, _), idx in groups.items():
            seen[kind] = seen.get(kind, 0) + 1
            name = kind if seen[kind] == 1 else f"{kind}#{seen[kind]}"
            classes.append(DeviceClass(name, kind, per_node, tuple(idx), intra, inter))
        return classes

    def subset(self, kinds: set[str]) -> "Cluster":
        """The same cluster with only nodes of `kinds` (device ids renumbered)."""
        nodes, first, index = [], 0, {}
        for i, n in enumerate(self.nodes):
            if n.kind in kinds:
                index[i] = len(nodes)
                nodes.append(dataclasses.replace(n, first_device=first))
                first += n.devices
        pairs = {frozenset(index[i] for i in pair): link for pair, link in self.pairs.items() if pair <= index.keys()}
        return Cluster(self.name + ":" + "+".join(sorted(kinds)), self.kinds, nodes, self.cross_kind, self.path,
                       pairs=pairs)

    def to_dict(self) -> dict:
        return {"name": self.name, "devices": self.num_devices,
                "kinds": {k: v.to_dict() for k, v in self.kinds.items() if k in self.used_kinds()},
                "nodes": [{"name": n.name, "kind": n.kind, "devices": n.devices, "first_device": n.first_device,
                           "intra_node": n.intra.to_dict(), "inter_node": n.inter.to_dict()} for n in self.nodes],
                "cross_kind": self.cross_kind.to_dict() if self.cross_kind else None,
                "pairs": [{"between": [self.nodes[i].name for i in sorted(pair)], **link.to_dict()}
                          for pair, link in self.pairs.items()]}


# --- YAML with line numbers -------------------------------------------------------------------------------
class _Marked(dict):
    """A mapping that remembers the line of itself and of each of its keys."""
    line: int = 0
    key_lines: dict


class _MarkedList(list):
    line: int = 0


_PARSER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when installed: the same events, ~5x faster


def _compose(text: str, path: str) -> Any:
    """The document as _Marked / _MarkedList / scalars, built from the parser's events without recursion.

    An alias stands for the object its anchor built (shared, never copied: no exponential expansion); an alias
    to a collection that is still open (a recursive one) and nesting beyond MAX_YAML_DEPTH are errors."""
    def fail(line: int, msg: str) -> ClusterError:
        return ClusterError(f"{path}:{line}: <yaml>: {msg}")

    scalars = yaml.SafeLoader("")  # resolves and constructs scalars; one per call (it caches what it built)

    stack: list[tuple[Any, Any]] = []  # (open collection, pending mapping key or _NO_KEY)
    anchors: dict[str, Any] = {}
    open_anchors: set[str] = set()
    roots: list[Any] = []
    pending_anchor: list[str | None] = []

    def add(value: Any, line: int) -> None:
        if not stack:
            roots.append(value)
            return
        coll, key = stack[-1]
        if isinstance(coll, _MarkedList):
            coll.append(value)
        elif key is _NO_KEY:
            try:
                hash(value)
            except TypeError:
                raise fail(line, "a mapping key must be a scalar") from None
            if value in coll:
                raise fail(line, f"duplicate key {value!r}")
            coll.key_lines[value] = line
            stack[-1] = (coll, value)
        else:
            coll[key] = value
            stack[-1] = (coll, _NO_KEY)

    try:
        for ev in yaml.parse(text, Loader=_PARSER):
            line = ev.start_mark.line + 1 if ev.start_mark else 0
            if isinstance(ev, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                if len(stack) >= MAX_YAML_DEPTH:
                    raise fail(line, f"nested deeper than {MAX_YAML_DEPTH} levels")
                coll = _Marked() if isinstance(ev, yaml.MappingStartEvent) else _MarkedList()
                coll.line = line
                if isinstance(coll, _Marked):
                    coll.key_lines = {}
                add(coll, line)
                stack.append((coll, _NO_KEY))
                pending_anchor.append(ev.anchor)
                if ev.anchor:
                    anchors[ev.anchor] = coll
                    open_anchors.add(ev.anchor)
            elif isinstance(ev, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                stack.pop()
                anchor = pending_anchor.pop()
                if anchor:
                    open_anchors.discard(anchor)
            elif isinstance(ev, yaml.ScalarEvent):
                tag = ev.tag if ev.tag and ev.tag != "!" else scalars.resolve(yaml.ScalarNode, ev.value, ev.implicit)
                try:
                    value = scalars.construct_object(yaml.ScalarNode(tag, ev.value, ev.start_mark, ev.end_mark))
                except Exception as e:  # noqa: BLE001 - any constructor failure (bad !!int, unknown tag) is bad input
                    raise fail(line, f"cannot read {ev.value!r} as {tag}: {getattr(e, 'problem', e)}") from None
                if ev.anchor:
                    anchors[ev.anchor] = value
                add(value, line)
            elif isinstance(ev, yaml.AliasEvent):
                if ev.anchor in open_anchors:
                    raise fail(line, f"recursive alias *{ev.anchor}")
                if ev.anchor not in anchors:
                    raise fail(line, f"undefined alias *{ev.anchor}")
                add(anchors[ev.anchor], line)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise fail(mark.line + 1 if mark else 0, str(getattr(e, "problem", None) or e)) from None
    if len(roots) > 1:
        raise fail(0, "expected a single document, found several")
    if not roots:
        raise ClusterError(f"{path}:1: <file>: empty file")
    return roots[0]


_NO_KEY = object()


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

    def get(self, obj: _Marked, key: str, where: str, typ: type, default: Any = ...):
        """A str or bool field (numbers: `number`)."""
        if key not in obj:
            if default is ...:
                raise self.fail(obj, None, f"{where}.{key}", "required field is missing")
            return default
        v = obj[key]
        if not isinstance(v, typ) or isinstance(v, bool) and typ is not bool:
            raise self.fail(obj, key, f"{where}.{key}", f"expected {typ.__name__}, got {v!r}")
        return v

    def number(self, obj: _Marked, key: str, where: str, default: Any = ..., lo: float = FIGURE_MIN,
               hi: float = FIGURE_MAX, integer: bool = False, lo_open: bool = False):
        """A numeric field: finite, of the right type, in [lo, hi] (limits.check_number)."""
        if key not in obj:
            if default is ...:
                raise self.fail(obj, None, f"{where}.{key}", "required field is missing")
            return default
        try:
            return check_number(obj[key], lo, hi, integer=integer, lo_open=lo_open)
        except ValueError as e:
            raise self.fail(obj, key, f"{where}.{key}", str(e)) from None

    def link(self, obj: _Marked, key: str, where: str, default: Link | None) -> Link | None:
        if key not in obj:
            return default
        m = self.mapping(obj[key], f"{where}.{key}", {"bandwidth_gb_s", "latency_us", "name"})
        bw = self.number(m, "bandwidth_gb_s", f"{where}.{key}")
        lat = self.number(m, "latency_us", f"{where}.{key}", 0.0, lo=0.0, hi=1e9)
        return Link(bw * GB, lat * US)


_KIND_FIELDS = {"name", "vendor", "description", "peak_tflops", "memory_gb", "memory_bandwidth_tb_s",
                "chip_link", "efficiency", "source", "confidence", "base", "emulated", "relative_speed",
                "profile_kind", "profile"}


def _kind_from(r: _Reader, m: _Marked, where: str, presets: dict[str, DeviceKind]) -> DeviceKind:
    r.mapping(m, where, _KIND_FIELDS)
    if "profile" in m:
        p = Path(r.get(m, "profile", where, str))
        if not p.is_absolute():
            p = Path(r.path).parent / p
        try:
            return DeviceKind.from_profile(DeviceProfile.load(p))
        except (OSError, ValueError) as e:
            raise r.fail(m, "profile", f"{where}.profile", f"cannot read measured profile {p}: {e}") from None
    name = r.get(m, "name", where, str)
    base = None
    if "base" in m:
        base = presets.get(r.get(m, "base", where, str))
        if base is None:
            raise r.fail(m, "base", f"{where}.base", f"unknown kind {m['base']!r} (known: {', '.join(sorted(presets))})")
    need = ... if base is None else None
    peak = r.number(m, "peak_tflops", where, need)
    mem = r.number(m, "memory_gb", where, need)
    bw = r.number(m, "memory_bandwidth_tb_s", where, need)
    link = r.link(m, "chip_link", where, base.chip_link if base else None)
    if link is None:
        raise r.fail(m, None, f"{where}.chip_link", "required field is missing")
    eff = r.number(m, "efficiency", where, base.efficiency if base else 0.4, lo=0.0, hi=1.0, lo_open=True)
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
        relative_speed=r.number(m, "relative_speed", where, base.relative_speed if base else 1.0),
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
    """Reads a cluster file (or the name of a preset cluster, e.g. `mixed-256`) of at most
    MAX_CLUSTER_FILE_BYTES."""
    p = Path(path)
    try:
        if not p.exists() and preset_cluster_path(str(path)):
            p = preset_cluster_path(str(path))  # type: ignore[assignment]
        text = read_bounded(p, MAX_CLUSTER_FILE_BYTES)
    except OSError as e:
        raise ClusterError(f"{p}:0: <file>: {e.strerror or e}") from None
    except ValueError as e:
        raise ClusterError(f"{p}:0: <file>: {e}") from None
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
    links = r.mapping(top.get("links", _Marked()), "links", {"inter_node", "cross_kind", "pairs"})
    default_inter = r.link(links, "inter_node", "links", Link(25 * GB, 10 * US))
    cross = r.link(links, "cross_kind", "links", None)
    nodes_raw = top.get("nodes")
    if not isinstance(nodes_raw, list) or not nodes_raw:
        raise r.fail(top, "nodes" if "nodes" in top else None, "nodes", "expected a non-empty list of nodes")
    nodes: list[Node] = []
    first = 0
    for i, m in enumerate(nodes_raw):
        where = f"nodes[{i}]"
        r.mapping(m, where, {"name", "kind", "devices", "replicas", "intra_node", "inter_node", "nics"})
        kind = r.get(m, "kind", where, str)
        if kind not in kinds:
            raise r.fail(m, "kind", f"{where}.kind", f"unknown kind {kind!r} (known: {', '.join(sorted(kinds))})")
        n = r.number(m, "devices", where, lo=1, hi=MAX_DEVICES_PER_NODE, integer=True)
        reps = r.number(m, "replicas", where, 1, lo=1, hi=MAX_REPLICAS, integer=True)
        if first + n * reps > MAX_DEVICES:
            raise r.fail(m, "devices", f"{where}.devices", f"the cluster would have {first + n * reps} devices, more "
                         f"than the planner's limit of {MAX_DEVICES}")
        name = r.get(m, "name", where, str, f"{kind.lower()}-{i}")
        chip = kinds[kind].chip_link
        intra = r.link(m, "intra_node", where, Link(chip.bandwidth / 2, chip.latency))
        inter = r.link(m, "inter_node", where, default_inter)
        if "nics" in m:
            if "inter_node" in m:
                raise r.fail(m, "nics", f"{where}.nics", "give inter_node or nics, not both")
            nics = r.mapping(m["nics"], f"{where}.nics", {"count", "bandwidth_gb_s", "latency_us"})
            count = r.number(nics, "count", f"{where}.nics", lo=1, hi=MAX_DEVICES_PER_NODE, integer=True)
            nic = Link(r.number(nics, "bandwidth_gb_s", f"{where}.nics") * GB,
                       r.number(nics, "latency_us", f"{where}.nics", 0.0, lo=0.0, hi=1e9) * US)
            inter = Link(nic.bandwidth / -(-n // count), nic.latency)  # the devices sharing a NIC divide it
        for j in range(reps):
            nodes.append(Node(name if reps == 1 else f"{name}.{j}", kind, n, intra, inter, first))
            first += n
    names: dict[str, int] = {}
    twice = set()
    for i, node in enumerate(nodes):
        if node.name in names:
            twice.add(node.name)
        names.setdefault(node.name, i)
    pairs: dict[frozenset[int], Link] = {}
    raw = links.get("pairs", [])
    if not isinstance(raw, list):
        raise r.fail(links, "pairs", "links.pairs", "expected a list of {between: [node, node], bandwidth_gb_s, ...}")
    for i, m in enumerate(raw):
        where = f"links.pairs[{i}]"
        r.mapping(m, where, {"between", "bandwidth_gb_s", "latency_us"})
        between = m.get("between")
        if not isinstance(between, list) or len(between) != 2 or not all(isinstance(b, str) for b in between):
            raise r.fail(m, "between" if "between" in m else None, f"{where}.between",
                         "expected two node names, [a, b]")
        for b in between:
            if b not in names:
                raise r.fail(m, "between", f"{where}.between", f"unknown node {b!r} (nodes: "
                             f"{', '.join(list(names)[:8])}{', ...' if len(names) > 8 else ''})")
            if b in twice:
                raise r.fail(m, "between", f"{where}.between", f"more than one node is named {b!r}: name them apart")
        pair = frozenset(names[b] for b in between)
        if len(pair) != 2:
            raise r.fail(m, "between", f"{where}.between", f"a node and itself ({between[0]!r}): use its intra_node")
        if pair in pairs:
            raise r.fail(m, "between", f"{where}.between", f"the path between {between[0]} and {between[1]} is "
                         f"given twice")
        pairs[pair] = Link(r.number(m, "bandwidth_gb_s", where) * GB,
                           r.number(m, "latency_us", where, 0.0, lo=0.0, hi=1e9) * US)
    return Cluster(r.get(top, "name", "cluster", str, Path(path).stem), kinds, nodes, cross, path, pairs=pairs)
