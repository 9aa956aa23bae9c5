"""deploy.deployment: a commit deployed from its snapshot reaches the verdicts `fastflow validate`
reaches on the working tree, from the same code (issue 12: symlinks leaving the repository).

Real git (a repository committed with the git CLI), real snapshots in tmp_path.
"""
from __future__ import annotations

import json
import shutil
from datetime import datetime, timezone
from pathlib import Path

import pytest
from helpers import git, make_daemon, utc_now, wait_for, write_files

from fastflow import repo as g
from fastflow.deploy.deployment import deploy_commit
from fastflow.deploy.workspace import open_workspace, validate_workspace
from fastflow.model import RunStatus
from fastflow.secrets import age, store

MAIN = "print('hi')\n"
NOW = datetime(2026, 11, 22, 12, 0, tzinfo=timezone.utc)


def commit_all(work: Path, message: str) -> str:
    git("add", "-A", cwd=work)
    git("commit", "-qm", message, cwd=work)
    return git("rev-parse", "HEAD", cwd=work)


@pytest.fixture
def work(tmp_path: Path) -> Path:
    root = tmp_path / "work"
    root.mkdir()
    git("init", "-q", "-b", "main", cwd=root)
    return root


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    return write_files(tmp_path / "outside", {
        "main.py": MAIN, "pipeline.json": '{"timeout": 5}', "requirements.txt": "six\n",
        "config.yaml": "max_concurrent_runs: 1\n", "schedules.yaml": "schedules: []\n",
    }).resolve()


def test_linked_files_make_the_pipeline_invalid_in_validate_and_in_the_daemon(work, outside,
                                                                             tmp_path):
    """Was: the snapshot skipped the links, so the pipeline with a linked main.py vanished, the
    one with a linked pipeline.json ran with defaults and the one with a linked
    requirements.txt ran without requirements; a link to itself was "does not exist"."""
    write_files(work, {"pipelines/good/main.py": MAIN, "pipelines/meta/main.py": MAIN,
                       "pipelines/reqs/main.py": MAIN, "pipelines/code/pipeline.json": "{}"})
    (work / "pipelines/code/main.py").symlink_to(outside / "main.py")
    (work / "pipelines/meta/pipeline.json").symlink_to(outside / "pipeline.json")
    (work / "pipelines/reqs/requirements.txt").symlink_to("../../../outside/requirements.txt")
    (work / "pipelines/loop").mkdir()
    (work / "pipelines/loop/main.py").symlink_to("main.py")
    sha = commit_all(work, "links")
    copy = "outside the repository; copy the file into the repository instead"
    expected = {
        "code": [f"pipelines/code/main.py: is a symlink to {outside}/main.py, {copy}"],
        "loop": ["pipelines/loop/main.py: is a symlink loop (main.py); point it into the "
                 "repository or remove it"],
        "meta": [f"pipelines/meta/pipeline.json: is a symlink to {outside}/pipeline.json, {copy}"],
        "reqs": ["pipelines/reqs/requirements.txt: is a symlink to "
                 f"../../../outside/requirements.txt, {copy}"],
    }
    assert sorted(str(p) for p in validate_workspace(work)) == sorted(
        m for ms in expected.values() for m in ms)
    deployment = deploy_commit(g.open_repo(work), sha, tmp_path / "snapshots", None)
    assert list(deployment.active) == ["good"]
    assert {n: [str(p) for p in i.problems] for n, i in deployment.invalid.items()} == expected


def test_a_linked_config_yaml_is_an_invalid_configuration_not_the_defaults(work, outside,
                                                                          tmp_path):
    write_files(work, {"pipelines/good/main.py": MAIN,
                       ".fastflow/config.yaml": "max_concurrent_runs: 3\n"})
    first = commit_all(work, "config")
    (work / ".fastflow/config.yaml").unlink()
    (work / ".fastflow/config.yaml").symlink_to(outside / "config.yaml")
    second = commit_all(work, "linked config")
    message = (f".fastflow/config.yaml: is a symlink to {outside}/config.yaml, outside the "
               "repository; copy the file into the repository instead")
    assert [str(p) for p in validate_workspace(work)] == [message]
    repository, snapshots = g.open_repo(work), tmp_path / "snapshots"
    fresh = deploy_commit(repository, second, snapshots, None)
    assert fresh.config is None and [str(p) for p in fresh.errors] == [message]
    kept = deploy_commit(repository, second, snapshots, deploy_commit(repository, first,
                                                                      snapshots, None))
    assert kept.config.max_concurrent_runs == 3 and list(kept.active) == ["good"]
    assert [str(p) for p in kept.errors] == [
        f"{message} (the previous valid configuration stays active)"]


