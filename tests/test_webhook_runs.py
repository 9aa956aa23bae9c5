"""What a webhook run gets (docs/webhooks.md, "What the run gets"): the `WebhookInput` travels
from the inbox request through the run journal to the executor; the run reads its payload and
headers, gets only the allowed env, and its payload is gone once it is recorded.

Until the HTTP intake queues them, the requests here are written the way it writes them:
`Inbox.post_run_request(..., webhook=WebhookInput(...))` with the body stored in
`statedir.webhook_payload_file`.
"""
from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import subprocess
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
from helpers import CA_BUNDLE, Origin, git, make_daemon, make_intake, utc_now, wait_for

from fastflow.daemon.inbox import Inbox
from fastflow.daemon.loop import Daemon, ServeOptions
from fastflow.daemon.runs import RunJournal, RunOrder
from fastflow.daemon.statedir import webhook_payload_dir, webhook_payload_file
from fastflow.daemon.webhooks.intake import Target
from fastflow.executors import choose_executor
from fastflow.model import Pipeline, PipelineType, RunConfig, RunStatus
from fastflow.record import RunRecord, Trigger, WebhookInput, request_run_id, run_stamp
from fastflow.run.env import RunContext, build_env, webhook_env

NOW = datetime(2026, 12, 1, 12, 0, 0, tzinfo=timezone.utc)
WEBHOOK = WebhookInput(
    delivery_id="72d3162e-cc78-11e3-81ab-4c9367dc0958", payload_file="/state/webhooks/payload/r",
    headers={"Content-Type": "application/json", "X-GitHub-Event": "push"},
    env={"SOURCE": "github"},
)


def test_a_webhook_request_round_trips_through_the_inbox(tmp_path: Path):
    inbox = Inbox(tmp_path)
    request_id = inbox.post_run_request("report", {}, None, NOW, webhook=WEBHOOK,
                                        request_id="20261201T120000Z-wh0123456789abcdef")
    assert request_id == "20261201T120000Z-wh0123456789abcdef"
    [message] = inbox.read()
    assert message.webhook == WEBHOOK
    assert message.request_id == request_id


def test_a_run_request_without_webhook_reads_as_before(tmp_path: Path):
    inbox = Inbox(tmp_path)
    inbox.post_run_request("report", {"A": "1"}, None, NOW)
    [name] = [p.name for p in inbox.path.iterdir()]
    assert "webhook" not in json.loads((inbox.path / name).read_text())
    [message] = inbox.read()
    assert message.webhook is None and message.env == {"A": "1"}


def test_a_malformed_webhook_field_sets_the_request_aside(tmp_path: Path):
    inbox = Inbox(tmp_path)
    inbox.post_run_request("report", {}, None, NOW,
                           webhook=WebhookInput(None, "/p", {"X": "1"}, {}))
    [path] = [p for p in inbox.path.iterdir() if p.is_file()]
    data = json.loads(path.read_text())
    data["webhook"]["env"] = {"A": 1}
    path.write_text(json.dumps(data))
    assert inbox.read() == []
    [bad] = (inbox.path / "bad").iterdir()
    assert bad.name == path.name


def order(**changes) -> RunOrder:
    values = dict(run_id="20261201T120000Z-report-wh01", pipeline="report", commit="c" * 40,
                  root_tree="a" * 40, tree="b" * 40, queued_at=NOW,
                  trigger=Trigger(kind="webhook", delivery_id=WEBHOOK.delivery_id),
                  webhook=WEBHOOK)
    return RunOrder(**{**values, **changes})


def test_a_webhook_order_round_trips_through_the_journal(tmp_path: Path):
    journal = RunJournal(tmp_path)
    journal.create(order())
    assert journal.orders() == [order()]


