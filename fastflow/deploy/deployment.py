"""A deployment: what a commit of the followed branch makes active, with last-valid semantics.

`deploy_commit` reads the repository *as of a commit*, never from a live checkout: the commit's
tree is materialised as an immutable snapshot (`fastflow.repo.snapshot_tree`) and discovered
there. Each active pipeline remembers the id of its folder's tree, so a run executes exactly
that tree (its own snapshot, shared by every run of the same tree).

Bad input after a push never deactivates what was running:
- `.fastflow/config.yaml` invalid: the previous valid configuration stays active; the error is
  kept in `Deployment.errors` (shown by `fastflow status`).
- a pipeline's metadata invalid: its previous valid version (code, requirements and metadata,
  from the commit it was valid at) stays active, with the error; a pipeline that was never
  valid is listed as invalid only.
- a removed pipeline folder is removed.
- `.fastflow/schedules.yaml` (with the pipelines' own schedules) invalid: the previous valid
  schedule set stays active (minus schedules of removed pipelines), with the errors. On the
  very first deployment there is no previous set: the schedules that are valid are activated
  and the errors are shown.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Mapping

from fastflow import repo as git
from fastflow.config import check_repo_config
from fastflow.config.schedules import check_schedules, read_schedules_text
from fastflow.deploy.changes import ChangeSet, change_set, normalise_pipelines_dir
from fastflow.deploy.discovery import discover
from fastflow.deploy.flows import discover_flows, with_flow_triggers
from fastflow.errors import FastflowError
from fastflow.files import write_atomic
from fastflow.model import InvalidPipeline, Pipeline, Problem, RepoConfig, Severity
from fastflow.schedule.spec import Schedule, ScheduleSet

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ActivePipeline:
    """A pipeline version that runs: its parsed config and the commit and tree it came from."""

    pipeline: Pipeline
    commit: str
    tree: str  # the pipeline folder's tree id at `commit`
    config_commit: str | None = None  # whose config.yaml it was read with (restored with it)


@dataclass(frozen=True)
class Deployment:
    """What is active after syncing `commit`."""

    commit: str | None
    root_tree: str | None
    config: RepoConfig | None
    active: Mapping[str, ActivePipeline] = field(default_factory=dict)
    invalid: Mapping[str, InvalidPipeline] = field(default_factory=dict)
    errors: tuple[Problem, ...] = ()  # problems that keep an older version active, config errors
    warnings: tuple[Problem, ...] = ()
    changes: ChangeSet | None = None
    schedules: tuple[Schedule, ...] = ()  # the active schedule set (last valid)
    config_commit: str | None = None  # the commit whose config.yaml is active (last valid)
    pipelines_dir: str | None = None  # where discovery found the pipelines of `commit`

    @property
    def pipelines(self) -> dict[str, Pipeline]:
        return {name: a.pipeline for name, a in self.active.items()}

    def pipeline_schedules(self) -> list[Schedule]:
        """The active schedules of pipelines (a flow's slot starts a flow run, not a run)."""
        return [s for s in self.schedules if s.pipeline in self.active]

    def to_json(self) -> dict:
        return {
            "commit": self.commit,
            "active": {n: {"commit": a.commit, "tree": a.tree} for n, a in sorted(self.active.items())},
            "invalid": {n: [p.to_json() for p in i.problems] for n, i in sorted(self.invalid.items())},
            "errors": [p.to_json() for p in self.errors],
            "warnings": [p.to_json() for p in self.warnings],
            "changes": self.changes.to_json() if self.changes else None,
            "schedules": [s.id for s in self.schedules],
        }


def deploy_commit(
    repository: git.GitRepo, commit: str, snapshots: Path, previous: Deployment | None
) -> Deployment:
    """Discover the repository at `commit` and merge it over `previous` (see module doc)."""
    info = git.commit_info(repository, commit)
    root = git.snapshot_tree(repository, info.tree, "", snapshots)
    config, config_problems = check_repo_config(root)
    errors = [p for p in config_problems if p.severity is Severity.ERROR]
    warnings = [p for p in config_problems if p.severity is Severity.WARNING]
    config_commit = commit
    if config is None:
        if previous is None or previous.config is None:
            return Deployment(commit, info.tree, None, errors=tuple(errors), warnings=tuple(warnings))
        config, config_commit = previous.config, previous.config_commit or previous.commit
        errors = [_kept(p, "the previous valid configuration stays active") for p in errors]
    discovery = discover(root, config)
    found_flows = discover_flows(root, config, discovery)
    discovery = with_flow_triggers(discovery, found_flows)  # a pipeline may trigger a flow
    warnings.extend(discovery.warnings)
    errors.extend(p for p in discovery.problems if p.severity is Severity.ERROR)
    base = normalise_pipelines_dir(discovery.pipelines_dir)  # pipelines/ or the root, as found
    old_active = previous.active if previous else {}
    changes = change_set(
        repository, previous.commit if previous else None, commit, discovery.pipelines_dir,
        previous.pipelines_dir if previous else None,
    )
    active: dict[str, ActivePipeline] = {}
    for name, pipeline in discovery.pipelines.items():
        tree = git.tree_id(repository, info.tree, f"{base}/{name}".strip("/"))
        active[name] = ActivePipeline(pipeline, commit, tree, config_commit)
    for name, invalid in discovery.invalid.items():
        if name in old_active:
            active[name] = old_active[name]
            note = f"the last valid version (commit {old_active[name].commit[:10]}) stays active"
            errors.extend(_kept(p, note) for p in invalid.problems if p.severity is Severity.ERROR)
    schedules = _schedules(root, active, discovery.invalid, previous, errors, warnings,
                           flows=tuple(found_flows.flows))
    return Deployment(
        commit=commit,
        root_tree=info.tree,
        config=config,
        active=active,
        invalid=dict(discovery.invalid),
        errors=tuple(errors),
        warnings=tuple(warnings),
        changes=changes,
        schedules=schedules,
        config_commit=config_commit,
        pipelines_dir=discovery.pipelines_dir,
    )


def _schedules(root: Path, active: Mapping[str, ActivePipeline], invalid: Mapping[str, object],
               previous: Deployment | None, errors: list[Problem],
               warnings: list[Problem], flows: tuple[str, ...] = ()) -> tuple[Schedule, ...]:
    """The schedule set to activate (see the module doc); appends its problems."""
    text, unreadable = read_schedules_text(root)  # the verdict `validate` reaches, same code
    if unreadable is not None:
        found = ScheduleSet((), (unreadable,))
    else:
        found = check_schedules(text, {n: a.pipeline for n, a in active.items()}, root=root,
                                invalid_pipelines=[n for n in invalid if n not in active],
                                flows=flows)
    warnings.extend(p for p in found.problems if p.severity is Severity.WARNING)
    if not found.errors:
        return found.schedules
    if previous is None or previous.config is None:
        errors.extend(found.errors)
        return found.schedules
    errors.extend(_kept(p, "the last valid schedules stay active") for p in found.errors)
    return tuple(s for s in previous.schedules if s.pipeline in active or s.pipeline in flows)


def _kept(problem: Problem, note: str) -> Problem:
    return Problem(problem.file, problem.field, f"{problem.message} ({note})", problem.severity,
                   problem.pipeline)


def dependencies_changed(old: Deployment | None, new: Deployment) -> list[str]:
    """Active pipelines whose dependencies must be pre-heated: every one on the first sync;
    then those whose requirements.txt or python_version changed (or that are new)."""
    names = []
    for name, current in sorted(new.active.items()):
        if current.pipeline.requirements is None:
            continue
        before = old.active.get(name) if old else None
        if before is None or _deps_key(before) != _deps_key(current):
            names.append(name)
    return names


def _deps_key(active: ActivePipeline) -> tuple[str | None, bytes | None]:
    requirements = active.pipeline.requirements
    text = Path(requirements).read_bytes() if requirements and Path(requirements).exists() else None
    return active.pipeline.python_version, text


def workdir_for(repository: git.GitRepo, active: ActivePipeline, snapshots: Path) -> Path:
    """The immutable snapshot of the pipeline's folder a run executes in (created on demand)."""
    return git.snapshot_tree(repository, active.tree, "", snapshots)


def save_deployment(deployment: Deployment, path: Path) -> None:
    """Remember the deployment for the next start: the commit, whose config.yaml is active,
    which commit and tree (and config) each active pipeline runs, and the active schedule set,
    so a restart after a bad push goes on with the last valid of each (`restore_deployment`)."""
    data = {
        "schema": 2, "commit": deployment.commit, "config_commit": deployment.config_commit,
        "active": {n: {"commit": a.commit, "tree": a.tree, "config_commit": a.config_commit}
                   for n, a in deployment.active.items()},
        "schedules": [s.to_json() for s in deployment.schedules],
        # for `fastflow run --remote`, which refuses a disabled pipeline before queueing it
        "disabled": sorted(n for n, a in deployment.active.items() if not a.pipeline.enabled),
        "disabled_run_configs": {n: sorted(rc.id for rc in a.pipeline.run_configs if not rc.enabled)
                                 for n, a in deployment.active.items()
                                 if any(not rc.enabled for rc in a.pipeline.run_configs)},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(data, indent=2), durable=True)


def restore_deployment(repository: git.GitRepo, snapshots: Path, path: Path) -> Deployment | None:
    """The deployment `save_deployment` remembered, rebuilt from git (None when there is none,
    or it cannot be rebuilt: a warning says so). The last valid configuration, pipeline
    versions and schedule set come back as they were, and the saved commit is deployed over
    them, so its errors read as before the restart."""
    if not path.exists():
        return None
    try:
        saved = json.loads(path.read_text())
        if saved.get("schema") != 2:
            return _restore_v1(repository, snapshots, saved)
        if saved["config_commit"] is None:  # no valid configuration was ever deployed
            return replace(deploy_commit(repository, saved["commit"], snapshots, None), changes=None)
        configs: dict[str, RepoConfig] = {}
        active = {}
        for name, where in saved["active"].items():
            config = _config_at(repository, where["config_commit"] or where["commit"], snapshots,
                                configs)
            root = git.snapshot_tree(repository, git.commit_info(repository, where["commit"]).tree,
                                     "", snapshots)
            pipeline = discover(root, config).pipelines.get(name)
            if pipeline is None:
                raise FastflowError(f"pipeline {name!r} is not valid at {where['commit'][:10]}")
            active[name] = ActivePipeline(pipeline, where["commit"], where["tree"],
                                          where["config_commit"])
        last_valid = Deployment(
            saved["commit"], None, _config_at(repository, saved["config_commit"], snapshots, configs),
            active, schedules=tuple(Schedule.from_json(s) for s in saved["schedules"]),
            config_commit=saved["config_commit"])
        restored = deploy_commit(repository, saved["commit"], snapshots, last_valid)
    except (ValueError, KeyError, TypeError, FastflowError) as exc:
        logger.warning("cannot restore the last deployment from %s (%s); starting afresh", path, exc)
        return None
    return replace(restored, changes=None)


def _config_at(repository: git.GitRepo, commit: str, snapshots: Path,
               cache: dict[str, RepoConfig]) -> RepoConfig:
    """The configuration (.fastflow/config.yaml) at `commit`, which was valid when deployed."""
    if commit not in cache:
        root = git.snapshot_tree(repository, git.commit_info(repository, commit).tree, "", snapshots)
        config, _ = check_repo_config(root)
        if config is None:
            raise FastflowError(f".fastflow/config.yaml at {commit[:10]} is not valid")
        cache[commit] = config
    return cache[commit]


def _restore_v1(repository: git.GitRepo, snapshots: Path, saved: dict) -> Deployment:
    """A deployment.json of an earlier release (commits and trees only): the saved commit,
    with pipelines kept at an older valid version coming back at that version."""
    base = deploy_commit(repository, saved["commit"], snapshots, None)
    active = dict(base.active)
    for name, where in saved.get("active", {}).items():
        if name in active and active[name].tree == where["tree"]:
            continue
        try:
            older = deploy_commit(repository, where["commit"], snapshots, None)
        except FastflowError:
            continue
        if name in older.active:
            active[name] = older.active[name]
    return replace(base, active=active, changes=None)
