"""The model as the planner sees it: a chain of layers, each with FLOPs, bytes and (when measured) times.

Two sources:
  * `transformer(config)` computes every figure analytically for a decoder-only transformer without running
    it (presets: llama-2-7b/13b/70b, gpt3-175b, tiny);
  * `profile_torch_layers(layers, ...)` runs a list of torch modules on a torch device and records, per layer,
    the measured forward and backward time per micro-batch size under the device kind's name (torch is
    imported only there).

Memory per parameter (mixed-precision Adam, `param_state_bytes`): weights `d` + gradients `d` + fp32 master
copy (only when d < 4) + Adam m and v in fp32 (8). For bf16 (d=2): 2 + 2 + 4 + 8 = 16 bytes; for fp32
(d=4): 4 + 4 + 0 + 8 = 16 bytes.
"""
from __future__ import annotations

import math
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

__all__ = ["LayerSpec", "ModelSpec", "TransformerConfig", "TRANSFORMER_PRESETS", "transformer", "get_model",
           "param_state_bytes", "profile_torch_layers"]


def param_state_bytes(dtype_bytes: int) -> int:
    """Bytes held per parameter by mixed-precision Adam: weights + grads + fp32 master (if needed) + m + v."""
    return 2 * dtype_bytes + (4 if dtype_bytes < 4 else 0) + 8


