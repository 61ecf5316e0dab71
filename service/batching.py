"""Classify calls that arrive together run as one forward pass.

A call puts its query in its model's queue and asks the executor for a worker. The worker takes
the queries waiting for that model then (``limit`` at most, oldest first, its own or others') and
runs them in one pass (``Network.forward_grouped``: the sessions' networks side by side as channel
groups, each query's answer the one its own forward gives). Queries that arrive while the workers
are busy so share the next free one, and a lone call runs at once: no call waits for others. A
worker whose query another pass took returns at once, and its caller waits for that pass.

A query still queued when its request stops leaves the queue; one already taken is computed and
its answer dropped. The executor's bounds hold per call: each query holds one place in its queue.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Hashable, Sequence
from typing import Generic, TypeVar

from spikeshot.service.executor import POLL_S, Control, Executor

Q = TypeVar("Q")
R = TypeVar("R")


class _Call(Generic[Q, R]):
    def __init__(self, query: Q):
        self.query = query
        self.submitted = time.perf_counter()
        self.started = self.submitted
        self.done = threading.Event()
        self.result: R | None = None
        self.error: BaseException | None = None


class Batcher(Generic[Q, R]):
    """Runs ``run_many(key, queries) -> results`` (one result per query, in order) on the
    ``executor`` for the queries of one ``key`` waiting together, ``limit`` at most a pass."""

    def __init__(
        self,
        executor: Executor,
        limit: int,
        run_many: Callable[[Hashable, Sequence[Q]], Sequence[R]],
    ):
        if limit < 1:
            raise ValueError(f"a pass needs room for one query, got limit {limit}")
        self.executor, self.limit, self.run_many = executor, limit, run_many
        self._waiting: defaultdict[Hashable, deque[_Call]] = defaultdict(deque)
        self._lock = threading.Lock()

    def run(self, key: Hashable, query: Q, control: Control) -> tuple[R, float]:
        """The result of ``query`` and the milliseconds it waited for its pass."""
        call: _Call[Q, R] = _Call(query)
        with self._lock:
            self._waiting[key].append(call)
        try:
            self.executor.run(lambda: self._pass(key), control)
            while not call.done.wait(POLL_S):  # another worker's pass took it
                control.check()
        except BaseException:
            self._withdraw(key, call)
            raise
        if call.error is not None:
            raise call.error
        return call.result, 1000.0 * (call.started - call.submitted)

    def _withdraw(self, key: Hashable, call: _Call) -> None:
        with self._lock:
            waiting = self._waiting.get(key)
            if waiting is not None and call in waiting:
                waiting.remove(call)

    def _pass(self, key: Hashable) -> None:
        with self._lock:
            waiting = self._waiting[key]
            calls = [waiting.popleft() for _ in range(min(self.limit, len(waiting)))]
            if not waiting:
                del self._waiting[key]
        if not calls:
            return
        started = time.perf_counter()
        for call in calls:
            call.started = started
        try:
            results = self.run_many(key, [call.query for call in calls])
        except BaseException as e:  # every caller of the pass gets its error
            for call in calls:
                call.error = e
        else:
            for call, result in zip(calls, results, strict=True):
                call.result = result
        for call in calls:
            call.done.set()