def test_a_linked_schedules_yaml_is_never_read_and_the_last_valid_schedules_stay(work, outside,
                                                                                 tmp_path):
    """Was: the sync raised, so nothing of that commit was deployed; now the verdict is
    validate's, and the commit's other changes are deployed with the last valid schedules."""
    write_files(work, {"pipelines/good/main.py": MAIN,
                       ".fastflow/schedules.yaml": "schedules:\n  - pipeline: good\n    interval: 1h\n"})
    first = commit_all(work, "schedules")
    (work / ".fastflow/schedules.yaml").unlink()
    (work / ".fastflow/schedules.yaml").symlink_to(outside / "schedules.yaml")
    write_files(work, {"pipelines/added/main.py": MAIN})
    second = commit_all(work, "linked schedules")
    message = (f".fastflow/schedules.yaml: is a symlink to {outside}/schedules.yaml, outside the "
               "repository; copy the file into the repository instead")
    assert [str(p) for p in validate_workspace(work)] == [message]
    repository, snapshots = g.open_repo(work), tmp_path / "snapshots"
    fresh = deploy_commit(repository, second, snapshots, None)
    assert [str(p) for p in fresh.errors] == [message] and fresh.schedules == ()
    kept = deploy_commit(repository, second, snapshots, deploy_commit(repository, first,
                                                                      snapshots, None))
    assert sorted(kept.active) == ["added", "good"]
    assert [s.id for s in kept.schedules] == ["good"]
    assert [str(p) for p in kept.errors] == [f"{message} (the last valid schedules stay active)"]


# --- pipelines at the root (the original Fast-Flow's template), through the daemon's deployment --

TEMPLATE = Path(__file__).parent / "fixtures" / "fastflow-template"
TEMPLATE_PIPELINES = sorted(p.name for p in TEMPLATE.iterdir() if p.is_dir())


def test_a_repository_laid_out_like_fastflows_template_deploys_from_its_root(work, tmp_path):
    """No config.yaml, no pipelines/: the daemon finds the pipelines where validate does, runs
    each from its own folder's tree, and change detection maps root paths to those pipelines."""
    shutil.copytree(TEMPLATE, work, dirs_exist_ok=True)
    write_files(work, {"docs/index.md": "# docs\n", ".github/workflows/ci.yml": "on: push\n"})
    first = commit_all(work, "template")
    workspace = open_workspace(work)
    assert workspace.discovery.names == TEMPLATE_PIPELINES
    repository, snapshots = g.open_repo(work), tmp_path / "snapshots"
    deployed = deploy_commit(repository, first, snapshots, None)
    assert deployed.pipelines_dir == "."
    assert sorted([*deployed.active, *deployed.invalid]) == TEMPLATE_PIPELINES
    assert {"extract", "transform", "load"} <= set(deployed.active)
    tree = deployed.active["extract"].tree
    assert tree == g.tree_id(repository, g.commit_info(repository, first).tree, "extract")
    assert sorted(p.name for p in g.snapshot_tree(repository, tree, "", snapshots).iterdir()) == [
        "main.py", "pipeline.json", "requirements.txt"]

    write_files(work, {"load/main.py": "print('load v2')\n", "docs/guide.md": "more\n",
                       "fresh/main.py": "print('new')\n", "README.md": "changed\n"})
    second = commit_all(work, "change load, add fresh, docs")
    again = deploy_commit(repository, second, snapshots, deployed)
    changes = again.changes
    assert (changes.added, changes.removed) == (("fresh",), ())
    assert [(c.name, c.code, c.paths) for c in changes.changed] == [("load", True, ("load/main.py",))]
    assert changes.other_paths == ("README.md", "docs/guide.md")
    assert again.active["extract"].tree == tree and again.active["fresh"].commit == second

    (work / "pipelines").mkdir()
    for name in [*TEMPLATE_PIPELINES, "fresh"]:
        git("mv", name, f"pipelines/{name}", cwd=work)
    third = commit_all(work, "move the pipelines into pipelines/")
    moved = deploy_commit(repository, third, snapshots, again)
    assert moved.pipelines_dir == "pipelines"
    assert sorted(moved.active) == sorted(again.active)
    assert (moved.changes.added, moved.changes.removed) == ((), ())  # the same pipelines, moved


@pytest.mark.slow
def test_run_on_change_runs_a_pipeline_that_lives_at_the_root(origin, tmp_path):
    origin.push({"etl/main.py": "print('etl v1')\n", "etl/pipeline.json": '{"run_on_change": true}',
                 "report/main.py": "print('report')\n", "docs/index.md": "# docs\n"}, "first")
    daemon = make_daemon(str(origin.bare), tmp_path / "state")
    daemon.start()
    try:
        assert sorted(daemon.deployment.active) == ["etl", "report"]
        sha = origin.push({"etl/main.py": "print('etl v2')\n", "docs/index.md": "# more\n"}, "v2")
        daemon.sync(utc_now())
        assert [c.name for c in daemon.deployment.changes.changed] == ["etl"]
        assert daemon.dispatcher.wait_idle(60)
        (record,) = wait_for(lambda: daemon.store.list_runs("etl", limit=5))
        assert (record.status, record.trigger.kind, record.commit.sha) == (RunStatus.SUCCEEDED, "push", sha)
        assert "etl v2" in daemon.store.read_log(record.run_id)
        assert daemon.store.list_runs("report", limit=5) == []
    finally:
        daemon.stop(grace=30)


# --- validate reads the secrets file without the key -----------------------------------------

SECRETS = ".fastflow/secrets.enc.yaml"


