"""torch.autocast("hal") follows CPU autocast's policy; activation checkpointing gives the uncheckpointed grads."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from hal.torch import autocast as hal_autocast

F = nn.functional


def test_policy_covers_exactly_the_ops_cpu_autocast_handles():
    ops = hal_autocast.cpu_policy_ops()
    assert "mm" in ops and "cat" in ops and "mse_loss" in ops
    registered = set(torch._C._dispatch_get_registrations_for_dispatch_key("AutocastPrivateUse1"))
    assert {"aten::" + op for op in ops} <= registered
    # The named lower-precision and promote lists name only ops CPU autocast has (they cannot go stale).
    assert hal_autocast._LOWER_PRECISION <= set(ops) and hal_autocast._PROMOTE <= set(ops)


def _ops(x, y, low):
    """One op of each policy and ops outside the list, on float32 inputs x, y (4x4) and a low-precision copy."""
    return {
        "mm": x @ y, "linear": F.linear(x, y), "addmm": torch.addmm(x, x, y), "bmm": torch.bmm(x[None], y[None]),
        "baddbmm": torch.baddbmm(x[None], x[None], y[None]),
        "cat": torch.cat([x, low]), "cat_low": torch.cat([low, low]), "stack": torch.stack([low, x]),
        "mse_loss": F.mse_loss(low, y), "cross_entropy": F.cross_entropy(low, torch.tensor([0, 1, 2, 3], device=x.device)),
        "prod": torch.prod(low), "add": x + low, "softmax": torch.softmax(low, 0), "layer_norm": F.layer_norm(low, (4,)),
    }


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_dtypes_and_values_match_cpu_autocast(dev, dtype):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(4, 4, generator=g), torch.randn(4, 4, generator=g)
    with torch.autocast("cpu", dtype=dtype):
        ref = _ops(x, y, x.to(dtype))
    with torch.autocast("hal", dtype=dtype):
        got = _ops(x.to(dev), y.to(dev), x.to(dtype).to(dev))
    assert ref["mm"].dtype == dtype and ref["mse_loss"].dtype == torch.float32  # CPU autocast is active
    for name, r in ref.items():
        assert got[name].device == dev and got[name].dtype == r.dtype, name
        torch.testing.assert_close(got[name].cpu(), r, msg=name)


def test_autocast_is_off_outside_the_region_and_for_other_dtypes(emu_dev):
    x = torch.randn(4, 4, device=emu_dev)
    with torch.autocast("hal", dtype=torch.bfloat16):
        assert (x @ x).dtype == torch.bfloat16
        with torch.autocast("hal", enabled=False):
            assert (x @ x).dtype == torch.float32
    assert (x @ x).dtype == torch.float32
    assert torch.hal.get_amp_supported_dtype() == [torch.bfloat16, torch.float16]
    with pytest.warns(UserWarning, match="target dtype is not supported"):
        with torch.autocast("hal", dtype=torch.float64):
            assert (x @ x).dtype == torch.float32


def test_mixed_precision_training_step_matches_cpu(emu_dev):
    def step(device):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3)).to(device)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        scaler = torch.amp.GradScaler(torch.device(device).type)
        x = torch.randn(4, 8, generator=torch.Generator().manual_seed(1)).to(device)
        with torch.autocast(torch.device(device).type, dtype=torch.float16):
            out = model(x)
            loss = F.cross_entropy(out, torch.tensor([0, 1, 2, 0], device=device))
        assert out.dtype == torch.float16 and loss.dtype == torch.float32
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        return loss.item(), [p.detach().cpu() for p in model.parameters()]

    hal_loss, hal_params = step(emu_dev)
    cpu_loss, cpu_params = step("cpu")
    assert hal_loss == pytest.approx(cpu_loss, rel=1e-6)
    for h, c in zip(hal_params, cpu_params):
        torch.testing.assert_close(h, c, rtol=1e-5, atol=1e-6)


def _dropout_net(device) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 32), nn.GELU(), nn.Dropout(0.5), nn.Linear(32, 4)).to(device)


def _grads(model, x, use_reentrant, preserve_rng_state=True):
    model.zero_grad()
    x = x.detach().requires_grad_()
    torch.manual_seed(42)
    if use_reentrant is None:
        out = model(x)
    else:
        out = checkpoint(model, x, use_reentrant=use_reentrant, preserve_rng_state=preserve_rng_state)
    out.square().sum().backward()
    return [x.grad.cpu()] + [p.grad.cpu() for p in model.parameters()]


@pytest.mark.parametrize("use_reentrant", [True, False])
def test_checkpoint_gives_the_uncheckpointed_gradients_with_dropout(dev, use_reentrant):
    model = _dropout_net(dev)
    x = torch.randn(6, 8, generator=torch.Generator().manual_seed(3)).to(dev)
    plain = _grads(model, x, None)
    for got, want in zip(_grads(model, x, use_reentrant), plain):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    # Without the preserved RNG state the recomputation draws another dropout mask: the check above can fail.
    unpreserved = _grads(model, x, use_reentrant, preserve_rng_state=False)
    assert not all(torch.equal(a, b) for a, b in zip(unpreserved, plain))


def test_checkpoint_under_autocast_matches_cpu(emu_dev):
    def grads(device):
        model = _dropout_net(device)
        x = torch.randn(6, 8, generator=torch.Generator().manual_seed(3)).to(device)
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16):
            torch.manual_seed(42)
            out = checkpoint(model, x, use_reentrant=False)
        assert out.dtype == torch.bfloat16
        out.float().square().sum().backward()
        return [p.grad.cpu() for p in model.parameters()]

    for h, c in zip(grads(emu_dev), grads("cpu")):
        torch.testing.assert_close(h, c, rtol=0, atol=0)
