"""The group's worker: runs its ops in issue order (every rank issues the same order) on two threads.

An op is a `start` callable that launches it (device-to-host copies, an async Gloo call, a communicator call
queued on a stream) and returns a `finish` callable that waits for it and writes the results. The issue
thread runs starts in FIFO order; the completion thread runs finishes in the same order. So ops overlap (op 2
starts while op 1's Gloo exchange runs; an isend and the matching irecv are both posted before either is
waited for) and works complete in issue order.

An op whose start only queues device work (a plugin communicator's call on its stream) may be started on the
caller's thread instead when nothing is queued before it (`submit(..., inline=...)`): one thread hop less per
op, which is most of a small collective's latency. Starts still run one at a time and in issue order (the
issue lock), and the completion thread still finishes it.

After an op fails the group is broken (a peer is gone or a transport is in an unknown state, as with NCCL):
later ops fail at once, naming the first failure, instead of each waiting out the timeout again.
"""
from __future__ import annotations

import queue
import threading
import time
from typing import Callable

import torch.distributed as dist

from hal.collectives.work import Work

Finish = Callable[[], list]
Start = Callable[[], Finish]


class OpFailed(dist.DistBackendError):
    """A collective that failed in the worker: names the op, its sequence number, its size, this rank, the
    seconds since it was issued and the transport's error (torch code catching DistBackendError sees it)."""


class Worker:
    def __init__(self, name: str, describe: Callable[[], str]) -> None:
        self._describe = describe
        self._issue: queue.SimpleQueue = queue.SimpleQueue()
        self._finish: queue.SimpleQueue = queue.SimpleQueue()
        self._broken: BaseException | None = None
        self._closed = False
        self._lock = threading.Lock()
        self._pending: set[Work] = set()
        self._queued = 0                      # Submitted ops whose start has not run yet; guarded by _lock.
        self._issue_lock = threading.Lock()   # Held by whoever runs a start: one at a time, in order.
        self._threads = [threading.Thread(target=self._issue_loop, name=f"{name}-issue", daemon=True),
                         threading.Thread(target=self._finish_loop, name=f"{name}-finish", daemon=True)]
        for t in self._threads:
            t.start()

    def submit(self, work: Work, nbytes: int, start: Start, inline: Callable[[], Finish | None] | None = None) -> Work:
        """Queues |work|. |inline|, if given, is a start that never blocks, or returns None without doing anything
        (then |start| runs on the issue thread as usual): it runs here when nothing is queued before it."""
        began = time.monotonic()
        with self._lock:
            if self._closed:
                raise dist.DistBackendError(f"hal: {work.op} on a process group that was shut down or aborted")
            self._pending.add(work)
            self._queued += 1
            here = inline is not None and self._queued == 1 and self._broken is None
            if not here:
                self._issue.put((work, nbytes, start, began))
        if here:
            with self._issue_lock:
                try:
                    finish = inline()
                except BaseException as e:  # noqa: BLE001 - becomes the Work's error, as on the issue thread.
                    err = self._error(work, nbytes, began, e)
                    self._broken = self._broken or err
                    self._finish.put((work, nbytes, None, began, err))
                    finish = err
                if finish is None:  # Not a device op after all: the issue thread runs |start|, still in order.
                    self._issue.put((work, nbytes, start, began))
                    return work
                if not isinstance(finish, BaseException):
                    self._finish.put((work, nbytes, finish, began, None))
            self._started()
        return work

    def _started(self) -> None:
        with self._lock:
            self._queued -= 1

    def _settle(self, work: Work, result: list | None, err: BaseException | None) -> None:
        with self._lock:
            self._pending.discard(work)
        if err is None:
            work._complete(result)
        else:
            work._fail(err)

    def _error(self, work: Work, nbytes: int, began: float, e: BaseException) -> BaseException:
        if isinstance(e, OpFailed):
            return e
        return OpFailed(f"hal: {work.op} (op #{work.seq}, {nbytes} bytes, {self._describe()}) failed after "
                        f"{time.monotonic() - began:.1f} s: {type(e).__name__}: {e}")

    def _issue_loop(self) -> None:
        while True:
            item = self._issue.get()
            if item is None:
                self._finish.put(None)
                return
            work, nbytes, start, began = item
            with self._issue_lock:
                self._start(work, nbytes, start, began)
            self._started()

    def _start(self, work: Work, nbytes: int, start: Start, began: float) -> None:
        if self._broken is not None:
            self._finish.put((work, nbytes, None, began, self._broken))
            return
        try:
            finish = start()
        except BaseException as e:  # noqa: BLE001 - becomes the Work's error.
            err = self._error(work, nbytes, began, e)
            self._broken = self._broken or err
            self._finish.put((work, nbytes, None, began, err))
            return
        self._finish.put((work, nbytes, finish, began, None))

    def _finish_loop(self) -> None:
        while True:
            item = self._finish.get()
            if item is None:
                return
            work, nbytes, finish, began, err = item
            if err is None and self._broken is not None:
                err = OpFailed(f"hal: {work.op} (op #{work.seq}) not completed: the group failed before it "
                               f"finished ({self._broken})")
            result = None
            if err is None:
                try:
                    result = finish()
                except BaseException as e:  # noqa: BLE001
                    err = self._error(work, nbytes, began, e)
                    self._broken = self._broken or err
            self._settle(work, result, err)

    def fail_pending(self, reason: str) -> None:
        """Fails every op not finished yet, now (abort); the threads drain the queue without running them."""
        err = OpFailed(reason)
        self._broken = self._broken or err
        with self._lock:
            pending, self._pending = self._pending, set()
        for work in pending:
            work._fail(err)

    def close(self, timeout: float | None = None) -> None:
        # After a start running on a caller's thread (it holds the issue lock): its finish must be queued
        # before the end marker, or the completion thread would stop without completing it.
        with self._issue_lock, self._lock:
            if self._closed:
                return
            self._closed = True
            self._issue.put(None)
        for t in self._threads:
            if t is not threading.current_thread():
                t.join(timeout)
