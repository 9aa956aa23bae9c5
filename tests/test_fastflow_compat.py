"""A repository as a user of the original Fast-Flow (ttuhin03/fastflow) has it, end to end.

tests/fixtures/fastflow-template is laid out like Fast-Flow's pipeline template: pipeline folders
at the repository root, no `.fastflow/`, every pipeline.json value spelled as Fast-Flow documents
it (run configurations in `schedules[]`, list-form notebook `cells`, `encrypted_env` Fernet
tokens, `restart_interval` as cron). It is copied into a fresh git repository and taken through
the steps of docs/migrating-from-fastflow.md with the real CLI (`python -m fastflow`): validate
(only the `encrypted_env` errors, naming the import), list, `secrets import-fernet`, validate
again, `schedule list`; then pushed to a bare repository that a real `fastflow serve` with the
Docker executor (and its webhook intake) follows, where extract -> transform (prod) -> load, the
notebook's cell retry, the secrets at both levels, a fast retry, Fast-Flow's webhook URL and the
refusal of a disabled pipeline are checked on the results branch.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from helpers import Origin, require_docker, start_serve, utc_now, wait_for

from fastflow.errors import RepositoryError
from fastflow.model import RunStatus
from fastflow.results.store import ResultsStore

pytestmark = [pytest.mark.docker, pytest.mark.slow]

FIXTURE = Path(__file__).parent / "fixtures" / "fastflow-template"

# A TEST key, published here on purpose: the fixture's encrypted_env tokens were made with it
# (cryptography.fernet.Fernet.generate_key(), once). Never use it for anything real.
FERNET_TEST_KEY = "3LfYS93gjkxJxAHfgT01YQxVinG7LSMyauvviq-1Z-M="
# What the tokens decrypt to: what Fast-Flow would have injected.
PIPELINE_API_KEY = "pipeline-level-api-key"
PIPELINE_DB_PASSWORD = "pipeline-level-db-password"
PROD_API_KEY = "prod-api-key"

PIPELINES = ["disabled", "extract", "load", "long_runner", "notebook_cells", "retrying",
             "transform", "with_secret"]
IMPORT_HINT = ("Fast-Flow's Fernet-encrypted values are not read; move them into the secrets "
               "file with `ENCRYPTION_KEY=... fastflow secrets import-fernet` "
               "(docs/migrating-from-fastflow.md)")


def fastflow(*args: str, env: dict[str, str], cwd: Path | None = None,
             ) -> subprocess.CompletedProcess:
    """The real CLI as a user types it: `python -m fastflow ARGS` in a process of its own."""
    return subprocess.run([sys.executable, "-m", "fastflow", *map(str, args)], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def user_env(home: Path, **extra: str) -> dict[str, str]:
    """The user's environment: an own HOME, no age identity or SOPS settings of this machine."""
    env = {**os.environ, "HOME": str(home), "XDG_CONFIG_HOME": "", "SOPS_AGE_KEY": "",
           "SOPS_AGE_KEY_FILE": "", "SOPS_AGE_KEY_CMD": "", "SOPS_CONFIG": "",
           "ENCRYPTION_KEY": ""}
    env.update(extra)
    return env


def fingerprint(value: str) -> str:
    """As with_secret/main.py prints a secret: the run log never holds the value itself."""
    return hashlib.sha256(value.encode()).hexdigest()[:12]


def copy_template(work: Path) -> Path:
    shutil.copytree(FIXTURE, work, dirs_exist_ok=True)
    return work


@pytest.fixture
def fresh(tmp_path: Path) -> tuple[Origin, dict[str, str]]:
    """The template committed as it is, in a clone of a bare repository."""
    require_docker()  # validate asks the engine for the runner images (a warning without one)
    user = Origin(tmp_path)
    copy_template(user.work)
    user.push({}, "Fast-Flow pipeline template")
    return user, user_env(tmp_path / "home")


def import_secrets(work: Path, env: dict[str, str], key_file: Path) -> None:
    """The migration's secrets step: an age identity, the secrets file, then import-fernet."""
    keygen = fastflow("secrets", "keygen", "-o", key_file, env=env)
    assert keygen.returncode == 0, keygen.stderr
    recipient = keygen.stdout.strip().splitlines()[-1]
    assert recipient.startswith("age1"), keygen.stdout
    init = fastflow("secrets", "init", "--repo", work, "--recipient", recipient, env=env)
    assert init.returncode == 0, init.stderr
    imported = fastflow("secrets", "import-fernet", "--repo", work,
                        env={**env, "ENCRYPTION_KEY": FERNET_TEST_KEY,
                             "SOPS_AGE_KEY_FILE": str(key_file)})
    assert imported.returncode == 0, imported.stdout + imported.stderr
    for value in (PIPELINE_API_KEY, PIPELINE_DB_PASSWORD, PROD_API_KEY):
        assert value not in imported.stdout + imported.stderr


