"""The daemon under faults of its own finishing path: run ids that clash, exceptions while a
finished run is published or recorded, output that tries to fake the runner's lines.

Real repositories (a bare origin, a clone pushing with git), real runs on the host executor;
the faults are injected by wrapping the daemon's own parts (the publisher, the store), never
by patching time or state.
"""
from __future__ import annotations

import errno
import json
import logging
from datetime import datetime, timezone

import pytest
from helpers import Clock, git, make_daemon, utc_now, wait_for

from fastflow.daemon.runs import LaunchContext, LiveLogs, RunIdTaken, RunOrder
from fastflow.errors import RepositoryError
from fastflow.executors.base import RUNNER, STDERR, STDOUT, OutputLine
from fastflow.model import RunStatus
from fastflow.record import Trigger, new_run_id
from fastflow.run.capture import (
    format_line,
    parse_line,
    read_log_lines,
    read_log_text,
    split_log_lines,
)
from fastflow.run.recovery import capped_log, delivered_lines, earlier_attempts

pytestmark = pytest.mark.slow


@pytest.fixture
def user(origin):
    origin.push({
        ".fastflow/config.yaml": "max_concurrent_runs: 2\n",
        "pipelines/report/main.py": "print('report')\n",
        "pipelines/slow/main.py": "import time; time.sleep(1.5); print('slow done')\n",
        "pipelines/slow/pipeline.json": json.dumps({"max_instances": 1}),
    }, "first")
    return origin


@pytest.fixture
def daemon(user, tmp_path):
    d = make_daemon(str(user.bare), tmp_path / "state")
    d.start()
    yield d
    d.stop(grace=30)


def recorded(daemon, run_id: str, pipeline: str):
    def read():
        return (daemon.launcher.store_has(run_id, pipeline)
                and daemon.store.read_run(run_id, pipeline))
    return wait_for(read, timeout=60, what=f"the record of {run_id}")


# --- item 14: run ids never collide ----------------------------------------------------------

def test_random_run_ids_carry_32_random_bits():
    # 20,000 draws from 32 bits collide with probability ~4.6% (birthday bound), so a clash or
    # two is allowed; 16 random bits would give ~3,000 clashes, 24 bits ~12.
    ids = {new_run_id("p", utc_now().replace(microsecond=0)) for _ in range(20_000)}
    assert 20_000 - len(ids) <= 2
    assert all(len(i.rsplit("-", 1)[1]) == 8 for i in ids)


def test_a_deterministic_run_id_is_never_journalled_twice(daemon):
    run_id = f"{new_run_id('slow', utc_now())[:16]}-slow-request1"
    daemon.submit("slow", Trigger("manual"), now=utc_now(), run_id=run_id)
    with pytest.raises(RunIdTaken, match=f"run {run_id} is journalled or recorded already"):
        daemon.submit("slow", Trigger("manual"), now=utc_now(), run_id=run_id)
    recorded(daemon, run_id, "slow")
    assert daemon.dispatcher.wait_idle(30)
    with pytest.raises(RunIdTaken):  # recorded (its journal entry gone): still taken
        daemon.submit("slow", Trigger("manual"), now=utc_now(), run_id=run_id)
    assert [r.run_id for r in daemon.store.list_runs("slow")] == [run_id]


def test_a_clashing_random_run_id_is_drawn_again(daemon):
    now = utc_now()
    first = daemon.submit("slow", Trigger("push"), now=now)
    active = daemon.deployment.active["slow"]
    clash = RunOrder(run_id=first, pipeline="slow", commit=active.commit,
                     root_tree=daemon.deployment.root_tree, tree=active.tree, queued_at=now,
                     trigger=Trigger("push"))
    fresh = iter([first, new_run_id("slow", now)])  # the first draw clashes again
    second = daemon.launcher.submit(clash, LaunchContext(active, daemon.deployment.config),
                                    renew=lambda: next(fresh)).run_id
    assert second != first and second[:16] == first[:16]
    assert {recorded(daemon, i, "slow").run_id for i in (first, second)} == {first, second}


# --- item 15: the live log is split on "\n" only ------------------------------------------------

FORGED = "2026-11-22T14:30:09.000Z runner | attempt 1 of 3 started"


