"""The read side of the results branch (`fastflow.results`, `fastflow.results.build`): real git
repositories in tmp_path, runs written through `ResultsStore.record_run`, a fixed `now`."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from helpers import Clock, git

from fastflow.errors import FastflowError
from fastflow.model import RunStatus
from fastflow.record import Attempt, ErrorInfo, LogInfo, RunRecord, Trigger
from fastflow.results.build import build_site_from_branch
from fastflow.results.read import (
    NoResultsBranch,
    UnknownPipeline,
    UnknownRun,
    compact_results,
    follow_log,
    open_results,
    read_log,
    run_history,
    status_report,
)
from fastflow.results.retention import prune_results
from fastflow.results.store import ResultsStore

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=timezone.utc)

PIPELINES = {
    "pipelines/report/main.py": "print('report')\n",
    "pipelines/report/pipeline.json": '{"schedule_cron": "0 7 * * *"}\n',
    "pipelines/minimal/main.py": "print(1)\n",
    "pipelines/broken/main.py": "print(1)\n",
    "pipelines/broken/pipeline.json": '{"timeout": "soon"}\n',
}


clock = Clock(NOW)


def make_run(pipeline: str, hours_ago: float, suffix: str, status=RunStatus.SUCCEEDED,
             **changes) -> RunRecord:
    start = NOW - timedelta(hours=hours_ago)
    failed = status is not RunStatus.SUCCEEDED
    fields = dict(
        run_id=f"{start:%Y%m%dT%H%M%SZ}-{pipeline}-{suffix}", pipeline=pipeline, status=status,
        trigger=Trigger("schedule", f"{pipeline}") if suffix.endswith("s") else Trigger("push"),
        started_at=start, finished_at=start + timedelta(seconds=12.5), duration_s=12.5,
        exit_code=1 if failed else 0,
        error=ErrorInfo("exit_code", "exited with 1\nsee the log") if failed else None,
        attempts=tuple(Attempt(n, start, start, 1 if failed else 0, status) for n in (1, 2)[
            : 2 if failed else 1]),
    )
    fields.update(changes)
    return RunRecord(**fields)


@pytest.fixture
def repo(make_repo, tmp_path) -> Path:
    root = make_repo(PIPELINES)
    git("init", "-q", cwd=root)
    return root


def writer(repo: Path, tmp_path: Path) -> ResultsStore:
    return ResultsStore(repo, tmp_path / "writer-journal", clock)


@pytest.fixture
def recorded(repo, tmp_path) -> Path:
    """Three runs of `report` (the newest succeeded), one of `old` (no longer in the tree)."""
    store = writer(repo, tmp_path)
    store.record_run(make_run("report", 5, "aa01s", RunStatus.FAILED), "log 1\n")
    store.record_run(make_run("report", 3, "aa02"), "log 2\n")
    store.record_run(make_run("report", 2, "aa03s"), "2026-11-22T10:00:00.000Z stdout | hi\n")
    store.record_run(make_run("old", 30, "bb01"), "old\n")
    return repo


def test_no_results_branch_is_an_error_naming_the_repository(repo):
    with open_results(repo, clock) as results:
        with pytest.raises(NoResultsBranch) as caught:
            status_report(results, NOW)
    assert str(caught.value) == (f"{repo}: no results branch 'fastflow/results' yet; it appears "
                                 "after the first run recorded by fastflow serve")


def test_a_clone_reads_the_fetched_results_and_refuses_to_rewrite_them(recorded, tmp_path):
    clone = tmp_path / "clone"
    git("clone", "-q", str(recorded), str(clone), cwd=tmp_path)
    git("fetch", "-q", "origin", "fastflow/results", cwd=clone)
    with open_results(clone, clock) as results:
        assert results.notes == [
            "reading origin/fastflow/results, the fetched copy (no local branch "
            "'fastflow/results'); `git fetch origin fastflow/results` refreshes it"]
        assert run_history(results, "report")["runs"][0]["run_id"] == "20261122T100000Z-report-aa03s"
        with pytest.raises(FastflowError) as caught:
            compact_results(results)
    assert str(caught.value) == (
        f"{clone}: the results are read from origin/fastflow/results, a fetched copy; compact or "
        "prune where `fastflow serve` writes the branch")


def test_results_branch_comes_from_config_yaml(repo, tmp_path):
    (repo / ".fastflow").mkdir()
    (repo / ".fastflow/config.yaml").write_text("results_branch: ci/results\n")
    ResultsStore(repo, tmp_path / "j", clock, branch="ci/results").record_run(
        make_run("report", 1, "cc01"), "x\n")
    with open_results(repo, clock) as results:
        assert results.branch == "ci/results"
        assert [r["run_id"] for r in run_history(results, "report")["runs"]] == \
            ["20261122T110000Z-report-cc01"]


def test_status_lists_runs_never_run_pipelines_and_working_tree_problems(recorded, tmp_path):
    with open_results(recorded, clock) as results:
        report = status_report(results, NOW, tmp_path / "state")
    rows = {p["name"]: p for p in report["pipelines"]}
    assert sorted(rows) == ["broken", "minimal", "old", "report"]
    assert rows["report"] == {
        "name": "report", "valid": True, "last_status": "succeeded",
        "last_run_id": "20261122T100000Z-report-aa03s", "last_trigger": "schedule",
        "last_finished": {"at": "2026-11-22T10:00:12.500000+00:00", "ago": "1 h ago"},
        "last_duration_s": 12.5, "success_rate": 0.6667, "runs_recorded": 3,
        "next_run": {"schedule_id": "report", "at": "2026-11-23T07:00:00+00:00",
                     "local": "2026-11-23T07:00:00+00:00", "timezone": "UTC", "in": "in 19 h"},
    }
    assert rows["minimal"]["last_status"] is None and rows["minimal"]["next_run"] is None
    assert rows["broken"]["valid"] is False
    assert report["invalid"] == {"broken": [
        'pipelines/broken/pipeline.json: timeout: "soon" is not a number of seconds >= 0; use a '
        "number such as 300"]}
    assert report["configuration_from"] == "working tree"
    assert report["daemon"] is None and report["sync"] is None and report["deployment"] is None
    assert report["notes"] == [
        "no state/deployment.json on 'fastflow/results' yet (fastflow serve writes it after a "
        "sync): invalid pipelines, configuration errors and next runs are those of the working tree",
        f"no daemon heartbeat on 'fastflow/results' (state/daemon.json) or in {tmp_path / 'state'}"
        "; is fastflow serve running?",
    ]


def deployment_state() -> dict:
    return {
        "commit": "c0ffee" * 6 + "abcd", "at": "2026-11-22T11:00:00+00:00",
        "invalid": {"broken": ["pipelines/broken/pipeline.json: timeout: bad"]},
        "errors": [".fastflow/schedules.yaml: schedules[0].cron: bad cron"],
        "schedules": [
            {"id": "report.late", "pipeline": "report", "description": "every day at 20:00",
             "timezone": "Europe/Berlin", "next_at": "2026-11-22T19:00:00+00:00",
             "next_local": "2026-11-22T20:00:00+01:00"},
            {"id": "report.early", "pipeline": "report", "description": "every day at 13:00",
             "timezone": "Europe/Berlin", "next_at": "2026-11-22T12:00:00+00:00",
             "next_local": "2026-11-22T13:00:00+01:00"},
            {"id": "ended", "pipeline": "minimal", "description": "once", "timezone": "UTC",
             "next_at": None, "next_local": None},
        ],
    }


def daemon_state(heartbeat: datetime) -> dict:
    return {"heartbeat": heartbeat.isoformat(), "pid": 4242, "source": "/srv/repo",
            "branch": "main", "deployment": None, "sync_errors": [], "dependencies": {},
            "running": ["20261122T115900Z-report-dd01"], "queued": []}


def test_status_uses_the_daemon_state_files(recorded, tmp_path):
    store = writer(recorded, tmp_path)
    store.write_state("deployment", deployment_state())
    store.write_state("sync", {"commit": "c0ffee" * 6 + "abcd", "at": "2026-11-22T11:00:00+00:00"})
    store.write_state("daemon", daemon_state(NOW - timedelta(seconds=30)), commit=True)
    with open_results(recorded, clock) as results:
        report = status_report(results, NOW, tmp_path / "state")
    assert report["configuration_from"] == "deployment"
    assert report["invalid"] == {"broken": ["pipelines/broken/pipeline.json: timeout: bad"]}
    assert report["errors"] == [".fastflow/schedules.yaml: schedules[0].cron: bad cron"]
    rows = {p["name"]: p for p in report["pipelines"]}
    assert rows["report"]["next_run"] == {
        "schedule_id": "report.early", "at": "2026-11-22T12:00:00+00:00",
        "local": "2026-11-22T13:00:00+01:00", "timezone": "Europe/Berlin", "in": "due now"}
    assert rows["minimal"]["next_run"] is None
    assert report["daemon"] == {
        "heartbeat": "2026-11-22T11:59:30+00:00", "age_s": 30.0, "ago": "just now",
        "stale": False, "stopped_at": None, "stale_after_s": 180.0, "interval_s": 60.0, "pid": 4242,
        "source": "/srv/repo", "branch": "main",
        "running": ["20261122T115900Z-report-dd01"], "queued": [], "sync_errors": [],
        "lease": None, "read_from": "fastflow/results:state/daemon.json",
    }
    assert report["sync"] == {"commit": "c0ffee" * 6 + "abcd", "at": "2026-11-22T11:00:00+00:00"}
    assert report["deployment"] == {"commit": "c0ffee" * 6 + "abcd",
                                    "at": "2026-11-22T11:00:00+00:00"}
    assert report["notes"] == []


def test_heartbeat_is_stale_after_three_minutes_and_the_state_dir_copy_wins(recorded, tmp_path):
    writer(recorded, tmp_path).write_state("daemon", daemon_state(NOW - timedelta(minutes=4)),
                                           commit=True)
    with open_results(recorded, clock) as results:
        daemon = status_report(results, NOW)["daemon"]
        assert daemon["stale"] is True and daemon["age_s"] == 240.0
        state = tmp_path / "state"
        state.mkdir()
        (state / "status.json").write_text(json.dumps(daemon_state(NOW - timedelta(seconds=5))))
        daemon = status_report(results, NOW, state)["daemon"]
    assert daemon["stale"] is False
    assert daemon["read_from"] == str(state / "status.json")


def test_a_cleanly_stopped_daemon_is_stopped_not_stale(recorded, tmp_path):
    stopped = {**daemon_state(NOW - timedelta(hours=2)),
               "stopped_at": (NOW - timedelta(hours=2)).isoformat()}
    writer(recorded, tmp_path).write_state("daemon", stopped, commit=True)
    with open_results(recorded, clock) as results:
        daemon = status_report(results, NOW)["daemon"]
    assert (daemon["stale"], daemon["stopped_at"]) == (False, "2026-11-22T10:00:00+00:00")


def test_staleness_follows_the_interval_the_heartbeat_declares(recorded, tmp_path):
    # the daemon commits state/daemon.json on its own only every 5 minutes when idle
    branch_copy = {**daemon_state(NOW - timedelta(minutes=10)), "heartbeat_interval_s": 300.0}
    writer(recorded, tmp_path).write_state("daemon", branch_copy, commit=True)
    with open_results(recorded, clock) as results:
        daemon = status_report(results, NOW)["daemon"]
        assert (daemon["stale"], daemon["stale_after_s"]) == (False, 900.0)
        writer(recorded, tmp_path).write_state(
            "daemon", {**branch_copy, "heartbeat": (NOW - timedelta(minutes=16)).isoformat()},
            commit=True)
    with open_results(recorded, clock) as results:
        assert status_report(results, NOW)["daemon"]["stale"] is True


def test_history_is_newest_first_and_pages_with_before(recorded):
    with open_results(recorded, clock) as results:
        page = run_history(results, "report", limit=2)
        assert [r["run_id"] for r in page["runs"]] == ["20261122T100000Z-report-aa03s",
                                                       "20261122T090000Z-report-aa02"]
        assert page["older"] == "20261122T090000Z-report-aa02"
        rest = run_history(results, "report", limit=2, before=page["older"])
    assert rest["older"] is None
    assert rest["runs"] == [{
        "run_id": "20261122T070000Z-report-aa01s", "status": "failed",
        "trigger": {"kind": "schedule", "schedule_id": "report", "parent_run_id": None,
                    "delivery_id": None},
        "started_at": "2026-11-22T07:00:00+00:00", "finished_at": "2026-11-22T07:00:12.500000+00:00",
        "duration_s": 12.5, "attempts": 2, "exit_code": 1,
        "error": {"kind": "exit_code", "message": "exited with 1\nsee the log"},
        "downstream": [],
    }]


def test_history_of_a_never_run_pipeline_is_empty_and_of_an_unknown_one_an_error(recorded):
    with open_results(recorded, clock) as results:
        assert run_history(results, "minimal") == {"pipeline": "minimal", "runs": [], "older": None}
        with pytest.raises(UnknownPipeline) as caught:
            run_history(results, "nope")
    assert str(caught.value) == ("no pipeline 'nope': it has no runs on 'fastflow/results' and is "
                                 "not in the working tree; known pipelines: broken, minimal, old, "
                                 "report")


def test_read_log_stored_then_live_then_unknown(recorded, tmp_path):
    state = tmp_path / "state"
    (state / "live").mkdir(parents=True)
    (state / "live/20261122T115900Z-report-dd01.log").write_text("so far\n")
    with open_results(recorded, clock) as results:
        stored = read_log(results, "20261122T100000Z-report-aa03s", state)
        live = read_log(results, "20261122T115900Z-report-dd01", state)
        with pytest.raises(UnknownRun) as caught:
            read_log(results, "20261122T115900Z-report-ffff", state)
    assert (stored.text, stored.running) == ("2026-11-22T10:00:00.000Z stdout | hi\n", False)
    assert (live.text, live.running) == ("so far\n", True)
    assert str(caught.value) == (
        f"no run '20261122T115900Z-report-ffff' on the results branch 'fastflow/results' of "
        f"{recorded} and none running in {state}; list run ids with `fastflow history NAME`")


class Scenario:
    """A fake `sleep` that plays one step of the daemon's side per call."""

    def __init__(self, steps) -> None:
        self.steps = list(steps)
        self.now = NOW

    def sleep(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)
        if self.steps:
            self.steps.pop(0)()

    def clock(self) -> datetime:
        return self.now


