"""The daemon's side of the scheduler: keeps the plan, acts on what each tick decides.

`fastflow.schedule.planner` is pure (schedules + watermarks + active runs + now -> due runs, skipped
slots, next wake-up). A `Timetable` holds what it needs between ticks and turns its answers into
actions through callbacks the daemon gives it, so it holds no reference to the daemon:

- `start(due)` queues a run of a slot (its run id is derived from the slot);
- `skip(record)` stores the record of a slot deliberately not run (`skipped`, with the reason);
- `cancel(run_id)` cancels a running run (overlap: replace);
- `save(watermarks_json)` persists the watermarks (on the results branch, `state/scheduler.json`).

Overlap `queue` and `replace` runs wait here, not in the dispatcher: a schedule's waiting run is
released when none of its runs is running any more (after `replace` cancelled them).
"""
from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Mapping

from fastflow.model import RunStatus
from fastflow.record import ErrorInfo, RunRecord, Trigger
from fastflow.schedule.planner import (
    Action,
    ActiveRun,
    DueRun,
    SchedulePlan,
    SkippedSlot,
    decide,
    plan_schedules,
    watermarks_from_json,
    watermarks_to_json,
)
from fastflow.schedule.spec import Schedule

logger = logging.getLogger(__name__)
UTC = timezone.utc


@dataclass(frozen=True)
class NextRun:
    """A schedule's next slot, for `state/deployment.json`, the site and `fastflow status`."""

    schedule: Schedule
    at: datetime

    def to_json(self) -> dict[str, Any]:
        return {"id": self.schedule.id, "pipeline": self.schedule.pipeline,
                "description": self.schedule.describe(), "timezone": self.schedule.timezone,
                "next_at": self.at.astimezone(UTC).isoformat(),
                "next_local": self.at.astimezone(self.schedule.zone).isoformat()}


def slot_trigger(due: DueRun) -> Trigger:
    """The trigger recorded for a scheduled run."""
    return Trigger(kind="schedule", schedule_id=due.schedule.id, slot=due.slot.at)


def skipped_record(skipped: SkippedSlot, now: datetime) -> RunRecord:
    """The record of a slot not run: status `skipped`, the reason as its error."""
    message = f"{skipped.reason.value}: {skipped.detail}"
    if skipped.count > 1 and skipped.last is not None:
        message += (f" ({skipped.count} slots from {skipped.slot.at.isoformat()} to "
                    f"{skipped.last.isoformat()}, recorded as one)")
    schedule = skipped.slot.schedule
    return RunRecord(
        run_id=skipped.run_id, pipeline=schedule.pipeline, status=RunStatus.SKIPPED,
        run_config=schedule.run_config,
        trigger=Trigger(kind="schedule", schedule_id=schedule.id, slot=skipped.slot.at),
        error=ErrorInfo("skipped", message), queued_at=now, finished_at=now,
    )


def schedule_info(schedules: Iterable[Schedule], upcoming: Iterable[NextRun]
                  ) -> tuple[dict[str, list[Schedule]], dict[str, tuple[datetime, str]]]:
    """For the site: the schedules of each pipeline, and each pipeline's soonest next slot
    with its zone (`upcoming` soonest first, as `Timetable.next_runs` gives them)."""
    by_pipeline: dict[str, list[Schedule]] = {}
    for schedule in schedules:
        by_pipeline.setdefault(schedule.pipeline, []).append(schedule)
    next_runs: dict[str, tuple[datetime, str]] = {}
    for entry in upcoming:
        next_runs.setdefault(entry.schedule.pipeline, (entry.at, entry.schedule.timezone))
    return by_pipeline, next_runs


