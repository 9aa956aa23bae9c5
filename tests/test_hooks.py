"""The post-receive hook: real bare repositories, real `git push`, the install/uninstall commands."""
from __future__ import annotations

import os
import statistics
import subprocess
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import ROOT, Origin, git, run_git

from fastflow.cli.hooks import hooks
from fastflow.daemon.hooks import (
    hook_template,
    install_hook,
    render_hook,
    uninstall_hook,
)
from fastflow.daemon.inbox import Inbox, PushMessage
from fastflow.errors import RepositoryError

OLD = "0" * 40
NEW = "7f182d91b453615cdafaf4b3e6db5c9af91e9e3b"


@pytest.fixture
def repos(tmp_path: Path) -> Origin:
    return Origin(tmp_path, bare="pipe lines.git", work="clone")  # a space, to check quoting end to end


@pytest.fixture
def bare(repos: Origin) -> Path:
    return repos.bare


@pytest.fixture
def clone(repos: Origin) -> Path:
    return repos.work


def commit_and_push(clone: Path, branch: str = "main") -> tuple[subprocess.CompletedProcess, str]:
    (clone / "f.txt").write_text(str(time.time_ns()))
    git("add", "f.txt", cwd=clone)
    git("commit", "-q", "-m", "change", cwd=clone)
    sha = git("rev-parse", "HEAD", cwd=clone)
    return run_git("push", "origin", f"HEAD:refs/heads/{branch}", cwd=clone), sha


def run_hook(hook: Path, stdin: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(hook)], input=stdin, capture_output=True, text=True, cwd=hook.parent)


def test_documented_copy_matches_the_shipped_template():
    documented = (ROOT / "hooks" / "post-receive").read_text()
    assert documented == (ROOT / "fastflow" / "daemon" / "post-receive").read_text()
    assert documented == hook_template()
    assert os.access(ROOT / "hooks" / "post-receive", os.X_OK)


def test_render_quotes_paths_for_the_shell(tmp_path: Path):
    text = render_hook(tmp_path / "it's a dir", "release/1.x")
    assert f"FASTFLOW_STATE_DIR='{tmp_path}/it'\"'\"'s a dir'\n" in text
    assert "FASTFLOW_BRANCH=release/1.x\n" in text
    assert "@FASTFLOW_" not in text


# -- the hook in a real push ----------------------------------------------------------------------

def test_push_to_the_followed_branch_posts_a_message(tmp_path: Path, bare: Path, clone: Path):
    state = tmp_path / "state 'quoted'"
    inbox = Inbox(state)
    install_hook(bare, state, "main")
    pushed, sha = commit_and_push(clone)
    assert "remote:" not in pushed.stderr  # the hook says nothing to the pusher
    [message] = inbox.drain()
    assert isinstance(message, PushMessage)
    assert [(u.old, u.new, u.ref) for u in message.updates] == [(OLD, sha, "refs/heads/main")]
    assert abs(message.posted_ns - time.time_ns()) < 60 * 10**9
    assert not inbox.pending()


def test_push_to_another_branch_writes_nothing(tmp_path: Path, bare: Path, clone: Path):
    inbox = Inbox(tmp_path / "state")
    install_hook(bare, tmp_path / "state", "main")
    commit_and_push(clone, "feature")
    assert os.listdir(inbox.path) == []


def test_one_push_of_several_refs_is_one_message_with_every_line(tmp_path: Path, bare: Path, clone: Path):
    inbox = Inbox(tmp_path / "state")
    install_hook(bare, tmp_path / "state", "main")
    commit_and_push(clone)
    git("commit", "-q", "--allow-empty", "-m", "second", cwd=clone)
    git("tag", "v1", cwd=clone)
    git("push", "-q", "origin", "HEAD:refs/heads/main", "HEAD:refs/heads/other", "v1", cwd=clone)
    git("push", "-q", "origin", "HEAD:refs/heads/third", cwd=clone)  # not the branch: no message
    messages = inbox.drain()
    assert len(messages) == 2
    assert sorted(u.ref for u in messages[1].updates) == ["refs/heads/main", "refs/heads/other", "refs/tags/v1"]


