"""The daemon under faults of its own finishing path: run ids that clash, exceptions while a
finished run is published or recorded, output that tries to fake the runner's lines.

Real repositories (a bare origin, a clone pushing with git), real runs on the host executor;
the faults are injected by wrapping the daemon's own parts (the publisher, the store), never
by patching time or state.
"""
from __future__ import annotations

import json

import pytest
from helpers import make_daemon, utc_now, wait_for

from fastflow.daemon.runs import LaunchContext, LiveLogs, RunIdTaken, RunOrder
from fastflow.executors.base import RUNNER, STDERR, STDOUT, OutputLine
from fastflow.record import Trigger, new_run_id
from fastflow.run.capture import parse_line, read_log_lines, read_log_text, split_log_lines
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
        return daemon.launcher.store_has(run_id, pipeline) and daemon.store.read_run(run_id, pipeline)
    return wait_for(read, timeout=60, what=f"the record of {run_id}")


# --- item 14: run ids never collide ----------------------------------------------------------

def test_random_run_ids_carry_32_random_bits():
    ids = {new_run_id("p", utc_now().replace(microsecond=0)) for _ in range(20_000)}
    assert len(ids) == 20_000
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
