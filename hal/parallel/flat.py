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

`pad` lays out runs of parameters (a bucket) so that their span's length is a multiple of a number: ZeRO-1
(zero.py) cuts a bucket's span into equal shards, one per replica. The padding is zeros that no parameter
views; its gradients stay zero, so an element-wise optimizer leaves it zero.
"""
from __future__ import annotations

import inspect
from typing import Callable

import torch
from torch import nn

__all__ = ["FlatParams", "ELEMENTWISE", "same_optimizer"]

# Optimizers whose update of an element depends on that element (its parameter, gradient and state) only, with
# hyper-parameters of the group: stepping the flat buffer equals stepping each parameter.
ELEMENTWISE = (torch.optim.Adam, torch.optim.AdamW, torch.optim.SGD)


class FlatParams:
    def __init__(self, params: list[nn.Parameter], pad: list[tuple[list[nn.Parameter], int]] | None = None):
        """`pad`: [(bucket, multiple)]: each bucket, parameters one after the other in `params`, gets a span
        whose length is a multiple of `multiple` (zeros after its last parameter); `span_of(bucket)` says where."""
        self.params = params
        self.offsets: dict[int, tuple[int, int]] = {}
        ends = {id(b[-1]): (id(b[0]), len(b), m) for b, m in (pad or []) if b}
        self.spans: dict[tuple[int, ...], tuple[int, int]] = {}  # padded buckets: (ids) -> [start, end)
        at = 0
        for i, p in enumerate(params):
            self.offsets[id(p)] = (at, at + p.numel())
            at += p.numel()
            if id(p) in ends:
                first, n, m = ends[id(p)]
                bucket = params[i - n + 1:i + 1]
                if len(bucket) != n or id(bucket[0]) != first:
                    raise ValueError("FlatParams: a bucket to pad is not a run of consecutive parameters")
                start = self.offsets[first][0]
                at = start + -(-(at - start) // m) * m
                self.spans[tuple(id(q) for q in bucket)] = (start, at)
        self.numel = at
        self.ok = bool(params) and len({(p.dtype, p.device) for p in params}) == 1
        if not self.ok:  # several dtypes or devices (or none): left as they are
            self.flat = self.grads = None
            return
        dev, dt = params[0].device, params[0].dtype
        self.flat = nn.Parameter(torch.zeros(at, dtype=dt, device=dev) if self.spans else
                                 torch.empty(at, dtype=dt, device=dev))
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

    def span_of(self, params: list[nn.Parameter]) -> tuple[int, int] | None:
        """[start, end) of `params` in the buffers, their padding included (a bucket given to `pad`), when they
        lie there one after the other."""
        if tuple(id(p) for p in params) in self.spans:
            return self.spans[tuple(id(p) for p in params)]
        part = self.slice_of(params)
        if part is None:
            return None
        start = self.offsets[id(params[0])][0]
        return start, start + part.numel()

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
        flat = same_optimizer(opt, self.flat)
        return (flat, True) if flat is not None else (opt, False)

    def optimizer_state(self, opt: torch.optim.Optimizer, p: nn.Parameter) -> dict:
        """`p`'s part of the flat buffer's optimizer state: {key: tensor of p's shape, or the shared scalar}."""
        return self.cut_state(opt.state.get(self.flat) or {}, p)

    def cut_state(self, state: dict, p: nn.Parameter) -> dict:
        """`p`'s part of a state of the whole buffer ({key: tensor of `numel` elements, or a scalar})."""
        if not state:
            return {}
        a, b = self.offsets[id(p)]
        return {k: (v[a:b].view_as(p) if torch.is_tensor(v) and v.dim() > 0 else v) for k, v in state.items()}

    def load_optimizer_state(self, opt: torch.optim.Optimizer, per_param: dict[int, dict]) -> None:
        """Sets the flat buffer's state from {id(p): p's state}; a parameter without state gets zeros."""
        state = self.assemble_state(per_param, self.flat.device)
        if state:
            opt.state[self.flat] = state

    def assemble_state(self, per_param: dict[int, dict], device: torch.device | str) -> dict:
        """The whole buffer's state ({key: tensor of `numel` elements on `device`, or the shared scalar}) from
        {id(p): p's state}: zeros for a parameter without state (and for the padding); {} when none has any."""
        keys: dict[str, object] = {}
        for st in per_param.values():
            for k, v in st.items():
                keys.setdefault(k, v)
        state: dict = {}
        for k, v in keys.items():
            if torch.is_tensor(v) and v.dim() > 0:
                full = torch.zeros(self.numel, dtype=v.dtype, device=device)
                for p in self.params:
                    part = per_param.get(id(p), {}).get(k)
                    if part is not None:
                        a, b = self.offsets[id(p)]
                        full[a:b].copy_(part.reshape(-1))
                state[k] = full
            else:
                state[k] = v.clone() if torch.is_tensor(v) else v
        return state


def same_optimizer(opt: torch.optim.Optimizer, tensor: torch.Tensor) -> torch.optim.Optimizer | None:
    """An optimizer of `opt`'s class and (one) group's hyper-parameters over the one tensor `tensor`, or None
    when its group cannot be made the same."""
    group = {k: v for k, v in opt.param_groups[0].items() if k != "params"}
    takes = inspect.signature(type(opt).__init__).parameters
    new = type(opt)([tensor], **{k: v for k, v in group.items() if k in takes})
    # Keys the constructor does not take are the class's own (AdamW's decoupled_weight_decay) or were added
    # later (a scheduler's initial_lr): the new optimizer must end up with the same group, or it is not used.
    same = {k: v for k, v in new.param_groups[0].items() if k != "params"}
    if any(k not in same or not _equal(same[k], v) for k, v in group.items()):
        return None
    return new


def _equal(a, b) -> bool:
    if torch.is_tensor(a) or torch.is_tensor(b):
        return torch.is_tensor(a) and torch.is_tensor(b) and a.shape == b.shape and bool(torch.equal(a.cpu(), b.cpu()))
    return a == b
