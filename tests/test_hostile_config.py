"""Hostile configuration files and values (issue 12): deep nesting, YAML bombs, huge and
non-finite numbers, instants at the edges of the calendar. Each is a problem naming file, field,
value and bound, reported by `validate`, `list`, `schedule check` and the daemon alike; never a
traceback, a hang or a crash later on."""
from __future__ import annotations

import os
import time

import pytest
from click.testing import CliRunner
from helpers import make_daemon, utc_now, write_files

from fastflow.cli import main
from fastflow.config import (
    default_repo_config,
    parse_pipeline_metadata,
    read_repo_config,
)
from fastflow.config.schedules import check_schedules
from fastflow.config.yamlfile import load_yaml
from fastflow.errors import Invalid
from fastflow.executors.local import LocalExecutor, host_base_env
from fastflow.model import Pipeline, PipelineType, RetryPolicy, RetryStrategy, RunStatus
from fastflow.record import ErrorInfo
from fastflow.run.runner import RunRequest, run_pipeline

DEEP_JSON = "[" * 100_000 + "]" * 100_000
DEEP_YAML = "schedules: " + "[" * 20_000 + "]" * 20_000 + "\n"
DEEP_JSON_ERROR = (
    "pipelines/deep/pipeline.json: invalid JSON: nested deeper than 100 levels; flatten the "
    "lists and objects"
)
DEEP_YAML_ERROR = (
    "invalid YAML at line 1, column 111: nested deeper than 100 levels; flatten the lists and "
    "mappings"
)
BOMB_ERROR = (
    "invalid YAML at line 8, column 10: more than 1,000,000 values once aliases (*name) are "
    "expanded; write fewer values or fewer aliases"
)


def yaml_bomb(key: str = "notifications") -> str:
    """A "billion laughs": nine levels of nine aliases each, 9**9 values once expanded."""
    lines = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi"):
        lines.append(f"{name}: &{name} [{', '.join([f'*{prev}'] * 9)}]")
    return f"{key}:\n" + "".join(f"  {line}\n" for line in lines)


def invoke(*args: str):
    return CliRunner().invoke(main, list(args))


def test_deep_pipeline_json_is_a_problem_in_validate_and_list(make_repo):
    repo = make_repo({
        "pipelines/deep/main.py": "print(1)\n", "pipelines/deep/pipeline.json": DEEP_JSON,
        "pipelines/ok/main.py": "print(1)\n",
    })
    result = invoke("validate", "--repo", str(repo))
    assert result.exit_code == 1
    assert result.output == f"error: {DEEP_JSON_ERROR}\n"
    listed = invoke("list", "--repo", str(repo))
    assert listed.exit_code == 0, listed.output
    assert "invalid: " in listed.output and "nested deeper" in listed.output.replace("\n", " ")


def test_deep_json_just_under_the_python_limit_is_refused_too(make_repo):
    repo = make_repo({"pipelines/deep/main.py": "print(1)\n",
                      "pipelines/deep/pipeline.json": '{"tags": ' + "[" * 500 + "]" * 500 + "}"})
    result = invoke("validate", "--repo", str(repo))
    assert result.output == f"error: {DEEP_JSON_ERROR}\n"


def test_deep_config_yaml_is_a_problem_in_validate_and_list(make_repo):
    repo = make_repo({".fastflow/config.yaml": DEEP_YAML, "pipelines/ok/main.py": "print(1)\n"})
    result = invoke("validate", "--repo", str(repo))
    assert result.output == f"error: .fastflow/config.yaml: {DEEP_YAML_ERROR}\n"
    listed = invoke("list", "--repo", str(repo))
    assert listed.exit_code == 1
    assert listed.output == f"Error: .fastflow/config.yaml: {DEEP_YAML_ERROR}\n"


