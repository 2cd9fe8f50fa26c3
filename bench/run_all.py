"""Runs every benchmark of bench/ in turn, each in its own interpreter, and prints what each one prints.

    python bench/run_all.py [--quick] [--only NAME ...] [--out bench/out]

Each benchmark prints ratios against a baseline measured in the same run (see its docstring); this script
adds nothing of its own but the order, a header per benchmark, its exit status and its wall time, and keeps
a copy of each one's output under --out. A failing benchmark does not stop the others; the exit status is
non-zero when any failed. `--quick` passes each benchmark the arguments that make it short (for a smoke run).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent

# name -> (full arguments, quick arguments). The order runs the cheap, low-level ones first.
BENCHMARKS: dict[str, tuple[list[str], list[str]]] = {
    "bench_alloc": ([], ["--iters", "20000"]),
    "bench_copy": ([], ["--max-mib", "16", "--repeat", "3"]),
    "bench_latency": ([], ["--iters", "300", "--rounds", "1"]),
    "bench_collectives": ([], ["--quick"]),
    "bench_torch": ([], ["--quick"]),
    "torch_op_sweep": (["--samples", "2"], ["--ops", "add,mm,sum,linalg.lu_solve", "--samples", "1"]),
    "bench_planner": ([], ["--repeats", "1", "--small-cases", "2"]),
    "plan_validate": ([], ["--plans", "4", "--steps", "2", "--repeats", "3"]),
    "bench_training": ([], ["--quick"]),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short runs (a smoke test, not figures to quote)")
    parser.add_argument("--only", nargs="+", choices=sorted(BENCHMARKS), help="run only these")
    parser.add_argument("--out", type=Path, default=BENCH / "out", help="where each output is kept")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    failed = []
    for name, (full, quick) in BENCHMARKS.items():
        if args.only and name not in args.only:
            continue
        command = [sys.executable, str(BENCH / f"{name}.py"), *(quick if args.quick else full)]
        print(f"==> {' '.join(command[1:])}", flush=True)
        start = time.monotonic()
        proc = subprocess.run(command, capture_output=True, text=True)
        output = proc.stdout + (proc.stderr if proc.returncode else "")
        print(output, end="" if output.endswith("\n") else "\n")
        (args.out / f"{name}.txt").write_text(output)
        print(f"<== {name}: exit {proc.returncode}, {time.monotonic() - start:.0f} s\n", flush=True)
        if proc.returncode != 0:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
