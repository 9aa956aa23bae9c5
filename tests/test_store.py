"""The results branch: real repositories, real remotes (bare repos), crash injection, kill -9."""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from helpers import Clock, git

from fastflow import repo as g
from fastflow.errors import RepositoryError
from fastflow.model import RunStatus
from fastflow.record import RunRecord
from fastflow.results.layout import RECENT_MAX
from fastflow.results.store import ResultsStore, _InjectedCrash

NOW = datetime(2026, 11, 22, 3, 0, tzinfo=timezone.utc)


clock = Clock(NOW)


def run(pipeline: str, when: str, suffix: str = "ab12", status=RunStatus.SUCCEEDED,
        duration: float | None = 12.3) -> RunRecord:
    return RunRecord(run_id=f"{when}-{pipeline}-{suffix}", pipeline=pipeline, status=status,
                     duration_s=duration, finished_at=NOW)


@pytest.fixture
def store(tmp_path: Path) -> ResultsStore:
    g.init_repo(tmp_path / "repo.git", bare=True)
    return ResultsStore(tmp_path / "repo.git", tmp_path / "journal", clock)


def files(repo: Path, branch: str = "fastflow/results") -> list[str]:
    return git("ls-tree", "-r", "--name-only", branch, cwd=repo).splitlines()


def test_record_layout_message_summary_and_badge(store, tmp_path):
    rec = run("report", "20261122T030000Z")
    sha = store.record_run(rec, "hello\n", {"site/index.html": b"<html></html>"})
    repo = tmp_path / "repo.git"
    assert files(repo) == [
        "badges/report.json",
        "logs/report/2026/11/20261122T030000Z-report-ab12.log",
        "runs/report/2026/11/20261122T030000Z-report-ab12.json",
        "site/index.html",
        "summary.json",
    ]
    assert git("log", "-1", "--format=%B", sha, cwd=repo) == \
        "report 20261122T030000Z-report-ab12: succeeded in 12.3s"
    assert git("log", "-1", "--format=%an <%ae> %aI", sha, cwd=repo) == \
        "Fast-Flow <fastflow@localhost> 2026-11-22T03:00:00+00:00"
    assert store.read_run(rec.run_id) == rec
    assert store.read_log(rec.run_id) == "hello\n"
    badge = json.loads(git("show", "fastflow/results:badges/report.json", cwd=repo))
    assert badge == {"schemaVersion": 1, "label": "report", "message": "succeeded",
                     "color": "brightgreen"}
    entry = store.read_summary()["pipelines"]["report"]
    assert (entry["last_status"], entry["last_run_id"], entry["success_rate"]) == \
        ("succeeded", rec.run_id, 1.0)
    assert list(os.listdir(tmp_path / "journal")) == []


def test_batch_flush_one_commit_with_readable_message(store, tmp_path):
    store.record_run(run("a", "20261122T010000Z"), "", commit=False)
    store.record_run(run("b-x", "20261122T020000Z", status=RunStatus.FAILED, duration=None), "",
                     commit=False)
    store.write_state("heartbeat", {"at": NOW.isoformat()})
    assert store.head() is None
    sha = store.flush()
    assert git("log", "--format=%B", sha, cwd=tmp_path / "repo.git") == (
        "record 2 runs: 1 failed, 1 succeeded\n\n"
        "a 20261122T010000Z-a-ab12: succeeded in 12.3s\n"
        "b-x 20261122T020000Z-b-x-ab12: failed\n"
        "state: heartbeat"
    )
    assert git("rev-list", "--count", "fastflow/results", cwd=tmp_path / "repo.git") == "1"
    assert store.read_state("heartbeat") == {"at": NOW.isoformat()}
    assert store.flush() is None  # nothing pending: no empty commit


def test_state_read_your_writes_and_errors(store):
    assert store.read_state("watermarks") is None
    store.write_state("watermarks", {"s": 1})
    assert store.read_state("watermarks") == {"s": 1}  # pending, not committed yet
    store.write_state("watermarks", {"s": 2}, commit=True)
    assert store.read_state("watermarks") == {"s": 2}
    with pytest.raises(RepositoryError) as exc:
        store.write_state("../x", {})
    assert str(exc.value) == "state name '../x' is invalid; use letters, digits, '_', '.', '-'"