def test_a_journal_entry_written_before_webhooks_still_loads(tmp_path: Path):
    journal = RunJournal(tmp_path)
    old = {  # as daemon/runs.py wrote it before webhooks: no webhook, no trigger.delivery_id
        "run_id": "20261201T120000Z-report-1a2b3c4d", "pipeline": "report", "commit": "c" * 40,
        "root_tree": "a" * 40, "tree": "b" * 40, "queued_at": "2026-12-01T12:00:00+00:00",
        "trigger": {"kind": "manual", "schedule_id": None, "slot": None, "parent_run_id": None},
        "run_config_id": None, "env": {"A": "1"}, "started_at": None,
    }
    (journal.dir / "20261201T120000Z-report-1a2b3c4d.json").write_text(json.dumps(old))
    [loaded] = journal.orders()
    assert loaded.webhook is None and loaded.trigger == Trigger(kind="manual")
    assert loaded.env == {"A": "1"}
    assert not (journal.dir / "bad").exists()


def test_a_records_trigger_keeps_the_delivery_id_and_old_records_read_without_it():
    record = RunRecord(run_id="20261201T120000Z-report-wh01", pipeline="report",
                       status=RunStatus.SUCCEEDED,
                       trigger=Trigger(kind="webhook", delivery_id="d-1"))
    data = json.loads(json.dumps(record.to_json()))
    assert data["trigger"]["delivery_id"] == "d-1"
    assert "webhook" not in data and "payload" not in json.dumps(data)
    assert RunRecord.from_json(data) == record
    del data["trigger"]["delivery_id"]  # a record written before webhooks
    data["trigger"]["kind"] = "manual"
    assert RunRecord.from_json(data).trigger == Trigger(kind="manual")


def test_the_payload_of_a_run_is_a_file_named_by_its_run_id(tmp_path: Path):
    assert webhook_payload_dir(tmp_path) == tmp_path / "webhooks" / "payload"
    assert webhook_payload_file(tmp_path, "20261201T120000Z-report-wh01") == \
        tmp_path / "webhooks" / "payload" / "20261201T120000Z-report-wh01"


# --- the env of a webhook run -------------------------------------------------------------------

def hook_pipeline(tmp_path: Path, **fields) -> Pipeline:
    return Pipeline(name="hook", path=tmp_path, entry="main.py", type=PipelineType.SCRIPT,
                    metadata_file=tmp_path / "pipeline.json", requirements=None, **fields)


def test_webhook_env_is_above_the_run_configurations_default_env_and_below_secrets(tmp_path):
    pipeline = hook_pipeline(tmp_path, default_env={"A": "pipe", "B": "pipe", "C": "pipe"},
                             webhook_env=("B", "C"))
    rc = RunConfig(id="prod", default_env={"B": "rc", "C": "rc"})
    webhook = WebhookInput("d-1", "/p", {"X-GitHub-Event": "push"}, {"B": "hook", "C": "hook"})
    env = build_env(pipeline, rc, {}, {"C": "secret"},
                    RunContext("rid", "hook", 1, "webhook", "prod"), webhook)
    assert (env["A"], env["B"], env["C"]) == ("pipe", "hook", "secret")
    assert env["FASTFLOW_TRIGGER"] == "webhook"
    assert env["FASTFLOW_WEBHOOK_HEADERS"] == '{"X-GitHub-Event": "push"}'
    assert "FASTFLOW_WEBHOOK_PAYLOAD" not in env  # set by the executor, where it sees the file
    plain = build_env(pipeline, rc, {}, {}, RunContext("rid", "hook", 1, "manual"))
    assert "FASTFLOW_WEBHOOK_HEADERS" not in plain


def test_webhook_env_refuses_secrets_runner_and_fastflow_variables_and_says_why(tmp_path):
    pipeline = hook_pipeline(tmp_path, webhook_env=("SOURCE", "TOKEN"))
    webhook = WebhookInput(None, "/p", {}, {
        "SOURCE": "ci", "TOKEN": "mine", "LD_PRELOAD": "/x.so", "PYTHONPATH": "/x",
        "UV_INDEX_URL": "http://x", "HOME": "/x", "FASTFLOW_TRIGGER": "manual", "OTHER": "1"})
    allowed, refused = webhook_env(pipeline, webhook, {"TOKEN": "s3cret"})
    assert allowed == {"SOURCE": "ci"}
    runner = "it is set by the runner (PATH, HOME, PYTHON*, UV_*, LD_* and the like)"
    assert refused == [
        "webhook env: TOKEN refused: it would override a secret",
        f"webhook env: LD_PRELOAD refused: {runner}",
        f"webhook env: PYTHONPATH refused: {runner}",
        f"webhook env: UV_INDEX_URL refused: {runner}",
        f"webhook env: HOME refused: {runner}",
        "webhook env: FASTFLOW_TRIGGER refused: variables starting with FASTFLOW_ are set by "
        "Fast-Flow",
        "webhook env: OTHER refused: it is not in the webhook_env of pipeline 'hook'; add it "
        "there to allow it",
    ]


