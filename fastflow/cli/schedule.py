"""`fastflow schedule list | next | check`: the repository's schedules, their next slots, validity."""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Mapping

import click

from fastflow.cli.common import FastflowGroup, echo_json, repo_option
from fastflow.cli.render import print_table
from fastflow.config.schedules import (
    check_schedules,
    disabled_reason,
    read_schedules_file,
)
from fastflow.deploy.workspace import flow_names, open_workspace
from fastflow.errors import ConfigError, FastflowError
from fastflow.humanize import did_you_mean, visible_controls
from fastflow.model import Pipeline, Severity
from fastflow.schedule.planner import next_slots
from fastflow.schedule.spec import Schedule, ScheduleSet
from fastflow.schedule.timevalues import parse_instant, zone


def _schedule_set(repo: Path) -> tuple[ScheduleSet, Mapping[str, Pipeline]]:
    workspace = open_workspace(repo)
    discovery = workspace.discovery
    found = check_schedules(read_schedules_file(workspace.root), discovery.pipelines,
                            root=workspace.root, invalid_pipelines=tuple(discovery.invalid),
                            flows=flow_names(workspace))
    return found, discovery.pipelines


def _valid_set(repo: Path) -> tuple[ScheduleSet, Mapping[str, Pipeline]]:
    found, pipelines = _schedule_set(repo)
    if found.errors:
        raise ConfigError("\n".join(str(p) for p in found.errors))
    return found, pipelines


def _now() -> datetime:
    return datetime.now(timezone.utc)  # the CLI is where the real clock is read


@click.group("schedule", cls=FastflowGroup)
def schedule() -> None:
    """Schedules from .fastflow/schedules.yaml and pipeline.json: list, next slots, check."""


@schedule.command("list")
@repo_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def list_schedules(repo: Path, as_json: bool) -> None:
    """List every schedule with its next slot in its own time zone and in UTC; a disabled one
    (itself, its pipeline or its run configuration) says `disabled` and why."""
    (found, pipelines), now = _valid_set(repo), _now()
    rows = []
    for item in found.schedules:
        upcoming = next_slots(item, now, 1) if item.enabled else []
        rows.append((item, upcoming[0] if upcoming else None, disabled_reason(item, pipelines)))
    if as_json:
        echo_json({"schedules": [_schedule_json(s, slot, off) for s, slot, off in rows]})
        return
    print_table(
        ("ID", "PIPELINE", "WHEN", "ZONE", "NEXT (LOCAL)", "NEXT (UTC)", "SOURCE"),
        [(s.id, s.pipeline, s.describe() + (f" (disabled: {off})" if off else ""), s.timezone,
          _local(slot.at, s) if slot else "-",
          _utc(slot.at) if slot else ("disabled" if off else "never"),
          f"{s.source}: {s.field}") for s, slot, off in rows],
    )


@schedule.command("next")
@click.argument("schedule_id")
@repo_option
@click.option("-n", "count", type=click.IntRange(1, 10000), default=10, show_default=True,
              help="How many slots to show.")
@click.option("--from", "from_", metavar="ISO-TIME",
              help="Start here instead of now; a time without offset is in the schedule's zone.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of lines.")
def next_command(schedule_id: str, repo: Path, count: int, from_: str | None, as_json: bool) -> None:
    """Show the next slots of one schedule; slots moved by DST are marked."""
    found, pipelines = _valid_set(repo)
    known = [s.id for s in found.schedules]
    if schedule_id not in known:
        raise FastflowError(f'no schedule "{schedule_id}"; `fastflow schedule list` shows the ids'
                            f"{did_you_mean(schedule_id, known)}")
    item = found.get(schedule_id)
    start = _parse_from(from_, item) if from_ else _now()
    slots = next_slots(item, start, count)
    if as_json:
        echo_json({"schedule": _schedule_json(item, None, disabled_reason(item, pipelines)),
                   "slots": [s.to_json() for s in slots]})
        return
    for slot in slots:
        note = f"  (moved by DST from {slot.nominal:%H:%M})" if slot.nominal else ""
        click.echo(f"{_local(slot.at, item)}  {_utc(slot.at)}  {slot.run_id}{note}")
    if not slots:
        click.echo("no more slots (past its end, or a one-shot `at` that has passed)")


@schedule.command("check")
@repo_option
def check(repo: Path) -> None:
    """Validate the schedules only; print every problem and exit 1 when there is an error."""
    found, _ = _schedule_set(repo)
    for problem in found.problems:
        label = "Error" if problem.severity is Severity.ERROR else "Warning"
        click.echo(visible_controls(f"{label}: {problem}", lines=False), err=True)
    if found.errors:
        raise click.exceptions.Exit(1)
    click.echo(f"{len(found.schedules)} schedules OK")


def _parse_from(text: str, item: Schedule) -> datetime:
    try:
        return parse_instant(text, zone(item.timezone))
    except Exception:  # Invalid carries a message for config files; word it for the option
        raise click.BadParameter(f"{text!r} is not an ISO 8601 time such as 2026-03-29T00:00 "
                                 "or 2026-03-29T00:00:00Z", param_hint="--from") from None


def _local(at: datetime, item: Schedule) -> str:
    return at.astimezone(zone(item.timezone)).strftime("%Y-%m-%d %H:%M:%S %Z")


def _utc(at: datetime) -> str:
    return at.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _schedule_json(item: Schedule, slot: object, disabled: str | None) -> dict:
    data = {"id": item.id, "pipeline": item.pipeline, "kind": item.kind.value,
            "when": item.describe(), "timezone": item.timezone, "enabled": item.enabled,
            "disabled": disabled,
            "catchup": item.catchup.value, "overlap": item.overlap.value,
            "source": item.source, "field": item.field}
    data["next"] = slot.to_json() if slot is not None else None  # type: ignore[attr-defined]
    return data
