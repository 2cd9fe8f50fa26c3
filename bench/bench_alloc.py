"""Caching allocator throughput: alloc+free pairs per second, same run, same machine.

    python bench/bench_alloc.py [--nbytes 4096] [--iters 200000]

Rows, per device (cpu:0 and emu:0 from hal/plugins/ when present, else the test fixture plugin compiled on
the fly):
  C++ cached   _C._bench_alloc_pairs: allocate/free through the caching allocator in a C++ loop
  C++ raw      the same loop straight to the plugin's memory_allocate/memory_free
  py cached    Device.allocate(n).free() from Python (binding + allocator overhead)
  py raw       Device.raw_allocate / raw_free from Python
and torch.empty(n, dtype=uint8) + del on CPU as the reference. Ratios are against torch.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hal import _C  # noqa: E402


def plugin_paths() -> tuple[list[str], list[str]]:
    plugins = ROOT / "hal" / "plugins"
    found = [str(plugins / f"libhal_plugin_{n}.so") for n in ("cpu", "emu") if (plugins / f"libhal_plugin_{n}.so").exists()]
    if found:
        return found, ["cpu:0", "emu:0"]
    out = Path(tempfile.mkdtemp()) / "libhal_plugin_fixture.so"
    subprocess.run(["cc", "-shared", "-fPIC", "-O2", "-fvisibility=hidden", "-I", str(ROOT / "csrc" / "include"),
                    "-o", str(out), str(ROOT / "tests" / "plugins" / "fixture_plugin.c"), "-lpthread"], check=True)
    return [str(out)], ["fixture:0"]


def per_second(seconds: float, iters: int) -> float:
    return iters / seconds if seconds > 0 else float("inf")


def timed(fn, iters: int) -> float:
    start = time.perf_counter()
    fn(iters)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nbytes", type=int, default=4096)
    parser.add_argument("--iters", type=int, default=200_000)
    args = parser.parse_args()
    n, iters = args.nbytes, args.iters

    paths, wanted = plugin_paths()
    _C.init(plugin_paths=paths, use_env=False)
    names = {_C.get_device(i).name for i in range(_C.device_count())}
    devices = [_C.find_device(w) for w in wanted if w in names]
    for path, message in _C.load_errors():
        print(f"load error: {path}: {message}", file=sys.stderr)

    rows: list[tuple[str, float]] = []
    try:
        import torch

        def torch_loop(k: int) -> None:
            for _ in range(k):
                t = torch.empty(n, dtype=torch.uint8)
                del t

        torch_loop(1000)
        rows.append(("torch.empty+del (cpu)", per_second(timed(torch_loop, iters), iters)))
    except ImportError:
        pass

    raw_iters = max(1, iters // 10)  # plugin allocators may be slow; keep the run short
    for d in devices:
        _C._bench_alloc_pairs(d, n, 1000)  # warm the cache
        rows.append((f"{d.name} C++ cached", per_second(_C._bench_alloc_pairs(d, n, iters), iters)))
        rows.append((f"{d.name} C++ raw", per_second(_C._bench_alloc_pairs(d, n, raw_iters, raw=True), raw_iters)))

        def py_cached(k: int, d=d) -> None:
            for _ in range(k):
                d.allocate(n).free()

        def py_raw(k: int, d=d) -> None:
            for _ in range(k):
                d.raw_free(d.raw_allocate(n))

        rows.append((f"{d.name} py cached", per_second(timed(py_cached, iters), iters)))
        rows.append((f"{d.name} py raw", per_second(timed(py_raw, raw_iters), raw_iters)))

    reference = rows[0][1] if rows and rows[0][0].startswith("torch") else None
    print(f"alloc+free pairs of {n} bytes, {iters} iterations (raw: {raw_iters})")
    print(f"{'':28}{'pairs/s':>14}{'vs torch':>10}")
    for label, rate in rows:
        ratio = f"{rate / reference:9.2f}x" if reference else ""
        print(f"{label:28}{rate:14,.0f}{ratio:>10}")


if __name__ == "__main__":
    main()
