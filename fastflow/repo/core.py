"""Reading a git repository with pygit2: open, resolve branches, read blobs and trees, diff commits.

`GitRepo` is an opaque handle; the rest of Fast-Flow passes it to the functions of
`fastflow.repo` and never touches pygit2 itself (pygit2 is imported only in this package).
Object ids cross the package boundary as hex strings.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pygit2
from pygit2.enums import FileMode, ObjectType

from fastflow.errors import RepositoryError

# libgit2 keeps the objects it parses in a per-process cache of up to 256 MiB by default; a
# daemon that commits every run's record (new trees each time) grew ~35 KiB per run with it,
# ~30 KiB still with the cache capped at 4 MiB (its accounting counts raw object bytes, not
# what parsed trees take) and ~2 KiB with it off (bench/daemon_memory.py). Off, objects are
# re-read from the object database: reading a pipeline's newest 51 records costs a few ms more.
pygit2.settings.enable_caching(False)


@dataclass(frozen=True)
class CommitInfo:
    """A commit's identity and description: sha, tree id, message, author and commit time."""

    sha: str
    tree: str
    message: str
    author: str
    time: datetime
    parents: tuple[str, ...]


@dataclass(frozen=True)
class ChangedPath:
    """One path that differs between two commits; status is `A`, `D`, `M` or `T` (type change)."""

    path: str
    status: str


@dataclass(frozen=True)
class TreeItem:
    """One entry of a tree: its name, kind (`blob`, `tree`, `link`, `commit`), id and file mode."""

    name: str
    kind: str
    id: str
    mode: int


class GitRepo:
    """An open repository (bare or not). Create it with `open_repo` or `init_repo`."""

    def __init__(self, git: pygit2.Repository, path: Path) -> None:
        self._git = git
        self.path = path

    @property
    def bare(self) -> bool:
        return bool(self._git.is_bare)

    @property
    def git_dir(self) -> Path:
        """The `.git` directory (the repository itself when bare)."""
        return Path(self._git.path)

    def __repr__(self) -> str:
        return f"GitRepo({str(self.path)!r})"


def open_repo(path: Path | str) -> GitRepo:
    """Open the repository at `path` (a work tree, its `.git` or a bare repository)."""
    path = Path(path)
    try:
        return GitRepo(pygit2.Repository(str(path)), path)
    except (pygit2.GitError, KeyError) as exc:
        raise RepositoryError(
            f"{path}: not a git repository ({exc}); pass the path of a repository with --repo"
        ) from None


def init_repo(path: Path | str, bare: bool = False, initial_branch: str | None = None) -> GitRepo:
    """Create (or open, when it exists) a repository at `path`; used for mirrors, tests and
    `fastflow init`. `initial_branch`: the branch HEAD names before the first commit (default:
    libgit2's, which follows git's `init.defaultBranch`)."""
    path = Path(path)
    return GitRepo(pygit2.init_repository(str(path), bare=bare, initial_head=initial_branch), path)


def find_repo(path: Path | str) -> GitRepo | None:
    """The repository holding `path` (its work tree or git dir), searched upwards from `path`
    (or its nearest existing parent) as git does; None when `path` is in none."""
    start = Path(path).absolute()
    while not start.exists() and start != start.parent:
        start = start.parent
    found = pygit2.discover_repository(str(start))
    if found is None:
        return None
    git = pygit2.Repository(found)
    return GitRepo(git, Path(git.workdir or git.path))


def head_branch(repo: GitRepo) -> str | None:
    """The branch HEAD names, also before its first commit; None when HEAD is detached."""
    if repo._git.head_is_detached:
        return None
    target = repo._git.references.get("HEAD").target
    return target.removeprefix("refs/heads/") if isinstance(target, str) else None


def _ref_name(branch: str) -> str:
    return branch if branch.startswith("refs/") else f"refs/heads/{branch}"


def branch_head(repo: GitRepo, branch: str) -> str | None:
    """The commit sha `branch` points to, or None when the branch does not exist."""
    ref = repo._git.references.get(_ref_name(branch))
    if ref is None:
        return None
    return str(ref.resolve().target)


