"""The daemon across restarts: what happened while it was down is handled once, and what it
deployed last is what it runs again (issue 11: items 1, 2, 9, 11, 16).

Real git (a bare repository with a clone pushing with the git CLI), real runs on the host
executor; the daemon in this process, stopped and started again on the same state dir.
"""
from __future__ import annotations

import json
import logging
import os

import pytest
from helpers import git, make_daemon, utc_now, wait_for, write_files

from fastflow.daemon.hooks import install_hook
from fastflow.daemon.inbox import Inbox
from fastflow.daemon.runs import RunOrder
from fastflow.errors import RepositoryError
from fastflow.executors.base import OutputLine
from fastflow.model import RunStatus
from fastflow.record import Trigger, new_run_id

pytestmark = pytest.mark.slow

ON_CHANGE = '{"run_on_change": true}'


@pytest.fixture
def user(origin):
    origin.push({
        ".fastflow/config.yaml": "max_concurrent_runs: 2\n",
        ".fastflow/schedules.yaml": "schedules:\n  - id: nightly\n    pipeline: report\n"
                                    "    cron: '0 3 * * *'\n",
        "pipelines/etl/main.py": "print('etl')\n",
        "pipelines/etl/pipeline.json": ON_CHANGE,
        "pipelines/report/main.py": "print('report')\n",
    }, "first")
    return origin


@pytest.fixture
def daemons(tmp_path):
    """Start daemons on one state dir (`start(source)`); each is stopped at the end."""
    started = []

    def start(source, **options):
        daemon = make_daemon(str(source), tmp_path / "state", **options)
        started.append(daemon)
        daemon.notes = daemon.start()
        return daemon

    yield start
    for daemon in started:
        if daemon.lock._fd is not None:
            daemon.stop(grace=30) if hasattr(daemon, "dispatcher") else daemon.lock.release()


def records(daemon, pipeline: str) -> list:
    return daemon.store.list_runs(pipeline, limit=50)


def no_errors(caplog) -> list[str]:
    return [f"{r.name}: {r.getMessage()}" for r in caplog.records if r.levelno >= logging.ERROR]


# --- item 1: a push while the daemon is down -------------------------------------------------

def test_a_push_while_the_daemon_was_down_runs_once_at_the_next_start(user, daemons, caplog):
    first = daemons(user.bare)
    first.stop(grace=30)
    sha = user.push({"pipelines/fresh/main.py": "print('fresh')\n",
                     "pipelines/fresh/pipeline.json": ON_CHANGE}, "fresh")
    again = daemons(user.bare)
    assert again.notes == []  # the sync's own run is not a run a previous daemon left
    assert again.dispatcher.wait_idle(60)
    (record,) = wait_for(lambda: records(again, "fresh"))
    assert (record.status, record.commit.sha, record.trigger.kind) == (RunStatus.SUCCEEDED, sha, "push")
    assert list((again.state_dir / "active").iterdir()) == []
    assert records(again, "etl") == []
    assert no_errors(caplog) == []


# --- item 2: pushes the hook recorded before the first start ---------------------------------

def test_pushes_recorded_before_the_first_start_run_what_they_changed(user, tmp_path, daemons):
    state = tmp_path / "state"
    Inbox(state)  # the inbox a daemon (or its operator) made; the hook writes there
    install_hook(user.bare, state)
    user.push({"pipelines/etl/main.py": "print('etl v2')\n"}, "etl v2")
    sha = user.push({"pipelines/fresh/main.py": "print('fresh')\n",
                     "pipelines/fresh/pipeline.json": ON_CHANGE}, "fresh")
    assert len(list((state / "inbox").glob("push-*"))) == 2
    daemon = daemons(user.bare)
    assert daemon.deployment.commit == sha
    assert daemon.dispatcher.wait_idle(60)
    for name in ("etl", "fresh"):  # changed in the recorded range: once each, at the newest commit
        (record,) = wait_for(lambda name=name: records(daemon, name))
        assert (record.status, record.commit.sha, record.trigger.kind) == (RunStatus.SUCCEEDED, sha, "push")
    daemon.tick(utc_now())  # the inbox's messages are taken: nothing runs twice
    assert daemon.dispatcher.wait_idle(60)
    assert len(records(daemon, "etl")) == len(records(daemon, "fresh")) == 1
    assert records(daemon, "report") == []
    # the first start deployed every pipeline's pages, not only the changed ones
    tree = git("--git-dir", str(user.bare), "ls-tree", "-r", "--name-only", "fastflow/results",
               cwd=user.bare)
    assert "site/pipelines/report/index.html" in tree


