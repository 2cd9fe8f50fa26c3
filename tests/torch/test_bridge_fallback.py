"""The fallback's paths for in-place ops, out= resizes and generators, compared with the CPU (these run on the
unmapped emu configuration too: test_bridge_unmapped.py)."""
from __future__ import annotations

import pytest
import torch


def test_in_place_ops_through_views(dev):
    x = torch.arange(12.0)
    xd = x.to(dev)
    for t in (x, xd):
        t.view(3, 4)[:, 1].mul_(-2)
        t[::3].exp_()
        t.clamp_(max=50)
    torch.testing.assert_close(xd.cpu(), x)


def test_out_arguments_are_resized(dev):
    a = torch.randn(3, 4)
    out = torch.empty(0, device=dev)
    torch.mm(a.to(dev), a.t().to(dev), out=out)
    torch.testing.assert_close(out.cpu(), a @ a.t())
    small = torch.empty(0, device=dev)
    torch.cumsum(a.to(dev), 1, out=small)
    assert small.shape == (3, 4)
    torch.testing.assert_close(small.cpu(), a.cumsum(1))
    idx = torch.empty(0, dtype=torch.int64, device=dev)
    vals = torch.empty(0, device=dev)
    torch.sort(a.to(dev), 1, out=(vals, idx))
    torch.testing.assert_close(vals.cpu(), a.sort(1).values)
    assert torch.equal(idx.cpu(), a.sort(1).indices)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_mse_loss_runs_the_functional_kernel_without_warnings(dev, reduction):
    # Its composite kernel called mse_loss.out with a 0-dim output, which CPU's kernel resized with a
    # deprecation warning on every call (every DDP example step printed it).
    import warnings

    a, b = torch.randn(16, 4, requires_grad=True), torch.randn(16, 4)
    ad = a.detach().to(dev).requires_grad_()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = torch.nn.functional.mse_loss(ad, b.to(dev), reduction=reduction)
        got.sum().backward()
    want = torch.nn.functional.mse_loss(a, b, reduction=reduction)
    want.sum().backward()
    torch.testing.assert_close(got.cpu(), want.detach())
    torch.testing.assert_close(ad.grad.cpu(), a.grad)


def test_generators_match_the_cpu(dev):
    g, gc = torch.Generator(device=dev).manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(torch.rand(7, generator=g, device=dev).cpu(), torch.rand(7, generator=gc))
    x, xc = torch.empty(6, device=dev), torch.empty(6)
    x.normal_(generator=g)
    xc.normal_(generator=gc)
    assert torch.equal(x.cpu(), xc)
    assert torch.equal(torch.randperm(9, generator=g, device=dev).cpu(), torch.randperm(9, generator=gc))


def test_an_op_without_any_kernel_names_op_and_device(emu_dev):
    x = torch.randn(3, device=emu_dev)
    with pytest.raises(NotImplementedError, match=r"aten::_cudnn_rnn_flatten_weight' cannot run on hal:%d \(emu:"
                                                  % emu_dev.index):
        torch.ops.aten._cudnn_rnn_flatten_weight([x], 1, 3, 0, 4, 0, 1, False, False)


def test_sparse_results_raise_naming_op_and_device(dev):
    with pytest.raises(NotImplementedError, match=r"aten::_to_sparse.*hal:%d" % dev.index):
        torch.eye(3, device=dev).to_sparse()
