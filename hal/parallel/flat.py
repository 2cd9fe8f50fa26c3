"""One buffer for a stage's parameters and one for their gradients (as Megatron's and DDP's buckets do).

Every parameter of the stage becomes a view into `params`, and its `.grad` a view into `grads`, in the
stage's parameter order (layer by layer): autograd accumulates into the views in place, the gradient sums
all-reduce a layer's slice of `grads` where it lies (no concatenation, no copy back), zeroing is one fill, and
an element-wise optimizer (Adam, AdamW, SGD) of one parameter group steps the whole stage as one tensor: a
handful of kernels per step instead of a handful per parameter. On a device where every kernel launch costs
time (an emulated device, a plugin behind a CPU fallback, a GPU with small layers), that is most of the
optimizer's time.

The optimizer's state of a flat buffer is one tensor per key; `optimizer_state` / `load_optimizer_state` cut
it into (and assemble it from) each parameter's part, so checkpoints stay per parameter and device-neutral.
"""
from __future__ import annotations

import inspect
from typing import Callable

import torch
from torch import nn

__all__ = ["FlatParams", "ELEMENTWISE"]

# Optimizers whose update of an element depends on that element (its parameter, gradient and state) only, with
# hyper-parameters of the group: stepping the flat buffer equals stepping each parameter.
ELEMENTWISE = (torch.optim.Adam, torch.optim.AdamW, torch.optim.SGD)


class FlatParams:
    def __init__(self, params: list[nn.Parameter]):
        self.params = params
        self.offsets: dict[int, tuple[int, int]] = {}
        at = 0
        for p in params:
            self.offsets[id(p)] = (at, at + p.numel())
            at += p.numel()
        self.numel = at
        self.ok = bool(params) and len({(p.dtype, p.device) for p in params}) == 1
        if not self.ok:  # several dtypes or devices (or none): left as they are
            self.flat = self.grads = None
            return
        dev, dt = params[0].device, params[0].dtype
        self.flat = nn.Parameter(torch.empty(at, dtype=dt, device=dev))
        self.grads = torch.zeros(at, dtype=dt, device=dev)
        with torch.no_grad():
            for p in params:
                a, b = self.offsets[id(p)]
                self.flat[a:b].copy_(p.detach().reshape(-1))
                p.data = self.flat.data[a:b].view_as(p)
                p.grad = self.grads[a:b].view_as(p)
        self.flat.grad = self.grads

    def slice_of(self, params: list[nn.Parameter]) -> torch.Tensor | None:
        """The part of `grads` holding `params`' gradients, when they lie there one after the other."""
        if not self.ok or not params:
            return None
        spans = [self.offsets.get(id(p)) for p in params]
        if any(s is None for s in spans) or any(spans[i][1] != spans[i + 1][0] for i in range(len(spans) - 1)):
            return None
        return self.grads[spans[0][0]:spans[-1][1]]

    def zero_grad(self) -> None:
        if self.ok:
            self.grads.zero_()
            base, size = self.grads.data_ptr(), self.grads.element_size()
            for p in self.params:  # one that lost its view (set to None, replaced) gets it back
                a, b = self.offsets[id(p)]
                if p.grad is None or p.grad.data_ptr() != base + a * size:
                    p.grad = self.grads[a:b].view_as(p)

    # --- the optimizer ------------------------------------------------------------------------------------
    def optimizer(self, optimizer_fn: Callable[[list[nn.Parameter]], torch.optim.Optimizer]) -> tuple[
            torch.optim.Optimizer, bool]:
        """`optimizer_fn`'s optimizer over the flat buffer when it is element-wise with one group (returns it and
        True); otherwise its optimizer over the parameters, as given (and False)."""
        opt = optimizer_fn(self.params)
        if not self.ok or type(opt) not in ELEMENTWISE or len(opt.param_groups) != 1:
            return opt, False
        group = {k: v for k, v in opt.param_groups[0].items() if k != "params"}
        takes = inspect.signature(type(opt).__init__).parameters
        flat = type(opt)([self.flat], **{k: v for k, v in group.items() if k in takes})
        # Keys the constructor does not take are the class's own (AdamW's decoupled_weight_decay) or were added
        # later (a scheduler's initial_lr): the flat optimizer must end up with the same group, or it is not used.
        same = {k: v for k, v in flat.param_groups[0].items() if k != "params"}
        if any(k not in same or not _equal(same[k], v) for k, v in group.items()):
            return opt, False
        return flat, True

    def optimizer_state(self, opt: torch.optim.Optimizer, p: nn.Parameter) -> dict:
        """`p`'s part of the flat buffer's optimizer state: {key: tensor of p's shape, or the shared scalar}."""
        st = opt.state.get(self.flat)
        if not st:
            return {}
        a, b = self.offsets[id(p)]
        return {k: (v[a:b].view_as(p) if torch.is_tensor(v) and v.dim() > 0 else v) for k, v in st.items()}

    def load_optimizer_state(self, opt: torch.optim.Optimizer, per_param: dict[int, dict]) -> None:
        """Sets the flat buffer's state from {id(p): p's state}; a parameter without state gets zeros."""
        keys: dict[str, object] = {}
        for st in per_param.values():
            for k, v in st.items():
                keys.setdefault(k, v)
        if not keys:
            return
        state: dict = {}
        for k, v in keys.items():
            if torch.is_tensor(v) and v.dim() > 0:
                full = torch.zeros(self.numel, dtype=v.dtype, device=self.flat.device)
                for p in self.params:
                    part = per_param.get(id(p), {}).get(k)
                    if part is not None:
                        a, b = self.offsets[id(p)]
                        full[a:b].copy_(part.reshape(-1))
                state[k] = full
            else:
                state[k] = v.clone() if torch.is_tensor(v) else v
        opt.state[self.flat] = state


def _equal(a, b) -> bool:
    if torch.is_tensor(a) or torch.is_tensor(b):
        return torch.is_tensor(a) and torch.is_tensor(b) and a.shape == b.shape and bool(torch.equal(a.cpu(), b.cpu()))
    return a == b