def test_webhook_env_refuses_values_an_environment_cannot_carry(tmp_path):
    pipeline = hook_pipeline(tmp_path, webhook_env=("SOURCE", "BIG", "OK"))
    webhook = WebhookInput(None, "/p", {}, {"SOURCE": "a\0b", "BIG": "x" * 131_073, "OK": "y"})
    allowed, refused = webhook_env(pipeline, webhook, {})
    assert allowed == {"OK": "y"}
    assert refused == [
        "webhook env: SOURCE refused: its value contains a NUL character, which environment "
        "values cannot hold",
        "webhook env: BIG refused: its value of 131,073 characters is above the maximum of "
        "131,072; send large data in the body, which the run reads from "
        "FASTFLOW_WEBHOOK_PAYLOAD",
    ]


# --- runs through the daemon --------------------------------------------------------------------

# The pipeline prints what it got, but never the payload itself: its marker must not reach the
# results branch.
READER = """\
import hashlib, json, os
path = os.environ["FASTFLOW_WEBHOOK_PAYLOAD"]
raw = open(path, "rb").read()
print("payload at", path)
print("payload sha256", hashlib.sha256(raw).hexdigest())
print("payload ref", json.loads(raw)["ref"])
print("headers", os.environ["FASTFLOW_WEBHOOK_HEADERS"])
print("trigger", os.environ["FASTFLOW_TRIGGER"])
for name in ("SOURCE", "NOT_ALLOWED", "API_REGION", "FASTFLOW_RUN_ID"):
    print("env", name, os.environ.get(name, "<unset>"))
print("PATH poisoned", os.environ.get("PATH") == "/evil")
try:
    open(path, "ab").close()
    print("payload writable")
except OSError as exc:
    print("payload not writable", type(exc).__name__)
for line in open("/proc/self/mounts"):
    if line.split()[1] == path:
        print("payload mount", line.split()[3].split(",")[0])
"""
HEADERS = {"Content-Type": "application/json", "User-Agent": "GitHub-Hookshot/abc",
           "X-GitHub-Event": "push", "X-GitHub-Delivery": "d-1"}
PIPELINE_JSON = json.dumps({"webhook_env": ["SOURCE", "API_REGION"],
                            "default_env": {"API_REGION": "eu", "SOURCE": "default"}})


def payload_body(marker: str) -> bytes:
    return json.dumps({"ref": "refs/heads/main", "note": marker}).encode()


def queue_webhook(state: Path, pipeline: str, body: bytes, env: dict[str, str],
                  delivery: str = "d-1", **kwargs) -> str:
    """Queue a webhook run the way the intake does: the body in its own file (mode 0600) named
    by the run id, then the fsynced inbox request with the WebhookInput; returns the run id."""
    now = utc_now()
    request_id = f"{run_stamp(now)}-{hashlib.sha256(delivery.encode()).hexdigest()[:16]}"
    run_id = request_run_id(pipeline, request_id)
    payload = webhook_payload_file(state, run_id)
    payload.parent.mkdir(parents=True, exist_ok=True)
    payload.write_bytes(body)
    payload.chmod(0o600)
    webhook = WebhookInput(delivery, str(payload), dict(HEADERS), env)
    Inbox(state).post_run_request(pipeline, {}, kwargs.get("run_config"), now, webhook=webhook,
                                  request_id=request_id)
    return run_id


def all_objects(repo: Path) -> bytes:
    """The content of every object of a repository (loose and packed), decompressed."""
    return subprocess.run(["git", "cat-file", "--batch-all-objects", "--batch"], cwd=repo,
                          capture_output=True, check=True).stdout


