"""Data-parallel training across device kinds: one DDP job with ranks on hal:0, hal:1 and hal:3.

    torchrun --nproc-per-node 3 examples/ddp_mixed.py [--devices 0,1,3] [--steps 5] [--batch 48] [--save PATH]

Local rank r trains on hal:DEVICES[r]; by default hal:0 (cpu:0, the host) and hal:1, hal:3 (emu:0, emu:2,
emulated devices: software on this CPU). The process group is `init_process_group("hal")`: ranks of one plugin
form an island that reduces through that plugin's own collectives, and the islands' leaders exchange through
Gloo (`HAL_COLLECTIVES=host` stages every collective through the host instead).

The model is a small MLP with fixed seeds. Each step every rank takes its equal share of one global batch of
synthetic data, so DDP's averaged gradient is the full batch's gradient and the run ends with the parameters one
process reaches training the same model on the full batch (tests/collectives/test_example_ddp.py checks that
against `train_full_batch`). Rank 0 prints each step's loss over the global batch; `--save` writes the final
parameters (a CPU state dict) from rank 0.
"""
from __future__ import annotations

import argparse
import os

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

SEED = 0
FEATURES, HIDDEN, OUTPUTS = 16, 32, 4


def build_model() -> nn.Module:
    torch.manual_seed(SEED)
    return nn.Sequential(nn.Linear(FEATURES, HIDDEN), nn.Tanh(), nn.Linear(HIDDEN, OUTPUTS))


def synthetic_batches(steps: int, batch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """`steps` global batches (inputs, targets) on the CPU: a fixed random map plus noise."""
    gen = torch.Generator().manual_seed(SEED + 1)
    weight = torch.randn(FEATURES, OUTPUTS, generator=gen)
    batches = []
    for _ in range(steps):
        x = torch.randn(batch, FEATURES, generator=gen)
        batches.append((x, torch.tanh(x @ weight) + 0.1 * torch.randn(batch, OUTPUTS, generator=gen)))
    return batches


def make_optimizer(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """One SGD step on (x, y); returns the mean loss (detached)."""
    optimizer.zero_grad()
    loss = nn.functional.mse_loss(model(x), y)
    loss.backward()
    optimizer.step()
    return loss.detach()


def train_full_batch(steps: int, batch: int) -> tuple[nn.Module, list[float]]:
    """The reference: one process on the CPU, whole global batches. Returns the model and the losses."""
    model = build_model()
    optimizer = make_optimizer(model)
    losses = [train_step(model, optimizer, x, y).item() for x, y in synthetic_batches(steps, batch)]
    return model, losses


def describe(index: int) -> str:
    """'hal:1 (emu:0, emulated)'."""
    name = torch.hal.get_device_name(index)
    return f"hal:{index} ({name}" + (", emulated)" if torch.hal.get_device_properties(index).emulated else ")")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", default="0,1,3", help="hal device index of each local rank (default 0,1,3)")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--batch", type=int, default=48, help="global batch; a multiple of the world size")
    ap.add_argument("--save", help="rank 0 writes the final parameters here (torch.save of a CPU state dict)")
    args = ap.parse_args()
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    devices = [int(d) for d in args.devices.split(",")]
    if local_rank >= len(devices):
        raise SystemExit(f"local rank {local_rank} has no device: --devices {args.devices} names {len(devices)}")
    if args.batch % world:
        raise SystemExit(f"--batch {args.batch} is not a multiple of the world size {world}")

    import hal.collectives

    hal.collectives.register()  # Idempotent: torch's autoload of an installed HAL has done it already.
    index = devices[local_rank]
    torch.hal.set_device(index)
    device = torch.device("hal", index)
    dist.init_process_group("hal")
    if rank == 0:
        mode = os.environ.get("HAL_COLLECTIVES") or "default (hierarchical)"
        print(f"DDP over the hal backend, {world} ranks, collectives {mode}; emulated devices are software")
        for r in range(min(world, len(devices))):
            print(f"  local rank {r}: {describe(devices[r])}")
    # Every rank builds the same model (fixed seed); DDP also broadcasts rank 0's parameters.
    model = DistributedDataParallel(build_model().to(device))
    optimizer = make_optimizer(model)
    share = args.batch // world
    rows = slice(rank * share, (rank + 1) * share)
    for step, (x, y) in enumerate(synthetic_batches(args.steps, args.batch)):
        loss = train_step(model, optimizer, x[rows].to(device), y[rows].to(device))
        dist.all_reduce(loss)  # Equal shares: the mean of the ranks' means is the global batch's mean.
        if rank == 0:
            print(f"step {step}: loss {loss.item() / world:.8f}", flush=True)
    if rank == 0 and args.save:
        torch.save({k: v.cpu() for k, v in model.module.state_dict().items()}, args.save)
        print(f"final parameters: {args.save}")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
