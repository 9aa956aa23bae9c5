"""The scheduler, pure: (schedules, watermarks, active runs, now) -> what to start and skip.

No I/O, no sleeping, no clock: the daemon passes `now` and persists what comes back.

- `plan_schedules` builds a `SchedulePlan`: the schedules, their watermarks and a heap of each
  schedule's first pending slot. An idle `decide` only looks at the top of the heap, so its cost
  does not grow with the number of schedules; a busy one touches only the due schedules.
- `decide(plan, active, now)` returns a `Decision`: runs to start/queue/replace, slots skipped
  (each with a reason), the new watermarks, the next wake-up and the next plan.
- A watermark is, per schedule id, the last slot handled and the instant its current definition
  took effect (`since`). Every slot after the watermark and not after `now` is handled exactly
  once: run, or skipped with a reason. Slot run ids are derived from (schedule, slot), so a slot
  can never run twice even when two paths ask for it.

`docs/schedules.md` states the guarantees; tests/test_scheduler.py checks each one.
"""
from __future__ import annotations

import enum
import functools
import heapq
import itertools
from collections import deque
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable, Iterator, Mapping, Sequence

from fastflow.errors import FastflowError
from fastflow.humanize import format_roughly
from fastflow.model import RunStatus
from fastflow.record import slot_run_id as _slot_run_id
from fastflow.schedule.cron import first_instant_after
from fastflow.schedule.spec import (
    EPOCH,
    Catchup,
    Overlap,
    Schedule,
    ScheduleKind,
)

UTC = timezone.utc
# A slot handled within this long of its instant is "on time"; later it was missed (the daemon
# was down or asleep) and the catch-up policy decides. Covers wake-up jitter and slow ticks.
ON_TIME_GRACE = 60.0
# A tick reports at most this many skipped slots of one schedule one by one; older ones are
# folded into ranges (a minutely cron after a month of downtime must not write 43,200 records).
MAX_SKIPPED_DETAIL = 100
WATERMARKS_SCHEMA = 1
_TINY = timedelta(microseconds=1)
_Raw = tuple[datetime, "datetime | None"]  # a slot's instant and nominal wall time (DST moved)


class Action(str, enum.Enum):
    START = "start"  # start now
    QUEUE = "queue"  # create queued; start when this schedule's earlier runs have ended
    REPLACE = "replace"  # cancel `cancel` runs first, then start


class SkipReason(str, enum.Enum):
    MISSED = "missed"  # catchup: none
    SUPERSEDED = "superseded"  # catchup: latest, a newer slot runs instead
    MAX_CATCHUP = "max_catchup"  # catchup: all, beyond max_catchup
    OUTSIDE_CATCHUP_WINDOW = "outside_catchup_window"
    LATE = "late"  # skip_if_late
    OVERLAP = "overlap"  # overlap: skip
    QUEUE_FULL = "queue_full"  # overlap: queue, one run already waiting


@dataclass(frozen=True)
class Watermark:
    """What one schedule has handled: every slot at or before `last_slot` and every slot before
    `since` (when its current definition, `fingerprint`, took effect)."""

    since: datetime
    last_slot: datetime | None = None
    fingerprint: str = ""

    @property
    def horizon(self) -> datetime:
        """Pending slots are those strictly after this instant."""
        floor = self.since - _TINY
        return max(floor, self.last_slot) if self.last_slot else floor

    def to_json(self) -> dict:
        return {"since": _iso(self.since), "last_slot": _iso(self.last_slot),
                "fingerprint": self.fingerprint}


@dataclass(frozen=True)
class ActiveRun:
    """A run of a schedule that has not ended: its id and whether it is running or queued."""

    run_id: str
    status: RunStatus = RunStatus.RUNNING


@dataclass(frozen=True)
class Slot:
    """One firing of a schedule: its instant (UTC) and, if DST moved it, its nominal wall time."""

    schedule: Schedule
    at: datetime
    nominal: datetime | None = None

    @property
    def run_id(self) -> str:
        return slot_run_id(self.schedule, self.at)

    @property
    def moved_by_dst(self) -> bool:
        return self.nominal is not None

    def to_json(self) -> dict:
        local = self.at.astimezone(self.schedule.zone)
        return {"schedule": self.schedule.id, "pipeline": self.schedule.pipeline,
                "at_utc": _iso(self.at), "at_local": local.isoformat(), "timezone": self.schedule.timezone,
                "run_id": self.run_id, "moved_by_dst": self.moved_by_dst,
                "nominal_local": self.nominal.isoformat(timespec="minutes") if self.nominal else None}