def run_webhook(daemon: Daemon, state: Path, marker: str, env: dict[str, str]):
    body = payload_body(marker)
    run_id = queue_webhook(state, "hook", body, env)
    daemon.tick(utc_now())
    assert daemon.dispatcher.wait_idle(240)
    record = wait_for(lambda: daemon.store.read_run(run_id, pipeline="hook"))
    return run_id, body, record, daemon.store.read_log(run_id, pipeline="hook")


REQUEST_ENV = {"SOURCE": "github", "NOT_ALLOWED": "x", "PATH": "/evil", "FASTFLOW_RUN_ID": "x"}


def check_run(run_id: str, body: bytes, record, log: str, payload_seen_at: str) -> None:
    assert record.status is RunStatus.SUCCEEDED, log
    assert record.trigger == Trigger(kind="webhook", delivery_id="d-1")
    assert f"payload at {payload_seen_at}\n" in log
    assert f"payload sha256 {hashlib.sha256(body).hexdigest()}" in log
    assert "payload ref refs/heads/main" in log
    assert f"headers {json.dumps(HEADERS, sort_keys=True)}" in log
    assert "trigger webhook" in log
    assert "env SOURCE github" in log  # allowed: over the pipeline's default_env
    assert "env API_REGION eu" in log  # allowed but not sent: the default stays
    assert "env NOT_ALLOWED <unset>" in log
    assert f"env FASTFLOW_RUN_ID {run_id}" in log
    assert "PATH poisoned False" in log
    for name, reason in (
            ("NOT_ALLOWED", "it is not in the webhook_env of pipeline 'hook'; add it there to "
                            "allow it"),
            ("PATH", "it is set by the runner (PATH, HOME, PYTHON*, UV_*, LD_* and the like)"),
            ("FASTFLOW_RUN_ID", "variables starting with FASTFLOW_ are set by Fast-Flow")):
        assert f"webhook env: {name} refused: {reason}" in log


def check_payload_gone(origin: Origin, state: Path, run_id: str, marker: str) -> None:
    assert not webhook_payload_file(state, run_id).exists()
    assert list(webhook_payload_dir(state).iterdir()) == []
    git("rev-parse", "--verify", "fastflow/results", cwd=origin.bare)  # the branch is there
    assert marker.encode() not in all_objects(origin.bare)
    assert marker.encode() not in all_objects(state / "mirror.git") \
        if (state / "mirror.git").exists() else True


@pytest.mark.slow
def test_a_local_webhook_run_reads_its_payload_and_headers_and_gets_only_allowed_env(
        origin, tmp_path):
    origin.push({"pipelines/hook/main.py": READER, "pipelines/hook/pipeline.json": PIPELINE_JSON})
    state = tmp_path / "state"
    daemon = make_daemon(origin.bare, state)
    daemon.start()
    marker = f"MARKER-{os.urandom(8).hex()}"
    try:
        run_id, body, record, log = run_webhook(daemon, state, marker, REQUEST_ENV)
    finally:
        daemon.stop(grace=30)
    check_run(run_id, body, record, log, str(webhook_payload_file(state, run_id)))
    assert "payload writable" in log  # on the host: the stored file itself (docs say so)
    assert "payload mount" not in log
    check_payload_gone(origin, state, run_id, marker)


@pytest.mark.slow
@pytest.mark.docker
def test_a_docker_webhook_run_reads_its_payload_from_a_read_only_mount(
        origin, tmp_path, runner_image, shared_cache):
    origin.push({".fastflow/config.yaml": f"ca_bundle: {CA_BUNDLE}\n",
                 "pipelines/hook/main.py": READER, "pipelines/hook/pipeline.json": PIPELINE_JSON})
    state = tmp_path / "state"
    environ = {**os.environ, "FASTFLOW_CACHE_DIR": str(shared_cache)}
    daemon = Daemon(ServeOptions(str(origin.bare), state), clock=utc_now, environ=environ,
                    executor_factory=lambda config: choose_executor(
                        config, local=False, environ=environ, clock=utc_now))
    daemon.start()
    marker = f"MARKER-{os.urandom(8).hex()}"
    try:
        run_id, body, record, log = run_webhook(daemon, state, marker, REQUEST_ENV)
    finally:
        daemon.stop(grace=30)
    check_run(run_id, body, record, log, "/run/fastflow/webhook/payload")
    assert "payload not writable PermissionError" in log
    assert "payload mount ro\n" in log  # a read-only bind mount, whatever the file's mode
    check_payload_gone(origin, state, run_id, marker)


