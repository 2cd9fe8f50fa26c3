"""`hal` as a torch.distributed backend: `dist.init_process_group("hal")` (or `"cpu:gloo,hal:hal"`) with each
rank on any `hal:N` device, whichever plugin it belongs to. See docs/collectives.md.

Registration is cheap (torch's autoload runs it inside `import torch`); the process group module, its threads
and Gloo groups load when a group is created.
"""
from __future__ import annotations

import threading
from typing import Any

__all__ = ["BACKEND_NAME", "register", "is_registered"]

BACKEND_NAME = "hal"
_lock = threading.Lock()


def _create(store: Any, rank: int, size: int, timeout: Any) -> Any:
    from hal.collectives.process_group import ProcessGroupHAL

    return ProcessGroupHAL(store, rank, size, timeout)


def is_registered() -> bool:
    import torch.distributed as dist

    return BACKEND_NAME.upper() in dist.Backend._plugins


def register() -> None:
    """Registers the `hal` backend with torch.distributed. Idempotent."""
    import torch.distributed as dist

    with _lock:
        if not is_registered():
            dist.Backend.register_backend(BACKEND_NAME, _create, devices=["hal", "cpu"])
