"""The small model and data the runtime's tests train: a chain of 4 layers, MSE on a fixed random map."""
from __future__ import annotations

import torch
from torch import nn

FEATURES, HIDDEN, OUTPUTS, N_LAYERS = 8, 16, 4, 4


def layers() -> list[nn.Module]:
    return [nn.Linear(FEATURES, HIDDEN), nn.Sequential(nn.Tanh(), nn.Linear(HIDDEN, HIDDEN)),
            nn.Sequential(nn.Tanh(), nn.Linear(HIDDEN, HIDDEN)), nn.Sequential(nn.Tanh(), nn.Linear(HIDDEN, OUTPUTS))]


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
