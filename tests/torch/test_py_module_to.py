"""Module conversions to, from and on hal devices keep Parameter objects, as they do on CPU and CUDA."""
from __future__ import annotations

import warnings
import weakref

import pytest
import torch
from torch import nn


class TiedLM(nn.Module):
    """An embedding and an output layer sharing one weight (as language models tie them)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(7, 4)
        self.norm = nn.BatchNorm1d(4)
        self.out = nn.Linear(4, 7, bias=False)
        self.out.weight = self.emb.weight

    def forward(self, x):
        return self.out(self.norm(self.emb(x)))


def test_to_hal_and_back_keeps_parameter_objects(dev):
    m = TiedLM()
    params = list(m.parameters())
    m.emb.weight.tag = "kept"  # attributes and class stay with the object
    m.to(dev)
    assert list(m.parameters()) == params and all(p is q for p, q in zip(m.parameters(), params))
    assert all(p.device == dev for p in params) and m.norm.running_mean.device == dev
    assert m.out.weight is m.emb.weight and m.emb.weight.tag == "kept" and type(m.emb.weight) is nn.Parameter
    m.half()
    assert all(p is q for p, q in zip(m.parameters(), params)) and params[0].dtype == torch.float16
    m.to(torch.float32).cpu()
    assert all(p is q for p, q in zip(m.parameters(), params))
    assert all(p.device.type == "cpu" and p.dtype == torch.float32 for p in params)
    m.hal(dev.index)
    assert all(p is q for p, q in zip(m.parameters(), params)) and params[0].device == dev
    assert m.out.weight is m.emb.weight


def test_grad_moves_with_the_parameter(dev):
    m = nn.Linear(3, 2)
    m(torch.randn(4, 3)).sum().backward()
    grad = m.weight.grad.clone()
    w = m.weight
    m.to(dev)
    assert w.grad.device == dev and torch.equal(w.grad.cpu(), grad)
    m.cpu()
    assert w.grad.device.type == "cpu" and torch.equal(w.grad, grad)


def test_optimizer_built_before_to_trains_the_moved_model(dev):
    def train(device, build_optimizer_first):
        m = TiedLM()
        opt = torch.optim.SGD(m.parameters(), lr=0.5, momentum=0.9) if build_optimizer_first else None
        m.to(device)
        opt = opt or torch.optim.SGD(m.parameters(), lr=0.5, momentum=0.9)
        g = torch.Generator().manual_seed(1)
        losses = []
        for _ in range(4):
            x = torch.randint(0, 7, (8,), generator=g)
            loss = nn.functional.cross_entropy(m(x.to(device)), x.to(device))
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        assert all(s["momentum_buffer"].device == torch.device(device) for s in opt.state.values())
        return losses

    losses = train(dev, build_optimizer_first=True)
    assert losses == pytest.approx(train("cpu", build_optimizer_first=False), rel=1e-5)
    assert losses[-1] < losses[0]


def test_buffers_are_reassigned_as_torch_does_everywhere(dev):
    # torch assigns converted buffers anew on every device (module._buffers[k] = fn(buf)), CPU dtype changes too.
    m = nn.BatchNorm1d(3)
    running_mean = m.running_mean
    m.to(torch.float64)
    cpu_keeps = m.running_mean is running_mean
    m = nn.BatchNorm1d(3)
    running_mean = m.running_mean
    m.to(dev)
    assert (m.running_mean is running_mean) == cpu_keeps
    assert m.running_mean.device == dev and m.num_batches_tracked.device == dev


def test_cpu_conversions_and_torch_future_flags_are_left_to_torch(emu_dev):
    assert not torch.__future__.get_swap_module_params_on_conversion()
    m = nn.Linear(2, 2)
    w = m.weight
    m.double()
    assert m.weight is w
    torch.__future__.set_overwrite_module_params_on_conversion(True)
    try:  # The user asked for new Parameters: they get them, on hal too.
        m = nn.Linear(2, 2)
        w = m.weight
        m.to(emu_dev)
        assert m.weight is not w and m.weight.device == emu_dev
    finally:
        torch.__future__.set_overwrite_module_params_on_conversion(False)


def test_a_parameter_that_cannot_be_swapped_warns_and_is_replaced(emu_dev):
    m = nn.Linear(2, 2)
    w = m.weight
    ref = weakref.ref(w)  # torch refuses to swap a tensor someone holds a weak reference to
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        m.to(emu_dev)
    assert any("Linear.weight is a new Parameter" in str(c.message) for c in caught)
    assert m.weight is not w and m.weight.device == emu_dev and m.bias.device == emu_dev
    assert ref() is w and w.device.type == "cpu"


def test_install_is_idempotent():
    from hal.torch import module_conversion, register

    apply = nn.Module._apply
    module_conversion.install()
    register()
    assert nn.Module._apply is apply