def test_summary_is_bounded_and_ordered(store):
    for i in range(RECENT_MAX + 5):
        status = RunStatus.FAILED if i % 5 == 0 else RunStatus.SUCCEEDED
        store.record_run(run("p", f"20261122T{i // 60:02d}{i % 60:02d}00Z", status=status), "",
                         commit=False)
    store.flush()
    entry = store.read_summary()["pipelines"]["p"]
    assert len(entry["recent"]) == RECENT_MAX and entry["runs_recorded"] == RECENT_MAX + 5
    assert entry["last_run_id"] == "20261122T003400Z-p-ab12"
    assert entry["success_rate"] == round(24 / 30, 4)
    # a late (older) run never becomes the "last" one
    store.record_run(run("p", "20200101T000000Z"), "")
    assert store.read_summary()["pipelines"]["p"]["last_run_id"] == "20261122T003400Z-p-ab12"


def test_list_runs_newest_first_across_months_with_cursor(store):
    ids = []
    for month in ("2025-12", "2026-01", "2026-02"):
        y, m = month.split("-")
        for day in ("01", "15"):
            rec = run("p", f"{y}{m}{day}T000000Z")
            ids.append(rec.run_id)
            store.record_run(rec, "", commit=False)
    store.record_run(run("p-2", "20260301T000000Z"), "", commit=False)
    store.flush()
    newest = list(reversed(ids))
    assert store.list_run_ids("p", limit=3) == newest[:3]
    assert store.list_run_ids("p", limit=3, before=newest[2]) == newest[3:6]
    assert [r.run_id for r in store.list_runs("p", limit=10)] == newest
    assert store.list_run_ids("absent") == []
    # ids of "p" and "p-2" never mix: the pipeline is derived from the folders on the branch
    assert store.read_run("20260301T000000Z-p-2-ab12").pipeline == "p-2"
    assert store.read_run(ids[0]).pipeline == "p"


def test_read_errors(store):
    with pytest.raises(RepositoryError) as exc:
        store.read_run("20261122T030000Z-nope-1234")
    assert str(exc.value) == (f"no run '20261122T030000Z-nope-1234' on the results branch "
                              f"'fastflow/results' of {store.repo.path}; list runs with "
                              "`fastflow history PIPELINE`")
    with pytest.raises(RepositoryError) as exc:
        store.record_run(run("p", "yesterday"), "")
    assert str(exc.value) == ("run id 'yesterday-p-ab12' does not name its pipeline 'p'; run ids "
                              "must be `<YYYYMMDDTHHMMSSZ>-<pipeline>[-<suffix>]`")
    with pytest.raises(RepositoryError) as exc:
        store.record_run(RunRecord(run_id="20261122T030000Z-other-1", pipeline="p",
                                   status=RunStatus.FAILED), "")
    assert "does not name its pipeline 'p'" in str(exc.value)
    assert os.listdir(store.journal_dir) == []  # rejected before anything was journalled


def test_retention_keep_runs_and_days(store, tmp_path):
    for day in range(1, 11):
        store.record_run(run("p", f"202611{day:02d}T000000Z"), "log", commit=False)
    store.record_run(run("q", "20261101T000000Z"), "", commit=False)
    store.flush()
    pages = lambda run_id: [f"site/runs/{run_id}.html"]  # noqa: E731
    removed = store.remove_expired_runs("p", now=NOW, keep_runs=8, extra_paths=pages)
    assert removed == ["20261101T000000Z-p-ab12", "20261102T000000Z-p-ab12"]
    removed = store.remove_expired_runs("p", now=NOW, keep_days=15)  # cutoff 2026-11-07T03:00
    assert removed == [f"202611{d:02d}T000000Z-p-ab12" for d in (3, 4, 5, 6, 7)]
    assert len(store.list_run_ids("p")) == 3 and store.list_run_ids("q")
    entry = store.read_summary()["pipelines"]["p"]  # the summary counts what is left
    assert entry["runs_recorded"] == 3
    assert [r["run_id"] for r in entry["recent"]] == [f"202611{d:02d}T000000Z-p-ab12" for d in (8, 9, 10)]
    assert entry["last_run_id"] == "20261110T000000Z-p-ab12"
    assert store.read_summary()["pipelines"]["q"]["runs_recorded"] == 1
    assert not any("20261101T000000Z-p" in f for f in files(tmp_path / "repo.git"))
    assert store.remove_expired_runs("p", now=NOW, keep_runs=10) == []
    assert git("log", "-1", "--format=%s", "fastflow/results", cwd=tmp_path / "repo.git") == \
        "retention p: removed 5 runs"


