"""Alerts wired into the daemon (in process, host executor, real receivers on loopback): a
supervised pipeline that is given up is heard once (`given_up`, from daemon.supervision), a run
that runs past `stuck_after` is heard once while it runs (`stuck`), and a pipeline that replaces
config.yaml's targets (`"inherit": false`) is heard only by its own."""
from __future__ import annotations

import json
import os

import pytest
from helpers import JsonReceiver, make_daemon, utc_now, wait_for

from fastflow.model import RunStatus
from fastflow.record import Trigger

pytestmark = pytest.mark.slow


@pytest.fixture
def hooks():
    shared, own = JsonReceiver(), JsonReceiver()
    yield shared, own
    shared.stop()
    own.stop()


def serve(daemon, until, what: str, timeout: float = 60):
    """Tick the daemon (as `serve` would) until `until()` holds."""
    def ticked():
        daemon.tick(utc_now())
        return until()
    return wait_for(ticked, timeout=timeout, interval=0.2, what=what)


def test_given_up_and_stuck_are_heard_once_and_inherit_false_keeps_the_defaults_out(
        origin, hooks, tmp_path):
    shared, own = hooks
    origin.push({
        ".fastflow/config.yaml": "notifications:\n"
                                 f"  - {{url: '{shared.url()}', name: ops, group_window: 0, "
                                 "events: [given_up, every_failure]}\n",
        "pipelines/crashy/main.py": "import sys; print('crash'); sys.exit(3)\n",
        "pipelines/crashy/pipeline.json": json.dumps(
            {"restart_on_crash": True, "restart_limit": 1}),
        "pipelines/sleepy/main.py": "import time; time.sleep(4); print('done')\n",
        "pipelines/sleepy/pipeline.json": json.dumps({"notifications": [
            {"url": shared.url("stuck"), "name": "stuck-watch", "group_window": 0,
             "events": ["stuck"], "stuck_after": 1}]}),
        "pipelines/own/main.py": "import sys; sys.exit(1)\n",
        "pipelines/own/pipeline.json": json.dumps({"notifications": {"inherit": False, "targets": [
            {"url": own.url("own"), "name": "own-hook", "group_window": 0,
             "events": ["failure"]}]}}),
    }, "alerts")
    daemon = make_daemon(origin.bare, tmp_path / "state", environ=dict(os.environ))
    daemon.start()
    try:
        crashed = daemon.submit("crashy", Trigger(kind="manual"), now=utc_now())
        sleeping = daemon.submit("sleepy", Trigger(kind="manual"), now=utc_now())
        failed = daemon.submit("own", Trigger(kind="manual"), now=utc_now())

        def heard(target: str) -> list[tuple[str, str]]:
            return sorted((e["pipeline"], e["kind"]) for d in daemon.alerts.recent_deliveries()
                          if d["target"] == target and d["outcome"] == "delivered"
                          for e in d["events"])

        serve(daemon,
              lambda: len(heard("ops")) >= 2 and heard("stuck-watch") and heard("own-hook"),
              f"given_up, every_failure and stuck; heard {heard('ops')}")
        assert daemon.dispatcher.wait_idle(60)
        for _ in range(10):  # a few more rounds: nothing is sent twice
            daemon.tick(utc_now())
        assert daemon.alerts.courier.wait_idle(10)
    finally:
        daemon.stop(grace=10)
    assert heard("ops") == [("crashy", "every_failure"), ("crashy", "given_up")]
    assert heard("stuck-watch") == [("sleepy", "stuck")]  # added to config.yaml's target
    assert heard("own-hook") == [("own", "failure")]
    text = "\n".join(body["message"] for _, body in shared.received)
    assert "crashy: given up (no more restarts) (crashy: given up after 1 crashes" in text
    assert "sleepy: is stuck (running for " in text and f"run {sleeping}" in text
    assert f"run {crashed}" in text and "status running" in text and ", limit 1 s)" in text
    [(path, body)] = own.received
    assert (path, body["title"]) == ("/own", "Fast-Flow: own: failed")
    assert f"run {failed}" in body["message"] and "own: failed" not in text
    record = daemon.store.read_run(sleeping, "sleepy")
    assert record.status is RunStatus.SUCCEEDED  # being stuck is heard, never acted on


def test_a_slot_whose_run_cannot_start_within_the_grace_is_heard_as_missed(origin, hooks, tmp_path):
    shared, _ = hooks
    origin.push({
        ".fastflow/config.yaml": "max_concurrent_runs: 1\n"
                                 "notifications:\n"
                                 f"  - {{url: '{shared.url()}', name: ops, group_window: 0, "
                                 "events: [missed], missed_grace: 1}\n",
        "pipelines/blocker/main.py": "import time; time.sleep(8)\n",
        "pipelines/ticker/main.py": "print('tick')\n",
        "pipelines/ticker/pipeline.json": json.dumps({"schedule_interval_seconds": 2}),
    }, "missed")
    daemon = make_daemon(origin.bare, tmp_path / "state", environ=dict(os.environ))
    daemon.start()
    try:
        daemon.tick(utc_now())  # the schedule is first seen: slots from now on count
        daemon.submit("blocker", Trigger(kind="manual"), now=utc_now())  # holds the one permit

        def missed():
            return [e for d in daemon.alerts.recent_deliveries() for e in d["events"]
                    if d["outcome"] == "delivered"]

        serve(daemon, missed, "a missed slot", timeout=30)
    finally:
        daemon.stop(grace=15)
    first = missed()[0]
    assert (first["kind"], first["pipeline"]) == ("missed", "ticker")
    assert first["detail"].startswith("schedule ticker: the slot of ")
    assert first["detail"].endswith("had no run started within 1 s")
    [(_, body)] = shared.received[:1]
    assert body["title"] == "Fast-Flow: ticker: missed a scheduled run" and body["type"] == "warning"


def test_a_soft_limit_is_heard_while_the_run_goes_on_and_once(origin, hooks, tmp_path):
    """A run over its CPU soft limit: the executor tells the excess as it starts, and the
    target hears `soft_limit` while the run still runs; its record then sends it no more."""
    shared, _ = hooks
    origin.push({
        ".fastflow/config.yaml": "notifications:\n"
                                 f"  - {{url: '{shared.url()}', name: ops, group_window: 0, "
                                 "events: [soft_limit]}\n",
        "pipelines/busy/main.py": "import time\nend = time.monotonic() + 8\n"
                                  "while time.monotonic() < end:\n    pass\nprint('done')\n",
        "pipelines/busy/pipeline.json": json.dumps({"cpu_soft_limit": 0.1}),
    }, "a busy pipeline with a CPU soft limit")
    daemon = make_daemon(origin.bare, tmp_path / "state", environ=dict(os.environ))
    daemon.start()
    try:
        run_id = daemon.submit("busy", Trigger(kind="manual"), now=utc_now())
        serve(daemon, lambda: shared.received, "the soft_limit message", timeout=30)
        assert daemon.launcher.journal.has(run_id)  # heard while the run goes on
        assert daemon.dispatcher.wait_idle(60)
        for _ in range(10):  # its record: nothing more
            daemon.tick(utc_now())
        assert daemon.alerts.courier.wait_idle(10)
    finally:
        daemon.stop(grace=10)
    [(_, body)] = shared.received
    assert f"run {run_id}" in body["message"] and "status running" in body["message"]
    assert "first over its cpu soft limit" in body["message"]
    record = daemon.store.read_run(run_id, "busy")
    assert record.status is RunStatus.SUCCEEDED and record.resources.soft_limit_events
    assert "soft limit: cpu " in daemon.store.read_log(run_id, "busy")
