"""`fastflow init [DIR]` (fastflow/deploy/scaffold.py): a new pipelines repository that validates,
lists, runs and deploys as it is, whose commented examples are valid too, and that never
replaces a file."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import git

from fastflow.cli import main
from fastflow.deploy.scaffold import new_repository
from fastflow.errors import ScaffoldError
from fastflow.repo import find_repo, head_branch

FILES = [".fastflow/config.yaml", ".fastflow/schedules.yaml", ".gitignore",
         "pipelines/hello/main.py", "pipelines/hello/pipeline.json"]


def fastflow(*args: str, cwd: Path):
    return subprocess.run([sys.executable, "-m", "fastflow", *args], capture_output=True,
                          text=True, cwd=cwd, env=dict(os.environ), timeout=300)


def init(target: str, cwd: Path):
    """`fastflow init target` with `cwd` as the current folder (CliRunner, in process)."""
    here = Path.cwd()
    os.chdir(cwd)
    try:
        return CliRunner().invoke(main, ["init", target])
    finally:
        os.chdir(here)


def test_init_makes_a_new_folder_a_repository_that_validates_and_lists(tmp_path):
    result = init("new", tmp_path)
    assert result.exit_code == 0, result.output
    root = tmp_path / "new"
    assert result.output.splitlines() == [
        f"Created a Fast-Flow pipelines repository in {root}:",
        *[f"  {rel}" for rel in FILES],
        "Made it a git repository (branch main); nothing is committed yet.",
        "Next:",
        "  fastflow run hello --local --repo new    # run the example on this machine now",
        '  git -C new add -A && git -C new commit -m "A Fast-Flow pipelines repository"'
        "    # the daemon runs what is committed",
        "  fastflow serve --repo new    # follow branch main: runs in Docker (or add --local)",
    ]
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if p.is_file() and ".git" not in p.parts) == FILES
    repo = find_repo(root)
    assert repo is not None and Path(repo.path) == root and head_branch(repo) == "main"
    meta = json.loads((root / "pipelines/hello/pipeline.json").read_text())
    assert meta["description"] and meta["_comment"]

    done = CliRunner().invoke(main, ["validate", "--repo", str(root)])
    assert (done.exit_code, done.output) == (0, "ok: the repository is valid\n")
    done = CliRunner().invoke(main, ["list", "--repo", str(root), "--json"])
    assert done.exit_code == 0, done.output
    listed = json.loads(done.output)
    assert [p["name"] for p in listed["pipelines"]] == ["hello"] and listed["invalid"] == []


def uncommented(text: str) -> str:
    """The file with every commented example switched on: `#key: ...` and `#  - ...` lines lose
    their `#`; prose (`# ` and a word) stays."""
    return re.sub(r"^#(?! \S)", "", text, flags=re.M)


def test_every_commented_example_is_valid(tmp_path):
    assert init("repo", tmp_path).exit_code == 0
    root = tmp_path / "repo"
    for rel in (".fastflow/config.yaml", ".fastflow/schedules.yaml"):
        path = root / rel
        switched = uncommented(path.read_text())
        assert switched != path.read_text()
        path.write_text(switched)
    assert "\ntimezone: Europe/Berlin\n" in (root / ".fastflow/schedules.yaml").read_text()
    done = CliRunner().invoke(main, ["validate", "--repo", str(root)])
    assert (done.exit_code, done.output) == (0, "ok: the repository is valid\n")
    done = CliRunner().invoke(main, ["schedule", "list", "--repo", str(root)])
    assert done.exit_code == 0, done.output
    assert "hello-nightly" in done.output and "hello-every-15m" in done.output


def test_hello_runs_local_and_the_committed_repository_deploys(tmp_path):
    assert init("repo", tmp_path).exit_code == 0
    root = tmp_path / "repo"
    done = fastflow("run", "hello", "--local", "--repo", "repo", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert re.fullmatch(r"hello from hello \(run \S+-hello-\S+, attempt 1\)\n", done.stdout)
    # The next two printed commands: commit, then the daemon's sync deploys the example.
    git("add", "-A", cwd=root)
    git("commit", "-q", "-m", "A Fast-Flow pipelines repository", cwd=root)
    done = fastflow("sync", "--repo", "repo", "--local", "--state-dir", str(tmp_path / "state"),
                    "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    synced = json.loads(done.stdout)
    assert list(synced["active"]) == ["hello"] and synced["errors"] == []


def test_init_never_replaces_a_file_and_writes_nothing_then(tmp_path):
    root = tmp_path / "repo"
    (root / "pipelines" / "hello").mkdir(parents=True)
    (root / "pipelines" / "hello" / "main.py").write_text("mine\n")
    (root / ".gitignore").write_text("mine\n")
    result = init("repo", tmp_path)
    assert result.exit_code == 1
    assert result.output == (
        f"Error: {root}: .gitignore, pipelines/hello/main.py exist already; fastflow init never "
        "replaces a file: move them away or init a new folder\n")
    assert (root / "pipelines/hello/main.py").read_text() == "mine\n"
    assert (root / ".gitignore").read_text() == "mine\n"
    assert not (root / ".fastflow").exists() and not (root / ".git").exists()
    # A file where a folder goes is in the way too.
    (root / ".gitignore").unlink()
    (root / "pipelines/hello/main.py").unlink()
    (root / ".fastflow").write_text("")
    result = init("repo", tmp_path)
    assert result.exit_code == 1
    assert result.output == (
        f"Error: {root}: .fastflow exists already; fastflow init never replaces a file: move it "
        "away or init a new folder\n")
    result = init("repo/.fastflow", tmp_path)  # DIR itself a file: a usage error
    assert result.exit_code == 2
    assert "Invalid value for '[DIR]': Directory 'repo/.fastflow' is a file." in result.output
    with pytest.raises(ScaffoldError) as raised:
        new_repository(root / ".fastflow")
    assert str(raised.value) == (
        f"{root / '.fastflow'}: is a file, not a folder; give a new or existing folder")


def test_init_in_the_current_folder_inside_a_repository_keeps_its_git(tmp_path):
    outer = tmp_path / "outer"
    outer.mkdir()
    git("init", "-q", "-b", "trunk", cwd=outer)
    result = init(".", outer)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[6:] == [
        f"It is in the git repository {outer}; nothing was committed.",
        "Next:",
        "  fastflow run hello --local    # run the example on this machine now",
        '  git add -A && git commit -m "A Fast-Flow pipelines repository"'
        "    # the daemon runs what is committed",
        "  fastflow serve --branch trunk    # follow branch trunk: runs in Docker (or add --local)",
    ]
    # A sub-folder of a repository is not what a daemon reads: the output says so.
    result = init("sub", outer / "pipelines")
    assert result.exit_code == 0, result.output
    assert not (outer / "pipelines/sub/.git").exists()
    assert (f"Note: fastflow serve reads .fastflow/ at the root of the repository it follows, "
            f"{outer}, not {outer / 'pipelines/sub'}: run `fastflow init` at the repository's "
            "root or in a folder of its own to deploy it.") in result.output
