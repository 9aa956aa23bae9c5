"""Pre-heat coordination: fill the shared uv cache for pipelines whose dependencies changed.

The work itself is the executor's `preheat` (`Executor.preheat`: a trusted container that
installs a pipeline's requirements into the shared cache for Docker, uv on the host for the
host executor), so pre-heats fill the cache the runs of that executor read. This module
decides *when*, with bounded parallelism, and keeps each pipeline's dependency state for the
runs:

- `ready`: the cache holds the pipeline's packages; a run installs nothing.
- `in_progress`: a run of that pipeline waits for it (never reads a half-written result).
- `broken`: the install failed; runs fail fast with uv's message until a push fixes it.

The state of each pipeline is also written to `<state_dir>/preheat/<pipeline>.json` (the
requirements hash, Python version, outcome, uv's output tail), outside the git tree.
"""
from __future__ import annotations

import json
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Callable

from fastflow.defaults import STATE_PREHEAT
from fastflow.executors.base import PreheatFunction, PreheatJob, PreheatOutcome
from fastflow.files import write_atomic

logger = logging.getLogger(__name__)

READY = "ready"
IN_PROGRESS = "in_progress"
BROKEN = "broken"


@dataclass(frozen=True)
class DependencyState:
    pipeline: str
    status: str
    message: str
    key: str | None
    python_version: str | None
    at: str


class Preheater:
    """Runs pre-heats (`preheat`: an executor's `preheat`) on a bounded pool and tracks each
    pipeline's dependency state."""

    def __init__(self, preheat: PreheatFunction, state_dir: Path,
                 clock: Callable[[], datetime], max_parallel: int = 2) -> None:
        self._preheat = preheat
        self._dir = Path(state_dir) / STATE_PREHEAT
        self._dir.mkdir(parents=True, exist_ok=True)
        self._clock = clock
        self._pool = ThreadPoolExecutor(max_workers=max_parallel, thread_name_prefix="preheat")
        self._cond = threading.Condition()
        self._states: dict[str, DependencyState] = {}
        self._generation: dict[str, int] = {}
        for path in self._dir.glob("*.json"):
            try:
                state = DependencyState(**json.loads(path.read_text()))
            except (ValueError, TypeError):
                continue
            if state.status != IN_PROGRESS:  # an interrupted pre-heat is redone when needed
                self._states[state.pipeline] = state

    def submit(self, job: PreheatJob) -> None:
        """Pre-heat `job` in the background; the pipeline is `in_progress` until it ends. A newer
        submission for the same pipeline supersedes an older one still running."""
        with self._cond:
            generation = self._generation.get(job.pipeline, 0) + 1
            self._generation[job.pipeline] = generation
            self._set(job.pipeline, IN_PROGRESS, "pre-heating", None, job.python_version)
        self._pool.submit(self._work, job, generation)

    def _work(self, job: PreheatJob, generation: int) -> None:
        try:
            outcome = self._preheat(job)
        except Exception as exc:  # an engine or I/O failure: the pipeline cannot run as is
            logger.exception("pre-heat of %s failed", job.pipeline)
            outcome = PreheatOutcome(False, f"pre-heat could not run: {exc}")
        with self._cond:
            if self._generation.get(job.pipeline) != generation:
                return  # superseded by a newer push
            status = READY if outcome.ok else BROKEN
            self._set(job.pipeline, status, outcome.message, outcome.key, job.python_version)
        level = logging.INFO if outcome.ok else logging.WARNING
        logger.log(level, "pre-heat of %s: %s %s", job.pipeline, status, outcome.message)

    def _set(self, pipeline: str, status: str, message: str, key: str | None,
             python_version: str | None) -> None:
        state = DependencyState(pipeline, status, message, key, python_version,
                                self._clock().isoformat())
        self._states[pipeline] = state
        path = self._dir / f"{pipeline}.json"
        write_atomic(path, json.dumps(asdict(state), indent=2))
        self._cond.notify_all()

    def forget(self, pipeline: str) -> None:
        """The pipeline has no requirements any more (or was removed): nothing to wait for."""
        with self._cond:
            self._generation[pipeline] = self._generation.get(pipeline, 0) + 1
            self._states.pop(pipeline, None)
            (self._dir / f"{pipeline}.json").unlink(missing_ok=True)
            self._cond.notify_all()

    def state(self, pipeline: str) -> DependencyState | None:
        with self._cond:
            return self._states.get(pipeline)

    def states(self) -> dict[str, DependencyState]:
        with self._cond:
            return dict(self._states)

    def wait_ready(self, pipeline: str, cancel: threading.Event | None = None) -> str | None:
        """Wait while the pipeline's pre-heat is in progress; return the broken message, if any."""
        with self._cond:
            while True:
                state = self._states.get(pipeline)
                if state is None or state.status == READY:
                    return None
                if state.status == BROKEN:
                    return state.message
                if cancel is not None and cancel.is_set():
                    return None
                self._cond.wait(0.5)

    def wait_all(self, timeout: float | None = None) -> bool:
        """Wait until no pre-heat is in progress (tests, `fastflow sync`)."""
        with self._cond:
            return self._cond.wait_for(
                lambda: all(s.status != IN_PROGRESS for s in self._states.values()), timeout
            )

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
