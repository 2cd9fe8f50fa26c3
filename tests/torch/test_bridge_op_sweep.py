"""A bounded OpInfo sweep (bench/torch_op_sweep.py) over ops of the classes that crashed or computed wrong
values on hal: math bits, views of other dtypes, out= results returned with a bit set, convolutions, FFTs,
reductions, indexing. Each op's sample inputs, float32 and complex64, hal:1 against the CPU, in worker
subprocesses (a crash fails the test instead of the run)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SWEEP = Path(__file__).resolve().parents[2] / "bench" / "torch_op_sweep.py"
OPS = ["linalg.lu_solve", "linalg.solve", "fft.hfft", "fft.ihfft", "fft.fft", "view_as_complex", "view_as_real",
       "real", "imag", "conj", "conj_physical", "resolve_conj", "resolve_neg", "unfold", "diagonal", "split",
       "unbind", "matmul", "mm", "addmm", "nn.functional.conv2d", "nn.functional.conv_transpose2d", "cumsum",
       "sort", "topk", "index_select", "scatter_add", "sum", "norm", "where", "cat", "abs", "empty_like"]


@pytest.mark.slow
def test_bounded_op_sweep_matches_the_cpu(emu_dev):
    spec = importlib.util.spec_from_file_location("torch_op_sweep", SWEEP)
    sweep = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sweep)
    results = sweep.sweep(f"hal:{emu_dev.index}", OPS, samples=2, chunk=len(OPS), timeout=240)
    assert {r["op"] for r in results} >= set(OPS) - {"empty_like"}
    bad = [r for r in results if r["verdict"] != "pass"]
    assert not bad, bad
