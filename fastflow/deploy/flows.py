"""Find the flows of a repository: `<flows folder>/<name>.json`, each validated on its own.

Where flows live (docs/flows.md): `.fastflow/flows/` with its scripts in `.fastflow/flows/tasks/`,
and a Featherflow project as it is, `flows/*.json` with `tasks/` at the repository root, both
found without configuration; `flows_dir` (and `tasks_dir`) in config.yaml replace them. Each flow
file is judged on its own, so an invalid flow never hides the others or touches a pipeline; then
what needs the tree is checked (the scripts and requirements exist inside the tasks folder, the
pipelines a task names are valid, no flow is called like a pipeline or another flow). Works on
any tree on disk: a working tree, or the immutable snapshot of a commit (`flows_at_commit`), so
the daemon reads the flows of a commit as `fastflow validate` reads the working tree.
"""
from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

from fastflow.config import CONFIG_FILE, check_repo_config
from fastflow.config.flows import parse_flow, task_field
from fastflow.config.links import link_problem
from fastflow.config.values import NAME_RE
from fastflow.deploy.discovery import Discovery, discover
from fastflow.errors import ConfigError, PipelineNotFound
from fastflow.humanize import did_you_mean, visible_controls, without_surrogates
from fastflow.model import Flow, InvalidFlow, Problem, RepoConfig, Severity

if TYPE_CHECKING:
    from fastflow import repo as git

FASTFLOW_FLOWS = (".fastflow/flows", ".fastflow/flows/tasks")
FEATHERFLOW_FLOWS = ("flows", "tasks")
DEFAULT_SOURCE = "default"


@dataclass(frozen=True)
class FlowFolder:
    """One place flows are read from: the folder of the `.json` files and of their scripts."""

    flows_dir: str  # relative to the repository root, posix
    tasks_dir: str
    source: str  # config.yaml or default


@dataclass(frozen=True)
class FlowDiscovery:
    """What `discover_flows` found: valid and invalid flows by name, and folder-level problems."""

    root: Path
    folders: tuple[FlowFolder, ...]
    flows: Mapping[str, Flow] = field(default_factory=dict)
    invalid: Mapping[str, InvalidFlow] = field(default_factory=dict)
    problems: tuple[Problem, ...] = ()

    @property
    def names(self) -> list[str]:
        """Every flow name, valid or not, sorted."""
        return sorted({*self.flows, *self.invalid})

    def all_problems(self) -> list[Problem]:
        """Every error and warning of the flows, in name order (folder problems first)."""
        found = list(self.problems)
        for name in self.names:
            found.extend(self.invalid[name].problems if name in self.invalid
                         else self.flows[name].warnings)
        return found


def flow_folders(root: Path, config: RepoConfig) -> tuple[FlowFolder, ...]:
    """Where the flows of the tree at `root` are read from (see the module doc).

    `flows_dir` from config.yaml is the only place when set, its scripts in `tasks_dir` (default
    `<flows_dir>/tasks`). Otherwise `.fastflow/flows/` and, when the tree has one, a Featherflow
    `flows/` folder at the root (its scripts in `tasks/`, or `tasks_dir` when that is set).
    """
    if config.flows_dir is not None:
        tasks = config.tasks_dir or posixpath.normpath(posixpath.join(config.flows_dir, "tasks"))
        return (FlowFolder(config.flows_dir, tasks, CONFIG_FILE),)
    folders = [FlowFolder(*FASTFLOW_FLOWS, DEFAULT_SOURCE)]
    if os.path.lexists(Path(root) / FEATHERFLOW_FLOWS[0]):
        tasks = config.tasks_dir or FEATHERFLOW_FLOWS[1]
        folders.append(FlowFolder(FEATHERFLOW_FLOWS[0], tasks,
                                  CONFIG_FILE if config.tasks_dir else DEFAULT_SOURCE))
    return tuple(folders)


