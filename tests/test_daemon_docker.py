"""`fastflow serve` with Docker across a `kill -9`: no run is forgotten.

Each test starts the daemon as a real process (`python -m fastflow serve`) on a bare repository,
queues a run of a slow pipeline, kills the daemon with SIGKILL mid-run, does something to the
run's container while no daemon runs (nothing, wait for its end, `docker rm -f`), starts a new
daemon and reads what the results branch says about the run.
"""
from __future__ import annotations

import time
from pathlib import Path

import pytest
from helpers import JsonReceiver, Origin, containers_of, utc_now, wait_for
from helpers import ServeProcesses as Serve

from fastflow.daemon.statedir import queue_remote_run
from fastflow.errors import RepositoryError
from fastflow.executors.docker import connect
from fastflow.model import RunStatus
from fastflow.results.store import ResultsStore

pytestmark = [pytest.mark.docker, pytest.mark.slow]


@pytest.fixture
def setup(tmp_path, origin, runner_image, shared_cache):
    serve = Serve(origin.bare, tmp_path / "state", shared_cache, tmp_path)
    yield origin, serve
    serve.stop_all()
    for container in connect().containers.list(
        ignore_removed=True, all=True, filters={"label": "org.fastflow.pipeline=slow"}):
        if str(tmp_path) in str(container.attrs.get("Mounts")):
            container.remove(force=True)


def push_slow(user: Origin, code: str, metadata: str = "{}") -> None:
    user.push({"pipelines/slow/main.py": code, "pipelines/slow/pipeline.json": metadata}, "slow")


def run_until(serve: Serve, text: str) -> str:
    """Queue a run of `slow` and wait until its live log shows `text`; returns the run id."""
    run_id = queue_remote_run(serve.state, "slow", {}, None, utc_now())
    live = serve.state / "live" / f"{run_id}.log"
    wait_for(lambda: live.exists() and f"stdout | {text}\n" in live.read_text(),
             what=f"{text!r} in the live log")
    return run_id


def recorded(serve: Serve, run_id: str, tmp: Path):
    store = ResultsStore(serve.bare, tmp / "reader-journal", utc_now)

    def read():
        try:
            return store.read_run(run_id, pipeline="slow")
        except RepositoryError:
            return None

    record = wait_for(read, timeout=45, what=f"the record of {run_id}:\n{serve.output()}")
    return store, record


def stdout_lines(log: str) -> list[str]:
    return [line.split(" stdout | ", 1)[1] for line in log.splitlines() if " stdout | " in line]


def test_a_run_survives_a_kill_of_the_daemon_and_is_recorded_once(setup, tmp_path):
    user, serve = setup
    push_slow(user, "import time\n"
                    "for i in range(3): print(f'before {i}', flush=True)\n"
                    "time.sleep(6)\n"
                    "for i in range(3): print(f'after {i}', flush=True)\n")
    serve.start()
    run_id = run_until(serve, "before 2")
    serve.kill()
    assert [c.status for c in containers_of(run_id)] == ["running"]
    serve.start()
    store, record = recorded(serve, run_id, tmp_path)
    assert record.status is RunStatus.SUCCEEDED, serve.output()
    assert record.exit_code == 0
    assert [(a.n, a.status) for a in record.attempts] == [(1, RunStatus.SUCCEEDED)]
    log = store.read_log(run_id, pipeline="slow")
    assert stdout_lines(log) == [f"before {i}" for i in range(3)] + [f"after {i}" for i in range(3)]
    assert "the daemon restarted: re-attaching to the run's container" in log
    assert record.log.bytes == len(log.encode())
    assert [r.run_id for r in store.list_runs("slow")] == [run_id]
    assert containers_of(run_id) == []
    assert list((serve.state / "active").iterdir()) == []


def test_a_run_that_ended_while_no_daemon_ran_is_recorded_with_its_real_outcome(setup, tmp_path):
    user, serve = setup
    push_slow(user, "import sys, time\n"
                    "print('ready', flush=True)\n"
                    "time.sleep(2)\n"
                    "print('bye', flush=True)\n"
                    "sys.exit(3)\n", '{"retry_attempts": 1}')
    serve.start()
    run_id = run_until(serve, "ready")
    serve.kill()
    (container,) = containers_of(run_id)
    assert container.wait(timeout=30)["StatusCode"] == 3
    serve.start()
    store, record = recorded(serve, run_id, tmp_path)
    assert (record.status, record.exit_code) == (RunStatus.FAILED, 3)
    assert record.error.message == "main.py exited with code 3 (not retried after the daemon restarted)"
    assert [(a.n, a.exit_code) for a in record.attempts] == [(1, 3)]
    log = store.read_log(run_id, pipeline="slow")
    assert stdout_lines(log) == ["ready", "bye"]
    assert "attempt 1 of 2 failed (exit code 3)" in log
    assert [r.run_id for r in store.list_runs("slow")] == [run_id]
    assert containers_of(run_id) == []


def test_a_run_whose_container_vanished_is_lost(setup, tmp_path):
    user, serve = setup
    push_slow(user, "import time\nprint('ready', flush=True)\ntime.sleep(60)\n")
    serve.start()
    run_id = run_until(serve, "ready")
    serve.kill()
    for container in containers_of(run_id):
        container.remove(force=True)
    serve.start()
    store, record = recorded(serve, run_id, tmp_path)
    assert record.status is RunStatus.LOST
    assert record.error.kind == "lost"
    log = store.read_log(run_id, pipeline="slow")
    assert stdout_lines(log) == ["ready"]
    assert [r.run_id for r in store.list_runs("slow")] == [run_id]


