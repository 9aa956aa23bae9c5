"""`fastflow run --remote`: a queued request is never lost, never run twice, and a refused one is
seen by the user who queued it.

The kill test starts `fastflow serve` as a real process following a git:// remote (`git daemon`),
stalls the remote so the sync that follows reading the inbox hangs, and kills the daemon there
with SIGKILL: the request and the push stay in the inbox until a new daemon handles them.
"""
from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import GitDaemon, Origin, git, make_daemon, start_serve, utc_now, wait_for

from fastflow.daemon.inbox import Inbox
from fastflow.errors import RepositoryError
from fastflow.model import RunStatus
from fastflow.results.layout import record_path
from fastflow.results.store import ResultsStore

PIPELINES = {
    ".fastflow/config.yaml": "max_concurrent_runs: 2\n",
    "pipelines/report/main.py": "print('report')\n",
    "pipelines/off/main.py": "print('off')\n",
    "pipelines/off/pipeline.json": '{"enabled": false}',
}


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fastflow", *args], capture_output=True,
                          text=True, timeout=60)


def queued_run_id(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("queued "), result.stdout
    return result.stdout.split()[1]


def read_record(store: ResultsStore, run_id: str, pipeline: str):
    try:
        return store.read_run(run_id, pipeline=pipeline)
    except RepositoryError:
        return None


def pushed(bare: Path, mirror: Path) -> bool:
    """Whether the results branch of `mirror` is on the remote `bare` as it is locally."""
    try:
        return git("rev-parse", "fastflow/results", cwd=bare) == \
            git("rev-parse", "fastflow/results", cwd=mirror)
    except subprocess.CalledProcessError:
        return False


def record_commits(repo: Path, pipeline: str, run_id: str) -> list[str]:
    """The commits of the results branch that wrote the record of `run_id`."""
    return git("log", "--format=%H", "fastflow/results", "--", record_path(pipeline, run_id),
               cwd=repo).split()


@pytest.mark.slow
def test_a_request_read_before_a_kill_during_the_sync_runs_once_after_the_restart(tmp_path):
    user = Origin(tmp_path)
    user.push(PIPELINES, "first")
    remote = GitDaemon(tmp_path).start()
    state, log = tmp_path / "state", tmp_path / "serve.log"
    url = remote.url(user.bare)
    serve = start_serve(url, state, log, "--local", "--poll-interval", "600")
    try:
        wait_for(lambda: pushed(user.bare, state / "mirror.git"), timeout=30,
                 what="the first results pushed: the daemon is idle")
        remote.stall()  # the next fetch hangs: the daemon is killed in the middle of its sync
        serve.send_signal(signal.SIGSTOP)  # so that it reads both messages in one round
        run_id = queued_run_id(cli("run", "report", "--remote", "--state-dir", str(state)))
        Inbox(state).post_push("")
        serve.send_signal(signal.SIGCONT)
        remote.accepted()  # the daemon read its inbox and is fetching
        serve.send_signal(signal.SIGKILL)
        serve.wait(10)
        left = sorted(p.name.split("-")[0] for p in (state / "inbox").iterdir() if p.is_file())
        assert left == ["push", "run"], "an inbox message was deleted before it was handled"

        remote.start()
        serve = start_serve(url, state, log, "--local", "--poll-interval", "600")
        store = ResultsStore(state / "mirror.git", tmp_path / "reader-journal", utc_now)
        record = wait_for(lambda: read_record(store, run_id, "report"), timeout=60,
                          what=f"the record of {run_id}:\n{log.read_text()}")
        assert record.status is RunStatus.SUCCEEDED and len(record.attempts) == 1
        wait_for(lambda: not any(p.is_file() for p in (state / "inbox").iterdir()),
                 timeout=10, what="an empty inbox")
        assert len(record_commits(state / "mirror.git", "report", run_id)) == 1
    finally:
        if serve.poll() is None:
            serve.terminate()
            serve.wait(40)
        remote.stop()
    assert "Traceback" not in log.read_text()


@pytest.mark.slow
def test_a_request_read_again_after_it_was_journalled_does_not_run_twice(origin, tmp_path):
    """The window between journalling a request's run and deleting its message: a daemon that
    dies there reads the message again and must know the run."""
    origin.push(PIPELINES, "first")
    daemon = make_daemon(origin.bare, tmp_path / "state")
    daemon.start()
    try:
        run_id = queued_run_id(cli("run", "report", "--remote", "--state-dir",
                                   str(tmp_path / "state")))
        [message] = [p for p in (tmp_path / "state" / "inbox").iterdir() if p.is_file()]
        kept = shutil.copy(message, tmp_path / message.name)
        daemon.tick(utc_now())
        assert not message.exists()
        shutil.copy(kept, message)  # as if the daemon died before its acknowledgement
        daemon.tick(utc_now())
        assert not message.exists()
        assert daemon.dispatcher.wait_idle(60)
        record = wait_for(lambda: read_record(daemon.store, run_id, "report"))
        assert record.status is RunStatus.SUCCEEDED
        daemon.tick(utc_now())  # once more after the record: still known, not queued again
        assert daemon.dispatcher.wait_idle(60)
        assert daemon.dispatcher.queued() == [] and daemon.dispatcher.running() == []
    finally:
        daemon.stop(grace=30)
    assert len(record_commits(origin.bare, "report", run_id)) == 1


@pytest.mark.slow
def test_the_cli_refuses_what_the_daemon_would_refuse(origin, tmp_path):
    origin.push(PIPELINES, "first")
    state = tmp_path / "state"
    daemon = make_daemon(origin.bare, state)
    daemon.start()
    try:
        unknown = cli("run", "reprot", "--remote", "--state-dir", str(state))
        assert (unknown.returncode, unknown.stdout) == (1, "")
        assert unknown.stderr == (
            f"Error: {state}: the daemon has no active pipeline named 'reprot'; did you mean "
            '"report"? Check the name, or push the pipeline first\n')
        disabled = cli("run", "off", "--remote", "--state-dir", str(state))
        assert (disabled.returncode, disabled.stdout) == (1, "")
        assert disabled.stderr == (
            f"Error: {state}: pipeline 'off' is disabled (\"enabled\": false in its pipeline.json);"
            " enable it and push, or run it here with `fastflow run off`\n")
        assert not any(p.is_file() for p in (state / "inbox").iterdir())  # nothing queued
    finally:
        daemon.stop(grace=30)


@pytest.mark.slow
def test_a_request_the_daemon_refuses_is_a_visible_failed_record(origin, tmp_path):
    """Queued while the pipeline was active, refused by the time the daemon reads it (disabled
    by a push meanwhile; an unknown run configuration): the user sees why by the run id."""
    origin.push(PIPELINES, "first")
    state = tmp_path / "state"
    daemon = make_daemon(origin.bare, state)
    daemon.start()
    try:
        bad_config = queued_run_id(cli("run", "report", "--remote", "--run-config", "nightly",
                                       "--state-dir", str(state)))
        disabled = queued_run_id(cli("run", "report", "--remote", "--state-dir", str(state)))
        origin.push({"pipelines/report/pipeline.json": '{"enabled": false}'}, "disable report")
        daemon.sync(utc_now())  # the push lands before the daemon reads its inbox
        daemon.tick(utc_now())
        assert daemon.dispatcher.wait_idle(60)
        assert not any(p.is_file() for p in (state / "inbox").iterdir())
        for run_id, reason in (
                (bad_config, "pipeline 'report' is disabled"),
                (disabled, "pipeline 'report' is disabled")):
            record = daemon.store.read_run(run_id, pipeline="report")
            assert record.status is RunStatus.FAILED and record.attempts == ()
            assert record.error.kind == "refused" and reason in record.error.message
            assert record.trigger.kind == "manual"
        logs = cli("logs", disabled, "--repo", str(origin.bare))
        assert logs.returncode == 0, logs.stderr
        assert "refused: pipeline 'report' is disabled" in logs.stdout
    finally:
        daemon.stop(grace=30)


@pytest.mark.slow
def test_a_request_with_an_unknown_run_configuration_is_refused_with_a_record(origin, tmp_path):
    origin.push(PIPELINES, "first")
    state = tmp_path / "state"
    daemon = make_daemon(origin.bare, state)
    daemon.start()
    try:
        run_id = queued_run_id(cli("run", "report", "--remote", "--run-config", "nightly",
                                   "--state-dir", str(state)))
        daemon.tick(utc_now())
        assert daemon.dispatcher.wait_idle(60)
        record = daemon.store.read_run(run_id, pipeline="report")
        assert record.status is RunStatus.FAILED and record.error.kind == "refused"
        assert "nightly" in record.error.message
    finally:
        daemon.stop(grace=30)


RUN_CONFIGS = {
    **PIPELINES,
    "pipelines/report/main.py": "import os; print('report', os.environ['FASTFLOW_RUN_CONFIG'])\n",
    "pipelines/report/pipeline.json": '{"schedules": [{"id": "prod"}, {"id": "old", "enabled": false}]}',
}


@pytest.mark.slow
def test_a_disabled_run_configuration_is_refused_by_the_cli_and_by_the_daemon(origin, tmp_path):
    origin.push(RUN_CONFIGS, "first")
    state = tmp_path / "state"
    daemon = make_daemon(origin.bare, state)
    daemon.start()
    try:
        refused = cli("run", "report", "--remote", "--run-config", "old", "--state-dir", str(state))
        assert (refused.returncode, refused.stdout) == (1, "")
        assert refused.stderr == (
            f"Error: {state}: run configuration 'old' of pipeline 'report' is disabled (\"enabled\": "
            "false in its schedules[] entry); enable it and push, or run it here with "
            "`fastflow run report --run-config old`\n")
        assert not any(p.is_file() for p in (state / "inbox").iterdir())  # nothing queued
        # Queued while enabled, disabled by a push before the daemon reads it: a refused record.
        prod = queued_run_id(cli("run", "report", "--remote", "--run-config", "prod",
                                 "--state-dir", str(state)))
        origin.push({"pipelines/report/pipeline.json":
                     '{"schedules": [{"id": "prod", "enabled": false}]}'}, "disable prod")
        daemon.sync(utc_now())
        daemon.tick(utc_now())
        assert daemon.dispatcher.wait_idle(60)
        record = daemon.store.read_run(prod, pipeline="report")
        assert record.status is RunStatus.FAILED and record.attempts == ()
        assert record.error.kind == "refused" and record.run_config == "prod"
        commit = daemon.deployment.active["report"].commit[:12]
        assert record.error.message == (
            "run configuration 'prod' of pipeline 'report' is disabled (\"enabled\": false in its "
            f"schedules[] entry at commit {commit}); enable it and push")
    finally:
        daemon.stop(grace=30)


@pytest.mark.slow
def test_fastflow_run_on_the_host_runs_a_disabled_pipeline_and_run_configuration(make_repo):
    repo = make_repo(RUN_CONFIGS)
    off = cli("run", "off", "--local", "--repo", str(repo))
    assert off.returncode == 0, off.stderr
    assert off.stdout == "off\n"
    old = cli("run", "report", "--local", "--run-config", "old", "--repo", str(repo))
    assert old.returncode == 0, old.stderr
    assert old.stdout == "report old\n"
