"""Find the pipelines of a repository: folders under `pipelines_dir`, validated one by one.

A pipeline is a direct sub-folder of `pipelines_dir` with `main.py` (or `main.ipynb` when its
metadata says `"type": "notebook"`). Without `pipelines_dir` in config.yaml that is `pipelines/`,
or the repository root when there is no `pipelines/` (the original Fast-Flow's template keeps its
pipelines there). Each folder is judged on its own, so one invalid pipeline never hides the
others; then checks that span pipelines run (duplicate webhook keys, trigger cycles, downstream
triggers naming a missing pipeline). Reads the file system; all parsing is in `config`.
"""
from __future__ import annotations

import os
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

from fastflow.config import CONFIG_FILE, parse_pipeline_metadata
from fastflow.config.links import link_problem
from fastflow.config.pipeline import run_config_field
from fastflow.config.values import NAME_RE
from fastflow.config.view import resolved_view
from fastflow.errors import PipelineNotFound
from fastflow.humanize import did_you_mean, visible_controls, without_surrogates
from fastflow.model import (
    InvalidPipeline,
    Pipeline,
    PipelineType,
    Problem,
    RepoConfig,
    Severity,
)

__all__ = ["Discovery", "discover", "find_pipeline", "resolved_view"]

ENTRY = {PipelineType.SCRIPT: "main.py", PipelineType.NOTEBOOK: "main.ipynb"}
REQUIREMENTS = "requirements.txt"
ROOT_DIR = "."
DEFAULT_SOURCE = "default"
AT_ROOT_SOURCE = "default, there is no pipelines/ folder"


@dataclass(frozen=True)
class Discovery:
    """What `discover` found: valid and invalid pipelines by name, and repository-level problems.

    `problems` holds findings that belong to no single pipeline (a missing `pipelines_dir`);
    each invalid pipeline carries its own problems, each valid one its warnings.
    """

    root: Path
    pipelines_dir: str  # as resolved: "." when the root was chosen for want of pipelines/
    pipelines: Mapping[str, Pipeline] = field(default_factory=dict)
    invalid: Mapping[str, InvalidPipeline] = field(default_factory=dict)
    problems: tuple[Problem, ...] = ()
    pipelines_dir_source: str = DEFAULT_SOURCE  # config.yaml, default, or AT_ROOT_SOURCE

    @property
    def location(self) -> str:
        """Where the pipelines were looked for, in words: `pipelines/`, `the repository root`."""
        return "the repository root" if self.pipelines_dir == ROOT_DIR else f"{self.pipelines_dir}/"

    @property
    def names(self) -> list[str]:
        """Every pipeline name, valid or not, sorted."""
        return sorted({*self.pipelines, *self.invalid})

    @property
    def warnings(self) -> tuple[Problem, ...]:
        """Repository-level warnings and the warnings of every valid pipeline."""
        found = [p for p in self.problems if p.severity is Severity.WARNING]
        for pipeline in self.pipelines.values():
            found.extend(pipeline.warnings)
        return tuple(found)

    def all_problems(self) -> list[Problem]:
        """Every error and warning of the repository's pipelines, in name order."""
        found = list(self.problems)
        for name in self.names:
            if name in self.invalid:
                found.extend(self.invalid[name].problems)
            else:
                found.extend(self.pipelines[name].warnings)
        return found


