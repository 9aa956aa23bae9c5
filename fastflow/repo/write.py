"""Writing commits without a work tree: path-wise tree updates, commits, compare-and-swap refs.

`build_tree` rebuilds only the tree objects along the changed paths (one `TreeBuilder` per
directory level touched), so its cost depends on the size of the directories on those paths and
never on the size of the whole tree: this is what makes recording one run cost the same with
100 or 100,000 runs on the results branch.
"""
from __future__ import annotations

import fcntl
import hashlib
import logging
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Iterator, Mapping, Union

import pygit2
from pygit2.enums import FileMode

from fastflow.errors import RepositoryError
from fastflow.files import flocked
from fastflow.repo.core import GitRepo, _ref_name, _tree_at

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BlobRef:
    """An existing blob (by id) to place at a path, e.g. when re-applying changes after a merge."""

    id: str
    mode: int = int(FileMode.BLOB)


# What a path becomes: new content, an existing blob, or None (delete the file or whole folder).
Change = Union[bytes, BlobRef, None]


class RefConflict(RepositoryError):
    """A branch moved while we were writing it: its value is not the one we started from."""


def build_tree(repo: GitRepo, base_tree: str | None, changes: Mapping[str, Change]) -> str:
    """A new tree id: `base_tree` (a tree or commit id, None for empty) with `changes` applied.

    Keys are `/`-separated paths; `None` deletes a file or a whole folder; folders left empty
    disappear. Only directories on the changed paths are rewritten.
    """
    nested: dict = {}
    for path, value in changes.items():
        parts = [p for p in path.strip("/").split("/") if p]
        if not parts or any(p in (".", "..") for p in parts):
            raise RepositoryError(f"invalid path {path!r} in a tree update; use a relative path")
        node = nested
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise RepositoryError(f"path {path!r} is both a file and a folder in one update")
            node = child
        node[parts[-1]] = value
    base = _tree_at(repo, base_tree) if base_tree else None
    new_id = _apply(repo._git, base, nested)
    if new_id is None:
        new_id = repo._git.TreeBuilder().write()
    return str(new_id)


def _apply(git: pygit2.Repository, tree: pygit2.Tree | None, nested: dict) -> pygit2.Oid | None:
    builder = git.TreeBuilder(tree) if tree is not None else git.TreeBuilder()
    for name, value in nested.items():
        if isinstance(value, dict):
            existing = builder.get(name)
            sub = git[existing.id] if existing is not None and existing.type_str == "tree" else None
            new_sub = _apply(git, sub, value)
            if new_sub is None:
                if existing is not None:
                    builder.remove(name)
            else:
                builder.insert(name, new_sub, FileMode.TREE)
        elif value is None:
            if builder.get(name) is not None:
                builder.remove(name)
        elif isinstance(value, BlobRef):
            builder.insert(name, pygit2.Oid(hex=value.id), value.mode)
        else:
            builder.insert(name, git.create_blob(bytes(value)), FileMode.BLOB)
    if len(builder) == 0:
        return None
    return builder.write()


