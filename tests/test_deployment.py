"""deploy.deployment: a commit deployed from its snapshot reaches the verdicts `fastflow validate`
reaches on the working tree, from the same code (issue 12: symlinks leaving the repository).

Real git (a repository committed with the git CLI), real snapshots in tmp_path.
"""
from __future__ import annotations

from pathlib import Path

import pytest
from helpers import git, write_files

from fastflow import repo as g
from fastflow.deploy.deployment import deploy_commit
from fastflow.deploy.workspace import validate_workspace

MAIN = "print('hi')\n"


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