def discover(root: Path, config: RepoConfig) -> Discovery:
    """Find and validate every pipeline of the repository at `root` under `config.pipelines_dir`.

    Never raises for bad pipelines: each becomes an `InvalidPipeline` with its problems. Folders
    starting with "." or "_" and folders with neither an entry point nor a metadata file are not
    pipelines and are skipped silently; at the repository root a `<name>.json` alone does not
    make a folder a pipeline either (`data/data.json` is data), `pipeline.json` does.
    """
    root = Path(root).resolve()
    pipelines_dir, source = pipelines_dir_of(root, config)
    base = root / pipelines_dir
    problem = _check_pipelines_dir(root, base, config)
    if problem is not None:
        return Discovery(root, pipelines_dir, problems=(problem,), pipelines_dir_source=source)
    pipelines: dict[str, Pipeline] = {}
    invalid: dict[str, InvalidPipeline] = {}
    at_root = base.resolve() == root
    for folder in sorted(base.iterdir(), key=lambda p: p.name):
        found = _inspect(root, folder, config, at_root)
        if isinstance(found, Pipeline):
            pipelines[found.name] = found
        elif isinstance(found, InvalidPipeline):
            invalid[found.name] = found
    _check_webhook_keys(root, pipelines, invalid)
    _check_trigger_cycles(root, pipelines, invalid)
    _resolve_triggers(root, pipelines, invalid)
    problems = ()
    if source == AT_ROOT_SOURCE and not pipelines and not invalid:
        problems = (Problem(
            CONFIG_FILE, "pipelines_dir",
            'there is no "pipelines" folder and no folder at the repository root has a main.py; '
            "create pipelines/<name>/main.py or set pipelines_dir in .fastflow/config.yaml",
            Severity.WARNING,
        ),)
    return Discovery(root, pipelines_dir, pipelines, invalid, problems, source)


def pipelines_dir_of(root: Path, config: RepoConfig) -> tuple[str, str]:
    """The folder of `root` whose sub-folders are pipelines, and where that choice came from.

    `pipelines_dir` from config.yaml always wins. Otherwise `pipelines/` when the tree has one
    (a symlink too: it is judged, never skipped), else the repository root, as in the original
    Fast-Flow's template. Judged per tree, so the daemon decides per commit as validate does.
    """
    if config.sources.get("pipelines_dir") == CONFIG_FILE:
        return config.pipelines_dir, CONFIG_FILE
    if os.path.lexists(Path(root) / config.pipelines_dir):
        return config.pipelines_dir, DEFAULT_SOURCE
    return ROOT_DIR, AT_ROOT_SOURCE


def find_pipeline(discovery: Discovery, name: str) -> Pipeline:
    """The valid pipeline called `name`; `PipelineNotFound` says why when there is none.

    An invalid pipeline's message lists its errors; an unknown name gets a did-you-mean.
    """
    if name in discovery.pipelines:
        return discovery.pipelines[name]
    if name in discovery.invalid:  # a folder name may hold a newline: each problem one line
        errors = [p for p in discovery.invalid[name].problems if p.severity is Severity.ERROR]
        lines = "\n".join(f"  {visible_controls(str(p), lines=False)}" for p in errors)
        shown = visible_controls(name, lines=False)
        raise PipelineNotFound(f'pipeline "{shown}" is invalid; fix it first:\n{lines}')
    where = (
        "the repository root" if discovery.pipelines_dir == ROOT_DIR
        else f'"{discovery.pipelines_dir}"'
    )
    if discovery.pipelines_dir_source == AT_ROOT_SOURCE:
        where += " (there is no pipelines/ folder)"
    hint = did_you_mean(name, discovery.names)
    if not hint and not discovery.names:
        hint = "; it has no pipelines"
    raise PipelineNotFound(f'no pipeline named "{name}" in {where}{hint}')


# --- one folder ------------------------------------------------------------------------------


def _check_pipelines_dir(root: Path, base: Path, config: RepoConfig) -> Problem | None:
    link = link_problem(root, base, fix="use a folder inside it") if base.is_symlink() else None
    if link is not None:
        return Problem(CONFIG_FILE, "pipelines_dir", f'"{config.pipelines_dir}" {link}')
    if not _inside(root, base.resolve()):
        return Problem(
            CONFIG_FILE, "pipelines_dir",
            f'"{config.pipelines_dir}" leads outside the repository (to {base.resolve()}); '
            "use a folder inside it",
        )
    if not base.is_dir():
        explicit = config.sources.get("pipelines_dir") == CONFIG_FILE
        return Problem(
            CONFIG_FILE, "pipelines_dir",
            f'"{config.pipelines_dir}" is not a folder of the repository; create it or set '
            "pipelines_dir in .fastflow/config.yaml",
            Severity.ERROR if explicit else Severity.WARNING,
        )
    return None


