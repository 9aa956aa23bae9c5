"""Pushing the results branch to a remote that refuses it by policy (a pre-receive hook, a
protected ref), not because it moved: no merge commits, one warning, retries on a timer.

The remote is a real bare repository served by `git daemon` (git://), so its hooks run; the
hook refuses the results branch while a `deny` file exists next to it.
"""
from __future__ import annotations

import logging
from datetime import datetime, timezone
from pathlib import Path

import pytest
from helpers import Clock, GitDaemon, Origin, git, make_daemon

from fastflow import repo as g
from fastflow.model import RunStatus
from fastflow.record import RunRecord
from fastflow.results.store import ResultsStore

T0 = datetime(2026, 11, 22, 12, 0, tzinfo=timezone.utc)

HOOK = """#!/bin/sh
echo called >> "{calls}"
while read old new ref; do
  if [ "$ref" = refs/heads/fastflow/results ] && [ -e "{deny}" ]; then
    echo "policy: fastflow/results is protected here" >&2
    exit 1
  fi
done
"""


class Policy:
    """A pre-receive hook on `bare` that refuses the results branch while `deny()` holds."""

    def __init__(self, bare: Path) -> None:
        self.deny_file, self.calls_file = bare / "deny", bare / "hook-calls"
        hook = bare / "hooks" / "pre-receive"
        hook.write_text(HOOK.format(calls=self.calls_file, deny=self.deny_file))
        hook.chmod(0o755)

    def deny(self) -> None:
        self.deny_file.touch()

    def allow(self) -> None:
        self.deny_file.unlink()

    def calls(self) -> int:
        return len(self.calls_file.read_text().splitlines()) if self.calls_file.exists() else 0


def record(i: int) -> RunRecord:
    return RunRecord(run_id=f"20261122T12000{i}Z-p-ab12", pipeline="p", status=RunStatus.SUCCEEDED)


def merges(repo: Path) -> list[str]:
    return git("log", "--merges", "--format=%H", "fastflow/results", cwd=repo).split()


@pytest.fixture
def served(tmp_path):
    remote_bare = tmp_path / "remote.git"
    git("init", "-q", "--bare", "-b", "main", str(remote_bare), cwd=tmp_path)
    daemon = GitDaemon(tmp_path).start()
    yield daemon, remote_bare, Policy(remote_bare)
    daemon.stop()


def test_a_push_refused_by_a_hook_is_not_a_conflict(served, tmp_path, caplog):
    server, remote_bare, policy = served
    clock = Clock(T0)
    g.init_repo(tmp_path / "local.git", bare=True)
    store = ResultsStore(tmp_path / "local.git", tmp_path / "journal", clock,
                         remote=server.url(remote_bare))
    store.record_run(record(0), "zero")  # pushed: the remote has the branch
    policy.deny()
    with caplog.at_level(logging.INFO, logger="fastflow"):
        store.record_run(record(1), "one")
        assert merges(tmp_path / "local.git") == []  # never a merge commit for a refusal
        store.record_run(record(2), "two")  # backing off: no push at every commit
        assert store.push_pending() is None  # nor when asked before the retry is due
    assert git("rev-list", "--count", "fastflow/results", cwd=tmp_path / "local.git") == "3"
    assert policy.calls() == 2
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == [
        f"results not pushed to {server.url(remote_bare)}: the remote refused "
        "refs/heads/fastflow/results (pre-receive hook declined; remote: policy: "
        "fastflow/results is protected here); kept locally, retrying in 30 s"
    ]
    assert store.push_retry_at == T0.replace(second=30)

    clock.advance(seconds=30)  # still refused: backs off twice as long, no new warning
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="fastflow"):
        assert store.push_pending() is g.PushResult.REFUSED
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert store.push_retry_at == clock.now.replace(minute=1)
    assert policy.calls() == 3

    policy.allow()
    clock.advance(seconds=60)
    with caplog.at_level(logging.INFO, logger="fastflow"):
        assert store.push_pending() is g.PushResult.PUSHED
    assert "results pushed to" in caplog.text and "after 3 attempts" in caplog.text
    assert git("rev-parse", "fastflow/results", cwd=remote_bare) == store.head()
    assert merges(remote_bare) == [] and store.push_retry_at is None


@pytest.mark.slow
def test_the_daemon_retries_a_refused_results_push_on_its_timer(tmp_path):
    """A daemon following the git:// remote: while the hook refuses, its ticks make no merge
    commit and retry when the back-off ends; once allowed, the results reach the remote."""
    user = Origin(tmp_path)
    user.push({"pipelines/report/main.py": "print('report')\n"}, "first")
    policy = Policy(user.bare)
    policy.deny()
    server = GitDaemon(tmp_path).start()
    clock = Clock(T0)
    daemon = make_daemon(server.url(user.bare), tmp_path / "state", clock=clock,
                         poll_interval=3600)
    try:
        daemon.start()
        wake = daemon.tick(clock.now)
        calls = policy.calls()
        assert calls >= 1 and daemon.store.push_retry_at is not None
        assert wake <= daemon.store.push_retry_at
        daemon.tick(clock.now)  # not yet due: no push
        assert policy.calls() == calls
        clock.now = daemon.store.push_retry_at
        daemon.tick(clock.now)  # due: retried, refused again
        assert policy.calls() == calls + 1
        policy.allow()
        clock.now = daemon.store.push_retry_at
        daemon.tick(clock.now)
        assert daemon.store.push_retry_at is None
        assert git("rev-parse", "fastflow/results", cwd=user.bare) == daemon.store.head()
        assert merges(tmp_path / "state" / "mirror.git") == []
    finally:
        daemon.stop(grace=10)
        server.stop()
