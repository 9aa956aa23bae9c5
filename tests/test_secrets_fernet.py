"""`fastflow secrets import-fernet`: Fast-Flow's `encrypted_env` (real Fernet tokens under a real
ENCRYPTION_KEY) into the SOPS secrets file, with grants, and pipeline.json rewritten to ask for
the secrets by name at the same level. Real files, real age keys, the real CLI."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography.fernet import Fernet

from fastflow.cli.secrets import secrets
from fastflow.config import check_repo_config
from fastflow.deploy.discovery import metadata_files
from fastflow.deploy.workspace import validate_workspace
from fastflow.model import Severity
from fastflow.secrets import age, store
from fastflow.secrets.fernet import apply_import, fernet_key, plan_import

KEY = Fernet.generate_key().decode()
OTHER_KEY = Fernet.generate_key().decode()  # a token made with it cannot be decrypted with KEY
NOW = datetime(2026, 12, 1, 23, 0, tzinfo=timezone.utc)


def token(value: str, key: str = KEY) -> str:
    return Fernet(key.encode()).encrypt(value.encode()).decode()


# The pipeline.json of Fast-Flow's documentation style: 2-space indent, inline lists and objects.
ETL = """{
  "description": "Loads the orders",
  "tags": ["etl", "nightly"],
  "default_env": { "LOG_LEVEL": "INFO" },
  "encrypted_env": {
    "API_KEY": "%s",
    "DB_PASSWORD": "%s"
  },
  "schedules": [
    {
      "id": "prod",
      "schedule_cron": "0 3 * * *",
      "default_env": { "ENVIRONMENT": "production" },
      "encrypted_env": {
        "API_KEY": "%s"
      }
    }
  ],
  "timeout": 600
}
"""


@pytest.fixture()
def owner() -> age.X25519Identity:
    return age.X25519Identity.generate()


@pytest.fixture()
def env(tmp_path: Path, owner) -> dict:
    key_file = tmp_path / "keys.txt"
    key_file.write_text(owner.to_string() + "\n")
    return {"HOME": str(tmp_path / "home"), "XDG_CONFIG_HOME": "", "SOPS_AGE_KEY": "",
            "SOPS_AGE_KEY_FILE": str(key_file), "SOPS_AGE_KEY_CMD": "", "SOPS_CONFIG": "",
            "ENCRYPTION_KEY": KEY}


@pytest.fixture()
def repo(make_repo, owner) -> Path:
    """Two pipelines: etl (both levels) and report, whose API_KEY differs from etl's."""
    repo = make_repo({
        "pipelines/etl/main.py": "print('etl')\n",
        "pipelines/etl/pipeline.json": ETL % (token("etl-api-key"), token("db-pw"),
                                              token("prod-api-key")),
        "pipelines/report/main.py": "print('report')\n",
        "pipelines/report/pipeline.json": json.dumps({
            "secrets": ["SMTP_PASSWORD"],
            "encrypted_env": {"API_KEY": token("report-api-key"), "DB_PASSWORD": token("db-pw")},
        }),
        "pipelines/plain/main.py": "print('no secrets')\n",
    })
    path = repo / ".fastflow" / "secrets.enc.yaml"
    store.init_secrets(path, [owner.recipient], NOW, repo)
    store.set_secret(path, "SMTP_PASSWORD", "smtp-pw", [owner], NOW)
    store.grant_secret(path, "SMTP_PASSWORD", ["report"], [owner], NOW)
    return repo


VALUES = ("etl-api-key", "db-pw", "prod-api-key", "report-api-key", "smtp-pw")


def run(args, env):
    return CliRunner().invoke(secrets, ["import-fernet", *map(str, args)], env=env)


def found(root: Path) -> list[tuple[str, Path]]:
    """The metadata files of `root` as `fastflow secrets import-fernet` gives them."""
    return metadata_files(root, check_repo_config(root)[0])


def snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


def assert_no_plaintext(root: Path, *outputs: str) -> None:
    for path, data in snapshot(root).items():
        for value in VALUES:
            assert value.encode() not in data, (path, value)
    for output in outputs:
        for value in VALUES:
            assert value not in output


