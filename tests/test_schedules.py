"""Parsing and validating schedules (schedules.yaml + pipeline.json), cron semantics, the CLI."""
from __future__ import annotations

import json
import re
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest
from click.testing import CliRunner
from croniter import croniter
from hypothesis import given, settings
from hypothesis import strategies as st

from fastflow.cli.schedule import schedule as schedule_cli
from fastflow.config.schedules import check_schedules, disabled_reason, load_schedules
from fastflow.errors import ConfigError
from fastflow.model import Pipeline, PipelineType, RunConfig, ScheduleSpec
from fastflow.schedule.cron import parse_cron
from fastflow.schedule.spec import Catchup, Overlap, ScheduleKind
from fastflow.schedule.timevalues import format_duration, parse_duration

UTC = timezone.utc


def pipeline(name: str, **kw) -> Pipeline:
    return Pipeline(name=name, path=Path("/r/pipelines") / name, entry="main.py",
                    type=PipelineType.SCRIPT, metadata_file=Path(f"/r/pipelines/{name}/pipeline.json"),
                    requirements=None, **kw)


PIPES = {n: pipeline(n) for n in ("report", "sync", "migrate")}


def problems(text: str, pipes=PIPES) -> list[str]:
    return [str(p) for p in check_schedules(text, pipes, root=Path("/r")).problems]


ISSUE_EXAMPLE = """
timezone: Europe/Berlin
schedules:
  - pipeline: report
    id: nightly
    cron: "0 3 * * 1-5"
    timezone: America/New_York
    env: {MODE: full}
    start: 2026-01-01
    end: 2026-12-31T23:59:59
    catchup: latest
    catchup_window: 6h
    max_catchup: 10
    skip_if_late: 30m
    overlap: skip
    enabled: true
  - pipeline: sync
    interval: 15m
  - pipeline: migrate
    at: 2026-12-01T12:00:00Z
"""


def test_issue_example_parses():
    result = check_schedules(ISSUE_EXAMPLE, PIPES)
    assert result.problems == ()
    nightly, sync, migrate = result.get("nightly"), result.get("sync"), result.get("migrate")
    assert nightly.cron.text == "0 3 * * 1-5" and nightly.timezone == "America/New_York"
    assert nightly.start == datetime(2026, 1, 1, 5, tzinfo=UTC)  # midnight in New York
    assert nightly.end == datetime(2027, 1, 1, 4, 59, 59, tzinfo=UTC)
    assert (nightly.catchup, nightly.catchup_window, nightly.skip_if_late, nightly.overlap) == (
        Catchup.LATEST, 6 * 3600, 1800, Overlap.SKIP)
    assert dict(nightly.env) == {"MODE": "full"}
    assert (sync.kind, sync.interval, sync.timezone) == (ScheduleKind.INTERVAL, 900, "Europe/Berlin")
    assert migrate.at == datetime(2026, 12, 1, 12, tzinfo=UTC)


def test_end_date_includes_the_whole_day():
    text = "schedules:\n  - {pipeline: sync, interval: 60, start: 2026-01-01, end: 2026-01-01}\n"
    only = check_schedules(text, PIPES).schedules[0]
    assert only.end - only.start == timedelta(days=1, microseconds=-1)


# --- exact error messages ------------------------------------------------------------------------

Y = '.fastflow/schedules.yaml: schedules[0] (pipeline "sync")'