LIVE_ID = "20261122T115900Z-report-dd01"


def follow_setup(recorded: Path, tmp_path: Path):
    state = tmp_path / "state"
    (state / "live").mkdir(parents=True)
    return state, state / "live" / f"{LIVE_ID}.log"


def append(path: Path, text: str) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(text)


def test_follow_prints_live_lines_then_the_remainder_from_the_stored_log(recorded, tmp_path):
    state, live = follow_setup(recorded, tmp_path)
    live.write_text("a\nhalf")  # a half-written line waits for its newline
    store = writer(recorded, tmp_path)

    def finish():
        append(live, " line\nb\n")
        store.record_run(make_run("report", 1 / 60, "dd01"), "a\nhalf line\nb\nc\n")
        live.unlink()

    scenario = Scenario([lambda: None, finish])
    with open_results(recorded, clock) as results:
        chunks = list(follow_log(results, LIVE_ID, state, clock=scenario.clock,
                                 sleep=scenario.sleep))
    assert chunks == ["a\n", "half line\nb\nc\n"]


def test_follow_resumes_after_the_last_line_shown_when_the_log_was_capped(recorded, tmp_path):
    state, live = follow_setup(recorded, tmp_path)
    live.write_text("a\nb\n")
    store = writer(recorded, tmp_path)
    capped = "a\n--- 10 bytes omitted by Fast-Flow (log cap 1 KiB) ---\nb\nc\n"

    def finish():
        store.record_run(make_run("report", 1 / 60, "dd01", log=LogInfo(None, 99, True)), capped)
        live.unlink()

    scenario = Scenario([finish])
    with open_results(recorded, clock) as results:
        assert "".join(follow_log(results, LIVE_ID, state, clock=scenario.clock,
                                  sleep=scenario.sleep)) == "a\nb\nc\n"