class Timetable:
    """The scheduler's state in the daemon; see the module doc."""

    def __init__(self, *, start: Callable[[DueRun], bool], skip: Callable[[RunRecord], None],
                 cancel: Callable[[str], None], save: Callable[[dict], None]) -> None:
        self._start = start
        self._skip = skip
        self._cancel = cancel
        self._save = save
        self.plan: SchedulePlan | None = None
        self.watermarks: dict = {}
        self.running: dict[str, set[str]] = {}  # schedule id -> run ids started, not ended
        self.waiting: dict[str, deque[DueRun]] = {}  # overlap queue/replace, in slot order
        self._schedule_of: dict[str, str] = {}  # run id -> schedule id
        self._marks_json: dict = {}  # watermarks_to_json's cache: only changed ones are formatted

    def load(self, data: Mapping | None, source: str) -> None:
        """Watermarks from `state/scheduler.json` (None: none yet, schedules start now)."""
        self.watermarks = watermarks_from_json(data, source) if data is not None else {}

    def activate(self, schedules: Iterable[Schedule], now: datetime) -> None:
        """Use a new schedule set (at start and after a sync); carries watermarks over by id."""
        self.plan = plan_schedules(schedules, self.watermarks, now, previous=self.plan)
        if self.plan.watermarks != self.watermarks:
            self.watermarks = dict(self.plan.watermarks)
            self._save(watermarks_to_json(self.watermarks, self._marks_json))
        for sid in list(self.waiting):
            if sid not in self.plan.schedules:  # removed or disabled: its waiting runs go
                for due in self.waiting.pop(sid):
                    logger.info("schedule %s is gone; its waiting run %s is dropped", sid, due.run_id)

    def track(self, run_id: str, schedule_id: str) -> None:
        """A run of `schedule_id` is active (started now, or found in the journal at start)."""
        self.running.setdefault(schedule_id, set()).add(run_id)
        self._schedule_of[run_id] = schedule_id

    def ended(self, run_id: str) -> None:
        """A run's record is stored: release the schedule's next waiting run, if any."""
        sid = self._schedule_of.pop(run_id, None)
        if sid is None:
            return
        runs = self.running.get(sid, set())
        runs.discard(run_id)
        if not runs:
            self._release(sid)

    def fire_due(self, now: datetime) -> datetime | None:
        """Handle every due slot; returns the next wake-up (None: no slot will ever come)."""
        if self.plan is None:
            return None
        active = {sid: [ActiveRun(r) for r in runs] for sid, runs in self.running.items() if runs}
        for sid, queue in self.waiting.items():
            active.setdefault(sid, []).extend(ActiveRun(d.run_id, RunStatus.QUEUED) for d in queue)
        result = decide(self.plan, active, now)
        self.plan = result.plan
        for skipped in result.skipped:
            self._skip(skipped_record(skipped, now))
        for due in result.runs:
            self._act(due)
        if result.watermarks != self.watermarks:
            self.watermarks = dict(result.watermarks)
            self._save(watermarks_to_json(self.watermarks, self._marks_json))
        return result.next_wakeup

    def next_runs(self) -> list[NextRun]:
        """Every schedule's next slot, soonest first."""
        if self.plan is None:
            return []
        found = [NextRun(self.plan.schedules[sid], datetime.fromtimestamp(ts, UTC))
                 for ts, sid, *_ in self.plan.heap]
        return sorted(found, key=lambda n: (n.at, n.schedule.id))

    def _act(self, due: DueRun) -> None:
        sid = due.schedule.id
        if due.action is Action.REPLACE:
            for run_id in due.cancel:
                self._drop_waiting(sid, run_id)
                if run_id in self.running.get(sid, ()):
                    logger.info("schedule %s: cancelling %s for %s (overlap: replace)", sid,
                                run_id, due.run_id)
                    self._cancel(run_id)
            self.waiting.setdefault(sid, deque()).appendleft(due)
        elif due.action is Action.QUEUE:
            self.waiting.setdefault(sid, deque()).append(due)
        else:
            self._launch(due)
            return
        if not self.running.get(sid):
            self._release(sid)

    def _drop_waiting(self, sid: str, run_id: str) -> None:
        queue = self.waiting.get(sid)
        if queue:
            kept = [d for d in queue if d.run_id != run_id]
            self.waiting[sid] = deque(kept)

    def _release(self, sid: str) -> None:
        queue = self.waiting.get(sid)
        while queue:
            due = queue.popleft()
            if self._launch(due):
                break
        if queue is not None and not queue:
            self.waiting.pop(sid, None)

    def _launch(self, due: DueRun) -> bool:
        if self._start(due):
            self.track(due.run_id, due.schedule.id)
            return True
        return False
