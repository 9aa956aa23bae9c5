"""The pure scheduler: DST, catch-up, overlap, watermarks, run ids; driven by an injected clock.

Each test named `test_guarantee_*` backs one row of the table in docs/schedules.md.
"""
from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastflow.errors import FastflowError
from fastflow.model import RunStatus
from fastflow.schedule.cron import parse_cron
from fastflow.schedule.planner import (
    MAX_SKIPPED_DETAIL,
    Action,
    ActiveRun,
    DueRun,
    SkipReason,
    Watermark,
    decide,
    decide_once,
    iter_slots,
    next_slots,
    plan_schedules,
    slot_run_id,
    watermarks_from_json,
    watermarks_to_json,
)
from fastflow.schedule.spec import Catchup, Overlap, Schedule, ScheduleKind
from fastflow.schedule.timetable import Timetable
from fastflow.schedule.timevalues import parse_instant, zone

UTC = timezone.utc


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def cron(expr: str, tz: str = "UTC", sid: str = "s", **kw) -> Schedule:
    return Schedule(id=sid, pipeline="p", kind=ScheduleKind.CRON, cron=parse_cron(expr), timezone=tz, **kw)


def every(seconds: int, sid: str = "s", **kw) -> Schedule:
    return Schedule(id=sid, pipeline="p", kind=ScheduleKind.INTERVAL, interval=seconds, **kw)


def once(at: datetime, sid: str = "s", **kw) -> Schedule:
    return Schedule(id=sid, pipeline="p", kind=ScheduleKind.AT, at=at, **kw)


def local(text: str, tz: str) -> datetime:
    return parse_instant(text, zone(tz))  # in UTC: arithmetic on it is real-time arithmetic


def slots_until(schedule: Schedule, start: datetime, end: datetime) -> list:
    """Every slot from `start` (inclusive) up to `end` (inclusive)."""
    return list(itertools.takewhile(lambda s: s.at <= end, iter_slots(schedule, start - timedelta(microseconds=1))))


def fires(schedule: Schedule, start: datetime, end: datetime) -> list[datetime]:
    return [s.at for s in slots_until(schedule, start, end) if s.at < end]


class Clock:
    """The injected clock: a plan ticked at chosen instants, collecting what it decided."""

    def __init__(self, schedules: list[Schedule], now: datetime) -> None:
        self.plan = plan_schedules(schedules, {}, now)
        self.runs: list = []
        self.skipped: list = []
        self.now = now

    def at(self, now: datetime, active: dict | None = None):
        self.now = now
        result = decide(self.plan, active or {}, now)
        self.plan = result.plan
        self.runs += result.runs
        self.skipped += result.skipped
        return result

    def follow(self, until: datetime, delay: timedelta = timedelta(0)) -> None:
        """Tick at every wake-up (plus `delay`) until `until`, as an always-up daemon would."""
        while self.plan.next_wakeup is not None and self.plan.next_wakeup + delay <= until:
            self.at(self.plan.next_wakeup + delay)


# --- DST ---------------------------------------------------------------------------------------

DST_DAYS = [
    # zone, spring-forward day, fall-back day, (gap wall time, first instant after the gap),
    ("Europe/Berlin", "2026-03-29", "2026-10-25", "02:30", "03:00"),
    ("America/New_York", "2026-03-08", "2026-11-01", "02:30", "03:00"),
    ("Australia/Lord_Howe", "2026-10-04", "2026-04-05", "02:15", "02:30"),
]