def test_both_levels_and_a_clash_are_moved_into_the_secrets_file(repo, env, owner):
    result = run(["--repo", repo], env)
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        "Imported 5 value(s) into .fastflow/secrets.enc.yaml:\n"
        "  pipelines/etl/pipeline.json: encrypted_env.API_KEY -> API_KEY (new secret)\n"
        "  pipelines/etl/pipeline.json: encrypted_env.DB_PASSWORD -> DB_PASSWORD (new secret)\n"
        "  pipelines/etl/pipeline.json: schedules[0].encrypted_env.API_KEY -> ETL_PROD_API_KEY "
        "(new secret)\n"
        "  pipelines/report/pipeline.json: encrypted_env.API_KEY -> REPORT_API_KEY (new secret)\n"
        "  pipelines/report/pipeline.json: encrypted_env.DB_PASSWORD -> DB_PASSWORD (same value "
        "as secret DB_PASSWORD)\n"
        "Granted API_KEY to etl\n"
        "Granted DB_PASSWORD to etl, report\n"
        "Granted ETL_PROD_API_KEY to etl\n"
        "Granted REPORT_API_KEY to report\n"
        "Rewrote pipelines/etl/pipeline.json, pipelines/report/pipeline.json (encrypted_env -> "
        "secrets)\n"
        "Next: review the change with `git diff`, then commit it: git commit "
        ".fastflow/secrets.enc.yaml pipelines/etl/pipeline.json pipelines/report/pipeline.json\n")
    # Same place, same key order, same indentation; only encrypted_env -> secrets changed.
    assert (repo / "pipelines/etl/pipeline.json").read_text() == """{
  "description": "Loads the orders",
  "tags": ["etl", "nightly"],
  "default_env": { "LOG_LEVEL": "INFO" },
  "secrets": ["API_KEY", "DB_PASSWORD"],
  "schedules": [
    {
      "id": "prod",
      "schedule_cron": "0 3 * * *",
      "default_env": { "ENVIRONMENT": "production" },
      "secrets": {
        "API_KEY": "ETL_PROD_API_KEY"
      }
    }
  ],
  "timeout": 600
}
"""
    # A list that needs a renamed secret becomes the object form; the file stays on one line.
    assert (repo / "pipelines/report/pipeline.json").read_text() == (
        '{"secrets": {"SMTP_PASSWORD": "SMTP_PASSWORD", "API_KEY": "REPORT_API_KEY", '
        '"DB_PASSWORD": "DB_PASSWORD"}}')
    path = repo / ".fastflow" / "secrets.enc.yaml"
    values, grants = store.read_secrets(path, [owner])
    assert values == {"SMTP_PASSWORD": "smtp-pw", "API_KEY": "etl-api-key",
                      "DB_PASSWORD": "db-pw", "ETL_PROD_API_KEY": "prod-api-key",
                      "REPORT_API_KEY": "report-api-key"}
    assert grants == {"SMTP_PASSWORD": ("report",), "API_KEY": ("etl",),
                      "DB_PASSWORD": ("etl", "report"), "ETL_PROD_API_KEY": ("etl",),
                      "REPORT_API_KEY": ("report",)}
    assert_no_plaintext(repo, result.output)
    assert run(["--repo", repo], env).stdout == (
        "Nothing to import: no pipeline metadata file has encrypted_env values\n")


