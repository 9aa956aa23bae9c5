"""`fastflow notify test` and `fastflow status --check` against real receivers on loopback, and
`scheduler_stale` from the next daemon start; exact output and exit codes."""
from __future__ import annotations

import json
import os
from datetime import datetime, timedelta, timezone

import pytest
from click.testing import CliRunner
from helpers import (
    JsonReceiver,
    MailReceiver,
    free_port,
    git,
    make_daemon,
    utc_now,
    wait_for,
)

from fastflow.cli import main
from fastflow.results.store import ResultsStore
from fastflow.secrets.age import X25519Identity
from fastflow.secrets.store import init_secrets, set_secret

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=timezone.utc)
TOKEN = "tok-Zq9-cli-never-shown"


@pytest.fixture
def receivers():
    hook, mail = JsonReceiver(), MailReceiver()
    yield hook, mail
    hook.stop()
    mail.stop()


def invoke(*args: str, env: dict | None = None):
    return CliRunner().invoke(main, list(args), env=env)


def test_notify_test_sends_to_every_target_and_says_what_happened(make_repo, receivers):
    hook, mail = receivers
    down = f"json://127.0.0.1:{free_port()}/x"
    identity = X25519Identity.generate()
    repo = make_repo({
        ".fastflow/config.yaml": "notifications:\n"
                                 f"  - {{url: '{hook.url()}', name: ops}}\n"
                                 "  - {secret: MAIL_URL, name: mail}\n",
        "pipelines/etl/main.py": "print(1)\n",
        "pipelines/etl/pipeline.json": json.dumps(
            {"notifications": [{"url": down, "name": "etl-down"}]}),
    })
    secrets = repo / ".fastflow" / "secrets.enc.yaml"
    init_secrets(secrets, [identity.recipient], NOW, repo)
    set_secret(secrets, "MAIL_URL", mail.url() + f"&user={TOKEN}", [identity], NOW)
    env = {"SOPS_AGE_KEY": identity.to_string(), "SOPS_AGE_KEY_FILE": "", "SOPS_AGE_KEY_CMD": ""}
    result = invoke("notify", "test", "--repo", str(repo), env=env)
    assert result.exit_code == 1, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith(f"ops (json://127.0.0.1:{hook.port}/hook?") and \
        lines[0].split("): ")[1].startswith("delivered in ")
    assert ", .fastflow/config.yaml): delivered in " in lines[0]
    assert lines[1].startswith("mail (secret MAIL_URL, .fastflow/config.yaml): delivered in ")
    assert lines[2].startswith(f"etl-down (json://127.0.0.1:{down.split(':')[2].split('/')[0]}/x")
    assert ", pipelines/etl/pipeline.json): failed: " in lines[2]
    assert len(lines) == 3 and TOKEN not in result.output
    [(path, body)] = hook.received
    assert (path, body["title"], body["type"]) == ("/hook", "Fast-Flow: test message", "info")
    assert 'target "ops" of .fastflow/config.yaml: if you read this, its messages arrive' in \
        body["message"]
    assert "Subject: Fast-Flow: test message" in mail.messages[0][2]

    only = invoke("notify", "test", "--repo", str(repo), "--target", "ops", "--json", env=env)
    assert only.exit_code == 0, only.output
    [outcome] = json.loads(only.output)
    assert (outcome["target"], outcome["delivered"], outcome["error"]) == ("ops", True, None)
    assert len(hook.received) == 2 and len(mail.messages) == 1


def test_notify_test_errors_name_the_fix(make_repo, tmp_path):
    repo = make_repo({".fastflow/config.yaml": "notifications:\n  - {url: 'json://h/x', name: ops}\n",
                      "pipelines/etl/main.py": "print(1)\n"})
    result = invoke("notify", "test", "--repo", str(repo), "--target", "slack")
    assert (result.exit_code, result.output) == (1, (
        'Error: no notification target is named "slack"; the targets are: ops (the name key of '
        "each, in .fastflow/config.yaml and the pipelines' pipeline.json)\n"))
    bare = make_repo({"pipelines/etl/main.py": "print(1)\n"}, tmp_path / "none")
    result = invoke("notify", "test", "--repo", str(bare))
    assert (result.exit_code, result.output) == (1, (
        '.fastflow/config.yaml: notifications: no target to send to; add one such as - {url: '
        '"json://hooks.example.org/fastflow"} (docs/notifications.md)\n').join(["Error: ", ""]))
    unknown = make_repo({".fastflow/config.yaml": "notifications:\n  - {url: 'nope://h/x'}\n"},
                        tmp_path / "unknown")
    result = invoke("notify", "test", "--repo", str(unknown))
    assert (result.exit_code, result.output) == (1, (
        'nope (nope://..., .fastflow/config.yaml): failed: the notification library knows no '
        'service for this URL (scheme "nope" or its form); see docs/notifications.md for the URL '
        "of each service\n"))


