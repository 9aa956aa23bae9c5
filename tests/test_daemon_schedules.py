"""The daemon runs schedules: slots due by an injected clock start runs with deterministic ids,
watermarks on the results branch carry over a restart (catch-up policy), a push changes the
schedules without a restart, a broken schedules.yaml keeps the last valid set, and the site and
`state/` on the results branch follow. Real repositories and real uv runs (host executor)."""
from __future__ import annotations

import json
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import pytest
from helpers import Clock, Origin, git, make_daemon, wait_for

from fastflow.daemon.loop import Daemon
from fastflow.model import RunStatus

pytestmark = pytest.mark.slow

T0 = datetime(2026, 11, 23, 10, 2, 30, tzinfo=timezone.utc)


def branch_file(user: Origin, path: str) -> str:
    return git("--git-dir", str(user.bare), "show", f"fastflow/results:{path}", cwd=user.bare)


SCHEDULES = """\
timezone: Europe/Berlin
schedules:
  - pipeline: report
    id: every5
    cron: "*/5 * * * *"
    env: {MODE: scheduled}
"""


@pytest.fixture
def user(origin):
    origin.push({
        ".fastflow/schedules.yaml": SCHEDULES,
        "pipelines/report/main.py": "import os; print('report', os.environ['MODE'])\n",
        "pipelines/other/main.py": "print('other')\n",
    }, "first")
    return origin


@contextmanager
def serving(user: Origin, tmp_path: Path, now: datetime = T0) -> Iterator[tuple[Daemon, Clock]]:
    """A started daemon on the user's repository and the clock it reads; stopped afterwards."""
    clock = Clock(now)
    daemon = make_daemon(user.bare, tmp_path / "state", clock=clock)
    daemon.start()
    try:
        yield daemon, clock
    finally:
        daemon.stop(grace=30)


def push_slow_schedule(user: Origin, overlap: str) -> None:
    """`slow` (3 s) every minute with the given overlap policy."""
    user.push({
        ".fastflow/schedules.yaml": "schedules:\n  - pipeline: slow\n    interval: 1m\n"
                                    f"    overlap: {overlap}\n",
        "pipelines/slow/main.py": "import time; time.sleep(3); print('done')\n",
    })


def run_tick(daemon: Daemon, clock: Clock) -> datetime:
    """One round; returns when the next slot is due (the daemon also wakes for heartbeats)."""
    wake = daemon.tick(clock())
    assert daemon.dispatcher.wait_idle(120)
    daemon.store.flush()
    next_slot = daemon.timetable.next_runs()[0].at
    assert clock() < wake <= next_slot  # never sleeps past a slot
    return next_slot


def statuses(daemon: Daemon, pipeline: str) -> dict[str, RunStatus]:
    return {r.run_id: r.status for r in daemon.store.list_runs(pipeline, limit=50)}


def test_a_due_slot_runs_once_with_its_deterministic_id(user, tmp_path):
    with serving(user, tmp_path) as (daemon, clock):
        wake = run_tick(daemon, clock)
        assert wake == datetime(2026, 11, 23, 10, 5, tzinfo=timezone.utc)  # sleeps until the slot
        assert statuses(daemon, "report") == {}
        clock.now = wake
        run_tick(daemon, clock)
        run_tick(daemon, clock)  # a second tick at the same instant starts nothing more
        (record,) = daemon.store.list_runs("report")
        assert record.run_id == "20261123T100500Z-report-every5"
        assert record.status is RunStatus.SUCCEEDED
        assert (record.trigger.kind, record.trigger.schedule_id) == ("schedule", "every5")
        assert record.trigger.slot == wake
        assert "report scheduled" in daemon.store.read_log(record.run_id)
        marks = json.loads(branch_file(user, "state/scheduler.json"))
        assert marks["schedules"]["every5"]["last_slot"] == "2026-11-23T10:05:00Z"
        state = json.loads(branch_file(user, "state/deployment.json"))
        (upcoming,) = state["schedules"]
        assert upcoming["id"] == "every5" and upcoming["next_at"] == "2026-11-23T10:10:00+00:00"
        assert upcoming["next_local"] == "2026-11-23T11:10:00+01:00"
        overview = branch_file(user, "site/index.html")
        assert "report" in overview and "other" in overview


