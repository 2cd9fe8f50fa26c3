"""Conjugate and negative bits on hal tensors: copies honour them, the fallback's aliases carry them (compared
with the CPU). Each case used to overflow the stack (_copy_from <-> the Conjugate fallback) or drop the bit."""
from __future__ import annotations

import pytest
import torch

CASES = {
    "conj_to_cpu": lambda x, m: x.conj(),
    "resolve_conj": lambda x, m: x.conj().resolve_conj(),
    "mH": lambda x, m: m.mH,
    "conj_matmul": lambda x, m: m.conj() @ m,
    "matmul_conj_rhs": lambda x, m: m @ m.conj(),
    "hfft": lambda x, m: torch.fft.hfft(x),
    "ihfft": lambda x, m: torch.fft.ihfft(x.real),
    "conj_physical": lambda x, m: torch.conj_physical(x),
    "conj_imag": lambda x, m: x.conj().imag,
    "neg_view": lambda x, m: torch._neg_view(x.real),
    "neg_view_add": lambda x, m: torch._neg_view(x.real) + 1,
    "conj_item": lambda x, m: torch.tensor(x.conj()[1].item()),
    "conj_clone_strided": lambda x, m: m.conj().t().clone(),
    # The CPU kernel returns its out= result as a conjugated view: the hal tensor must take the bit.
    "lu_solve_right": lambda x, m: torch.linalg.lu_solve(*torch.linalg.lu_factor(m), m[:2], left=False),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_math_bits_match_cpu(dev, case):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, dtype=torch.complex64, generator=g)
    m = torch.randn(4, 4, dtype=torch.complex64, generator=g)
    want = CASES[case](x, m)
    got = CASES[case](x.to(dev), m.to(dev))
    assert got.device == dev or case == "conj_item"
    torch.testing.assert_close(got.cpu(), want, rtol=1e-5, atol=1e-5)


def test_copies_into_tensors_with_bits(dev):
    x = torch.randn(6, dtype=torch.complex64)
    d = torch.zeros(6, dtype=torch.complex64, device=dev).conj()
    d.copy_(x)                              # writing through a conjugated view stores conj(x)
    torch.testing.assert_close(d.cpu(), x)
    torch.testing.assert_close(d.conj().cpu(), x.conj())
    e = torch.zeros(6, dtype=torch.complex64, device=dev)
    e.copy_(x.to(dev).conj())               # device -> device across bits
    torch.testing.assert_close(e.cpu(), x.conj())


def test_complex_backward(dev):
    x = torch.randn(5, dtype=torch.complex64, requires_grad=True)
    xd = x.detach().to(dev).requires_grad_()
    for t in (x, xd):
        (t * t.conj() + t.conj().imag).real.sum().backward()
    torch.testing.assert_close(xd.grad.cpu(), x.grad)