def _inspect(
    root: Path, folder: Path, config: RepoConfig, at_root: bool = False
) -> Pipeline | InvalidPipeline | None:
    name = folder.name
    if name.startswith((".", "_")):
        return None
    link = link_problem(root, folder, fix="move the pipeline into the repository")
    if link is not None and not folder.exists():  # a loop or a dangling link: say so
        shown = without_surrogates(name)
        return InvalidPipeline(shown, folder, (Problem(_rel(root, folder), "", link,
                                                       pipeline=shown),))
    if not folder.is_dir():
        return None
    files, present = _folder_files(folder)
    if not _is_pipeline(name, present, at_root):
        return None
    rel_folder = _rel(root, folder)
    if without_surrogates(name) != name:  # never a lone surrogate in a name: it stops writes
        shown = without_surrogates(name)
        return InvalidPipeline(shown, folder, (Problem(
            rel_folder, "",
            f'"{shown}" is not a valid pipeline name (it is not UTF-8); rename the folder using '
            "1-63 letters, digits, '_', '.' or '-', starting with a letter or digit",
            pipeline=shown,
        ),))
    problems: list[Problem] = []
    if not NAME_RE.fullmatch(name):
        problems.append(Problem(
            rel_folder, "",
            f'"{name}" is not a valid pipeline name; rename the folder using 1-63 letters, '
            "digits, '_', '.' or '-', starting with a letter or digit",
            pipeline=name,
        ))
    if link is not None:  # a folder linked outside the repository
        problems.append(Problem(rel_folder, "", link, pipeline=name))
        return InvalidPipeline(name, folder, tuple(problems))
    unsafe = {key for key in present if _bad_link(root, files[key], name, problems)}
    return _build(root, folder, files, present, unsafe, problems, config)


def _folder_files(folder: Path) -> tuple[dict[str, Path], set[str]]:
    """The files discovery looks at in a pipeline folder, and those of them that exist."""
    name = folder.name
    files = {
        key: folder / key
        for key in ("main.py", "main.ipynb", "pipeline.json", f"{name}.json", REQUIREMENTS)
    }
    return files, {key for key, path in files.items() if os.path.lexists(path)}


def _is_pipeline(name: str, present: set[str], at_root: bool) -> bool:
    """Whether a folder holding `present` is a pipeline: an entry point or a metadata file (at
    the repository root `<name>.json` alone is data, not a pipeline)."""
    markers = {"main.py", "main.ipynb", "pipeline.json"} | (set() if at_root else {f"{name}.json"})
    return bool(present & markers)


def metadata_files(root: Path, config: RepoConfig) -> list[tuple[str, Path]]:
    """(pipeline, metadata file) of every folder discovery takes for a pipeline, as it finds
    them, without parsing them (`fastflow secrets import-fernet` reads them raw: they are
    invalid while they hold encrypted_env). Links leaving the repository are left out (they are
    validate's error)."""
    root = Path(root).resolve()
    pipelines_dir, _ = pipelines_dir_of(root, config)
    base = root / pipelines_dir
    if not base.is_dir() or link_problem(root, base) is not None:
        return []
    at_root = base.resolve() == root
    found = []
    for folder in sorted(base.iterdir(), key=lambda p: p.name):
        name = folder.name
        if name.startswith((".", "_")) or not folder.is_dir() or link_problem(root, folder):
            continue
        files, present = _folder_files(folder)
        key = _metadata_key(name, present)
        if _is_pipeline(name, present, at_root) and key is not None \
                and link_problem(root, files[key]) is None:
            found.append((name, files[key]))
    return found


def _bad_link(root: Path, path: Path, name: str, problems: list[Problem]) -> bool:
    """Record a problem and return True when `path` is a symlink that must not be followed."""
    message = link_problem(root, path)
    if message is None:
        return False
    problems.append(Problem(_rel(root, path), "", message, pipeline=name))
    return True


