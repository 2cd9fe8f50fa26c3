"""FlatParams: a stage's parameters and gradients as views of two buffers, one optimizer step over the buffer."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from hal.parallel.flat import FlatParams


def model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.LayerNorm(7), nn.Linear(7, 3))


def train(m: nn.Module, opt: torch.optim.Optimizer, flat: FlatParams | None, steps: int = 4) -> list[float]:
    losses = []
    g = torch.Generator().manual_seed(3)
    for _ in range(steps):
        x, y = torch.randn(6, 5, generator=g), torch.randn(6, 3, generator=g)
        if flat is not None:
            flat.zero_grad()
        else:
            opt.zero_grad(set_to_none=True)
        loss = 0.0
        for rows in (slice(0, 2), slice(2, 6)):  # two micro-batches: the second accumulates into the first's
            part = nn.functional.mse_loss(m(x[rows]), y[rows])
            part.backward()
            loss += part.item()
        opt.step()
        losses.append(loss)
    return losses


@pytest.mark.parametrize("make", [lambda ps: torch.optim.Adam(ps, lr=0.05, foreach=True),
                                  lambda ps: torch.optim.AdamW(ps, lr=0.05, weight_decay=0.1),
                                  lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9)])
def test_one_step_over_the_buffer_equals_a_step_per_parameter(make):
    ref = model()
    ref_losses = train(ref, make(list(ref.parameters())), None)
    m = model()
    flat = FlatParams(list(m.parameters()))
    opt, is_flat = flat.optimizer(make)
    assert is_flat and opt.param_groups[0]["params"] == [flat.flat]
    assert train(m, opt, flat) == pytest.approx(ref_losses, rel=1e-6)
    for a, b in zip(m.parameters(), ref.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    # The parameters are views of the buffer, their gradients views of the gradient buffer.
    for p in m.parameters():
        a, b = flat.offsets[id(p)]
        assert p.data_ptr() == flat.flat[a:].data_ptr() and p.grad.data_ptr() == flat.grads[a:].data_ptr()


def test_the_buffers_state_is_cut_per_parameter_and_put_back():
    m = model()
    flat = FlatParams(list(m.parameters()))
    opt, _ = flat.optimizer(lambda ps: torch.optim.Adam(ps, lr=0.05))
    train(m, opt, flat, steps=2)
    parts = {id(p): {k: (v.clone() if torch.is_tensor(v) else v) for k, v in flat.optimizer_state(opt, p).items()}
             for p in m.parameters()}
    p0 = next(m.parameters())
    assert parts[id(p0)]["exp_avg"].shape == p0.shape and float(parts[id(p0)]["step"]) == 2
    m2 = model(seed=1)
    flat2 = FlatParams(list(m2.parameters()))
    opt2, _ = flat2.optimizer(lambda ps: torch.optim.Adam(ps, lr=0.05))
    flat2.load_optimizer_state(opt2, {id(q): parts[id(p)] for p, q in zip(m.parameters(), m2.parameters())})
    for k in ("exp_avg", "exp_avg_sq"):
        torch.testing.assert_close(opt2.state[flat2.flat][k], opt.state[flat.flat][k])


def test_optimizers_that_are_not_elementwise_or_have_groups_stay_as_given():
    m = model()
    flat = FlatParams(list(m.parameters()))
    lbfgs, is_flat = flat.optimizer(lambda ps: torch.optim.LBFGS(ps))
    assert not is_flat and isinstance(lbfgs, torch.optim.LBFGS)
    groups, is_flat = flat.optimizer(lambda ps: torch.optim.Adam([{"params": ps[:2]}, {"params": ps[2:], "lr": 0}]))
    assert not is_flat and len(groups.param_groups) == 2


def test_a_gradient_set_to_none_gets_its_view_back():
    m = model()
    flat = FlatParams(list(m.parameters()))
    p = next(m.parameters())
    p.grad = None
    flat.zero_grad()
    assert p.grad is not None and p.grad.data_ptr() == flat.grads.data_ptr()
    assert flat.slice_of(list(m[0].parameters())).numel() == sum(q.numel() for q in m[0].parameters())
    assert flat.slice_of([list(m.parameters())[-1], p]) is None  # not one after the other


def test_padded_buckets_get_spans_of_a_multiple_and_the_padding_stays_zero():
    """ZeRO-1's layout: each layer's span a multiple of its replicas; stepping the padded buffer is stepping the
    parameters (the padding has zero gradients, so Adam leaves it zero)."""
    ref = model()
    ref_losses = train(ref, torch.optim.Adam(list(ref.parameters()), lr=0.05), None)
    m = model()
    layers = [list(m[0].parameters()), list(m[2].parameters()), list(m[3].parameters())]  # 42, 14 and 24 elements
    flat = FlatParams(list(m.parameters()), pad=[(layers[0], 4), (layers[1], 3), (layers[2], 5)])
    assert [flat.span_of(ps) for ps in layers] == [(0, 44), (44, 59), (59, 84)] and flat.numel == 84
    assert flat.slice_of(layers[1]).numel() == 14  # the parameters' own part, without the padding
    opt, is_flat = flat.optimizer(lambda ps: torch.optim.Adam(ps, lr=0.05))
    assert is_flat
    assert train(m, opt, flat) == pytest.approx(ref_losses, rel=1e-6)
    for a, b in zip(m.parameters(), ref.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    padding = torch.cat([flat.flat.detach()[42:44], flat.flat.detach()[58:59], flat.flat.detach()[83:84]])
    assert torch.equal(padding, torch.zeros(4))
    with pytest.raises(ValueError, match="consecutive"):
        FlatParams(list(m.parameters()), pad=[([layers[0][0], layers[2][0]], 2)])