def test_deep_schedules_yaml_is_a_problem_in_schedule_check(make_repo):
    repo = make_repo({".fastflow/schedules.yaml": DEEP_YAML, "pipelines/ok/main.py": "print(1)\n"})
    result = invoke("schedule", "check", "--repo", str(repo))
    assert result.exit_code == 1
    assert result.output == f"Error: .fastflow/schedules.yaml: {DEEP_YAML_ERROR}\n"


def test_a_yaml_bomb_is_refused_fast():
    started = time.monotonic()
    with pytest.raises(Invalid) as caught:
        load_yaml(yaml_bomb())
    assert time.monotonic() - started < 1
    assert str(caught.value) == BOMB_ERROR


def test_a_recursive_alias_is_refused():
    with pytest.raises(Invalid) as caught:
        load_yaml("a: &a [1, *a]\n")
    assert str(caught.value) == (
        "invalid YAML at line 1, column 11: an alias refers to a value that contains it; YAML for "
        "Fast-Flow cannot be recursive, write the value out"
    )


def test_aliases_within_the_bound_still_work():
    expected = {"a": [1, 2], "b": [1, 2], "c": {"d": [1, 2]}}
    assert load_yaml("a: &x [1, 2]\nb: *x\nc: {d: *x}\n") == expected


def test_a_yaml_bomb_in_config_yaml_is_a_problem_in_validate(make_repo):
    repo = make_repo({".fastflow/config.yaml": yaml_bomb(), "pipelines/ok/main.py": "print(1)\n"})
    started = time.monotonic()
    result = invoke("validate", "--repo", str(repo))
    assert time.monotonic() - started < 5
    assert result.output == f"error: .fastflow/config.yaml: {BOMB_ERROR}\n"


@pytest.mark.slow
def test_the_daemon_keeps_the_last_valid_files_when_deep_and_bomb_files_are_pushed(
        origin, tmp_path):
    origin.push({"pipelines/etl/main.py": "print(1)\n", "pipelines/etl/pipeline.json": "{}"})
    daemon = make_daemon(str(origin.bare), tmp_path / "state")
    daemon.start()
    try:
        good = daemon.deployment.active["etl"]
        origin.push({"pipelines/etl/pipeline.json": DEEP_JSON,
                     ".fastflow/schedules.yaml": DEEP_YAML}, "deep")
        daemon.sync(utc_now())
        assert daemon.deployment.active["etl"] == good
        messages = sorted(str(p) for p in daemon.deployment.errors)
        assert messages == [
            f".fastflow/schedules.yaml: {DEEP_YAML_ERROR} (the last valid schedules stay active)",
            DEEP_JSON_ERROR.replace("pipelines/deep/", "pipelines/etl/")
            + f" (the last valid version (commit {good.commit[:10]}) stays active)",
        ]
        origin.push({".fastflow/config.yaml": DEEP_YAML.replace("schedules", "tags")}, "config")
        daemon.sync(utc_now())
        (error,) = daemon.deployment.errors[:1]
        assert str(error).startswith(
            ".fastflow/config.yaml: invalid YAML at line 1, column 106: nested")
        origin.push({".fastflow/config.yaml": yaml_bomb()}, "bomb")
        started = time.monotonic()
        daemon.sync(utc_now())
        assert time.monotonic() - started < 5
        assert str(daemon.deployment.errors[0]) == (
            f".fastflow/config.yaml: {BOMB_ERROR} (the previous valid configuration stays active)"
        )
        daemon.tick(utc_now())
    finally:
        daemon.stop(grace=10)


# --- values that validated, then crashed the planner, the run or the site -----------------------

YEARS_FIX = ("is outside the years 1970 to 9999 (in UTC); use ISO 8601 such as 2026-12-01T12:00:00Z, "
             "2026-12-01T12:00 (in the schedule's zone) or 2026-12-01")