def test_a_name_holding_the_same_value_is_reused_a_different_one_is_not(repo, env, owner):
    path = repo / ".fastflow" / "secrets.enc.yaml"
    store.set_secret(path, "API_KEY", "someone-elses-key", [owner], NOW)
    store.set_secret(path, "DB_PASSWORD", "db-pw", [owner], NOW)
    plan = plan_import(repo, fernet_key(KEY), env, found(repo))
    assert [(a.entry.pipeline, a.entry.run_config, a.entry.variable, a.secret, a.new)
            for a in plan.assignments] == [
        ("etl", None, "API_KEY", "ETL_API_KEY", True),
        ("etl", None, "DB_PASSWORD", "DB_PASSWORD", False),
        ("etl", "prod", "API_KEY", "ETL_PROD_API_KEY", True),
        ("report", None, "API_KEY", "REPORT_API_KEY", True),
        ("report", None, "DB_PASSWORD", "DB_PASSWORD", False),
    ]
    assert plan.grants == (("ETL_API_KEY", ("etl",)), ("DB_PASSWORD", ("etl", "report")),
                           ("ETL_PROD_API_KEY", ("etl",)), ("REPORT_API_KEY", ("report",)))
    apply_import(plan, env, NOW)
    assert json.loads((repo / "pipelines/etl/pipeline.json").read_text())["secrets"] == {
        "API_KEY": "ETL_API_KEY", "DB_PASSWORD": "DB_PASSWORD"}
    values, _ = store.read_secrets(path, [owner])
    assert values["API_KEY"] == "someone-elses-key" and values["ETL_API_KEY"] == "etl-api-key"


def test_values_already_there_and_granted_leave_the_secrets_file_as_it_is(make_repo, env, owner):
    repo = make_repo({"pipelines/etl/pipeline.json": json.dumps(
        {"encrypted_env": {"API_KEY": token("etl-api-key")}})})
    path = repo / ".fastflow/secrets.enc.yaml"
    store.init_secrets(path, [owner.recipient], NOW, repo)
    store.set_secret(path, "API_KEY", "etl-api-key", [owner], NOW)
    store.grant_secret(path, "API_KEY", ["etl"], [owner], NOW)
    before = path.read_bytes()
    result = run(["--repo", repo], env)
    assert result.exit_code == 0, result.output
    assert result.stdout.endswith("Next: review the change with `git diff`, then commit it: "
                                  "git commit pipelines/etl/pipeline.json\n")
    assert path.read_bytes() == before
    assert (repo / "pipelines/etl/pipeline.json").read_text() == '{"secrets": ["API_KEY"]}'


def test_clash_names_are_upper_case_valid_secret_names(make_repo, env, owner):
    repo = make_repo({
        f"pipelines/{name}/pipeline.json": json.dumps({"encrypted_env": {"token": token(name)}})
        for name in ("a", "daily-etl.v2", "9lives", "fastflow")
    })
    path = repo / ".fastflow/secrets.enc.yaml"
    store.init_secrets(path, [owner.recipient], NOW, repo)
    store.set_secret(path, "token", "taken", [owner], NOW)
    store.set_secret(path, "A_TOKEN", "taken too", [owner], NOW)
    plan = plan_import(repo, fernet_key(KEY), env, found(repo))
    assert [(a.entry.pipeline, a.secret) for a in plan.assignments] == [
        ("9lives", "_9LIVES_TOKEN"), ("a", "A_TOKEN_2"), ("daily-etl.v2", "DAILY_ETL_V2_TOKEN"),
        ("fastflow", "_FASTFLOW_TOKEN")]


def test_undecryptable_values_are_listed_and_nothing_is_changed(repo, env):
    (repo / "pipelines/broken/main.py").parent.mkdir()
    (repo / "pipelines/broken/pipeline.json").write_text(json.dumps({
        "encrypted_env": {"TOKEN": token("x", OTHER_KEY), "CORRUPT": "gAAAAAB-not-a-token"},
        "schedules": [{"id": "nightly", "encrypted_env": {"PASS": token("y", OTHER_KEY)}}],
    }, indent=4))
    before = snapshot(repo)
    result = run(["--repo", repo], env)
    assert result.exit_code == 1
    reason = ("cannot be decrypted with this ENCRYPTION_KEY (made with another key, or a "
              "corrupt token)")
    assert result.stderr == (
        "Cannot import 3 value(s):\n"
        f"  pipelines/broken/pipeline.json: encrypted_env.TOKEN (TOKEN): {reason}\n"
        f"  pipelines/broken/pipeline.json: encrypted_env.CORRUPT (CORRUPT): {reason}\n"
        "  pipelines/broken/pipeline.json: schedules[0].encrypted_env.PASS (PASS): "
        f"{reason}\n"
        "Error: nothing was changed: 3 value(s) of encrypted_env cannot be imported (listed "
        "above); fix them, or import the others with --partial\n")
    assert result.stdout.startswith("Would import 5 value(s) into .fastflow/secrets.enc.yaml:\n")
    assert snapshot(repo) == before