def make_commit(
    repo: GitRepo,
    tree: str,
    parents: list[str],
    message: str,
    author: tuple[str, str],
    when: datetime,
    committer: tuple[str, str] | None = None,
) -> str:
    """Write a commit object (no ref moves) and return its sha; `when` must be timezone-aware."""
    if when.tzinfo is None:
        raise ValueError("commit time must be timezone-aware")
    offset = int(when.utcoffset().total_seconds() // 60)
    stamp = int(when.timestamp())
    a = pygit2.Signature(author[0], author[1], stamp, offset)
    c = pygit2.Signature(*(committer or author), stamp, offset)
    oid = repo._git.create_commit(
        None, a, c, message, pygit2.Oid(hex=tree), [pygit2.Oid(hex=p) for p in parents]
    )
    return str(oid)


@contextmanager
def _ref_lock(repo: GitRepo, ref: str) -> Iterator[None]:
    # libgit2 has no compare-and-swap for references and pygit2 exposes none, so every
    # Fast-Flow writer takes this per-ref advisory lock around read-compare-write. Processes
    # that are not Fast-Flow (a user's `git push`) do not take it; the results branch is
    # only written by Fast-Flow, and pushes of it from elsewhere arrive through fetch+merge.
    digest = hashlib.sha1(ref.encode()).hexdigest()[:16]
    with flocked(repo.git_dir / f"fastflow-ref-{digest}.lock", fcntl.LOCK_EX):
        yield


def _remove_stale_lockfile(repo: GitRepo, ref: str) -> None:
    # libgit2 writes a ref through `<ref>.lock`; a writer killed between creating it and the
    # rename (kill -9 of the daemon mid-commit) leaves it behind, and every later update of the
    # ref would fail. Fast-Flow's refs are written only under `_ref_lock`, which we hold and
    # which the kernel released when that writer died: the file is stale.
    lockfile = repo.git_dir / f"{ref}.lock"
    if lockfile.exists():
        logger.warning("removing %s, left by a writer that was killed mid-update", lockfile)
        lockfile.unlink(missing_ok=True)


def update_ref(
    repo: GitRepo, branch: str, new: str, expected_old: str | None, message: str = "fastflow"
) -> None:
    """Point `branch` at commit `new` if it still points at `expected_old` (None: must not exist).

    Raises `RefConflict` when the branch moved meanwhile, so the caller can rebuild on top of
    the new head instead of losing someone's commit.
    """
    name = _ref_name(branch)
    with _ref_lock(repo, name):
        _remove_stale_lockfile(repo, name)
        ref = repo._git.references.get(name)
        current = None if ref is None else str(ref.resolve().target)
        if current != expected_old:
            raise RefConflict(
                f"{repo.path}: branch {branch!r} is at {current}, expected {expected_old}; "
                "it was updated concurrently, rebuild the commit on the new head"
            )
        repo._git.create_reference_direct(name, pygit2.Oid(hex=new), True, message=message)


def ref_file(repo: GitRepo, ref: str, path: str) -> tuple[str | None, bytes | None]:
    """The commit `ref` points to and the content of file `path` in its tree; (None, None)
    when the ref does not exist, (sha, None) when the file is absent."""
    found = repo._git.references.get(_ref_name(ref))
    if found is None:
        return None, None
    sha = str(found.resolve().target)
    try:
        entry = repo._git[sha].peel(pygit2.Tree)[path]
    except (KeyError, ValueError, pygit2.GitError):
        return sha, None
    return sha, entry.data if isinstance(entry, pygit2.Blob) else None


def commit_file(repo: GitRepo, path: str, data: bytes, message: str, author: tuple[str, str],
                when: datetime) -> str:
    """A parentless commit (no ref moves) whose tree holds only `path` = `data`: the value of
    a ref that carries a small state (the daemon's lease), so rewriting it grows no history."""
    return make_commit(repo, build_tree(repo, None, {path: data}), [], message, author, when)


def delete_ref(repo: GitRepo, branch: str) -> None:
    """Remove `branch` (or a full `refs/...` name) when it exists."""
    ref = repo._git.references.get(_ref_name(branch))
    if ref is not None:
        ref.delete()


def merge_base(repo: GitRepo, a: str, b: str) -> str | None:
    """The best common ancestor of commits `a` and `b`, None when their histories are unrelated."""
    oid = repo._git.merge_base(pygit2.Oid(hex=a), pygit2.Oid(hex=b))
    return None if oid is None else str(oid)


def diff_blobs(repo: GitRepo, old_tree: str | None, new_tree: str) -> dict[str, Change]:
    """What changed from `old_tree` to `new_tree` as a `build_tree` change set (blob refs/None)."""
    new = _tree_at(repo, new_tree)
    if old_tree is None:
        diff = new.diff_to_tree(swap=True)
    else:
        diff = repo._git.diff(_tree_at(repo, old_tree), new)
    out: dict[str, Change] = {}
    for delta in diff.deltas:
        if delta.status_char() == "D":
            out[delta.old_file.path] = None
        else:
            out[delta.new_file.path] = BlobRef(str(delta.new_file.id), int(delta.new_file.mode))
    return out