HUGE = "99999999999999999999"
PIPELINE_BOUNDS = [
    ('{"cpu_hard_limit": 1e300}',
     "cpu_hard_limit: 1e+300 is above the maximum of 1024 CPU cores; use a number such as 1 or 0.5"),
    (f'{{"mem_hard_limit": "{HUGE}t"}}',
     f'mem_hard_limit: "{HUGE}t" is above the maximum of "1024t" (1 PiB); use a number with a '
     'unit such as "512m", "1.5g" or "2Gi"'),
    ('{"timeout": 1e400}', "timeout: Infinity is above the maximum of 3155760000 seconds (100 years); "
     "use a smaller number"),
    ('{"retry_attempts": 100000000000000000000000000}',
     "retry_attempts: 100000000000000000000000000 is above the maximum of 1,000,000; use a smaller "
     "number"),
    ('{"max_instances": 100000000000000000000000000}',
     "max_instances: 100000000000000000000000000 is above the maximum of 1,000,000; use a smaller "
     "number"),
    ('{"retry_attempts": 1, "retry_strategy": {"type": "fixed_delay", "delay": 1e308}}',
     "retry_strategy.delay: 1e+308 is above the maximum of 3155760000 seconds (100 years); use a "
     "smaller number"),
    ('{"retry_attempts": 1, "retry_strategy": {"type": "custom_schedule", "delays": [1, 1e400]}}',
     "retry_strategy.delays: item 1: Infinity is above the maximum of 3155760000 seconds "
     "(100 years); use a smaller number"),
    ('{"retry_attempts": 1, "retry_strategy": {"type": "exponential_backoff", "multiplier": 1e300}}',
     "retry_strategy.multiplier: 1e+300 is above the maximum of 100; use a smaller number"),
    ('{"run_once_at": "0001-01-01T00:00:00+14:00"}',
     f'run_once_at: "0001-01-01T00:00:00+14:00" {YEARS_FIX}'),
    ('{"schedule_interval_seconds": 1e20}',
     "schedule_interval_seconds: 1e+20 is above the maximum of 3155760000 seconds (100 years); use "
     "a smaller number"),
    ('{"default_env": {"A": "x\\u0000y"}}',
     'default_env: "A": "x\\u0000y" contains a NUL character, which environment values cannot '
     "hold; remove it"),
    ('{"default_env": {"A": "' + "x" * 3_000_000 + '"}}',
     'default_env: "A": a value of 3,000,000 characters is above the maximum of 131,072 (128 KiB); '
     "pass large data as a file of the pipeline"),
]


@pytest.mark.parametrize("text, message", PIPELINE_BOUNDS,
                         ids=[m.split(":")[0] + str(i) for i, (_, m) in enumerate(PIPELINE_BOUNDS)])
def test_huge_and_non_finite_pipeline_values_are_refused_with_their_bound(text, message):
    found = parse_pipeline_metadata(text, name="etl", file="pipelines/etl/pipeline.json",
                                    config=default_repo_config())
    assert [str(p) for p in found.errors] == [f"pipelines/etl/pipeline.json: {message}"]


CONFIG_BOUNDS = [
    (f"log_cap: {HUGE}t", f'log_cap: "{HUGE}t" is above the maximum of "1g"; use a smaller size'),
    ("default_limits:\n  cpu_hard_limit: 1.0e+300", "default_limits.cpu_hard_limit: 1e+300 is above "
     "the maximum of 1024 CPU cores; use a number such as 1 or 0.5"),
    ("default_timeout: .inf", "default_timeout: Infinity is above the maximum of 3155760000 seconds "
     "(100 years); use a smaller number"),
    ("grace_period: .nan", "grace_period: NaN is not a number of seconds >= 0; use a number such as 300"),
    ("default_retry_attempts: 100000000000000000000000000", "default_retry_attempts: "
     "100000000000000000000000000 is above the maximum of 1,000,000; use a smaller number"),
    ("retention:\n  keep_days: 1000000", "retention.keep_days: 1000000 is above the maximum of "
     "36,525; use a smaller number"),
]