def test_partial_imports_the_rest_and_leaves_the_undecryptable_in_place(repo, env, owner):
    broken = repo / "pipelines/etl/pipeline.json"
    broken.write_text(broken.read_text().replace(
        '"DB_PASSWORD": "', '"DB_PASSWORD": "' + token("z", OTHER_KEY) + '", "OLD": "'))
    result = run(["--repo", repo, "--partial"], env)
    assert result.exit_code == 0, result.output
    assert "  pipelines/etl/pipeline.json: encrypted_env.DB_PASSWORD (DB_PASSWORD): cannot be " \
           "decrypted with this ENCRYPTION_KEY" in result.stderr
    assert result.stderr.endswith("The values that cannot be imported stay in encrypted_env; "
                                  "their pipelines stay invalid until they are fixed.\n")
    text = broken.read_text()
    data = json.loads(text)
    assert list(data) == ["description", "tags", "default_env", "encrypted_env", "secrets",
                          "schedules", "timeout"]
    assert list(data["encrypted_env"]) == ["DB_PASSWORD"]
    assert data["secrets"] == ["API_KEY", "OLD"]
    assert '  "secrets": ["API_KEY", "OLD"],\n  "schedules": [' in text
    assert data["schedules"][0]["secrets"] == {"API_KEY": "ETL_PROD_API_KEY"}
    values, _ = store.read_secrets(repo / ".fastflow/secrets.enc.yaml", [owner])
    assert values["OLD"] == "db-pw" and "DB_PASSWORD" in values  # report's, same value


def test_dry_run_prints_the_plan_and_changes_nothing(repo, env):
    before = snapshot(repo)
    result = run(["--repo", repo, "--dry-run"], env)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(
        "Would import 5 value(s) into .fastflow/secrets.enc.yaml:\n"
        "  pipelines/etl/pipeline.json: encrypted_env.API_KEY -> API_KEY (new secret)\n")
    assert "Would grant DB_PASSWORD to etl, report\n" in result.stdout
    assert result.stdout.endswith(
        "Would rewrite pipelines/etl/pipeline.json, pipelines/report/pipeline.json "
        "(encrypted_env -> secrets)\nNothing was changed (--dry-run).\n")
    assert snapshot(repo) == before
    assert_no_plaintext(repo, result.output)


def test_a_new_secrets_file_gets_the_recipients_of_sops_yaml(make_repo, env, owner):
    repo = make_repo({"pipelines/etl/pipeline.json": json.dumps(
        {"encrypted_env": {"API_KEY": token("etl-api-key")}})})
    result = run(["--repo", repo], env)
    assert result.exit_code == 1
    assert result.stderr == (
        "Error: .fastflow/secrets.enc.yaml: does not exist and there is no .sops.yaml to create "
        "it from; create it with `fastflow secrets init --recipient age1...` (an identity comes "
        "from `fastflow secrets keygen`), then run the import again\n")
    (repo / ".sops.yaml").write_text("creation_rules:\n    - path_regex: "
                                     f"'secrets\\.enc\\.yaml$'\n      age: '{owner.recipient}'\n")
    result = run(["--repo", repo], {**env, "SOPS_AGE_KEY_FILE": ""})  # no identity needed
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("Imported 1 value(s) into .fastflow/secrets.enc.yaml (a new "
                                    "file):\n")
    path = repo / ".fastflow/secrets.enc.yaml"
    assert store.list_recipients(path) == [owner.recipient]
    assert store.read_secrets(path, [owner]) == ({"API_KEY": "etl-api-key"},
                                                 {"API_KEY": ("etl",)})
    assert_no_plaintext(repo, result.output)