def test_a_push_that_created_the_branch_before_the_first_start_runs_nothing(origin, tmp_path,
                                                                             daemons):
    state = tmp_path / "state"
    Inbox(state)
    install_hook(origin.bare, state)
    origin.push({"pipelines/etl/main.py": "print('etl')\n",
                 "pipelines/etl/pipeline.json": ON_CHANGE}, "first")
    daemon = daemons(origin.bare)
    assert daemon.deployment.changes.first_sync
    assert daemon.dispatcher.wait_idle(60)
    assert records(daemon, "etl") == []


def test_a_first_start_without_recorded_pushes_adopts_the_head_without_running(user, daemons):
    daemon = daemons(user.bare)
    assert daemon.deployment.changes.first_sync
    assert daemon.dispatcher.wait_idle(60)
    assert records(daemon, "etl") == []


# --- item 16: pushes that arrive during a sync fold into one run -----------------------------

def test_pushes_waiting_for_one_sync_fold_into_one_run_at_the_newest_commit(user, daemons):
    daemon = daemons(user.bare)
    shas = [user.push({"pipelines/etl/main.py": f"print('etl v{v}')\n"}, f"v{v}") for v in (2, 3, 4)]
    for old, new in zip([daemon.deployment.commit, *shas], shas):
        daemon.inbox.post_push(f"{old} {new} refs/heads/main\n")
    daemon.tick(utc_now())
    assert daemon.dispatcher.wait_idle(60)
    (record,) = wait_for(lambda: records(daemon, "etl"))
    assert (record.commit.sha, record.trigger.kind) == (shas[-1], "push")
    assert "etl v4" in daemon.store.read_log(record.run_id, pipeline="etl")


# --- item 9: the last valid deployment survives restarts -------------------------------------

def test_a_restart_keeps_the_last_valid_configuration_schedules_and_pipelines(user, daemons,
                                                                             caplog):
    first = daemons(user.bare)
    good_etl = first.deployment.active["etl"]
    bad = user.push({".fastflow/config.yaml": "max_concurrent_runs: lots\n",
                     ".fastflow/schedules.yaml": "schedules: [{id: x}]\n",
                     "pipelines/etl/pipeline.json": '{"timeout": "soon"}'}, "bad")
    first.sync(utc_now())
    before = first.deployment
    first.stop(grace=30)
    again = daemons(user.bare)
    restored = again.deployment
    assert restored.commit == bad
    assert restored.config == before.config and restored.config.max_concurrent_runs == 2
    assert restored.active == before.active and restored.active["etl"] == good_etl
    assert [s.id for s in restored.schedules] == ["nightly"]
    assert [str(p) for p in restored.errors] == [str(p) for p in before.errors]
    assert again.timetable.plan is not None and again.timetable.next_runs()
    run_id = again.submit("report", Trigger("manual"), now=utc_now())
    assert again.dispatcher.wait_idle(60)
    assert wait_for(lambda: again.store.read_run(run_id)).status is RunStatus.SUCCEEDED
    # the next bad push neither crashes nor forgets
    newer = user.push({".fastflow/config.yaml": "max_concurrent_runs: lots\n# again\n"}, "bad 2")
    again.inbox.post_push(f"{bad} {newer} refs/heads/main\n")
    again.tick(utc_now())
    assert again.deployment.commit == newer
    assert again.deployment.config.max_concurrent_runs == 2
    assert again.follower.errors == []
    assert no_errors(caplog) == []


def test_a_bad_config_with_no_valid_one_known_never_crashes_a_sync(origin, daemons, caplog):
    first = origin.push({".fastflow/config.yaml": "max_concurrent_runs: lots\n",
                         "pipelines/etl/main.py": "print('etl')\n"}, "bad from the start")
    daemon = daemons(origin.bare)
    assert daemon.deployment.commit == first and daemon.deployment.config is None
    newer = origin.push({".fastflow/config.yaml": "max_concurrent_runs: many\n"}, "still bad")
    daemon.inbox.post_push(f"{first} {newer} refs/heads/main\n")
    daemon.tick(utc_now())
    assert daemon.deployment.commit == newer and daemon.deployment.config is None
    (error,) = daemon.deployment.errors
    assert error.file == ".fastflow/config.yaml"
    daemon.stop(grace=30)
    again = daemons(origin.bare)  # and a restart on it neither
    assert again.deployment.commit == newer
    fixed = origin.push({".fastflow/config.yaml": "max_concurrent_runs: 1\n"}, "fixed")
    again.sync(utc_now())
    assert again.deployment.commit == fixed and sorted(again.deployment.active) == ["etl"]
    assert [r.getMessage() for r in caplog.records if "Traceback" in r.getMessage()] == []