def test_follow_waits_for_a_queued_run(recorded, tmp_path):
    state, live = follow_setup(recorded, tmp_path)
    (state / "status.json").write_text(json.dumps({"running": [], "queued": [LIVE_ID]}))
    store = writer(recorded, tmp_path)
    scenario = Scenario([
        lambda: None,
        lambda: live.write_text("started\n"),
        lambda: (append(live, "done\n"),
                 store.record_run(make_run("report", 1 / 60, "dd01"), "started\ndone\n")),
    ])
    with open_results(recorded, clock) as results:
        chunks = list(follow_log(results, LIVE_ID, state, clock=scenario.clock,
                                 sleep=scenario.sleep))
    assert chunks == ["started\n", "done\n"]  # the live file, still there, had the rest


def test_follow_gives_up_when_the_record_never_arrives(recorded, tmp_path):
    state, live = follow_setup(recorded, tmp_path)
    live.write_text("a\n")
    scenario = Scenario([live.unlink])
    with open_results(recorded, clock) as results:
        with pytest.raises(FastflowError) as caught:
            list(follow_log(results, LIVE_ID, state, clock=scenario.clock, sleep=scenario.sleep,
                            poll_s=1.0, settle_s=5.0))
    assert str(caught.value) == (
        f"the live output of {LIVE_ID} ended but its record did not reach the results branch "
        "'fastflow/results' within 5s; see `fastflow status`")
    assert scenario.now - NOW == timedelta(seconds=7)


