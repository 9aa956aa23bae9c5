"""Immutable snapshots of git trees on disk, keyed by tree id, shared between runs.

A run executes its pipeline folder from `dest_root/<tree_id>/`, never from a live checkout: a
push during the run changes nothing for it. Snapshots are written to a temporary directory
and renamed into place (atomic), made read-only, and reused whenever the same tree runs again.
`pin_snapshot` holds a shared `flock` while a run uses a snapshot; `gc_snapshots` removes only
snapshots nobody pins (the lock dies with its process, so a crash never pins one forever).
"""
from __future__ import annotations

import fcntl
import logging
import os
import posixpath
import shutil
import stat
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

import pygit2
from pygit2.enums import FileMode

from fastflow.errors import RepositoryError
from fastflow.files import flocked
from fastflow.repo.core import GitRepo, _tree_at

log = logging.getLogger(__name__)

_LOCKS = ".locks"


def snapshot_tree(repo: GitRepo, commit_or_tree: str, subpath: str, dest_root: Path) -> Path:
    """Materialise the tree at `subpath` of a commit (or tree) as `dest_root/<tree_id>/`.

    Returns the existing directory when that tree was already materialised. Executable bits
    are kept; symlinks are created as git holds them, even those leading out of the snapshot,
    so that what reads the snapshot (discovery, config) judges them exactly as `fastflow
    validate` judges a working tree (`fastflow.config.links`), never a file silently missing;
    submodules are skipped. Files and folders are read-only.
    """
    tree = _tree_at(repo, commit_or_tree, subpath)
    if tree is None:
        raise RepositoryError(
            f"{repo.path}: no folder {subpath!r} at {commit_or_tree}; check `pipelines_dir`"
        )
    dest_root = Path(dest_root)
    final = dest_root / str(tree.id)
    if final.is_dir():
        return final
    dest_root.mkdir(parents=True, exist_ok=True)
    tmp = dest_root / f".tmp-{tree.id}-{uuid.uuid4().hex[:8]}"
    with pin_snapshot(dest_root, str(tree.id)):  # a concurrent gc must not remove our temp dir
        tmp.mkdir()
        try:
            _write_tree(repo._git, tree, tmp, "")
            _make_read_only(tmp)
            os.rename(tmp, final)
        except OSError:
            _remove(tmp)
            if final.is_dir():  # another process won the race with the same content
                return final
            raise
    return final


def _write_tree(git: pygit2.Repository, tree: pygit2.Tree, root: Path, rel: str) -> None:
    for entry in tree:
        name_rel = posixpath.join(rel, entry.name) if rel else entry.name
        target = root / name_rel
        mode = entry.filemode
        if mode == FileMode.TREE:
            target.mkdir()
            _write_tree(git, git[entry.id], root, name_rel)
        elif mode == FileMode.LINK:
            _write_link(git[entry.id].data, target, name_rel)
        elif mode == FileMode.COMMIT:
            log.warning("snapshot: submodule %s skipped (submodules are not supported)", name_rel)
        else:
            target.write_bytes(git[entry.id].data)
            target.chmod(0o555 if mode == FileMode.BLOB_EXECUTABLE else 0o444)


def _write_link(link: bytes, target: Path, name_rel: str) -> None:
    # Byte for byte, like a checkout. One leading out of the snapshot is kept too: Fast-Flow
    # never reads through it (discovery and config refuse it, as validate does), and a run
    # in a container resolves it inside the container.
    if b"\0" in link or not link:
        log.warning("snapshot: symlink %s has no valid target; skipped", name_rel)
        return
    os.symlink(os.fsdecode(link), target)


def _make_read_only(root: Path) -> None:
    for dirpath, dirnames, _ in os.walk(root, topdown=False):
        for d in dirnames:
            p = Path(dirpath) / d
            if not p.is_symlink():
                p.chmod(0o555)
    root.chmod(0o555)


def _remove(path: Path) -> None:
    def make_writable(func, p, _exc):  # read-only folders must be made writable to delete
        parent = os.path.dirname(p)
        os.chmod(parent, stat.S_IRWXU)
        if os.path.isdir(p) and not os.path.islink(p):
            os.chmod(p, stat.S_IRWXU)
        func(p)

    if path.exists() or path.is_symlink():
        for dirpath, dirnames, _ in os.walk(path):
            os.chmod(dirpath, stat.S_IRWXU)
        shutil.rmtree(path, onerror=make_writable)


@contextmanager
def pin_snapshot(dest_root: Path, tree_id: str) -> Iterator[None]:
    """Hold snapshot `tree_id` in use (a shared flock) so `gc_snapshots` never removes it."""
    locks = Path(dest_root) / _LOCKS
    locks.mkdir(parents=True, exist_ok=True)
    with flocked(locks / f"{tree_id}.lock", fcntl.LOCK_SH):
        yield


def gc_snapshots(dest_root: Path, keep: Iterable[str] = ()) -> list[str]:
    """Remove snapshots not in `keep` and not pinned, plus stale temp dirs; returns removed ids."""
    dest_root = Path(dest_root)
    if not dest_root.is_dir():
        return []
    keep = set(keep)
    removed = []
    for child in sorted(dest_root.iterdir()):
        name = child.name
        if name == _LOCKS:
            continue
        if name.startswith(".tmp-"):
            _remove_if_unpinned(dest_root, name.split("-")[1], child)
            continue
        if name in keep or not child.is_dir():
            continue
        if _remove_if_unpinned(dest_root, name, child):
            removed.append(name)
    return removed


def _remove_if_unpinned(dest_root: Path, tree_id: str, path: Path) -> bool:
    lock = dest_root / _LOCKS / f"{tree_id}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    try:
        with flocked(lock, fcntl.LOCK_EX | fcntl.LOCK_NB):
            _remove(path)
            return True
    except BlockingIOError:
        return False  # a run (in this or another process) is using it