def _build(
    root: Path, folder: Path, files: dict[str, Path], present: set[str], unsafe: set[str],
    problems: list[Problem], config: RepoConfig,
) -> Pipeline | InvalidPipeline:
    """Parse the metadata and judge the entry point; files in `unsafe` exist but are not read."""
    name = folder.name
    meta_key = _metadata_key(name, present)
    if meta_key == "pipeline.json" and f"{name}.json" in present:
        problems.append(Problem(
            _rel(root, files[f"{name}.json"]), "",
            "ignored because pipeline.json exists; merge it into pipeline.json or delete it",
            Severity.WARNING, name,
        ))
    if meta_key in unsafe:
        meta_key = None
    text = _read(root, files[meta_key], name, problems) if meta_key else None
    meta_file = _rel(root, files[meta_key]) if meta_key else _rel(root, folder)
    parsed = parse_pipeline_metadata(text, name=name, file=meta_file, config=config)
    problems.extend(parsed.problems)
    entry = ENTRY[parsed.type]
    _check_entry(
        parsed, entry, present, _metadata_key(name, present), meta_file, _rel(root, folder),
        problems, name,
    )
    if any(p.severity is Severity.ERROR for p in problems):
        return InvalidPipeline(name, folder, tuple(problems))
    return Pipeline(
        name=name, path=folder, entry=entry,
        metadata_file=files[meta_key] if meta_key else None,
        requirements=files[REQUIREMENTS] if REQUIREMENTS in present - unsafe else None,
        **parsed.values,
        warnings=tuple(problems),
        sources=dict(parsed.sources),
    )


def _metadata_key(name: str, present: set[str]) -> str | None:
    if "pipeline.json" in present:
        return "pipeline.json"
    return f"{name}.json" if f"{name}.json" in present else None


def _check_entry(
    parsed: Any, entry: str, present: set[str], meta_key: str | None, meta_file: str,
    rel_folder: str, problems: list[Problem], name: str,
) -> None:
    if entry in present:
        return
    if parsed.type is PipelineType.NOTEBOOK:
        problems.append(Problem(
            meta_file, "type",
            'is "notebook" but the folder has no main.ipynb; add main.ipynb or set "type": "script"',
            pipeline=name,
        ))
        return
    type_unknown = any(p.field in ("", "type") for p in parsed.errors)
    if "main.ipynb" in present and type_unknown:
        return  # the metadata is broken; its own errors say so, guessing the entry would mislead
    if "main.ipynb" in present:
        target = meta_key or "pipeline.json"
        message = f'has main.ipynb but no main.py; add "type": "notebook" to {target} to run the notebook'
    else:
        message = f'has {meta_key} but no main.py; add main.py (or main.ipynb with "type": "notebook")'
    problems.append(Problem(rel_folder, "", message, pipeline=name))


def _read(root: Path, path: Path, name: str, problems: list[Problem]) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        problems.append(Problem(_rel(root, path), "", "is not UTF-8 text; save it as UTF-8", pipeline=name))
    except OSError as exc:
        problems.append(Problem(_rel(root, path), "", f"cannot be read: {exc.strerror}", pipeline=name))
    return "{}"


# --- across pipelines --------------------------------------------------------------------------


def _check_webhook_keys(
    root: Path, pipelines: dict[str, Pipeline], invalid: dict[str, InvalidPipeline]
) -> None:
    owners: dict[str, list[tuple[str, str]]] = {}
    for pipeline in pipelines.values():
        for field_path, key in _webhook_keys(pipeline):
            owners.setdefault(key, []).append((pipeline.name, field_path))
    clashes: dict[str, list[Problem]] = {}
    for users in owners.values():
        for name, field_path in users:
            for other, other_field in users:
                if other == name:
                    continue
                clashes.setdefault(name, []).append(Problem(
                    _meta_rel(root, pipelines[name]), field_path,
                    f'is the same webhook key as pipeline "{other}" ({other_field}); webhook keys '
                    "must be unique across pipelines",
                    pipeline=name,
                ))
    _invalidate(pipelines, invalid, clashes)


def _webhook_keys(pipeline: Pipeline) -> list[tuple[str, str]]:
    keys = [("webhook_key", pipeline.webhook_key)] if pipeline.webhook_key else []
    for index, rc in enumerate(pipeline.run_configs):
        if rc.webhook_key:
            keys.append((f"{run_config_field(index, rc.id)}.webhook_key", rc.webhook_key))
    return keys


