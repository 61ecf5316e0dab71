"""The bounded executor of model work, and the control of a request's deadline and cancellation.

gRPC threads read and write streams; adaptation and forward passes run here, on ``workers`` threads
(default: the usable cores) with at most ``queue_limit`` jobs waiting. Past that, ``run`` raises
``ResourceExhausted`` at once rather than growing a backlog. The caller's thread waits for its job
and keeps checking its ``Control``: a job still queued when its request is cancelled or its deadline
passes is dropped, and a running inner loop stops at its next step (the engine calls
``Control.check`` before each).

torch runs each operation on its own intra-op thread pool, shared by all workers.
``configure_torch`` sets that pool's size once, at startup: with one worker per core, one thread
each avoids oversubscribing the cores.
"""

from __future__ import annotations

import concurrent.futures
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from spikeshot.service.errors import Cancelled, DeadlineExceeded, ResourceExhausted, Unavailable

T = TypeVar("T")
POLL_S = 0.05


def usable_cores() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def configure_torch(threads: int) -> None:
    """Set torch's intra-op thread count (call once, at startup, before any model work)."""
    import torch

    if threads < 1:
        raise ValueError(f"torch threads must be >= 1, got {threads}")
    torch.set_num_threads(threads)


@dataclass(frozen=True)
class Control:
    """When a request's work must stop: a ``deadline`` on ``clock`` (seconds, by default
    ``time.monotonic``), and an ``is_cancelled`` check (for gRPC: ``lambda: not
    context.is_active()``)."""

    deadline: float | None = None
    is_cancelled: Callable[[], bool] | None = None
    clock: Callable[[], float] = time.monotonic

    @classmethod
    def within(
        cls,
        seconds: float | None,
        is_cancelled: Callable[[], bool] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> Control:
        """A control whose deadline is ``seconds`` from now on ``clock`` (None: no deadline)."""
        return cls(None if seconds is None else clock() + seconds, is_cancelled, clock)

    def check(self) -> None:
        """Raise ``Cancelled`` or ``DeadlineExceeded`` when the work must stop."""
        if self.is_cancelled is not None and self.is_cancelled():
            raise Cancelled("the request was cancelled")
        if self.deadline is not None and self.clock() >= self.deadline:
            raise DeadlineExceeded("the request's deadline passed before its work finished")


NO_CONTROL = Control()


class Executor:
    """``workers`` threads of model work with at most ``queue_limit`` jobs waiting."""

    def __init__(self, workers: int, queue_limit: int, after_job: Callable[[], None] | None = None):
        if workers < 1 or queue_limit < 0:
            raise ValueError(
                f"need workers >= 1 and queue_limit >= 0, got {workers} and {queue_limit}"
            )
        self.workers, self.queue_limit = workers, queue_limit
        self._pool = concurrent.futures.ThreadPoolExecutor(workers, "spikeshot-model")
        self._lock = threading.Lock()
        self._in_flight = 0
        self._after_job = after_job  # on the worker, once the job's caller has its result
        self._closed = False

    @property
    def in_flight(self) -> int:
        """Jobs running or queued."""
        return self._in_flight

    def run(self, fn: Callable[[], T], control: Control = NO_CONTROL) -> tuple[T, float]:
        """Run ``fn()`` on a worker and wait for it; return its result and the milliseconds it
        waited in the queue. Raises ``ResourceExhausted`` when the queue is full, ``Unavailable``
        after ``close``, and the control's error when the request stops first."""
        control.check()
        with self._lock:
            if self._closed:
                raise Unavailable("the engine is shutting down")
            if self._in_flight >= self.workers + self.queue_limit:
                raise ResourceExhausted(
                    f"the model executor is full ({self.workers} jobs running, "
                    f"{self.queue_limit} queued); retry later"
                )
            self._in_flight += 1
        submitted = time.perf_counter()
        started: list[float] = []

        def job():
            started.append(time.perf_counter())
            control.check()
            return fn()

        future = self._pool.submit(job)
        future.add_done_callback(self._release)
        while True:
            try:
                result = future.result(timeout=POLL_S)
            except concurrent.futures.TimeoutError:
                try:
                    control.check()
                except (Cancelled, DeadlineExceeded):
                    if future.cancel():
                        raise
                continue
            except concurrent.futures.CancelledError:
                raise Unavailable("the engine shut down before the job ran") from None
            return result, 1000.0 * (started[0] - submitted)

    def _release(self, _future) -> None:
        with self._lock:
            self._in_flight -= 1
        if self._after_job is not None:
            self._after_job()

    def close(self) -> None:
        """Refuse new jobs, drop queued ones and wait for the running ones."""
        with self._lock:
            self._closed = True
        self._pool.shutdown(wait=True, cancel_futures=True)