@pytest.mark.parametrize("entry,message", [
    ('cron: "0 0 3 * * *"', f'{Y}.cron: "0 0 3 * * *" has 6 fields; Fast-Flow crons have 5 and no '
     'seconds field: remove the seconds, use 5 fields (minute hour day-of-month month '
     'day-of-week) such as "0 3 * * 1-5"'),
    ('cron: "0 0 31 2 *"', f'{Y}.cron: "0 0 31 2 *" never fires: none of its months has any of its '
     "days of the month; fix the day-of-month or month field"),
    ('cron: "0 0 L * *"', f'{Y}.cron: "0 0 L * *" uses "L", an extension outside POSIX cron; use '
     "numbers, names, *, ranges (1-5), lists (1,3) and steps (*/15)"),
    ('cron: "61 * * * *"', f'{Y}.cron: "61 * * * *" is not a valid cron expression ([61 * * * *] is '
     'not acceptable, out of range); use 5 fields (minute hour day-of-month month day-of-week) '
     'such as "0 3 * * 1-5"'),
    ('cron: "@reboot"', f'{Y}.cron: "@reboot" is not a cron macro; use one of @yearly, @annually, '
     "@monthly, @weekly, @daily, @midnight, @hourly"),
    ('cron: "0 3 * * *"\n    timezone: Europe/Berln', f'{Y}.timezone: "Europe/Berln" is not a known '
     'IANA time zone; use a name such as "Europe/Berlin", "America/New_York" or "UTC"; did you '
     'mean "Europe/Berlin"?'),
    ("interval: 60\n    start: 2026-02-01\n    end: 2026-01-01", f"{Y}.end: \"2026-01-01\" is before "
     'start "2026-02-01"; move end after start or remove it'),
    ("interval: 15 minutes", f'{Y}.interval: "15 minutes" is not a duration; use seconds or a '
     'number with a unit s, m, h, d or w, such as "30s", "15m" or "6h"'),
    ("at: 2026-13-01", f'{Y}.at: "2026-13-01" is not a date or date-time; use ISO 8601 such as '
     "2026-12-01T12:00:00Z, 2026-12-01T12:00 (in the schedule's zone) or 2026-12-01"),
    ("interval: 60\n    cron: '* * * * *'", f"{Y}: has both cron and interval; give exactly one of "
     "cron, interval or at"),
    ("enabled: true", f"{Y}: has none of cron, interval or at; give exactly one of them"),
    ("interval: 60\n    catchup: latset", f'{Y}.catchup: "latset" is not one of "none" or "latest" '
     'or "all"; did you mean "latest"?'),
    ("interval: 60\n    run_config: dev", f'{Y}.run_config: "dev" is not a run configuration of '
     'pipeline "sync" (it has: none); use one of its `schedules[].id` values or remove run_config'),
])
def test_entry_errors_name_file_field_value_and_fix(entry, message):
    assert problems(f"schedules:\n  - pipeline: sync\n    {entry}\n") == [message]


def test_unknown_pipeline_with_did_you_mean():
    assert problems('schedules:\n  - {pipeline: reprot, cron: "@daily"}\n') == [
        '.fastflow/schedules.yaml: schedules[0] (pipeline "reprot").pipeline: "reprot" is not a pipeline; use the name of a pipeline folder (`fastflow '
        'list` shows them); did you mean "report"?']


def test_schedules_of_invalid_pipelines_are_left_out_with_a_warning():
    result = check_schedules('schedules:\n  - {pipeline: broken, cron: "@daily"}\n', PIPES,
                             invalid_pipelines=["broken"])
    assert result.schedules == () and result.errors == ()
    assert [str(p) for p in result.problems] == [
        '.fastflow/schedules.yaml: schedules[0] (pipeline "broken").pipeline: "broken" is an invalid pipeline, so this schedule is inactive until it is '
        "fixed (see `fastflow check`)"]


def test_id_clashes_within_and_across_files_and_run_id_clashes():
    pipes = {"sync": pipeline("sync", run_configs=(RunConfig(id="prod", cron="0 * * * *"),)),
             "a-b": pipeline("a-b"), "a": pipeline("a")}
    text = """schedules:
  - {pipeline: sync, id: sync-prod, interval: 15m}
  - {pipeline: a, id: b-c, interval: 60}
  - {pipeline: a-b, id: c, interval: 60}
  - {pipeline: a, id: c, interval: 60}
"""
    assert problems(text, pipes) == [
        '.fastflow/schedules.yaml: schedules[0] (id "sync-prod").id: "sync-prod" is already the id '
        'of schedules[0] (id "prod") in pipelines/sync/pipeline.json; schedule ids must be unique '
        "across schedules.yaml and pipeline.json files: give one of them another id",
        '.fastflow/schedules.yaml: schedules[3] (id "c").id: "c" is already the id of schedules[2] '
        '(id "c") in .fastflow/schedules.yaml; schedule ids must be unique across schedules.yaml '
        "and pipeline.json files: give one of them another id",
        '.fastflow/schedules.yaml: schedules[2] (id "c").id: "c" gives the same run ids '
        '("...-a-b-c") as "b-c" of pipeline "a"; rename one of them',
    ]


def test_invalid_yaml_and_wrong_shapes():
    assert problems("schedules: [\n") == [
        ".fastflow/schedules.yaml: invalid YAML at line 2, column 1: expected the node content, but "
        "found '<stream end>'; fix the syntax (indent with spaces, quote values containing ': ')"]
    assert problems("- 1\n") == [
        ".fastflow/schedules.yaml: [1] is not a mapping; start the file with `schedules:`"]
    assert problems("schedules: {pipeline: sync}\n") == [
        '.fastflow/schedules.yaml: schedules: {"pipeline": "sync"} is not a list; write each '
        "schedule as `- pipeline: name`"]