@pytest.fixture(scope="module")
def migrated(tmp_path_factory) -> tuple[Origin, dict[str, str]]:
    """The template after the migration steps, committed and pushed: what `serve` follows."""
    require_docker()
    root = tmp_path_factory.mktemp("migrated")
    user = Origin(root)
    copy_template(user.work)
    env = user_env(root / "home")
    key_file = root / "age-key.txt"
    import_secrets(user.work, env, key_file)
    user.push({}, "Fast-Flow pipeline template, secrets imported")
    return user, {**env, "SOPS_AGE_KEY_FILE": str(key_file)}


# --- before the migration -------------------------------------------------------------------------

def test_validate_reports_only_the_encrypted_env_errors_naming_the_import(fresh):
    user, env = fresh
    result = fastflow("validate", "--repo", user.work, env=env)
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout == ""  # no warning: everything but encrypted_env loads unchanged
    assert result.stderr.splitlines() == [
        f"error: with_secret/pipeline.json: encrypted_env: {IMPORT_HINT}",
        f'error: with_secret/pipeline.json: schedules[0] (id "prod").encrypted_env: {IMPORT_HINT}',
    ]
    assert "gAAAA" not in result.stderr  # the tokens are never echoed


def test_list_finds_every_pipeline_at_the_repository_root(fresh):
    user, env = fresh
    result = fastflow("list", "--repo", user.work, "--json", env=env)
    assert result.returncode == 0, result.stderr
    listed = json.loads(result.stdout)
    valid = {p["name"]: p for p in listed["pipelines"]}
    assert sorted([*valid, *(i["name"] for i in listed["invalid"])]) == PIPELINES
    assert [i["name"] for i in listed["invalid"]] == ["with_secret"]  # until import-fernet
    assert valid["notebook_cells"]["type"] == "notebook"  # "Notebook" as Fast-Flow accepts it
    assert valid["disabled"]["enabled"] is False
    assert all(not p["warnings"] for p in valid.values()), valid


def test_show_resolves_the_fast_flow_spellings(fresh):
    user, env = fresh

    def shown(name: str) -> dict:
        result = fastflow("show", name, "--repo", user.work, "--json", env=env)
        assert result.returncode == 0, result.stderr
        return {field: row["value"] for field, row in json.loads(result.stdout).items()}

    long_runner = shown("long_runner")
    assert {k: long_runner[k] for k in ("timeout", "restart_on_crash", "restart_cooldown",
                                        "restart_interval")} == {
        "timeout": 0, "restart_on_crash": True, "restart_cooldown": 120,
        "restart_interval": "0 3 * * *"}
    notebook = shown("notebook_cells")
    assert (notebook["type"], notebook["cells"]) == ("notebook", {
        "code:0": {"retry_attempts": 0, "retry_delay": 1.0},
        "code:1": {"retry_attempts": 2, "retry_delay": 1.0}})
    retrying = shown("retrying")
    assert (retrying["retry_attempts"], retrying["retry_strategy"]) == (
        1, {"type": "fixed_delay", "delay": 1})


# --- the migration ------------------------------------------------------------------------------

def test_after_import_fernet_validate_is_ok_and_no_token_or_value_is_left(migrated):
    user, env = migrated
    result = fastflow("validate", "--repo", user.work, env=env)
    assert (result.returncode, result.stderr) == (0, ""), result.stdout + result.stderr
    assert result.stdout == "ok: the repository is valid\n"
    metadata = json.loads((user.work / "with_secret" / "pipeline.json").read_text())
    assert "encrypted_env" not in metadata and "encrypted_env" not in metadata["schedules"][0]
    for path in user.work.rglob("*"):
        if path.is_file() and ".git" not in path.parts:
            text = path.read_bytes()
            assert b"gAAAA" not in text, path
            for value in (PIPELINE_API_KEY, PIPELINE_DB_PASSWORD, PROD_API_KEY):
                assert value.encode() not in text, path
    granted = fastflow("secrets", "list", "--repo", user.work, "--json", env=env)
    assert granted.returncode == 0, granted.stderr
    assert {tuple(s["pipelines"]) for s in json.loads(granted.stdout)["secrets"]} == {
        ("with_secret",)}


