"""The work handle of one `hal` collective: a `dist._Work` that the group's worker completes or fails.

torch (and DDP's reducer, through c10d's Python trampoline) sees wait(), is_completed(), exception() and
get_future(); the future completes with the op's output tensors, the value torch's own backends give.
"""
from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist


class Work(dist._Work):
    def __init__(self, op: str, seq: int) -> None:
        super().__init__()
        self.op = op
        self.seq = seq
        self._done = threading.Event()
        self._exception: BaseException | None = None
        self._result: list[torch.Tensor] = []
        self._future: torch.futures.Future = torch.futures.Future()

    # --- Called by the worker (the first call wins) ---------------------------------------------------------------------------
    def _complete(self, result: list[torch.Tensor]) -> None:
        if self._done.is_set():  # Failed by abort() meanwhile.
            return
        self._result = result
        self._done.set()
        self._future.set_result(result)

    def _fail(self, exception: BaseException) -> None:
        if self._done.is_set():
            return
        self._exception = exception
        self._done.set()
        self._future.set_exception(exception)

    # --- torch's Work interface -------------------------------------------------------------------------------
    def wait(self, timeout: timedelta = timedelta(0)) -> bool:
        """Blocks until the op finished; raises its error. A zero timeout waits as long as the op may take
        (every op is bounded by the group's timeout); a positive one raises DistBackendError when it passes."""
        seconds = timeout.total_seconds() if isinstance(timeout, timedelta) else float(timeout) / 1000.0
        if not self._done.wait(seconds if seconds > 0 else None):
            raise dist.DistBackendError(f"hal: {self.op} (op #{self.seq}) did not finish within the {seconds:.1f} s "
                                        f"given to Work.wait()")
        if self._exception is not None:
            raise self._exception
        return True

    def is_completed(self) -> bool:
        return self._done.is_set()

    def is_success(self) -> bool:
        return self._done.is_set() and self._exception is None

    def exception(self) -> Any:
        return self._exception

    def result(self) -> list[torch.Tensor]:
        self.wait()
        return self._result

    def get_future(self) -> torch.futures.Future:
        return self._future

    def synchronize(self) -> None:
        self.wait()