@pytest.mark.parametrize("tz,spring,fall,gap_wall,after_gap", DST_DAYS)
def test_guarantee_gap_slot_fires_once_at_first_instant_after_gap(tz, spring, fall, gap_wall, after_gap):
    minute, hour = gap_wall.split(":")[1], gap_wall.split(":")[0]
    schedule = cron(f"{int(minute)} {int(hour)} * * *", tz)
    slots = next_slots(schedule, local(f"{spring}T00:00", tz), 3)
    assert slots[0].at == local(f"{spring}T{after_gap}", tz)
    assert slots[0].moved_by_dst and slots[0].nominal.strftime("%H:%M") == gap_wall
    assert slots[0].to_json()["moved_by_dst"] is True
    assert [s.moved_by_dst for s in slots[1:]] == [False, False]
    assert len({s.at.date() for s in slots}) == 3  # one a day, the gap day included


@pytest.mark.parametrize("tz,spring,fall,gap_wall,after_gap", DST_DAYS)
def test_guarantee_fold_slot_fires_once_first_occurrence(tz, spring, fall, gap_wall, after_gap):
    # 01:45 exists twice on the fall-back day in all three zones.
    schedule = cron("45 1 * * *", tz)
    start = local(f"{fall}T00:00", tz)
    day = fires(schedule, start, start + timedelta(hours=24))
    assert len(day) == 1
    first = datetime.fromisoformat(f"{fall}T01:45").replace(tzinfo=zone(tz), fold=0)
    assert day[0] == first.astimezone(UTC)


@pytest.mark.parametrize("tz", ["Europe/Berlin", "America/New_York"])
def test_guarantee_hourly_cron_fires_every_real_hour(tz):
    for day in [d for z, *days in DST_DAYS if z == tz for d in days[:2]]:
        start = local(f"{day}T00:00", tz) - timedelta(hours=6)
        got = fires(cron("0 * * * *", tz), start, start + timedelta(hours=36))
        gaps = {b - a for a, b in zip(got, got[1:])}
        assert gaps == {timedelta(hours=1)}, (tz, day)
        assert len(got) == 36


def test_guarantee_lord_howe_half_hour_shift():
    tz = "Australia/Lord_Howe"
    # Fall back (2026-04-05 02:00 -> 01:30): */30 fires in both passes of 01:30-02:00, every
    # real half hour, and an hourly cron fires once per wall hour without duplicates.
    start = local("2026-04-04T22:00", tz)
    half = fires(cron("*/30 * * * *", tz), start, start + timedelta(hours=8))
    assert {b - a for a, b in zip(half, half[1:])} == {timedelta(minutes=30)}
    hourly = fires(cron("0 * * * *", tz), start, start + timedelta(hours=8))
    assert len(hourly) == len(set(hourly)) == 8
    # Spring forward (2026-10-04 02:00 -> 02:30): the 02:00 slot moves to 02:30 once.
    moved = next_slots(cron("0 2 * * *", tz), local("2026-10-04T00:00", tz), 1)[0]
    assert moved.at == local("2026-10-04T02:30", tz) and moved.moved_by_dst


def test_guarantee_dst_through_ticks_over_both_transitions():
    # An always-up daemon over a whole year in Berlin: daily 02:30 runs once per day, never twice.
    clock = Clock([cron("30 2 * * *", "Europe/Berlin")], utc(2026, 1, 1))
    clock.follow(utc(2027, 1, 1))
    days = [r.slot.at.astimezone(zone("Europe/Berlin")).date() for r in clock.runs]
    assert len(days) == len(set(days)) == 365
    assert not clock.skipped


# --- run ids and exactly-once ----------------------------------------------------------------


def test_guarantee_slot_run_id_is_deterministic_and_sortable():
    schedule = Schedule(id="nightly", pipeline="report", kind=ScheduleKind.CRON, cron=parse_cron("0 3 * * *"))
    assert slot_run_id(schedule, utc(2026, 11, 22, 3)) == "20261122T030000Z-report-nightly"
    same_name = cron("0 3 * * *", sid="p")
    assert slot_run_id(same_name, utc(2026, 11, 22, 3)) == "20261122T030000Z-p"
    ids = [s.run_id for s in next_slots(schedule, utc(2026, 1, 1), 50)]
    assert ids == sorted(ids) and len(set(ids)) == 50


