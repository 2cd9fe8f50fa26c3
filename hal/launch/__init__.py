"""`hal launch`: start one worker process per device on this node, on torch.distributed.elastic.

    hal launch [torchrun-style flags] [--devices SPEC] [--cluster FILE] [--plan FILE] [--run-dir DIR] SCRIPT [args]
    python -m hal.launch ...

Parts: `cli` (flags, the checks made before any worker starts, exit 2 on bad input), `plan_file` (reading
the cluster and plan files), `devices` (which devices this node runs on), `supervise` (elastic's agent with
HAL's device bookkeeping: lost devices, launch.json, one line per event), `worker` (the wrapper each worker
process runs: its device, then the user's script). The environment a worker gets is documented in
docs/training.md ("Launching").
"""
from __future__ import annotations

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    from hal.launch.cli import main as cli_main

    return cli_main(argv)
