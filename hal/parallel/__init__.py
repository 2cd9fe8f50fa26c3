"""The multi-process training runtime: one process per device, started by `hal launch`, applying a plan.

    job = hal.parallel.init_job()                        # process group, this rank's device, the live devices
    trainer = hal.parallel.setup(job, layers_fn, optimizer_fn, plan_fn=...)   # this rank's share of the plan
    stats = trainer.step(batch)                          # one step: uneven data parallel x 1F1B pipeline

See docs/training.md. The exit codes below are the contract with the launcher (`hal.launch.supervise`).
"""
from __future__ import annotations

__all__ = ["EXIT_DEVICE_LOST", "EXIT_CONFIG", "PlanMismatch"]

# A worker that finds its device gone exits with this (EX_TEMPFAIL): the launcher drops the device and restarts
# the job on the others, as it does for a worker killed by a signal.
EXIT_DEVICE_LOST = 75
# A worker whose configuration cannot work (a plan that does not match the devices, a bad file) exits with
# this (EX_CONFIG): the launcher stops instead of restarting, and exits 2.
EXIT_CONFIG = 78


class PlanMismatch(ValueError):
    """A plan does not match the devices it is run on; the message names node, device, expected and found."""


def __getattr__(name: str):  # the runtime's entry points load torch: import them on first use
    if name in ("init_job", "Job"):
        from hal.parallel import job
        return getattr(job, name)
    if name in ("setup", "Trainer", "StepStats"):
        from hal.parallel import trainer
        return getattr(trainer, name)
    raise AttributeError(f"module 'hal.parallel' has no attribute {name!r}")