def test_compact_local(store, tmp_path):
    for i in range(3):
        store.record_run(run("p", f"2026112{i}T000000Z"), "")
    before = files(tmp_path / "repo.git")
    sha = store.compact()
    assert git("rev-list", "--count", "fastflow/results", cwd=tmp_path / "repo.git") == "1"
    assert files(tmp_path / "repo.git") == before and store.head() == sha


# ----------------------------------------------------------------------- crash safety
@pytest.mark.parametrize("point", ["after_journal", "after_tree", "after_commit", "after_ref",
                                   "after_cleanup"])
def test_crash_at_each_step_then_recover(tmp_path, point):
    g.init_repo(tmp_path / "repo.git", bare=True)
    journal = tmp_path / "journal"
    ResultsStore(tmp_path / "repo.git", journal, clock).record_run(run("p", "20261121T000000Z"), "")
    crashing = ResultsStore(tmp_path / "repo.git", journal, clock, _fail_at=point)
    with pytest.raises(_InjectedCrash):
        crashing.record_run(run("p", "20261122T000000Z"), "second\n")
    fresh = ResultsStore(tmp_path / "repo.git", journal, clock)  # the restarted daemon
    fresh.recover()
    assert fresh.list_run_ids("p") == ["20261122T000000Z-p-ab12", "20261121T000000Z-p-ab12"]
    assert fresh.read_log("20261122T000000Z-p-ab12") == "second\n"
    entry = fresh.read_summary()["pipelines"]["p"]
    assert entry["runs_recorded"] == 2  # counted once, never twice
    assert [r["run_id"] for r in entry["recent"]] == ["20261121T000000Z-p-ab12",
                                                      "20261122T000000Z-p-ab12"]
    assert os.listdir(journal) == []
    assert fresh.recover() is None  # idempotent


def test_recovery_sets_aside_a_journal_entry_it_cannot_commit(tmp_path, caplog):
    """Issue 12: an entry holding a lone surrogate (a folder name that is not UTF-8, as an
    earlier release journalled it) or one that is not JSON is moved to journal/bad/ with a
    warning; the others are committed and recovery never dies on it (it did at every start)."""
    g.init_repo(tmp_path / "repo.git", bare=True)
    journal = tmp_path / "journal"
    journal.mkdir()
    poisoned = {"kind": "state", "name": "deployment", "data": {"invalid": {"bad\udcff": []}}}
    (journal / "00000000000000000001-00000001.json").write_text(json.dumps(poisoned))
    (journal / "00000000000000000002-00000002.json").write_text('{"kind": "run"')
    store = ResultsStore(tmp_path / "repo.git", journal, clock)
    store.record_run(run("p", "20261122T030000Z"), "ok\n", commit=False)
    with caplog.at_level(logging.WARNING, logger="fastflow.results.store"):
        assert store.recover() is not None
    assert store.list_run_ids("p") == ["20261122T030000Z-p-ab12"]
    assert os.listdir(journal) == ["bad"]
    assert sorted(os.listdir(journal / "bad")) == ["00000000000000000001-00000001.json",
                                                   "00000000000000000002-00000002.json"]
    assert [r.getMessage() for r in caplog.records] == [
        "journal entry 00000000000000000002-00000002.json cannot be committed (unreadable: "
        f"Expecting ',' delimiter: line 1 column 15 (char 14)); set aside in {journal}/bad/",
        "journal entry 00000000000000000001-00000001.json cannot be committed (it holds text "
        f"that is not UTF-8 (a lone surrogate)); set aside in {journal}/bad/",
    ]
    assert store.recover() is None and store.read_state("deployment") is None


