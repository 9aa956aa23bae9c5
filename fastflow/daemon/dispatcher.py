"""The dispatcher: a FIFO queue of runs, `max_concurrent_runs` permits, `max_instances` per pipeline.

Nothing is dropped: a run waits in the queue until a permit is free and its pipeline is below its
`max_instances`; among the runs that may start, the oldest starts first (a run blocked by its
pipeline's `max_instances` does not block others behind it). Each run executes on a thread of
its own. A run waiting before a retry gives its permit back for the wait (`Permit.released`), so
retries with long backoffs never hold the machine; it takes a permit again, in turn, to go on.

No clock and no sleeping here besides waiting on conditions: the callable that executes a job
decides everything about the run itself.
"""
from __future__ import annotations

import logging
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator

logger = logging.getLogger(__name__)


@dataclass
class Job:
    """One queued run. `execute(permit)` runs it to its end; `cancel` asks it to stop."""

    run_id: str
    pipeline: str
    max_instances: int
    execute: Callable[["Permit"], None]
    cancel: threading.Event = field(default_factory=threading.Event)
    started: bool = False


class Permit:
    """The permission a running job holds; `released()` hands it back for a while."""

    def __init__(self, dispatcher: "Dispatcher", job: Job) -> None:
        self._dispatcher = dispatcher
        self._job = job

    @property
    def cancel(self) -> threading.Event:
        """Set when the job is asked to stop (`Dispatcher.cancel`, shutdown)."""
        return self._job.cancel

    @contextmanager
    def released(self) -> Iterator[None]:
        """Give the permit back (e.g. during a retry wait), then wait in turn to take one again."""
        self._dispatcher._release(self._job, keep_instance=True)
        try:
            yield
        finally:
            self._dispatcher._reacquire(self._job)


class Dispatcher:
    """Runs submitted jobs under `max_concurrent` permits and per-pipeline `max_instances`."""

    def __init__(self, max_concurrent: int) -> None:
        if max_concurrent < 1:
            raise ValueError("max_concurrent must be at least 1")
        self.max_concurrent = max_concurrent
        self._cond = threading.Condition()
        self._queue: list[Job] = []  # FIFO of jobs waiting to start
        self._waiting_again: list[Job] = []  # jobs back from a retry wait, served first
        self._running: dict[str, Job] = {}  # run_id -> job holding a permit
        self._instances: dict[str, int] = {}  # pipeline -> jobs started and not finished
        self._paused: dict[str, Job] = {}  # run_id -> job waiting before a retry, permit given back
        self._threads: dict[str, threading.Thread] = {}
        self._accepting = True

    # --- submitting and observing ---------------------------------------------------

    def submit(self, job: Job, first: bool = False) -> None:
        """Queue `job`; it starts as soon as the rules allow. `first` puts it at the head of
        the queue (a re-attached run whose container is already running)."""
        with self._cond:
            if not self._accepting:
                raise RuntimeError("the dispatcher is shutting down and takes no new runs")
            if first:
                self._queue.insert(0, job)
            else:
                self._queue.append(job)
            self._start_eligible()

    def queued(self) -> list[Job]:
        with self._cond:
            return list(self._queue)

    def running(self) -> list[Job]:
        with self._cond:
            return list(self._running.values())

    def active_run_ids(self) -> set[str]:
        """Run ids queued, running, or waiting before a retry."""
        with self._cond:
            ids = {j.run_id for j in self._queue}
            ids.update(self._threads)
            return ids

    def instances(self, pipeline: str) -> int:
        with self._cond:
            return self._instances.get(pipeline, 0)

    def cancel(self, run_id: str) -> bool:
        """Cancel a queued job (removed, never started) or a started one (its event is set)."""
        with self._cond:
            for job in self._queue:
                if job.run_id == run_id:
                    self._queue.remove(job)
                    job.cancel.set()
                    return True
            started = [*self._running.values(), *self._paused.values(), *self._waiting_again]
            thread_job = next((j for j in started if j.run_id == run_id), None)
            if thread_job is not None:
                thread_job.cancel.set()
                self._cond.notify_all()
                return True
            return False

    def stop_accepting(self) -> list[Job]:
        """Take no new jobs; return (and drop) those still queued, for the caller to journal."""
        with self._cond:
            self._accepting = False
            dropped, self._queue = self._queue, []
            return dropped

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until no job is running (or `timeout`); True when idle."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._threads, timeout)

    # --- internals --------------------------------------------------------------------

    def _start_eligible(self) -> None:
        # Jobs back from a retry wait were admitted already: they take free permits first.
        while len(self._running) < self.max_concurrent and not self._waiting_again:
            job = self._next_eligible()
            if job is None:
                return
            self._queue.remove(job)
            job.started = True
            self._running[job.run_id] = job
            self._instances[job.pipeline] = self._instances.get(job.pipeline, 0) + 1
            thread = threading.Thread(target=self._run, args=(job,), name=f"run-{job.run_id}",
                                      daemon=True)
            self._threads[job.run_id] = thread
            thread.start()

    def _next_eligible(self) -> Job | None:
        for job in self._queue:
            if self._instances.get(job.pipeline, 0) < job.max_instances:
                return job
        return None

    def _run(self, job: Job) -> None:
        try:
            job.execute(Permit(self, job))
        except Exception:  # a bug in a job must not kill the dispatcher
            logger.exception("run %s crashed", job.run_id)
        finally:
            with self._cond:
                self._release(job, keep_instance=False)
                self._threads.pop(job.run_id, None)
                self._cond.notify_all()

    def _release(self, job: Job, keep_instance: bool) -> None:
        with self._cond:
            self._running.pop(job.run_id, None)
            if keep_instance:
                self._paused[job.run_id] = job
            else:
                self._instances[job.pipeline] = max(0, self._instances.get(job.pipeline, 1) - 1)
            self._start_eligible()
            self._cond.notify_all()

    def _reacquire(self, job: Job) -> None:
        with self._cond:
            self._paused.pop(job.run_id, None)
            self._waiting_again.append(job)
            self._cond.wait_for(
                lambda: job.cancel.is_set()
                or (self._waiting_again[0] is job and len(self._running) < self.max_concurrent)
            )
            self._waiting_again.remove(job)
            if not job.cancel.is_set():  # a cancelled job ends at once: it needs no permit
                self._running[job.run_id] = job
            self._start_eligible()
            self._cond.notify_all()