def _check_trigger_cycles(
    root: Path, pipelines: dict[str, Pipeline], invalid: dict[str, InvalidPipeline]
) -> None:
    """Every pipeline on a cycle of triggers that can fire becomes invalid, with an error at each
    of its triggers on the cycle (self-triggers are refused by `config` already). Invalid, not
    just inert: its last valid version stays active in the daemon, as for any other error, so a
    push that closes a cycle changes nothing that runs, and no cycle ever reaches the queue."""
    edges = {
        name: [(index, t.pipeline) for index, t in enumerate(pipeline.downstream)
               if _can_fire(t) and _inert_reason(t, pipelines, invalid, [])[0] is None]
        for name, pipeline in pipelines.items()
    }
    errors: dict[str, list[Problem]] = {}
    for name in sorted(edges):
        for index, target in edges[name]:
            back = _shortest_path(edges, target, name)
            if back is None:
                continue
            cycle = " -> ".join([name, *back])
            errors.setdefault(name, []).append(Problem(
                _meta_rel(root, pipelines[name]), f"downstream_triggers[{index}].pipeline",
                f"the triggers form a cycle {cycle}; a run would trigger itself forever; remove "
                "one of the triggers",
                pipeline=name,
            ))
    _invalidate(pipelines, invalid, errors)


def _invalidate(pipelines: dict[str, Pipeline], invalid: dict[str, InvalidPipeline],
                errors: dict[str, list[Problem]]) -> None:
    """Move each pipeline named in `errors` from `pipelines` to `invalid`, warnings kept."""
    for name, found in errors.items():
        pipeline = pipelines.pop(name)
        invalid[name] = InvalidPipeline(name, pipeline.path, (*pipeline.warnings, *found))


def _can_fire(trigger: Any) -> bool:
    return bool(trigger.on_success or trigger.on_failure or trigger.on_route)


def _shortest_path(
    edges: Mapping[str, list[tuple[int, str]]], start: str, goal: str
) -> list[str] | None:
    """The names from `start` to `goal` along `edges` (both included), fewest hops; None when
    `goal` cannot be reached. Breadth first, without recursion: any number of pipelines."""
    parents: dict[str, str | None] = {start: None}
    queue = deque([start])
    while queue:
        current = queue.popleft()
        if current == goal:
            path = [current]
            while parents[path[-1]] is not None:
                path.append(parents[path[-1]])
            return path[::-1]
        for _, target in edges.get(current, ()):
            if target not in parents:
                parents[target] = current
                queue.append(target)
    return None


def _resolve_triggers(
    root: Path, pipelines: dict[str, Pipeline], invalid: dict[str, InvalidPipeline]
) -> None:
    names = sorted({*pipelines, *invalid})
    for name, pipeline in list(pipelines.items()):
        triggers, warnings = [], list(pipeline.warnings)
        for index, trigger in enumerate(pipeline.downstream):
            reason, hint = _inert_reason(trigger, pipelines, invalid, names)
            if reason is not None:
                trigger = replace(trigger, inert_reason=reason)
                warnings.append(Problem(
                    _meta_rel(root, pipeline), f"downstream_triggers[{index}].pipeline",
                    f"{reason}; this trigger will not fire{hint}", Severity.WARNING, name,
                ))
            triggers.append(trigger)
        pipelines[name] = replace(pipeline, downstream=tuple(triggers), warnings=tuple(warnings))


def _inert_reason(
    trigger: Any, pipelines: Mapping[str, Pipeline], invalid: Mapping[str, InvalidPipeline],
    names: list[str],
) -> tuple[str | None, str]:
    """Why a trigger cannot fire (None when it can) and a did-you-mean suffix."""
    target = trigger.pipeline
    if target in invalid:
        return f'pipeline "{target}" is invalid', ""
    if target not in pipelines:
        return f'no pipeline named "{target}"', did_you_mean(target, names)
    if trigger.run_config_id is not None:
        ids = [rc.id for rc in pipelines[target].run_configs]
        if trigger.run_config_id not in ids:
            hint = did_you_mean(trigger.run_config_id, ids)
            return f'pipeline "{target}" has no run configuration "{trigger.run_config_id}"', hint
    return None, ""


# --- paths -------------------------------------------------------------------------------------


def _inside(root: Path, path: Path) -> bool:
    return path == root or root in path.parents


def _rel(root: Path, path: Path) -> str:
    try:
        return without_surrogates(path.relative_to(root).as_posix())
    except ValueError:
        return without_surrogates(path.as_posix())


def _meta_rel(root: Path, pipeline: Pipeline) -> str:
    return _rel(root, pipeline.metadata_file or pipeline.path)
