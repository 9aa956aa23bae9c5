"""pipeline.json's webhook fields (`webhook_secret`, `webhook_env`): parsing, `fastflow validate`
against a real SOPS secrets file, and the loader the webhook intake calls for the secret values."""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest
from click.testing import CliRunner

from fastflow.cli import main
from fastflow.config import default_repo_config
from fastflow.config.pipeline import parse_pipeline_metadata
from fastflow.deploy.workspace import open_workspace, validate_workspace
from fastflow.errors import SecretsError
from fastflow.secrets import age, store
from fastflow.secrets.runtime import requested_secrets, webhook_secrets

NOW = datetime(2026, 12, 1, 23, 0, tzinfo=timezone.utc)
FILE = "pipelines/hook/pipeline.json"


def parse(data: dict):
    return parse_pipeline_metadata(json.dumps(data), name="hook", file=FILE,
                                   config=default_repo_config())


def errors(data: dict) -> list[str]:
    return [str(p) for p in parse(data).errors]


def test_webhook_secret_is_a_name_or_a_list_of_names():
    assert parse({"webhook_secret": "GITHUB_HOOK"}).values["webhook_secret"] == ("GITHUB_HOOK",)
    assert parse({"webhook_secret": ["OLD", "NEW", "OLD"]}).values["webhook_secret"] == \
        ("OLD", "NEW")
    assert parse({}).values["webhook_secret"] == ()
    assert parse({"webhook_secret": None}).values["webhook_secret"] == ()
    assert parse({"webhook_secret": "GITHUB_HOOK"}).sources["webhook_secret"] == FILE


@pytest.mark.parametrize("value, message", [
    (7, 'webhook_secret: 7 is not a secret name or a list of names; write "GITHUB_HOOK" or '
        '["HOOK_OLD", "HOOK_NEW"]'),
    ("github-hook", "webhook_secret: \"github-hook\" is not a valid secret name; use letters, "
                    "digits and '_', not starting with a digit or FASTFLOW_"),
    (["OK", "FASTFLOW_X"], "webhook_secret: item 1: \"FASTFLOW_X\" is not a valid secret name; "
                           "use letters, digits and '_', not starting with a digit or FASTFLOW_"),
])
def test_a_bad_webhook_secret_names_the_field_and_the_fix(value, message):
    assert errors({"webhook_secret": value}) == [f"{FILE}: {message}"]


def test_webhook_env_is_a_list_of_variable_names():
    meta = parse({"webhook_env": ["DATE", "SOURCE"]})
    assert meta.values["webhook_env"] == ("DATE", "SOURCE")
    assert meta.errors == ()
    assert parse({}).values["webhook_env"] == ()


@pytest.mark.parametrize("value, message", [
    ("DATE", 'webhook_env: "DATE" is not a list; write ["a", "b"]'),
    (["1DATE"], "webhook_env: item 0: \"1DATE\" is not a valid environment variable name; use "
                "letters, digits and '_', not starting with a digit"),
    (["FASTFLOW_TRIGGER"], 'webhook_env: item 0: "FASTFLOW_TRIGGER" is reserved: FASTFLOW_* '
                           "variables are set by Fast-Flow"),
    (["DATE", "PATH"], 'webhook_env: item 1: "PATH" is set by the runner (PATH, HOME, PYTHON*, '
                       "UV_*, LD_* and the like); a webhook may not set it, remove it from the "
                       "list"),
    (["PYTHONPATH"], 'webhook_env: item 0: "PYTHONPATH" is set by the runner (PATH, HOME, '
                     "PYTHON*, UV_*, LD_* and the like); a webhook may not set it, remove it "
                     "from the list"),
    (["LD_PRELOAD"], 'webhook_env: item 0: "LD_PRELOAD" is set by the runner (PATH, HOME, '
                     "PYTHON*, UV_*, LD_* and the like); a webhook may not set it, remove it "
                     "from the list"),
    (["UV_INDEX_URL"], 'webhook_env: item 0: "UV_INDEX_URL" is set by the runner (PATH, HOME, '
                       "PYTHON*, UV_*, LD_* and the like); a webhook may not set it, remove it "
                       "from the list"),
])
def test_a_bad_webhook_env_names_the_field_and_the_fix(value, message):
    assert errors({"webhook_env": value}) == [f"{FILE}: {message}"]


def test_webhook_env_may_not_name_a_secret_variable_of_the_pipeline_or_a_run_configuration():
    data = {"secrets": {"API_KEY": "ETL_KEY"}, "webhook_env": ["API_KEY", "DATE", "BUCKET"],
            "schedules": [{"id": "prod", "secrets": ["BUCKET"]}]}
    assert errors(data) == [
        f'{FILE}: webhook_env: "API_KEY" is a secret of this pipeline (secrets); a webhook may '
        "not set it, remove it from the list",
        f'{FILE}: webhook_env: "BUCKET" is a secret of this pipeline (secrets); a webhook may '
        "not set it, remove it from the list",
    ]


def test_a_misspelled_webhook_field_warns_with_did_you_mean():
    warnings = [str(p) for p in parse({"webhook_secrets": "X"}).warnings]
    assert len(warnings) == 1 and 'did you mean "webhook_secret"' in warnings[0]