def test_prune_applies_retention_to_every_pipeline_and_drops_run_pages(recorded, tmp_path):
    (recorded / ".fastflow").mkdir()
    (recorded / ".fastflow/config.yaml").write_text("retention: {keep_runs: 1}\n")
    writer(recorded, tmp_path).write_files(
        {"site/runs/report/2026/11/20261122T070000Z-report-aa01s.html": b"<p>page</p>"}, "site",
        commit=True)
    with open_results(recorded, clock) as results:
        removed = prune_results(results, NOW)
        assert run_history(results, "report")["runs"][0]["run_id"] == \
            "20261122T100000Z-report-aa03s"
    assert removed == {"report": ["20261122T070000Z-report-aa01s", "20261122T090000Z-report-aa02"]}
    files = git("ls-tree", "-r", "--name-only", "fastflow/results", cwd=recorded)
    assert "aa01s" not in files and "aa02" not in files and "aa03s" in files
    # the pipeline's pages are rendered again from what is left
    assert "site/pipelines/report/index.html" in files and "site/index.html" in files
    index = git("show", "fastflow/results:site/pipelines/report/index.html", cwd=recorded)
    assert "aa03s" in index and "aa02" not in index


def test_prune_without_retention_is_an_error(recorded):
    with open_results(recorded, clock) as results:
        with pytest.raises(FastflowError) as caught:
            prune_results(results, NOW)
    assert str(caught.value) == (
        ".fastflow/config.yaml: retention: neither keep_runs nor keep_days is set, so nothing "
        "would be removed; set retention.keep_runs or retention.keep_days, or pass "
        "--keep-runs/--keep-days")


