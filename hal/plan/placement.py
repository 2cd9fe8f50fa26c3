"""Where the pipelines of a group sit: device ids per stage, and how they pack into nodes.

A group's pipelines are `parts`: consecutive runs of stages on one device class each, `pp` stages of `tp`
devices (a same-kind pipeline has one part, a cross-kind one several). Per part, segments that fit in a node
are packed node by node, longer ones are laid over the class's consecutive nodes.
"""
from __future__ import annotations

from dataclasses import dataclass

from hal.plan.cluster import Cluster, DeviceClass
from hal.plan.cost import ceil_div

__all__ = ["Part", "max_pipelines", "place", "place_parts", "packing"]


@dataclass(frozen=True)
class Part:
    """`pp` consecutive stages of `tp` devices each on device class `cls`."""
    cls: DeviceClass
    tp: int
    pp: int


def max_pipelines(cls: DeviceClass, tp: int, pp: int) -> int:
    size = tp * pp
    if size <= cls.devices_per_node:
        return (cls.devices_per_node // size) * len(cls.nodes)
    return cls.count // size


def place(cluster: Cluster, cls: DeviceClass, tp: int, pp: int, dp: int) -> list[list[list[int]]]:
    """Device ids per stage of the first `dp` segments of `pp` stages of `tp` devices on a class."""
    d, size = cls.devices_per_node, tp * pp
    out: list[list[list[int]]] = []
    if size <= d:
        for n in cls.nodes:
            base = cluster.nodes[n].first_device
            for j in range(d // size):
                if len(out) == dp:
                    return out
                out.append([[base + j * size + s * tp + t for t in range(tp)] for s in range(pp)])
        return out
    flat = [dev for n in cls.nodes for dev in cluster.nodes[n].device_ids]
    for i in range(min(dp, len(flat) // size)):
        out.append([flat[i * size + s * tp: i * size + (s + 1) * tp] for s in range(pp)])
    return out


def place_parts(cluster: Cluster, parts: tuple[Part, ...], dp: int) -> list[list[list[int]]]:
    """Device ids per stage of the first `dp` pipelines made of `parts` (segment i of every part joined)."""
    per_part = [place(cluster, p.cls, p.tp, p.pp, dp) for p in parts]
    return [[stage for segs in per_part for stage in segs[i]] for i in range(min(len(s) for s in per_part))]


def packing(cls: DeviceClass, tp: int, pp: int, dp: int) -> tuple[bool, int, int, int]:
    """(spans, k_min, k_max, nodes_used) of the placement of `dp` same-kind pipelines."""
    size = tp * pp
    if size > cls.devices_per_node:
        return True, 1, 1, ceil_div(dp * size, cls.devices_per_node)
    per = cls.devices_per_node // size
    rem = dp % per
    return False, (rem if rem else per) if dp >= per else dp, min(per, dp), ceil_div(dp, per)
