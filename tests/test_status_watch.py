"""`fastflow status --watch`: the live view of a real results branch (running runs, flow tasks,
queue, next runs, last results), and the command in a real terminal (a pty): `q` and Ctrl-C
leave it with exit code 0."""
from __future__ import annotations

import fcntl
import os
import pty
import select
import subprocess
import sys
import termios
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from helpers import git, sample_flow_record, utc_now
from rich.console import Console

from fastflow.cli.watch import watch_status, watch_view
from fastflow.flow.record import FlowRunRecord, TaskState
from fastflow.record import RunRecord, Trigger
from fastflow.results.read import open_results, watch_report
from fastflow.results.store import ResultsStore

NOW = datetime(2026, 12, 2, 9, 0, tzinfo=timezone.utc)
RUNNING_TASK = "20261202T085500Z-nightly.load-0a0b0c0d"


def run(pipeline: str, at: datetime, suffix: str, status: str = "succeeded") -> RunRecord:
    stamp = at.strftime("%Y%m%dT%H%M%SZ")
    return RunRecord.from_json({
        "schema": 1, "run_id": f"{stamp}-{pipeline}-{suffix}", "pipeline": pipeline,
        "status": status,
        "trigger": {"kind": "manual"}, "queued_at": at.isoformat(), "started_at": at.isoformat(),
        "finished_at": (at + timedelta(seconds=4)).isoformat(), "duration_s": 4.0,
        "exit_code": 0 if status == "succeeded" else 1})


@pytest.fixture
def repo(make_repo, tmp_path: Path) -> Path:
    root = make_repo({"pipelines/report/main.py": "print(1)\n"})
    git("init", "-q", cwd=root)
    store = ResultsStore(root, tmp_path / "journal", lambda: NOW)
    store.record_run(run("report", NOW - timedelta(hours=1), "aa01", "failed"), "x\n")
    store.record_flow(sample_flow_record())
    running = FlowRunRecord("20261202T085500Z-nightly-0a0b0c0d", "nightly", (
        TaskState("extract", "nightly.extract", status="succeeded"),
        TaskState("load", "nightly.load", ("extract",), status="running", run_id=RUNNING_TASK),
        TaskState("mail", "nightly.mail", ("load",))), trigger=Trigger("schedule"))
    store.record_flow(running.to_json())
    store.write_state("daemon", {"heartbeat": (NOW - timedelta(seconds=10)).isoformat(),
                                 "pid": 4242, "running": [RUNNING_TASK],
                                 "queued": ["20261202T085900Z-report-bb02"]}, commit=True)
    return root


def test_the_view_shows_running_runs_flow_tasks_queue_and_last_results(repo: Path):
    with open_results(repo, lambda: NOW) as results:
        report = watch_report(results, NOW, None)
    assert [f["flow"] for f in report["flows"]] == ["nightly", "weather"]  # newest first
    out = Console(record=True, width=160, color_system=None)
    out.print(watch_view(report))
    text = out.export_text()
    assert "daemon: alive, heartbeat just now, pid 4242" in text
    assert f"{RUNNING_TASK} │ nightly.load" in text
    assert "│ nightly │ 20261202T085500Z-nightly-0a0b0c0d │ running │ extract succeeded  load " \
           "running  mail pending" in text
    assert "Queue: 1 waiting: 20261202T085900Z-report-bb02" in text
    assert "│ report   │ failed │ 20261202T080000Z-report-aa01 │ 59 min ago │ 4.0s" in text


def test_watch_refreshes_until_q(repo: Path):
    keys = iter([None, "x", "q"])
    out = Console(record=True, width=160, color_system=None)
    watch_status(repo, None, clock=lambda: NOW, console=out, read_key=lambda timeout: next(keys))
    assert out.export_text().count("Last results") >= 1 and next(keys, "done") == "done"


def _spawn(repo: Path) -> tuple[subprocess.Popen, int]:
    primary, secondary = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "fastflow", "status", "--watch", "--interval",
                             "0.3", "--repo", str(repo)], stdin=secondary, stdout=secondary,
                            stderr=secondary, env={**os.environ, "COLUMNS": "160", "TERM": "xterm"},
                            # the pty as the command's controlling terminal: Ctrl-C is a SIGINT
                            start_new_session=True,
                            preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))
    os.close(secondary)
    return proc, primary


def _read_until(fd: int, needle: bytes, timeout: float = 30) -> bytes:
    seen, deadline = b"", time.monotonic() + timeout
    while needle not in seen:
        assert time.monotonic() < deadline, seen.decode(errors="replace")[-2000:]
        ready, _, _ = select.select([fd], [], [], 0.5)
        if ready:
            seen += os.read(fd, 65536)
    return seen


@pytest.mark.parametrize("key", [b"q", b"\x03"], ids=["q", "ctrl-c"])
def test_the_command_in_a_terminal_leaves_on_q_and_ctrl_c(repo: Path, key: bytes):
    proc, fd = _spawn(repo)
    try:
        _read_until(fd, b"Last results")
        time.sleep(0.4)  # a refresh in place at least once
        os.write(fd, key)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(fd)
    assert utc_now()  # the real clock was read by the command, not by the view