def test_hook_is_silent_and_succeeds_without_a_daemon(tmp_path: Path, bare: Path, clone: Path):
    state = tmp_path / "never-started"
    install_hook(bare, state, "main")
    pushed, _ = commit_and_push(clone)
    assert "remote:" not in pushed.stderr
    assert not state.exists()  # creates nothing: no daemon ever ran here


def test_hook_exits_0_when_the_state_dir_is_under_a_file(tmp_path: Path, bare: Path):
    (tmp_path / "file").write_text("not a dir")
    hook = install_hook(bare, tmp_path / "file" / "state", "main").path
    result = run_hook(hook, f"{OLD} {NEW} refs/heads/main\n")
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_hook_exits_0_when_the_inbox_cannot_be_written(tmp_path: Path, bare: Path):
    # Root ignores permission bits, so force a real write failure another way: an inbox whose
    # path is just under PATH_MAX (4096 with the NUL) exists, but no file name fits inside it
    # (ENAMETOOLONG): 4070 + "/" + the shortest name the hook writes (25 characters) is over.
    state = tmp_path
    while len(str(state / "inbox")) < 4070:
        state = state / ("d" * min(200, 4070 - len(str(state / "inbox"))))
    (state / "inbox").mkdir(parents=True)
    hook = install_hook(bare, state, "main").path
    result = run_hook(hook, f"{OLD} {NEW} refs/heads/main\n")
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    assert os.listdir(state / "inbox") == []


def test_hook_exits_0_on_garbage_input(tmp_path: Path, bare: Path):
    inbox = Inbox(tmp_path / "state")
    hook = install_hook(bare, tmp_path / "state", "main").path
    for stdin in ("", "\n\n", "garbage without fields", f"{OLD} {NEW} refs/heads/main"):  # no final \n
        result = run_hook(hook, stdin)
        assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    [message] = inbox.drain()  # only the last one named the branch
    assert message.updates[0].ref == "refs/heads/main"


def test_hook_is_fast(tmp_path: Path, bare: Path):
    # A functional bound (well under 100 ms); bench/push_to_start.py measures the whole path.
    Inbox(tmp_path / "state")
    hook = install_hook(bare, tmp_path / "state", "main").path
    times = []
    for _ in range(20):
        start = time.perf_counter()
        assert run_hook(hook, f"{OLD} {NEW} refs/heads/main\n").returncode == 0
        times.append(time.perf_counter() - start)
    assert statistics.median(times) < 0.1
    assert len(os.listdir(tmp_path / "state" / "inbox")) == 20


def test_hook_wakes_a_waiting_daemon(tmp_path: Path, bare: Path, clone: Path):
    inbox = Inbox(tmp_path / "state")
    install_hook(bare, tmp_path / "state", "main")
    with inbox.waiter() as waiter:
        assert waiter.wait(0.1) is False
        commit_and_push(clone)
        start = time.monotonic()
        assert waiter.wait(5) is True
        assert time.monotonic() - start < 0.5
    assert len(inbox.drain()) == 1


def test_install_into_a_repository_with_a_work_tree(tmp_path: Path, clone: Path):
    result = install_hook(clone, tmp_path / "state")
    assert result.path == clone / ".git" / "hooks" / "post-receive"


# -- the library ----------------------------------------------------------------------------------

def test_install_is_idempotent_and_reinstall_changes_settings(tmp_path: Path, bare: Path):
    first = install_hook(bare, tmp_path / "s", "main")
    assert first.changed and first.backup is None
    assert oct(first.path.stat().st_mode & 0o777) == "0o755"
    assert install_hook(bare, tmp_path / "s", "main").changed is False
    again = install_hook(bare, tmp_path / "s", "dev")
    assert again.changed and again.backup is None
    assert "FASTFLOW_BRANCH=dev\n" in again.path.read_text()


def test_uninstall_when_nothing_is_installed(bare: Path):
    result = uninstall_hook(bare)
    assert result.removed is False


def test_not_a_repository(tmp_path: Path):
    with pytest.raises(RepositoryError, match=rf"^{tmp_path}: not a git repository"):
        install_hook(tmp_path, tmp_path / "s")


# -- the commands ---------------------------------------------------------------------------------

def invoke(*args: str):
    return CliRunner().invoke(hooks, list(args))