# -- validate and the loader, against a real SOPS file ------------------------------------------

@pytest.fixture()
def owner() -> age.X25519Identity:
    return age.X25519Identity.generate()


@pytest.fixture()
def repo(make_repo, owner) -> Path:
    repo = make_repo({
        "pipelines/hook/main.py": "print('hi')\n",
        "pipelines/hook/pipeline.json": json.dumps({"webhook_secret": ["HOOK_NEW", "HOOK_OLD"]}),
        "pipelines/other/main.py": "print('hi')\n",
    })
    path = repo / ".fastflow" / "secrets.enc.yaml"
    store.init_secrets(path, [owner.recipient], NOW, repo)
    store.set_secret(path, "HOOK_NEW", "new-Zq9-secret", [owner], NOW)
    store.set_secret(path, "HOOK_OLD", "whsec_b2xkLVpxOS1zZWNyZXQ=", [owner], NOW)
    store.grant_secret(path, "HOOK_NEW", ["hook"], [owner], NOW)
    store.grant_secret(path, "HOOK_OLD", ["hook"], [owner], NOW)
    return repo


def write_meta(repo: Path, name: str, data: dict) -> None:
    (repo / "pipelines" / name / "pipeline.json").write_text(json.dumps(data))


def test_validate_accepts_webhook_secrets_that_are_in_the_file_and_granted(repo):
    assert validate_workspace(repo) == []


def test_validate_names_a_webhook_secret_missing_from_the_file_or_not_granted(repo):
    write_meta(repo, "other", {"webhook_secret": ["HOOK_NEW", "HOOK_NOPE"]})
    assert [str(p) for p in validate_workspace(repo)] == [
        'pipelines/other/pipeline.json: webhook_secret: "HOOK_NEW" is not granted to pipeline '
        '"other" in .fastflow/secrets.enc.yaml (granted to: hook); grant it with `fastflow '
        "secrets grant HOOK_NEW other`",
        'pipelines/other/pipeline.json: webhook_secret: "HOOK_NOPE" is not in '
        ".fastflow/secrets.enc.yaml (it holds HOOK_NEW, HOOK_OLD); add it with `fastflow secrets "
        'set HOOK_NOPE` or fix the name; did you mean "HOOK_NEW"?',
    ]


def test_validate_names_a_missing_secrets_file(repo):
    (repo / ".fastflow" / "secrets.enc.yaml").unlink()
    assert [str(p) for p in validate_workspace(repo)] == [
        "pipelines/hook/pipeline.json: webhook_secret: asks for HOOK_NEW, HOOK_OLD, but "
        ".fastflow/secrets.enc.yaml does not exist; create it with `fastflow secrets init "
        "--recipient age1...` and `fastflow secrets set NAME`",
    ]


def test_webhook_secrets_decrypts_the_values_in_the_order_named(repo, owner):
    ws = open_workspace(repo)
    hook = ws.pipeline("hook")
    environ = {"SOPS_AGE_KEY": owner.to_string()}
    assert webhook_secrets(repo, ws.config, hook, environ) == (
        "new-Zq9-secret", "whsec_b2xkLVpxOS1zZWNyZXQ=")
    assert webhook_secrets(repo, ws.config, ws.pipeline("other"), environ) == ()
    # The webhook secrets are the intake's, never a run's.
    assert requested_secrets(hook) == {}


def test_webhook_secrets_refuses_what_is_not_granted(repo, owner):
    write_meta(repo, "other", {"webhook_secret": "HOOK_NEW"})
    ws = open_workspace(repo)
    with pytest.raises(SecretsError) as err:
        webhook_secrets(repo, ws.config, ws.pipeline("other"), {"SOPS_AGE_KEY": owner.to_string()})
    assert str(err.value) == (
        ".fastflow/secrets.enc.yaml: pipeline other is not granted HOOK_NEW (the secret's owner "
        "grants it with `fastflow secrets grant NAME other`)")


def test_webhook_secrets_without_the_file_says_how_to_make_one(repo, owner):
    (repo / ".fastflow" / "secrets.enc.yaml").unlink()
    ws = open_workspace(repo)
    with pytest.raises(SecretsError) as err:
        webhook_secrets(repo, ws.config, ws.pipeline("hook"), {"SOPS_AGE_KEY": owner.to_string()})
    assert str(err.value) == (
        ".fastflow/secrets.enc.yaml: does not exist, but pipeline 'hook' asks for secrets "
        "HOOK_NEW, HOOK_OLD; create it with `fastflow secrets init` and `fastflow secrets set "
        "NAME`")


def test_show_prints_the_webhook_fields_names_only(make_repo):
    repo = make_repo({"pipelines/hook/main.py": "print(1)\n",
                      "pipelines/hook/pipeline.json": json.dumps({
                          "webhook_key": "k-1", "webhook_secret": "GH_HOOK",
                          "webhook_env": ["DATE"]})})
    result = CliRunner().invoke(main, ["show", "hook", "--repo", str(repo), "--json"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert shown["webhook_secret"] == {"value": ["GH_HOOK"], "source": FILE}
    assert shown["webhook_env"] == {"value": ["DATE"], "source": FILE}
    assert shown["webhook_key"]["value"] == "***" and "k-1" not in result.stdout