def test_after_downtime_catchup_latest_runs_the_newest_slot_and_records_the_rest(user, tmp_path):
    clock = Clock(T0)
    daemon = make_daemon(user.bare, tmp_path / "state", clock=clock)
    daemon.start()
    clock.now = datetime(2026, 11, 23, 10, 5, tzinfo=timezone.utc)
    run_tick(daemon, clock)
    daemon.stop(grace=30)

    clock.now = datetime(2026, 11, 23, 10, 21, tzinfo=timezone.utc)  # down for 16 minutes
    daemon = make_daemon(user.bare, tmp_path / "state", clock=clock)
    daemon.start()
    try:
        run_tick(daemon, clock)
        found = statuses(daemon, "report")
        assert found == {
            "20261123T100500Z-report-every5": RunStatus.SUCCEEDED,
            "20261123T101000Z-report-every5": RunStatus.SKIPPED,
            "20261123T101500Z-report-every5": RunStatus.SKIPPED,
            "20261123T102000Z-report-every5": RunStatus.SUCCEEDED,
        }
        skipped = daemon.store.read_run("20261123T101000Z-report-every5")
        assert skipped.error.kind == "skipped"
        assert skipped.error.message.startswith("superseded: the newer slot 2026-11-23T10:20:00Z")
    finally:
        daemon.stop(grace=30)


def test_a_pushed_schedule_change_applies_without_restart(user, tmp_path):
    with serving(user, tmp_path) as (daemon, clock):
        user.push({".fastflow/schedules.yaml": SCHEDULES + "  - pipeline: other\n    interval: 1m\n"})
        daemon.inbox.post_push("")
        assert run_tick(daemon, clock) == datetime(2026, 11, 23, 10, 3, tzinfo=timezone.utc)
        clock.now = datetime(2026, 11, 23, 10, 3, tzinfo=timezone.utc)
        run_tick(daemon, clock)
        assert statuses(daemon, "other") == {"20261123T100300Z-other": RunStatus.SUCCEEDED}


def test_a_broken_schedules_file_keeps_the_last_valid_set(user, tmp_path):
    with serving(user, tmp_path) as (daemon, clock):
        user.push({".fastflow/schedules.yaml": SCHEDULES.replace("*/5 * * * *", "*/5 * * *")})
        daemon.inbox.post_push("")
        assert run_tick(daemon, clock) == datetime(2026, 11, 23, 10, 5, tzinfo=timezone.utc)
        assert [s.id for s in daemon.deployment.schedules] == ["every5"]
        state = json.loads(branch_file(user, "state/deployment.json"))
        (error,) = state["errors"]
        assert error.startswith('.fastflow/schedules.yaml: schedules[0] (id "every5").cron:')
        assert error.endswith("(the last valid schedules stay active)")
        clock.now = datetime(2026, 11, 23, 10, 5, tzinfo=timezone.utc)
        run_tick(daemon, clock)
        assert statuses(daemon, "report") == {"20261123T100500Z-report-every5": RunStatus.SUCCEEDED}


def test_overlap_skip_records_the_slot_a_running_run_blocks(user, tmp_path):
    push_slow_schedule(user, "skip")
    with serving(user, tmp_path) as (daemon, clock):
        clock.now = datetime(2026, 11, 23, 10, 3, tzinfo=timezone.utc)
        daemon.tick(clock())
        clock.now = datetime(2026, 11, 23, 10, 4, tzinfo=timezone.utc)
        daemon.tick(clock())  # the 10:03 run is still running
        assert daemon.dispatcher.wait_idle(120)
        daemon.store.flush()
        assert statuses(daemon, "slow") == {"20261123T100300Z-slow": RunStatus.SUCCEEDED,
                                            "20261123T100400Z-slow": RunStatus.SKIPPED}
        skipped = daemon.store.read_run("20261123T100400Z-slow")
        assert "has not ended (overlap: skip)" in skipped.error.message