def test_a_kill_during_a_retry_wait_records_the_attempt_that_ended(setup, tmp_path):
    user, serve = setup
    push_slow(user, "import sys\nprint('try', flush=True)\nsys.exit(4)\n",
              '{"retry_attempts": 1, "retry_strategy": {"type": "fixed_delay", "delay": 60}}')
    serve.start()
    run_id = queue_remote_run(serve.state, "slow", {}, None, utc_now())
    live = serve.state / "live" / f"{run_id}.log"
    wait_for(lambda: live.exists() and "retry 1: attempt 2 of 2 starts in 60s" in live.read_text(),
             what="the retry wait")
    serve.kill()
    serve.start()
    store, record = recorded(serve, run_id, tmp_path)
    assert (record.status, record.exit_code) == (RunStatus.FAILED, 4), serve.output()
    assert record.error.message == "main.py exited with code 4 (not retried after the daemon restarted)"
    assert [(a.n, a.status, a.exit_code) for a in record.attempts] == [(1, RunStatus.FAILED, 4)]
    assert stdout_lines(store.read_log(run_id, pipeline="slow")) == ["try"]
    assert containers_of(run_id) == []
    assert "Traceback" not in serve.output()


def test_a_kill_just_after_a_run_ended_records_its_real_outcome(setup, tmp_path):
    user, serve = setup
    # a chatty run: journalling its multi-MB log leaves a window after the container is gone
    push_slow(user, "for i in range(60000): print(f'line {i:06d} ' + 'x' * 40)\n")
    serve.start()
    run_id = queue_remote_run(serve.state, "slow", {}, None, utc_now())
    live = serve.state / "live" / f"{run_id}.log"
    wait_for(lambda: live.exists() and "attempt 1 of 1 succeeded" in live.read_text(),
             what="the end of the attempt", interval=0.01)
    serve.kill()
    serve.start()
    store, record = recorded(serve, run_id, tmp_path)
    assert (record.status, record.exit_code) == (RunStatus.SUCCEEDED, 0), serve.output()
    assert [r.run_id for r in store.list_runs("slow")] == [run_id]
    assert containers_of(run_id) == []
    assert "Traceback" not in serve.output()


def test_a_kill_between_the_start_line_and_the_container_runs_the_attempt_after_the_restart(
        setup, tmp_path):
    """Found by the chaos test: the daemon died after writing "attempt 1 ... started" and before
    the attempt's container started. The container is held until the attempt's summary line is
    written (AttemptSpec.hold), so no container and nothing of the attempt in the live log means
    the pipeline never ran: the next daemon runs it, once, instead of recording it `lost`."""
    import pygit2

    from fastflow.daemon.runs import LiveLogs, RunJournal, RunOrder
    from fastflow.executors.base import OutputLine
    from fastflow.record import Trigger, new_run_id

    user, serve = setup
    push_slow(user, "print('ran once', flush=True)\n")
    serve.start()
    done = queue_remote_run(serve.state, "slow", {}, None, utc_now())
    _, first = recorded(serve, done, tmp_path)
    serve.kill()
    now = utc_now()
    root_tree = str(pygit2.Repository(str(serve.bare))[first.commit.sha].tree_id)
    order = RunOrder(run_id=new_run_id("slow", now), pipeline="slow", commit=first.commit.sha,
                     root_tree=root_tree, tree=first.commit.tree, queued_at=now,
                     trigger=Trigger("manual"), started_at=now)
    RunJournal(serve.state).write(order)
    LiveLogs(serve.state).sink(order.run_id)(OutputLine("runner", "attempt 1 of 1 started", now))
    serve.start()
    store, record = recorded(serve, order.run_id, tmp_path)
    assert (record.status, record.exit_code) == (RunStatus.SUCCEEDED, 0), serve.output()
    log = store.read_log(order.run_id, pipeline="slow")
    assert stdout_lines(log) == ["ran once"]
    assert f"run {order.run_id}: attempt 1 never ran (the daemon stopped before its container " \
           "started); it starts now" in serve.output()
    assert [r.run_id for r in store.list_runs("slow")].count(order.run_id) == 1
    assert containers_of(order.run_id) == []


def test_a_re_attached_run_over_its_soft_limit_is_heard_while_it_goes_on(setup, tmp_path):
    """The daemon killed while the run sleeps; after the restart the run busies a core over its
    CPU soft limit: the re-attached run's excess is heard at once (a real JSON receiver on
    loopback), while the run is still journalled, and its record sends it no more."""
    user, serve = setup
    receiver = JsonReceiver()
    try:
        user.push({".fastflow/config.yaml":
                   "notifications:\n"
                   f"  - {{url: '{receiver.url()}', group_window: 0, events: [soft_limit]}}\n"},
                  "notify soft limits")
        push_slow(user, "import time\nprint('ready', flush=True)\ntime.sleep(4)\n"
                        "end = time.monotonic() + 8\nwhile time.monotonic() < end:\n    pass\n"
                        "print('done', flush=True)\n", '{"cpu_soft_limit": 0.1}')
        serve.start()
        run_id = run_until(serve, "ready")
        serve.kill()
        serve.start()
        wait_for(lambda: receiver.received, 30, f"the soft_limit message:\n{serve.output()}")
        assert (serve.state / "active" / f"{run_id}.json").exists()  # heard while it goes on
        store, record = recorded(serve, run_id, tmp_path)
        assert record.status is RunStatus.SUCCEEDED and record.resources.soft_limit_events
        time.sleep(2)  # the record's alerts, were there any
        [(_, body)] = receiver.received
        assert f"run {run_id}" in body["message"] and "status running" in body["message"]
    finally:
        receiver.stop()
