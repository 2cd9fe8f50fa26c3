"""Views that ops with only CPU (and Meta) kernels return: rebuilt with the result's dtype, sizes, strides and
offset over the input's storage, on every kind of device."""
from __future__ import annotations

import pytest
import torch

VIEWS = {
    "view_as_complex": lambda x: torch.view_as_complex(x.reshape(-1, 2)),
    "view_as_real": lambda x: torch.view_as_real(torch.view_as_complex(x.reshape(-1, 2))),
    "real": lambda x: torch.view_as_complex(x.reshape(-1, 2)).real,
    "imag": lambda x: torch.view_as_complex(x.reshape(-1, 2)).imag,
    "unfold": lambda x: x.unfold(0, 4, 3),
    "diagonal": lambda x: x.reshape(4, 6).diagonal(1),
    "view_dtype": lambda x: x.view(torch.int32),
    "T": lambda x: x.reshape(4, 6).T,
    "split": lambda x: x.split(5)[2],
    "unbind": lambda x: x.reshape(4, 6).unbind(1)[3],
    "as_strided": lambda x: x.as_strided((3, 3), (1, 3), 2),
}


@pytest.mark.parametrize("case", sorted(VIEWS))
def test_views_keep_the_results_geometry(dev, case):
    x = torch.arange(24.0)
    want = VIEWS[case](x)
    xd = x.to(dev)
    got = VIEWS[case](xd)
    assert got.dtype == want.dtype and got.shape == want.shape and got.stride() == want.stride()
    assert got.storage_offset() == want.storage_offset()
    assert got.untyped_storage().data_ptr() == xd.untyped_storage().data_ptr()   # a view, not a copy
    assert torch.equal(got.cpu(), want)
    xd.add_(1)                                                                   # and it sees later writes
    assert torch.equal(got.cpu(), VIEWS[case](x + 1))


def test_complex_tensors_print_and_compute(dev):
    z = torch.randn(3, dtype=torch.complex64)
    zd = z.to(dev)
    assert "complex64" in repr(zd) or "j" in repr(zd)
    torch.testing.assert_close((zd.real * 2 + zd.imag).cpu(), z.real * 2 + z.imag)
    torch.testing.assert_close(zd.abs().cpu(), z.abs())
