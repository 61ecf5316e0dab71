"""Calls that wait together share a pass: a lone call runs at once, waiting ones go oldest first
in passes of at most ``limit``, keys never mix, an error reaches every caller of its pass, and a
call whose request stops while it waits leaves the queue without running."""

import threading
import time

import pytest

from spikeshot.service.batching import Batcher
from spikeshot.service.errors import Cancelled
from spikeshot.service.executor import NO_CONTROL, Control, Executor


class Worker:
    """A one-worker batcher whose passes are recorded and can be held at their start."""

    def __init__(self, limit=8, fail=False):
        self.executor = Executor(1, 16)
        self.passes: list[tuple[str, list[int]]] = []
        self.entered, self.release = threading.Event(), threading.Event()
        self.release.set()
        self.fail = fail
        self.batcher = Batcher(self.executor, limit, self.run_many)

    def run_many(self, key, queries):
        self.passes.append((key, list(queries)))
        self.entered.set()
        self.release.wait(10)
        if self.fail:
            raise RuntimeError("the pass broke")
        return [10 * q for q in queries]

    def hold(self):
        """Start a call of query 0 on key "k" and keep its pass running until ``release``."""
        self.release.clear()
        results = {}
        thread = self.start("k", 0, results)
        assert self.entered.wait(10)
        return thread, results

    def start(self, key, query, results, control=NO_CONTROL):
        def call():
            try:
                results[query] = self.batcher.run(key, query, control)[0]
            except Exception as e:
                results[query] = e

        thread = threading.Thread(target=call)
        thread.start()
        return thread

    def waiting(self, count):
        deadline = time.monotonic() + 10
        while sum(map(len, self.batcher._waiting.values())) < count:
            assert time.monotonic() < deadline, "the calls never queued"
            time.sleep(0.005)


def test_a_lone_call_runs_at_once_in_a_pass_of_its_own():
    w = Worker()
    result, waited_ms = w.batcher.run("k", 4, NO_CONTROL)
    assert (result, w.passes) == (40, [("k", [4])])
    assert 0 <= waited_ms < 1000
    w.executor.close()


def test_calls_waiting_together_share_passes_of_at_most_limit_oldest_first():
    w = Worker(limit=3)
    first, results = w.hold()
    threads = [first]
    for q in range(1, 6):
        threads.append(w.start("k", q, results))
        w.waiting(q)  # one at a time, so that the queue's order is 1..5
    w.release.set()
    for t in threads:
        t.join(10)
    assert [queries for _, queries in w.passes] == [[0], [1, 2, 3], [4, 5]]
    assert results == {q: 10 * q for q in range(6)}
    w.executor.close()


def test_calls_of_different_keys_never_share_a_pass():
    w = Worker()
    first, results = w.hold()
    threads = [first, w.start("a", 1, results)]
    w.waiting(1)
    threads.append(w.start("b", 2, results))
    w.waiting(2)
    threads.append(w.start("a", 3, results))
    w.waiting(3)
    w.release.set()
    for t in threads:
        t.join(10)
    assert sorted(w.passes) == [("a", [1, 3]), ("b", [2]), ("k", [0])]
    assert results == {0: 0, 1: 10, 2: 20, 3: 30}
    w.executor.close()


def test_an_error_of_a_pass_reaches_each_of_its_callers():
    w = Worker(fail=True)
    first, results = w.hold()
    threads = [first] + [w.start("k", q, results) for q in (1, 2)]
    w.waiting(2)
    w.release.set()
    for t in threads:
        t.join(10)
    assert len(w.passes) == 2
    assert all(isinstance(e, RuntimeError) and "broke" in str(e) for e in results.values())
    w.executor.close()


def test_a_call_whose_request_stops_while_it_waits_leaves_the_queue_unrun():
    w = Worker()
    first, results = w.hold()
    stop = threading.Event()
    stopping = w.start("k", 1, results, Control(is_cancelled=stop.is_set))
    kept = w.start("k", 2, results)
    w.waiting(2)
    stop.set()
    stopping.join(10)
    assert isinstance(results[1], Cancelled)
    w.release.set()
    for t in (first, kept):
        t.join(10)
    assert [queries for _, queries in w.passes] == [[0], [2]]
    assert results[2] == 20
    w.executor.close()


def test_a_pass_needs_room_for_one_call():
    with pytest.raises(ValueError, match="limit 0"):
        Batcher(Executor(1, 0), 0, lambda key, queries: queries)
