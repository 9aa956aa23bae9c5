"""The daemon across restarts: what happened while it was down is handled once, and what it
deployed last is what it runs again (issue 11: items 1, 2, 9, 11, 16).

Real git (a bare repository with a clone pushing with the git CLI), real runs on the host
executor; the daemon in this process, stopped and started again on the same state dir.
"""
from __future__ import annotations

import logging

import pytest
from helpers import make_daemon, utc_now, wait_for

from fastflow.model import RunStatus
from fastflow.record import Trigger

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
