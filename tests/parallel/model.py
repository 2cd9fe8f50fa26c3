"""The small model and data the runtime's tests train: a chain of 4 layers (2 of them shardable), MSE on a fixed
random map."""
from __future__ import annotations

import torch
from torch import nn

FEATURES, HIDDEN, OUTPUTS, N_LAYERS = 8, 16, 4, 4


class MLP(nn.Module):
    """tanh, up to 2 x HIDDEN, tanh, down, plus the input: shardable (up by column, down by row, both with
    biases: a column shard's bias is split with it, a row map's bias stays whole)."""

    def __init__(self):
        super().__init__()
        self.up, self.down = nn.Linear(HIDDEN, 2 * HIDDEN), nn.Linear(2 * HIDDEN, HIDDEN)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.down(torch.tanh(self.up(torch.tanh(x))))

    def tensor_parallel(self, tp) -> None:
        self.up, self.down = tp.column(self.up), tp.row(self.down)


def layers() -> list[nn.Module]:
    """Layers 1 and 2 shard under tensor parallelism; 0 and 3 stay whole on every rank of a stage."""
    return [nn.Linear(FEATURES, HIDDEN), MLP(), MLP(), nn.Sequential(nn.Tanh(), nn.Linear(HIDDEN, OUTPUTS))]


def batch(step: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1000 + step)
    x = torch.randn(size, FEATURES, generator=g)
    w = torch.randn(FEATURES, OUTPUTS, generator=torch.Generator().manual_seed(7))
    return x, torch.tanh(x @ w) + 0.1 * torch.randn(size, OUTPUTS, generator=g)


def loss_fn(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return nn.functional.mse_loss(out, target)


def optimizer(params) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=0.01)


def reference(steps: int, size: int, seed: int = 0) -> tuple[list[nn.Module], list[float], list[list[torch.Tensor]]]:
    """One process, the full batch: the model after `steps` steps, the losses, each step's gradients."""
    torch.manual_seed(seed)
    ls = layers()
    model = nn.Sequential(*ls)
    opt = optimizer(list(model.parameters()))
    losses, grads = [], []
    for s in range(steps):
        x, y = batch(s, size)
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        grads.append([p.grad.clone() for p in model.parameters()])
        opt.step()
        losses.append(loss.item())
    return ls, losses, grads
