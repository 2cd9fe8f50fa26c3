"""torch.compile on hal tensors: eager and aot_eager run (forward and backward); inductor says what to use."""
from __future__ import annotations

import pytest
import torch
from torch import nn


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _model(device):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 2)).to(device)


@pytest.mark.parametrize("backend", ["eager", "aot_eager"])
def test_working_backends_match_uncompiled_training(emu_dev, backend):
    x = torch.randn(4, 8, generator=torch.Generator().manual_seed(1)).to(emu_dev)
    ref = _model(emu_dev)
    ref(x).square().sum().backward()
    model = _model(emu_dev)
    compiled = torch.compile(model, backend=backend)
    out = compiled(x)
    assert out.device == emu_dev
    torch.testing.assert_close(out, ref(x))
    out.square().sum().backward()
    for p, q in zip(model.parameters(), ref.parameters()):
        assert p.grad.device == emu_dev
        torch.testing.assert_close(p.grad, q.grad)


def test_inductor_refuses_hal_graphs_naming_the_working_backends(emu_dev):
    compiled = torch.compile(lambda t: (t * 2).sin())  # the default backend: inductor
    with pytest.raises(RuntimeError, match=r"'inductor'.*hal devices.*backend='eager'.*backend='aot_eager'"):
        compiled(torch.randn(4, device=emu_dev))