def test_overlap_queue_starts_the_waiting_run_when_the_running_one_ends(user, tmp_path):
    push_slow_schedule(user, "queue")
    with serving(user, tmp_path) as (daemon, clock):
        clock.now = datetime(2026, 11, 23, 10, 3, tzinfo=timezone.utc)
        daemon.tick(clock())
        clock.now = datetime(2026, 11, 23, 10, 4, tzinfo=timezone.utc)
        daemon.tick(clock())  # 10:03 still running: 10:04 waits
        assert [d.run_id for d in daemon.timetable.waiting["slow"]] == ["20261123T100400Z-slow"]
        clock.now = datetime(2026, 11, 23, 10, 4, 30, tzinfo=timezone.utc)
        wait_for(lambda: "20261123T100400Z-slow" in daemon.dispatcher.active_run_ids()
                 or "20261123T100400Z-slow" in statuses(daemon, "slow"))
        assert daemon.dispatcher.wait_idle(120)
        daemon.store.flush()
        runs = {r.run_id: r for r in daemon.store.list_runs("slow")}
        assert {i: r.status for i, r in runs.items()} == {
            "20261123T100300Z-slow": RunStatus.SUCCEEDED, "20261123T100400Z-slow": RunStatus.SUCCEEDED}
        first, second = runs["20261123T100300Z-slow"], runs["20261123T100400Z-slow"]
        assert second.started_at >= first.finished_at  # one after the other, never together


def test_an_idle_daemon_commits_its_heartbeat_and_a_fresh_overview_every_five_minutes(user, tmp_path):
    with serving(user, tmp_path) as (daemon, clock):
        daemon.tick(clock())
        first = json.loads(branch_file(user, "state/daemon.json"))
        assert first["heartbeat_interval_s"] == 300.0
        clock.advance(minutes=2)
        daemon.tick(clock())  # the state dir's copy moves every minute, the branch's does not
        assert json.loads(branch_file(user, "state/daemon.json"))["heartbeat"] == first["heartbeat"]
        assert json.loads((tmp_path / "state" / "status.json").read_text())["heartbeat"] == \
            clock().isoformat()
        clock.advance(minutes=4)
        daemon.tick(clock())
        assert json.loads(branch_file(user, "state/daemon.json"))["heartbeat"] == clock().isoformat()
        overview = branch_file(user, "site/index.html")
        assert overview.count("2026-11-23 10:08:30 UTC") >= 2  # the heartbeat and the footer


def test_a_clean_stop_says_stopped_on_the_branch_and_the_site(user, tmp_path):
    with serving(user, tmp_path) as (daemon, clock):
        daemon.tick(clock())
        clock.advance(minutes=1)
    state = json.loads(branch_file(user, "state/daemon.json"))
    assert state["stopped_at"] == "2026-11-23T10:03:30+00:00"
    overview = branch_file(user, "site/index.html")
    assert "Scheduler: stopped (fastflow serve exited cleanly)" in overview


def test_a_disabled_pipeline_is_not_scheduled_and_enabled_again_does_not_catch_up(user, tmp_path):
    """A schedules.yaml entry (catchup: all) of a pipeline a push disables fires nothing and
    records nothing; enabled again by a push, it resumes at its next slot without the slots of
    the disabled time (docs/schedules.md)."""
    user.push({".fastflow/schedules.yaml": SCHEDULES + "    catchup: all\n"})
    with serving(user, tmp_path) as (daemon, clock):
        clock.now = datetime(2026, 11, 23, 10, 5, tzinfo=timezone.utc)
        run_tick(daemon, clock)
        user.push({"pipelines/report/pipeline.json": '{"enabled": false}'}, "disable report")
        daemon.inbox.post_push("")
        daemon.tick(clock())
        (schedule,) = daemon.deployment.schedules
        assert not schedule.enabled and daemon.timetable.next_runs() == []
        for minute in (10, 15):
            clock.now = datetime(2026, 11, 23, 10, minute, tzinfo=timezone.utc)
            daemon.tick(clock())
        assert daemon.dispatcher.wait_idle(60)
        assert "every5" not in json.loads(branch_file(user, "state/scheduler.json"))["schedules"]
        clock.now = datetime(2026, 11, 23, 10, 17, tzinfo=timezone.utc)
        user.push({"pipelines/report/pipeline.json": '{"enabled": true}'}, "enable report")
        daemon.inbox.post_push("")
        assert run_tick(daemon, clock) == datetime(2026, 11, 23, 10, 20, tzinfo=timezone.utc)
        clock.now = datetime(2026, 11, 23, 10, 20, tzinfo=timezone.utc)
        run_tick(daemon, clock)
        assert statuses(daemon, "report") == {
            "20261123T100500Z-report-every5": RunStatus.SUCCEEDED,
            "20261123T102000Z-report-every5": RunStatus.SUCCEEDED,
        }