def next_daily(now: datetime, hour: int) -> datetime:
    today = now.replace(hour=hour, minute=0, second=0, microsecond=0)
    return today if today > now else today + timedelta(days=1)


def next_hourly(now: datetime) -> datetime:
    # interval slots are anchored to 1970-01-01T00:00Z (docs/schedules.md): whole UTC hours
    return now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)


def test_schedule_list_shows_the_run_configurations_with_their_next_times(migrated):
    user, env = migrated
    before = datetime.now(timezone.utc)
    result = fastflow("schedule", "list", "--repo", user.work, "--json", env=env)
    after = datetime.now(timezone.utc)
    assert result.returncode == 0, result.stderr
    found = {s["id"]: s for s in json.loads(result.stdout)["schedules"]}
    assert sorted(found) == ["transform-prod", "transform-staging"]

    def utc(moment: datetime) -> str:
        return moment.isoformat().replace("+00:00", "Z")

    prod, staging = found["transform-prod"], found["transform-staging"]
    assert (prod["pipeline"], prod["timezone"], prod["enabled"]) == ("transform", "UTC", True)
    assert prod["next"]["at_utc"] in {utc(next_daily(before, 10)), utc(next_daily(after, 10))}
    assert staging["next"]["at_utc"] in {utc(next_hourly(before)), utc(next_hourly(after))}


# --- through fastflow serve with Docker ---------------------------------------------------------

@pytest.fixture(scope="module")
def served(migrated, runner_image, shared_cache, tmp_path_factory):
    """`fastflow serve` (Docker executor) following the migrated repository."""
    user, env = migrated
    root = tmp_path_factory.mktemp("served")
    state = root / "state"
    log = root / "serve.log"
    proc = start_serve(user.bare, state, log, "--poll-interval", "1", "--webhooks", "127.0.0.1:0",
                       env={**env, "FASTFLOW_CACHE_DIR": str(shared_cache)})
    deployment = state / "deployment.json"
    wait_for(lambda: deployment.exists() and "extract" in deployment.read_text(), timeout=90,
             what=f"the first deployment:\n{log.read_text()}")
    listening = wait_for(lambda: re.search(r"webhooks: listening on (http://\S+)", log.read_text()),
                         timeout=30, what=f"the webhook intake:\n{log.read_text()}")
    store = ResultsStore(user.bare, root / "reader-journal", utc_now)
    yield user, env, state, store, log, listening.group(1)
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()


