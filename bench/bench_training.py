"""The multi-process training job on an emulated two-kind cluster: planned vs even split vs the ideal.

    python bench/bench_training.py [--steps 200] [--batch 128] [--out bench/out/training] [--quick]

One run of `hal demo` (hal/demo.py): 2 x emu-fast and 2 x emu-slow (speeds 0.4 and 0.2 of a host core: a 2x
difference; with what is not paced, about 1.65 of a 2-core host's cores busy, which the report prints;
HAL_EMU_DEVICES overrides), a small GPT, one process per
device through `hal launch`. Every figure is measured in this run:

  - speedup: tokens/s of the planned job / tokens/s of the even split (same pipelines, batch split evenly);
    goal >= 1.3x;
  - fraction of the ideal: tokens/s of the planned job / the sum over the devices of each one's tokens/s
    training alone, all of them side by side (measured before and after the planned job, their mean);
    goal >= 97.5 % (HETHUB's 97.49 %);
  - predicted vs measured step time of the planned job (the cost model on the calibrated profile); goal
    within 10 %.

The ideal has no data-parallel costs: every replica's optimizer step and the gradient sums are per step, so the
fraction grows with the samples each device gets per step (--batch). All devices are EMULATED: the figures say
how well the runtime and the planner use devices whose speeds are known, not how fast any chip is.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=200, help="steps of the planned job")
    p.add_argument("--batch", type=int, default=128, help="global batch in sequences (the demo's default: 128)")
    p.add_argument("--out", type=Path, default=BENCH / "out" / "training")
    p.add_argument("--quick", action="store_true", help="the demo's quick mode (tiny model: a smoke run)")
    a = p.parse_args(argv)
    sys.path.insert(0, str(BENCH.parent))
    from hal import demo
    args = ["--out", str(a.out), "--steps", str(a.steps), "--batch", str(a.batch)] + (["--quick"] if a.quick else [])
    rc = demo.main(args)
    doc = json.loads((a.out / "demo.json").read_text())
    planned, even = doc["planned"], doc["even"]
    err = (planned["predicted_step_s"] - planned["measured_step_s"]) / planned["measured_step_s"]
    rows = [("planned / even split (tokens/s)", f"{doc['speedup_vs_even']:.2f}x", ">= 1.3x",
             doc["speedup_vs_even"] >= 1.3),
            ("planned / ideal (sum of each device alone)", f"{doc['fraction_of_ideal']:.1%}", ">= 97.5%",
             doc["fraction_of_ideal"] >= 0.975),
            ("predicted vs measured step (planned)", f"{err:+.1%}", "within 10%", abs(err) <= 0.10)]
    print(f"\nbench_training: {doc['model']} GPT, global batch {doc['global_batch']}, {len(doc['devices'])} EMULATED "
          f"devices ({doc['emu_config']}), {len(doc['losses'])} planned steps")
    print(f"  baseline even split: {even['tokens_per_s']:.0f} tokens/s ({even['measured_step_s'] * 1e3:.0f} ms/step); "
          f"ideal: {doc['ideal_tokens_per_s']:.0f} tokens/s; planned: {planned['tokens_per_s']:.0f} tokens/s "
          f"({planned['measured_step_s'] * 1e3:.0f} ms/step measured, {planned['predicted_step_s'] * 1e3:.0f} "
          f"predicted)")
    for what, value, goal, ok in rows:
        print(f"  {what:44s} {value:>8s}   goal {goal:10s} {'met' if ok else 'NOT met'}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
