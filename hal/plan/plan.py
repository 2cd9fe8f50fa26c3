"""A plan: who does what in one training step. Plain dataclasses that round-trip through JSON.

A plan is a list of pipelines (data-parallel replicas, possibly of different device kinds, each with its own
share of the global batch); a pipeline is a list of stages; a stage is `tp` devices of one kind inside one
node that hold layers [start, end) split by tensor parallelism.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

__all__ = ["Stage", "Pipeline", "Plan"]


@dataclass
class Stage:
    kind: str
    device_ids: list[int]
    layers: tuple[int, int]  # [start, end) in ModelSpec.layers

    @property
    def tp(self) -> int:
        return len(self.device_ids)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "device_ids": list(self.device_ids), "tp": self.tp, "layers": list(self.layers)}

    @classmethod
    def from_dict(cls, d: dict) -> "Stage":
        return cls(d["kind"], list(d["device_ids"]), (int(d["layers"][0]), int(d["layers"][1])))


@dataclass
class Pipeline:
    stages: list[Stage]
    micro_batch_size: int
    num_micro_batches: int
    samples: int  # this replica's share of the global batch; the last micro-batch may be partial

    @property
    def devices(self) -> list[int]:
        return [d for s in self.stages for d in s.device_ids]

    @property
    def kinds(self) -> list[str]:
        return list(dict.fromkeys(s.kind for s in self.stages))

    def to_dict(self) -> dict:
        return {"stages": [s.to_dict() for s in self.stages], "micro_batch_size": self.micro_batch_size,
                "num_micro_batches": self.num_micro_batches, "samples": self.samples}

    @classmethod
    def from_dict(cls, d: dict) -> "Pipeline":
        return cls([Stage.from_dict(s) for s in d["stages"]], d["micro_batch_size"], d["num_micro_batches"],
                   d["samples"])


@dataclass
class Plan:
    model: str
    global_batch: int
    seq_len: int
    pipelines: list[Pipeline]
    cluster: str = ""
    predicted: dict = field(default_factory=dict)  # filled by the planner: step time, throughput, memory...

    @property
    def devices(self) -> list[int]:
        return [d for p in self.pipelines for d in p.devices]

    def to_dict(self) -> dict:
        return {"model": self.model, "global_batch": self.global_batch, "seq_len": self.seq_len,
                "cluster": self.cluster, "pipelines": [p.to_dict() for p in self.pipelines],
                "predicted": self.predicted}

    @classmethod
    def from_dict(cls, d: dict) -> "Plan":
        return cls(d["model"], d["global_batch"], d["seq_len"], [Pipeline.from_dict(p) for p in d["pipelines"]],
                   d.get("cluster", ""), d.get("predicted", {}))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "Plan":
        return cls.from_dict(json.loads(text))

    def signature(self) -> tuple:
        """A hashable summary for equality of structure (not of predictions)."""
        return tuple((tuple((s.kind, tuple(s.device_ids), s.layers) for s in p.stages), p.micro_batch_size,
                      p.num_micro_batches, p.samples) for p in self.pipelines)

