"""When to notify whom, decided: pure functions of a pipeline's `Tally`, the targets, what
happened and `now` (no I/O, no clock; `daemon.alerts` does the I/O around them).

`run_events` for a recorded run (failure, recovery, every_failure, after, soft_limit),
`stuck_events` for a running one, `missed_slots` for schedule slots without a run; `Groups`
holds the events of each target for its group window, so events close together go out as one
message. Reference: docs/notifications.md, "Events".
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Callable, Mapping, Sequence

from fastflow.model import NotificationTarget, NotifyEvent, RunStatus
from fastflow.notify.message import Event
from fastflow.record import RunRecord
from fastflow.schedule.planner import iter_slots
from fastflow.schedule.spec import Schedule

FAILURES = frozenset({RunStatus.FAILED, RunStatus.TIMED_OUT, RunStatus.OOM_KILLED, RunStatus.LOST})
# A run matches at most one of these per target, the first that applies.
RUN_KINDS = (NotifyEvent.RECOVERY, NotifyEvent.FAILURE, NotifyEvent.AFTER,
             NotifyEvent.EVERY_FAILURE)
DURATIONS_KEPT = 20  # succeeded runs' durations kept for the median of `stuck`
MIN_DURATIONS = 3  # fewer than this: no median, `stuck` only by `stuck_after`
MAX_SLOTS_CHECKED = 100  # schedule slots looked at per schedule and round
REFUSED = "refused"  # the error kind of a run request the daemon refused (daemon.requests)


@dataclass(frozen=True)
class Tally:
    """What the alerts remember of one pipeline."""

    last: str | None = None  # "success" or "failure": the last outcome that counts
    failures: int = 0  # consecutive failures up to now
    durations: tuple[float, ...] = ()  # of the last succeeded runs, oldest first
    sent: Mapping[str, str] = field(default_factory=dict)  # "target/kind" -> when last sent

    def to_json(self) -> dict:
        return {"last": self.last, "failures": self.failures, "durations": list(self.durations),
                "sent": dict(self.sent)}

    @classmethod
    def from_json(cls, data: Mapping) -> "Tally":
        return cls(last=data.get("last"), failures=int(data.get("failures") or 0),
                   durations=tuple(float(d) for d in data.get("durations") or ()),
                   sent=dict(data.get("sent") or {}))


def _sent_key(target: NotificationTarget, kind: str, about: str = "") -> str:
    return f"{target.name}/{kind}" + (f"/{about}" if about else "")


def _may_repeat(tally: Tally, key: str, target: NotificationTarget, now: datetime) -> bool:
    """Whether a message already sent (`key`) may go again: only with `repeat`, once that many
    seconds have passed."""
    if target.repeat is None or key not in tally.sent:
        return False
    return (now - datetime.fromisoformat(tally.sent[key])).total_seconds() >= target.repeat


def run_events(tally: Tally, record: RunRecord, targets: Sequence[NotificationTarget],
               now: datetime) -> tuple[Tally, list[tuple[NotificationTarget, str, str]]]:
    """The tally after `record` and what each target hears of it: (target, kind, detail).

    `failure`: a failed outcome (failed, timed_out, oom_killed, lost) after a success or as
    the first outcome known; while the failures go on, again only with `repeat`. `recovery`:
    a success after failures. `every_failure`: each failed outcome. `after`: the `after`-th
    consecutive failure (with `repeat`, each later one once `repeat` passed). Cancelled and
    skipped runs, and refused requests (error kind `refused`: they never ran), change nothing. `soft_limit`: the run went over a soft limit."""
    status = record.status
    if record.error is not None and record.error.kind == REFUSED:
        return tally, []  # a refused request never ran: the pipeline's state is unchanged
    failed, succeeded = status in FAILURES, status is RunStatus.SUCCEEDED
    failures = tally.failures + 1 if failed else 0 if succeeded else tally.failures
    found: list[tuple[NotificationTarget, str, str]] = []
    sent = dict(tally.sent)
    for target in targets:
        kind, detail = _run_kind(tally, target, failed, succeeded, failures, now)
        if kind is not None:
            found.append((target, kind, detail))
            sent[_sent_key(target, kind)] = now.isoformat()
            if kind == NotifyEvent.RECOVERY.value:  # a new streak starts afresh
                for other in (NotifyEvent.FAILURE, NotifyEvent.AFTER):
                    sent.pop(_sent_key(target, other.value), None)
        events = record.resources.soft_limit_events if record.resources else ()
        told = _sent_key(target, NotifyEvent.SOFT_LIMIT.value, record.run_id) in tally.sent
        if NotifyEvent.SOFT_LIMIT in target.events and events and not told:  # not told live
            found.append((target, NotifyEvent.SOFT_LIMIT.value, _soft_limit_detail(events)))
    ended = (f"/{NotifyEvent.STUCK.value}/{record.run_id}",  # a run that ended is stuck no
             f"/{NotifyEvent.SOFT_LIMIT.value}/{record.run_id}")  # more, nor over a limit
    sent = {k: v for k, v in sent.items() if not k.endswith(ended)}
    durations = tally.durations
    if succeeded and record.duration_s is not None:
        durations = (durations + (float(record.duration_s),))[-DURATIONS_KEPT:]
    last = "failure" if failed else "success" if succeeded else tally.last
    return Tally(last, failures, durations, sent), found


def _run_kind(tally: Tally, target: NotificationTarget, failed: bool, succeeded: bool,
              failures: int, now: datetime) -> tuple[str | None, str]:
    wanted = set(target.events)
    if succeeded and tally.last == "failure" and NotifyEvent.RECOVERY in wanted:
        return NotifyEvent.RECOVERY.value, f"after {tally.failures} failed run" + \
            ("s" if tally.failures != 1 else "")
    if not failed:
        return None, ""
    streak = f"{failures} consecutive failures" if failures > 1 else ""
    if NotifyEvent.FAILURE in wanted:
        key = _sent_key(target, NotifyEvent.FAILURE.value)
        if tally.last != "failure" or _may_repeat(tally, key, target, now):
            return NotifyEvent.FAILURE.value, streak
    if NotifyEvent.AFTER in wanted:
        key = _sent_key(target, NotifyEvent.AFTER.value)
        if failures == target.after or (failures > target.after
                                        and _may_repeat(tally, key, target, now)):
            return NotifyEvent.AFTER.value, f"{failures} consecutive failures"
    if NotifyEvent.EVERY_FAILURE in wanted:
        return NotifyEvent.EVERY_FAILURE.value, streak
    return None, ""


def _soft_limit_detail(events: Sequence) -> str:
    """The first excess of a run, from its `soft_limit_events` ({t, kind, value, limit})."""
    first = events[0] if isinstance(events[0], Mapping) else {}
    kind, at = first.get("kind", "a"), first.get("t")
    text = f"first over its {kind} soft limit"
    if first.get("value") is not None and first.get("limit") is not None:
        text += f" ({first['value']} > {first['limit']})"
    if at is not None:
        text += f" {at} s into the run"
    return text + (f"; {len(events)} excesses in all" if len(events) > 1 else "")


def stuck_limit(target: NotificationTarget, durations: Sequence[float]) -> float | None:
    """Seconds after which a run counts as stuck for `target`: `stuck_after`, else
    `stuck_factor` times the median of the recent successful durations (None without enough)."""
    if target.stuck_after is not None:
        return target.stuck_after
    if len(durations) < MIN_DURATIONS:
        return None
    return target.stuck_factor * statistics.median(durations)


def soft_limit_events(tally: Tally, run_id: str, event: Mapping,
                      targets: Sequence[NotificationTarget], now: datetime
                      ) -> tuple[Tally, list[tuple[NotificationTarget, str, str]]]:
    """What each target hears of running run `run_id` going over a soft limit (`event`, as
    the executor tells it when the excursion starts): `soft_limit` once per run, at its first
    excess; its record then tells it no more (`run_events`)."""
    found, sent = [], dict(tally.sent)
    for target in targets:
        key = _sent_key(target, NotifyEvent.SOFT_LIMIT.value, run_id)
        if NotifyEvent.SOFT_LIMIT not in target.events or key in sent:
            continue
        found.append((target, NotifyEvent.SOFT_LIMIT.value, _soft_limit_detail([event])))
        sent[key] = now.isoformat()
    return replace(tally, sent=sent), found


def stuck_events(tally: Tally, run_id: str, started_at: datetime,
                 targets: Sequence[NotificationTarget], now: datetime
                 ) -> tuple[Tally, list[tuple[NotificationTarget, str, str]]]:
    """What each target hears of run `run_id`, running since `started_at`: `stuck` once it
    runs longer than the target's limit (again with `repeat`)."""
    found, sent = [], dict(tally.sent)
    running = (now - started_at).total_seconds()
    for target in targets:
        if NotifyEvent.STUCK not in target.events:
            continue
        limit = stuck_limit(target, tally.durations)
        key = _sent_key(target, NotifyEvent.STUCK.value, run_id)
        if limit is None or running <= limit:
            continue
        if key in tally.sent and not _may_repeat(tally, key, target, now):
            continue
        median = "" if target.stuck_after is not None else \
            f", {target.stuck_factor:g} x the median of {statistics.median(tally.durations):.0f} s"
        found.append((target, NotifyEvent.STUCK.value,
                      f"running for {running:.0f} s, limit {limit:.0f} s{median}"))
        sent[key] = now.isoformat()
    return replace(tally, sent=sent), found