def test_guarantee_no_slot_runs_twice_across_restart_and_duplicate_ticks():
    schedule = cron("*/10 * * * *")
    first = decide_once([schedule], {}, {}, utc(2026, 5, 1, 12))
    assert [r.run_id for r in first.runs] == ["20260501T120000Z-p-s"]
    again = decide(first.plan, {}, utc(2026, 5, 1, 12))  # a duplicate hook in the same second
    assert again.runs == () and again.skipped == ()
    stored = watermarks_to_json(first.watermarks)  # the daemon persists, crashes, restarts
    restarted = decide_once([schedule], watermarks_from_json(stored), {}, utc(2026, 5, 1, 12, 0, 30))
    assert restarted.runs == () and restarted.skipped == ()
    # Another path already started the slot: it is not started again.
    other = decide_once([schedule], {}, {"s": [ActiveRun("20260501T121000Z-p-s")]}, utc(2026, 5, 1, 12, 10))
    assert other.runs == ()


def test_guarantee_simulated_months_every_slot_once():
    schedules = [cron("0 * * * *", "America/New_York", sid="hourly"),
                 cron("15 3 * * 1-5", "Europe/Berlin", sid="weekday"),
                 every(15 * 60, sid="quarter")]
    clock = Clock(schedules, utc(2026, 1, 1))
    clock.follow(utc(2026, 7, 1), delay=timedelta(seconds=2))
    for schedule in schedules:
        expected = [s.run_id for s in slots_until(schedule, utc(2026, 1, 1), utc(2026, 7, 1))
                    if s.at + timedelta(seconds=2) <= utc(2026, 7, 1)]
        got = [r.run_id for r in clock.runs if r.schedule.id == schedule.id]
        assert got == expected
    assert not clock.skipped


# --- start-up, downtime, catch-up --------------------------------------------------------------


def test_guarantee_no_startup_blind_spot():
    clock = Clock([cron("0 3 * * *")], utc(2026, 5, 1, 3))
    assert clock.plan.next_wakeup == utc(2026, 5, 1, 3)
    assert [r.action for r in clock.at(utc(2026, 5, 1, 3)).runs] == [Action.START]


def downtime(schedule: Schedule, down_from: datetime, back: datetime, active=None):
    before = decide_once([schedule], {}, {}, down_from)
    return decide_once([schedule], before.watermarks, active or {}, back)


def test_guarantee_catchup_none_records_missed_as_skipped():
    result = downtime(cron("0 * * * *", catchup=Catchup.NONE), utc(2026, 5, 1, 0, 30), utc(2026, 5, 1, 3, 30))
    assert result.runs == ()
    assert [(s.slot.at.hour, s.reason) for s in result.skipped] == [
        (1, SkipReason.MISSED), (2, SkipReason.MISSED), (3, SkipReason.MISSED)]
    assert result.skipped[0].detail == "missed while the scheduler was not running (catchup: none)"


def test_guarantee_catchup_latest_runs_newest_missed_once():
    result = downtime(cron("0 * * * *"), utc(2026, 5, 1, 0, 30), utc(2026, 5, 1, 3, 30))
    assert [(r.slot.at.hour, r.catchup, r.late_by) for r in result.runs] == [(3, True, 1800.0)]
    assert [(s.slot.at.hour, s.reason) for s in result.skipped] == [
        (1, SkipReason.SUPERSEDED), (2, SkipReason.SUPERSEDED)]
    assert result.skipped[0].detail == "the newer slot 2026-05-01T03:00:00Z runs instead (catchup: latest)"