def discover_flows(root: Path, config: RepoConfig, pipelines: Discovery) -> FlowDiscovery:
    """Find and validate every flow of the tree at `root` (pipelines as `pipelines` found them).

    Never raises for bad flows: each becomes an `InvalidFlow` with its problems. A folder that
    does not exist is no flow (an error only when config.yaml names it).
    """
    root = Path(root).resolve()
    folders = flow_folders(root, config)
    problems: list[Problem] = []
    found: dict[str, list[Flow | InvalidFlow]] = {}
    for folder in folders:
        base = root / folder.flows_dir
        problem = _folder_problem(root, folder, "flows_dir", folder.flows_dir)
        if problem is not None:
            problems.append(problem)
            continue
        if not base.is_dir():
            continue
        tasks_dir = root / folder.tasks_dir
        for path in sorted(base.iterdir(), key=lambda p: p.name):
            if path.suffix != ".json" or path.name.startswith((".", "_")):
                continue
            flow = _read_flow(root, path, tasks_dir, folder, config, pipelines)
            found.setdefault(flow.name, []).append(flow)
    flows: dict[str, Flow] = {}
    invalid: dict[str, InvalidFlow] = {}
    for name, versions in found.items():
        if len(versions) > 1:
            files = [v.file for v in versions]
            for version in versions:
                others = ", ".join(f for f in files if f != version.file)
                invalid[name] = _invalid(version, Problem(
                    version.file, "", f'is a second flow called "{name}" (also {others}); flow '
                    "names must be unique, rename one of the files"))
            continue
        flow = versions[0]
        if isinstance(flow, Flow):
            flows[name] = flow
        else:
            invalid[name] = flow
    return FlowDiscovery(root, folders, flows, invalid, tuple(problems))


def find_flow(found: FlowDiscovery, name: str) -> Flow:
    """The valid flow called `name`; `PipelineNotFound` (no such flow, or its errors) otherwise."""
    if name in found.flows:
        return found.flows[name]
    if name in found.invalid:
        errors = [p for p in found.invalid[name].problems if p.severity is Severity.ERROR]
        lines = "\n".join(f"  {visible_controls(str(p), lines=False)}" for p in errors)
        raise PipelineNotFound(f'flow "{visible_controls(name, lines=False)}" is invalid; fix it '
                               f"first:\n{lines}")
    where = " and ".join(f"{f.flows_dir}/" for f in found.folders)
    hint = did_you_mean(name, found.names) or ("" if found.names else "; it has no flows")
    raise PipelineNotFound(f'no flow named "{name}" in {where}{hint}')


def with_flow_triggers(pipelines: Discovery, flows: FlowDiscovery) -> Discovery:
    """`pipelines` with each downstream trigger that names a valid flow (and no pipeline) made
    live again: discovery judged it inert (`no pipeline named ...`) before the flows were known.
    Its warning goes; a trigger naming an invalid flow stays inert, saying so."""
    changed = {}
    for name, pipeline in pipelines.pipelines.items():
        triggers, dropped = [], set()
        for index, trigger in enumerate(pipeline.downstream):
            if trigger.inert_reason is not None and trigger.pipeline not in pipelines.pipelines:
                if trigger.pipeline in flows.flows:
                    trigger = replace(trigger, inert_reason=None)
                    dropped.add(f"downstream_triggers[{index}].pipeline")
                elif trigger.pipeline in flows.invalid:
                    trigger = replace(trigger, inert_reason=f'flow "{trigger.pipeline}" is invalid')
            triggers.append(trigger)
        if dropped:
            warnings = tuple(w for w in pipeline.warnings if w.field not in dropped)
            changed[name] = replace(pipeline, downstream=tuple(triggers), warnings=warnings)
    if not changed:
        return pipelines
    return replace(pipelines, pipelines={**pipelines.pipelines, **changed})


def flows_at_commit(repository: git.GitRepo, commit: str, snapshots: Path) -> FlowDiscovery:
    """The flows of `commit`, read from its immutable snapshot as `deploy_commit` reads its
    pipelines (with that commit's config.yaml; `ConfigError` when that one is invalid)."""
    # Imported here, not at the top: pygit2 costs ~60 ms of start-up, and `fastflow run` and
    # `fastflow validate` (which find flows in the working tree) never read a commit.
    from fastflow import repo as git

    info = git.commit_info(repository, commit)
    root = git.snapshot_tree(repository, info.tree, "", snapshots)
    config, problems = check_repo_config(root)
    if config is None:
        raise ConfigError("\n".join(str(p) for p in problems if p.severity is Severity.ERROR))
    return discover_flows(root, config, discover(root, config))


# --- one file --------------------------------------------------------------------------------


