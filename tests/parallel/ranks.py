"""One rank of the runtime's tests (tests/parallel/test_runtime.py starts one per device).

Env: HAL_TEST_PLAN (plan JSON), HAL_TEST_OUT (folder), HAL_TEST_STEPS, HAL_TEST_BATCH, HAL_TEST_FIRST_STEP;
HAL_TEST_LOAD / HAL_TEST_SAVE: a checkpoint folder to resume from / to write after the last step. Writes
OUT/rank-R.pt: its layers' parameters and gradients of the last step (tensor-parallel shards: with their
layouts), the losses, its role, the size of its optimizer's state (ZeRO-1: its parts)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.parallel import model  # noqa: E402

import hal.parallel  # noqa: E402
from hal.parallel.trainer import resolve_plan  # noqa: E402
from hal.plan.plan import Plan  # noqa: E402


def main() -> int:
    job = hal.parallel.init_job(timeout_s=60)
    plan_text = os.environ.get("HAL_TEST_PLAN")
    plan, why = resolve_plan(job, (lambda c: Plan.from_json(plan_text)) if plan_text else None, model.N_LAYERS)
    trainer = hal.parallel.setup(job, plan, model.layers, model.optimizer, model.loss_fn)
    first = int(os.environ.get("HAL_TEST_FIRST_STEP", "0"))
    if os.environ.get("HAL_TEST_LOAD"):
        state = trainer.load_checkpoint(os.environ["HAL_TEST_LOAD"])
        assert state is not None, "no checkpoint to resume from"
        first = state["step"] + 1
    steps, size = int(os.environ.get("HAL_TEST_STEPS", "2")), int(os.environ.get("HAL_TEST_BATCH", "16"))
    losses = []
    grads = {}
    for s in range(first, first + steps):
        x, y = model.batch(s, size)
        stats = trainer.step(x, y)
        losses.append(stats.loss)
    for i, layer in enumerate(trainer.layers):
        grads[trainer.role.layers[0] + i] = [p.grad.detach().cpu().clone() for p in layer.parameters()]
    if os.environ.get("HAL_TEST_SAVE"):
        trainer.save_checkpoint(os.environ["HAL_TEST_SAVE"], first + steps - 1)
    out = Path(os.environ["HAL_TEST_OUT"])
    from hal.parallel.tensor_parallel import shards_of
    shards = {trainer.role.layers[0] + i: [shards_of(layer).get(n) for n, _ in layer.named_parameters()]
              for i, layer in enumerate(trainer.layers)}
    torch.save({"rank": job.rank, "shards": shards, "device_id": job.device_id, "kind": job.record.kind, "role": trainer.role.__dict__,
                "losses": losses, "grads": grads, "why": why,
                "buckets": {"started_in_backward": trainer.sync.started_in_backward,
                            "total": len(trainer.sync._buckets)},
                # The optimizer's state: elements of each tensor key (exp_avg, ...) and of the stage's parameters.
                "optim_elements": ({k: v.numel() for st in trainer.optimizer.state.values() for k, v in st.items()
                                    if torch.is_tensor(v) and v.dim() > 0} if trainer.optimizer else {}),
                "stage_elements": sum(p.numel() for p in trainer.layers.parameters()),
                "zero": ({"parts": len(trainer.zero.parts), "replicas": [len(s.ranks) for s in trainer.zero.parts],
                          "rest": sum(b - a for a, b, _ in trainer.zero.rest)} if trainer.zero else None),
                "params": {trainer.role.layers[0] + i: [p.detach().cpu().clone() for p in layer.parameters()]
                           for i, layer in enumerate(trainer.layers)}}, out / f"rank-{job.rank}.pt")
    trainer.close()
    print("OK", job.describe(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