@pytest.mark.slow
def test_a_refused_webhook_request_is_recorded_and_its_payload_removed(origin, tmp_path):
    origin.push({"pipelines/hook/main.py": READER,
                 "pipelines/hook/pipeline.json": json.dumps({"enabled": False})})
    state = tmp_path / "state"
    daemon = make_daemon(origin.bare, state)
    daemon.start()
    try:
        run_id = queue_webhook(state, "hook", payload_body("refused"), {})
        daemon.tick(utc_now())
        record = wait_for(lambda: daemon.store.read_run(run_id, pipeline="hook"))
    finally:
        daemon.stop(grace=30)
    assert (record.status, record.error.kind) == (RunStatus.FAILED, "refused")
    assert record.trigger == Trigger(kind="webhook", delivery_id="d-1")
    assert not webhook_payload_file(state, run_id).exists()


@pytest.mark.slow
def test_a_webhook_run_whose_payload_is_gone_fails_saying_so(origin, tmp_path):
    origin.push({"pipelines/hook/main.py": READER, "pipelines/hook/pipeline.json": PIPELINE_JSON})
    state = tmp_path / "state"
    daemon = make_daemon(origin.bare, state)
    daemon.start()
    try:
        run_id = queue_webhook(state, "hook", payload_body("gone"), {})
        webhook_payload_file(state, run_id).unlink()
        daemon.tick(utc_now())
        assert daemon.dispatcher.wait_idle(60)
        record = wait_for(lambda: daemon.store.read_run(run_id, pipeline="hook"))
    finally:
        daemon.stop(grace=30)
    assert (record.status, record.error.kind) == (RunStatus.FAILED, "webhook")
    assert record.error.message == (
        f"the payload file {webhook_payload_file(state, run_id)} of the webhook request is "
        "gone; the sender may deliver it again (a new delivery id starts a new run)")
    assert record.attempts == ()


@pytest.mark.slow
def test_the_daemon_start_sweeps_payloads_of_runs_already_recorded(origin, tmp_path, caplog):
    origin.push({"pipelines/hook/main.py": READER, "pipelines/hook/pipeline.json": PIPELINE_JSON})
    state = tmp_path / "state"
    daemon = make_daemon(origin.bare, state)
    daemon.start()
    try:
        body = payload_body("sweep")
        runs = [queue_webhook(state, "hook", body, {}, delivery=d) for d in ("d-1", "d-2")]
        daemon.tick(utc_now())
        assert daemon.dispatcher.wait_idle(120)
        for run_id in runs:
            wait_for(lambda r=run_id: daemon.store.read_run(r, pipeline="hook"))
    finally:
        daemon.stop(grace=30)
    left = webhook_payload_file(state, runs[0])  # as if the daemon died before removing it
    left.write_bytes(body)
    odd = webhook_payload_file(state, runs[1])
    odd.mkdir()  # cannot be unlinked: a warning, and the start goes on
    waiting = webhook_payload_file(state, "20261201T120000Z-hook-0123456789abcdef")
    waiting.write_bytes(body)  # its request not read yet: it stays
    again = make_daemon(origin.bare, state)
    again.start()
    again.stop(grace=30)
    assert not left.exists()
    assert waiting.exists() and odd.is_dir()
    assert f"run {runs[1]}: its webhook payload {odd} cannot be removed: " in caplog.text