def queue(served, name: str, *args: str) -> str:
    user, env, state, _, _, _ = served
    result = fastflow("run", name, "--remote", "--state-dir", state, *args, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.split()[1]  # "queued <run id> on the daemon of <state>"


def child_of(served, pipeline: str, parent_run_id: str, timeout: float = 120.0):
    """The recorded run of `pipeline` that run `parent_run_id` started (a downstream run, whose
    id the test does not know; transform's own schedules may add runs of it meanwhile)."""
    _, _, _, store, log, _ = served

    def find():
        try:
            runs = store.list_runs(pipeline)
        except RepositoryError:
            return None
        return next((r for r in runs if r.trigger.parent_run_id == parent_run_id), None)

    return wait_for(find, timeout=timeout, interval=0.5,
                    what=f"the run of {pipeline} {parent_run_id} started:\n{log.read_text()[-4000:]}")


def record_of(served, pipeline: str, run_id: str, timeout: float = 120.0):
    """The record of run `run_id` of `pipeline` once it is on the results branch."""
    _, _, _, store, log, _ = served

    def read():
        try:
            return store.read_run(run_id, pipeline)
        except RepositoryError:
            return None

    return wait_for(read, timeout=timeout, interval=0.5,
                    what=f"the record of {run_id}:\n{log.read_text()[-4000:]}")


def test_extract_triggers_transform_with_prod_which_triggers_load(served):
    store = served[3]
    extract_id = queue(served, "extract")
    extract = record_of(served, "extract", extract_id)
    assert extract.status is RunStatus.SUCCEEDED
    transform = child_of(served, "transform", extract_id)
    assert transform.status is RunStatus.SUCCEEDED, store.read_log(transform.run_id, "transform")
    assert transform.run_config == "prod"
    assert (transform.trigger.kind, transform.trigger.parent_run_id) == ("downstream", extract_id)
    log = store.read_log(transform.run_id, "transform")
    assert "transform: ENVIRONMENT=production DRY_RUN=false LOG_LEVEL=INFO" in log
    load = child_of(served, "load", transform.run_id)
    assert load.status is RunStatus.SUCCEEDED
    assert (load.trigger.kind, load.trigger.parent_run_id) == ("downstream", transform.run_id)
    assert load.run_config is None
    assert "load: done" in store.read_log(load.run_id, "load")
    # each parent's record names the child it started
    assert [(d["pipeline"], d["run_config_id"], d["run_id"]) for d in extract.downstream] == [
        ("transform", "prod", transform.run_id)]
    assert [(d["pipeline"], d["run_id"]) for d in transform.downstream] == [
        ("load", load.run_id)]


def test_the_notebooks_failing_cell_is_retried_and_the_run_succeeds(served):
    store = served[3]
    run_id = queue(served, "notebook_cells")
    record = record_of(served, "notebook_cells", run_id)
    log = store.read_log(run_id, "notebook_cells")
    assert record.status is RunStatus.SUCCEEDED, log
    assert len(record.attempts) == 1  # the cell was retried, not the run
    assert "ConnectionError: service not ready yet (first try)" in log
    # cells[1] (the second code cell, at position 2 after the markdown cell): 2 retries, 1 s
    assert "[fastflow] cell 2 failed (attempt 1 of 3); retrying in 1s" in log
    assert log.index("service not ready yet") < log.index("fetch ok on retry")
    assert "notebook finished" in log


def test_the_pipeline_level_secrets_arrive_in_a_run_without_run_configuration(served):
    store = served[3]
    run_id = queue(served, "with_secret")
    record = record_of(served, "with_secret", run_id)
    log = store.read_log(run_id, "with_secret")
    assert (record.status, record.run_config) == (RunStatus.SUCCEEDED, None), log
    assert (f"with_secret: run config -, API_KEY {fingerprint(PIPELINE_API_KEY)}, "
            f"DB_PASSWORD {fingerprint(PIPELINE_DB_PASSWORD)}") in log


def test_a_run_configurations_secret_is_over_the_pipelines_as_fast_flow_merged_them(served):
    store = served[3]
    run_id = queue(served, "with_secret", "--run-config", "prod")
    record = record_of(served, "with_secret", run_id)
    log = store.read_log(run_id, "with_secret")
    assert (record.status, record.run_config) == (RunStatus.SUCCEEDED, "prod"), log
    # encrypted_env of schedules[0] over the pipeline's: its API_KEY, the pipeline's DB_PASSWORD
    assert (f"with_secret: run config prod, API_KEY {fingerprint(PROD_API_KEY)}, "
            f"DB_PASSWORD {fingerprint(PIPELINE_DB_PASSWORD)}") in log


def test_a_short_retry_strategy_retries_at_once(served):
    store = served[3]
    run_id = queue(served, "retrying")
    record = record_of(served, "retrying", run_id)
    assert record.status is RunStatus.SUCCEEDED, store.read_log(run_id, "retrying")
    assert [(a.n, a.status) for a in record.attempts] == [(1, RunStatus.FAILED),
                                                          (2, RunStatus.SUCCEEDED)]
    assert record.attempts[1].wait_before_s == 1.0


def test_a_disabled_pipeline_is_refused_by_run_remote(served):
    user, env, state, store, _, _ = served
    result = fastflow("run", "disabled", "--remote", "--state-dir", state, env=env)
    assert result.returncode == 1
    assert result.stderr == (
        f"Error: {state}: pipeline 'disabled' is disabled (\"enabled\": false in its "
        "pipeline.json); enable it and push, or run it here with `fastflow run disabled`\n")
    assert store.list_runs("disabled") == []


def post(url: str) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=b"{}", method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as refused:
        return refused.code, json.loads(refused.read())


def test_fast_flows_webhook_url_starts_the_run_configuration_of_its_key(served):
    store, intake = served[3], served[5]
    assert post(f"{intake}/api/webhooks/transform/wrong-key") == (404, {"error": "not found"})
    status, body = post(f"{intake}/api/webhooks/transform/staging-hook-7c1f3a9e")
    assert status == 202, body
    record = record_of(served, "transform", body["run_id"])
    log = store.read_log(record.run_id, "transform")
    assert (record.status, record.run_config, record.trigger.kind) == (
        RunStatus.SUCCEEDED, "staging", "webhook"), log
    assert "transform: ENVIRONMENT=staging DRY_RUN=true LOG_LEVEL=INFO" in log