def asks(*names: str) -> str:
    return json.dumps({"secrets": list(names)})


def make_secrets(work: Path, secrets: dict[str, str], grants: dict[str, list[str]]) -> Path:
    owner = age.X25519Identity.generate()
    path = work / SECRETS
    store.init_secrets(path, [owner.recipient], NOW, work)
    for name, value in secrets.items():
        store.set_secret(path, name, value, [owner], NOW)
    for name, pipelines in grants.items():
        store.grant_secret(path, name, pipelines, [owner], NOW)
    return path


def test_validate_checks_that_asked_secrets_exist_and_are_granted_without_a_key(work, monkeypatch):
    for variable in ("SOPS_AGE_KEY", "SOPS_AGE_KEY_FILE", "SOPS_AGE_KEY_CMD"):
        monkeypatch.delenv(variable, raising=False)
    write_files(work, {"pipelines/etl/main.py": MAIN, "pipelines/etl/pipeline.json": asks("DB_URL", "API_KEY", "DB_URI"),
                       "pipelines/report/main.py": MAIN, "pipelines/report/pipeline.json": asks("DB_URL"),
                       "pipelines/plain/main.py": MAIN, "pipelines/prod/main.py": MAIN,
                       "pipelines/prod/pipeline.json": json.dumps({"schedules": [
                           {"id": "live", "schedule_interval_seconds": 60,
                            "secrets": {"TOKEN": "LIVE_TOKEN"}}]})})
    make_secrets(work, {"DB_URL": "postgres://x", "API_KEY": "k"}, {"DB_URL": ["etl"], "API_KEY": ["etll"]})
    assert [(p.severity.value, str(p)) for p in validate_workspace(work)] == [
        ("error", 'pipelines/etl/pipeline.json: secrets: "API_KEY" is not granted to pipeline "etl" in '
                  f"{SECRETS} (granted to: etll); grant it with `fastflow secrets grant API_KEY etl`"),
        ("error", f'pipelines/etl/pipeline.json: secrets: "DB_URI" is not in {SECRETS} (it holds API_KEY, '
                  'DB_URL); add it with `fastflow secrets set DB_URI` or fix the name; did you mean "DB_URL"?'),
        ("error", 'pipelines/prod/pipeline.json: schedules[0] (id "live").secrets: "LIVE_TOKEN" is not in '
                  f"{SECRETS} (it holds API_KEY, DB_URL); add it with `fastflow secrets set LIVE_TOKEN` or "
                  "fix the name"),
        ("error", f'pipelines/report/pipeline.json: secrets: "DB_URL" is not granted to pipeline "report" in '
                  f"{SECRETS} (granted to: etl); grant it with `fastflow secrets grant DB_URL report`"),
        ("warning", f'{SECRETS}: access_unencrypted.API_KEY: grants API_KEY to "etll", which is not a '
                    "pipeline; fix the name with `fastflow secrets revoke API_KEY etll` and `fastflow "
                    'secrets grant`; did you mean "etl"?'),
    ]
    (work / SECRETS).unlink()
    assert [str(p) for p in validate_workspace(work)] == [
        f"pipelines/etl/pipeline.json: secrets: asks for DB_URL, API_KEY, DB_URI, but {SECRETS} does not "
        "exist; create it with `fastflow secrets init --recipient age1...` and `fastflow secrets set NAME`",
        f'pipelines/prod/pipeline.json: schedules[0] (id "live").secrets: asks for LIVE_TOKEN, but {SECRETS} '
        "does not exist; create it with `fastflow secrets init --recipient age1...` and `fastflow "
        "secrets set NAME`",
        f"pipelines/report/pipeline.json: secrets: asks for DB_URL, but {SECRETS} does not exist; create it "
        "with `fastflow secrets init --recipient age1...` and `fastflow secrets set NAME`",
    ]


def test_validate_reports_a_secrets_file_that_is_not_a_sound_sops_file(work):
    """Checked whenever the file exists, whether or not a pipeline asks for a secret: the
    daemon would refuse it at the first run that does."""
    write_files(work, {"pipelines/etl/main.py": MAIN})
    path = make_secrets(work, {"DB_URL": "postgres://x"}, {"DB_URL": ["etl"]})
    assert validate_workspace(work) == []
    sound = path.read_text()
    broken = {
        "DB_URL: postgres://x\n": "sops metadata not found (no `sops:` key at the top level); this file "
                                  "is not encrypted; encrypt it with `fastflow secrets encrypt`",
        "1BAD: x\n" + sound: "'1BAD' is not a valid secret name: use letters, digits and _, not "
                             "starting with a digit, FASTFLOW_ or ending in _unencrypted (it becomes "
                             "an environment variable)",
        sound.replace("access_unencrypted:\n    DB_URL:\n        - etl\n",
                      "access_unencrypted:\n    DB_URL: etl\n"):
            "access_unencrypted.DB_URL must be a list of pipeline names",
    }
    for text, message in broken.items():
        path.write_text(text)
        assert [(p.file, p.field, p.message) for p in validate_workspace(work)] == [(SECRETS, "", message)]