@pytest.mark.slow
def test_a_request_through_the_http_intake_gives_its_run_the_body_headers_and_allowed_env(
        origin, tmp_path):
    """The whole way: POST to the real server, the daemon's loop, the run, the record."""
    key = "k-hook-e2e-51"
    origin.push({"pipelines/hook/main.py": READER, "pipelines/hook/pipeline.json": json.dumps(
        {"webhook_key": key, "webhook_env": ["SOURCE", "API_REGION"],
         "default_env": {"API_REGION": "eu", "SOURCE": "default"}})})
    state = tmp_path / "state"
    daemon = make_daemon(origin.bare, state, webhooks_listen="127.0.0.1:0")
    daemon.start()
    serving = threading.Thread(target=daemon.serve, name="serve")
    serving.start()
    marker = f"MARKER-{os.urandom(8).hex()}"
    body = json.dumps({"ref": "refs/heads/main", "note": marker,
                       "env": {"SOURCE": "github", "PATH": "/evil"}}).encode()
    sent = {"Content-Type": "application/json", "User-Agent": "GitHub-Hookshot/abc",
            "X-GitHub-Event": "push", "X-GitHub-Delivery": "d-1",
            "Authorization": "Bearer not-for-the-run", "X-Other": "not selected"}
    try:
        wait_for(lambda: daemon.webhooks is not None, 10, "the webhook server")
        host, port = daemon.webhooks.address
        conn = http.client.HTTPConnection(host, port, timeout=10)
        conn.request("POST", f"/api/webhooks/hook/{key}", body=body, headers=sent)
        answer = conn.getresponse()
        status, data = answer.status, json.loads(answer.read())
        conn.close()
        assert status == 202, data
        run_id = data["run_id"]
        record = wait_for(lambda: daemon.store.read_run(run_id, pipeline="hook")
                          if daemon.launcher.store_has(run_id, "hook") else None, 60,
                          f"the record of {run_id}")
        log = daemon.store.read_log(run_id, pipeline="hook")
    finally:
        daemon.request_stop()
        serving.join(30)
        daemon.stop(grace=20)
    assert record.status is RunStatus.SUCCEEDED, log
    assert record.trigger == Trigger(kind="webhook", delivery_id="d-1")
    assert f"payload at {webhook_payload_file(state, run_id)}\n" in log
    assert f"payload sha256 {hashlib.sha256(body).hexdigest()}" in log  # byte for byte
    selected = {k: v for k, v in sent.items() if k not in ("Authorization", "X-Other")}
    headers = json.loads(re.search(r"stdout \| headers (.*)\n", log).group(1))
    assert {k.lower(): v for k, v in headers.items()} == \
        {k.lower(): v for k, v in selected.items()}
    assert "env SOURCE github" in log and "env API_REGION eu" in log
    assert "PATH poisoned False" in log
    check_payload_gone(origin, state, run_id, marker)


def test_two_concurrent_deliveries_of_one_id_in_one_second_keep_the_runs_payload(tmp_path):
    """Both arrive before either is stored (a sender retrying at once): one is queued, the
    other waits for it and is a repeat with the same run id, and the run gets the payload."""
    intake = make_intake(tmp_path, clock=lambda: NOW)
    target = Target(hook_pipeline(tmp_path / "hook"), None)
    arrived = threading.Barrier(2)
    real_add = intake.requests.add

    def add(message: dict, body: bytes) -> None:
        arrived.wait(timeout=10)  # the second is in `accept` while the first is being stored
        time.sleep(0.2)
        real_add(message, body)

    intake.requests.add = add
    answers = []
    threads = [threading.Thread(target=lambda: answers.append(
        intake.accept(target, "d-1", payload_body("race"), {}, {}))) for _ in range(2)]
    threads[0].start()
    time.sleep(0.05)
    threads[1].start()
    arrived.wait(timeout=10)
    for thread in threads:
        thread.join(20)
    assert sorted(a.repeat for a in answers) == [False, True]
    assert answers[0].run_id == answers[1].run_id
    [request] = intake.inbox.read()
    assert request.webhook.payload_file == str(webhook_payload_file(tmp_path, answers[0].run_id))
    intake.requests.materialize(answers[0].run_id, request.webhook)  # as the run start does
    assert webhook_payload_file(tmp_path, answers[0].run_id).read_bytes() == payload_body("race")