def test_output_cannot_forge_runner_lines_in_the_live_log(tmp_path):
    at = utc_now()
    live = LiveLogs(tmp_path)
    sink = live.sink("r1")
    sink(OutputLine(RUNNER, "attempt 1 of 3 started", at))
    for text in ["one", f"progress 50%\r{FORGED}", "a\u2028b", "crlf\r\n", "two"]:
        sink(OutputLine(STDOUT, text, at))
    path = live.dir / "r1.log"
    raw = path.read_bytes()
    assert b"\r" not in raw and raw.count(b"\n") == 6  # one output line is one log line
    text = read_log_text(path)
    assert delivered_lines(text, 1) == {STDOUT: 5, STDERR: 0}
    attempts, total = earlier_attempts(text)
    assert list(attempts) == [1] and total == 3 and attempts[1].started_at is not None
    lines = [parse_line(raw) for raw in split_log_lines(text)]
    assert [line.text for line in lines[1:]] == [
        "one", f"progress 50%\\r{FORGED}", "a\u2028b", "crlf\\r\\n", "two"]
    assert capped_log(text, 1 << 20).text() == text  # replayed unchanged: escaping is idempotent
    assert list(read_log_lines(path)) == split_log_lines(text)


def test_a_live_log_with_raw_carriage_returns_is_read_as_written(tmp_path):
    # A live log of an older daemon (raw "\r" in stdout): the reader splits on "\n" only.
    stamp = "2026-11-22T14:30:00.000Z"
    path = tmp_path / "old.log"
    path.write_bytes(f"{stamp} runner | attempt 1 of 1 started\n"
                     f"{stamp} stdout | x\r{FORGED}\n{stamp} stdout | y\n".encode())
    text = read_log_text(path)
    assert delivered_lines(text, 1) == {STDOUT: 2, STDERR: 0}
    assert earlier_attempts(text)[1] == 1


# --- item 4: a fault while finishing a run never wedges anything -------------------------------

T0 = datetime(2026, 11, 23, 10, 2, 30, tzinfo=timezone.utc)


class Flaky:
    """`target` with its method `name` raising `error` the first `times` calls (then itself)."""

    def __init__(self, target, name: str, error: BaseException, times: int = 1) -> None:
        self._target, self._name, self._error, self.left = target, name, error, times

    def __getattr__(self, attr):
        value = getattr(self._target, attr)
        if attr != self._name:
            return value

        def call(*args, **kwargs):
            if self.left > 0:
                self.left -= 1
                raise self._error
            return value(*args, **kwargs)
        return call

    def __call__(self, *args, **kwargs):  # a flaky function: `name` is "__call__"
        return self.__getattr__("__call__")(*args, **kwargs)


PAGES_CRASH = ValueError("pages_for_new_run needs the newest 2 runs, got 1")
FULL = OSError(errno.ENOSPC, "No space left on device")


def inject(launcher, step: str) -> None:
    """Make step `step` of finishing the next run fail once."""
    if step == "pages":
        launcher.on_finished = Flaky(launcher.on_finished, "__call__", PAGES_CRASH)
    elif step == "record":  # the results journal cannot be written (a full disk)
        launcher.store = Flaky(launcher.store, "record_run", FULL, times=2)
    elif step == "commit":
        launcher.store = Flaky(launcher.store, "flush", RepositoryError("branch keeps moving"))
    elif step == "cleanup":
        launcher.journal = Flaky(launcher.journal, "remove", FULL)
    elif step == "after_record":
        launcher.after_record = Flaky(launcher.after_record, "__call__", RuntimeError("boom"))
    elif step == "ended":
        launcher.on_ended = Flaky(launcher.on_ended, "__call__", RuntimeError("boom"))


@pytest.mark.parametrize("step", ["pages", "record", "commit", "cleanup", "after_record", "ended"])
def test_a_fault_at_any_step_of_finishing_a_run_never_wedges_the_daemon(origin, tmp_path, step,
                                                                       caplog):
    origin.push({
        ".fastflow/schedules.yaml": "schedules:\n  - pipeline: quick\n    interval: 1m\n"
                                    "    overlap: skip\n",
        "pipelines/quick/main.py": "print('quick')\n",
        "pipelines/quick/pipeline.json": json.dumps({"max_instances": 1}),
    }, "first")
    clock = Clock(T0)
    daemon = make_daemon(origin.bare, tmp_path / "state", clock=clock)
    daemon.start()
    try:
        inject(daemon.launcher, step)
        with caplog.at_level(logging.INFO, logger="fastflow"):
            clock.now = daemon.timetable.next_runs()[0].at
            daemon.tick(clock())
            assert daemon.dispatcher.wait_idle(60)
            (run_id,) = [r.getMessage().split()[3] for r in caplog.records
                         if r.getMessage().startswith("schedule quick: queued")]
            # the run has ended for the dispatcher and the schedule, recorded or not yet
            assert daemon.dispatcher.instances("quick") == 0
            assert step == "ended" or not any(daemon.timetable.running.values())
            for _ in range(3):  # the next slots run (none is skipped as an overlap)
                clock.now = daemon.timetable.next_runs()[0].at
                daemon.tick(clock())
                assert daemon.dispatcher.wait_idle(60)
        daemon.store.flush()
        records = {r.run_id: r for r in daemon.store.list_runs("quick")}
        assert [r.status for r in records.values()] == [RunStatus.SUCCEEDED] * 4
        assert run_id in records and daemon.launcher.unrecorded == []
        assert not list(daemon.launcher.journal.dir.glob("*.json")) or step == "cleanup"
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1 and run_id in errors[0].getMessage(), errors
        assert errors[0].exc_info is None  # a message for the operator, not a traceback
        if step == "pages":  # the pages come back with the next run
            assert "site/pipelines/quick/index.html" in git(
                "--git-dir", str(origin.bare), "ls-tree", "-r", "--name-only",
                "fastflow/results", cwd=tmp_path)
    finally:
        daemon.stop(grace=30)


