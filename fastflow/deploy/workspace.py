"""A pipelines repository opened once: its validated config and its discovered pipelines.

The library twin of what most CLI commands need first. `open_workspace` raises `ConfigError`
when `.fastflow/config.yaml` is invalid (nothing can be trusted then); `validate_workspace`
never raises for bad input: it collects every problem of the repository for `fastflow validate`:
of every file the daemon reads (config.yaml, the pipelines' files, schedules.yaml, the secrets
file's structure and grants, readable without the key) and the references between them.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from fastflow.config import check_repo_config, load_repo_config
from fastflow.config.links import link_problem
from fastflow.config.pipeline import run_config_field
from fastflow.config.schedules import check_schedules, read_schedules_text
from fastflow.deploy.discovery import Discovery, discover, find_pipeline
from fastflow.deploy.flows import discover_flows, with_flow_triggers
from fastflow.errors import ConfigError, SecretsError
from fastflow.humanize import did_you_mean, without_surrogates
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


def discover_with_flows(root: Path, config: RepoConfig) -> Discovery:
    """The pipelines of the tree, their downstream triggers to flows live (`deploy.flows`)."""
    discovery = discover(root, config)
    return with_flow_triggers(discovery, discover_flows(root, config, discovery))


def open_workspace(root: Path) -> Workspace:
    """Load `.fastflow/config.yaml` and discover the pipelines of the repository at `root`."""
    root = Path(root).resolve()
    if not root.is_dir():
        raise ConfigError(f"{root}: no such directory; pass the repository root with --repo")
    config, warnings = load_repo_config(root)
    return Workspace(root, config, tuple(warnings), discover_with_flows(root, config))


def validate_workspace(root: Path) -> list[Problem]:
    """Every problem of the repository at `root`; an invalid config.yaml is reported, not raised."""
    root = Path(root).resolve()
    config, problems = check_repo_config(root)
    if config is None:
        return _ordered(problems)
    workspace = Workspace(root, config, tuple(problems), discover_with_flows(root, config))
    found = workspace.problems()
    for check in WORKSPACE_CHECKS:
        found += check(workspace)
    return _ordered(found)


def flow_names(workspace: Workspace) -> tuple[str, ...]:
    """The valid flows of the working tree: what a schedule's `flow:` may name."""
    return tuple(sorted(discover_flows(workspace.root, workspace.config,
                                       workspace.discovery).flows))


def _schedule_problems(workspace: Workspace) -> list[Problem]:
    """The problems of schedules.yaml with the pipelines' own schedules, as the daemon sees them."""
    discovery = workspace.discovery
    text, unreadable = read_schedules_text(workspace.root)
    if unreadable is not None:
        return [unreadable]
    found = check_schedules(text, discovery.pipelines, root=workspace.root,
                            invalid_pipelines=tuple(discovery.invalid), flows=flow_names(workspace))
    return list(found.problems)


def _secrets_problems(workspace: Workspace) -> list[Problem]:
    """The secrets file as far as it can be judged without the key: its SOPS structure (the
    store's own check: `sops` metadata, secret names, `access_unencrypted` grants), then every
    secret a valid pipeline asks for must be in it and granted to that pipeline (what a run of it
    would be refused at its start), and every grant should name a pipeline."""
    file, root = workspace.config.secrets_file, workspace.root
    path = root / file
    asking = {n: asked for n, p in sorted(workspace.discovery.pipelines.items()) if (asked := _asked(p))}
    link = link_problem(root, path)  # never read through it, as the runner never decrypts it
    if link is not None:
        return [Problem(file, "", link)]
    if not path.exists():
        return [Problem(_metadata_file(workspace, n), field,
                        f"asks for {', '.join(names)}, but {file} does not exist; create it with "
                        "`fastflow secrets init --recipient age1...` and `fastflow secrets set NAME`",
                        pipeline=n) for n, asked in asking.items() for field, names in asked]
    # Imported here: the cryptography stack costs every command ~60 ms (as in secrets.runtime)
    from fastflow.secrets.store import list_secrets

    try:
        grants = {info.name: info.pipelines for info in list_secrets(path)}
    except SecretsError as exc:  # it names the file by its path on this machine
        return [Problem(file, "", without_surrogates(str(exc)).removeprefix(f"{path}: "))]
    problems = []
    for name, asked in asking.items():
        for field, names in asked:
            for secret in names:
                problem = _secret_problem(secret, name, grants, file)
                if problem is not None:
                    problems.append(Problem(_metadata_file(workspace, name), field, problem,
                                            pipeline=name))
    names = workspace.discovery.names
    for secret, pipelines in grants.items():
        for grantee in (p for p in pipelines if p not in names):
            problems.append(Problem(
                file, f"access_unencrypted.{secret}",
                f'grants {secret} to "{grantee}", which is not a pipeline; fix the name with '
                f"`fastflow secrets revoke {secret} {grantee}` and `fastflow secrets grant`"
                f"{did_you_mean(grantee, names)}", Severity.WARNING,
            ))
    return problems


def _secret_problem(secret: str, pipeline: str, grants: dict[str, tuple[str, ...]],
                    file: str) -> str | None:
    if secret not in grants:
        held = ", ".join(sorted(grants)) or "no secrets"
        return (f'"{secret}" is not in {file} (it holds {held}); add it with `fastflow secrets '
                f"set {secret}` or fix the name{did_you_mean(secret, grants)}")
    if pipeline not in grants[secret]:
        granted = ", ".join(grants[secret]) or "no pipeline"
        return (f'"{secret}" is not granted to pipeline "{pipeline}" in {file} (granted to: '
                f"{granted}); grant it with `fastflow secrets grant {secret} {pipeline}`")
    return None


def _asked(pipeline: Pipeline) -> list[tuple[str, list[str]]]:
    """(field, secret names) for each place of `pipeline` that asks for secrets: its `secrets`
    and those of its run configurations (each maps an environment variable to a secret name),
    and the secrets its signed webhooks are checked with (`webhook_secret`)."""
    places = [("secrets", pipeline.secrets)] + [
        (f"{run_config_field(index, rc.id)}.secrets", rc.secrets)
        for index, rc in enumerate(pipeline.run_configs)
    ]
    found = [(field, list(dict.fromkeys(asked.values()))) for field, asked in places if asked]
    if pipeline.webhook_secret:  # signed webhooks are checked with these: a run-time need too
        found.append(("webhook_secret", list(pipeline.webhook_secret)))
    return found


def _metadata_file(workspace: Workspace, name: str) -> str:
    pipeline = workspace.discovery.pipelines[name]
    where = pipeline.metadata_file or pipeline.path
    return without_surrogates(Path(where).relative_to(workspace.root).as_posix())


def _flow_problems(workspace: Workspace) -> list[Problem]:
    """Every problem of the flows (`.fastflow/flows/`, a Featherflow `flows/`), each flow on its
    own: an invalid flow never hides a pipeline or another flow."""
    return discover_flows(workspace.root, workspace.config, workspace.discovery).all_problems()


# What validate checks besides config.yaml and the pipelines' own files, each a function of the
# workspace returning problems: add a check of another file the daemon reads here.
WORKSPACE_CHECKS: tuple[Callable[[Workspace], list[Problem]], ...] = (
    _schedule_problems,
    _secrets_problems,
    _flow_problems,
)


def _ordered(problems: list[Problem]) -> list[Problem]:
    unique = list(dict.fromkeys(problems))
    return sorted(unique, key=lambda p: (p.severity is not Severity.ERROR, p.file, p.field))
