"""Sweep of torch's OpInfo database on a hal device against the CPU: every op's sample inputs (float32 and
complex64), run on both, compared. Finds ops that crash the process, raise only on hal, or compute wrong values.

    PYTHONPATH=$PWD python bench/torch_op_sweep.py [--device hal:1] [--ops add,mm,...] [--samples 3] [--json F]

Ops run in worker subprocesses (a crash or hang costs one op, not the sweep). Per op and dtype the verdict is
pass (every sample matches the CPU), wrong (some result differs), error (hal raises where the CPU does not),
crash (the worker died or timed out on it); samples the CPU itself rejects are not counted. Prints the figures
and the non-passing ops. An error must name the op and the device, so errors are reported, not hidden.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

DTYPES = ("float32", "complex64")
# Ops whose values are not defined (only shapes and dtypes are compared).
UNINITIALIZED = {"empty", "empty_like", "empty_permuted", "empty_strided", "new_empty", "new_empty_strided"}
# Ops the harness cannot judge, with why.
SKIPPED = {
    "as_strided.partial_views": "its samples address the input's storage beyond the input; a copy to the device "
                                "keeps only the input",
    "tensor_split": "takes its index tensor on the CPU only (CUDA too); the harness moves every tensor",
}


def _import_op_db():
    """torch's OpInfo list. torch's test utilities import expecttest only for a TestCase base class: without the
    package a stand-in with unittest's TestCase serves."""
    import types
    import unittest

    try:
        import expecttest  # noqa: F401
    except ImportError:
        sys.modules["expecttest"] = types.SimpleNamespace(TestCase=unittest.TestCase)  # type: ignore[assignment]
    from torch.testing._internal.common_methods_invocations import op_db

    return op_db


def _worker(device: str, names: list[str], samples: int) -> None:
    import warnings

    import torch
    import hal.torch  # noqa: F401
    from torch.utils._pytree import tree_map

    warnings.filterwarnings("ignore")
    by_name = {}
    for op in _import_op_db():
        by_name.setdefault(op.name + ("." + op.variant_test_name if op.variant_test_name else ""), op)
    to_dev = lambda x: x.to(device) if isinstance(x, torch.Tensor) else x  # noqa: E731
    to_cpu = lambda x: x.cpu() if isinstance(x, torch.Tensor) else x  # noqa: E731

    for name in names:
        op = by_name[name]
        for dtype_name in DTYPES:
            dtype = getattr(torch, dtype_name)
            print(json.dumps({"start": name, "dtype": dtype_name}), flush=True)
            if dtype not in op.supported_dtypes("cpu"):
                continue
            verdict, detail, counted = "pass", "", 0
            try:
                inputs = list(op.sample_inputs("cpu", dtype, requires_grad=False))[:samples]
            except Exception:  # noqa: BLE001 - the OpInfo itself cannot make samples here
                continue
            for s in inputs:
                args = (s.input, *s.args)
                try:
                    torch.manual_seed(0)
                    want = op(*args, **s.kwargs)
                except Exception:  # noqa: BLE001 - the CPU rejects this sample
                    continue
                counted += 1
                try:
                    torch.manual_seed(0)
                    got = op(*tree_map(to_dev, args), **tree_map(to_dev, s.kwargs))
                    got = tree_map(to_cpu, got)
                except Exception as e:  # noqa: BLE001
                    verdict, detail = "error", f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"
                    break
                if name in UNINITIALIZED:
                    got, want = tree_map(torch.zeros_like, got), tree_map(torch.zeros_like, want)
                try:
                    torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-3, equal_nan=True, check_device=False,
                                               check_stride=False)
                except Exception as e:  # noqa: BLE001
                    verdict, detail = "wrong", str(e).splitlines()[0][:300] if str(e) else type(e).__name__
                    break
            if counted:
                print(json.dumps({"op": name, "dtype": dtype_name, "verdict": verdict, "detail": detail}), flush=True)


def sweep(device: str, names: list[str], samples: int, chunk: int = 40, timeout: float = 300) -> list[dict]:
    results, todo = [], list(names)
    while todo:
        batch, todo = todo[:chunk], todo[chunk:]
        cmd = [sys.executable, __file__, "--worker", "--device", device, "--samples", str(samples),
               "--ops", ",".join(batch)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
            out, died = proc.stdout, proc.returncode != 0
            why = f"exit {proc.returncode}: {proc.stderr.strip().splitlines()[-1][:200] if proc.stderr.strip() else ''}"
        except subprocess.TimeoutExpired as e:
            out, died, why = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or ""), True, "timeout"
        last, done = None, set()
        for line in out.splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if "start" in rec:
                last = rec
            else:
                results.append(rec)
                done.add(rec["op"])
        if died and last is not None:
            results.append({"op": last["start"], "dtype": last["dtype"], "verdict": "crash", "detail": why})
            i = batch.index(last["start"])
            todo = batch[i + 1:] + todo  # The rest of the batch in a fresh worker.
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="hal:1")
    ap.add_argument("--ops", default="", help="comma-separated OpInfo names (name or name.variant); default: all")
    ap.add_argument("--samples", type=int, default=3)
    ap.add_argument("--json", default="")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        return _worker(a.device, a.ops.split(","), a.samples)
    if a.ops:
        names = a.ops.split(",")
    else:
        names = sorted({op.name + ("." + op.variant_test_name if op.variant_test_name else "")
                        for op in _import_op_db()} - set(SKIPPED))
    t0 = time.time()
    results = sweep(a.device, names, a.samples)
    counts = {v: sum(r["verdict"] == v for r in results) for v in ("pass", "wrong", "error", "crash")}
    print(f"hal op sweep on {a.device} ({os.environ.get('HAL_EMU_DEVICES', 'default devices')}): {len(names)} ops, "
          f"{len(results)} op/dtype pairs tried: " + ", ".join(f"{k} {v}" for k, v in counts.items()) +
          f" ({time.time() - t0:.0f} s)")
    for name, why in SKIPPED.items():
        print(f"  skip   {name}: {why}")
    for r in results:
        if r["verdict"] != "pass":
            print(f"  {r['verdict']:6} {r['op']} [{r['dtype']}]: {r['detail']}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