def test_text_that_is_not_utf8_is_journalled_and_committed_with_escapes(store, caplog):
    rec = run("p", "20261122T030000Z")
    with caplog.at_level(logging.WARNING, logger="fastflow.results.store"):
        assert store.record_run(rec, "no such file: bad\udcff\n") is not None
        store.write_state("deployment", {"invalid": {"bad\udcff": ["x\ud800"]}}, commit=True)
    assert store.read_log(rec.run_id) == "no such file: bad\\xff\n"
    assert store.read_state("deployment") == {"invalid": {"bad\\xff": ["x\\ud800"]}}
    assert len(caplog.records) == 2 and "holds text that is not UTF-8" in caplog.text
    assert os.listdir(store.journal_dir) == []


KILL_SCRIPT = """
import sys
from datetime import datetime, timezone
from fastflow.model import RunStatus
from fastflow.record import RunRecord
from fastflow.results.store import ResultsStore
store = ResultsStore(sys.argv[1], sys.argv[2], lambda: datetime(2026, 11, 22, tzinfo=timezone.utc))
for i in range(10_000):
    rid = f"20261122T{i // 3600 % 24:02d}{i // 60 % 60:02d}{i % 60:02d}Z-p-{i:04d}"
    store.record_run(RunRecord(run_id=rid, pipeline="p", status=RunStatus.SUCCEEDED), "x")
    print(rid, flush=True)
"""


def test_kill_9_mid_write_loses_and_duplicates_nothing(tmp_path):
    g.init_repo(tmp_path / "repo.git", bare=True)
    journal = tmp_path / "journal"
    for attempt in range(3):
        proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(tmp_path / "repo.git"),
                                 str(journal)], stdout=subprocess.PIPE, text=True)
        first = proc.stdout.readline()  # started writing: a slow start (a loaded CI machine)
        time.sleep(0.3 + 0.37 * attempt)  # must not let the kill land before the first write
        os.kill(proc.pid, signal.SIGKILL)
        acknowledged = (first + proc.communicate()[0]).split()
        assert acknowledged
        store = ResultsStore(tmp_path / "repo.git", journal, clock)
        store.recover()
        on_branch = store.list_run_ids("p", limit=10**6)
        assert len(on_branch) == len(set(on_branch))
        assert set(acknowledged) <= set(on_branch)
        assert store.read_summary()["pipelines"]["p"]["runs_recorded"] == len(on_branch)
        assert os.listdir(journal) == []
        # the next attempt records the same ids again: recording stays idempotent by path


def test_a_ref_lockfile_left_by_a_killed_writer_does_not_block_the_next(store, tmp_path):
    store.record_run(run("p", "20261122T010000Z"), "")
    # what libgit2 leaves when killed between creating the ref's lock file and renaming it
    lockfile = tmp_path / "repo.git" / "refs" / "heads" / "fastflow" / "results.lock"
    lockfile.write_text("0" * 40 + "\n")
    store.record_run(run("p", "20261122T020000Z"), "")
    assert store.list_run_ids("p") == ["20261122T020000Z-p-ab12", "20261122T010000Z-p-ab12"]
    assert not lockfile.exists()


# ----------------------------------------------------------------------- remotes
def make_remote(tmp_path: Path) -> Path:
    remote = tmp_path / "remote.git"
    g.init_repo(remote, bare=True)
    return remote


def test_pushes_to_bare_remote(tmp_path):
    remote = make_remote(tmp_path)
    g.init_repo(tmp_path / "repo.git", bare=True)
    store = ResultsStore(tmp_path / "repo.git", tmp_path / "j", clock, remote=str(remote))
    sha = store.record_run(run("p", "20261122T000000Z"), "")
    assert git("rev-parse", "fastflow/results", cwd=remote) == sha