def test_the_key_comes_from_the_environment_only(repo, env):
    result = run(["--repo", repo], {**env, "ENCRYPTION_KEY": ""})
    assert result.exit_code == 1
    assert result.stderr == (
        "Error: ENCRYPTION_KEY is not set; run `ENCRYPTION_KEY=... fastflow secrets "
        "import-fernet` with the key of the Fast-Flow server (from its .env); it is never taken "
        "as an argument\n")
    result = run(["--repo", repo, KEY], env)
    assert result.exit_code == 2
    result = run(["--repo", repo], {**env, "ENCRYPTION_KEY": "not-a-fernet-key-but-secret"})
    assert result.exit_code == 1
    assert result.stderr == (
        "Error: ENCRYPTION_KEY is not a valid Fernet key (32 bytes in url-safe base64: 44 "
        "characters ending in '='); set it to the ENCRYPTION_KEY of the Fast-Flow server, as its "
        ".env holds it\n")


def test_values_fast_flow_never_injected_are_listed_not_imported(make_repo, env, owner):
    repo = make_repo({"pipelines/etl/pipeline.json": json.dumps({
        "secrets": ["API_KEY"],
        "encrypted_env": {"API_KEY": token("a"), "FASTFLOW_X": token("b"), "E": token("")},
        "schedules": [{"encrypted_env": {"T": token("c")}}],
    })})
    store.init_secrets(repo / ".fastflow/secrets.enc.yaml", [owner.recipient], NOW, repo)
    plan = plan_import(repo, fernet_key(KEY), env, found(repo))
    assert plan.assignments == ()
    assert [str(s) for s in plan.skipped] == [
        "pipelines/etl/pipeline.json: encrypted_env.API_KEY (API_KEY): API_KEY is also in "
        "secrets, which Fast-Flow injects over encrypted_env (this value was never used); "
        "remove one of the two",
        "pipelines/etl/pipeline.json: encrypted_env.FASTFLOW_X (FASTFLOW_X): 'FASTFLOW_X' is "
        "not a valid environment variable name here: use letters, digits and _, not starting "
        "with a digit or FASTFLOW_",
        "pipelines/etl/pipeline.json: encrypted_env.E (E): decrypts to an empty value, which "
        "the secrets file cannot hold (SOPS leaves empty values unencrypted); move it to "
        "default_env",
        "pipelines/etl/pipeline.json: schedules[0].encrypted_env: schedules[0].id is missing: a "
        "run configuration needs an id to ask for secrets",
    ]


def test_a_file_that_is_not_json_is_listed(make_repo, env, owner):
    repo = make_repo({"pipelines/etl/pipeline.json": '{"encrypted_env": {"A": "gAAAA",}}'})
    store.init_secrets(repo / ".fastflow/secrets.enc.yaml", [owner.recipient], NOW, repo)
    (skipped,) = plan_import(repo, fernet_key(KEY), env, found(repo)).skipped
    assert str(skipped) == ("pipelines/etl/pipeline.json: is not valid JSON (Expecting property "
                            "name enclosed in double quotes: line 1 column 33 (char 32)); fix it "
                            "first")


def fast_flow_env(metadata: dict, run_config: str | None) -> dict[str, str]:
    """What the original Fast-Flow injected from encrypted_env (app/executor/core.py: the
    pipeline's values, then those of the run's schedules[] entry over them)."""
    fernet = Fernet(KEY.encode())
    levels = [metadata.get("encrypted_env", {})]
    levels += [s.get("encrypted_env", {}) for s in metadata.get("schedules", [])
               if run_config is not None and s.get("id") == run_config]
    return {k.strip(): fernet.decrypt(v.encode()).decode() for level in levels
            for k, v in level.items()}