@pytest.mark.parametrize("text, message", CONFIG_BOUNDS, ids=[m.split(":")[0] for _, m in CONFIG_BOUNDS])
def test_huge_and_non_finite_config_values_are_refused_with_their_bound(text, message):
    config, problems = read_repo_config(text)
    assert config is None
    assert [str(p) for p in problems] == [f".fastflow/config.yaml: {message}"]


SCHEDULE_BOUNDS = [
    ("interval: 99999999999999999999w", 'interval: "99999999999999999999w" is above the maximum of '
     '"36525d" (100 years); use seconds or a number with a unit s, m, h, d or w, such as "30s", '
     '"15m" or "6h"'),
    ("interval: .inf", 'interval: Infinity is above the maximum of "36525d" (100 years); use seconds '
     'or a number with a unit s, m, h, d or w, such as "30s", "15m" or "6h"'),
    ("timezone: America/New_York\n  at: 9999-12-31T23:59:59", f'at: "9999-12-31T23:59:59" {YEARS_FIX}'),
    ("at: 1969-12-31", f'at: "1969-12-31" {YEARS_FIX}'),
    ("interval: 1h\n  end: 9999-12-31", f'end: "9999-12-31" {YEARS_FIX}'),
    ("interval: 1h\n  max_catchup: 100000000000000000000000000", "max_catchup: "
     "100000000000000000000000000 is above the maximum of 1,000,000; use a smaller number"),
]


@pytest.mark.parametrize("entry, message", SCHEDULE_BOUNDS, ids=[m.split(":")[0] for _, m in SCHEDULE_BOUNDS])
def test_huge_durations_and_instants_off_the_calendar_are_refused_in_schedules_yaml(entry, message):
    found = check_schedules(f"schedules:\n- pipeline: etl\n  {entry}\n", {})
    assert [str(p) for p in found.errors] == [
        f'.fastflow/schedules.yaml: schedules[0] (pipeline "etl").{message}']


def test_slots_end_at_the_end_of_the_calendar_instead_of_overflowing(make_repo):
    repo = make_repo({
        "pipelines/etl/main.py": "print(1)\n",
        ".fastflow/schedules.yaml": "schedules:\n- pipeline: etl\n  interval: 36525d\n"
                                    "  start: 9999-06-01T00:00:00Z\n- pipeline: etl\n  id: late\n"
                                    "  cron: 59 23 31 12 *\n  start: 9999-12-30T00:00:00Z\n",
    })
    listed = invoke("schedule", "next", "etl", "--repo", str(repo), "--from", "9999-01-01T00:00:00Z")
    assert listed.exit_code == 0, listed.output
    assert len(listed.output.splitlines()) == 1 and "9999-06-01" in listed.output
    late = invoke("schedule", "next", "late", "--repo", str(repo), "--from", "9999-01-01T00:00:00Z")
    assert late.exit_code == 0, late.output  # the cron library cannot look past 9999 either


def test_exponential_backoff_waits_stay_at_max_delay_after_a_thousand_retries():
    policy = RetryPolicy(attempts=1_000_000, strategy=RetryStrategy.EXPONENTIAL_BACKOFF,
                         initial_delay=1.0, max_delay=600.0, multiplier=2.0)
    assert policy.wait_before_retry(5000) == 600


# --- `fastflow validate` checks every file the daemon reads ---------------------------------------

@pytest.mark.parametrize("schedules, message", [
    ("schedules: 5\n", 'schedules: 5 is not a list; write each schedule as `- pipeline: name`'),
    ("timezone: Mars/Olympus\nschedules: []\n", 'timezone: "Mars/Olympus" is not a known IANA '
     'time zone; use a name such as "Europe/Berlin", "America/New_York" or "UTC"'),
    (yaml_bomb("x"), BOMB_ERROR),
    ("schedules:\n- pipeline: nope\n  cron: '0 3 * * *'\n", 'schedules[0] (pipeline "nope").pipeline: '
     '"nope" is not a pipeline; use the name of a pipeline folder (`fastflow list` shows them)'),
], ids=["not-a-list", "unknown-zone", "bomb", "unknown-pipeline"])
def test_validate_reads_schedules_yaml(make_repo, schedules, message):
    repo = make_repo({".fastflow/schedules.yaml": schedules, "pipelines/ok/main.py": "print(1)\n"})
    result = invoke("validate", "--repo", str(repo))
    assert result.exit_code == 1
    assert result.output == f"error: .fastflow/schedules.yaml: {message}\n"


