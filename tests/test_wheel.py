"""The installed package is the product: build the wheel, install it into a fresh virtual
environment, and use that environment's own `fastflow` as a user would.

The wheel is built from a copy of the checkout's files (tracked and untracked, not ignored), not
in the checkout itself: setuptools keeps a `build/` folder whose stale files would leak into the
wheel, and the working tree is shared with other runs. Dependencies are installed by uv from the
package index the host's uv is configured for, through the usual uv cache (a warm cache makes
the module take a few seconds). Every command runs with its working dir outside the checkout and
without PYTHONPATH, so nothing but the wheel can answer.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from helpers import ROOT, git

from fastflow import __version__

pytestmark = pytest.mark.slow

FIXTURE = ROOT / "tests" / "fixtures" / "wheel"
TIMEOUT = 300


def checkout_files() -> list[str]:
    """The checkout's files as a fresh clone plus the uncommitted work would have them."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                         cwd=ROOT, capture_output=True, check=True).stdout.decode()
    return sorted(rel for rel in out.split("\0") if rel and (ROOT / rel).is_file())


def uv(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run the host's uv (the shared cache included) with no virtual environment active."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    return subprocess.run([shutil.which("uv"), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=TIMEOUT, check=True)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel built from a copy of the checkout."""
    base = tmp_path_factory.mktemp("wheel")
    source = base / "source"
    for rel in checkout_files():
        (source / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, source / rel)
    uv("build", "--quiet", "--wheel", "--out-dir", str(base / "dist"), str(source), cwd=base)
    (built,) = (base / "dist").glob("fastflow-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    """A fresh virtual environment (this test's Python, no system site-packages) with the wheel."""
    root = tmp_path_factory.mktemp("venv") / "venv"
    uv("venv", "--quiet", "--python", sys.executable, str(root), cwd=root.parent)
    uv("pip", "install", "--quiet", "--python", str(root / "bin" / "python"), str(wheel),
       cwd=root.parent)
    return root


def run_in(venv: Path, *args: str, cwd: Path, stdin: str | None = None) -> subprocess.CompletedProcess:
    """Run one of the venv's executables (`fastflow`, `python`) in `cwd`, the venv first on PATH
    (the local executor starts `uv` from PATH: the wheel's own dependency)."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return subprocess.run([str(venv / "bin" / args[0]), *args[1:]], cwd=cwd, env=env, input=stdin,
                          capture_output=True, text=True, timeout=TIMEOUT)


def test_the_wheel_holds_every_file_of_the_package(wheel):
    # Package data (the site templates, the hook template, py.typed) is read at run time: a file
    # under fastflow/ missing from the wheel is a FileNotFoundError for every pip user.
    wanted = {rel for rel in checkout_files() if rel.startswith("fastflow/")}
    with zipfile.ZipFile(wheel) as archive:
        shipped = {name for name in archive.namelist() if name.startswith("fastflow/")}
    assert sorted(wanted - shipped) == []
    assert sorted(shipped - wanted) == []


def test_the_venv_answers_from_the_wheel_not_the_checkout(venv, tmp_path):
    result = run_in(venv, "fastflow", "--version", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (result.stdout, result.stderr) == (f"fastflow, version {__version__}\n", "")
    result = run_in(venv, "python", "-c", "import fastflow, fastflow.cli; print(fastflow.__file__)",
                    cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    where = Path(result.stdout.strip()).resolve()
    assert where.is_relative_to(venv.resolve()), where
    assert not where.is_relative_to(ROOT), where


def test_hooks_install_writes_a_working_hook(venv, tmp_path):
    bare, state = tmp_path / "pipelines.git", tmp_path / "state"
    git("init", "-q", "--bare", "-b", "main", str(bare), cwd=tmp_path)
    result = run_in(venv, "fastflow", "hooks", "install", str(bare), "--state-dir", str(state),
                    cwd=tmp_path)
    hook = bare / "hooks" / "post-receive"
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout == f"Installed {hook} (branch main, state dir {state})\n"
    assert os.access(hook, os.X_OK)
    # The installed template does its job: a push to main drops one file in the daemon's inbox.
    (state / "inbox").mkdir(parents=True)
    push = f"{'0' * 40} {'1' * 40} refs/heads/main\n"
    done = subprocess.run([str(hook)], cwd=bare, input=push, capture_output=True, text=True,
                          timeout=TIMEOUT)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    (dropped,) = (state / "inbox").iterdir()
    assert dropped.name.startswith("push-")
    assert dropped.read_text() == push


def test_validate_and_run_local_in_a_pipelines_repository(venv, tmp_path):
    repo = shutil.copytree(FIXTURE, tmp_path / "pipelines-repo")
    result = run_in(venv, "fastflow", "validate", cwd=repo)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (result.stdout, result.stderr) == ("ok: the repository is valid\n", "")

    result = run_in(venv, "fastflow", "run", "hello", "--local", "--record-json", "run.json",
                    cwd=repo)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "hello from the installed wheel (hello, attempt 1)\n"
    lines = result.stderr.splitlines()
    assert "a line on stderr" in lines
    assert lines[-1].startswith("run ")
    assert ": succeeded, exit code 0, 1 attempt, in " in lines[-1]
    record = json.loads((repo / "run.json").read_text())
    assert (record["pipeline"], record["status"], record["exit_code"]) == ("hello", "succeeded", 0)
    assert record["run_id"] in lines[-1]


def test_the_wheel_brings_the_webhook_server_and_its_http_library(venv, tmp_path):
    # waitress comes from the wheel's own dependencies (pyproject), not from this environment.
    result = run_in(venv, "python", "-c", "import waitress, fastflow.daemon.webhooks.server; "
                    "print(waitress.__file__)", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()).resolve().is_relative_to(venv.resolve())
    result = run_in(venv, "fastflow", "serve", "--help", cwd=tmp_path)
    assert result.returncode == 0 and "--webhooks HOST:PORT" in result.stdout, result.stderr


def test_the_wheel_brings_the_notification_library(venv, tmp_path):
    # apprise comes from the wheel's own dependencies (pyproject), not from this environment.
    result = run_in(venv, "python", "-c", "import apprise, fastflow.notify.delivery as d; "
                    "print(apprise.__file__); print(d.describe('json://127.0.0.1:9/hook'))",
                    cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    path, shown = result.stdout.splitlines()
    assert Path(path).resolve().is_relative_to(venv.resolve())
    assert shown.startswith("json://127.0.0.1:9/hook")
    result = run_in(venv, "fastflow", "notify", "test", "--help", cwd=tmp_path)
    assert result.returncode == 0 and "--target NAME" in result.stdout, result.stderr
