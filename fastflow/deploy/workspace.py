"""A pipelines repository opened once: its validated config and its discovered pipelines.

The library twin of what most CLI commands need first. `open_workspace` raises `ConfigError`
when `.fastflow/config.yaml` is invalid (nothing can be trusted then); `validate_workspace`
never raises for bad input: it collects every problem of the repository for `fastflow validate`:
of every file the daemon reads (config.yaml, the pipelines' files, schedules.yaml).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fastflow.config import check_repo_config, load_repo_config
from fastflow.config.schedules import check_schedules, read_schedules_text
from fastflow.deploy.discovery import Discovery, discover, find_pipeline
from fastflow.errors import ConfigError
from fastflow.model import Pipeline, Problem, RepoConfig, Severity


@dataclass(frozen=True)
class Workspace:
    root: Path
    config: RepoConfig
    config_warnings: tuple[Problem, ...]
    discovery: Discovery

    def pipeline(self, name: str) -> Pipeline:
        """The valid pipeline called `name`; `PipelineNotFound` says why when there is none."""
        return find_pipeline(self.discovery, name)

    def problems(self) -> list[Problem]:
        """Every problem and warning of the repository, errors first, in a stable order."""
        found = list(self.config_warnings) + self.discovery.all_problems()
        return _ordered(found)


def open_workspace(root: Path) -> Workspace:
    """Load `.fastflow/config.yaml` and discover the pipelines of the repository at `root`."""
    root = Path(root).resolve()
    if not root.is_dir():
        raise ConfigError(f"{root}: no such directory; pass the repository root with --repo")
    config, warnings = load_repo_config(root)
    return Workspace(root, config, tuple(warnings), discover(root, config))


def validate_workspace(root: Path) -> list[Problem]:
    """Every problem of the repository at `root`; an invalid config.yaml is reported, not raised."""
    root = Path(root).resolve()
    config, problems = check_repo_config(root)
    if config is None:
        return _ordered(problems)
    workspace = Workspace(root, config, tuple(problems), discover(root, config))
    return _ordered(workspace.problems() + _schedule_problems(workspace))


def _schedule_problems(workspace: Workspace) -> list[Problem]:
    """The problems of schedules.yaml with the pipelines' own schedules, as the daemon sees them."""
    discovery = workspace.discovery
    text, unreadable = read_schedules_text(workspace.root)
    if unreadable is not None:
        return [unreadable]
    found = check_schedules(text, discovery.pipelines, root=workspace.root,
                            invalid_pipelines=tuple(discovery.invalid))
    return list(found.problems)


def _ordered(problems: list[Problem]) -> list[Problem]:
    unique = list(dict.fromkeys(problems))
    return sorted(unique, key=lambda p: (p.severity is not Severity.ERROR, p.file, p.field))
