"""A plan: who does what in one training step. Plain dataclasses that round-trip through JSON.

A plan is a list of pipelines (data-parallel replicas, possibly of different device kinds, each with its own
share of the global batch); a pipeline is a list of stages; a stage is `tp` devices of one kind inside one
node that hold layers [start, end) split by tensor parallelism. `techniques` are the memory-saving and
scheduling techniques the whole plan uses (docs/planner.md, "Techniques"); a plan file without them uses none.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

__all__ = ["Stage", "Pipeline", "Plan", "Techniques", "RECOMPUTE"]

RECOMPUTE = ("none", "selective", "full")


@dataclass(frozen=True)
class Techniques:
    """What a plan's stages do besides data, pipeline and tensor parallelism (the defaults: nothing).

    zero               ZeRO stage over a stage's data-parallel replicas: 1 shards the optimizer state, 2 also the
                       gradients, 3 also the weights (Rajbhandari et al. 2020)
    recompute          activations recomputed in the backward: "selective" (the attention core, Korthikanti et al.
                       2022) or "full" (each layer's forward from its input)
    sequence_parallel  under tensor parallelism, the norms' and dropouts' activations split over the tp ranks too
    virtual_stages     interleaved 1F1B: each device holds this many chunks of its stage (Narayanan et al. 2021)
    overlap            the gradient reduction overlaps the last backward pass"""
    zero: int = 0
    recompute: str = "none"
    sequence_parallel: bool = False
    virtual_stages: int = 1
    overlap: bool = False

    def __post_init__(self):
        if self.zero not in (0, 1, 2, 3) or isinstance(self.zero, bool):
            raise ValueError(f"techniques.zero: expected 0, 1, 2 or 3, got {self.zero!r}")
        if self.recompute not in RECOMPUTE:
            raise ValueError(f"techniques.recompute: expected one of {', '.join(RECOMPUTE)}, got {self.recompute!r}")
        if not isinstance(self.virtual_stages, int) or isinstance(self.virtual_stages, bool) or \
                not 1 <= self.virtual_stages <= 64:
            raise ValueError(f"techniques.virtual_stages: expected an int in [1, 64], got {self.virtual_stages!r}")
        for k in ("sequence_parallel", "overlap"):
            if not isinstance(getattr(self, k), bool):
                raise ValueError(f"techniques.{k}: expected true or false, got {getattr(self, k)!r}")

    def to_dict(self) -> dict:
        return {"zero": self.zero, "recompute": self.recompute, "sequence_parallel": self.sequence_parallel,
                "virtual_stages": self.virtual_stages, "overlap": self.overlap}

    @classmethod
    def from_dict(cls, d: dict) -> "Techniques":
        if not isinstance(d, dict):
            raise ValueError(f"techniques: expected an object, got {type(d).__name__}")
        unknown = set(d) - set(cls().to_dict())
        if unknown:
            raise ValueError(f"techniques.{sorted(unknown)[0]}: unknown field")
        return cls(**d)

    def label(self) -> str:
        """The techniques in use, in words ("none" when none)."""
        on = ([f"ZeRO-{self.zero}"] if self.zero else []) + \
             ([f"{self.recompute} recompute"] if self.recompute != "none" else []) + \
             (["sequence parallel"] if self.sequence_parallel else []) + \
             ([f"interleaved x{self.virtual_stages}"] if self.virtual_stages > 1 else []) + \
             (["overlapped gradient sync"] if self.overlap else [])
        return ", ".join(on) or "none"


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
    techniques: Techniques = Techniques()

    @property
    def devices(self) -> list[int]:
        return [d for p in self.pipelines for d in p.devices]

    def to_dict(self) -> dict:
        return {"model": self.model, "global_batch": self.global_batch, "seq_len": self.seq_len,
                "cluster": self.cluster, "pipelines": [p.to_dict() for p in self.pipelines],
                "predicted": self.predicted, "techniques": self.techniques.to_dict()}

    @classmethod
    def from_dict(cls, d: dict) -> "Plan":
        return cls(d["model"], d["global_batch"], d["seq_len"], [Pipeline.from_dict(p) for p in d["pipelines"]],
                   d.get("cluster", ""), d.get("predicted", {}), Techniques.from_dict(d.get("techniques", {})))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "Plan":
        return cls.from_dict(json.loads(text))

    def signature(self) -> tuple:
        """A hashable summary for equality of structure (not of predictions)."""
        return tuple((tuple((s.kind, tuple(s.device_ids), s.layers) for s in p.stages), p.micro_batch_size,
                      p.num_micro_batches, p.samples) for p in self.pipelines) + (self.techniques,)

