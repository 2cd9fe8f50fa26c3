"""The model as the planner sees it: a chain of layers, each with FLOPs, bytes and (when measured) times.

Two sources:
  * `transformer(config)` computes every figure analytically for a decoder-only transformer without running
    it (presets: llama-2-7b/13b/70b, gpt3-175b, tiny);
  * `profile_layers.profile_torch_layers(layers, ...)` runs a list of torch modules on a torch device and
    records, per layer, the measured forward and backward time per micro-batch size under the device kind's
    name; such a profile is read back with `ModelSpec.from_dict` (no torch here).

Memory per parameter (mixed-precision Adam, `param_state_bytes`): weights `d` + gradients `d` + fp32 master
copy (only when d < 4) + Adam m and v in fp32 (8). For bf16 (d=2): 2 + 2 + 4 + 8 = 16 bytes; for fp32
(d=4): 4 + 4 + 0 + 8 = 16 bytes.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from hal.plan.limits import MAX_GLOBAL_BATCH, MAX_LAYERS, MAX_SEQ, check_number

__all__ = ["LayerSpec", "ModelSpec", "TransformerConfig", "TRANSFORMER_PRESETS", "transformer", "get_model",
           "param_state_bytes", "scale_measured"]


def param_state_bytes(dtype_bytes: int) -> int:
    """Bytes held per parameter by mixed-precision Adam: weights + grads + fp32 master (if needed) + m + v."""
    return 2 * dtype_bytes + (4 if dtype_bytes < 4 else 0) + 8


@dataclass
class LayerSpec:
    """One layer. Per-sample figures are for one sequence of the model's length.

    `measured[kind][mbs] = (forward_s, backward_s)` replaces the FLOPs-based time on that device kind;
    `measured_tp[kind][tp][mbs]` the same for this rank's shard on a tensor-parallel stage of `tp` devices of
    that kind, its all-reduces included (what replaces measured / tp + the ring's time where it is known);
    `measured_optimizer[kind]` the optimizer step time of this layer's parameters."""
    name: str
    kind: str                  # "embedding", "block", "head" or "module"
    params: int
    fwd_flops: float           # forward FLOPs per sample; backward counts `ModelSpec.bwd_factor` times this
    act_bytes: float           # bytes kept for the backward pass per sample
    out_bytes: float           # bytes of the output activation per sample (what the next stage receives)
    tp_comm_bytes: float = 0.0  # bytes all-reduced per sample in the forward pass under tensor parallelism
    tp_split: bool = True      # tensor parallelism splits it (False: it runs whole on every device of a tp stage)
    # What the memory-saving techniques change (Techniques; 0 / None: the technique saves nothing here):
    act_replicated_bytes: float = 0.0  # of act_bytes, what tensor parallelism alone leaves whole on every rank
    #                                    (norm and dropout activations); sequence parallelism splits it too
    act_selective_bytes: float = 0.0   # of act_bytes, what selective recomputation drops (attention scores)
    recompute_flops: float = 0.0       # forward FLOPs per sample selective recomputation repeats
    input_bytes: float | None = None   # what full recomputation keeps (the layer's input); None: act_bytes
    measured: dict[str, dict[int, tuple[float, float]]] = field(default_factory=dict)
    measured_optimizer: dict[str, float] = field(default_factory=dict)
    measured_tp: dict[str, dict[int, dict[int, tuple[float, float]]]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["measured"] = {k: {str(b): list(t) for b, t in v.items()} for k, v in self.measured.items()}
        d["measured_tp"] = {k: {str(tp): {str(b): list(t) for b, t in per.items()} for tp, per in v.items()}
                            for k, v in self.measured_tp.items()}
        if not d["measured_tp"]:
            del d["measured_tp"]
        return d

    @classmethod
    def from_dict(cls, d: Any, where: str = "layer") -> "LayerSpec":
        """Checks every field (type, finite, in range); raises ValueError naming the first bad one."""
        _object(d, where, {"name", "kind", "params", "fwd_flops", "act_bytes", "out_bytes"},
                {"tp_comm_bytes", "tp_split", "measured", "measured_optimizer", "act_replicated_bytes",
                 "act_selective_bytes", "recompute_flops", "input_bytes", "measured_tp"})
        for k in ("name", "kind"):
            if not isinstance(d[k], str):
                raise ValueError(f"{where}.{k}: expected str, got {d[k]!r}")
        _number(d["params"], f"{where}.params", 0, 1e15, integer=True)
        for k in ("fwd_flops", "act_bytes", "out_bytes", "tp_comm_bytes", "act_replicated_bytes",
                  "act_selective_bytes", "recompute_flops"):
            if k in d:
                _number(d[k], f"{where}.{k}", 0.0, 1e20)
        if d.get("input_bytes") is not None:
            _number(d["input_bytes"], f"{where}.input_bytes", 0.0, 1e20)
        if not isinstance(d.get("tp_split", True), bool):
            raise ValueError(f"{where}.tp_split: expected true or false, got {d['tp_split']!r}")
        measured = {kind: _times(per_mbs, f"{where}.measured.{kind}")
                    for kind, per_mbs in _object(d.get("measured", {}), f"{where}.measured").items()}
        measured_tp: dict[str, dict[int, dict[int, tuple[float, float]]]] = {}
        for kind, per_tp in _object(d.get("measured_tp", {}), f"{where}.measured_tp").items():
            out = measured_tp[kind] = {}
            for tp, per_mbs in _object(per_tp, f"{where}.measured_tp.{kind}").items():
                at = f"{where}.measured_tp.{kind}.{tp}"
                try:
                    degree = int(tp)
                except ValueError:
                    raise ValueError(f"{at}: expected a tensor-parallel degree, got {tp!r}") from None
                _number(degree, at, 2, 1 << 20, integer=True)
                out[degree] = _times(per_mbs, at)
        optimizer = _object(d.get("measured_optimizer", {}), f"{where}.measured_optimizer")
        for kind, t in optimizer.items():
            _number(t, f"{where}.measured_optimizer.{kind}", 0.0, 1e6)
        return cls(**{**d, "measured": measured, "measured_optimizer": dict(optimizer), "measured_tp": measured_tp})


def _times(per_mbs: Any, where: str) -> dict[int, tuple[float, float]]:
    """{micro-batch size: (forward_s, backward_s)} from its JSON form; raises ValueError naming a bad entry."""
    out = {}
    for b, t in _object(per_mbs, where).items():
        at = f"{where}.{b}"
        try:
            mbs = int(b)
        except ValueError:
            raise ValueError(f"{at}: expected a micro-batch size, got {b!r}") from None
        _number(mbs, at, 1, MAX_GLOBAL_BATCH, integer=True)
        if not isinstance(t, (list, tuple)) or len(t) != 2:
            raise ValueError(f"{at}: expected [forward_s, backward_s], got {t!r}")
        out[mbs] = (_number(t[0], at, 0.0, 1e6), _number(t[1], at, 0.0, 1e6))
    return out


@dataclass
class ModelSpec:
    name: str
    layers: list[LayerSpec]
    seq_len: int
    dtype_bytes: int = 2
    bwd_factor: float = 2.0    # backward FLOPs / forward FLOPs (no activation recomputation)

    @property
    def params(self) -> int:
        return sum(l.params for l in self.layers)

    @property
    def bytes_per_param(self) -> int:
        return param_state_bytes(self.dtype_bytes)

    def to_dict(self) -> dict:
        return {"name": self.name, "seq_len": self.seq_len, "dtype_bytes": self.dtype_bytes,
                "bwd_factor": self.bwd_factor, "layers": [l.to_dict() for l in self.layers]}

    def merge_measured(self, other: "ModelSpec") -> None:
        """Adds `other`'s per-kind layer and optimizer measurements (the same model, measured elsewhere)."""
        for a, b in zip(self.layers, other.layers):
            a.measured.update(b.measured)
            a.measured_optimizer.update(b.measured_optimizer)
            for kind, per_tp in b.measured_tp.items():
                a.measured_tp.setdefault(kind, {}).update(per_tp)

    @classmethod
    def from_dict(cls, d: Any) -> "ModelSpec":
        """Checks every field (type, finite, in range); raises ValueError naming the first bad one."""
        _object(d, "model", {"name", "layers", "seq_len"}, {"dtype_bytes", "bwd_factor"})
        if not isinstance(d["name"], str):
            raise ValueError(f"model.name: expected str, got {d['name']!r}")
        layers = d["layers"]
        if not isinstance(layers, list) or not 1 <= len(layers) <= MAX_LAYERS:
            raise ValueError(f"model.layers: expected a list of 1 to {MAX_LAYERS} layers")
        return cls(d["name"], [LayerSpec.from_dict(l, f"model.layers[{i}]") for i, l in enumerate(layers)],
                   _number(d["seq_len"], "model.seq_len", 1, MAX_SEQ, integer=True),
                   _number(d.get("dtype_bytes", 2), "model.dtype_bytes", 1, 8, integer=True),
                   _number(d.get("bwd_factor", 2.0), "model.bwd_factor", 0.0, 100.0, lo_open=True))


def _object(d: Any, where: str, required: set[str] = frozenset(), optional: set[str] | None = None) -> dict:
    """`d` if it is a JSON object with every `required` key and (unless `optional` is None) no other keys than
    `required | optional`."""
    if not isinstance(d, dict):
        raise ValueError(f"{where}: expected an object, got {type(d).__name__}")
    if optional is not None:
        for k in d:
            if k not in required | optional:
                raise ValueError(f"{where}.{k}: unknown field (allowed: {', '.join(sorted(required | optional))})")
    for k in sorted(required):
        if k not in d:
            raise ValueError(f"{where}.{k}: required field is missing")
    return d


def _number(v: Any, where: str, lo: float, hi: float, **kw) -> Any:
    try:
        return check_number(v, lo, hi, **kw)
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None


@dataclass(frozen=True)
class TransformerConfig:
    name: str
    layers: int
    hidden: int
    heads: int
    ffn: int
    vocab: int
    seq: int
    kv_heads: int = 0          # 0: same as heads (no grouped-query attention)
    gated_mlp: bool = True     # SwiGLU (three matrices) vs GELU (two)
    dtype_bytes: int = 2
    flash_attention: bool = True


TRANSFORMER_PRESETS: dict[str, TransformerConfig] = {c.name: c for c in [
    TransformerConfig("llama-2-7b", 32, 4096, 32, 11008, 32000, 4096),
    TransformerConfig("llama-2-13b", 40, 5120, 40, 13824, 32000, 4096),
    TransformerConfig("llama-2-70b", 80, 8192, 64, 28672, 32000, 4096, kv_heads=8),
    TransformerConfig("gpt3-175b", 96, 12288, 96, 49152, 50257, 2048, gated_mlp=False),
    TransformerConfig("tiny", 4, 64, 4, 256, 512, 32),
]}


def transformer(cfg: TransformerConfig, seq: int | None = None) -> ModelSpec:
    """Analytic figures for embedding + `layers` blocks + final norm and LM head (untied).

    FLOPs count 2 per multiply-add; attention scores count the full s x s product (causal masking is not
    credited). Activations kept per block (elements, times dtype bytes): norm1 input, q/k/v, attention output,
    norm2 input, MLP input (7sh for MHA) plus 3sf (SwiGLU) or 2sf (GELU); without flash attention add the
    2 a s^2 scores and probabilities. The head keeps fp32 logits (4 s V bytes) for the loss.
    For the techniques: tensor parallelism without sequence parallelism leaves the two norm inputs and the MLP
    input (3sh) whole on every rank; selective recomputation drops the scores and probabilities (none with
    flash attention, which recomputes them itself) and repeats the 4 s^2 h FLOPs of QK^T and AV; full
    recomputation keeps a block's (and the head's) input, sh.
    `seq` (default: the config's) must be an int in [1, MAX_SEQ]."""
    s = cfg.seq if seq is None else _number(seq, "sequence length", 1, MAX_SEQ, integer=True)
    h, f, V, d = cfg.hidden, cfg.ffn, cfg.vocab, cfg.dtype_bytes
    kv = cfg.kv_heads or cfg.heads
    h_kv = h * kv // cfg.heads
    attn_params = 2 * h * h + 2 * h * h_kv
    mlp_params = (3 if cfg.gated_mlp else 2) * h * f
    block_params = attn_params + mlp_params + 2 * h
    block_flops = 2 * s * (attn_params + mlp_params) + 4 * s * s * h
    block_act = (s * (4 * h + h + 2 * h_kv) + (3 if cfg.gated_mlp else 2) * s * f) * d
    if not cfg.flash_attention:
        block_act += 2 * cfg.heads * s * s * d
    layers = [LayerSpec("embedding", "embedding", V * h, 0.0, 8.0 * s, s * h * d, s * h * d)]
    scores = 0.0 if cfg.flash_attention else 2 * cfg.heads * s * s * d
    layers += [LayerSpec(f"block{i}", "block", block_params, float(block_flops), float(block_act), s * h * d,
                         2 * s * h * d, act_replicated_bytes=3 * s * h * d, act_selective_bytes=float(scores),
                         recompute_flops=0.0 if cfg.flash_attention else 4.0 * s * s * h, input_bytes=s * h * d)
               for i in range(cfg.layers)]
    layers.append(LayerSpec("head", "head", V * h + h, 2.0 * s * h * V, s * h * d + 4.0 * s * V, 0.0, 0.0,
                            input_bytes=s * h * d))
    return ModelSpec(cfg.name if seq is None or seq == cfg.seq else f"{cfg.name}@{s}", layers, s, d)


def get_model(name: str, seq: int | None = None) -> ModelSpec:
    if name not in TRANSFORMER_PRESETS:
        raise KeyError(f"unknown model {name!r} (known: {', '.join(TRANSFORMER_PRESETS)})")
    return transformer(TRANSFORMER_PRESETS[name], seq)


def scale_measured(times: dict[int, tuple[float, float]], mbs: int) -> tuple[float, float] | None:
    """The measured (fwd, bwd) at `mbs`, or scaled linearly from the nearest measured size."""
    if not times:
        return None
    if mbs in times:
        return times[mbs]
    near = min(times, key=lambda b: (abs(math.log(b / mbs)), b))
    f, b = times[near]
    return f * mbs / near, b * mbs / near
