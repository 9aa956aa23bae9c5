"""Schedules: `.fastflow/schedules.yaml` and the pipeline.json schedule fields, validated.

Both sources become frozen `Schedule`s (one namespace of ids; a clash is an error). Validation
collects every problem with its file, field, value and fix, so `fastflow schedule check` can show
them all at once; `load_schedules` raises `ConfigError` when any is an error. Cron expressions are
POSIX 5-field crons, parsed once into a `CronExpr` whose `next_after` walks wall-clock time; the
scheduler turns wall times into instants (that is where DST is handled). Only
`read_schedules_file` touches the disk. `docs/schedules.md` documents the format.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Collection, Mapping

from fastflow.config.links import link_problem
from fastflow.config.pipeline import run_config_field
from fastflow.config.values import (
    MISSING,
    Fields,
    boolean,
    choice,
    env_mapping,
    integer,
    label,
    name,
)
from fastflow.config.yamlfile import load_yaml
from fastflow.defaults import SCHEDULES_FILE
from fastflow.errors import ConfigError, Invalid
from fastflow.humanize import did_you_mean, show
from fastflow.model import Pipeline, Problem, Severity
from fastflow.record import slot_suffix
from fastflow.schedule.cron import parse_cron
from fastflow.schedule.spec import (
    DEFAULT_TIMEZONE,
    Catchup,
    Overlap,
    Schedule,
    ScheduleKind,
    ScheduleSet,
    _iso,
)
from fastflow.schedule.timevalues import (
    check_zone,
    parse_duration,
    parse_instant,
    zone,
)

ENTRY_KEYS = (
    "pipeline", "flow", "params", "id", "cron", "interval", "at", "timezone", "env", "run_config", "start", "end",
    "catchup", "catchup_window", "max_catchup", "skip_if_late", "overlap", "enabled",
)


# --- schedules.yaml -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Entry:
    """A schedules.yaml entry before ids are settled (the id may still have to be derived)."""

    schedule: Schedule
    explicit_id: bool
    flow: bool = False  # `flow: NAME`: the schedule starts flow runs (its `params` in `env`)


def parse_schedules_yaml(text: str, file: str = SCHEDULES_FILE) -> tuple[list[_Entry], list[Problem]]:
    """Parse the text of `.fastflow/schedules.yaml` into entries and problems (no pipelines yet).

    Every entry is checked on its own here; pipeline names, run configurations and id clashes
    need the pipelines and are checked by `combine_schedules`.
    """
    problems: list[Problem] = []
    try:
        data = load_yaml(text) if text.strip() else {}
    except Invalid as exc:
        problems.append(Problem(file, "", str(exc)))
        return [], problems
    data = {} if data is None else data
    top = Fields(data if isinstance(data, dict) else {}, problems, file)
    if not isinstance(data, dict):
        top.error(None, f"{show(data)} is not a mapping; start the file with `schedules:`")
        return [], problems
    top.warn_unknown(("timezone", "schedules"))
    default_tz = top.get("timezone", check_zone)
    default_tz = DEFAULT_TIMEZONE if default_tz is MISSING else default_tz
    entries = data.get("schedules") or []
    if not isinstance(entries, list):
        top.error("schedules", f"{show(entries)} is not a list; write each schedule as `- pipeline: name`")
        return [], problems
    out = []
    for index, raw in enumerate(entries):
        if not isinstance(raw, dict):
            Fields(raw, problems, file, "schedules").error(
                index, f"{show(raw)} is not a mapping; write `- pipeline: name` and its keys")
            continue
        # Named by position and by what identifies it: its id, else (ids not derived yet) its pipeline.
        entry_fields = top.child(entries, "schedules").entry(raw, index, label(raw, "id", "pipeline"))
        entry = _parse_entry(entry_fields, default_tz)
        if entry is not None:
            out.append(entry)
    return out, problems


def _parse_entry(f: Fields, default_tz: str) -> _Entry | None:
    before = len([p for p in f.problems if p.severity is Severity.ERROR])
    f.warn_unknown(ENTRY_KEYS)
    pipeline = f.get("pipeline", name)
    flow = f.get("flow", name)
    if f.has("flow") and f.has("pipeline"):
        f.error("flow", "cannot be combined with pipeline; a schedule runs either a pipeline or "
                "a flow, choose one")
    elif f.has("flow"):
        pipeline = flow
        for key, why in (("env", "a flow takes `params`"), ("run_config", "flows have none")):
            if f.has(key):
                f.error(key, f"is not used by a flow schedule ({why}); remove it")
    elif not f.has("pipeline"):
        f.error(None, "has no `pipeline`; name the pipeline folder to run, e.g. `pipeline: report`"
                " (or a flow: `flow: weather`)")
    if f.has("params") and not f.has("flow"):
        f.error("params", "is only for a flow schedule (`flow: NAME`); a pipeline's schedule "
                "takes `env`")
    params = f.get("params", env_mapping)
    schedule_id = f.get("id", name)
    tz_name = f.get("timezone", check_zone)
    tz_name = default_tz if tz_name is MISSING else tz_name
    tz = zone(tz_name)
    triggers = [k for k in ("cron", "interval", "at") if f.has(k)]
    if len(triggers) != 1:
        if triggers:
            f.error(None, f"has both {' and '.join(triggers)}; give exactly one of cron, interval or at")
        else:
            f.error(None, "has none of cron, interval or at; give exactly one of them")
    values = {
        "cron": f.get("cron", parse_cron),
        "interval": f.get("interval", parse_duration),
        "at": f.get("at", lambda v: parse_instant(v, tz)),
        "start": f.get("start", lambda v: parse_instant(v, tz)),
        "end": f.get("end", lambda v: parse_instant(v, tz, end_of_day=True)),
        "env": f.get("env", env_mapping),
        "run_config": f.get("run_config", name),
        "catchup": f.get("catchup", choice([c.value for c in Catchup])),
        "catchup_window": f.get("catchup_window", parse_duration),
        "max_catchup": f.get("max_catchup", integer(0)),
        "skip_if_late": f.get("skip_if_late", parse_duration),
        "overlap": f.get("overlap", choice([o.value for o in Overlap])),
        "enabled": f.get("enabled", boolean),
    }
    _check_window(f, values["start"], values["end"])
    errors = len([p for p in f.problems if p.severity is Severity.ERROR])
    if errors > before:
        return None
    kind = ScheduleKind(triggers[0])
    given = {k: v for k, v in values.items() if v is not MISSING}
    if params is not MISSING:
        given["env"] = params  # a flow schedule's params travel as the schedule's env
    given["catchup"] = Catchup(given.get("catchup", Catchup.LATEST))
    given["overlap"] = Overlap(given.get("overlap", Overlap.SKIP))
    schedule = Schedule(id=schedule_id if schedule_id is not MISSING else "", pipeline=pipeline,
                        kind=kind, timezone=tz_name, source=f.file, field=f.prefix, **given)
    return _Entry(schedule, explicit_id=schedule_id is not MISSING, flow=f.has("flow"))


def _check_window(f: Fields, start: Any, end: Any) -> None:
    if isinstance(start, datetime) and isinstance(end, datetime) and end < start:
        f.error("end", f"{show(f.data['end'])} is before start {show(f.data['start'])}; move end "
                "after start or remove it")


# --- pipeline.json schedules ------------------------------------------------------------------


def schedules_from_pipeline(pipeline: Pipeline, file: str) -> tuple[list[Schedule], list[Problem]]:
    """The schedules a pipeline.json declares: `schedule_cron`/`schedule_interval_seconds`
    (id = the pipeline name), `run_once_at` (id `<pipeline>-once`) and each run configuration
    with a cron or interval (id `<pipeline>-<run config id>`); they are read in UTC.

    As in Fast-Flow, a pipeline with run configurations is scheduled only by them: its top-level
    `schedule_cron` / `schedule_interval_seconds` are then not used (`config.pipeline` warns).
    """
    problems: list[Problem] = []
    spec, out = pipeline.schedule, []
    common = dict(pipeline=pipeline.name, source=file, enabled=pipeline.enabled, timezone=DEFAULT_TIMEZONE)
    top_cron, top_interval = (None, None) if pipeline.run_configs else (spec.cron, spec.interval_seconds)
    timed = _timed(pipeline.name, top_cron, top_interval, file, "schedule_cron",
                   "schedule_interval_seconds", problems)
    if timed is not None and _window_ok(spec.start, spec.end, file, "schedule_end", pipeline.name,
                                        problems):
        out.append(Schedule(id=pipeline.name, start=spec.start, end=spec.end, field=timed[2],
                            kind=timed[0], **timed[1], **common))
    if spec.run_once_at is not None:
        out.append(Schedule(id=f"{pipeline.name}-once", kind=ScheduleKind.AT, at=spec.run_once_at,
                            field="run_once_at", **common))
    for index, rc in enumerate(pipeline.run_configs):
        prefix = run_config_field(index, rc.id)
        timed = _timed(pipeline.name, rc.cron, rc.interval_seconds, file, f"{prefix}.schedule_cron",
                       f"{prefix}.schedule_interval_seconds", problems)
        if timed is None or not _window_ok(rc.start, rc.end, file, f"{prefix}.schedule_end",
                                           pipeline.name, problems):
            continue
        settings = {**common, "enabled": pipeline.enabled and rc.enabled}
        out.append(Schedule(id=f"{pipeline.name}-{rc.id}", kind=timed[0], start=rc.start, end=rc.end,
                            run_config=rc.id, field=prefix, **timed[1], **settings))
    return out, problems


def _window_ok(start: datetime | None, end: datetime | None, file: str, end_field: str,
               pipeline: str, problems: list[Problem]) -> bool:
    if start is not None and end is not None and end < start:
        problems.append(Problem(file, end_field, f"{_iso(end)} is before start {_iso(start)}; move "
                                "end after start or remove it", pipeline=pipeline))
        return False
    return True


def _timed(pipeline: str, cron: str | None, interval: float | None, file: str, cron_field: str,
           interval_field: str, problems: list[Problem]) -> tuple[ScheduleKind, dict, str] | None:
    if cron is not None and interval is not None:
        problems.append(Problem(file, cron_field, f"is set together with {interval_field}; "
                                "keep only one of them", pipeline=pipeline))
        return None
    try:
        if cron is not None:
            return ScheduleKind.CRON, {"cron": parse_cron(cron)}, cron_field
        if interval is not None:
            return ScheduleKind.INTERVAL, {"interval": parse_duration(interval)}, interval_field
    except Invalid as exc:
        problems.append(Problem(file, cron_field if cron is not None else interval_field, str(exc),
                                pipeline=pipeline))
    return None


# --- combining both sources -------------------------------------------------------------------


def combine_schedules(
    entries: list[_Entry],
    pipelines: Mapping[str, Pipeline],
    *,
    root: Path | None = None,
    invalid_pipelines: Collection[str] = (),
    flows: Collection[str] = (),
) -> tuple[list[Schedule], list[Problem]]:
    """Merge schedules.yaml entries with the pipelines' own schedules into one id namespace.

    Checks what needs the pipelines: unknown pipelines (error, with a did-you-mean), schedules of
    invalid pipelines (warning; left out until the pipeline is fixed), unknown run
    configurations, id clashes within and across files, and run-id clashes. Derived ids take the
    first free name among `<pipeline>`, `<pipeline>-2`, ... after explicit ids are claimed.
    """
    problems: list[Problem] = []
    owners: dict[str, Schedule] = {}
    for pipe_name in sorted(pipelines):
        pipeline = pipelines[pipe_name]
        file = _display(pipeline.metadata_file, root) if pipeline.metadata_file else pipe_name
        found, found_problems = schedules_from_pipeline(pipeline, file)
        problems += found_problems
        for schedule in found:
            _claim(schedule, owners, problems)
    kept = [e if e.flow else _follow_pipeline(e, pipelines[e.schedule.pipeline])
            for e in entries if (_flow_ok(e.schedule, flows, problems) if e.flow
                                 else _pipeline_ok(e.schedule, pipelines, invalid_pipelines,
                                                   problems))]
    for entry in (e for e in kept if e.explicit_id):
        _claim(entry.schedule, owners, problems)
    for entry in (e for e in kept if not e.explicit_id):
        candidate, n = entry.schedule.pipeline, 1
        while candidate in owners:
            n += 1
            candidate = f"{entry.schedule.pipeline}-{n}"
        owners[candidate] = _replace(entry.schedule, id=candidate)
    _check_run_ids(owners.values(), problems)
    return sorted(owners.values(), key=lambda s: s.id), problems


def _replace(schedule: Schedule, **changes: Any) -> Schedule:
    return Schedule(**{**schedule.__dict__, **changes})


def _display(path: Path, root: Path | None) -> str:
    if root is not None:
        try:
            return path.resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            pass
    return str(path)


def _claim(schedule: Schedule, owners: dict[str, Schedule], problems: list[Problem]) -> None:
    other = owners.get(schedule.id)
    if other is None:
        owners[schedule.id] = schedule
        return
    field = f"{schedule.field}.id" if schedule.field.startswith("schedules[") else schedule.field
    problems.append(Problem(
        schedule.source, field, f'"{schedule.id}" is already the id of {other.field} in '
        f"{other.source}; schedule ids must be unique across schedules.yaml and pipeline.json "
        "files: give one of them another id", pipeline=schedule.pipeline))


def _pipeline_ok(schedule: Schedule, pipelines: Mapping[str, Pipeline], invalid: Collection[str],
                 problems: list[Problem]) -> bool:
    where = f"{schedule.field}.pipeline"
    if schedule.pipeline in invalid:
        problems.append(Problem(schedule.source, where, f'"{schedule.pipeline}" is an invalid '
                                "pipeline, so this schedule is inactive until it is fixed (see "
                                "`fastflow check`)", Severity.WARNING, schedule.pipeline))
        return False
    pipeline = pipelines.get(schedule.pipeline)
    if pipeline is None:
        hint = did_you_mean(schedule.pipeline, pipelines)
        problems.append(Problem(schedule.source, where, f'"{schedule.pipeline}" is not a pipeline; '
                                "use the name of a pipeline folder (`fastflow list` shows them)"
                                f"{hint}", pipeline=schedule.pipeline))
        return False
    if schedule.run_config is not None:
        ids = [rc.id for rc in pipeline.run_configs]
        if schedule.run_config not in ids:
            known = ", ".join(f'"{i}"' for i in ids) or "none"
            problems.append(Problem(schedule.source, f"{schedule.field}.run_config",
                                    f'"{schedule.run_config}" is not a run configuration of pipeline '
                                    f'"{schedule.pipeline}" (it has: {known}); use one of its '
                                    "`schedules[].id` values or remove run_config"
                                    f"{did_you_mean(schedule.run_config, ids)}",
                                    pipeline=schedule.pipeline))
            return False
    return True


def _flow_ok(schedule: Schedule, flows: Collection[str], problems: list[Problem]) -> bool:
    if schedule.pipeline in flows:
        return True
    problems.append(Problem(schedule.source, f"{schedule.field}.flow", f'"{schedule.pipeline}" '
                            "is not a valid flow; use the name of a flow file (`fastflow flow "
                            f"list` shows them){did_you_mean(schedule.pipeline, flows)}",
                            pipeline=schedule.pipeline))
    return False


def _follow_pipeline(entry: _Entry, pipeline: Pipeline) -> _Entry:
    """A schedules.yaml entry of a disabled pipeline, or of a disabled run configuration, is
    disabled too: listed, never fired (`disabled_reason` says why)."""
    if _disabled_by(entry.schedule, pipeline) is None:
        return entry
    return _Entry(_replace(entry.schedule, enabled=False), entry.explicit_id)


def _disabled_by(schedule: Schedule, pipeline: Pipeline) -> str | None:
    if not pipeline.enabled:
        return f'pipeline "{pipeline.name}" is disabled ("enabled": false)'
    rc = next((r for r in pipeline.run_configs if r.id == schedule.run_config), None)
    if rc is not None and not rc.enabled:
        return (f'run configuration "{rc.id}" of pipeline "{pipeline.name}" is disabled '
                '("enabled": false)')
    return None


def disabled_reason(schedule: Schedule, pipelines: Mapping[str, Pipeline]) -> str | None:
    """Why `schedule` never fires, or None when it is enabled: its pipeline is disabled, its
    run configuration is, or the schedule itself says `enabled: false`."""
    if schedule.enabled:
        return None
    pipeline = pipelines.get(schedule.pipeline)
    return (pipeline and _disabled_by(schedule, pipeline)) or f"enabled: false in {schedule.source}"


def _check_run_ids(schedules: Collection[Schedule], problems: list[Problem]) -> None:
    # Run ids are `<slot>-<pipeline>-<id>`; with '-' allowed in both names two different
    # schedules could produce the same run id, which would make one of them never run.
    seen: dict[str, Schedule] = {}
    for schedule in sorted(schedules, key=lambda s: s.id):
        suffix = slot_suffix(schedule.pipeline, schedule.id)
        other = seen.setdefault(suffix, schedule)
        if other is not schedule:
            problems.append(Problem(schedule.source, f"{schedule.field}.id", f'"{schedule.id}" '
                                    f'gives the same run ids ("...-{suffix}") as "{other.id}" of '
                                    f'pipeline "{other.pipeline}"; rename one of them',
                                    pipeline=schedule.pipeline))


def check_schedules(
    text: str | None,
    pipelines: Mapping[str, Pipeline],
    *,
    file: str = SCHEDULES_FILE,
    root: Path | None = None,
    invalid_pipelines: Collection[str] = (),
    flows: Collection[str] = (),
) -> ScheduleSet:
    """Validate the schedules.yaml text (None: no file) with the pipelines' schedules.

    Returns every usable schedule and every problem; nothing is raised, so `fastflow schedule
    check` can list all problems at once. When there is any error the set must not be activated.
    """
    entries, problems = parse_schedules_yaml(text or "", file)
    schedules, more = combine_schedules(entries, pipelines, root=root,
                                        invalid_pipelines=invalid_pipelines, flows=flows)
    return ScheduleSet(tuple(schedules), tuple(problems + more))


def read_schedules_file(root: Path) -> str | None:
    """The text of `<root>/.fastflow/schedules.yaml`, or None when the file does not exist."""
    path = root / SCHEDULES_FILE
    link = link_problem(root, path)  # never read through it, never "no schedules" instead
    if link is not None:
        raise ConfigError(f"{SCHEDULES_FILE}: {link}")
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{SCHEDULES_FILE}: cannot be read ({exc}); fix the file's permissions "
                          "or encoding (UTF-8)") from None


def read_schedules_text(root: Path) -> tuple[str | None, Problem | None]:
    """`read_schedules_file` for callers that report rather than stop: (text, None), or
    (None, the problem) when the file is linked outside the repository or cannot be read."""
    try:
        return read_schedules_file(root), None
    except ConfigError as exc:  # its message names the file already
        return None, Problem(SCHEDULES_FILE, "", str(exc).removeprefix(f"{SCHEDULES_FILE}: "))


def load_schedules(
    root: Path, pipelines: Mapping[str, Pipeline], invalid_pipelines: Collection[str] = ()
) -> ScheduleSet:
    """Read and validate the schedules of the repository at `root`; raise `ConfigError` on errors.

    The message lists every error, one per line, each naming file, field, value and fix.
    Warnings stay in the returned set's `problems`.
    """
    result = check_schedules(read_schedules_file(root), pipelines, root=root,
                             invalid_pipelines=invalid_pipelines)
    if result.errors:
        raise ConfigError("\n".join(str(p) for p in result.errors))
    return result
