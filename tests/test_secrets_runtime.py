"""Secrets by name at both levels, through the real runner (`fastflow run --local`): the list form,
the object form (variable -> secret), a run configuration's `secrets` over the pipeline's, and a
run configuration's secret never reaching runs without it. Real SOPS file, real age keys, real
uv."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

from fastflow.config import default_repo_config
from fastflow.errors import SecretsError
from fastflow.model import Pipeline, PipelineType, RunConfig
from fastflow.secrets import age, store
from fastflow.secrets.runtime import requested_secrets, secrets_loader

NOW = datetime(2026, 12, 1, 23, 0, tzinfo=timezone.utc)
VALUES = {"DB_PASSWORD": "db-Zq9-pw", "ETL_API_KEY": "etl-Zq9-key",
          "PROD_API_KEY": "prod-Zq9-key", "PROD_BUCKET": "prod-Zq9-bucket"}

# Prints a fingerprint of each variable (masking would hide the value itself), then the value of
# API_KEY, which the log must show masked.
PRINTER = """import hashlib, os
for name in ("API_KEY", "DB_PASSWORD", "BUCKET"):
    value = os.environ.get(name)
    print(name, hashlib.sha256(value.encode()).hexdigest()[:12] if value is not None else "missing")
print("raw", os.environ["API_KEY"])
"""


def fingerprint(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:12]


@pytest.fixture()
def owner() -> age.X25519Identity:
    return age.X25519Identity.generate()


@pytest.fixture()
def repo(make_repo, owner) -> Path:
    repo = make_repo({
        "pipelines/etl/main.py": PRINTER,
        "pipelines/etl/pipeline.json": json.dumps({
            "secrets": {"API_KEY": "ETL_API_KEY", "DB_PASSWORD": "DB_PASSWORD"},
            "schedules": [
                {"id": "prod", "secrets": {"API_KEY": "PROD_API_KEY", "BUCKET": "PROD_BUCKET"}},
                {"id": "staging"},
            ],
        }, indent=2),
        "pipelines/listed/main.py": PRINTER.replace('os.environ["API_KEY"]', '"-"'),
        "pipelines/listed/pipeline.json": json.dumps({"secrets": ["DB_PASSWORD"]}),
    })
    path = repo / ".fastflow" / "secrets.enc.yaml"
    store.init_secrets(path, [owner.recipient], NOW, repo)
    for name, value in VALUES.items():
        store.set_secret(path, name, value, [owner], NOW)
    store.grant_secret(path, "DB_PASSWORD", ["etl", "listed"], [owner], NOW)
    for name in ("ETL_API_KEY", "PROD_API_KEY", "PROD_BUCKET"):
        store.grant_secret(path, name, ["etl"], [owner], NOW)
    return repo


def fastflow_run(repo: Path, owner, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "SOPS_AGE_KEY": owner.to_string(), "SOPS_AGE_KEY_FILE": "",
           "SOPS_AGE_KEY_CMD": ""}
    return subprocess.run([sys.executable, "-m", "fastflow", "run", *args, "--local", "--repo",
                           str(repo)], capture_output=True, text=True, env=env, timeout=300)


def printed(result: subprocess.CompletedProcess) -> dict[str, str]:
    assert result.returncode == 0, result.stderr
    return dict(line.split(" ", 1) for line in result.stdout.splitlines())


@pytest.mark.slow
def test_both_forms_and_the_run_configuration_level_through_the_runner(repo, owner):
    # Object form: API_KEY is secret ETL_API_KEY; no run configuration: no BUCKET.
    assert printed(fastflow_run(repo, owner, "etl")) == {
        "API_KEY": fingerprint(VALUES["ETL_API_KEY"]),
        "DB_PASSWORD": fingerprint(VALUES["DB_PASSWORD"]), "BUCKET": "missing", "raw": "***"}
    # The run configuration's secrets over the pipeline's: API_KEY replaced, BUCKET added.
    assert printed(fastflow_run(repo, owner, "etl", "--run-config", "prod")) == {
        "API_KEY": fingerprint(VALUES["PROD_API_KEY"]),
        "DB_PASSWORD": fingerprint(VALUES["DB_PASSWORD"]),
        "BUCKET": fingerprint(VALUES["PROD_BUCKET"]), "raw": "***"}
    # Another run configuration never gets prod's secrets.
    assert printed(fastflow_run(repo, owner, "etl", "--run-config", "staging"))["BUCKET"] == \
        "missing"
    # The list form: each secret under its own name.
    assert printed(fastflow_run(repo, owner, "listed")) == {
        "API_KEY": "missing", "DB_PASSWORD": fingerprint(VALUES["DB_PASSWORD"]),
        "BUCKET": "missing", "raw": "-"}


def pipeline(repo: Path, secrets: dict, run_configs: tuple[RunConfig, ...] = ()) -> Pipeline:
    return Pipeline(name="etl", path=repo / "pipelines/etl", entry="main.py",
                    type=PipelineType.SCRIPT, metadata_file=None, requirements=None,
                    secrets=secrets, run_configs=run_configs)


def test_requested_secrets_adds_the_run_configuration_over_the_pipeline(repo):
    etl = pipeline(repo, {"API_KEY": "ETL_API_KEY", "DB_PASSWORD": "DB_PASSWORD"},
                   (RunConfig("prod", secrets={"API_KEY": "PROD_API_KEY", "BUCKET": "B"}),))
    assert requested_secrets(etl) == {"API_KEY": "ETL_API_KEY", "DB_PASSWORD": "DB_PASSWORD"}
    assert requested_secrets(etl, "prod") == {"API_KEY": "PROD_API_KEY",
                                              "DB_PASSWORD": "DB_PASSWORD", "BUCKET": "B"}
    assert requested_secrets(pipeline(repo, {}), None) == {}
    assert secrets_loader(repo, default_repo_config(), pipeline(repo, {}), {}) is None
    # Only the run configuration asks: its runs load secrets, the others none.
    only = pipeline(repo, {}, (RunConfig("prod", secrets={"BUCKET": "PROD_BUCKET"}),))
    assert secrets_loader(repo, default_repo_config(), only, {}) is None
    assert secrets_loader(repo, default_repo_config(), only, {}, "prod") is not None


def test_errors_name_the_variable_when_it_differs_from_the_secret(repo, owner):
    etl = pipeline(repo, {"API_KEY": "NOPE", "TOKEN": "TOKEN"},
                   (RunConfig("prod", secrets={"BUCKET": "PROD_BUCKET", "KEY": "REPORT_KEY"}),))
    path = repo / ".fastflow" / "secrets.enc.yaml"
    store.set_secret(path, "REPORT_KEY", "r", [owner], NOW)
    environ = {"SOPS_AGE_KEY": owner.to_string()}
    load = secrets_loader(repo, default_repo_config(), etl, environ, "prod")
    with pytest.raises(SecretsError) as err:
        load()
    assert str(err.value) == (
        ".fastflow/secrets.enc.yaml: pipeline etl asks for secrets that do not exist: NOPE "
        "(asked for as API_KEY), TOKEN (create them with `fastflow secrets set NAME`); and is not "
        "granted REPORT_KEY (asked for as KEY) (the secret's owner grants it with `fastflow "
        "secrets grant NAME etl`)")


def test_the_loader_returns_values_by_variable(repo, owner):
    etl = pipeline(repo, {"API_KEY": "ETL_API_KEY", "ALSO_KEY": "ETL_API_KEY"},
                   (RunConfig("prod", secrets={"API_KEY": "PROD_API_KEY"}),))
    environ = {"SOPS_AGE_KEY": owner.to_string()}
    assert secrets_loader(repo, default_repo_config(), etl, environ)() == {
        "API_KEY": VALUES["ETL_API_KEY"], "ALSO_KEY": VALUES["ETL_API_KEY"]}
    assert secrets_loader(repo, default_repo_config(), etl, environ, "prod")() == {
        "API_KEY": VALUES["PROD_API_KEY"], "ALSO_KEY": VALUES["ETL_API_KEY"]}