def write_heartbeat(repo, at: datetime, **extra) -> None:
    store = ResultsStore(repo, repo / ".git" / "ff-journal", utc_now)
    store.write_state("daemon", {"heartbeat": at.isoformat(), "pid": 4242, "source": str(repo),
                                 "branch": "main", "running": [], "queued": [],
                                 "heartbeat_interval_s": 300.0, **extra}, commit=True)


def test_status_check_fails_on_a_stale_heartbeat_and_sends_scheduler_stale_once(
        make_repo, receivers, tmp_path):
    hook, _ = receivers
    repo = make_repo({".fastflow/config.yaml": "notifications:\n"
                                               f"  - {{url: '{hook.url()}', name: ops}}\n",
                      "pipelines/etl/main.py": "print(1)\n"})
    git("init", "-q", "-b", "main", cwd=repo)
    state = tmp_path / "state"
    write_heartbeat(repo, utc_now() - timedelta(hours=2))
    args = ("status", "--repo", str(repo), "--state-dir", str(state), "--check")
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 1, result.output
    assert "daemon: stale" in result.stdout
    sent, failed = [line for line in result.stderr.splitlines() if not line.startswith("note:")]
    assert sent.startswith(f"scheduler_stale sent to ops (json://127.0.0.1:{hook.port}/hook?")
    assert sent.endswith("): delivered")
    assert failed.startswith(
        "check failed: the daemon's heartbeat is stale: the last one was 2 h ago (")
    [(_, body)] = hook.received
    assert body["title"] == "Fast-Flow: the scheduler is stale"
    again = CliRunner().invoke(main, list(args))
    assert again.exit_code == 1 and "scheduler_stale sent" not in again.stderr
    assert len(hook.received) == 1  # once per stale heartbeat

    write_heartbeat(repo, utc_now())
    alive = invoke(*args)
    assert alive.exit_code == 0, alive.output
    write_heartbeat(repo, utc_now(), stopped_at=utc_now().isoformat())
    stopped = CliRunner().invoke(main, list(args))
    assert stopped.exit_code == 1
    assert stopped.stderr.splitlines()[-1].startswith("check failed: the daemon stopped at ")


def test_the_next_daemon_start_sends_scheduler_stale(origin, receivers, tmp_path):
    hook, _ = receivers
    origin.push({".fastflow/config.yaml": "notifications:\n"
                                          f"  - {{url: '{hook.url()}', name: ops, "
                                          "group_window: 0}\n",
                 "pipelines/etl/main.py": "print(1)\n"}, "notify")
    write_heartbeat(origin.bare, utc_now() - timedelta(hours=1))
    daemon = make_daemon(origin.bare, tmp_path / "state", environ=dict(os.environ))
    daemon.start()
    try:
        daemon.tick(utc_now())
        wait_for(lambda: hook.received, timeout=20, what="the scheduler_stale message")
    finally:
        daemon.stop(grace=5)
    [(_, body)] = hook.received
    assert body["title"] == "Fast-Flow: the scheduler is stale"
    assert "(no clean stop): the daemon was down or hung" in body["message"]
    store = ResultsStore(origin.bare, tmp_path / "reader", utc_now)
    [delivery] = store.read_state("notifications")["recent"]
    assert (delivery["target"], delivery["outcome"]) == ("ops", "delivered")
    assert [e["kind"] for e in delivery["events"]] == ["scheduler_stale"]


