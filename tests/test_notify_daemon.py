"""Notifications end to end: a real `fastflow serve` process, Docker runs, and real receivers on
loopback (an HTTP server for the JSON-webhook URL form, an SMTP server for e-mail).

failure -> recovery sends exactly two messages to each target; a pipeline flapping within the
group window sends one; a receiver that is down is retried and recorded as failed while runs go
on; no secret value (the URL's token kept in the secrets file, the pipeline's password) reaches
a message, the results branch or the state dir.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
from datetime import datetime, timezone

import pytest
from helpers import (
    JsonReceiver,
    MailReceiver,
    free_port,
    run_git,
    start_serve,
    utc_now,
    wait_for,
)

from fastflow.daemon.statedir import queue_remote_run
from fastflow.errors import RepositoryError
from fastflow.model import RunStatus
from fastflow.results.store import ResultsStore
from fastflow.secrets.age import X25519Identity
from fastflow.secrets.store import grant_secret, init_secrets, set_secret

pytestmark = [pytest.mark.docker, pytest.mark.slow]

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=timezone.utc)
TOKEN = "tok-Zq9-never-shown"
PASSWORD = "pw-Zq9-correct-horse"
FLAKY = ('import os, pathlib, sys\n'
         'print("connecting with", os.environ["DB_PASSWORD"], flush=True)\n'
         'code = int(pathlib.Path("exit_code").read_text())\n'
         'print("exit", code, flush=True)\n'
         'sys.exit(code)\n')


class Setup:
    def __init__(self, tmp_path, origin, shared_cache) -> None:
        self.tmp, self.origin = tmp_path, origin
        self.state = tmp_path / "state"
        self.identity = X25519Identity.generate()
        self.env = {"FASTFLOW_CACHE_DIR": str(shared_cache),
                    "SOPS_AGE_KEY": self.identity.to_string(), "SOPS_AGE_KEY_FILE": "",
                    "SOPS_AGE_KEY_CMD": ""}
        self.proc = None
        self.json = JsonReceiver()
        self.mail = MailReceiver()

    def push(self, config: str, exit_code: int = 1, secrets: dict | None = None) -> None:
        path = self.origin.work / ".fastflow" / "secrets.enc.yaml"
        if not path.exists():
            init_secrets(path, [self.identity.recipient], NOW, self.origin.work)
        for name, value in (secrets or {}).items():
            set_secret(path, name, value, [self.identity], NOW)
        set_secret(path, "DB_PASSWORD", PASSWORD, [self.identity], NOW)
        grant_secret(path, "DB_PASSWORD", ["flaky", "steady"], [self.identity], NOW)
        self.origin.push({
            ".fastflow/config.yaml": config,
            "pipelines/flaky/main.py": FLAKY,
            "pipelines/flaky/exit_code": str(exit_code),
            "pipelines/flaky/pipeline.json": '{"secrets": ["DB_PASSWORD"]}',
            "pipelines/steady/main.py": 'print("steady")\n',
        }, "notifications")

    def set_exit(self, code: int) -> None:
        self.origin.push({"pipelines/flaky/exit_code": str(code)}, f"exit {code}")
        wait_for(lambda: self._deployed_exit() == code, timeout=30, what="the push deployed")

    def _deployed_exit(self):
        try:
            data = json.loads((self.state / "deployment.json").read_text())
        except (OSError, ValueError):
            return None
        commit = data.get("commit")
        head = run_git("rev-parse", "main", cwd=self.origin.bare).stdout.strip()
        return int(run_git("show", "main:pipelines/flaky/exit_code",
                           cwd=self.origin.bare).stdout) if commit == head else None

    def start(self) -> None:
        self.proc = start_serve(self.origin.bare, self.state, self.tmp / "serve.log",
                                "--poll-interval", "1", env=self.env)

    def output(self) -> str:
        return (self.tmp / "serve.log").read_text()

    def run(self, pipeline: str = "flaky", status: RunStatus | None = None,
            timeout: float = 90) -> str:
        """Queue a run and wait for its record."""
        run_id = queue_remote_run(self.state, pipeline, {}, None, utc_now())
        store = self.store()

        def read():
            try:
                return store.read_run(run_id, pipeline=pipeline)
            except RepositoryError:
                return None

        record = wait_for(read, timeout=timeout, what=f"the record of {run_id}:\n{self.output()}")
        if status is not None:
            assert record.status is status, self.output()
        return run_id

    def store(self) -> ResultsStore:
        return ResultsStore(self.origin.bare, self.tmp / "reader-journal", utc_now)

    def deliveries(self) -> list[dict]:
        return (self.store().read_state("notifications") or {}).get("recent") or []

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except Exception:  # noqa: BLE001 - a hung daemon must not hang the suite
                self.proc.kill()
        self.json.stop()
        self.mail.stop()


@pytest.fixture
def setup(tmp_path, origin, runner_image, shared_cache):
    s = Setup(tmp_path, origin, shared_cache)
    yield s
    s.stop()


def assert_no_secret_anywhere(s: Setup, texts: list[str]) -> None:
    for text in texts:
        assert TOKEN not in text and PASSWORD not in text
    for word in (TOKEN, PASSWORD):
        found = subprocess.run(["git", "grep", "-I", "-l", word, "fastflow/results"],
                               cwd=s.origin.bare, capture_output=True, text=True)
        assert found.returncode == 1, f"{word} on the results branch: {found.stdout}"
        leaked = [p for p in s.state.rglob("*") if p.is_file() and "snapshots" not in p.parts
                  and "mirror.git" not in p.parts and word.encode() in p.read_bytes()]
        assert leaked == []


def test_failure_then_recovery_sends_exactly_two_messages_to_each_target(setup):
    s = setup
    s.push("site_url: https://ci.example.org/ff\n"
           "notifications:\n"
           "  - {secret: OPS_HOOK, name: ops, events: [failure, recovery], group_window: 0}\n"
           f"  - {{url: '{s.mail.url()}', name: mail, events: [failure, recovery], "
           "group_window: 0}\n",
           exit_code=1, secrets={"OPS_HOOK": s.json.url(f"hook/{TOKEN}")})
    s.start()
    failed = s.run(status=RunStatus.FAILED)
    s.run(status=RunStatus.FAILED)  # the same streak: no second failure message
    wait_for(lambda: len(s.json.received) == 1 and len(s.mail.messages) == 1, timeout=30,
             what=f"the failure message:\n{s.output()}")
    s.set_exit(0)
    recovered = s.run(status=RunStatus.SUCCEEDED)
    s.run(status=RunStatus.SUCCEEDED)
    wait_for(lambda: len(s.json.received) == 2 and len(s.mail.messages) == 2, timeout=30,
             what=f"the recovery message:\n{s.output()}")
    wait_for(lambda: len([d for d in s.deliveries() if d["outcome"] == "delivered"]) == 4,
             timeout=30, what="four deliveries recorded")
    (path, first), (_, second) = s.json.received
    assert path == f"/hook/{TOKEN}"
    assert first["title"] == "Fast-Flow: flaky: failed" and first["type"] == "failure"
    assert f"run {failed}" in first["message"]
    assert f"https://ci.example.org/ff/runs/flaky/{failed[:4]}/{failed[4:6]}/{failed}.html" \
        in first["message"]
    assert "connecting with ***" in first["message"] and "exit 1" in first["message"]
    assert second["title"] == "Fast-Flow: flaky: recovered" and second["type"] == "success"
    assert f"run {recovered}" in second["message"] and "after 2 failed runs" in second["message"]
    assert "Subject: Fast-Flow: flaky: failed" in s.mail.messages[0][2]
    assert s.mail.messages[1][1] == ["ops@example.org"]
    deliveries = s.deliveries()
    assert {d["target"]: d["to"] for d in deliveries}["ops"] == "secret OPS_HOOK"
    assert all(d["attempts"][-1]["outcome"] == "delivered" for d in deliveries)
    listed = run_git("ls-tree", "-r", "--name-only", "fastflow/results", "notifications/",
                     cwd=s.origin.bare).stdout.split()
    assert sorted(p.rsplit("/", 1)[1][:-5] for p in listed) == sorted(d["id"] for d in deliveries)
    overview = run_git("show", "fastflow/results:site/index.html", cwd=s.origin.bare).stdout
    assert "Notifications" in overview and "secret OPS_HOOK" in overview
    assert_no_secret_anywhere(s, [json.dumps([body for _, body in s.json.received])] +
                              [m[2] for m in s.mail.messages] + [s.output()])


def test_a_pipeline_flapping_within_the_group_window_sends_one_message(setup):
    s = setup
    s.push("notifications:\n"
           f"  - {{url: '{s.json.url()}', name: ops, events: [failure, recovery], "
           "group_window: 40}\n",
           exit_code=1)
    s.start()
    first = utc_now()
    s.run(status=RunStatus.FAILED)
    s.set_exit(0)
    s.run(status=RunStatus.SUCCEEDED)
    s.set_exit(1)
    s.run(status=RunStatus.FAILED)
    assert (utc_now() - first).total_seconds() < 40, "the runs took longer than the window"
    assert s.json.received == []  # within the window: still grouped
    wait_for(lambda: s.json.received, timeout=75, what=f"the grouped message:\n{s.output()}")
    [(_, message)] = s.json.received
    assert message["title"] == ("Fast-Flow: 3 events: flaky: failed; flaky: recovered; "
                                "flaky: failed")
    wait_for(lambda: [d["outcome"] for d in s.deliveries()] == ["delivered"], timeout=30,
             what="the delivery recorded")
    [delivery] = s.deliveries()
    assert [e["kind"] for e in delivery["events"]] == ["failure", "recovery", "failure"]


def test_a_receiver_that_is_down_is_retried_and_recorded_failed_while_runs_go_on(setup):
    s = setup
    down = f"json://127.0.0.1:{free_port()}/hook"
    s.push("notifications:\n"
           f"  - {{url: '{down}', name: down, events: [every_failure], group_window: 0}}\n",
           exit_code=1)
    s.start()
    started = utc_now()
    s.run(status=RunStatus.FAILED)
    s.run("steady", status=RunStatus.SUCCEEDED, timeout=40)  # delivery is off the run path
    wait_for(lambda: s.deliveries() and s.deliveries()[0]["attempts"]
             and s.deliveries()[0]["outcome"] == "pending", timeout=30,
             what=f"the first failed attempt recorded:\n{s.output()}")
    assert (utc_now() - started).total_seconds() < 60
    wait_for(lambda: s.deliveries()[0]["outcome"] == "failed", timeout=90,
             what=f"the delivery given up:\n{s.output()}")
    [delivery] = s.deliveries()
    assert [a["n"] for a in delivery["attempts"]] == [1, 2, 3, 4]
    assert all(a["outcome"] == "failed" and a["error"] for a in delivery["attempts"])
    assert delivery["to"].startswith(f"json://127.0.0.1:{down.split(':')[2].split('/')[0]}/hook")
    assert s.proc.poll() is None  # the daemon is up
    s.run("steady", status=RunStatus.SUCCEEDED, timeout=40)
    assert os.path.exists(s.state / "status.json")
