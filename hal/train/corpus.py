"""The demo's text: Shakespeare, character by character (hal/train/data/, public domain).

Batches are a pure function of (seed, step): every rank of a job draws the same global batch for a step
without talking to the others, and a job resumed from a checkpoint at step k draws exactly the batches it would
have drawn. The last tenth of the text is held out (`split="val"`).
"""
from __future__ import annotations

from pathlib import Path

import torch

__all__ = ["Corpus", "DEFAULT_PATH"]

DEFAULT_PATH = Path(__file__).resolve().parent / "data" / "tinyshakespeare.txt"


class Corpus:
    def __init__(self, path: str | Path = DEFAULT_PATH, seed: int = 0):
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise ValueError(f"corpus {path}: cannot be read as UTF-8 text: {e}") from None
        if len(text) < 1000:
            raise ValueError(f"corpus {path}: {len(text)} characters; a corpus needs at least 1000")
        self.path, self.seed = path, seed
        self.chars = sorted(set(text))
        self._index = {c: i for i, c in enumerate(self.chars)}
        data = torch.tensor([self._index[c] for c in text], dtype=torch.int64)
        cut = int(len(data) * 0.9)
        self.splits = {"train": data[:cut], "val": data[cut:]}

    @property
    def vocab(self) -> int:
        return len(self.chars)

    def encode(self, s: str) -> torch.Tensor:
        return torch.tensor([self._index[c] for c in s], dtype=torch.int64)

    def decode(self, ids) -> str:
        return "".join(self.chars[int(i)] for i in ids)

    def batch(self, step: int, size: int, seq: int, split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs, targets) of `size` windows of `seq` characters; targets are the inputs shifted by one."""
        data = self.splits[split]
        if seq + 1 >= len(data):
            raise ValueError(f"sequence length {seq}: longer than the {split} text ({len(data)} characters)")
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + step * 2 + (split == "val"))
        starts = torch.randint(0, len(data) - seq - 1, (size,), generator=g)
        rows = starts[:, None] + torch.arange(seq + 1)
        windows = data[rows]
        return windows[:, :-1].contiguous(), windows[:, 1:].contiguous()