@dataclass(frozen=True)
class DueRun:
    """A slot to run now. `action` says how; `cancel` lists runs to cancel first (replace)."""

    slot: Slot
    action: Action
    cancel: tuple[str, ...] = ()
    late_by: float = 0.0  # seconds between the slot and now
    catchup: bool = False  # true when the slot was missed and runs by the catch-up policy

    @property
    def run_id(self) -> str:
        return self.slot.run_id

    @property
    def schedule(self) -> Schedule:
        return self.slot.schedule


@dataclass(frozen=True)
class SkippedSlot:
    """A slot deliberately not run. With `count` > 1 it stands for `count` slots of the same
    reason from `slot` to `last` (folded to keep records few); `run_id` is the first one's."""

    slot: Slot
    reason: SkipReason
    detail: str
    count: int = 1
    last: datetime | None = None

    @property
    def run_id(self) -> str:
        return self.slot.run_id


@dataclass(frozen=True)
class SchedulePlan:
    """The scheduler's state between ticks: schedules, watermarks and the next-slot heap.

    A heap entry is (timestamp, schedule id, instant, nominal wall time or None): each
    schedule's first pending slot, kept whole so a due schedule's only cron step is to the slot
    after it."""

    schedules: Mapping[str, Schedule]
    watermarks: Mapping[str, Watermark]
    heap: tuple[tuple[float, str, datetime, datetime | None], ...] = ()

    @property
    def next_wakeup(self) -> datetime | None:
        return datetime.fromtimestamp(self.heap[0][0], UTC) if self.heap else None


@dataclass(frozen=True)
class Decision:
    """The outcome of one tick: persist `watermarks`, act on `runs` and `skipped`, then sleep
    until `next_wakeup` (None: nothing will ever fire) or a sync, and pass `plan` to the next tick."""

    runs: tuple[DueRun, ...]
    skipped: tuple[SkippedSlot, ...]
    watermarks: Mapping[str, Watermark]
    next_wakeup: datetime | None
    plan: SchedulePlan


@functools.lru_cache(maxsize=1024)  # a tick formats the same few instants thousands of times
def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _aware(now: datetime) -> datetime:
    if now.tzinfo is None:
        raise ValueError("the scheduler needs an aware `now` (e.g. datetime.now(timezone.utc))")
    # UTC throughout: arithmetic on datetimes sharing a ZoneInfo is wall-clock arithmetic.
    return now.astimezone(UTC)


# --- slots ------------------------------------------------------------------------------------


def slot_run_id(schedule: Schedule, at: datetime) -> str:
    """The deterministic run id of a slot of `schedule` (`record.slot_run_id`)."""
    return _slot_run_id(schedule.pipeline, schedule.id, at)


def iter_slots(schedule: Schedule, after: datetime) -> Iterator[Slot]:
    """Every slot of `schedule` strictly after the instant `after`, in order, within its
    start/end window (cron in its zone with DST handled; interval anchored; at once)."""
    after = _aware(after)
    while True:
        slot = next_slot(schedule, after)
        if slot is None:
            return
        yield slot
        after = slot.at


def next_slot(schedule: Schedule, after: datetime) -> Slot | None:
    """The first slot of `schedule` strictly after the aware UTC instant `after`, or None.

    The scheduler's step: a due schedule asks for its slot after the one it handled. A cron
    step is memoized (`cron.first_instant_after`), so the schedules due together at the top of
    an hour share their cron walks; an interval step is arithmetic.
    """
    raw = _next_in_window(schedule, after)
    return None if raw is None else Slot(schedule, raw[0], raw[1])


def _next_in_window(schedule: Schedule, after: datetime) -> _Raw | None:
    start, end = schedule.start, schedule.end
    if start is not None and after < start:
        after = start - _TINY
    try:
        raw = _raw_next(schedule, after)
    except OverflowError:  # past the year 9999: the slots end there
        return None
    if raw is None or (end is not None and raw[0] > end):
        return None
    return raw