def _read_flow(root: Path, path: Path, tasks_dir: Path, folder: FlowFolder, config: RepoConfig,
               pipelines: Discovery) -> Flow | InvalidFlow:
    name = without_surrogates(path.stem)
    file = _rel(root, path)
    if not NAME_RE.fullmatch(name):
        return InvalidFlow(name, file, (Problem(
            file, "", f'"{name}" is not a valid flow name; rename the file using 1-63 letters, '
            "digits, '_', '.' or '-', starting with a letter or digit (the flow is named after "
            "its file)"),))
    link = link_problem(root, path)
    if link is not None:
        return InvalidFlow(name, file, (Problem(file, "", link),))
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return InvalidFlow(name, file, (Problem(file, "", "is not UTF-8 text; save it as UTF-8"),))
    except OSError as exc:
        return InvalidFlow(name, file, (Problem(file, "", f"cannot be read: {exc.strerror}"),))
    flow = parse_flow(text, name=name, file=file, path=path, tasks_dir=tasks_dir, config=config)
    if isinstance(flow, InvalidFlow):
        return flow
    errors = _tree_problems(root, flow, folder, pipelines)
    if name in pipelines.names:
        errors.append(Problem(
            file, "", f'"{name}" is also the name of a pipeline; flows and pipelines share one '
            "namespace (fastflow run NAME, schedules, triggers): rename the flow file"))
    return _invalid(flow, *errors) if errors else flow


def _tree_problems(root: Path, flow: Flow, folder: FlowFolder, pipelines: Discovery) -> list[Problem]:
    """What the flow file cannot say alone: its files exist in the tasks folder and the
    pipelines it names are valid."""
    problems: list[Problem] = []
    tasks_dir = root / folder.tasks_dir
    needs_folder = any(t.script or t.requirements for t in flow.tasks)
    if needs_folder:
        problem = _folder_problem(root, folder, "tasks_dir", folder.tasks_dir, flow.file)
        if problem is not None:
            return [problem]
        if not tasks_dir.is_dir():
            return [Problem(flow.file, "", f'its scripts are read from {folder.tasks_dir}/, which '
                            f"is not a folder of the repository; create it or set tasks_dir in "
                            f"{CONFIG_FILE}")]
    if flow.requirements and not _is_file(root, tasks_dir / flow.requirements):
        problems.append(Problem(flow.file, "requirements", f'"{flow.requirements}" does not exist '
                                f"in {folder.tasks_dir}/; add it or remove the key"))
    for index, task in enumerate(flow.tasks):
        where = task_field(index, task.id)
        if task.script:
            message = _file_problem(root, tasks_dir / task.script, task.script, folder.tasks_dir)
            if message:
                problems.append(Problem(flow.file, f"{where}.script", message))
        if task.requirements and task.requirements != flow.requirements:
            message = _file_problem(root, tasks_dir / task.requirements, task.requirements,
                                    folder.tasks_dir)
            if message:
                problems.append(Problem(flow.file, f"{where}.requirements", message))
        if task.pipeline:
            message = _pipeline_problem(task.pipeline, pipelines)
            if message:
                problems.append(Problem(flow.file, f"{where}.pipeline", message))
    return problems


def _file_problem(root: Path, path: Path, written: str, tasks_dir: str) -> str | None:
    link = link_problem(root, path)
    if link is not None:
        return f'"{written}" {link}'
    if not path.exists():
        near = [p.name for p in path.parent.glob("*")] if path.parent.is_dir() else []
        hint = did_you_mean(path.name, near)
        return f'"{written}" does not exist in {tasks_dir}/{hint or "; add it or fix the name"}'
    if not path.is_file():
        return f'"{written}" in {tasks_dir}/ is not a file; name a script such as "fetch.py"'
    return None


def _pipeline_problem(name: str, pipelines: Discovery) -> str | None:
    if name in pipelines.invalid:
        return f'pipeline "{name}" is invalid; fix it first (fastflow validate)'
    if name not in pipelines.pipelines:
        hint = did_you_mean(name, pipelines.names) or f"; the pipelines are in {pipelines.location}"
        return f'no pipeline named "{name}"{hint}'
    return None


def _folder_problem(root: Path, folder: FlowFolder, key: str, rel: str,
                    file: str | None = None) -> Problem | None:
    """A configured or default folder that is a link out of the repository (never followed)."""
    path = root / rel
    link = link_problem(root, path, fix="use a folder inside it") if path.is_symlink() else None
    if link is None:
        return None
    if folder.source == CONFIG_FILE:
        return Problem(CONFIG_FILE, key, f'"{rel}" {link}')
    return Problem(file or rel, "", f"{rel}/ {link}")


def _invalid(flow: Flow | InvalidFlow, *errors: Problem) -> InvalidFlow:
    kept = flow.warnings if isinstance(flow, Flow) else flow.problems
    return InvalidFlow(flow.name, flow.file, (*kept, *errors))


def _is_file(root: Path, path: Path) -> bool:
    return link_problem(root, path) is None and path.is_file()


def _rel(root: Path, path: Path) -> str:
    try:
        return without_surrogates(path.relative_to(root).as_posix())
    except ValueError:
        return without_surrogates(path.as_posix())