@pytest.mark.slow
def test_the_migrated_repository_validates_and_runs_get_what_fast_flow_injected(repo, env):
    printer = ("import hashlib, os\nfor k in sorted(os.environ):\n"
               "    if k in ('API_KEY', 'DB_PASSWORD', 'SMTP_PASSWORD'):\n"
               "        print(k, hashlib.sha256(os.environ[k].encode()).hexdigest())\n")
    for name in ("etl", "report"):
        (repo / "pipelines" / name / "main.py").write_text(printer)
    before = {name: json.loads((repo / f"pipelines/{name}/pipeline.json").read_text())
              for name in ("etl", "report")}
    assert run(["--repo", repo], env).exit_code == 0
    assert [str(p) for p in validate_workspace(repo) if p.severity is Severity.ERROR] == []

    def injected(*args: str) -> dict[str, str]:
        result = subprocess.run([sys.executable, "-m", "fastflow", "run", *args, "--local",
                                 "--repo", str(repo)], capture_output=True, text=True,
                                env={**os.environ, **env}, timeout=300)
        assert result.returncode == 0, result.stderr
        return dict(line.split(" ") for line in result.stdout.splitlines())

    def digests(values: dict[str, str]) -> dict[str, str]:
        return {k: hashlib.sha256(v.encode()).hexdigest() for k, v in values.items()}

    assert injected("etl") == digests(fast_flow_env(before["etl"], None))
    assert injected("etl", "--run-config", "prod") == digests(fast_flow_env(before["etl"], "prod"))
    # report also keeps the secret it asked for before (Fast-Flow's database secret).
    assert injected("report") == digests({**fast_flow_env(before["report"], None),
                                          "SMTP_PASSWORD": "smtp-pw"})


def test_an_empty_encrypted_env_is_left_alone(make_repo, env, owner):
    repo = make_repo({"pipelines/etl/pipeline.json": json.dumps({
        "encrypted_env": None, "schedules": [{"id": "prod", "encrypted_env": {}}]})})
    store.init_secrets(repo / ".fastflow/secrets.enc.yaml", [owner.recipient], NOW, repo)
    result = run(["--repo", repo], env)
    assert (result.exit_code, result.output) == (
        0, "Nothing to import: no pipeline metadata file has encrypted_env values\n")


def test_a_metadata_file_that_cannot_be_read_is_listed(make_repo, env, owner):
    repo = make_repo({"pipelines/etl/main.py": "print(1)\n"})
    (repo / "pipelines/etl/pipeline.json").mkdir()  # a folder: reading it fails
    store.init_secrets(repo / ".fastflow/secrets.enc.yaml", [owner.recipient], NOW, repo)
    (skipped,) = plan_import(repo, fernet_key(KEY), env, found(repo)).skipped
    assert str(skipped) == "pipelines/etl/pipeline.json: cannot be read: Is a directory"


@pytest.mark.parametrize("text, field, reason", [
    ('{"encrypted_env": {"A": 42}}', "encrypted_env.A (A)", "is not a Fernet token (a string)"),
    ('{"encrypted_env": {"A": "%s"}}' % Fernet(KEY.encode()).encrypt(b"\xff\xfe").decode(),
     "encrypted_env.A (A)", "decrypts to bytes that are not UTF-8 text"),
    ('{"encrypted_env": ["A"]}', "encrypted_env",
     "encrypted_env is not an object of VARIABLE: token"),
    ('{"secrets": "A", "encrypted_env": {"B": "x"}}', "encrypted_env",
     "secrets is neither a list of names nor an object of VARIABLE: secret; fix it"),
    ('{"schedules": [{"id": "p", "secrets": [1], "encrypted_env": {"B": "x"}}]}',
     "schedules[0].encrypted_env",
     "schedules[0].secrets is neither a list of names nor an object of VARIABLE: secret; fix it"),
    ('{"encrypted_env": {"B": "x"}, "encrypted_env": {"B": "y"}}', "encrypted_env",
     "encrypted_env appears twice in the object; keep one"),
])
def test_every_reason_a_value_is_not_imported(make_repo, env, owner, text, field, reason):
    repo = make_repo({"pipelines/etl/pipeline.json": text})
    store.init_secrets(repo / ".fastflow/secrets.enc.yaml", [owner.recipient], NOW, repo)
    (skipped,) = plan_import(repo, fernet_key(KEY), env, found(repo)).skipped
    assert str(skipped) == f"pipelines/etl/pipeline.json: {field}: {reason}"
