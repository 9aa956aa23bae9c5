"""Secrets end to end through the daemon: a pipeline granted a secret prints it; the results
branch (record, log, summary, site pages) and the daemon's state dir hold only `***`; a pipeline
that asks for a secret it is not granted fails before starting, saying which. Real repository,
real SOPS file (our writer, age recipients), real uv runs on the host executor."""
from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path

import pytest
from helpers import git, make_daemon, utc_now

from fastflow.model import RunStatus
from fastflow.record import Trigger
from fastflow.secrets.age import X25519Identity
from fastflow.secrets.store import grant_secret, init_secrets, set_secret

pytestmark = pytest.mark.slow

SECRET = "hunter2-Zq9-correct-horse"
PROD_SECRET = "prod-Zq9-battery-staple"
NOW = datetime(2026, 11, 23, 9, 0, tzinfo=timezone.utc)


@pytest.fixture
def setup(tmp_path, origin):
    identity = X25519Identity.generate()
    secrets = origin.work / ".fastflow" / "secrets.enc.yaml"
    init_secrets(secrets, [identity.recipient], NOW, origin.work)
    set_secret(secrets, "DB_PASSWORD", SECRET, [identity], NOW)
    grant_secret(secrets, "DB_PASSWORD", ["etl", "staged"], [identity], NOW)
    set_secret(secrets, "PROD_DB_PASSWORD", PROD_SECRET, [identity], NOW)
    grant_secret(secrets, "PROD_DB_PASSWORD", ["staged"], [identity], NOW)
    printer = ('import os; v = os.environ["DB_PASSWORD"]; print("password is", v); '
               'print("split", v[:5], flush=True); import sys; sys.stderr.write(v + "\\n")\n')
    origin.push({
        "pipelines/etl/main.py": printer,
        "pipelines/etl/pipeline.json": '{"secrets": ["DB_PASSWORD"]}',
        "pipelines/intruder/main.py": printer,
        "pipelines/intruder/pipeline.json": '{"secrets": ["DB_PASSWORD"]}',
        "pipelines/staged/main.py": printer,
        "pipelines/staged/pipeline.json": json.dumps({"secrets": ["DB_PASSWORD"], "schedules": [
            {"id": "prod", "secrets": {"DB_PASSWORD": "PROD_DB_PASSWORD"}}]}),
    }, "pipelines with secrets")
    environ = {**os.environ, "SOPS_AGE_KEY": identity.to_string(), "SOPS_AGE_KEY_FILE": "",
               "SOPS_AGE_KEY_CMD": ""}
    daemon = make_daemon(origin.bare, tmp_path / "state", environ=environ)
    daemon.start()
    yield origin, daemon, tmp_path / "state"
    daemon.stop(grace=30)


def test_secret_reaches_the_granted_pipeline_and_only_stars_reach_git(setup):
    user, daemon, state = setup
    ok = daemon.submit("etl", Trigger(kind="manual"), now=utc_now())
    refused = daemon.submit("intruder", Trigger(kind="manual"), now=utc_now())
    assert daemon.dispatcher.wait_idle(120)
    daemon.store.flush()

    record = daemon.store.read_run(ok, "etl")
    assert record.status is RunStatus.SUCCEEDED
    log = daemon.store.read_log(ok, "etl")
    assert "password is ***" in log and "stderr | ***" in log
    assert "split hunte" in log  # a prefix is not the secret; only exact values are masked

    denied = daemon.store.read_run(refused, "intruder")
    assert denied.status is RunStatus.FAILED and denied.attempts == ()
    # The file is named as in the repository, not as the daemon's snapshot of the commit.
    assert denied.error.message == (
        ".fastflow/secrets.enc.yaml: pipeline intruder is not granted DB_PASSWORD (the secret's "
        "owner grants it with `fastflow secrets grant NAME intruder`)")

    # Nothing on the results branch, in any blob of any commit, holds the value.
    blobs = git("--git-dir", str(user.bare), "log", "-p", "--all", "--format=%H", cwd=user.bare)
    assert SECRET not in blobs
    assert "password is ***" in blobs  # the log and the run page are there, masked
    # Nor anything the daemon keeps on disk.
    for path in Path(state).rglob("*"):
        if path.is_file() and "cache" not in path.parts:
            assert SECRET.encode() not in path.read_bytes(), path


def test_a_run_configuration_gets_its_secret_over_the_pipelines_and_it_is_masked(setup):
    user, daemon, state = setup
    prod = daemon.submit("staged", Trigger(kind="manual"), now=utc_now(), run_config_id="prod")
    plain = daemon.submit("staged", Trigger(kind="manual"), now=utc_now())
    assert daemon.dispatcher.wait_idle(120)
    daemon.store.flush()
    for run_id, split in ((prod, "split prod-"), (plain, "split hunte")):
        record = daemon.store.read_run(run_id, "staged")
        assert record.status is RunStatus.SUCCEEDED, record.error
        log = daemon.store.read_log(run_id, "staged")
        assert "password is ***" in log and "stderr | ***" in log and split in log
    blobs = git("--git-dir", str(user.bare), "log", "-p", "--all", "--format=%H", cwd=user.bare)
    assert SECRET not in blobs and PROD_SECRET not in blobs