def test_compact_leaves_one_commit_with_the_same_tree(recorded):
    tree = git("rev-parse", "fastflow/results^{tree}", cwd=recorded)
    with open_results(recorded, clock) as results:
        done = compact_results(results)
    assert git("rev-list", "--count", "fastflow/results", cwd=recorded) == "1"
    assert git("rev-parse", "fastflow/results^{tree}", cwd=recorded) == tree
    assert done["after"] == git("rev-parse", "fastflow/results", cwd=recorded)


def test_build_site_from_branch_renders_every_run_and_pipeline(recorded, tmp_path):
    out = tmp_path / "site"
    with open_results(recorded, clock) as results:
        written = build_site_from_branch(results, out, NOW)
    for path in ("index.html", "style.css", "pipelines/report/index.html",
                 "pipelines/minimal/index.html", "pipelines/broken/index.html",
                 "pipelines/old/index.html", "runs/report/2026/11/20261122T100000Z-report-aa03s.html"):
        assert path in written and (out / path).is_file(), path
    index = (out / "index.html").read_text()
    assert "broken" in index and "timeout" in index


def test_a_bare_repository_or_mirror_is_read_without_a_working_tree(recorded, tmp_path):
    mirror = tmp_path / "mirror.git"
    git("clone", "-q", "--mirror", str(recorded), str(mirror), cwd=tmp_path)
    with open_results(mirror, clock) as results:
        report = status_report(results, NOW)
    assert [p["name"] for p in report["pipelines"]] == ["old", "report"]
    assert report["notes"][0] == ("no state/deployment.json on 'fastflow/results' yet and no "
                                  "working tree: invalid pipelines, configuration errors and next "
                                  "runs are unknown")