def resolve_branch(repo: GitRepo, branch: str) -> str:
    """The commit sha `branch` points to; `RepositoryError` when there is no such branch."""
    sha = branch_head(repo, branch)
    if sha is None:
        raise RepositoryError(
            f"{repo.path}: branch {branch!r} does not exist; push it first or set `branch` in "
            ".fastflow/config.yaml"
        )
    return sha


def _commit(repo: GitRepo, sha: str) -> pygit2.Commit:
    try:
        obj = repo._git[sha]
        return obj.peel(pygit2.Commit)
    except (KeyError, ValueError, pygit2.GitError, pygit2.InvalidSpecError):
        raise RepositoryError(f"{repo.path}: no commit {sha!r} in the repository") from None


def commit_info(repo: GitRepo, sha: str) -> CommitInfo:
    """Metadata of commit `sha`: ids, message, author and commit time (aware datetime)."""
    c = _commit(repo, sha)
    tz = timezone(timedelta(minutes=c.commit_time_offset))
    return CommitInfo(
        sha=str(c.id),
        tree=str(c.tree_id),
        message=c.message,
        author=f"{c.author.name} <{c.author.email}>",
        time=datetime.fromtimestamp(c.commit_time, tz),
        parents=tuple(str(p) for p in c.parent_ids),
    )


def _tree_at(repo: GitRepo, commit_or_tree: str, subpath: str = "") -> pygit2.Tree | None:
    """The tree at `subpath` of a commit or tree id; None when that path is absent."""
    try:
        obj = repo._git[commit_or_tree]
    except (KeyError, ValueError):
        raise RepositoryError(f"{repo.path}: no commit or tree {commit_or_tree!r}") from None
    tree = obj.peel(pygit2.Tree)
    sub = subpath.strip("/")
    if sub in ("", "."):
        return tree
    try:
        entry = tree[sub]
    except KeyError:
        return None
    return entry if isinstance(entry, pygit2.Tree) else None


def tree_id(repo: GitRepo, commit_or_tree: str, subpath: str = "") -> str | None:
    """The id of the tree at `subpath` of a commit (or tree), None when there is none."""
    tree = _tree_at(repo, commit_or_tree, subpath)
    return None if tree is None else str(tree.id)


def read_blob(repo: GitRepo, commit_or_tree: str, path: str) -> bytes | None:
    """The content of file `path` at a commit (or tree), or None when it is absent."""
    tree = _tree_at(repo, commit_or_tree)
    try:
        entry = tree[path.strip("/")]
    except KeyError:
        return None
    return entry.data if isinstance(entry, pygit2.Blob) else None


_KINDS = {ObjectType.BLOB: "blob", ObjectType.TREE: "tree", ObjectType.COMMIT: "commit"}


def list_tree(repo: GitRepo, commit_or_tree: str, subpath: str = "") -> list[TreeItem]:
    """The entries of the tree at `subpath` (sorted by name); empty when the path is absent."""
    tree = _tree_at(repo, commit_or_tree, subpath)
    if tree is None:
        return []
    items = []
    for entry in tree:
        kind = "link" if entry.filemode == FileMode.LINK else _KINDS.get(entry.type, "blob")
        items.append(TreeItem(entry.name, kind, str(entry.id), int(entry.filemode)))
    return items


def changed_paths(repo: GitRepo, old: str | None, new: str) -> list[ChangedPath]:
    """Every file path that differs between commits `old` and `new` (`old` None: all of `new`).

    Rename detection is off on purpose: a rename is a deletion plus an addition, so both the
    old and the new folder count as changed.
    """
    new_tree = _tree_at(repo, new)
    if old is None:
        diff = new_tree.diff_to_tree(swap=True)
    else:
        diff = repo._git.diff(_tree_at(repo, old), new_tree)
    out = []
    for delta in diff.deltas:
        status = delta.status_char()
        path = delta.old_file.path if status == "D" else delta.new_file.path
        out.append(ChangedPath(path, status))
    return out