def test_rejected_push_is_merged_and_retried(tmp_path):
    remote = make_remote(tmp_path)
    g.init_repo(tmp_path / "a.git", bare=True)
    g.init_repo(tmp_path / "b.git", bare=True)
    a = ResultsStore(tmp_path / "a.git", tmp_path / "ja", clock, remote=str(remote))
    b = ResultsStore(tmp_path / "b.git", tmp_path / "jb", clock, remote=str(remote))
    a.record_run(run("p", "20261122T000000Z"), "a1")
    b.record_run(run("p", "20261122T010000Z"), "b1")  # rejected once (a pushed), merged, pushed
    b.record_run(run("q", "20261122T020000Z"), "b2")
    a.record_run(run("p", "20261122T030000Z"), "a2")  # rejected once (b pushed), merged
    assert a.head() == git("rev-parse", "fastflow/results", cwd=remote)
    ids = a.list_run_ids("p")
    assert ids == ["20261122T030000Z-p-ab12", "20261122T010000Z-p-ab12", "20261122T000000Z-p-ab12"]
    assert a.read_log("20261122T010000Z-p-ab12") == "b1"
    summary = a.read_summary()["pipelines"]
    assert summary["p"]["runs_recorded"] == 3 and summary["q"]["runs_recorded"] == 1
    assert summary["p"]["last_run_id"] == "20261122T030000Z-p-ab12"
    # never a force push: every earlier remote head is an ancestor of the final one
    log = git("log", "--format=%s", "fastflow/results", cwd=remote)
    assert "merge fastflow/results" in log
    assert b.push_pending() is g.PushResult.PUSHED  # b catches up with a fast-forward merge


def test_offline_remote_accumulates_then_pushes(tmp_path):
    remote = tmp_path / "later.git"  # does not exist yet: unreachable
    g.init_repo(tmp_path / "repo.git", bare=True)
    store = ResultsStore(tmp_path / "repo.git", tmp_path / "j", clock, remote=str(remote))
    for i in range(3):
        store.record_run(run("p", f"2026112{i}T000000Z"), "")
    assert store.push_pending(force=True) is g.PushResult.UNREACHABLE
    assert store.push_pending() is None  # backing off: the daemon's tick retries when due
    assert len(store.list_run_ids("p")) == 3  # committed locally meanwhile
    g.init_repo(remote, bare=True)  # the remote comes back
    assert store.push_pending(force=True) is g.PushResult.PUSHED
    assert git("rev-parse", "fastflow/results", cwd=remote) == store.head()
    assert git("rev-list", "--count", "fastflow/results", cwd=remote) == "3"


def test_compact_with_remote_force_pushes_once_everything_is_there(tmp_path):
    remote = make_remote(tmp_path)
    g.init_repo(tmp_path / "repo.git", bare=True)
    store = ResultsStore(tmp_path / "repo.git", tmp_path / "j", clock, remote=str(remote))
    store.record_run(run("p", "20261121T000000Z"), "")
    store.record_run(run("p", "20261122T000000Z"), "")
    sha = store.compact()
    assert git("rev-parse", "fastflow/results", cwd=remote) == sha
    assert git("rev-list", "--count", "fastflow/results", cwd=remote) == "1"
    offline = ResultsStore(tmp_path / "repo.git", tmp_path / "j", clock,
                           remote=str(tmp_path / "gone.git"))
    with pytest.raises(RepositoryError) as exc:
        offline.compact()
    assert str(exc.value) == (f"{tmp_path / 'gone.git'}: cannot push 'fastflow/results' before "
                              "compacting; compact when the remote is reachable")


def test_unknown_crash_point_is_refused(tmp_path):
    g.init_repo(tmp_path / "r.git", bare=True)
    with pytest.raises(ValueError):
        ResultsStore(tmp_path / "r.git", tmp_path / "j", clock, _fail_at="later")


def test_badge_colors_for_failures(store):
    store.record_run(run("p", "20261122T000000Z", status=RunStatus.TIMED_OUT), "")
    data = g.read_blob(store.repo, store.head(), "badges/p.json")
    assert json.loads(data)["message"] == "timed out"
    assert json.loads(data)["color"] == "orange"
    assert store.read_summary()["pipelines"]["p"]["success_rate"] == 0.0
    assert store.read_run("20261122T000000Z-p-ab12").finished_at == NOW - timedelta(0)
