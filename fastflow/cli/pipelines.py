"""`fastflow list`, `validate` and `show`: what the repository holds and whether it is valid."""
from __future__ import annotations

import json
from pathlib import Path

import click
from rich.text import Text

from fastflow.cli.common import echo_json, repo_option
from fastflow.cli.render import (
    print_table,
    schedule_summary,
)
from fastflow.defaults import CONFIG_FILE
from fastflow.deploy.discovery import resolved_view
from fastflow.deploy.workspace import open_workspace, validate_workspace
from fastflow.errors import FastflowError
from fastflow.humanize import format_bytes, visible_controls
from fastflow.model import Pipeline, Problem, Severity


def _limits_summary(pipeline: Pipeline) -> str:
    limits = pipeline.limits
    parts = []
    if limits.cpu_hard_limit is not None:
        parts.append(f"cpu {limits.cpu_hard_limit:g}")
    if limits.mem_hard_limit is not None:
        parts.append(f"mem {format_bytes(limits.mem_hard_limit)}")
    if pipeline.timeout:
        parts.append(f"timeout {pipeline.timeout:g}s")
    return ", ".join(parts) or "-"


@click.command("list")
@repo_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def list_pipelines(repo: Path, as_json: bool) -> None:
    """List every pipeline with its type, schedule, limits and validity."""
    workspace = open_workspace(repo)
    discovery = workspace.discovery
    if as_json:
        echo_json(
            {
                "pipelines": [
                    {
                        "name": p.name,
                        "type": p.type.value,
                        "schedule": schedule_summary(p),
                        "limits": p.limits.to_json(),
                        "timeout": p.timeout,
                        "enabled": p.enabled,
                        "valid": True,
                        "warnings": [w.to_json() for w in p.warnings],
                    }
                    for p in discovery.pipelines.values()
                ],
                "invalid": [
                    {"name": i.name, "valid": False, "problems": [pr.to_json() for pr in i.problems]}
                    for i in discovery.invalid.values()
                ],
                "pipelines_dir": {"value": discovery.pipelines_dir,
                                  "source": discovery.pipelines_dir_source},
            }
        )
        return
    rows = []
    for name in sorted([*discovery.pipelines, *discovery.invalid]):
        if name in discovery.pipelines:
            p = discovery.pipelines[name]
            state = "valid" if p.enabled else "disabled"
            if p.warnings:
                state += f" ({len(p.warnings)} warning{'s' if len(p.warnings) > 1 else ''})"
            rows.append((name, p.type.value, schedule_summary(p), _limits_summary(p), state))
        else:
            problems = discovery.invalid[name].problems
            reason = "; ".join(str(pr) for pr in problems if pr.severity is Severity.ERROR)
            shown = visible_controls(reason, lines=False)
            rows.append((name, "-", "-", "-", Text.assemble(("invalid", "red"), ": " + shown)))
    print_table(["pipeline", "type", "schedule", "limits", "status"], rows)
    # On stderr: the table stays one line per pipeline for scripts; people see where they are
    click.echo(f"pipelines in {visible_controls(discovery.location, lines=False)} "
               f"(pipelines_dir: {discovery.pipelines_dir_source})", err=True)


@click.command("validate")
@repo_option
@click.option("--json", "as_json", is_flag=True, help="Print the problems as JSON.")
def validate(repo: Path, as_json: bool) -> None:
    """Check every file the daemon reads (pipeline.json, config.yaml, schedules.yaml, the
    secrets file without its key) and the references between them."""
    problems = validate_workspace(repo)
    problems = _with_image_problems(repo, problems)
    problems = _with_notification_problems(repo, problems)
    errors = [p for p in problems if p.severity is Severity.ERROR]
    if as_json:
        echo_json({"ok": not errors, "problems": [p.to_json() for p in problems]})
    else:
        for problem in problems:
            line = visible_controls(f"{problem.severity.value}: {problem}", lines=False)
            click.echo(line, err=problem.severity is Severity.ERROR)  # a name: one line
        if not errors:
            warned = f" ({len(problems)} warning{'s' if len(problems) != 1 else ''})" if problems else ""
            click.echo(f"ok: the repository is valid{warned}")
    if errors:
        raise SystemExit(1)


def _with_image_problems(repo: Path, problems: list[Problem]) -> list[Problem]:
    """`problems` and, when the config is valid, the runner images this machine's engine lacks
    for the pipelines' Pythons (docs/docker.md), errors still first."""
    if any(p.file == CONFIG_FILE and p.severity is Severity.ERROR for p in problems):
        return problems  # without a valid config.yaml there is no image to look for
    # Imported here, as `choose_executor` does: the Docker SDK costs `list` and `show` ~0.15 s.
    from fastflow.executors.docker import missing_runner_images
    try:
        workspace = open_workspace(repo)
    except FastflowError:  # the reason is among `problems` already
        return problems
    found = problems + missing_runner_images(workspace.config,
                                             workspace.discovery.pipelines.values(), workspace.root)
    return sorted(found, key=lambda p: p.severity is not Severity.ERROR)


def _with_notification_problems(repo: Path, problems: list[Problem]) -> list[Problem]:
    """`problems` and a warning for each notification URL the library knows no service for."""
    if any(p.file == CONFIG_FILE and p.severity is Severity.ERROR for p in problems):
        return problems
    # Imported here: the notification library costs ~0.1 s, which `list` and `show` never pay.
    from fastflow.daemon.alert_check import url_problems
    return problems + url_problems(repo)


@click.command("show")
@repo_option
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def show(repo: Path, name: str, as_json: bool) -> None:
    """Print the fully resolved configuration of pipeline NAME and where each value came from."""
    workspace = open_workspace(repo)
    rows = resolved_view(workspace.pipeline(name))
    discovery = workspace.discovery  # where it was found: pipelines/, or the root without one
    rows.insert(2, ("pipelines_dir", discovery.pipelines_dir, discovery.pipelines_dir_source))
    if as_json:
        echo_json({field: {"value": value, "source": source} for field, value, source in rows})
        return
    print_table(["field", "value", "source"], [(f, _fmt(v), s) for f, v, s in rows])


def _fmt(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, default=str)
    return str(value)
