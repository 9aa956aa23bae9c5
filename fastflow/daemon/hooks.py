"""Install and remove the `post-receive` hook that tells `fastflow serve` about pushes.

The hook is a POSIX sh script shipped as package data (`fastflow/daemon/post-receive`,
documented copy in `hooks/post-receive`). Installing fills in the state dir and the followed
branch, shell-quoted, and writes it to `<git dir>/hooks/post-receive` with mode 755. A foreign hook
is never overwritten silently: `force=True` keeps it as `post-receive.fastflow-backup-<n>`, and
uninstalling puts the newest backup back. See docs/hooks.md.
"""
from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from fastflow.defaults import DEFAULT_BRANCH
from fastflow.errors import RepositoryError
from fastflow.files import write_atomic
from fastflow.repo import open_repo

HOOK_NAME = "post-receive"
BACKUP_INFIX = ".fastflow-backup-"
# The template's first comment line; a hook carrying it was written by fastflow.
MARKER = "# fastflow post-receive hook"
_STATE_DIR_SLOT = "@FASTFLOW_STATE_DIR@"
_BRANCH_SLOT = "@FASTFLOW_BRANCH@"
# git check-ref-format's rules, for a branch name (what `refs/heads/<branch>` may hold).
_BAD_BRANCH = re.compile(r"(^[-/.])|(/[.])|([/.]$)|(\.\.)|(@\{)|(//)|(\.lock(/|$))|[\x00-\x20\x7f~^:?*\[\\]")


@dataclass(frozen=True)
class InstallResult:
    """What `install_hook` did: the hook path, whether it changed, and any backup it made."""

    path: Path
    changed: bool
    backup: Path | None = None


@dataclass(frozen=True)
class UninstallResult:
    """What `uninstall_hook` did: the hook path, whether it removed it, and any backup restored."""

    path: Path
    removed: bool
    restored_from: Path | None = None


def hook_template() -> str:
    """The hook template's text, as shipped in the package (`fastflow/daemon/post-receive`)."""
    return (resources.files("fastflow.daemon") / HOOK_NAME).read_text(encoding="utf-8")


def check_branch(branch: str) -> str:
    """The branch name without a `refs/heads/` prefix; `RepositoryError` if git would refuse it."""
    name = branch[len("refs/heads/"):] if branch.startswith("refs/heads/") else branch
    if not name or _BAD_BRANCH.search(name) or name == "@":
        raise RepositoryError(
            f"--branch {branch!r} is not a valid branch name; pass the followed branch as git "
            "names it, e.g. --branch main"
        )
    return name


def render_hook(state_dir: Path, branch: str) -> str:
    """The hook text for `state_dir` (made absolute) and `branch`, both shell-quoted."""
    state = shlex.quote(str(Path(state_dir).absolute()))
    return (
        hook_template()
        .replace(_STATE_DIR_SLOT, state, 1)
        .replace(_BRANCH_SLOT, shlex.quote(check_branch(branch)), 1)
    )


def hook_path(repo_path: Path) -> Path:
    """Where git looks for the `post-receive` hook of the repository at `repo_path`.

    That is `<git dir>/hooks/post-receive`: `<repo>/hooks/` for a bare repository, `.git/hooks/`
    for one with a work tree. A `core.hooksPath` setting is not followed (see docs/hooks.md).
    """
    return open_repo(repo_path).git_dir / "hooks" / HOOK_NAME


def is_fastflow_hook(text: str) -> bool:
    """True when `text` is a hook written by `install_hook` (it carries the marker line)."""
    return any(line.startswith(MARKER) for line in text.splitlines()[:3])


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        raise RepositoryError(f"{path} is a directory, not a hook; move it away and retry") from None


def _backups(path: Path) -> list[tuple[int, Path]]:
    found = []
    for item in path.parent.glob(f"{path.name}{BACKUP_INFIX}*"):
        suffix = item.name[len(path.name) + len(BACKUP_INFIX):]
        if suffix.isdigit():
            found.append((int(suffix), item))
    return sorted(found)


def _write_executable(path: Path, text: str) -> None:
    """Write `text` to `path` atomically (temp + rename) with mode 755: git never runs half a hook."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, text, mode=0o755)


def install_hook(
    repo_path: Path, state_dir: Path, branch: str = DEFAULT_BRANCH, force: bool = False
) -> InstallResult:
    """Install the fastflow `post-receive` hook into the repository at `repo_path`.

    A fastflow hook already there is replaced (to change the state dir or branch). Any other
    hook is kept: without `force` this raises `RepositoryError` naming it; with `force` it is
    renamed to `post-receive.fastflow-backup-<n>` (n = next free number) before writing ours.
    """
    path = hook_path(repo_path)
    text = render_hook(state_dir, branch)
    current = _read(path)
    if current == text and os.access(path, os.X_OK):
        return InstallResult(path, changed=False)
    backup = None
    if current is not None and not is_fastflow_hook(current):
        if not force:
            raise RepositoryError(
                f"{path} already exists and was not written by fastflow; move it away, or pass "
                f"--force to keep it as {path.name}{BACKUP_INFIX}<n> and install the fastflow hook"
            )
        taken = [n for n, _ in _backups(path)]
        backup = path.with_name(f"{path.name}{BACKUP_INFIX}{max(taken, default=0) + 1}")
        os.rename(path, backup)
    _write_executable(path, text)
    return InstallResult(path, changed=True, backup=backup)


def uninstall_hook(repo_path: Path) -> UninstallResult:
    """Remove the fastflow `post-receive` hook; put back the newest backup `install_hook` made.

    Missing hook: nothing to do (`removed=False`). A hook not written by fastflow is never
    removed: `RepositoryError` naming it.
    """
    path = hook_path(repo_path)
    current = _read(path)
    if current is None:
        return UninstallResult(path, removed=False)
    if not is_fastflow_hook(current):
        raise RepositoryError(
            f"{path} was not written by fastflow, so it was left in place; remove it by hand if "
            "it is no longer wanted"
        )
    backups = _backups(path)
    if backups:
        newest = backups[-1][1]
        os.replace(newest, path)
        return UninstallResult(path, removed=True, restored_from=newest)
    path.unlink()
    return UninstallResult(path, removed=True)
