"""Supervision's pure decisions (fastflow.daemon.supervision) with a fixed clock: waits,
doubling, the healthy window, the start limit, resets, planned restarts, idempotence."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from fastflow.config import default_repo_config
from fastflow.config.pipeline import parse_pipeline_metadata
from fastflow.daemon.supervision import (
    PendingRestart,
    Supervised,
    cooldown,
    due,
    ended,
    next_wake,
    planned_restart_at,
    queued,
    reset,
    started,
    states_from_json,
    states_to_json,
)
from fastflow.model import DaemonPolicy, RunStatus
from fastflow.record import ErrorInfo, RunRecord, restart_run_id
from fastflow.results.read import supervision_view

T0 = datetime(2026, 11, 22, 14, 0, tzinfo=timezone.utc)
POLICY = DaemonPolicy(restart_on_crash=True)  # 60 s, doubling to 1 h, healthy 10 min, 5 in 10 min


def crashed(n: int, at: datetime, up_s: float = 5.0, status=RunStatus.FAILED) -> RunRecord:
    return RunRecord(run_id=f"{at:%Y%m%dT%H%M%SZ}-worker-{n:08x}", pipeline="worker",
                     status=status, started_at=at - timedelta(seconds=up_s), finished_at=at,
                     duration_s=up_s)


def test_the_cooldown_doubles_per_consecutive_crash_up_to_the_cap():
    assert [cooldown(POLICY, n) for n in (1, 2, 3, 4, 5, 6, 7, 8)] == \
        [60, 120, 240, 480, 960, 1920, 3600, 3600]
    capped = DaemonPolicy(restart_on_crash=True, restart_cooldown=10, restart_cooldown_max=25)
    assert [cooldown(capped, n) for n in (1, 2, 3, 200)] == [10, 20, 25, 25]


def test_a_crash_plans_a_restart_after_the_cooldown_with_a_deterministic_id():
    record = crashed(1, T0)
    state, events = ended(Supervised(), record, POLICY, "tree1", T0)
    pending = state.pending
    assert (pending.reason, pending.after, pending.at) == ("crash", record.run_id,
                                                           T0 + timedelta(seconds=60))
    assert pending.run_id == restart_run_id("worker", record.run_id, "crash", pending.at)
    assert pending.run_id.startswith("20261122T140100Z-worker-restart-")
    assert [e.kind for e in events] == ["restart_planned"]
    assert due(state, T0 + timedelta(seconds=59)) is None
    assert due(state, T0 + timedelta(seconds=60)) == pending
    assert next_wake([state, Supervised()]) == pending.at
    # the same record again (a retry of its storing, a second daemon pass): nothing changes
    assert ended(state, record, POLICY, "tree1", T0 + timedelta(seconds=5)) == (state, ())


def test_consecutive_crashes_wait_longer_and_the_fifth_within_ten_minutes_gives_up():
    state, now, waits = Supervised(), T0, []
    for n in range(1, 5):
        state, events = ended(state, crashed(n, now), POLICY, "tree1", now)
        waits.append((state.pending.at - now).total_seconds())
        now = state.pending.at
        state = queued(state, now)
        assert state.pending is None and state.restarts[-1] == now
        now += timedelta(seconds=5)  # the restart ran 5 s and crashed again
    assert waits == [60, 120, 240, 480]
    # these waits spread the crashes over more than the 10-minute window: older ones expire
    assert now - T0 > timedelta(minutes=10)
    state, events = ended(state, crashed(5, now), POLICY, "tree1", now)
    assert not state.given_up and state.pending is not None
    assert len(state.crashes) < 5

    fast = DaemonPolicy(restart_on_crash=True, restart_cooldown=1, restart_cooldown_max=2)
    state, now = Supervised(), T0
    for n in range(1, 5):
        state, events = ended(state, crashed(n, now), fast, "tree1", now)
        assert events[0].kind == "restart_planned"
        now = state.pending.at + timedelta(seconds=3)
        state = queued(state, state.pending.at)
    state, events = ended(state, crashed(5, now), fast, "tree1", now)
    assert state.given_up and state.pending is None
    assert (state.given_up_at, state.given_up_after, state.given_up_tree) == \
        (now, crashed(5, now).run_id, "tree1")
    (event,) = events
    assert event.kind == "given_up" and event.run_id == crashed(5, now).run_id
    assert "fastflow supervise reset worker" in event.message
    # a further crash (a manual run) while given up: no second given_up event, no restart
    later = now + timedelta(seconds=30)
    again, events = ended(state, crashed(6, later), fast, "tree1", later)
    assert events == () and again.pending is None and again.given_up_at == now


def test_a_run_up_for_the_healthy_window_starts_the_doubling_afresh():
    state, events = ended(Supervised(consecutive=3), crashed(1, T0, up_s=599), POLICY, "t", T0)
    assert state.consecutive == 4 and state.pending.at == T0 + timedelta(seconds=480)
    state, events = ended(Supervised(consecutive=3), crashed(2, T0, up_s=600), POLICY, "t", T0)
    assert state.consecutive == 1 and state.pending.at == T0 + timedelta(seconds=60)


def test_success_cancel_and_non_supervised_outcomes_restart_nothing():
    for status in (RunStatus.SUCCEEDED, RunStatus.CANCELLED):
        state, events = ended(Supervised(consecutive=2), crashed(1, T0, status=status), POLICY,
                              "t", T0)
        assert (state.pending, state.consecutive, events) == (None, 0, ())
    for status in (RunStatus.TIMED_OUT, RunStatus.OOM_KILLED, RunStatus.LOST):
        state, _ = ended(Supervised(), crashed(1, T0, status=status), POLICY, "t", T0)
        assert state.pending.reason == "crash"
    interval_only = DaemonPolicy(restart_interval=3600)
    state, events = ended(Supervised(), crashed(1, T0), interval_only, "t", T0)
    assert state.pending is None and events == ()


def test_reset_clears_the_count_and_restarts_a_given_up_pipeline_at_once():
    given_up = Supervised(consecutive=5, crashes=(T0,) * 5, given_up_at=T0,
                          given_up_after="20261122T140000Z-worker-00000005", given_up_tree="t")
    later = T0 + timedelta(hours=1)
    state, (event,) = reset(given_up, "worker", later, "fastflow supervise reset")
    assert not state.given_up and state.consecutive == 0 and state.crashes == ()
    assert (state.pending.reason, state.pending.at, state.pending.after) == \
        ("reset", later, "20261122T140000Z-worker-00000005")
    assert event.kind == "reset" and event.run_id == state.pending.run_id
    # not given up, or up again (a manual run): only the counters go
    up = replace_running(given_up, "20261122T150000Z-worker-manual")
    state, _ = reset(up, "worker", later, "x")
    assert state.pending is None and not state.given_up


def replace_running(state: Supervised, run_id: str) -> Supervised:
    return Supervised(**{**state.__dict__, "running": run_id, "up_since": T0})


def test_a_started_instance_is_up_and_its_interval_restart_is_planned():
    hourly = DaemonPolicy(restart_interval=3600.0)
    state = started(Supervised(), "worker", "20261122T140000Z-worker-aa", T0, hourly)
    assert (state.running, state.up_since) == ("20261122T140000Z-worker-aa", T0)
    assert (state.pending.reason, state.pending.at, state.pending.after) == \
        ("interval", T0 + timedelta(hours=1), "20261122T140000Z-worker-aa")
    # re-attached after a daemon restart: the same run, the same plan
    assert started(state, "worker", "20261122T140000Z-worker-aa", T0 + timedelta(minutes=5),
                   hourly) == state
    # queued: the old instance is being stopped; its cancelled end restarts nothing more
    at = state.pending.at
    stopping = queued(state, at)
    assert stopping.pending.queued and due(stopping, at) is None and stopping.restarts == (at,)
    old = RunRecord(run_id="20261122T140000Z-worker-aa", pipeline="worker",
                    status=RunStatus.CANCELLED, started_at=T0, finished_at=at, duration_s=3600)
    done, events = ended(stopping, old, hourly, "t", at)
    assert done.pending is None and done.running is None and events == ()


def test_a_cron_interval_restarts_at_its_next_time_after_the_start():
    assert planned_restart_at("0 3 * * *", T0) == datetime(2026, 11, 23, 3, 0, tzinfo=timezone.utc)
    assert planned_restart_at(90.0, T0) == T0 + timedelta(seconds=90)


def test_a_crash_while_a_crash_restart_waits_supersedes_nothing_and_a_start_clears_it():
    state, _ = ended(Supervised(), crashed(1, T0), POLICY, "t", T0)
    manual = started(state, "worker", "20261122T140010Z-worker-manual", T0 + timedelta(seconds=10),
                     POLICY)
    assert manual.pending is None and manual.running == "20261122T140010Z-worker-manual"


def test_the_state_round_trips_through_json_and_shows_in_words():
    pending = PendingRestart("20261122T140100Z-worker-restart-0a1b2c3d", T0 + timedelta(minutes=1),
                             "crash", "20261122T140000Z-worker-00000001")
    state = Supervised(consecutive=2, crashes=(T0,), restarts=(T0 - timedelta(hours=2),
                                                               T0 - timedelta(hours=25)),
                       pending=pending, running=None, up_since=None, handled="x")
    data = json.loads(json.dumps(states_to_json({"worker": state})))
    assert states_from_json(data, "state/supervision.json") == {"worker": state}
    view = supervision_view(data["pipelines"]["worker"], T0)
    assert view["restarts_last_day"] == 1
    assert view["next_restart"] == {"at": pending.at.isoformat(), "in": "in 1 min",
                                    "reason": "crash", "run_id": pending.run_id}
    assert (view["up_since"], view["given_up"], view["crashes_in_a_row"]) == (None, False, 2)


def test_our_supervision_fields_are_parsed_with_file_field_and_fix():
    def parse(data: dict):
        return parse_pipeline_metadata(json.dumps(data), name="w",
                                       file="pipelines/w/pipeline.json",
                                       config=default_repo_config())

    meta = parse({"restart_on_crash": True, "restart_cooldown": 5, "restart_cooldown_max": 80,
                  "restart_healthy_after": 30, "restart_limit": 3, "restart_limit_window": 120})
    assert meta.values["daemon"] == DaemonPolicy(
        restart_on_crash=True, restart_cooldown=5, restart_cooldown_max=80,
        restart_healthy_after=30, restart_limit=3, restart_limit_window=120)
    assert meta.problems == ()
    default = parse({"restart_on_crash": True}).values["daemon"]
    assert (default.restart_cooldown_max, default.restart_healthy_after, default.restart_limit,
            default.restart_limit_window) == (3600, 600, 5, 600)
    bad = parse({"restart_on_crash": True, "restart_cooldown": 60, "restart_cooldown_max": 30,
                 "restart_limit": 0, "restart_limit_window": 0})
    assert sorted(str(p) for p in bad.problems) == sorted([
        "pipelines/w/pipeline.json: restart_cooldown_max: 30 is below restart_cooldown (60); "
        "use a cap of at least 60 or lower restart_cooldown",
        "pipelines/w/pipeline.json: restart_limit: 0 is not a whole number >= 1",
        "pipelines/w/pipeline.json: restart_limit_window: 0 is not a number of seconds > 0; "
        "use a number such as 60",
    ])
    unused = parse({"restart_limit": 3})
    assert [(p.field, p.severity.value, p.message) for p in unused.problems] == [
        ("restart_limit", "warning",
         'has no effect without "restart_on_crash": true; add it or remove this field')]


def test_a_refused_request_is_no_crash_and_a_restart_keeps_the_run_configuration():
    refused = RunRecord(run_id="20261122T140000Z-worker-0000000f", pipeline="worker",
                        status=RunStatus.FAILED, error=ErrorInfo("refused", "disabled"),
                        finished_at=T0)
    assert ended(Supervised(), refused, POLICY, "t", T0) == (Supervised(), ())
    record = RunRecord(**{**crashed(1, T0).__dict__, "run_config": "prod"})
    state, _ = ended(Supervised(), record, POLICY, "t", T0)
    assert state.pending.run_config == "prod"
    hourly = DaemonPolicy(restart_interval=3600.0)
    assert started(Supervised(), "worker", "r1", T0, hourly, "prod").pending.run_config == "prod"