def _raw_next(schedule: Schedule, after: datetime) -> _Raw | None:
    if schedule.kind is ScheduleKind.CRON:
        try:
            found = first_instant_after(schedule.cron, schedule.zone, after)  # type: ignore[arg-type]
        except StopIteration:
            return None
        return found.at, found.nominal
    if schedule.kind is ScheduleKind.INTERVAL:
        step = timedelta(seconds=schedule.interval)  # type: ignore[arg-type]
        anchor = (schedule.start or EPOCH).astimezone(UTC)
        k = max((after - anchor) // step + 1, 0 if schedule.start else -(10**9))
        return (anchor + k * step).astimezone(UTC), None
    if schedule.at is not None and schedule.at > after:
        return schedule.at.astimezone(UTC), None
    return None


def next_slots(schedule: Schedule, from_: datetime, n: int = 10) -> list[Slot]:
    """The next `n` slots at or after `from_` (for `fastflow schedule next`/`list`)."""
    return list(itertools.islice(iter_slots(schedule, _aware(from_) - _TINY), n))


# --- planning -----------------------------------------------------------------------------------


def plan_schedules(
    schedules: Iterable[Schedule],
    watermarks: Mapping[str, Watermark],
    now: datetime,
    previous: SchedulePlan | None = None,
) -> SchedulePlan:
    """Build the plan for a schedule set (at start, and after every sync that changes it).

    Watermarks carry over by schedule id. A new schedule, or one whose definition changed
    (fingerprint), takes effect at `now`: its slots from `now` on count, earlier ones were never
    its slots. Disabled and removed schedules leave the plan and lose their watermark (enabling
    again starts afresh). `previous` lets unchanged schedules reuse their heap entry.
    """
    now = _aware(now)
    reuse = {entry[1]: entry for entry in previous.heap} if previous else {}
    plan_schedules_: dict[str, Schedule] = {}
    marks: dict[str, Watermark] = {}
    heap: list[tuple[float, str, datetime, datetime | None]] = []
    for schedule in schedules:
        if not schedule.enabled:
            continue
        fingerprint = schedule.fingerprint
        mark = watermarks.get(schedule.id)
        if mark is None:
            mark = Watermark(since=now, fingerprint=fingerprint)
        elif mark.fingerprint != fingerprint:
            mark = Watermark(since=max(now, mark.since), last_slot=mark.last_slot,
                             fingerprint=fingerprint)
        plan_schedules_[schedule.id] = schedule
        marks[schedule.id] = mark
        same = previous is not None and previous.schedules.get(schedule.id) == schedule \
            and previous.watermarks.get(schedule.id) == mark and schedule.id in reuse
        first = reuse[schedule.id] if same else _first_pending(schedule, mark.horizon)
        if first is not None:
            heap.append(first)
    heapq.heapify(heap)
    return SchedulePlan(plan_schedules_, marks, tuple(heap))


def _first_pending(schedule: Schedule, after: datetime
                   ) -> tuple[float, str, datetime, datetime | None] | None:
    raw = _next_in_window(schedule, after)
    return None if raw is None else (raw[0].timestamp(), schedule.id, raw[0], raw[1])


# --- ticking ------------------------------------------------------------------------------------


def decide(plan: SchedulePlan, active: Mapping[str, Sequence[ActiveRun]], now: datetime) -> Decision:
    """Handle every slot that has come due by `now`; see the module docstring.

    `active` maps schedule ids to their runs that have not ended (running or queued), which the
    overlap policy needs. Only schedules whose next slot is due are touched.
    """
    now = _aware(now)
    now_ts = now.timestamp()
    heap = list(plan.heap)
    marks = dict(plan.watermarks)
    runs: list[DueRun] = []
    skipped: list[SkippedSlot] = []
    while heap and heap[0][0] <= now_ts:
        _, sid, at, nominal = heapq.heappop(heap)
        schedule, mark = plan.schedules[sid], marks[sid]
        due, skips, last_slot, following = _decide(schedule, (at, nominal), active.get(sid, ()), now)
        runs += due
        skipped += skips
        if last_slot is not None:
            marks[sid] = Watermark(mark.since, last_slot, mark.fingerprint)
        if following is not None:
            heapq.heappush(heap, (following[0].timestamp(), sid, following[0], following[1]))
    new_plan = SchedulePlan(plan.schedules, marks, tuple(heap))
    return Decision(tuple(runs), tuple(skipped), marks, new_plan.next_wakeup, new_plan)


def decide_once(
    schedules: Iterable[Schedule],
    watermarks: Mapping[str, Watermark],
    active: Mapping[str, Sequence[ActiveRun]],
    now: datetime,
) -> Decision:
    """`plan_schedules` then `tick`, for callers that keep no plan between ticks."""
    return decide(plan_schedules(schedules, watermarks, now), active, now)


class _Skips:
    """Collects skipped slots in slot order; beyond MAX_SKIPPED_DETAIL the oldest fold into ranges."""

    def __init__(self) -> None:
        self.ranges: list[SkippedSlot] = []
        self.detail: deque[SkippedSlot] = deque()

    def add(self, slot: Slot, reason: SkipReason, detail: str) -> None:
        self.detail.append(SkippedSlot(slot, reason, detail))
        if len(self.detail) > MAX_SKIPPED_DETAIL:
            oldest = self.detail.popleft()
            last = self.ranges[-1] if self.ranges else None
            if last is not None and last.reason is oldest.reason:
                self.ranges[-1] = replace(last, count=last.count + 1, last=oldest.slot.at)
            else:
                self.ranges.append(replace(oldest, last=oldest.slot.at))

    def all(self) -> list[SkippedSlot]:
        return self.ranges + list(self.detail)


def _decide(schedule: Schedule, raw: _Raw, active: Sequence[ActiveRun], now: datetime
            ) -> tuple[Sequence[DueRun], Sequence[SkippedSlot], datetime | None, _Raw | None]:
    """(runs, skipped slots, last slot handled, next pending slot) of a schedule whose first
    pending slot `raw` (its heap entry) has come due."""
    following = _next_in_window(schedule, raw[0])
    window, too_late = schedule.catchup_window, schedule.skip_if_late
    late = (now - raw[0]).total_seconds()
    if not active and (following is None or following[0] > now) and late <= ON_TIME_GRACE \
            and (window is None or late <= window) and (too_late is None or late <= too_late):
        # The common case and the whole cost of a tick where thousands come due at the same
        # hour: one slot, on time, nothing of the schedule running; every policy starts it
        # (what the general path below decides, without its lists and skip collector).
        due = DueRun(Slot(schedule, raw[0], raw[1]), Action.START, (), late, False)
        return (due,), (), raw[0], following
    skips, eligible, last = _Skips(), [], None
    while raw is not None and raw[0] <= now:
        slot = Slot(schedule, raw[0], raw[1])
        last = slot.at
        late = (now - last).total_seconds()
        if window is not None and late > window:
            skips.add(slot, SkipReason.OUTSIDE_CATCHUP_WINDOW,
                      f"missed by {format_roughly(late)}, more than catchup_window {format_roughly(window)}")
        elif too_late is not None and late > too_late:
            skips.add(slot, SkipReason.LATE,
                      f"could start only {format_roughly(late)} late, more than skip_if_late {format_roughly(too_late)}")
        else:
            eligible.append(slot)
        # The first step was taken above; later ones step from the slot just handled.
        raw = following if following is not None and following[0] > last else \
            _next_in_window(schedule, last)
    chosen = _apply_catchup(schedule, eligible, skips, now)
    if active:  # a slot another path (a duplicate hook, a second sync) already started
        already = {run.run_id for run in active}
        chosen = [slot for slot in chosen if slot.run_id not in already]
    runs = _apply_overlap(schedule, chosen, active, skips, now)
    return runs, skips.all(), last, raw


def _apply_catchup(schedule: Schedule, eligible: list[Slot], skips: _Skips,
                   now: datetime) -> list[Slot]:
    if len(eligible) == 1 and (now - eligible[0].at).total_seconds() <= ON_TIME_GRACE:
        return eligible  # the common tick: one slot, on time; every policy runs it
    missed = [s for s in eligible if (now - s.at).total_seconds() > ON_TIME_GRACE]
    on_time = eligible[len(missed):]
    if schedule.catchup is Catchup.NONE:
        for slot in missed:
            skips.add(slot, SkipReason.MISSED, "missed while the scheduler was not running "
                      "(catchup: none)")
        return on_time
    if schedule.catchup is Catchup.LATEST:
        for slot in eligible[:-1]:
            skips.add(slot, SkipReason.SUPERSEDED, f"the newer slot {_iso(eligible[-1].at)} "
                      "runs instead (catchup: latest)")
        return eligible[-1:]
    cap = schedule.max_catchup
    keep = missed[len(missed) - cap:] if cap else []
    for slot in missed[: len(missed) - len(keep)]:
        skips.add(slot, SkipReason.MAX_CATCHUP, f"more than max_catchup {cap} missed slots; "
                  "the newest ones run (catchup: all)")
    return keep + on_time


def _apply_overlap(schedule: Schedule, chosen: list[Slot], active: Sequence[ActiveRun],
                   skips: _Skips, now: datetime) -> list[DueRun]:
    # Slots chosen in one tick (catch-up) run one after another, oldest first: the first gets
    # the overlap policy's action, the rest queue behind it. `allow` starts them all.
    if not chosen:
        return []
    policy = schedule.overlap
    if not active:  # nothing running or waiting: every policy starts the first
        late = max((now - chosen[0].at).total_seconds(), 0.0)
        first = DueRun(chosen[0], Action.START, (), late, late > ON_TIME_GRACE)
        if len(chosen) == 1:
            return [first]
        rest = Action.START if policy is Overlap.ALLOW else Action.QUEUE
        return [first] + [DueRun(slot, rest, (), late_by, late_by > ON_TIME_GRACE)
                          for slot in chosen[1:]
                          for late_by in (max((now - slot.at).total_seconds(), 0.0),)]
    running = [r.run_id for r in active if r.status is RunStatus.RUNNING]
    waiting = [r.run_id for r in active if r.status is RunStatus.QUEUED]

    def due(slot: Slot, action: Action, cancel: tuple[str, ...] = ()) -> DueRun:
        late = max((now - slot.at).total_seconds(), 0.0)
        return DueRun(slot, action, cancel, late, late > ON_TIME_GRACE)

    if policy is Overlap.ALLOW:
        return [due(slot, Action.START) for slot in chosen]
    if policy is Overlap.REPLACE:
        cancel = tuple(running + waiting)
        first = due(chosen[0], Action.REPLACE, cancel) if cancel else due(chosen[0], Action.START)
        return [first] + [due(slot, Action.QUEUE) for slot in chosen[1:]]
    if policy is Overlap.SKIP and (running or waiting):
        for slot in chosen:
            skips.add(slot, SkipReason.OVERLAP, f"run {(running + waiting)[0]} of this schedule "
                      "has not ended (overlap: skip)")
        return []
    if policy is Overlap.QUEUE and waiting:
        for slot in chosen:
            skips.add(slot, SkipReason.QUEUE_FULL, f"run {waiting[0]} is already waiting "
                      "(overlap: queue keeps at most one)")
        return []
    first = Action.QUEUE if running else Action.START
    return [due(chosen[0], first)] + [due(slot, Action.QUEUE) for slot in chosen[1:]]


# --- watermarks (de)serialisation ---------------------------------------------------------------


def watermarks_to_json(watermarks: Mapping[str, Watermark],
                       cache: dict[str, tuple[Watermark, dict]] | None = None) -> dict[str, Any]:
    """The watermarks as a JSON-able dict for the daemon to persist (`"schema": 1`).

    `cache`, kept by the caller between calls, holds each schedule's JSON while its watermark
    is the same object: a tick that touched 200 of 10,000 schedules formats 200 watermarks, not
    10,000 (formatting them all was most of the daemon's tick). Treat the result as read-only.
    """
    cache = {} if cache is None else cache
    schedules: dict[str, dict] = {}
    for sid in sorted(watermarks):
        mark = watermarks[sid]
        known = cache.get(sid)
        if known is None or known[0] is not mark:
            known = cache[sid] = (mark, mark.to_json())
        schedules[sid] = known[1]
    if len(cache) > len(schedules):  # removed schedules
        for sid in cache.keys() - schedules.keys():
            del cache[sid]
    return {"schema": WATERMARKS_SCHEMA, "schedules": schedules}


def watermarks_from_json(data: Any, source: str = "scheduler state") -> dict[str, Watermark]:
    """Read what `watermarks_to_json` wrote; raise `FastflowError` naming `source` when broken."""
    fix = "restore it from the results branch history or delete it (schedules then start afresh)"
    if not isinstance(data, dict) or data.get("schema") != WATERMARKS_SCHEMA:
        raise FastflowError(f"{source}: not a watermarks file of schema {WATERMARKS_SCHEMA}; {fix}")
    out: dict[str, Watermark] = {}
    for sid, entry in (data.get("schedules") or {}).items():
        try:
            last = entry.get("last_slot")
            out[sid] = Watermark(
                since=_parse(entry["since"]), last_slot=_parse(last) if last else None,
                fingerprint=str(entry.get("fingerprint", "")))
        except (AttributeError, KeyError, TypeError, ValueError):
            raise FastflowError(f"{source}: schedules.{sid}: {entry!r} is not a watermark; {fix}") from None
    return out


def _parse(value: str) -> datetime:
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return _aware(parsed)