# --- item 11: a URL whose remote is away at start --------------------------------------------

def test_a_daemon_following_a_url_starts_from_its_mirror_when_the_remote_is_away(user, tmp_path,
                                                                                daemons):
    url = f"file://{user.bare}"
    options = {"poll_interval": 0.2, "lease_timeout": 1.5}
    first = daemons(url, **options)
    deployed = first.deployment.commit
    first.stop(grace=30)
    away = user.bare.with_name("away.git")
    user.bare.rename(away)
    try:
        again = daemons(url, **options)  # no traceback: it starts from the mirror
        assert again.deployment.commit == deployed
        assert sorted(again.deployment.active) == ["etl", "report"]
        assert again.follower.safe_sync(utc_now()) is None  # every poll fetches again
        (error,) = again.status(utc_now())["sync_errors"]
        assert error.startswith(f"{url}: cannot fetch (")
        assert error.endswith("; the daemon goes on with its local mirror and fetches again "
                              "at every poll")
        assert again.deployment.commit == deployed
    finally:
        away.rename(user.bare)
    sha = user.push({"pipelines/etl/main.py": "print('back')\n"}, "back")

    def caught_up():
        again.tick(utc_now())
        return again.deployment.commit == sha

    wait_for(caught_up, timeout=30, what="the daemon to fetch again", interval=0.2)
    assert again.status(utc_now())["sync_errors"] == []


def test_a_url_that_is_away_with_no_mirror_yet_cannot_start(user, tmp_path):
    url = f"file://{tmp_path}/nowhere.git"
    daemon = make_daemon(url, tmp_path / "state")
    with pytest.raises(RepositoryError) as info:
        daemon.start()
    assert str(info.value).startswith(f"{url}: cannot fetch (")
    daemon.lock.release()


# --- items 6 and 7: the daemon died after an attempt ended, before the run was recorded -----

def leave_run(daemon, pipeline: str, lines: list[tuple[str, str]]) -> str:
    """Journal a started run of `pipeline` with `lines` ((stream, text)) in its live log, as a
    daemon killed at that moment leaves it; returns its run id."""
    now = utc_now()
    active = daemon.deployment.active[pipeline]
    order = RunOrder(run_id=new_run_id(pipeline, now), pipeline=pipeline, commit=active.commit,
                     root_tree=daemon.deployment.root_tree, tree=active.tree, queued_at=now,
                     trigger=Trigger("manual"), started_at=now)
    daemon.launcher.journal.write(order)
    sink = daemon.launcher.live.sink(order.run_id)
    for stream, text in lines:
        sink(OutputLine(stream, text, utc_now()))
    return order.run_id


def test_a_run_whose_attempt_ended_before_the_kill_is_recorded_from_its_live_log(user, daemons):
    first = daemons(user.bare)
    run_id = leave_run(first, "report", [
        ("runner", "attempt 1 of 1 started"), ("stdout", "report"),
        ("runner", "attempt 1 of 1 succeeded (exit code 0)")])
    first.stop(grace=30)
    again = daemons(user.bare)
    assert again.notes == [f"{run_id}: succeeded"]
    record = again.store.read_run(run_id, pipeline="report")
    assert (record.status, record.exit_code, record.error) == (RunStatus.SUCCEEDED, 0, None)
    assert [(a.n, a.status, a.exit_code) for a in record.attempts] == [(1, RunStatus.SUCCEEDED, 0)]
    log = again.store.read_log(run_id, pipeline="report")
    assert " stdout | report\n" in log
    assert "the daemon restarted: the run's last attempt had ended; recorded from its live log" in log