def test_guarantee_catchup_all_oldest_first_capped_and_windowed():
    schedule = cron("0 * * * *", catchup=Catchup.ALL, max_catchup=3, catchup_window=6 * 3600)
    result = downtime(schedule, utc(2026, 5, 1, 0, 30), utc(2026, 5, 1, 10, 30))
    assert [(r.slot.at.hour, r.action) for r in result.runs] == [
        (8, Action.START), (9, Action.QUEUE), (10, Action.QUEUE)]
    reasons = [(s.slot.at.hour, s.reason) for s in result.skipped]
    assert reasons == [(h, SkipReason.OUTSIDE_CATCHUP_WINDOW) for h in range(1, 5)] + [
        (h, SkipReason.MAX_CATCHUP) for h in range(5, 8)]
    assert result.skipped[0].detail == "missed by 9h30m, more than catchup_window 6h"


def test_guarantee_skip_if_late_applies_to_every_slot():
    schedule = cron("0 * * * *", catchup=Catchup.ALL, skip_if_late=45 * 60)
    result = downtime(schedule, utc(2026, 5, 1, 0, 30), utc(2026, 5, 1, 2, 30))
    assert [r.slot.at.hour for r in result.runs] == [2]
    assert [(s.slot.at.hour, s.reason, s.detail) for s in result.skipped] == [
        (1, SkipReason.LATE, "could start only 1h30m late, more than skip_if_late 45m")]
    # Even an always-up daemon skips a slot it reaches too late (a stalled host).
    late = Clock([cron("0 * * * *", skip_if_late=30)], utc(2026, 5, 1))
    late.at(utc(2026, 5, 1, 0, 1))
    assert [s.reason for s in late.skipped] == [SkipReason.LATE]


def test_guarantee_at_fires_once_even_after_downtime_never_again():
    schedule = once(utc(2026, 12, 1, 12))
    result = downtime(schedule, utc(2026, 11, 30), utc(2026, 12, 1, 15))
    assert [r.run_id for r in result.runs] == ["20261201T120000Z-p-s"]
    assert result.next_wakeup is None
    later = decide_once([schedule], result.watermarks, {}, utc(2027, 1, 1))
    assert later.runs == () and later.skipped == () and later.next_wakeup is None


def test_skipped_slots_fold_into_ranges_beyond_the_detail_cap():
    result = downtime(cron("* * * * *", catchup=Catchup.NONE), utc(2026, 5, 1), utc(2026, 5, 2))
    assert len(result.skipped) == MAX_SKIPPED_DETAIL + 1
    # 00:00 ran before the downtime; 23:59 and 00:00 are within the on-time grace and run.
    assert [r.slot.at for r in result.runs] == [utc(2026, 5, 1, 23, 59), utc(2026, 5, 2)]
    folded = result.skipped[0]
    assert folded.count == 1438 - MAX_SKIPPED_DETAIL
    assert (folded.slot.at, folded.last) == (utc(2026, 5, 1, 0, 1), utc(2026, 5, 1, 22, 18))
    assert sum(s.count for s in result.skipped) == 1438


# --- overlap -------------------------------------------------------------------------------------

RUNNING = {"s": [ActiveRun("20260501T110000Z-p-s", RunStatus.RUNNING)]}


@pytest.mark.parametrize("policy,action,cancel", [
    (Overlap.ALLOW, Action.START, ()),
    (Overlap.QUEUE, Action.QUEUE, ()),
    (Overlap.REPLACE, Action.REPLACE, ("20260501T110000Z-p-s",)),
])
def test_guarantee_overlap_policies(policy, action, cancel):
    result = decide_once([cron("0 * * * *", overlap=policy)], {}, RUNNING, utc(2026, 5, 1, 12))
    assert [(r.action, r.cancel) for r in result.runs] == [(action, cancel)]


def test_guarantee_overlap_skip_records_the_slot():
    result = decide_once([cron("0 * * * *")], {}, RUNNING, utc(2026, 5, 1, 12))
    assert result.runs == ()
    assert [(s.reason, s.detail) for s in result.skipped] == [
        (SkipReason.OVERLAP, "run 20260501T110000Z-p-s of this schedule has not ended (overlap: skip)")]