def test_unknown_key_is_a_warning_with_did_you_mean():
    result = check_schedules("schedules:\n  - {pipeline: sync, interval: 60, overlpa: skip}\n", PIPES)
    assert result.errors == () and len(result.schedules) == 1
    assert [str(p) for p in result.problems] == [
        f'{Y}.overlpa: unknown key, ignored; did you mean "overlap"?']


# --- pipeline.json schedules and derived ids -------------------------------------------------------


def test_pipeline_json_schedules_and_derived_ids():
    pipes = {
        "report": pipeline("report", schedule=ScheduleSpec(
            cron="0 6 * * *", run_once_at=datetime(2026, 12, 1, tzinfo=UTC)),
            run_configs=(RunConfig(id="prod", interval_seconds=3600), RunConfig(id="manual"))),
        "off": pipeline("off", enabled=False, schedule=ScheduleSpec(interval_seconds=60)),
    }
    text = "schedules:\n  - {pipeline: report, cron: '@hourly'}\n  - {pipeline: report, cron: '@daily'}\n"
    result = check_schedules(text, pipes, root=Path("/r"))
    assert result.problems == ()
    ids = {s.id: (s.kind.value, s.source, s.field, s.run_config, s.enabled) for s in result.schedules}
    # As in Fast-Flow, the run configurations replace report's top-level schedule_cron (which
    # config.pipeline warns about); run_once_at stays. The derived ids start at "report".
    assert ids == {
        "report-once": ("at", "pipelines/report/pipeline.json", "run_once_at", None, True),
        "report-prod": ("interval", "pipelines/report/pipeline.json", 'schedules[0] (id "prod")',
                        "prod", True),
        "report": ("cron", ".fastflow/schedules.yaml", 'schedules[0] (pipeline "report")', None, True),
        "report-2": ("cron", ".fastflow/schedules.yaml", 'schedules[1] (pipeline "report")', None,
                     True),
        "off": ("interval", "pipelines/off/pipeline.json", "schedule_interval_seconds", None, False),
    }


def test_a_run_configuration_is_named_by_its_id_in_messages():
    pipes = {"report": pipeline("report", run_configs=(
        RunConfig(id="manual"), RunConfig(id="nightly", cron="0 0 30 2 *")))}
    assert problems("", pipes) == [
        'pipelines/report/pipeline.json: schedules[1] (id "nightly").schedule_cron: "0 0 30 2 *" '
        "never fires: none of its months has any of its days of the month; fix the day-of-month or "
        "month field"]


def test_pipeline_json_cron_is_revalidated():
    pipes = {"report": pipeline("report", schedule=ScheduleSpec(cron="0 0 30 2 *"))}
    assert problems("", pipes) == [
        'pipelines/report/pipeline.json: schedule_cron: "0 0 30 2 *" never fires: none of its months '
        "has any of its days of the month; fix the day-of-month or month field"]


def test_load_schedules_raises_every_error_and_reads_the_file(tmp_path):
    assert load_schedules(tmp_path, PIPES).schedules == ()  # no file: no schedules
    (tmp_path / ".fastflow").mkdir()
    (tmp_path / ".fastflow/schedules.yaml").write_text(
        'schedules:\n  - {pipeline: nope, cron: "@daily"}\n  - {pipeline: sync, interval: 0}\n')
    with pytest.raises(ConfigError) as exc:
        load_schedules(tmp_path, PIPES)
    assert str(exc.value) == (
        '.fastflow/schedules.yaml: schedules[1] (pipeline "sync").interval: 0 is not a whole number '
        'of seconds > 0; use seconds or a number with a unit s, m, h, d or w, such as "30s", "15m" '
        'or "6h"\n'
        '.fastflow/schedules.yaml: schedules[0] (pipeline "nope").pipeline: "nope" is not a '
        "pipeline; use the name of a pipeline folder (`fastflow list` shows them)")


# --- durations and cron semantics ---------------------------------------------------------------


@pytest.mark.parametrize("text,seconds", [
    ("30s", 30), ("15m", 900), ("6h", 21600), ("1d", 86400), ("1w", 604800), ("1h30m", 5400),
    (90, 90), ("90", 90), (1.0, 1), ("1.5h", 5400),
])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


def test_format_duration():
    assert [format_duration(s) for s in (45, 900, 5400, 90000)] == ["45s", "15m", "1h30m", "1d1h"]