def test_a_kill_during_a_retry_wait_records_the_last_ended_attempt(user, daemons):
    first = daemons(user.bare)
    run_id = leave_run(first, "report", [
        ("runner", "attempt 1 of 3 started"), ("stdout", "report"),
        ("runner", "attempt 1 of 3 failed (exit code 4): main.py exited with code 4"),
        ("runner", "retry 1: attempt 2 of 3 starts in 30s")])
    first.stop(grace=30)
    again = daemons(user.bare)
    assert again.notes == [f"{run_id}: failed"]
    record = again.store.read_run(run_id, pipeline="report")
    assert (record.status, record.exit_code) == (RunStatus.FAILED, 4)
    assert record.error.kind == "exit_code"
    assert record.error.message == "main.py exited with code 4 (not retried after the daemon restarted)"
    assert [(a.n, a.status, a.exit_code) for a in record.attempts] == [(1, RunStatus.FAILED, 4)]
    assert "attempt 2 of 3 does not start: runs are not retried after the daemon restarted" \
        in again.store.read_log(run_id, pipeline="report")


def test_a_kill_before_a_retrys_container_existed_records_the_last_ended_attempt(user, daemons):
    """Found by the chaos test: the daemon died after writing "attempt 2 ... started" and
    before the attempt's container existed (nothing of attempt 2 anywhere): not `lost`, but
    the run as its attempt 1 ended, not retried after the restart."""
    first = daemons(user.bare)
    run_id = leave_run(first, "report", [
        ("runner", "attempt 1 of 2 started"), ("stdout", "report"),
        ("runner", "attempt 1 of 2 failed (exit code 1): main.py exited with code 1"),
        ("runner", "retry 1: attempt 2 of 2 starts in 2s"), ("runner", "attempt 2 of 2 started")])
    first.stop(grace=30)
    again = daemons(user.bare)
    assert again.notes == [f"{run_id}: failed"]
    record = again.store.read_run(run_id, pipeline="report")
    assert (record.status, record.exit_code) == (RunStatus.FAILED, 1)
    assert record.error.message == "main.py exited with code 1 (not retried after the daemon restarted)"
    assert [(a.n, a.status) for a in record.attempts] == [(1, RunStatus.FAILED)]
    assert "attempt 2 never ran: the daemon stopped before its container existed" \
        in again.store.read_log(run_id, pipeline="report")


def test_a_run_killed_mid_attempt_on_the_host_is_still_lost(user, daemons):
    first = daemons(user.bare)
    run_id = leave_run(first, "report", [("runner", "attempt 1 of 1 started")])
    first.stop(grace=30)
    again = daemons(user.bare)
    assert again.notes == [f"{run_id}: lost"]


# --- issue 12: a folder name that is not UTF-8 ------------------------------------------------

def test_a_folder_name_that_is_not_utf8_never_stops_the_daemon_or_its_restarts(user, daemons,
                                                                              caplog):
    """The folder is listed as invalid (`bad\\xff`) and the other pipelines are recorded; a
    journal entry an earlier release left with the name as a lone surrogate, and a run journal
    entry that cannot be read, are set aside in `bad/` at the next start, which goes on."""
    first = daemons(user.bare)
    folder = user.work / os.fsdecode(b"pipelines/bad\xff")
    write_files(folder, {"main.py": "print('bad')\n"})
    git("add", "-A", cwd=user.work)
    git("commit", "-qm", "a name that is not UTF-8", cwd=user.work)
    git("push", "-q", "origin", "main", cwd=user.work)
    first.sync(utc_now())
    assert list(first.deployment.invalid) == ["bad\\xff"]
    assert first.deployment.changes.added == ("bad\\xff",)  # spelt as discovery spells it
    first.submit("report", Trigger("manual"), now=utc_now())
    assert first.dispatcher.wait_idle(60)
    assert wait_for(lambda: records(first, "report"))[0].status is RunStatus.SUCCEEDED
    first.stop(grace=30)
    state = first.state_dir
    poisoned = {"kind": "state", "name": "deployment", "data": {"invalid": {"bad\udcff": []}}}
    (state / "journal/00000000000000000001-00000001.json").write_text(json.dumps(poisoned))
    (state / "active/20261122T030000Z-report-dead.json").write_text("{")
    again = daemons(user.bare)
    assert os.listdir(state / "journal/bad") == ["00000000000000000001-00000001.json"]
    assert os.listdir(state / "active/bad") == ["20261122T030000Z-report-dead.json"]
    again.submit("report", Trigger("manual"), now=utc_now())
    assert again.dispatcher.wait_idle(60)
    assert len(wait_for(lambda: len(records(again, "report")) == 2 and records(again, "report")))
    overview = git("--git-dir", str(user.bare), "show", "fastflow/results:site/index.html",
                   cwd=user.bare)
    assert "bad\\xff" in overview and "it is not UTF-8" in overview
    assert no_errors(caplog) == []
    assert "stored with \\x escapes" not in caplog.text  # no lone surrogate reached the journal