def test_validate_warns_about_a_url_the_library_knows_no_service_for(make_repo):
    repo = make_repo({".fastflow/config.yaml": "notifications:\n"
                                               "  - {url: 'nope://hooks/x', name: bad}\n"
                                               "  - {url: 'json://hooks/x'}\n",
                      "pipelines/etl/main.py": "print(1)\n",
                      "pipelines/etl/pipeline.json": json.dumps(
                          {"notifications": [{"url": "slack://", "name": "etl-slack"}]})})
    result = invoke("validate", "--repo", str(repo))
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        'warning: .fastflow/config.yaml: notifications (name "bad").url: the notification '
        'library knows no service for this URL (scheme "nope" or its form); see '
        "docs/notifications.md for the URL of each service",
        'warning: pipelines/etl/pipeline.json: notifications (name "etl-slack").url: the '
        'notification library knows no service for this URL (scheme "slack" or its form); see '
        "docs/notifications.md for the URL of each service",
        "ok: the repository is valid (2 warnings)"]


def test_show_lists_a_pipelines_targets_without_their_urls(make_repo):
    repo = make_repo({".fastflow/config.yaml": "notifications:\n"
                                               "  - {url: 'json://hooks/x?token=s3cr3t', name: ops}\n",
                      "pipelines/etl/main.py": "print(1)\n",
                      "pipelines/etl/pipeline.json": json.dumps(
                          {"notifications": [{"secret": "ETL_HOOK", "events": ["stuck"]}]})})
    result = invoke("show", "etl", "--repo", str(repo), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["notifications"] == {
        "value": [{"name": "ops", "to": "json://...",
                   "events": ["failure", "recovery", "given_up", "scheduler_stale"],
                   "declared_in": ".fastflow/config.yaml"},
                  {"name": "ETL_HOOK", "to": "secret ETL_HOOK", "events": ["stuck"],
                   "declared_in": "pipelines/etl/pipeline.json"}],
        "source": "pipelines/etl/pipeline.json"}
    assert "s3cr3t" not in result.output


def test_a_daemon_start_judges_the_state_dirs_heartbeat_too(origin, receivers, tmp_path):
    # Down for 10 minutes: the branch's copy (every 5 min) is not stale yet, the state dir's
    # (every minute) is: the next start says so.
    hook, _ = receivers
    origin.push({".fastflow/config.yaml": "notifications:\n"
                                          f"  - {{url: '{hook.url()}', name: ops, "
                                          "group_window: 0}\n",
                 "pipelines/etl/main.py": "print(1)\n"}, "notify")
    write_heartbeat(origin.bare, utc_now() - timedelta(minutes=11))
    state = tmp_path / "state"
    state.mkdir()
    (state / "status.json").write_text(json.dumps({
        "heartbeat": (utc_now() - timedelta(minutes=10)).isoformat(), "pid": 1,
        "heartbeat_interval_s": 60.0}))
    daemon = make_daemon(origin.bare, state, environ=dict(os.environ))
    daemon.start()
    try:
        daemon.tick(utc_now())
        wait_for(lambda: hook.received, timeout=20, what="the scheduler_stale message")
    finally:
        daemon.stop(grace=5)
    [(_, body)] = hook.received
    assert body["title"] == "Fast-Flow: the scheduler is stale"


def test_status_counts_the_last_deliveries_and_names_the_newest_failed(make_repo):
    repo = make_repo({"pipelines/etl/main.py": "print(1)\n"})
    git("init", "-q", "-b", "main", cwd=repo)
    write_heartbeat(repo, utc_now())
    attempt = {"n": 1, "at": NOW.isoformat(), "outcome": "failed",
               "error": "A Connection error occurred\nsending JSON notification to ***."}
    store = ResultsStore(repo, repo / ".git" / "ff-journal", utc_now)
    store.write_state("notifications", {"recent": [
        {"id": "b", "target": "mail", "outcome": "delivered", "queued_at": NOW.isoformat()},
        {"id": "a", "target": "ops", "outcome": "failed", "queued_at": NOW.isoformat(),
         "attempts": [attempt]},
        {"id": "c", "target": "ops", "outcome": "delivered", "queued_at": NOW.isoformat()}]},
        commit=True)
    result = invoke("status", "--repo", str(repo))
    assert result.exit_code == 0, result.output
    assert ("notifications: the last 3: 2 delivered, 1 failed (the newest failed: ops, queued "
            "2026-11-23T09:00:00+00:00: A Connection error occurred sending JSON notification "
            "to ***.)") in result.output.splitlines()
    report = json.loads(invoke("status", "--repo", str(repo), "--json").output)
    assert report["notifications"] == {
        "recent": 3, "outcomes": {"delivered": 2, "failed": 1},
        "last_failed": {"id": "a", "target": "ops", "queued_at": NOW.isoformat(),
                        "error": attempt["error"]}}
