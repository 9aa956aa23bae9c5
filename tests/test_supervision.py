"""Supervision's pure decisions (fastflow.daemon.supervision) with a fixed clock: waits,
doubling, the healthy window, the start limit, resets, planned restarts, idempotence."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from click.testing import CliRunner

from fastflow.cli import main
from fastflow.config import default_repo_config
from fastflow.config.pipeline import parse_pipeline_metadata
from fastflow.daemon.inbox import Inbox, SuperviseMessage
from fastflow.daemon.supervision import (
    PendingRestart,
    Supervised,
    Supervisor,
    SupervisorHooks,
    cooldown,
    due,
    ended,
    explained,
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
from fastflow.results.publish import summaries_from_json
from fastflow.results.read import supervision_view, supervision_views
from fastflow.site import SiteData, render_overview, render_pipeline_index

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
    assert explained(stopping, old).error == ErrorInfo(
        "cancelled", f"stopped for its planned restart {stopping.pending.run_id} (restart_interval)")
    assert explained(state, old) == old  # not yet queued: a person's cancel stays as it is
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


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_supervise_reset_leaves_a_request_in_the_inbox_and_refuses_with_the_fix(tmp_path):
    state = tmp_path / "state"
    missing = cli("supervise", "reset", "worker", "--state-dir", state)
    assert (missing.exit_code, missing.stdout) == (1, "")
    assert missing.stderr == (f"Error: {state}: no `fastflow serve` state dir here (no inbox/); "
                              "pass the daemon's --state-dir\n")
    (state / "inbox").mkdir(parents=True)
    (state / "deployment.json").write_text(json.dumps({"active": {"worker": {}}}))
    unknown = cli("supervise", "reset", "wroker", "--state-dir", state)
    assert (unknown.exit_code, unknown.stdout) == (1, "")
    assert unknown.stderr == (f"Error: {state}: the daemon has no active pipeline named 'wroker'; "
                              'did you mean "worker"? Check the name (`fastflow status`)\n')
    done = cli("supervise", "reset", "worker", "--state-dir", state)
    assert done.exit_code == 0, done.output
    assert done.stdout == (f"asked the daemon of {state} to reset the supervision of worker (a "
                           "running daemon does it at once, otherwise at its next start); "
                           "`fastflow status` shows it\n")
    (message,) = Inbox(state).read()
    assert isinstance(message, SuperviseMessage)
    assert (message.action, message.pipeline) == ("reset", "worker")
    assert message.name.startswith("supervise-") and message.name.endswith(".json")


def test_a_malformed_supervise_message_is_set_aside_never_raised(tmp_path):
    inbox = Inbox(tmp_path)
    (inbox.path / "supervise-1-ab.json").write_text('{"action": "explode", "pipeline": "w"}')
    (inbox.path / "supervise-2-ab").write_text("{}")  # no .json: not a message name
    assert inbox.read() == []
    assert sorted(p.name for p in (inbox.path / "bad").iterdir()) == [
        "supervise-1-ab.json", "supervise-2-ab"]


def test_the_site_shows_supervised_and_given_up_pipelines():
    data = {"pipelines": {
        "worker": Supervised(running="20261122T130000Z-worker-aa", up_since=T0 - timedelta(hours=1),
                             restarts=(T0 - timedelta(minutes=30),)).to_json(),
        "bot": Supervised(given_up_at=T0 - timedelta(minutes=4),
                          given_up_after="20261122T135600Z-bot-restart-9f1c22d0").to_json()}}
    summary = {"pipelines": {name: {"recent": [{"run_id": f"20261122T130000Z-{name}-aa",
                                                 "status": "failed", "duration_s": 1.0,
                                                 "finished_at": T0.isoformat()}]}
                             for name in ("worker", "bot")}}
    site = SiteData(now=T0, supervision=supervision_views(data, T0),
                    summaries=summaries_from_json(summary))
    page = render_overview(site)["index.html"].decode()
    assert "supervised: up since 2026-11-22 13:00:00 UTC (1 h ago)" in page
    assert "1 restart in the last day" in page
    assert '<span class="tag tag-bad">given up</span>' in page
    assert "Given up" in page and "20261122T135600Z-bot-restart-9f1c22d0" in page
    card = render_pipeline_index(site, "bot", [])["pipelines/bot/index.html"].decode()
    assert "Supervision" in card and "fastflow supervise reset bot" in card


class FakeDaemon:
    """The daemon side of `SupervisorHooks`, in memory: what was queued, cancelled, saved."""

    def __init__(self, policy: DaemonPolicy, tree: str = "tree1") -> None:
        self.policy, self.tree = policy, tree
        self.queued: list[tuple[str, str, str | None]] = []
        self.cancelled: list[str] = []
        self.saved: list[dict] = []
        self.busy: set[str] = set()
        self.events = []

    def hooks(self) -> SupervisorHooks:
        return SupervisorHooks(
            policy=lambda name: (self.policy, self.tree) if self.policy else None,
            submit=lambda name, trigger, run_id, rc: self.queued.append((run_id, trigger.reason, rc)),
            knows=lambda run_id, name: run_id in {q[0] for q in self.queued},
            cancel=self.cancelled.append, save=self.saved.append,
            active=lambda name, besides: bool(self.busy - {besides}), notify=self.events.append)


def test_the_supervisor_queues_each_restart_once_and_stops_a_replaced_instance_once():
    fake = FakeDaemon(POLICY)
    supervisor = Supervisor(fake.hooks())
    record = crashed(1, T0)
    supervisor.run_ended(record, T0)
    supervisor.run_ended(record, T0)  # the same record again: one decision
    assert len(fake.saved) == 1 and [e.kind for e in fake.events] == ["restart_planned"]
    assert supervisor.tick(T0 + timedelta(seconds=30)) == T0 + timedelta(seconds=60)
    assert fake.queued == []
    assert supervisor.tick(T0 + timedelta(seconds=60)) is None
    planned = restart_run_id("worker", record.run_id, "crash", T0 + timedelta(seconds=60))
    assert fake.queued == [(planned, "crash", None)]
    # a second daemon loading the saved state before the queue was saved: knows the id
    again = Supervisor(fake.hooks())
    again.load(fake.saved[0], "state/supervision.json")
    again.tick(T0 + timedelta(seconds=61))
    assert fake.queued == [(planned, "crash", None)]
    assert again.states["worker"].pending is None

    hourly = FakeDaemon(DaemonPolicy(restart_interval=3600.0))
    supervisor = Supervisor(hourly.hooks())
    supervisor.run_started("worker", "20261122T140000Z-worker-aa", T0)
    at = T0 + timedelta(hours=1)
    supervisor.tick(at)
    supervisor.tick(at + timedelta(seconds=1))
    assert [q[1] for q in hourly.queued] == ["interval"]
    assert hourly.cancelled == ["20261122T140000Z-worker-aa"]  # asked once
    # a daemon restarted before the old instance ended asks once more (the ask was in memory)
    restarted = Supervisor(hourly.hooks())
    restarted.load(hourly.saved[-1], "state/supervision.json")
    restarted.tick(at + timedelta(seconds=2))
    assert hourly.cancelled == ["20261122T140000Z-worker-aa"] * 2 and len(hourly.queued) == 1


def test_a_due_restart_is_dropped_when_another_run_is_the_instance_or_supervision_is_gone():
    fake = FakeDaemon(POLICY)
    supervisor = Supervisor(fake.hooks())
    supervisor.run_ended(crashed(1, T0), T0)
    fake.busy = {"20261122T140030Z-worker-manual"}  # someone queued a run meanwhile
    supervisor.tick(T0 + timedelta(minutes=1))
    assert fake.queued == [] and supervisor.states["worker"].pending is None
    fake.busy = set()
    fake.policy = None  # removed or disabled by a push: its state goes
    supervisor.tick(T0 + timedelta(minutes=2))
    assert supervisor.states == {} and fake.saved[-1] == {"schema": 1, "pipelines": {}}


def test_a_push_that_changes_a_given_up_pipeline_resets_it_and_restarts_it_at_once():
    fake = FakeDaemon(DaemonPolicy(restart_on_crash=True, restart_limit=1))
    supervisor = Supervisor(fake.hooks())
    supervisor.run_ended(crashed(1, T0), T0)
    assert supervisor.states["worker"].given_up
    assert [e.kind for e in fake.events] == ["given_up"]
    supervisor.tick(T0 + timedelta(hours=1))
    assert fake.queued == []  # the same tree: still given up
    fake.tree = "tree2"
    supervisor.tick(T0 + timedelta(hours=2))
    assert [q[1] for q in fake.queued] == ["reset"]
    assert not supervisor.states["worker"].given_up
    assert [e.kind for e in fake.events] == ["given_up", "reset"]


def test_a_run_that_ends_after_its_pipeline_was_disabled_is_down_and_forgotten():
    fake = FakeDaemon(DaemonPolicy(restart_interval=3600.0))
    supervisor = Supervisor(fake.hooks())
    supervisor.run_started("worker", "20261122T140000Z-worker-aa", T0)
    fake.policy = None  # a push disabled it while it ran
    supervisor.tick(T0 + timedelta(minutes=1))
    assert supervisor.states["worker"].running == "20261122T140000Z-worker-aa"  # kept: it is up
    supervisor.run_ended(RunRecord(run_id="20261122T140000Z-worker-aa", pipeline="worker",
                                   status=RunStatus.SUCCEEDED, finished_at=T0), T0)
    supervisor.tick(T0 + timedelta(minutes=2))
    assert supervisor.states == {}
