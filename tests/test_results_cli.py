"""`fastflow status | history | logs | site | results` through click's CliRunner (not a terminal,
so tables are tab-separated plain text): exact output, exit codes, --json shapes."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import git, make_daemon, utc_now

from fastflow.cli import main
from fastflow.model import RunStatus
from fastflow.record import Attempt, ErrorInfo, RunRecord, Trigger
from fastflow.results.store import ResultsStore
from fastflow.site.views import run_page_path

PIPELINES = {
    "pipelines/report/main.py": "print('report')\n",
    "pipelines/minimal/main.py": "print(1)\n",
    "pipelines/broken/main.py": "print(1)\n",
    "pipelines/broken/pipeline.json": '{"timeout": "soon"}\n',
}


def make_run(pipeline: str, start: datetime, suffix: str, status=RunStatus.SUCCEEDED) -> RunRecord:
    failed = status is not RunStatus.SUCCEEDED
    return RunRecord(
        run_id=f"{start:%Y%m%dT%H%M%SZ}-{pipeline}-{suffix}", pipeline=pipeline, status=status,
        trigger=Trigger("schedule", "report.daily") if failed else Trigger("push"),
        started_at=start, finished_at=start + timedelta(seconds=12.5), duration_s=12.5,
        exit_code=1 if failed else 0,
        error=ErrorInfo("exit_code", "exited with 1\nsee the log") if failed else None,
        attempts=tuple(Attempt(n, start, start, 1 if failed else 0, status)
                       for n in range(1, 3 if failed else 2)),
    )


COMMIT = "c0ffee" * 6 + "abcd"


@dataclass(frozen=True)
class Times:
    """The CLI reads the real clock: records are placed relative to the test's start, far from
    the boundaries of the words checked ("2 h ago", "just now", "in 3 h")."""

    now: datetime

    @property
    def t1(self) -> datetime:
        return self.now - timedelta(hours=4)

    @property
    def t2(self) -> datetime:
        return self.now - timedelta(hours=2, minutes=20)

    @property
    def failed_id(self) -> str:
        return f"{self.t1:%Y%m%dT%H%M%SZ}-report-aa01"

    @property
    def last_id(self) -> str:
        return f"{self.t2:%Y%m%dT%H%M%SZ}-report-aa02"

    @property
    def live_id(self) -> str:
        return f"{self.now:%Y%m%dT%H%M%SZ}-report-dd01"


@pytest.fixture
def t() -> Times:
    return Times(utc_now().replace(microsecond=0))


def iso(moment: datetime) -> str:
    return moment.isoformat()


@pytest.fixture
def repo(make_repo) -> Path:
    root = make_repo(PIPELINES)
    git("init", "-q", cwd=root)
    return root


@pytest.fixture
def store(repo, tmp_path) -> ResultsStore:
    return ResultsStore(repo, tmp_path / "writer-journal", utc_now)


@pytest.fixture
def recorded(repo, store, t) -> Path:
    store.record_run(make_run("report", t.t1, "aa01", RunStatus.FAILED), "first\n")
    store.record_run(make_run("report", t.t2, "aa02"), "2026-11-22T10:00:00.000Z stdout | hello\n")
    return repo


def invoke(*args, input=None):
    return CliRunner().invoke(main, [str(a) for a in args], input=input)


def table(*lines: str) -> list[str]:
    """Lines of a plain-text table: tab-separated cells, tabs expanded (stops every 8 columns)."""
    return [line.expandtabs(8) for line in lines]


# --- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize("args", [
    ["status"], ["history", "report"], ["logs", "20261122T100000Z-report-aa02"],
    ["site", "build", "--out", "SITE"], ["results", "compact", "--yes"], ["results", "prune"],
])
def test_every_command_says_when_there_is_no_results_branch_yet(repo, tmp_path, args):
    args = [str(tmp_path / "site") if a == "SITE" else a for a in args]
    result = invoke(*args, "--repo", repo, *(["--state-dir", tmp_path] if args[0] == "logs" else []))
    assert result.exit_code == 1
    assert result.stderr == (f"Error: {repo}: no results branch 'fastflow/results' yet; it appears "
                             "after the first run recorded by fastflow serve\n")


def test_a_folder_that_is_no_repository_is_an_error(tmp_path):
    result = invoke("status", "--repo", tmp_path)
    assert result.exit_code == 1
    assert result.stderr.startswith(f"Error: {tmp_path}: not a git repository (")
    assert result.stderr.endswith("); pass the path of a repository with --repo\n")


# --- status ------------------------------------------------------------------------------------


def write_daemon_state(store: ResultsStore, heartbeat: datetime, t: Times) -> None:
    next_at = t.now + timedelta(hours=3, minutes=30)
    store.write_state("deployment", {
        "commit": COMMIT, "at": iso(t.now - timedelta(hours=1)),
        "invalid": {"broken": ["pipelines/broken/pipeline.json: timeout: bad"]},
        "errors": [".fastflow/schedules.yaml: schedules[0].cron: bad cron"],
        "schedules": [{"id": "report.daily", "pipeline": "report", "description": "daily",
                       "timezone": "Asia/Tokyo", "next_at": iso(next_at),
                       "next_local": iso(next_at.astimezone(timezone(timedelta(hours=9))))}],
    })
    store.write_state("sync", {"commit": COMMIT, "at": iso(t.now - timedelta(hours=1))})
    store.write_state("daemon", {
        "heartbeat": iso(heartbeat), "pid": 4242, "source": "/srv/repo", "branch": "main",
        "deployment": None, "sync_errors": [], "dependencies": {},
        "running": [t.live_id], "queued": []}, commit=True)


def test_status_prints_every_pipeline_problems_and_the_daemon(recorded, store, tmp_path, t):
    write_daemon_state(store, t.now - timedelta(seconds=20), t)
    result = invoke("status", "--repo", recorded, "--state-dir", tmp_path / "state")
    assert result.exit_code == 0, result.output
    local = (t.now + timedelta(hours=3, minutes=30)).astimezone(timezone(timedelta(hours=9)))
    assert result.stdout.splitlines() == table(
        "PIPELINE\tSTATUS\tLAST RUN\tFINISHED\tDURATION\tSUCCESS\tNEXT RUN",
        "broken (invalid)\tnever run\t-\t-\t-\t-\t-",
        "minimal\tnever run\t-\t-\t-\t-\t-",
        f"report\tsucceeded\t{t.last_id} (push)\t2 h ago ({iso(t.t2 + timedelta(seconds=12))})\t12.5s\t50%"
        f"\tin 3 h ({iso(local)})",
        "invalid pipeline broken: pipelines/broken/pipeline.json: timeout: bad",
        "configuration error: .fastflow/schedules.yaml: schedules[0].cron: bad cron",
        f"daemon: alive, heartbeat just now ({iso(t.now - timedelta(seconds=20))}), pid 4242, "
        "1 running, 0 queued",
        f"last sync: {COMMIT} at {iso(t.now - timedelta(hours=1))}",
    )
    assert result.stderr == ""


def test_status_says_stale_and_notes_missing_state(recorded, store, tmp_path, t):
    store.write_state("daemon", {"heartbeat": iso(t.now - timedelta(minutes=10)), "pid": 7,
                                 "running": [], "queued": []}, commit=True)
    result = invoke("status", "--repo", recorded, "--state-dir", tmp_path / "state")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-2:] == [
        'invalid pipeline broken: pipelines/broken/pipeline.json: timeout: "soon" is not a number '
        "of seconds >= 0; use a number such as 300",
        f"daemon: stale (older than 180s; is fastflow serve running?), heartbeat 10 min ago "
        f"({iso(t.now - timedelta(minutes=10))}), pid 7, 0 running, 0 queued",
    ]
    assert result.stderr == (
        "note: no state/deployment.json on 'fastflow/results' yet (fastflow serve writes it after "
        "a sync): invalid pipelines, configuration errors and next runs are those of the working "
        "tree\n")


def test_status_says_a_cleanly_stopped_daemon_stopped(recorded, store, tmp_path, t):
    at = iso(t.now - timedelta(hours=3))
    store.write_state("daemon", {"heartbeat": at, "stopped_at": at, "pid": 7, "running": [],
                                 "queued": []}, commit=True)
    result = invoke("status", "--repo", recorded, "--state-dir", tmp_path / "state")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1] == (
        f"daemon: stopped at {at} (`fastflow serve` exited cleanly; pid 7)")


def test_status_without_any_daemon_state(recorded, tmp_path):
    result = invoke("status", "--repo", recorded, "--state-dir", tmp_path / "state")
    assert result.exit_code == 0
    assert result.stdout.splitlines()[-1] == "daemon: no heartbeat recorded"
    assert result.stderr.splitlines()[-1] == (
        f"note: no daemon heartbeat on 'fastflow/results' (state/daemon.json) or in "
        f"{tmp_path / 'state'}; is fastflow serve running?")


def test_status_json_shape(recorded, store, tmp_path, t):
    write_daemon_state(store, t.now - timedelta(seconds=20), t)
    result = invoke("status", "--repo", recorded, "--state-dir", tmp_path / "state", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert sorted(data) == ["branch", "configuration_from", "daemon", "deployment", "errors",
                            "head", "invalid", "notes", "notifications", "now", "pipelines",
                            "repository", "supervision", "sync"]
    assert data["supervision"] == {}  # no supervised pipeline
    assert data["notifications"] is None  # none ever sent
    report = next(p for p in data["pipelines"] if p["name"] == "report")
    assert sorted(report) == ["last_duration_s", "last_finished", "last_run_id", "last_status",
                              "last_trigger", "name", "next_run", "runs_recorded", "success_rate", "valid"]
    assert report["next_run"]["schedule_id"] == "report.daily"
    assert report["success_rate"] == 0.5
    assert data["daemon"]["stale"] is False and data["daemon"]["pid"] == 4242
    assert data["sync"] == {"commit": COMMIT, "at": iso(t.now - timedelta(hours=1))}


# --- history -----------------------------------------------------------------------------------


def test_history_table_newest_first_with_a_hint_for_older_runs(recorded, t):
    result = invoke("history", "report", "--repo", recorded, "--limit", "1")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == table(
        "RUN ID\tSTATUS\tTRIGGER\tSTARTED\tDURATION\tATTEMPTS\tEXIT\tERROR",
        f"{t.last_id}\tsucceeded\tpush\t{iso(t.t2)}\t12.5s\t1\t0\t-",
    )
    assert result.stderr == f"older runs: fastflow history report --before {t.last_id}\n"
    older = invoke("history", "report", "--repo", recorded, "--before", t.last_id)
    assert older.stdout.splitlines()[1:] == table(
        f"{t.failed_id}\tfailed\tschedule report.daily\t{iso(t.t1)}\t12.5s\t2\t1\t"
        "exit_code: exited with 1 see the log")
    assert older.stderr == ""


def test_history_json_shape(recorded, t):
    result = invoke("history", "report", "--repo", recorded, "--json")
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data["pipeline"] == "report" and data["older"] is None
    assert [r["run_id"] for r in data["runs"]] == [t.last_id, t.failed_id]
    assert data["runs"][1] == {
        "run_id": t.failed_id, "status": "failed",
        "trigger": {"kind": "schedule", "schedule_id": "report.daily", "parent_run_id": None,
                    "delivery_id": None},
        "started_at": iso(t.t1), "finished_at": iso(t.t1 + timedelta(seconds=12.5)),
        "duration_s": 12.5, "attempts": 2, "exit_code": 1,
        "error": {"kind": "exit_code", "message": "exited with 1\nsee the log"},
        "downstream": []}


def test_history_of_an_unknown_pipeline(recorded):
    result = invoke("history", "nope", "--repo", recorded)
    assert result.exit_code == 1
    assert result.stderr == ("Error: no pipeline 'nope': it has no runs on 'fastflow/results' and "
                             "is not in the working tree; known pipelines: broken, minimal, "
                             "report\n")


def test_history_limit_must_be_positive(recorded):
    result = invoke("history", "report", "--repo", recorded, "--limit", "0")
    assert result.exit_code == 2


# --- logs --------------------------------------------------------------------------------------


def test_logs_prints_the_stored_log(recorded, tmp_path, t):
    result = invoke("logs", t.last_id, "--repo", recorded, "--state-dir", tmp_path)
    assert result.exit_code == 0
    assert result.stdout == "2026-11-22T10:00:00.000Z stdout | hello\n"


def test_logs_of_a_running_run_shows_its_output_so_far(recorded, tmp_path, t):
    (tmp_path / "live").mkdir()
    (tmp_path / "live" / f"{t.live_id}.log").write_text("working\n")
    result = invoke("logs", t.live_id, "--repo", recorded, "--state-dir", tmp_path)
    assert result.exit_code == 0
    assert result.stdout == "working\n"
    assert result.stderr == (f"fastflow: {t.live_id} is still running; this is its output so far "
                             "(--follow to keep following)\n")


def test_logs_with_the_daemons_mirror_as_repo_finds_its_state_dir(recorded, tmp_path, t):
    state = tmp_path / "state"
    git("clone", "-q", "--mirror", str(recorded), str(state / "mirror.git"), cwd=tmp_path)
    (state / "live").mkdir()
    (state / "live" / f"{t.live_id}.log").write_text("working\n")
    result = invoke("logs", t.live_id, "--repo", state / "mirror.git")
    assert result.exit_code == 0, result.output
    assert result.stdout == "working\n"


def test_logs_of_an_unknown_run_names_how_to_find_ids(recorded, tmp_path):
    result = invoke("logs", "20261122T100000Z-report-ffff", "--repo", recorded,
                    "--state-dir", tmp_path, "--follow")
    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: no run '20261122T100000Z-report-ffff' on the results branch 'fastflow/results' "
        f"of {recorded} and none running in {tmp_path}; list run ids with `fastflow history "
        "NAME`\n")


def test_logs_follow_streams_the_live_file_until_the_record_is_committed(recorded, store,
                                                                          tmp_path, t):
    live = tmp_path / "live" / f"{t.live_id}.log"
    live.parent.mkdir()
    live.write_text("line 1\n")
    full = "line 1\nline 2\nline 3\nline 4\n"

    def daemon():
        for line in ("line 2\n", "line 3\n"):
            time.sleep(0.4)
            with open(live, "a") as fh:
                fh.write(line)
        time.sleep(0.4)
        with open(live, "a") as fh:
            fh.write("line 4\n")
        store.record_run(make_run("report", t.now, "dd01"), full)
        live.unlink()

    thread = threading.Thread(target=daemon)
    thread.start()
    started = time.monotonic()
    result = invoke("logs", t.live_id, "--follow", "--repo", recorded, "--state-dir", tmp_path)
    thread.join()
    assert result.exit_code == 0, result.output
    assert result.stdout == full
    assert time.monotonic() - started >= 1.2  # it followed, it did not just read the record


def test_logs_follow_of_a_finished_run_prints_its_log(recorded, tmp_path, t):
    result = invoke("logs", t.last_id, "--follow", "--repo", recorded, "--state-dir", tmp_path)
    assert result.exit_code == 0
    assert result.stdout == "2026-11-22T10:00:00.000Z stdout | hello\n"


# Clear the screen, ring, a NUL, set the window title: what hostile output writes to a terminal.
HOSTILE = "clear\x1b[2J bell\x07 nul\x00 title\x1b]0;pwned\x07 end"
HOSTILE_SHOWN = r"clear\x1b[2J bell\x07 nul\x00 title\x1b]0;pwned\x07 end"


@pytest.mark.slow
def test_control_bytes_of_real_output_are_shown_not_obeyed(origin, tmp_path):
    origin.push({"pipelines/noisy/main.py": f"print({HOSTILE!r}, flush=True)\n"}, "noisy")
    daemon = make_daemon(origin.bare, tmp_path / "state")
    daemon.start()
    try:
        run_id = daemon.submit("noisy", Trigger(kind="manual"), now=utc_now())
        assert daemon.dispatcher.wait_idle(120)
        daemon.store.flush()
    finally:
        daemon.stop(grace=30)
    assert f"stdout | {HOSTILE}\n" in daemon.store.read_log(run_id, "noisy")  # stored: the bytes

    result = invoke("logs", run_id, "--repo", origin.bare, "--state-dir", tmp_path / "state")
    assert result.exit_code == 0, result.output
    assert f"stdout | {HOSTILE_SHOWN}\n" in result.stdout
    assert not re.search("[\x00-\x08\x0b-\x1f\x7f]", result.stdout)
    raw = invoke("logs", run_id, "--raw", "--repo", origin.bare, "--state-dir", tmp_path / "state")
    assert raw.stdout == daemon.store.read_log(run_id, "noisy")

    page = git("show", f"fastflow/results:site/{run_page_path('noisy', run_id)}", cwd=origin.bare)
    assert HOSTILE_SHOWN in page
    assert not re.search("[\x00-\x08\x0b-\x1f\x7f-\x9f]", page)


def test_tables_show_control_bytes_and_brackets_of_records_as_they_are(repo, store, t):
    record = make_run("report", t.t1, "aa01", RunStatus.FAILED)
    message = "boom \x1b[2J\x07 [/x] [red]not markup[/red]"
    store.record_run(replace(record, error=ErrorInfo("exception", message)), "first\n")
    result = invoke("history", "report", "--repo", repo)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[1].endswith(
        r"exception: boom \x1b[2J\x07 [/x] [red]not markup[/red]")


# --- site --------------------------------------------------------------------------------------


def links(html: str) -> list[str]:
    return re.findall(r'(?:href|src)="([^"]+)"', html)


def test_site_build_writes_a_site_with_relative_links(recorded, tmp_path, t):
    out = tmp_path / "site"
    result = invoke("site", "build", "--out", out, "--repo", recorded)
    assert result.exit_code == 0, result.output
    count = len([p for p in out.rglob("*") if p.is_file()])
    assert result.stdout == f"wrote {count} files to {out} (open {out / 'index.html'})\n"
    assert (out / "index.html").is_file()
    assert (out / "runs" / "report" / t.last_id[:4] / t.last_id[4:6] / f"{t.last_id}.html").is_file()
    for page in out.rglob("*.html"):
        for link in links(page.read_text()):
            if link.startswith(("#", "data:")):
                continue
            assert not re.match(r"^(/|[a-z]+:)", link), (page, link)
            target = (page.parent / link.split("#")[0]).resolve()
            assert target.is_file(), (page, link)


def test_site_serve_builds_and_serves_until_ctrl_c(recorded):
    proc = subprocess.Popen(
        [sys.executable, "-m", "fastflow", "site", "serve", "--port", "0", "--repo", str(recorded)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        line = proc.stdout.readline()
        match = re.match(r"serving (.+) at (http://127\.0\.0\.1:\d+/) \(Ctrl-C to stop\)$",
                         line.strip())
        assert match, line + proc.stderr.read()
        with urllib.request.urlopen(match.group(2) + "index.html", timeout=10) as response:
            assert response.status == 200
            assert b"report" in response.read()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
        assert not Path(match.group(1)).exists()  # the temporary build is removed
    finally:
        proc.kill()
        proc.wait()


# --- results compact / prune -------------------------------------------------------------------


def commits(repo: Path) -> int:
    return int(git("rev-list", "--count", "fastflow/results", cwd=repo))


def test_compact_asks_first_and_refuses_unless_confirmed(recorded):
    result = invoke("results", "compact", "--repo", recorded, input="n\n")
    assert result.exit_code == 1
    assert result.stdout == (f"Rewrite 'fastflow/results' of {recorded} to a single commit, "
                             "dropping its history? [y/N]: n\n")
    assert result.stderr == "Aborted!\n"
    assert commits(recorded) == 2
    result = invoke("results", "compact", "--repo", recorded, input="y\n")
    assert result.exit_code == 0
    assert commits(recorded) == 1


def test_compact_yes(recorded):
    before = git("rev-parse", "fastflow/results", cwd=recorded)
    result = invoke("results", "compact", "--yes", "--repo", recorded)
    assert result.exit_code == 0
    after = git("rev-parse", "fastflow/results", cwd=recorded)
    assert result.stdout == (f"compacted 'fastflow/results': {before[:10]} -> {after[:10]} "
                             "(one commit; `git gc` reclaims the space)\n")
    assert commits(recorded) == 1


def test_prune_removes_runs_beyond_retention(recorded, t):
    result = invoke("results", "prune", "--repo", recorded)
    assert result.exit_code == 1
    assert result.stderr == (
        "Error: .fastflow/config.yaml: retention: neither keep_runs nor keep_days is set, so "
        "nothing would be removed; set retention.keep_runs or retention.keep_days, or pass "
        "--keep-runs/--keep-days\n")
    result = invoke("results", "prune", "--repo", recorded, "--keep-runs", "1")
    assert result.exit_code == 0
    assert result.stdout == f"report: removed 1 run ({t.failed_id} .. {t.failed_id})\n"
    result = invoke("results", "prune", "--repo", recorded, "--keep-runs", "1")
    assert result.stdout == "nothing to remove\n"