def test_validate_ok_with_a_valid_schedules_yaml(make_repo):
    repo = make_repo({".fastflow/schedules.yaml": "schedules:\n- pipeline: ok\n  interval: 1h\n",
                      "pipelines/ok/main.py": "print(1)\n"})
    result = invoke("validate", "--repo", str(repo))
    assert (result.exit_code, result.output) == (0, "ok: the repository is valid\n")


@pytest.mark.parametrize("value, hint", [
    ("/etc/localtime", ""), ("localtime", ""),
    ("/usr/share/zoneinfo/Europe/Berlin", '; did you mean "Europe/Berlin"?'),
])
def test_a_zone_file_path_gets_an_iana_name_hint_not_a_did_you_mean_of_localtime(value, hint):
    found = check_schedules(f"timezone: {value}\nschedules: []\n", {})
    assert [str(p) for p in found.errors] == [
        f'.fastflow/schedules.yaml: timezone: "{value}" is a file of this machine, not a time zone '
        'name; use an IANA name such as "Europe/Berlin" (`timedatectl` shows the machine\'s)' + hint
    ]


# --- a run that hits a bug still gets a record ------------------------------------------------

def test_a_run_that_hits_a_bug_is_recorded_failed_with_the_exception(tmp_path):
    # Validation now refuses such a delay; a Pipeline built without it reaches the same bug
    # (threading's wait cannot wait 1e308 s) as any other unexpected exception would.
    folder = write_files(tmp_path / "pipe", {"main.py": "raise SystemExit(3)\n"})
    pipeline = Pipeline(name="pipe", path=folder, entry="main.py", type=PipelineType.SCRIPT,
                        metadata_file=None, requirements=None,
                        retry=RetryPolicy(attempts=1, strategy=RetryStrategy.FIXED_DELAY, delay=1e308))
    executor = LocalExecutor(host_base_env(os.environ), clock=utc_now)
    outcome = run_pipeline(RunRequest(pipeline=pipeline, grace_period=1.0), executor, clock=utc_now,
                           run_id="20261201T000000Z-pipe-abcd")
    record = outcome.record
    assert record.status is RunStatus.FAILED
    assert record.error == ErrorInfo("internal", "OverflowError: timestamp out of range for platform time_t")
    assert [a.exit_code for a in record.attempts] == [3]
    assert record.exit_code == 3
    assert "the run failed inside Fast-Flow: OverflowError: timestamp out of range" in outcome.log_text


class BrokenExecutor(LocalExecutor):
    """A host executor with a bug: every attempt raises what no executor should."""

    def execute(self, spec, sink, cancel):
        raise OverflowError("cannot convert float infinity to integer")


def test_an_executor_bug_fails_the_attempt_with_an_internal_error_not_the_run_loop(tmp_path):
    folder = write_files(tmp_path / "pipe", {"main.py": "print(1)\n"})
    pipeline = Pipeline(name="pipe", path=folder, entry="main.py", type=PipelineType.SCRIPT,
                        metadata_file=None, requirements=None, retry=RetryPolicy(attempts=2))
    outcome = run_pipeline(RunRequest(pipeline=pipeline, grace_period=1.0),
                           BrokenExecutor(host_base_env(os.environ), clock=utc_now), clock=utc_now)
    record = outcome.record
    assert record.status is RunStatus.FAILED
    assert record.error == ErrorInfo("internal", "OverflowError: cannot convert float infinity to integer")
    assert len(record.attempts) == 1  # a bug is not retried