@pytest.mark.parametrize("expr,other", [
    ("0 0 * * 7", "0 0 * * 0"), ("0 0 * * sun", "0 0 * * 0"), ("0 0 1 jan *", "0 0 1 1 *"),
    ("@daily", "0 0 * * *"), ("@hourly", "0 * * * *"), ("@weekly", "0 0 * * 0"),
    ("@monthly", "0 0 1 * *"), ("@yearly", "0 0 1 1 *"), ("0 0 * * 5-7", "0 0 * * 0,5,6"),
])
def test_cron_equivalences(expr, other):
    a, b = parse_cron(expr), parse_cron(other)
    assert (a.minutes, a.hours, a.days, a.months, a.weekdays) == (b.minutes, b.hours, b.days, b.months, b.weekdays)


def test_cron_day_of_month_or_day_of_week_when_both_restricted():
    both = parse_cron("0 0 13 * 5")  # the 13th OR any Friday
    days = [d for d in (date(2026, 3, x) for x in range(1, 32)) if both.matches_day(d)]
    assert [d.day for d in days] == [6, 13, 20, 27]  # Fridays, and the 13th (a Friday too)
    star = parse_cron("0 0 */2 * 1")  # a field starting with * means AND (Vixie cron)
    assert [d.day for d in (date(2026, 3, x) for x in range(1, 32)) if star.matches_day(d)] == [9, 23]


FIELDS = st.tuples(
    st.sampled_from(["*", "0", "*/15", "5,35", "10-20"]),
    st.sampled_from(["*", "3", "*/6", "1-5"]),
    st.sampled_from(["*", "1", "15", "28-31"]),
    st.sampled_from(["*", "2", "1-6", "jan,jul"]),
    st.sampled_from(["*", "0", "mon-fri", "6,7"]),
)


@settings(max_examples=150, deadline=None)
@given(fields=FIELDS, start=st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2090, 1, 1)))
def test_next_after_agrees_with_croniter_on_wall_time(fields, start):
    expr = " ".join(fields)
    ours = parse_cron(expr)
    theirs = croniter(expr, start)
    wall = start
    for _ in range(5):
        wall = ours.next_after(wall)
        assert wall == theirs.get_next(datetime), expr


# --- CLI -----------------------------------------------------------------------------------------

SCHEDULES_YAML = """timezone: Europe/Berlin
schedules:
  - {pipeline: report, id: nightly, cron: "30 2 * * *"}
  - {pipeline: sync, interval: 15m}
"""


@pytest.fixture
def repo(make_repo):
    return make_repo({
        "pipelines/report/main.py": "print('hi')\n",
        "pipelines/sync/main.py": "print('hi')\n",
        ".fastflow/schedules.yaml": SCHEDULES_YAML,
    })


def cli(*args: str):
    return CliRunner().invoke(schedule_cli, list(args), catch_exceptions=False)


def test_cli_next_marks_dst_moves(repo):
    result = cli("next", "nightly", "--repo", str(repo), "--from", "2026-03-28", "-n", "2")
    assert result.exit_code == 0, result.output
    assert result.output == (
        "2026-03-28 02:30:00 CET  2026-03-28T01:30:00Z  20260328T013000Z-report-nightly\n"
        "2026-03-29 03:00:00 CEST  2026-03-29T01:00:00Z  20260329T010000Z-report-nightly"
        "  (moved by DST from 02:30)\n")
    data = json.loads(cli("next", "nightly", "--repo", str(repo), "--from", "2026-03-29", "-n", "1",
                          "--json").output)
    assert data["slots"] == [{
        "schedule": "nightly", "pipeline": "report", "at_utc": "2026-03-29T01:00:00Z",
        "at_local": "2026-03-29T03:00:00+02:00", "timezone": "Europe/Berlin",
        "run_id": "20260329T010000Z-report-nightly", "moved_by_dst": True,
        "nominal_local": "2026-03-29T02:30"}]


def test_cli_next_unknown_id(repo):
    result = cli("next", "nightlx", "--repo", str(repo))
    assert result.exit_code == 1
    assert result.output == ('Error: no schedule "nightlx"; `fastflow schedule list` shows the ids; '
                             'did you mean "nightly"?\n')


def test_cli_list(repo):
    result = cli("list", "--repo", str(repo), "--json")
    assert result.exit_code == 0
    rows = json.loads(result.output)["schedules"]
    assert [(r["id"], r["when"], r["timezone"]) for r in rows] == [
        ("nightly", "cron 30 2 * * *", "Europe/Berlin"), ("sync", "every 15m", "Europe/Berlin")]
    assert all(r["next"]["at_utc"].endswith("Z") for r in rows)
    table = cli("list", "--repo", str(repo)).output.splitlines()
    assert table[0].split() == ["ID", "PIPELINE", "WHEN", "ZONE", "NEXT", "(LOCAL)", "NEXT", "(UTC)", "SOURCE"]
    assert table[1].split()[:2] == ["nightly", "report"]


