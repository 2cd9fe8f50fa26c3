"""The demo's model: a small GPT (token and position embeddings, pre-norm causal blocks, a head) as a chain of
layers, the form the planner profiles and the runtime splits into pipeline stages."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from hal.plan.model import TransformerConfig
from hal.plan.torch_model import Block, Head

__all__ = ["GPTConfig", "CONFIGS", "Embedding", "build_layers", "loss_fn", "profile_loss"]


@dataclass(frozen=True)
class GPTConfig:
    name: str
    layers: int
    hidden: int
    heads: int
    seq: int
    vocab: int = 65

    def transformer(self) -> TransformerConfig:
        return TransformerConfig(self.name, layers=self.layers, hidden=self.hidden, heads=self.heads,
                                 ffn=4 * self.hidden, vocab=self.vocab, seq=self.seq, gated_mlp=False, dtype_bytes=4)


CONFIGS = {
    "tiny": GPTConfig("gpt-tiny", layers=2, hidden=64, heads=2, seq=32),     # tests
    "small": GPTConfig("gpt-small", layers=4, hidden=128, heads=4, seq=64),  # the demo
}


class Embedding(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.tok = nn.Embedding(cfg.vocab, cfg.hidden)
        self.pos = nn.Embedding(cfg.seq, cfg.hidden)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.tok(tokens) + self.pos(torch.arange(tokens.shape[1], device=tokens.device))


def build_layers(cfg: GPTConfig) -> list[nn.Module]:
    t = cfg.transformer()
    return [Embedding(t), *(Block(t) for _ in range(cfg.layers)), Head(t)]


def loss_fn(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Next-character cross-entropy, mean over the micro-batch's characters."""
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())


def profile_loss(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """The same cost as `loss_fn`, for the profiler (which passes the first layer's input, not targets)."""
    return F.cross_entropy(logits.flatten(0, 1).float(), tokens.flatten())