def test_guarantee_overlap_queue_keeps_at_most_one_waiting():
    active = {"s": RUNNING["s"] + [ActiveRun("20260501T120000Z-p-s", RunStatus.QUEUED)]}
    result = decide_once([cron("*/30 * * * *", overlap=Overlap.QUEUE)], {}, active, utc(2026, 5, 1, 12, 30))
    assert result.runs == ()
    assert [(s.reason, s.detail) for s in result.skipped] == [
        (SkipReason.QUEUE_FULL, "run 20260501T120000Z-p-s is already waiting (overlap: queue keeps at most one)")]


# --- changes, intervals, watermarks -----------------------------------------------------------


def test_guarantee_changed_schedule_takes_effect_for_next_slot():
    old = cron("0 3 * * *")
    first = decide_once([old], {}, {}, utc(2026, 5, 1, 3))
    new = cron("0 2 * * *")  # pushed at 02:30 on 2 May: 02:00 was never a slot of the new one
    result = decide_once([new], first.watermarks, {}, utc(2026, 5, 2, 2, 30))
    assert result.runs == () and result.skipped == ()
    assert result.next_wakeup == utc(2026, 5, 3, 2)
    assert result.watermarks["s"].since == utc(2026, 5, 2, 2, 30)
    # Policy fields are not part of the definition: changing them keeps the watermark.
    assert plan_schedules([cron("0 3 * * *", overlap=Overlap.ALLOW)], first.watermarks,
                          utc(2026, 5, 2)).watermarks == first.watermarks


def test_removed_and_disabled_schedules_leave_the_plan():
    plan = plan_schedules([cron("0 3 * * *", enabled=False), every(60, sid="other")], {}, utc(2026, 5, 1))
    assert set(plan.schedules) == {"other"} and set(plan.watermarks) == {"other"}


def test_a_schedule_enabled_again_starts_afresh_without_catching_up_the_disabled_time():
    """Disabled at 01:30 (its pipeline or run configuration `"enabled": false`), enabled again
    by a push at 06:30: the slots 02:00-06:00 are not caught up, even with `catchup: all`, and
    the saved watermarks (state/scheduler.json) forget it while it is disabled."""
    saved: list[dict] = []
    started: list[DueRun] = []
    table = Timetable(start=lambda due: started.append(due) or True, skip=lambda record: None,
                      cancel=lambda run_id: None, save=saved.append)
    hourly = every(3600, catchup=Catchup.ALL, max_catchup=100)
    table.activate([hourly], utc(2026, 5, 1, 0, 30))
    table.fire_due(utc(2026, 5, 1, 1))
    assert [d.slot.at for d in started] == [utc(2026, 5, 1, 1)]
    table.ended(started[0].run_id)
    table.activate([replace(hourly, enabled=False)], utc(2026, 5, 1, 1, 30))
    assert saved[-1]["schedules"] == {}
    assert table.fire_due(utc(2026, 5, 1, 6, 30)) is None and len(started) == 1
    table.activate([hourly], utc(2026, 5, 1, 6, 30))
    assert table.fire_due(utc(2026, 5, 1, 6, 30)) == utc(2026, 5, 1, 7)
    table.fire_due(utc(2026, 5, 1, 7))
    assert [d.slot.at for d in started] == [utc(2026, 5, 1, 1), utc(2026, 5, 1, 7)]


def test_guarantee_interval_is_anchored_and_never_drifts():
    schedule = every(15 * 60, start=utc(2026, 5, 1, 0, 7))
    clock = Clock([schedule], utc(2026, 5, 1))
    clock.follow(utc(2026, 5, 2), delay=timedelta(seconds=40))  # every tick 40 s late
    minutes = {r.slot.at.minute for r in clock.runs}
    assert minutes == {7, 22, 37, 52} and len(clock.runs) == 96
    epoch_anchored = next_slots(every(3600), utc(2026, 5, 1, 0, 0, 1), 2)
    assert [s.at for s in epoch_anchored] == [utc(2026, 5, 1, 1), utc(2026, 5, 1, 2)]


