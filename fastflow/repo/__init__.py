"""The git adapter: the only part of Fast-Flow that imports pygit2.

- `core`: open repositories, resolve branches, read blobs/trees, diff commits.
- `write`: build trees path by path, write commits, move refs with compare-and-swap.
- `snapshot`: immutable on-disk snapshots of trees, keyed by tree id, with GC.
- `remote`: mirror fetches, branch fetches and pushes with credentials from callbacks.
"""
from __future__ import annotations

from fastflow.repo.core import (
    ChangedPath,
    CommitInfo,
    GitRepo,
    TreeItem,
    branch_head,
    changed_paths,
    commit_info,
    find_repo,
    head_branch,
    init_repo,
    list_tree,
    open_repo,
    read_blob,
    resolve_branch,
    tree_id,
)
from fastflow.repo.remote import (
    Credentials,
    PushResult,
    credentials_from_env,
    fetch_branch,
    fetch_ref,
    mirror_fetch,
    push_branch,
    push_ref_if,
)
from fastflow.repo.snapshot import gc_snapshots, pin_snapshot, snapshot_tree
from fastflow.repo.write import (
    BlobRef,
    Change,
    RefConflict,
    build_tree,
    commit_file,
    delete_ref,
    diff_blobs,
    make_commit,
    merge_base,
    ref_file,
    update_ref,
)

__all__ = [
    "BlobRef",
    "Change",
    "ChangedPath",
    "CommitInfo",
    "Credentials",
    "GitRepo",
    "PushResult",
    "RefConflict",
    "TreeItem",
    "branch_head",
    "build_tree",
    "changed_paths",
    "commit_file",
    "commit_info",
    "credentials_from_env",
    "delete_ref",
    "diff_blobs",
    "fetch_branch",
    "fetch_ref",
    "find_repo",
    "gc_snapshots",
    "head_branch",
    "init_repo",
    "list_tree",
    "make_commit",
    "merge_base",
    "mirror_fetch",
    "open_repo",
    "pin_snapshot",
    "push_branch",
    "push_ref_if",
    "read_blob",
    "ref_file",
    "resolve_branch",
    "snapshot_tree",
    "tree_id",
    "update_ref",
]
