"""A small decoder-only transformer as a chain of torch modules (embedding, blocks, head): what the executor
runs and the model profiler measures. Imports torch at module import: never imported by the planner core."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hal.plan.model import TransformerConfig

__all__ = ["Embedding", "Block", "Head", "build_layers", "make_tokens", "make_pattern_tokens", "lm_loss"]


class Embedding(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.tok = nn.Embedding(cfg.vocab, cfg.hidden)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.tok(tokens)


class Block(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        h = cfg.hidden
        self.heads, self.head_dim = cfg.heads, h // cfg.heads
        self.norm1, self.norm2 = nn.LayerNorm(h), nn.LayerNorm(h)
        self.qkv = nn.Linear(h, 3 * h, bias=False)
        self.proj = nn.Linear(h, h, bias=False)
        self.up = nn.Linear(h, cfg.ffn, bias=False)
        self.down = nn.Linear(cfg.ffn, h, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, h = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, s, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, s, -1)
        x = x + self.proj(a)
        return x + self.down(F.gelu(self.up(self.norm2(x))))

    def tensor_parallel(self, tp) -> None:
        """Megatron's split over `tp` (hal.parallel.tensor_parallel.TensorParallel): attention by heads (the
        query/key/value projection by column, inside its [3, heads, head_dim, hidden] layout; the output
        projection by row), the MLP by its hidden features (up by column, down by row)."""
        if self.heads % tp.size:
            raise ValueError(f"tensor parallelism {tp.size}: a block's {self.heads} attention heads do not split "
                             f"in {tp.size} equal parts")
        h = self.qkv.in_features
        self.qkv = tp.column(self.qkv, view=(3, self.heads, self.head_dim, h), dim=1)
        self.proj = tp.row(self.proj)
        self.up, self.down = tp.column(self.up), tp.row(self.down)
        self.heads //= tp.size


class Head(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.norm = nn.LayerNorm(cfg.hidden)
        self.out = nn.Linear(cfg.hidden, cfg.vocab, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.norm(x))


def build_layers(cfg: TransformerConfig, seed: int = 0) -> list[nn.Module]:
    torch.manual_seed(seed)
    return [Embedding(cfg), *(Block(cfg) for _ in range(cfg.layers)), Head(cfg)]


def make_tokens(cfg: TransformerConfig, n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, cfg.vocab, (n, cfg.seq), generator=g)


def lm_loss(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy (the last position predicts the first: a synthetic task)."""
    return F.cross_entropy(logits.flatten(0, 1).float(), tokens.roll(-1, dims=1).flatten())


def make_pattern_tokens(cfg: TransformerConfig, n: int, seed: int = 0, strides: int = 4) -> torch.Tensor:
    """A learnable synthetic task: each sequence counts up from a random start by a random stride (1..strides),
    modulo the vocabulary, so the next token follows from the previous two. Loss falls within a few steps."""
    g = torch.Generator().manual_seed(seed)
    start = torch.randint(0, cfg.vocab, (n, 1), generator=g)
    stride = torch.randint(1, strides + 1, (n, 1), generator=g)
    return (start + stride * torch.arange(cfg.seq)) % cfg.vocab