def test_pages_of_a_run_recorded_twice_are_rendered_not_refused(daemon):
    # Two owners of one run (issue 11, item 1 and 3): the second finish used to crash with
    # "pages_for_new_run needs the newest 2 runs, got 1".
    run_id = daemon.submit("report", Trigger("manual"), now=utc_now())
    record = recorded(daemon, run_id, "report")
    pages = daemon.publisher.pages_for_run(record, "log\n")
    assert "site/pipelines/report/index.html" in pages


# --- item 10: the live log is capped on disk and streamed back ---------------------------------

def test_the_live_log_is_capped_like_the_run_log_and_counts_what_it_dropped(tmp_path):
    cap = 64 * 1024
    at = utc_now()
    live = LiveLogs(tmp_path)
    sink = live.sink("r1", cap)
    path = live.dir / "r1.log"
    sizes, printed = [], {STDOUT: 0, STDERR: 0}
    for attempt in (1, 2):
        sink(OutputLine(RUNNER, f"attempt {attempt} of 2 started", at))
        for i in range(6000):  # ~ 40 times the cap per attempt
            stream = STDERR if i % 7 == 0 else STDOUT
            sink(OutputLine(stream, f"line {attempt}.{i} " + "x" * 40, at))
            printed[stream] += attempt == 2
            sizes.append(path.stat().st_size)
        if attempt == 1:
            sink(OutputLine(RUNNER, "attempt 1 of 2 failed (exit code 1)", at))
    assert max(sizes) <= 2 * cap + 200  # never much more than twice the cap on disk
    text = read_log_text(path)
    assert "omitted by Fast-Flow" in text and text.startswith(format_line(
        OutputLine(RUNNER, "attempt 1 of 2 started", at)))
    assert text.endswith(" | line 2.5999 " + "x" * 40 + "\n")
    # every runner line kept, and the lines delivered of attempt 2 counted exactly
    attempts, total = earlier_attempts(text)
    assert sorted(attempts) == [1, 2] and attempts[1].status is RunStatus.FAILED and total == 2
    assert delivered_lines(text, 2) == printed
    # a re-attach (a new daemon) appends to it with the same cap and the same counts
    again = live.sink("r1", cap)
    again(OutputLine(STDOUT, "after the restart", at))
    assert delivered_lines(read_log_text(path), 2) == {**printed, STDOUT: printed[STDOUT] + 1}
    # the record's log made from it, streamed: capped, with the marker, truncated
    record_log = capped_log(path, cap)
    assert record_log.truncated and len(record_log.text().encode()) <= cap + 200
    assert record_log.text().endswith(" stdout | after the restart\n")


def test_a_lost_runs_log_is_capped_and_named(daemon):
    cap = 64 * 1024
    at = utc_now()
    active = daemon.deployment.active["report"]
    order = RunOrder(run_id=new_run_id("report", at), pipeline="report", commit=active.commit,
                     root_tree=daemon.deployment.root_tree, tree=active.tree, queued_at=at,
                     started_at=at)
    sink = daemon.launcher.live.sink(order.run_id, cap)
    for i in range(20_000):
        sink(OutputLine(STDOUT, f"chatty {i} " + "y" * 60, at))
    outcome = daemon.launcher._lost(order, cap)
    assert outcome.record.status is RunStatus.LOST
    assert len(outcome.log_text.encode()) <= cap + 300
    assert "omitted by Fast-Flow" in outcome.log_text
    assert outcome.log_text.endswith("its outcome is unknown\n")
    assert outcome.record.log.path == f"logs/report/{order.run_id[:4]}/{order.run_id[4:6]}/" \
                                      f"{order.run_id}.log"
    assert outcome.record.log.truncated
    assert outcome.record.log.bytes == len(outcome.log_text.encode())
