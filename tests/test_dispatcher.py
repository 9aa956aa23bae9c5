"""The dispatcher: FIFO, max_concurrent slots, max_instances, slots released during retry waits."""
from __future__ import annotations

import threading
import time

from helpers import wait_for

from fastflow.daemon.dispatcher import Dispatcher, Job


class Recorder:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: list[tuple[str, str]] = []
        self.running = 0
        self.peak = 0

    def job(self, run_id: str, pipeline: str, hold: threading.Event, max_instances: int = 5,
            retry_wait: float = 0.0) -> Job:
        def execute(slot):
            with self.lock:
                self.running += 1
                self.peak = max(self.peak, self.running)
                self.events.append(("start", run_id))
            if retry_wait:
                with self.lock:
                    self.running -= 1
                with slot.released():
                    time.sleep(retry_wait)
                with self.lock:
                    self.running += 1
                    self.peak = max(self.peak, self.running)
            hold.wait(10)
            with self.lock:
                self.running -= 1
                self.events.append(("end", run_id))

        return Job(run_id=run_id, pipeline=pipeline, max_instances=max_instances, execute=execute)


def test_fifo_under_max_concurrent_and_nothing_dropped():
    rec, release = Recorder(), threading.Event()
    d = Dispatcher(max_concurrent=2)
    for i in range(6):
        d.submit(rec.job(f"r{i}", f"p{i}", release))
    assert wait_for(lambda: len(d.running()) == 2)
    assert [j.run_id for j in d.queued()] == ["r2", "r3", "r4", "r5"]
    release.set()
    assert d.wait_idle(10)
    starts = [r for kind, r in rec.events if kind == "start"]
    assert starts == [f"r{i}" for i in range(6)]
    assert rec.peak == 2


def test_max_instances_blocks_only_its_own_pipeline():
    rec, release = Recorder(), threading.Event()
    d = Dispatcher(max_concurrent=3)
    d.submit(rec.job("a1", "a", release, max_instances=1))
    d.submit(rec.job("a2", "a", release, max_instances=1))
    d.submit(rec.job("b1", "b", release, max_instances=1))
    assert wait_for(lambda: {j.run_id for j in d.running()} == {"a1", "b1"})
    assert [j.run_id for j in d.queued()] == ["a2"]
    release.set()
    assert d.wait_idle(10)
    assert ("start", "a2") in rec.events


def test_retry_wait_gives_the_slot_back():
    rec, release = Recorder(), threading.Event()
    d = Dispatcher(max_concurrent=1)
    d.submit(rec.job("waiting", "a", release, retry_wait=0.5))
    d.submit(rec.job("other", "b", release))
    # While "waiting" sleeps before its retry, "other" gets the only slot.
    assert wait_for(lambda: ("start", "other") in rec.events, timeout=2)
    release.set()
    assert d.wait_idle(10)
    assert rec.peak == 1


def test_cancel_a_queued_job_removes_it():
    rec, release = Recorder(), threading.Event()
    d = Dispatcher(max_concurrent=1)
    d.submit(rec.job("first", "a", release))
    d.submit(rec.job("second", "b", release))
    assert d.cancel("second")
    assert d.queued() == []
    release.set()
    assert d.wait_idle(10)
    assert ("start", "second") not in rec.events


def test_stop_accepting_returns_the_queue():
    rec, release = Recorder(), threading.Event()
    d = Dispatcher(max_concurrent=1)
    d.submit(rec.job("first", "a", release))
    d.submit(rec.job("second", "b", release))
    dropped = d.stop_accepting()
    assert [j.run_id for j in dropped] == ["second"]
    release.set()
    assert d.wait_idle(10)