def test_cli_install(tmp_path: Path, bare: Path):
    state = tmp_path / "state"
    result = invoke("install", str(bare), "--state-dir", str(state))
    assert result.exit_code == 0, result.stderr
    hook = bare / "hooks" / "post-receive"
    assert result.stdout == f"Installed {hook} (branch main, state dir {state})\n"
    assert invoke("install", str(bare), "--state-dir", str(state)).stdout == f"Already installed: {hook}\n"


def test_cli_install_refuses_to_clobber_another_hook(tmp_path: Path, bare: Path):
    hook = bare / "hooks" / "post-receive"
    hook.write_text("#!/bin/sh\necho mine\n")
    result = invoke("install", str(bare), "--state-dir", str(tmp_path / "s"))
    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: {hook} already exists and was not written by fastflow; move it away, or pass "
        "--force to keep it as post-receive.fastflow-backup-<n> and install the fastflow hook\n"
    )
    assert hook.read_text() == "#!/bin/sh\necho mine\n"


def test_cli_install_force_keeps_a_backup_and_uninstall_restores_it(tmp_path: Path, bare: Path):
    hook = bare / "hooks" / "post-receive"
    (bare / "hooks" / "post-receive.fastflow-backup-1").write_text("older backup\n")
    hook.write_text("#!/bin/sh\necho mine\n")
    state = tmp_path / "s"
    result = invoke("install", str(bare), "--state-dir", str(state), "--branch", "prod", "--force")
    assert result.exit_code == 0, result.stderr
    backup = bare / "hooks" / "post-receive.fastflow-backup-2"
    assert result.stdout == (
        f"Kept the previous hook as {backup}\nInstalled {hook} (branch prod, state dir {state})\n"
    )
    assert backup.read_text() == "#!/bin/sh\necho mine\n"
    result = invoke("uninstall", str(bare))
    assert result.exit_code == 0, result.stderr
    assert result.stdout == f"Removed the fastflow hook; restored {hook} from {backup}\n"
    assert hook.read_text() == "#!/bin/sh\necho mine\n"
    assert not backup.exists()


def test_cli_uninstall(tmp_path: Path, bare: Path):
    hook = bare / "hooks" / "post-receive"
    invoke("install", str(bare), "--state-dir", str(tmp_path / "s"))
    result = invoke("uninstall", str(bare))
    assert (result.exit_code, result.stdout) == (0, f"Removed {hook}\n")
    assert not hook.exists()
    result = invoke("uninstall", str(bare))
    assert (result.exit_code, result.stdout) == (0, f"No post-receive hook at {hook}; nothing to do\n")


def test_cli_uninstall_leaves_a_foreign_hook(bare: Path):
    hook = bare / "hooks" / "post-receive"
    hook.write_text("#!/bin/sh\necho mine\n")
    result = invoke("uninstall", str(bare))
    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: {hook} was not written by fastflow, so it was left in place; remove it by hand if "
        "it is no longer wanted\n"
    )
    assert hook.exists()


@pytest.mark.parametrize("branch", ["", "a b", "a..b", "-x", "x.lock", "x/", "a~1", "@"])
def test_cli_install_rejects_a_bad_branch(tmp_path: Path, bare: Path, branch: str):
    result = invoke("install", str(bare), "--state-dir", str(tmp_path / "s"), "--branch", branch)
    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: --branch {branch!r} is not a valid branch name; pass the followed branch as git "
        "names it, e.g. --branch main\n"
    )
    assert not (bare / "hooks" / "post-receive").exists()


def test_cli_accepts_refs_heads_prefix(tmp_path: Path, bare: Path):
    result = invoke("install", str(bare), "--state-dir", str(tmp_path / "s"), "--branch", "refs/heads/main")
    assert result.exit_code == 0
    assert "FASTFLOW_BRANCH=main\n" in (bare / "hooks" / "post-receive").read_text()


def test_cli_missing_repository_is_a_usage_error(tmp_path: Path):
    result = invoke("install", str(tmp_path / "nope"), "--state-dir", str(tmp_path / "s"))
    assert result.exit_code == 2
    assert "Directory" in result.stderr and "does not exist" in result.stderr


def test_cli_help():
    for command in ("install", "uninstall"):
        result = invoke(command, "--help")
        assert result.exit_code == 0 and "BARE_REPO" in result.stdout