def missed_slots(schedule: Schedule, checked_until: datetime, grace: float, now: datetime,
                 started: Callable[[str], bool]) -> tuple[datetime, list[datetime]]:
    """The slots of `schedule` after `checked_until` whose grace period ended by `now` and
    whose run did not start (`started(run_id)`), and the instant checked up to."""
    missed, until = [], checked_until
    for count, slot in enumerate(iter_slots(schedule, checked_until)):
        if count >= MAX_SLOTS_CHECKED or slot.at + timedelta(seconds=grace) > now:
            break
        until = slot.at
        if not started(slot.run_id):
            missed.append(slot.at)
    return until, missed


@dataclass
class Group:
    target: NotificationTarget
    send_at: datetime
    events: list[Event] = field(default_factory=list)


class Groups:
    """The events of each target waiting for its group window to end (pure: `now` in)."""

    def __init__(self) -> None:
        self.waiting: dict[str, Group] = {}

    def add(self, target: NotificationTarget, event: Event, now: datetime) -> bool:
        """Add `event` for `target`; True when it opened a new group (the caller may need to
        wake up at `next_at`)."""
        group = self.waiting.get(target.name)
        if group is None:
            send_at = now + timedelta(seconds=target.group_window)
            self.waiting[target.name] = Group(target, send_at, [event])
            return True
        group.events.append(event)
        return False

    def due(self, now: datetime) -> list[Group]:
        """The groups whose window ended by `now`, taken out."""
        ready = [g for g in self.waiting.values() if g.send_at <= now]
        for group in ready:
            del self.waiting[group.target.name]
        return ready

    @property
    def next_at(self) -> datetime | None:
        return min((g.send_at for g in self.waiting.values()), default=None)
