"""What a commit changed, in pipeline terms: `compute_changes` is a pure function of the changed
paths; `change_set` reads them (and the pipeline folders of both commits) from git.

The daemon diffs old..new with `fastflow.repo.changed_paths`, lists the pipeline folders of
both commits, and calls `compute_changes` to learn which pipelines were added, removed or
changed, and for a changed pipeline what changed: its code, its requirements (pre-heat) or its
metadata (re-validate; pre-heat too when `python_version` moved). `.fastflow/` files are
reported separately.
"""
from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from typing import Collection, Iterable, Mapping

from fastflow import repo as git
from fastflow.humanize import without_surrogates

CONFIG_DIR = ".fastflow"
ENTRY_POINTS = ("main.py", "main.ipynb")
REQUIREMENTS_FILE = "requirements.txt"


@dataclass(frozen=True)
class PipelineChange:
    """How one existing pipeline changed: which kinds of file, and the paths (repo-relative)."""

    name: str
    code: bool = False
    requirements: bool = False
    metadata: bool = False
    paths: tuple[str, ...] = ()

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "code": self.code,
            "requirements": self.requirements,
            "metadata": self.metadata,
            "paths": list(self.paths),
        }


@dataclass(frozen=True)
class ChangeSet:
    """Everything one sync brings: pipelines added/removed/changed, config and other files."""

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed: tuple[PipelineChange, ...] = ()
    config_files: tuple[str, ...] = ()  # paths under .fastflow/ that changed
    other_paths: tuple[str, ...] = ()  # changed paths outside any pipeline and .fastflow/
    first_sync: bool = False
    changed_by_name: Mapping[str, PipelineChange] = field(default_factory=dict, compare=False)

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.changed or self.config_files)

    def needs_preheat(self) -> tuple[str, ...]:
        """Pipelines whose dependencies may differ: added ones, and changed requirements or
        metadata (the metadata holds `python_version`; the caller compares the parsed value)."""
        names = set(self.added)
        names.update(c.name for c in self.changed if c.requirements or c.metadata)
        return tuple(sorted(names))

    def to_json(self) -> dict:
        return {
            "first_sync": self.first_sync,
            "added": list(self.added),
            "removed": list(self.removed),
            "changed": [c.to_json() for c in self.changed],
            "config_files": list(self.config_files),
            "other_paths": list(self.other_paths),
        }


def normalise_pipelines_dir(pipelines_dir: str) -> str:
    """`pipelines_dir` as a clean relative path, `""` for the repository root (`.`)."""
    cleaned = posixpath.normpath(pipelines_dir.strip().strip("/") or ".")
    return "" if cleaned == "." else cleaned


def pipeline_of(path: str, pipelines_dir: str) -> tuple[str, str] | None:
    """(pipeline folder, path inside it) for a repo-relative `path`, or None when the path is
    not inside a candidate pipeline folder (hidden `.x` and private `_x` folders never are)."""
    base = normalise_pipelines_dir(pipelines_dir)
    if base:
        if not path.startswith(base + "/"):
            return None
        path = path[len(base) + 1 :]
    name, sep, inner = path.partition("/")
    if not sep or not name or name.startswith((".", "_")):
        return None
    return name, inner


def pipelines_in(folders: Mapping[str, Collection[str]]) -> frozenset[str]:
    """Candidate pipelines of one commit: from {folder name: file names in it}, the folders
    with an entry point (`main.py` or `main.ipynb`) whose name is not hidden or private.
    Validity (metadata, name rules) is discovery's business, not change detection's."""
    return frozenset(
        name
        for name, files in folders.items()
        if not name.startswith((".", "_")) and any(e in files for e in ENTRY_POINTS)
    )


def _kind(name: str, inner: str) -> str:
    if inner == REQUIREMENTS_FILE:
        return "requirements"
    if inner in ("pipeline.json", f"{name}.json"):
        return "metadata"
    return "code"


def compute_changes(
    paths: Iterable[str],
    pipelines_dir: str,
    old_pipelines: Collection[str] | None,
    new_pipelines: Collection[str],
) -> ChangeSet:
    """The change set of one sync from the changed `paths` (repo-relative, `/`-separated).

    `old_pipelines` is None on the first sync (everything is new). A pipeline in both sets
    with a changed path is changed; only in the new set, added; only in the old, removed.
    """
    first = old_pipelines is None
    old = frozenset(old_pipelines or ())
    new = frozenset(new_pipelines)
    touched: dict[str, dict] = {}
    config: list[str] = []
    other: list[str] = []
    for path in sorted(set(paths)):
        if path == CONFIG_DIR or path.startswith(CONFIG_DIR + "/"):
            config.append(path)
            continue
        located = pipeline_of(path, pipelines_dir)
        if located is None or located[0] not in (old | new):
            other.append(path)
            continue
        name, inner = located
        entry = touched.setdefault(name, {"paths": []})
        entry[_kind(name, inner)] = True
        entry["paths"].append(path)
    changed = tuple(
        PipelineChange(
            name,
            code=bool(info.get("code")),
            requirements=bool(info.get("requirements")),
            metadata=bool(info.get("metadata")),
            paths=tuple(info["paths"]),
        )
        for name, info in sorted(touched.items())
        if name in old and name in new
    )
    return ChangeSet(
        added=tuple(sorted(new - old)),
        removed=tuple(sorted(old - new)),
        changed=changed,
        config_files=tuple(config),
        other_paths=tuple(other),
        first_sync=first,
        changed_by_name={c.name: c for c in changed},
    )


def pipeline_folders(repo: git.GitRepo, commit: str | None, pipelines_dir: str) -> frozenset[str]:
    """Candidate pipeline folders (with `main.py`/`main.ipynb`) at `commit`; empty for None."""
    if commit is None:
        return frozenset()
    base = normalise_pipelines_dir(pipelines_dir)
    folders = {
        item.name: {f.name for f in git.list_tree(repo, commit, f"{base}/{item.name}".strip("/"))}
        for item in git.list_tree(repo, commit, base)
        if item.kind == "tree"
    }
    return frozenset(without_surrogates(name) for name in pipelines_in(folders))


def change_set(repo: git.GitRepo, old: str | None, new: str, pipelines_dir: str,
               old_pipelines_dir: str | None = None) -> ChangeSet:
    """What commit `new` changed since `old` (None: first sync), in pipeline terms.

    `pipelines_dir` is where discovery found the pipelines of `new`, `old_pipelines_dir` (default:
    the same) those of `old`: they differ when config.yaml moved it, or when a `pipelines/` folder
    appeared in a repository that had its pipelines at the root."""
    # Names as discovery spells them: bytes that are not UTF-8 as \xNN, never a lone surrogate
    paths = [without_surrogates(c.path) for c in git.changed_paths(repo, old, new)]
    before = pipelines_dir if old_pipelines_dir is None else old_pipelines_dir
    old_names = None if old is None else pipeline_folders(repo, old, before)
    return compute_changes(paths, pipelines_dir, old_names, pipeline_folders(repo, new, pipelines_dir))
