"""Supervision through the real daemon and Docker (issue 15): a crashing daemon pipeline is
restarted with the expected waits (an injected clock: the waits are a minute and more), gives up
after the start limit and is reset by a push and by `fastflow supervise reset`; a kill -9 of the
daemon in the cooldown neither loses nor doubles the restart; a `restart_interval` restart
keeps one instance.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from helpers import Clock, utc_now, wait_for
from helpers import ServeProcesses as Serve

from fastflow import repo as git
from fastflow.daemon.inbox import Inbox
from fastflow.daemon.loop import Daemon, ServeOptions
from fastflow.daemon.statedir import queue_remote_run
from fastflow.executors.docker import connect
from fastflow.model import RunStatus
from fastflow.record import Trigger, restart_run_id
from fastflow.results.store import ResultsStore

pytestmark = [pytest.mark.docker, pytest.mark.slow]

T0 = datetime(2026, 11, 22, 14, 0, tzinfo=timezone.utc)
CRASH = "import sys\nprint('supworker up, then down', flush=True)\nsys.exit(3)\n"


def docker_daemon(origin, state: Path, clock, docker_executor_factory) -> Daemon:
    return Daemon(ServeOptions(str(origin.bare), state, poll_interval=3600), clock=clock,
                  environ=dict(os.environ),
                  executor_factory=lambda config: docker_executor_factory())


def runs(daemon: Daemon, pipeline: str = "supworker") -> list:
    return sorted(daemon.store.list_runs(pipeline, limit=100), key=lambda r: r.run_id)


def settle(daemon: Daemon, count: int) -> list:
    """Wait until the daemon recorded `count` runs of supworker and is idle; returns them."""
    wait_for(lambda: len(runs(daemon)) >= count and daemon.dispatcher.wait_idle(0.1),
             timeout=180, what=f"{count} recorded runs of supworker")
    return runs(daemon)


def state_of(daemon: Daemon) -> dict:
    return daemon.store.read_state("supervision")["pipelines"]["supworker"]


@pytest.fixture
def cleanup_containers(tmp_path):
    """Remove what a test left: only its own containers (their mounts are under tmp_path)."""
    yield
    for container in connect().containers.list(
        ignore_removed=True, all=True, filters={"label": "org.fastflow.pipeline=supworker"}):
        if str(tmp_path) in str(container.attrs.get("Mounts")):
            container.remove(force=True)


def test_a_crashing_pipeline_restarts_with_doubling_waits_gives_up_and_is_reset(
        origin, tmp_path, docker_executor_factory, cleanup_containers):
    origin.push({"pipelines/supworker/main.py": CRASH,
                 "pipelines/supworker/pipeline.json": json.dumps({
                     "restart_on_crash": True, "restart_cooldown": 60, "restart_limit": 3,
                     "restart_limit_window": 3600})}, "supworker")
    clock = Clock(T0)
    daemon = docker_daemon(origin, tmp_path / "state", clock, docker_executor_factory)
    daemon.start()
    try:
        daemon.submit("supworker", Trigger(kind="manual"), now=clock.now)
        (first,) = settle(daemon, 1)
        assert first.status is RunStatus.FAILED
        pending = state_of(daemon)["pending"]
        assert (pending["reason"], pending["at"]) == ("crash", (T0 + timedelta(seconds=60)).isoformat())

        # 59 s later nothing starts; at 60 s the restart is queued, with the planned id
        clock.advance(seconds=59)
        assert daemon.tick(clock.now) <= T0 + timedelta(seconds=60)
        time.sleep(1)
        assert len(runs(daemon)) == 1 and daemon.dispatcher.active_run_ids() == set()
        clock.advance(seconds=1)
        daemon.tick(clock.now)
        second = settle(daemon, 2)[1]
        assert second.run_id == restart_run_id("supworker", first.run_id, "crash", clock.now)
        assert (second.trigger.kind, second.trigger.reason, second.trigger.parent_run_id) == \
            ("restart", "crash", first.run_id)
        assert second.status is RunStatus.FAILED
        # the second crash in a row waits twice as long
        assert state_of(daemon)["pending"]["at"] == (clock.now + timedelta(seconds=120)).isoformat()
        clock.advance(seconds=119)
        daemon.tick(clock.now)
        time.sleep(1)
        assert len(runs(daemon)) == 2
        clock.advance(seconds=1)
        daemon.tick(clock.now)
        third = settle(daemon, 3)[2]
        assert (third.trigger.reason, third.trigger.parent_run_id) == ("crash", second.run_id)

        # the third crash within the window reaches restart_limit 3: given up, visible
        given_up = state_of(daemon)
        assert given_up["given_up"] and given_up["pending"] is None
        assert given_up["given_up_after"] == third.run_id
        clock.advance(hours=2)
        assert daemon.tick(clock.now) > clock.now  # nothing pending: it sleeps
        time.sleep(1)
        assert len(runs(daemon)) == 3
        summary = daemon.store.read_summary()
        assert summary["supervision"]["supworker"]["given_up"] is True
        status = subprocess.run(
            [sys.executable, "-m", "fastflow", "status", "--repo", str(origin.bare),
             "--state-dir", str(tmp_path / "state")], capture_output=True, text=True, check=True)
        assert "supervised supworker: GIVEN UP" in status.stdout
        assert f"after {third.run_id}; restarts stopped until a push changes it or " \
               "`fastflow supervise reset supworker`" in status.stdout
        as_json = json.loads(subprocess.run(
            [sys.executable, "-m", "fastflow", "status", "--repo", str(origin.bare), "--json"],
            capture_output=True, text=True, check=True).stdout)
        assert as_json["supervision"]["supworker"]["given_up"] is True
        page = git.read_blob(daemon.repository, daemon.store.head(), "site/index.html").decode()
        assert "given up" in page and third.run_id in page

        # a push that changes the pipeline clears it and starts it again at once
        origin.push({"pipelines/supworker/main.py": CRASH + "# fixed?\n"}, "try a fix")
        daemon.sync(clock.now)
        daemon.tick(clock.now)
        fourth = settle(daemon, 4)[3]
        assert (fourth.trigger.kind, fourth.trigger.reason, fourth.trigger.parent_run_id) == \
            ("restart", "reset", third.run_id)
        after_push = state_of(daemon)
        assert not after_push["given_up"] and after_push["consecutive"] == 1
        assert after_push["pending"]["at"] == (clock.now + timedelta(seconds=60)).isoformat()

        # two more crashes give up again; with no daemon running, `fastflow supervise reset`
        # (the real CLI) leaves its request for the next start, which resets and restarts
        for n in (5, 6):
            clock.advance(seconds=600)
            daemon.tick(clock.now)
            settle(daemon, n)
        assert state_of(daemon)["given_up"]
        sixth = runs(daemon)[5]
        daemon.stop(grace=30)
        reset = subprocess.run(
            [sys.executable, "-m", "fastflow", "supervise", "reset", "supworker", "--state-dir",
             str(tmp_path / "state")], capture_output=True, text=True)
        assert reset.returncode == 0, reset.stderr
        assert "to reset the supervision of supworker" in reset.stdout
        daemon = docker_daemon(origin, tmp_path / "state", clock, docker_executor_factory)
        daemon.start()
        assert state_of(daemon)["given_up"]  # from the results branch: still given up
        clock.advance(hours=1)
        daemon.tick(clock.now)
        seventh = settle(daemon, 7)[6]
        assert (seventh.trigger.reason, seventh.trigger.parent_run_id) == ("reset", sixth.run_id)
        assert not state_of(daemon)["given_up"]
        assert list(Inbox(tmp_path / "state").read()) == []  # the request was acknowledged
    finally:
        if daemon.lock._fd is not None:
            daemon.stop(grace=30)


def branch_runs(bare: Path, state: Path) -> list:
    store = ResultsStore(bare, state / "journal-reader", utc_now)
    return sorted(store.list_runs("supworker", limit=100), key=lambda r: r.run_id)


def test_a_kill_9_in_the_cooldown_neither_loses_nor_doubles_the_restart(
        origin, tmp_path, runner_image, shared_cache, cleanup_containers):
    origin.push({"pipelines/supworker/main.py": CRASH,
                 "pipelines/supworker/pipeline.json": json.dumps({
                     "restart_on_crash": True, "restart_cooldown": 8, "restart_limit": 2})},
                "supworker")
    serve = Serve(origin.bare, tmp_path / "state", shared_cache, tmp_path)
    try:
        serve.start()
        queue_remote_run(tmp_path / "state", "supworker", {}, None, utc_now())
        (crashed,) = wait_for(lambda: branch_runs(origin.bare, tmp_path), timeout=120,
                              what="the first crash on the results branch")
        serve.kill()  # within the 8 s cooldown: the restart is pending, nothing queued yet
        killed_at = utc_now()
        assert (killed_at - crashed.finished_at).total_seconds() < 8, serve.output()
        serve.start()  # at once: the new daemon must wait out the rest of the cooldown
        restarted = wait_for(lambda: branch_runs(origin.bare, tmp_path)[1:], timeout=120,
                             what="the restart's record")[0]
        planned = crashed.finished_at + timedelta(seconds=8)
        assert restarted.run_id == restart_run_id("supworker", crashed.run_id, "crash", planned)
        assert planned <= restarted.started_at <= planned + timedelta(seconds=20)
        assert (restarted.trigger.kind, restarted.trigger.reason) == ("restart", "crash")
        # the second crash reaches restart_limit 2: given up; kill -9 and start once more
        wait_for(lambda: (json.loads(subprocess.run(
            [sys.executable, "-m", "fastflow", "status", "--repo", str(origin.bare), "--json"],
            capture_output=True, text=True, check=True).stdout)["supervision"].get("supworker")
            or {}).get("given_up"), timeout=60, what="given up on the branch")
        serve.kill()
        serve.start()
        time.sleep(12)  # longer than the cooldown: a doubled or resurrected restart would run
        assert [r.run_id for r in branch_runs(origin.bare, tmp_path)] == \
            [crashed.run_id, restarted.run_id], serve.output()
        assert "Traceback" not in serve.output()
    finally:
        serve.stop_all()


def test_a_supervised_run_running_at_a_kill_9_is_reattached_not_restarted(
        origin, tmp_path, runner_image, shared_cache, cleanup_containers):
    origin.push({"pipelines/supworker/main.py": "import time\nprint('up', flush=True)\n"
                                            "while True:\n    time.sleep(0.2)\n",
                 "pipelines/supworker/pipeline.json": json.dumps({
                     "restart_on_crash": True, "restart_cooldown": 1})}, "long-running supworker")
    serve = Serve(origin.bare, tmp_path / "state", shared_cache, tmp_path)
    try:
        serve.start()
        run_id = queue_remote_run(tmp_path / "state", "supworker", {}, None, utc_now())
        wait_for(lambda: running_supworkers(tmp_path) == 1, timeout=120, what="the supworker's container")
        (container,) = connect().containers.list(ignore_removed=True, filters={"label": f"org.fastflow.run_id={run_id}"})
        serve.kill()
        serve.start()
        wait_for(lambda: f"{run_id}: re-attaching to its container" in serve.output(),
                 timeout=60, what="the re-attach")
        time.sleep(5)  # longer than the cooldown: a restart would have been queued by now
        assert branch_runs(origin.bare, tmp_path) == [] and running_supworkers(tmp_path) == 1
        assert [c.id for c in connect().containers.list(
        ignore_removed=True, filters={"label": "org.fastflow.pipeline=supworker"})] == [container.id]
        assert [p.name for p in (tmp_path / "state" / "active").glob("*.json")] == [f"{run_id}.json"]
        shown = json.loads(subprocess.run(
            [sys.executable, "-m", "fastflow", "status", "--repo", str(origin.bare), "--json"],
            capture_output=True, text=True, check=True).stdout)["supervision"]["supworker"]
        assert shown["running"] == run_id and shown["up_since"] is not None
        assert (shown["next_restart"], shown["given_up"], shown["restarts_last_day"]) == \
            (None, False, 0)
        subprocess.run([sys.executable, "-m", "fastflow", "cancel", run_id, "--grace", "1"],
                       check=True, capture_output=True)
        (record,) = wait_for(lambda: branch_runs(origin.bare, tmp_path), timeout=60,
                             what="the cancelled run's record")
        assert (record.run_id, record.status) == (run_id, RunStatus.CANCELLED)
        time.sleep(3)  # a cancel is no crash: nothing restarts
        assert len(branch_runs(origin.bare, tmp_path)) == 1
    finally:
        serve.stop_all()


def running_supworkers(tmp_path: Path) -> int:
    """Running containers of the test whose files are under `tmp_path`."""
    return len([c for c in connect().containers.list(ignore_removed=True, filters={
        "label": "org.fastflow.pipeline=supworker", "status": "running"})
        if str(tmp_path) in str(c.attrs.get("Mounts"))])


def test_a_restart_interval_restart_stops_the_instance_first_and_keeps_one(
        origin, tmp_path, docker_executor_factory, cleanup_containers):
    origin.push({"pipelines/supworker/main.py": "import time\nprint('up', flush=True)\n"
                                            "while True:\n    time.sleep(0.2)\n",
                 "pipelines/supworker/pipeline.json": json.dumps({"restart_interval": 6})},
                "long-running supworker")
    daemon = docker_daemon(origin, tmp_path / "state", utc_now, docker_executor_factory)
    daemon.start()
    most, stop, seen = [0], threading.Event(), []

    def watch() -> None:
        while not stop.is_set():
            found = [c for c in connect().containers.list(ignore_removed=True, filters={
                "label": "org.fastflow.pipeline=supworker", "status": "running"})
                if str(tmp_path) in str(c.attrs.get("Mounts"))]  # this test's only
            if len(found) > most[0]:
                most[0] = len(found)
                seen.append([(c.name, c.labels.get("org.fastflow.run_id")) for c in found])
            time.sleep(0.1)

    watcher = threading.Thread(target=watch, daemon=True)
    server = threading.Thread(target=daemon.serve, daemon=True)
    watcher.start()
    server.start()
    try:
        first_id = daemon.submit("supworker", Trigger(kind="manual"), now=utc_now())
        first = wait_for(lambda: runs(daemon), timeout=120, what="the planned restart's stop")[0]
        assert (first.run_id, first.status) == (first_id, RunStatus.CANCELLED)
        # planned 6 s after the start the daemon saw (the journal's; the record's start is a
        # moment later, maybe in the next second)
        planned = {restart_run_id("supworker", first.run_id, "interval",
                                  first.started_at + timedelta(seconds=6 - back)) for back in (0, 1)}
        prefix, _, second_id = first.error.message.removesuffix(" (restart_interval)").rpartition(" ")
        assert prefix == "stopped for its planned restart" and second_id in planned

        def second_started():  # running (journalled), or already replaced in turn (recorded)
            order = daemon.launcher.journal.get(second_id)
            if order is not None:
                return order if order.started_at else None
            return next((r for r in runs(daemon) if r.run_id == second_id), None)

        second = wait_for(second_started, timeout=60, what="the new instance started")
        assert second.started_at >= first.finished_at  # the new one started after the old ended
        assert (second.trigger.kind, second.trigger.reason, second.trigger.parent_run_id) == \
            ("restart", "interval", first.run_id)
        # at its planned time (a run's start plans it on a supworker thread: the loop is woken),
        # then SIGTERM ends it at once (not a minute later, at the next heartbeat)
        assert timedelta(seconds=6) <= first.finished_at - first.started_at <= timedelta(seconds=25)
        assert most[0] == 1, seen
    finally:
        stop.set()
        daemon.request_stop()
        server.join(60)  # no round queues another restart after this
        for job in daemon.dispatcher.running():
            daemon.dispatcher.cancel(job.run_id)
        daemon.stop(grace=60)