def test_idle_tick_changes_nothing():
    clock = Clock([cron("0 3 * * *")], utc(2026, 5, 1, 4))
    before = clock.plan
    result = clock.at(utc(2026, 5, 1, 5))
    assert result.runs == () and result.skipped == () and result.plan == before
    assert result.next_wakeup == utc(2026, 5, 2, 3)


def test_watermarks_round_trip_and_broken_state_message():
    marks = {"a": Watermark(utc(2026, 1, 1), utc(2026, 2, 1, 3), "abc"), "b": Watermark(utc(2026, 1, 1))}
    data = watermarks_to_json(marks)
    assert data == {"schema": 1, "schedules": {
        "a": {"since": "2026-01-01T00:00:00Z", "last_slot": "2026-02-01T03:00:00Z", "fingerprint": "abc"},
        "b": {"since": "2026-01-01T00:00:00Z", "last_slot": None, "fingerprint": ""}}}
    assert watermarks_from_json(data) == marks
    with pytest.raises(FastflowError) as exc:
        watermarks_from_json({"schema": 1, "schedules": {"a": {"since": "soon"}}}, "state/scheduler.json")
    assert str(exc.value) == (
        "state/scheduler.json: schedules.a: {'since': 'soon'} is not a watermark; restore it from "
        "the results branch history or delete it (schedules then start afresh)")


def test_naive_now_is_refused():
    with pytest.raises(ValueError, match="aware `now`"):
        plan_schedules([], {}, datetime(2026, 1, 1))


# --- property: over random schedules and downtime, every slot is run or skipped exactly once ----

ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe"]
CRONS = ["0 * * * *", "*/30 * * * *", "30 2 * * *", "45 1 * * *", "0 */3 * * 1-5", "15 1-3 * * *"]


@st.composite
def random_schedule(draw):
    kw = dict(
        catchup=draw(st.sampled_from(list(Catchup))),
        catchup_window=draw(st.sampled_from([None, 3600, 6 * 3600])),
        max_catchup=draw(st.integers(0, 4)),
        skip_if_late=draw(st.sampled_from([None, 30, 1800])),
        overlap=draw(st.sampled_from([Overlap.SKIP, Overlap.ALLOW, Overlap.QUEUE])),
    )
    if draw(st.booleans()):
        return cron(draw(st.sampled_from(CRONS)), draw(st.sampled_from(ZONES)), **kw)
    return every(draw(st.sampled_from([600, 3600, 5400])), **kw)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    schedule=random_schedule(),
    start=st.datetimes(min_value=datetime(2026, 3, 1), max_value=datetime(2026, 11, 30)),
    phases=st.lists(st.tuples(st.booleans(), st.integers(60, 3 * 86400)), min_size=1, max_size=6),
    run_for=st.integers(0, 7200),
)
def test_property_every_slot_run_or_skipped_exactly_once(schedule, start, phases, run_for):
    begin = now = start.replace(tzinfo=UTC)
    plan = plan_schedules([schedule], {}, now)
    handled: list[str] = []
    running: list[tuple[datetime, str]] = []  # (ends at, run id): each run lasts `run_for` s
    for up, length in phases:
        until = now + timedelta(seconds=length)
        if up:  # the daemon ticks at every wake-up
            while plan.next_wakeup is not None and plan.next_wakeup <= until:
                plan = _tick(plan, schedule, plan.next_wakeup, running, run_for, handled)
        else:  # down until `until`, then restarts from the persisted watermarks
            restored = watermarks_from_json(watermarks_to_json(plan.watermarks))
            plan = _tick(plan_schedules([schedule], restored, until), schedule, until, running,
                         run_for, handled)
        now = until
    expected = [s.run_id for s in slots_until(schedule, begin, now)]
    assert len(handled) == len(set(handled)), "a slot was handled twice"
    assert sorted(handled) == sorted(expected), "a slot was neither run nor recorded skipped"