@dataclass
class LayerSpec:
    """One layer. Per-sample figures are for one sequence of the model's length.

    `measured[kind][mbs] = (forward_s, backward_s)` replaces the FLOPs-based time on that device kind;
    `measured_optimizer[kind]` the optimizer step time of this layer's parameters."""
    name: str
    kind: str                  # "embedding", "block", "head" or "module"
    params: int
    fwd_flops: float           # forward FLOPs per sample; backward counts `ModelSpec.bwd_factor` times this
    act_bytes: float           # bytes kept for the backward pass per sample
    out_bytes: float           # bytes of the output activation per sample (what the next stage receives)
    tp_comm_bytes: float = 0.0  # bytes all-reduced per sample in the forward pass under tensor parallelism
    measured: dict[str, dict[int, tuple[float, float]]] = field(default_factory=dict)
    measured_optimizer: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["measured"] = {k: {str(b): list(t) for b, t in v.items()} for k, v in self.measured.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "LayerSpec":
        d = dict(d)
        d["measured"] = {k: {int(b): tuple(t) for b, t in v.items()} for k, v in d.get("measured", {}).items()}
        return cls(**d)


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

    @classmethod
    def from_dict(cls, d: dict) -> "ModelSpec":
        return cls(d["name"], [LayerSpec.from_dict(l) for l in d["layers"]], d["seq_len"], d.get("dtype_bytes", 2),
                   d.get("bwd_factor", 2.0))


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
    2 a s^2 scores and probabilities. The head keeps fp32 logits (4 s V bytes) for the loss."""
    s = seq or cfg.seq
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
    layers += [LayerSpec(f"block{i}", "block", block_params, float(block_flops), float(block_act), s * h * d,
                         2 * s * h * d) for i in range(cfg.layers)]
    layers.append(LayerSpec("head", "head", V * h + h, 2.0 * s * h * V, s * h * d + 4.0 * s * V, 0.0, 0.0))
    return ModelSpec(cfg.name if seq is None or seq == cfg.seq else f"{cfg.name}@{s}", layers, s, d)


def get_model(name: str, seq: int | None = None) -> ModelSpec:
    if name not in TRANSFORMER_PRESETS:
        raise KeyError(f"unknown model {name!r} (known: {', '.join(TRANSFORMER_PRESETS)})")
    return transformer(TRANSFORMER_PRESETS[name], seq)


# --- measured profiles (torch, imported lazily) ----------------------------------------------------------------
def _best_time(fn: Callable[[], Any], sync: Callable[[], None], repeats: int, stat: str = "min") -> float:
    """Fastest of `repeats` runs (contention from other work on the host only ever adds time), or their median
    (`stat="median"`: what a wall-clock step, itself a median, sees)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return min(times) if stat == "min" else sorted(times)[(len(times) - 1) // 2]


def profile_torch_layers(layers: Sequence[Any], make_input: Callable[[int], Any], *, device: str = "cpu",
                         kind: str = "cpu", micro_batches: Sequence[int] = (1,), seq_len: int = 1,
                         name: str = "module", repeats: int = 5, warmup: int = 2,
                         optimizer: Callable[[Any], Any] | None = None,
                         loss_fn: Callable[[Any, Any], Any] | None = None, stat: str = "min") -> ModelSpec:
    """Runs each layer of a chain of torch modules forward and backward on `device`, per micro-batch size.

    `make_input(mbs)` returns the first layer's input for `mbs` samples; each next layer gets the previous
    output. Records parameters, forward FLOPs (torch's FlopCounterMode), bytes saved for backward (saved-tensor
    hooks), output bytes and forward/backward times (fastest of `repeats`, autograd on, as in training) under
    `kind`. With `loss_fn(output, first_input)`, the last layer's times include the loss. With `optimizer`
    (e.g. `lambda params: torch.optim.Adam(params)`), also the optimizer step time per layer. `stat`: "min"
    (fastest of `repeats`) or "median"."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from hal.plan.profile_devices import device_synchronizer

    dev = torch.device(device)
    sync = device_synchronizer(device)
    specs: list[LayerSpec] = []
    mods = [m.to(dev) for m in layers]
    per_mbs: dict[int, list[tuple[float, float]]] = {}
    static: list[tuple[int, float, float, float]] = []
    for mbs in micro_batches:
        x = make_input(mbs)
        x = x.to(dev) if isinstance(x, torch.Tensor) else x
        x0 = x
        times = []
        for li, m in enumerate(mods):
            inp = x.detach().requires_grad_(x.is_floating_point()) if isinstance(x, torch.Tensor) else x
            saved = [0]

            def pack(t, saved=saved):
                saved[0] += t.numel() * t.element_size()
                return t

            last = loss_fn is not None and li == len(mods) - 1

            def run(m=m, inp=inp, last=last):
                o = m(inp)
                return loss_fn(o, x0) if last else o

            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                out = m(inp)
                if last:
                    loss_fn(out, x0)
            grad = None if last else torch.ones_like(out) / out.numel()

            def fwd(run=run):
                run()

            def fwd_bwd(run=run, grad=grad):
                run().backward(grad)

            for _ in range(warmup):
                fwd_bwd()
            if stat == "min":
                t_f = _best_time(fwd, sync, repeats)
                t_fb = _best_time(fwd_bwd, sync, repeats)
                times.append((t_f, max(t_fb - t_f, 0.0)))
            else:  # paired runs: a burst of load on the host hits the forward and the backward figure alike
                pairs = [(_best_time(fwd, sync, 1), _best_time(fwd_bwd, sync, 1)) for _ in range(repeats)]
                t_f = statistics.median(f for f, _ in pairs)
                t_b = statistics.median(max(fb - f, 0.0) for f, fb in pairs)
                times.append((t_f, t_b))
            if mbs == micro_batches[0]:
                with FlopCounterMode(display=False) as fc:
                    with torch.no_grad():
                        m(inp)
                params = sum(p.numel() for p in m.parameters())
                static.append((params, fc.get_total_flops() / mbs, saved[0] / mbs,
                               out.numel() * out.element_size() / mbs))
            x = out.detach()
        per_mbs[mbs] = times
    dtype_bytes = 4
    for li, m in enumerate(mods):
        params, flops, act, outb = static[li]
        spec = LayerSpec(f"layer{li}", "module", params, float(flops), float(act),
                         float(outb) if li < len(mods) - 1 else 0.0)
        spec.measured[kind] = {mbs: per_mbs[mbs][li] for mbs in micro_batches}
        ps = [p for p in m.parameters()]
        if ps:
            dtype_bytes = ps[0].element_size()
        if optimizer is not None and ps:
            for p in ps:
                p.grad = torch.zeros_like(p)
            opt = optimizer(ps)
            for _ in range(warmup):
                opt.step()
            spec.measured_optimizer[kind] = _best_time(opt.step, sync, repeats, stat)
            opt.zero_grad(set_to_none=True)
        specs.append(spec)
    return ModelSpec(name, specs, seq_len, dtype_bytes)


def scale_measured(times: dict[int, tuple[float, float]], mbs: int) -> tuple[float, float] | None:
    """The measured (fwd, bwd) at `mbs`, or scaled linearly from the nearest measured size."""
    if not times:
        return None
    if mbs in times:
        return times[mbs]
    near = min(times, key=lambda b: (abs(math.log(b / mbs)), b))
    f, b = times[near]
    return f * mbs / near, b * mbs / near