def test_cli_check(repo):
    ok = cli("check", "--repo", str(repo))
    assert (ok.exit_code, ok.output) == (0, "2 schedules OK\n")
    (repo / ".fastflow/schedules.yaml").write_text("schedules:\n  - {pipeline: sync, cron: '0 0 31 2 *'}\n")
    bad = cli("check", "--repo", str(repo))
    assert bad.exit_code == 1
    assert bad.output == (
        'Error: .fastflow/schedules.yaml: schedules[0] (pipeline "sync").cron: "0 0 31 2 *" never '
        "fires: none of its months has any of its days of the month; fix the day-of-month or month "
        "field\n")
    listed = cli("list", "--repo", str(repo))
    assert listed.exit_code == 1 and listed.output.startswith("Error: .fastflow/schedules.yaml")


def test_cli_commands_have_help():
    for command in ("list", "next", "check"):
        assert cli(command, "--help").exit_code == 0


# --- `enabled: false` of a pipeline or a run configuration --------------------------------------


def test_schedules_yaml_entries_of_a_disabled_pipeline_or_run_config_are_disabled():
    pipes = {
        "report": pipeline("report", run_configs=(RunConfig(id="prod"),
                                                  RunConfig(id="old", enabled=False,
                                                            interval_seconds=60))),
        "paused": pipeline("paused", enabled=False, run_configs=(RunConfig(id="n", cron="0 3 * * *"),)),
    }
    text = ("schedules:\n  - {pipeline: report, id: a, cron: '@hourly'}\n"
            "  - {pipeline: report, id: b, cron: '@hourly', run_config: prod}\n"
            "  - {pipeline: report, id: c, cron: '@hourly', run_config: old}\n"
            "  - {pipeline: paused, id: d, cron: '@hourly'}\n"
            "  - {pipeline: report, id: e, cron: '@hourly', enabled: false}\n")
    result = check_schedules(text, pipes, root=Path("/r"))
    assert result.problems == ()
    assert {s.id: s.enabled for s in result.schedules} == {
        "a": True, "b": True, "c": False, "d": False, "e": False,
        "report-old": False, "paused-n": False}  # the pipelines' own schedules too
    assert {s.id: disabled_reason(s, pipes) for s in result.schedules} == {
        "a": None, "b": None,
        "report-old": 'run configuration "old" of pipeline "report" is disabled ("enabled": false)',
        "paused-n": 'pipeline "paused" is disabled ("enabled": false)',
        "c": 'run configuration "old" of pipeline "report" is disabled ("enabled": false)',
        "d": 'pipeline "paused" is disabled ("enabled": false)',
        "e": "enabled: false in .fastflow/schedules.yaml",
    }


def test_cli_list_shows_disabled_schedules_and_why(make_repo):
    repo = make_repo({
        "pipelines/report/main.py": "print('hi')\n",
        "pipelines/paused/main.py": "print('hi')\n",
        "pipelines/paused/pipeline.json": '{"enabled": false}',
        "pipelines/sync/main.py": "print('hi')\n",
        "pipelines/sync/pipeline.json": json.dumps(
            {"schedules": [{"id": "old", "enabled": False}]}),
        ".fastflow/schedules.yaml": "schedules:\n  - {pipeline: report, id: live, interval: 1h}\n"
                                    "  - {pipeline: paused, id: paused, interval: 1h}\n"
                                    "  - {pipeline: sync, id: old, interval: 1h, run_config: old}\n",
    })
    rows = {r["id"]: r for r in json.loads(cli("list", "--repo", str(repo), "--json").output)[
        "schedules"]}
    assert {i: (r["enabled"], r["disabled"], r["next"] is None) for i, r in rows.items()} == {
        "live": (True, None, False),
        "paused": (False, 'pipeline "paused" is disabled ("enabled": false)', True),
        "old": (False, 'run configuration "old" of pipeline "sync" is disabled ("enabled": false)',
                True),
    }
    table = {line.split()[0]: line for line in cli("list", "--repo", str(repo)).output.splitlines()}
    assert 'every 1h (disabled: pipeline "paused" is disabled ("enabled": false))' in table["paused"]
    assert re.search(r"\sUTC\s+-\s+disabled\s+\.fastflow/schedules\.yaml", table["paused"])
    assert "(disabled" not in table["live"]