def _tick(plan, schedule, moment, running, run_for, handled):
    active = {"s": [ActiveRun(run_id) for ends, run_id in running if ends > moment]}
    result = decide(plan, active, moment)
    for run in result.runs:
        handled.append(run.run_id)
        running.append((moment + timedelta(seconds=run_for), run.run_id))
    for skip in result.skipped:
        handled.extend(s.run_id for s in next_slots(schedule, skip.slot.at, skip.count))
    return result.plan


def test_every_guarantee_in_the_docs_names_a_test_that_exists(project_root):
    import re

    doc = (project_root / "docs/schedules.md").read_text()
    table = doc.split("## Guarantees", 1)[1].split("## Commands", 1)[0]
    named = set(re.findall(r"`(test_\w+)`", table))
    sources = "".join((project_root / "tests" / f).read_text()
                      for f in ("test_scheduler.py", "test_schedules.py", "test_daemon_schedules.py"))
    defined = set(re.findall(r"^def (test_\w+)", sources, re.M))
    assert named and named <= defined, named - defined
    assert {n for n in defined if n.startswith("test_guarantee")} <= named


# --- the tick's cost: shared cron steps, the formatted watermarks cache -------------------------


def test_schedules_due_at_the_same_hour_share_one_cron_step():
    from fastflow.schedule.cron import first_instant_after
    schedules = [cron("0 * * * *", "Europe/Berlin", sid=f"s{i}") for i in range(50)]
    first_instant_after.cache_clear()
    plan = plan_schedules(schedules, {}, utc(2026, 3, 29, 0, 30))
    result = decide(plan, {}, utc(2026, 3, 29, 1, 0))  # 03:00 Berlin, just after spring-forward
    assert [r.run_id for r in result.runs] == [slot_run_id(s, utc(2026, 3, 29, 1)) for s in
                                               sorted(schedules, key=lambda s: s.id)]
    assert {r.action for r in result.runs} == {Action.START}
    assert result.next_wakeup == utc(2026, 3, 29, 2)
    # One walk for the first slot at planning, one for the slot after it at the tick.
    assert first_instant_after.cache_info().misses == 2
    assert parse_cron("0 * * * *") is parse_cron(" 0 *  * * * ")  # one object per text


@pytest.mark.parametrize("expr", ["30 2 * * *", "*/20 * * * *", "0 1,2,3 * * *", "15 * * * 0"])
@pytest.mark.parametrize("tz", ["Europe/Berlin", "America/New_York", "Australia/Lord_Howe"])
def test_slot_steps_agree_with_one_cron_walk_across_dst(expr, tz):
    from fastflow.schedule.cron import cron_instants
    schedule = cron(expr, tz)
    for after in (utc(2026, 3, 27), utc(2026, 10, 23), utc(2026, 4, 3), utc(2026, 10, 30)):
        walk = [(c.at, c.nominal) for c in itertools.islice(cron_instants(schedule.cron, zone(tz), after), 300)]
        steps = [(s.at, s.nominal) for s in itertools.islice(iter_slots(schedule, after), 300)]
        assert steps == walk


def test_cached_watermarks_json_follows_changes_and_removals():
    marks = {"a": Watermark(since=utc(2026, 1, 1)), "b": Watermark(since=utc(2026, 1, 2))}
    cache: dict = {}
    assert watermarks_to_json(marks, cache) == watermarks_to_json(marks)
    moved = {"a": Watermark(since=utc(2026, 1, 1), last_slot=utc(2026, 1, 3))}
    again = watermarks_to_json(moved, cache)
    assert again == watermarks_to_json(moved)
    assert again["schedules"]["a"]["last_slot"] == "2026-01-03T00:00:00Z"
    assert set(cache) == {"a"}
