"""config: pipeline.json and .fastflow/config.yaml parsed into the model, every problem exact."""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest
from helpers import CA_BUNDLE

from fastflow.config import (
    check_repo_config,
    default_repo_config,
    load_repo_config,
    parse_pipeline_metadata,
    parse_repo_config,
    parse_size,
    read_repo_config,
    spell_size,
)
from fastflow.config.view import resolved_view
from fastflow.errors import ConfigError
from fastflow.model import (
    DaemonPolicy,
    DownstreamTrigger,
    Limits,
    NetworkMode,
    NotifyEvent,
    Pipeline,
    PipelineType,
    RetryPolicy,
    RetryStrategy,
    ScheduleSpec,
    Severity,
    SwarmSettings,
    WebhookSettings,
)

FILE = "pipelines/etl/pipeline.json"
UTC = timezone.utc


def parse(data: dict | str, config=None, name: str = "etl"):
    text = data if isinstance(data, str) else json.dumps(data)
    return parse_pipeline_metadata(
        text, name=name, file=f"pipelines/{name}/pipeline.json", config=config or default_repo_config()
    )


def errors(data: dict | str, **kw) -> list[str]:
    return [str(p) for p in parse(data, **kw).errors]


def warnings(data: dict | str, **kw) -> list[str]:
    return [str(p) for p in parse(data, **kw).warnings]


# --- memory sizes ---------------------------------------------------------------------------

@pytest.mark.parametrize(
    "text, expected",
    [
        (1024, 1024),
        ("1024", 1024),
        ("100b", 100),
        ("512k", 512 * 1024),
        ("512m", 512 * 1024**2),
        ("512M", 512 * 1024**2),
        ("1.5g", 1536 * 1024**2),
        ("1t", 1024**4),
        ("2Gi", 2 * 1024**3),
        ("1.5GiB", 1536 * 1024**2),
        ("64Mi", 64 * 1024**2),
        ("100MB", 100_000_000),
        ("1.5GB", 1_500_000_000),
        ("2kb", 2000),
        ("1TB", 10**12),
        (".5g", 512 * 1024**2),
        (" 256 m ", 256 * 1024**2),
    ],
)
def test_memory_sizes_follow_docker_and_si_iec_units(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["12x", "m", "", "1.5", "-1m", "1e3m", True, 1.5, None, [1]])
def test_bad_memory_sizes_are_refused(text):
    with pytest.raises(ValueError):
        parse_size(text)


@pytest.mark.parametrize(
    "size, text",
    [(256 * 1024**2, "256m"), (1536 * 1024**2, "1.5g"), (1024**4, "1t"), (1000, "1000"), (2048, "2k")],
)
def test_spell_size_is_the_short_docker_spelling(size, text):
    assert spell_size(size) == text
    assert parse_size(text) == size


# --- a full pipeline.json round trip ----------------------------------------------------------

FULL = {
    "description": "Nightly ETL",
    "tags": ["etl", "nightly", "etl"],
    "enabled": False,
    "type": "script",
    "python_version": "3.12",
    "cpu_hard_limit": 2,
    "mem_hard_limit": "1.5g",
    "cpu_soft_limit": 1.5,
    "mem_soft_limit": "1GiB",
    "timeout": 600,
    "retry_attempts": 3,
    "retry_strategy": {"type": "custom_schedule", "delays": [5, 30]},
    "retry_on_exit_codes": [1, 75],
    "default_env": {"A": "x", "N": 3, "F": 1.5, "T": True, "OFF": False},
    "secrets": ["DB_PASSWORD"],
    "run_once_at": "2026-02-01T08:00:00Z",
    "schedules": [
        {"id": "hourly", "schedule_interval_seconds": 3600, "mem_hard_limit": "2g",
         "retry_attempts": 1, "webhook_key": "k-hourly", "default_env": {"MODE": "fast"},
         "timeout": 60, "schedule_start": "2026-01-01T00:00:00",
         "schedule_end": "2026-12-31T00:00:00+02:00"},
        {"id": "nightly", "schedule_cron": "0 3 * * *", "cpu_soft_limit": 1, "cpu_hard_limit": 4,
         "mem_soft_limit": "512m", "retry_strategy": {"type": "fixed_delay", "delay": 5},
         "retry_on_exit_codes": [2], "enabled": True},
        {"id": "manual", "enabled": False, "secrets": {"API_KEY": "MANUAL_API_KEY"}},
    ],
    "max_instances": 2,
    "restart_on_crash": True,
    "restart_cooldown": 30,
    "restart_interval": 3600,
    "restart_cooldown_max": 900,
    "restart_healthy_after": 300,
    "restart_limit": 3,
    "restart_limit_window": 1200,
    "downstream_triggers": [
        {"pipeline": "report", "on_failure": True, "on_route": ["ok", "warn"], "run_config_id": "x"},
        {"pipeline": "alert", "on_success": False, "on_route": "alert"},
    ],
    "webhook_key": "k-main",
    "webhook_secret": "GH_HOOK",
    "webhook_env": ["DATE", "SOURCE"],
    "network": "none",
    "run_on_change": True,
    "placement": ["node.labels.gpu==true", "node.role != manager"],
    "notifications": [{"secret": "OPS_HOOK", "events": ["every_failure"]}],
    "_comment": "keys starting with _ are comments",
}


def test_every_field_round_trips():
    meta = parse(FULL)
    assert meta.problems == ()
    v = meta.values
    assert (v["description"], v["tags"], v["enabled"]) == ("Nightly ETL", ("etl", "nightly"), False)
    assert v["type"] is PipelineType.SCRIPT and v["python_version"] == "3.12"
    assert v["limits"] == Limits(2.0, 1536 * 1024**2, 1.5, 1024**3)
    assert v["timeout"] == 600.0
    assert v["retry"] == RetryPolicy(
        attempts=3, strategy=RetryStrategy.CUSTOM_SCHEDULE, delays=(5.0, 30.0), on_exit_codes=(1, 75)
    )
    assert v["default_env"] == {"A": "x", "N": "3", "F": "1.5", "T": "true", "OFF": "false"}
    assert v["secrets"] == {"DB_PASSWORD": "DB_PASSWORD"}
    assert v["schedule"] == ScheduleSpec(run_once_at=datetime(2026, 2, 1, 8, tzinfo=UTC))
    hourly, nightly, manual = v["run_configs"]
    assert hourly.interval_seconds == 3600.0 and hourly.timeout == 60.0 and hourly.cron is None
    assert hourly.start == datetime(2026, 1, 1, tzinfo=UTC)
    assert hourly.end == datetime(2026, 12, 30, 22, tzinfo=UTC)
    assert (nightly.cron, nightly.interval_seconds, nightly.enabled) == ("0 3 * * *", None, True)
    assert nightly.limits == Limits(4.0, 1536 * 1024**2, 1.0, 512 * 1024**2)
    assert (nightly.retry.attempts, nightly.retry.strategy, nightly.retry.delay,
            nightly.retry.on_exit_codes) == (3, RetryStrategy.FIXED_DELAY, 5.0, (2,))
    assert hourly.limits == Limits(2.0, 2 * 1024**3, 1.5, 1024**3)  # field by field over the pipeline's
    assert hourly.retry == RetryPolicy(
        attempts=1, strategy=RetryStrategy.CUSTOM_SCHEDULE, delays=(5.0, 30.0), on_exit_codes=(1, 75)
    )
    assert hourly.webhook_key == "k-hourly" and hourly.default_env == {"MODE": "fast"}
    assert manual.enabled is False and manual.limits is None and manual.retry is None
    assert manual.secrets == {"API_KEY": "MANUAL_API_KEY"} and hourly.secrets == {}
    assert v["daemon"] == DaemonPolicy(2, True, 30.0, 3600.0, restart_cooldown_max=900.0,
                                        restart_healthy_after=300.0, restart_limit=3,
                                        restart_limit_window=1200.0)
    assert v["downstream"] == (
        DownstreamTrigger("report", True, True, ("ok", "warn"), "x"),
        DownstreamTrigger("alert", False, False, ("alert",)),
    )
    assert (v["webhook_key"], v["network"], v["run_on_change"]) == ("k-main", NetworkMode.NONE, True)
    assert v["placement"] == ("node.labels.gpu==true", "node.role != manager")
    assert (v["webhook_secret"], v["webhook_env"]) == (("GH_HOOK",), ("DATE", "SOURCE"))
    assert [(t.name, t.secret, t.events) for t in v["notifications"]] == [
        ("OPS_HOOK", "OPS_HOOK", (NotifyEvent.EVERY_FAILURE,))]
    assert {k for k, v in meta.sources.items() if v != FILE} == {
        "schedule_cron", "schedule_interval_seconds", "schedule_start", "schedule_end", "cells"}


@pytest.mark.parametrize("value, resolved", [
    ("0 3 * * *", "0 3 * * *"), ("0  3 * * *", "0 3 * * *"), ("@Daily", "@daily"), (3600, 3600.0),
    (0.5, 0.5), ("86400", 86400.0), (" 90 ", 90.0), (None, None),
])
def test_restart_interval_is_a_cron_or_seconds_as_in_fastflow(value, resolved):
    meta = parse({"restart_on_crash": True, "restart_interval": value})
    assert meta.problems == ()
    assert meta.values["daemon"].restart_interval == resolved


def test_restart_cooldown_defaults_to_60_seconds_as_in_fastflow():
    assert parse({}).values["daemon"] == DaemonPolicy(1, False, 60.0, None)
    assert parse({"restart_cooldown": 0}).values["daemon"].restart_cooldown == 0.0


@pytest.mark.parametrize("spelled, kind", [
    ("Notebook", PipelineType.NOTEBOOK), ("NOTEBOOK", PipelineType.NOTEBOOK),
    ("notebook", PipelineType.NOTEBOOK), ("SCRIPT", PipelineType.SCRIPT), ("Script", PipelineType.SCRIPT),
])
def test_type_is_case_insensitive_as_in_fastflow(spelled, kind):
    meta = parse({"type": spelled})
    assert meta.problems == () and meta.values["type"] is kind and meta.type is kind


IMPORT_FERNET = ("Fast-Flow's Fernet-encrypted values are not read; move them into the secrets "
                 "file with `ENCRYPTION_KEY=... fastflow secrets import-fernet` "
                 "(docs/migrating-from-fastflow.md)")


def test_encrypted_env_is_an_error_naming_the_import_and_never_echoed():
    token = "gAAAAABl-not-a-real-token-but-shaped-like-one=="
    data = {"encrypted_env": {"API_KEY": token},
            "schedules": [{"id": "prod", "encrypted_env": {"API_KEY": token, "DB": token}}]}
    assert errors(data) == [
        f"{P}encrypted_env: {IMPORT_FERNET}",
        f'{P}schedules[0] (id "prod").encrypted_env: {IMPORT_FERNET}',
    ]
    assert all(token not in str(p) and "API_KEY" not in str(p) for p in parse(data).problems)
    assert errors({"encrypted_env": "gAAAA"}) == [f"{P}encrypted_env: {IMPORT_FERNET}"]


def test_an_empty_encrypted_env_only_warns():
    data = {"encrypted_env": {}, "schedules": [{"id": "a", "encrypted_env": None}]}
    assert errors(data) == []
    message = "is empty and ignored; remove it (secrets come from the secrets file, see docs/secrets.md)"
    assert warnings(data) == [f"{P}encrypted_env: {message}",
                              f'{P}schedules[0] (id "a").encrypted_env: {message}']


@pytest.mark.parametrize("written, resolved", [
    (["API_KEY", "DB", "API_KEY"], {"API_KEY": "API_KEY", "DB": "DB"}),
    ({"API_KEY": "ETL_API_KEY", "DB": "DB"}, {"API_KEY": "ETL_API_KEY", "DB": "DB"}),
    ([], {}), ({}, {}),
])
def test_secrets_are_a_list_of_names_or_an_object_variable_to_secret(written, resolved):
    meta = parse({"secrets": written, "schedules": [{"id": "prod", "secrets": written}]})
    assert meta.problems == ()
    assert meta.values["secrets"] == resolved
    (rc,) = meta.values["run_configs"]
    assert rc.secrets == resolved
    assert list(meta.values["secrets"]) == list(resolved)  # iterating gives the variable names


def test_show_spells_secrets_and_run_configurations_as_pipeline_json_does():
    meta = parse({"secrets": ["DB"], "schedules": [
        {"id": "prod", "schedule_cron": "0 3 * * *", "secrets": {"API_KEY": "PROD_API_KEY"}}]})
    pipeline = Pipeline(name="etl", path=Path("pipelines/etl"), entry="main.py", metadata_file=None,
                        requirements=None, **meta.values)
    rows = {key: value for key, value, _ in resolved_view(pipeline)}
    assert rows["secrets"] == ["DB"]
    assert rows["schedules"] == [{"id": "prod", "enabled": True, "schedule_cron": "0 3 * * *",
                                  "secrets": {"API_KEY": "PROD_API_KEY"}}]
    meta = parse({"secrets": {"API_KEY": "ETL_API_KEY"}})
    pipeline = Pipeline(name="etl", path=Path("pipelines/etl"), entry="main.py", metadata_file=None,
                        requirements=None, **meta.values)
    assert dict((k, v) for k, v, _ in resolved_view(pipeline))["secrets"] == {"API_KEY": "ETL_API_KEY"}


def test_the_top_level_schedule_fields():
    meta = parse({"schedule_cron": "0 3 * * *", "schedule_start": "2026-01-01T00:00:00",
                  "schedule_end": "2026-12-31T00:00:00+02:00"})
    assert meta.problems == ()
    assert meta.values["schedule"] == ScheduleSpec(
        cron="0 3 * * *", start=datetime(2026, 1, 1, tzinfo=UTC),
        end=datetime(2026, 12, 30, 22, tzinfo=UTC))
    assert parse({"schedule_interval_seconds": 90}).values["schedule"] == ScheduleSpec(
        interval_seconds=90.0)


def test_a_non_empty_schedules_list_replaces_the_top_level_schedule_as_in_fastflow():
    data = {"schedule_cron": "0 3 * * *", "schedule_start": "2026-01-01", "run_once_at": "2026-02-01",
            "schedules": [{"id": "prod", "schedule_interval_seconds": 60}]}
    meta = parse(data)
    assert warnings(data) == [
        P + "schedule_cron: is not used because schedules[] is not empty: only its entries are "
        "scheduled (as in Fast-Flow); move this schedule into a schedules[] entry or remove it"]
    assert meta.values["schedule"] == ScheduleSpec(run_once_at=datetime(2026, 2, 1, tzinfo=UTC))
    # An empty list is as if there were none: the top-level schedule is used.
    assert parse({"schedule_cron": "@daily", "schedules": []}).values["schedule"].cron == "@daily"


def test_an_absent_file_gives_repository_defaults_with_their_sources():
    config, _ = parse_repo_config(
        "default_timeout: 120\ndefault_retry_attempts: 2\ndefault_python: '3.12'\n"
        "default_limits:\n  mem_hard_limit: 1g\n"
    )
    meta = parse_pipeline_metadata(None, name="etl", file="pipelines/etl", config=config)
    assert meta.problems == ()
    assert meta.values["timeout"] == 120.0 and meta.values["retry"].attempts == 2
    assert meta.values["python_version"] == "3.12"
    assert meta.values["limits"] == Limits(mem_hard_limit=1024**3)
    assert meta.sources["timeout"] == ".fastflow/config.yaml"
    assert meta.sources["mem_hard_limit"] == ".fastflow/config.yaml"
    assert meta.sources["cpu_hard_limit"] == "default"
    assert meta.sources["description"] == "default"


def test_pipeline_values_override_repository_defaults():
    config, _ = parse_repo_config("default_timeout: 120\n")
    meta = parse({"timeout": 0, "mem_hard_limit": None}, config=config)
    assert meta.values["timeout"] == 0.0 and meta.sources["timeout"] == FILE


# --- retry strategies -------------------------------------------------------------------------

@pytest.mark.parametrize(
    "strategy, waits",
    [
        ({"type": "exponential_backoff", "initial_delay": 2, "multiplier": 3, "max_delay": 50},
         [2, 6, 18, 50, 50]),
        ("exponential_backoff", [60, 120, 240, 480, 960]),  # Fast-Flow's defaults: 60 s, x2
        ({"type": "exponential_backoff"}, [60, 120, 240, 480, 960]),
        ({"type": "exponential_backoff", "initial_delay": 1000}, [1000, 2000, 3600, 3600, 3600]),
        ({"type": "fixed_delay", "delay": 7}, [7, 7, 7, 7, 7]),
        ({"type": "custom_schedule", "delays": [1, 10, 100]}, [1, 10, 100, 100, 100]),
    ],
)
def test_retry_waits_of_the_three_strategies(strategy, waits):
    retry = parse({"retry_attempts": 5, "retry_strategy": strategy}).values["retry"]
    assert [retry.wait_before_retry(n) for n in range(1, 6)] == waits


def test_retries_without_a_strategy_wait_60_seconds_as_in_fastflow():
    retry = parse({"retry_attempts": 3}).values["retry"]
    assert retry == RetryPolicy(attempts=3, strategy=RetryStrategy.FIXED_DELAY, delay=60.0)
    assert [retry.wait_before_retry(n) for n in (1, 2, 3)] == [60.0, 60.0, 60.0]
    # config.yaml's default_retry_attempts waits the same
    config, _ = parse_repo_config("default_retry_attempts: 2\n")
    retry = parse({}, config=config).values["retry"]
    assert (retry.attempts, retry.strategy, retry.delay) == (2, RetryStrategy.FIXED_DELAY, 60.0)
    # a run configuration's retry_attempts inherits the pipeline's strategy, else the 60 s
    (rc,) = parse({"schedules": [{"id": "a", "retry_attempts": 1}]}).values["run_configs"]
    assert (rc.retry.attempts, rc.retry.wait_before_retry(1)) == (1, 60.0)
    fast = {"retry_attempts": 1, "retry_strategy": {"type": "fixed_delay", "delay": 0}}
    (rc,) = parse({**fast, "schedules": [{"id": "a", "retry_attempts": 4}]}).values["run_configs"]
    assert (rc.retry.attempts, rc.retry.wait_before_retry(1)) == (4, 0.0)


def test_a_run_configurations_strategy_replaces_the_pipelines_whole():
    data = {"retry_attempts": 2, "retry_strategy": {"type": "custom_schedule", "delays": [5, 30]},
            "schedules": [{"id": "a", "retry_strategy": {"type": "fixed_delay", "delay": 7}}]}
    (rc,) = parse(data).values["run_configs"]
    assert rc.retry == RetryPolicy(attempts=2, strategy=RetryStrategy.FIXED_DELAY, delay=7.0)


# --- bad input: each message exact --------------------------------------------------------------

P = f"{FILE}: "
MEM_FIX = 'use a number with a unit such as "512m", "1.5g" or "2Gi"'
BAD = [
    ({"mem_hard_limit": "12x"}, f'mem_hard_limit: "12x" is not a memory size; {MEM_FIX}'),
    ({"mem_soft_limit": 0}, f"mem_soft_limit: 0 is zero; {MEM_FIX}"),
    ({"mem_hard_limit": "1m"}, 'mem_hard_limit: "1m" is below Docker\'s minimum of 6m; use at least "6m"'),
    ({"cpu_hard_limit": 0}, "cpu_hard_limit: 0 is not a positive number of CPU cores; use a number such as 1 or 0.5"),
    ({"cpu_soft_limit": "2"}, 'cpu_soft_limit: "2" is not a positive number of CPU cores; use a number such as 1 or 0.5'),
    ({"timeout": -1}, "timeout: -1 is not a number of seconds >= 0; use a number such as 300"),
    ({"timeout": "300"}, 'timeout: "300" is not a number of seconds >= 0; use a number such as 300'),
    ({"retry_attempts": -1}, "retry_attempts: -1 is not a whole number >= 0"),
    ({"retry_attempts": 1.5}, "retry_attempts: 1.5 is not a whole number >= 0"),
    ({"retry_attempts": 1, "retry_strategy": "fixed_delay"},
     'retry_strategy: "fixed_delay" needs its fields; write {"type": "fixed_delay", "delay": 60}'),
    ({"retry_attempts": 1, "retry_strategy": "custom_schedule"},
     'retry_strategy: "custom_schedule" needs its fields; write {"type": "custom_schedule", "delays": [10, 60, 300]}'),
    ({"retry_attempts": 1, "retry_strategy": {"type": "fixed_delay"}},
     'retry_strategy.delay: is missing; fixed_delay needs it, e.g. {"type": "fixed_delay", "delay": 60}'),
    ({"retry_attempts": 1, "retry_strategy": {"type": "custom_schedule"}},
     'retry_strategy.delays: is missing; custom_schedule needs it, e.g. {"type": "custom_schedule", "delays": [10, 60, 300]}'),
    ({"retry_attempts": 1, "retry_strategy": {"type": "custom_schedule", "delays": []}},
     "retry_strategy.delays: [] is not a non-empty list of seconds >= 0; write [10, 60, 300]"),
    ({"retry_attempts": 1, "retry_strategy": {"delay": 5}},
     'retry_strategy.type: is missing; use one of "exponential_backoff", "fixed_delay", "custom_schedule"'),
    ({"retry_attempts": 1, "retry_strategy": "exponential"},
     'retry_strategy: "exponential" is not one of "exponential_backoff" or "fixed_delay" or "custom_schedule"; did you mean "exponential_backoff"?'),
    ({"retry_attempts": 1, "retry_strategy": {"type": "exponential_backoff", "initial_delay": 10, "max_delay": 5}},
     "retry_strategy.max_delay: 5 is below initial_delay; raise it"),
    ({"retry_attempts": 1, "retry_strategy": 3},
     'retry_strategy: 3 is not a strategy; write a name such as "exponential_backoff" or an object such as {"type": "fixed_delay", "delay": 60}'),
    ({"retry_on_exit_codes": [1, 300]}, "retry_on_exit_codes: 300 is not an exit code; use whole numbers from 0 to 255"),
    ({"python_version": 3.10}, 'python_version: 3.1 is a number; write the version as a string such as "3.11" (3.10 as a number is 3.1)'),
    ({"python_version": "python3"}, 'python_version: "python3" is not a Python version; use a string such as "3.11"'),
    ({"type": "nb"}, 'type: "nb" is not one of "script" or "notebook"'),
    ({"type": "Notebok"}, 'type: "Notebok" is not one of "script" or "notebook"; did you mean "notebook"?'),
    ({"type": "Python"}, 'type: "Python" is not one of "script" or "notebook"'),
    ({"type": "notebok"}, 'type: "notebok" is not one of "script" or "notebook"; did you mean "notebook"?'),
    ({"type": 1}, 'type: 1 is not one of "script" or "notebook"'),
    ({"enabled": "yes"}, 'enabled: "yes" is not a boolean; use true or false (without quotes)'),
    ({"description": 3}, "description: 3 is not a string; put it in double quotes"),
    ({"tags": "etl"}, 'tags: "etl" is not a list; write ["a", "b"]'),
    ({"tags": ["a", 1]}, "tags: item 1: 1 is not a string; put it in double quotes"),
    ({"default_env": {"A": None}},
     'default_env: "A": null is not a string, number or boolean; environment values are strings, so quote it'),
    ({"default_env": {"A": [1]}},
     'default_env: "A": [1] is not a string, number or boolean; environment values are strings, so quote it'),
    ({"default_env": {"1A": "x"}},
     "default_env: key \"1A\" is not a valid environment variable name; use letters, digits and '_', not starting with a digit"),
    ({"default_env": {"FASTFLOW_RUN_ID": "x"}},
     'default_env: key "FASTFLOW_RUN_ID" is reserved: FASTFLOW_* variables are set by Fast-Flow'),
    ({"default_env": ["A=1"]}, 'default_env: ["A=1"] is not an object; write {"NAME": "value"}'),
    ({"secrets": ["db-password"]},
     "secrets: item 0: \"db-password\" is not a valid environment variable name; use letters, digits and '_', not starting with a digit"),
    ({"secrets": "API_KEY"},
     'secrets: "API_KEY" is not a list of names or an object; write ["API_KEY"] or {"API_KEY": "ETL_API_KEY"}'),
    ({"secrets": {"1A": "X"}},
     "secrets: key \"1A\" is not a valid environment variable name; use letters, digits and '_', not starting with a digit"),
    ({"secrets": {"FASTFLOW_RUN_ID": "X"}},
     'secrets: key "FASTFLOW_RUN_ID" is reserved: FASTFLOW_* variables are set by Fast-Flow'),
    ({"secrets": {"API_KEY": "etl-key"}},
     "secrets: \"API_KEY\": \"etl-key\" is not a valid secret name; use letters, digits and '_', not starting with a digit or FASTFLOW_"),
    ({"secrets": {"API_KEY": 3}},
     "secrets: \"API_KEY\": 3 is not a valid secret name; use letters, digits and '_', not starting with a digit or FASTFLOW_"),
    ({"schedules": [{"id": "prod", "secrets": ["a b"]}]},
     "schedules[0] (id \"prod\").secrets: item 0: \"a b\" is not a valid environment variable name; use letters, digits and '_', not starting with a digit"),
    ({"schedule_cron": "0 3 * * * *"},
     'schedule_cron: "0 3 * * * *" has 6 fields, cron needs 5 (minute hour day month weekday); use for example "0 3 * * *"'),
    ({"schedule_cron": "61 * * * *"},
     'schedule_cron: "61 * * * *" is not a valid cron expression (minute hour day month weekday); use for example "0 3 * * *"'),
    ({"schedule_interval_seconds": 0},
     "schedule_interval_seconds: 0 is not a number of seconds > 0; use a number such as 60"),
    ({"schedule_cron": "0 3 * * *", "schedule_interval_seconds": 60},
     "schedule_interval_seconds: cannot be combined with schedule_cron; choose one of them"),
    ({"schedule_cron": "@daily", "schedule_start": "2026-05-01", "schedule_end": "2026-04-01T00:00:00Z"},
     'schedule_end: "2026-04-01T00:00:00Z" is not after schedule_start "2026-05-01"; the window would be empty'),
    ({"run_once_at": "tomorrow"},
     'run_once_at: "tomorrow" is not an ISO 8601 date-time; use a string such as "2026-01-31T08:00:00Z"'),
    ({"schedules": [{"schedule_cron": "0 3 * * *"}]},
     'schedules[0].id: is missing; every run configuration needs a unique id such as "nightly"'),
    ({"schedules": [{"id": "a"}, {"id": "a"}]},
     'schedules[1] (id "a").id: "a" is already the id of schedules[0]; ids must be unique'),
    ({"schedules": [{"id": "night ly"}]},
     "schedules[0].id: \"night ly\" is not a valid id; use 1-63 letters, digits, '_', '.' or '-', starting with a letter or digit"),
    ({"schedules": ["nightly"]},
     'schedules[0]: "nightly" is not an object; write {"id": "nightly", "schedule_cron": "0 3 * * *"}'),
    ({"schedules": {"id": "a"}}, 'schedules: {"id": "a"} is not a list; write [...]'),
    ({"schedules": [{"id": "a", "schedule_interval_seconds": -5}]},
     'schedules[0] (id "a").schedule_interval_seconds: -5 is not a number of seconds > 0; use a number such as 60'),
    ({"schedules": [{"id": "a", "schedule_cron": "@daily", "schedule_interval_seconds": 60}]},
     'schedules[0] (id "a").schedule_interval_seconds: cannot be combined with schedule_cron; choose one of them'),
    ({"schedules": [{"id": "nightly", "timeout": "1h"}]},
     'schedules[0] (id "nightly").timeout: "1h" is not a number of seconds >= 0; use a number such as 300'),
    ({"webhook_key": "k1", "schedules": [{"id": "a", "webhook_key": "k1"}]},
     'schedules[0] (id "a").webhook_key: is the same webhook key as webhook_key; every run configuration needs its own key'),
    ({"schedules": [{"id": "a", "webhook_key": "k"}, {"id": "b", "webhook_key": "k"}]},
     'schedules[1] (id "b").webhook_key: is the same webhook key as schedules[0] (id "a").webhook_key; every run configuration needs its own key'),
    ({"schedules": [{"id": "prod", "cron": "0 3 * * *"}]},
     'schedules[0] (id "prod").cron: write "schedule_cron" instead: schedules[] entries spell their keys as the top level does (as in Fast-Flow)'),
    ({"schedules": [{"id": "prod", "interval": 60}]},
     'schedules[0] (id "prod").interval: write "schedule_interval_seconds" instead: schedules[] entries spell their keys as the top level does (as in Fast-Flow)'),
    ({"schedules": [{"id": "prod", "start": "2026-01-01"}]},
     'schedules[0] (id "prod").start: write "schedule_start" instead: schedules[] entries spell their keys as the top level does (as in Fast-Flow)'),
    ({"schedules": [{"id": "prod", "end": "2026-01-01"}]},
     'schedules[0] (id "prod").end: write "schedule_end" instead: schedules[] entries spell their keys as the top level does (as in Fast-Flow)'),
    ({"schedules": [{"id": "prod", "schedule_cronn": "0 3 * * *"}]},
     'schedules[0] (id "prod").schedule_cronn: unknown key of a run configuration; fix its name or remove it; did you mean "schedule_cron"?'),
    ({"schedules": [{"id": "prod", "colour": "red"}]},
     'schedules[0] (id "prod").colour: unknown key of a run configuration; fix its name or remove it'),
    ({"schedule_cronn": "0 3 * * *"},
     'schedule_cronn: unknown key; did you mean "schedule_cron"? A misspelled schedule key would leave the pipeline unscheduled: fix its name or remove it'),
    ({"schedule": [{"id": "a"}]},
     'schedule: unknown key; did you mean "schedules"? A misspelled schedule key would leave the pipeline unscheduled: fix its name or remove it'),
    ({"enable": True},
     'enable: unknown key; did you mean "enabled"? A misspelled schedule key would leave the pipeline unscheduled: fix its name or remove it'),
    ({"cron": "0 3 * * *"}, 'cron: write "schedule_cron" instead: pipeline.json spells it so (as in Fast-Flow)'),
    ({"webhook_key": "has space"},
     "webhook_key: is not a valid webhook key; use letters, digits, '.', '_', '~' or '-'"),
    ({"max_instances": 0}, "max_instances: 0 is not a whole number >= 1"),
    ({"restart_interval": 0}, "restart_interval: 0 is not a number of seconds > 0; use a number such as 60"),
    ({"restart_interval": "0"},
     'restart_interval: "0" is not a number of seconds > 0; use a number such as 86400 or a cron such as "0 3 * * *"'),
    ({"restart_interval": "0 3 * *"},
     'restart_interval: "0 3 * *" has 4 fields, cron needs 5 (minute hour day month weekday); use for example "0 3 * * *"'),
    ({"restart_interval": "61 3 * * *"},
     'restart_interval: "61 3 * * *" is not a valid cron expression (minute hour day month weekday); use for example "0 3 * * *"'),
    ({"restart_interval": True},
     'restart_interval: true is not a cron expression or a number of seconds; use a cron such as "0 3 * * *" or seconds such as 86400'),
    ({"restart_cooldown": -1}, "restart_cooldown: -1 is not a number of seconds >= 0; use a number such as 300"),
    ({"downstream_triggers": [{"pipeline": "etl"}]},
     'downstream_triggers[0].pipeline: "etl" is this pipeline itself; a pipeline cannot trigger itself'),
    ({"downstream_triggers": [{"on_success": True}]},
     'downstream_triggers[0].pipeline: is missing; name the pipeline to run, e.g. {"pipeline": "report"}'),
    ({"downstream_triggers": [{"pipeline": "b", "on_route": 3}]},
     'downstream_triggers[0].on_route: 3 is not a route label or a list of labels; write "publish" or ["a", "b"]'),
    ({"downstream_triggers": ["b"]}, 'downstream_triggers[0]: "b" is not an object; write {"pipeline": "other"}'),
    ({"network": "host"}, 'network: "host" is not one of "bridge" or "none"'),
    ({"run_on_change": 1}, "run_on_change: 1 is not a boolean; use true or false (without quotes)"),
    ({"placement": ["gpu"]}, 'placement: item 0: "gpu" is not a Swarm placement constraint; write '
     'e.g. "node.labels.gpu==true", "node.role!=manager" or "node.hostname==box-2"'),
    ({"type": "notebook", "cells": {"fetch": {"retry_attempts": -1}}},
     "cells.fetch.retry_attempts: -1 is not a whole number >= 0"),
    ({"type": "notebook", "cells": {"3": 2}},
     'cells.3: 2 is not an object; write {"retry_attempts": 2, "retry_delay": 5}'),
    ({"type": "notebook", "cells": [{"retries": 1}, 2]},
     'cells[1]: 2 is not an object; write {"retries": 2, "delay_seconds": 1}'),
    ({"type": "notebook", "cells": [{"retries": -1}]}, "cells[0].retries: -1 is not a whole number >= 0"),
    ({"type": "notebook", "cells": [{}, {"retries": True}]}, "cells[1].retries: true is not a whole number >= 0"),
    ({"type": "notebook", "cells": [{"delay_seconds": -1}]},
     "cells[0].delay_seconds: -1 is not a number of seconds >= 0; use a number such as 300"),
    ({"type": "notebook", "cells": "all"},
     'cells: "all" is not a list or an object; write one entry per code cell, [{"retries": 2, "delay_seconds": 1}], or {"fetch": {"retry_attempts": 2}}'),
]


@pytest.mark.parametrize("data, message", BAD, ids=[m.split(":")[0] for _, m in BAD])
def test_bad_field_values_have_exact_messages(data, message):
    assert errors(data) == [P + message]


def test_invalid_json_names_line_and_column():
    assert errors('{\n  "timeout": 3,\n  "tags": ["a",]\n}') == [
        P + "invalid JSON at line 3, column 16: Expecting value"
    ]


def test_json_that_is_not_an_object_or_has_duplicates_or_nan():
    assert errors("[1, 2]") == [P + "must be a JSON object {...}, not [1, 2]"]
    assert errors('{"timeout": 1, "timeout": 2}') == [
        P + 'duplicate key "timeout"; JSON keys must be unique, keep only one'
    ]
    assert errors('{"timeout": NaN}') == [P + "invalid JSON: NaN is not a number in JSON"]


def test_all_problems_of_a_file_are_collected():
    assert errors({"timeout": -1, "max_instances": 0, "schedules": [{}, {"id": 5}]}) == [
        P + "timeout: -1 is not a number of seconds >= 0; use a number such as 300",
        P + "max_instances: 0 is not a whole number >= 1",
        P + 'schedules[0].id: is missing; every run configuration needs a unique id such as "nightly"',
        P + "schedules[1].id: 5 is not a valid id; use 1-63 letters, digits, '_', '.' or '-', starting with a letter or digit",
    ]


@pytest.mark.parametrize(
    "data, message",
    [
        ({"retry_attemps": 2}, 'retry_attemps: unknown key, ignored; did you mean "retry_attempts"?'),
        ({"colour": "red"}, "colour: unknown key, ignored"),
        ({"descripton": "x"}, 'descripton: unknown key, ignored; did you mean "description"?'),
        ({"retry_attempts": 1, "retry_strategy": {"type": "fixed_delay", "delay": 1, "delays": [1]}},
         'retry_strategy.delays: unknown key, ignored; did you mean "delay"?'),
        ({"retry_strategy": "exponential_backoff"}, "retry_strategy: has no effect while retry_attempts is 0"),
        ({"cpu_hard_limit": 1, "cpu_soft_limit": 2},
         "cpu_soft_limit: is above cpu_hard_limit, so it can never be reached; lower it or remove it"),
        ({"mem_hard_limit": "1g", "mem_soft_limit": "2g"},
         "mem_soft_limit: is above mem_hard_limit, so it can never be reached; lower it or remove it"),
        ({"cells": {"0": {"retry_attempts": 1}}},
         'cells: only notebook pipelines have cells ("type": "notebook"); ignored'),
        ({"cells": [{"retries": 1}]},
         'cells: only notebook pipelines have cells ("type": "notebook"); ignored'),
        ({"type": "notebook", "cells": [{"retries": 1, "retry": 2}]},
         'cells[0].retry: unknown key, ignored; did you mean "retries"?'),
        ({"schedule_start": "2026-01-01"},
         "schedule_start: has no effect without schedule_cron or schedule_interval_seconds"),
        ({"downstream_triggers": [{"pipeline": "b", "on_success": False}]},
         "downstream_triggers[0]: never fires: on_success and on_failure are false and on_route is "
         "empty; set on_success or on_failure to true, or name a route in on_route"),
    ],
)
def test_warnings_have_exact_messages_and_keep_the_pipeline_valid(data, message):
    meta = parse(data)
    assert meta.errors == ()
    assert warnings(data) == [P + message]


def test_cells_shape_is_normalized():
    cells = parse({"type": "notebook", "cells": {"fetch": {"retry_attempts": 2}, "3": {}}}).values["cells"]
    assert cells == {
        "fetch": {"retry_attempts": 2, "retry_delay": 0.0},
        "3": {"retry_attempts": 0, "retry_delay": 0.0},
    }


def test_cells_as_a_list_is_fastflows_form_one_entry_per_code_cell():
    data = {"type": "Notebook", "cells": [{"retries": 2, "delay_seconds": 1}, {"retries": 0},
                                          {"retries": 3, "delay_seconds": 0.5}, {}]}
    meta = parse(data)
    assert meta.problems == ()
    assert meta.values["cells"] == {
        "code:0": {"retry_attempts": 2, "retry_delay": 1.0},
        "code:1": {"retry_attempts": 0, "retry_delay": 1.0},  # Fast-Flow's default: 1 s
        "code:2": {"retry_attempts": 3, "retry_delay": 0.5},
        "code:3": {"retry_attempts": 0, "retry_delay": 1.0},
    }
    assert meta.sources["cells"] == FILE
    assert parse({"type": "notebook", "cells": []}).values["cells"] == {}


def test_problems_carry_file_field_severity_and_pipeline():
    (problem,) = parse({"timeout": -1}).problems
    assert (problem.file, problem.field, problem.severity, problem.pipeline) == (
        FILE, "timeout", Severity.ERROR, "etl"
    )


# --- .fastflow/config.yaml ----------------------------------------------------------------------

CONFIG = """\
pipelines_dir: flows/
branch: trunk
results_branch: ff/results
image: my-runner:1
default_python: "3.12"
max_concurrent_runs: 4
default_timeout: 3600
default_retry_attempts: 1
default_limits:
  cpu_hard_limit: 2
  mem_hard_limit: 1g
  cpu_soft_limit: 1.5
  mem_soft_limit: 512Mi
log_cap: 10m
retention:
  keep_runs: 100
  keep_days: 30
ca_bundle: certs/ca.pem
secrets_file: .fastflow/other.enc.yaml
grace_period: 5
lease_timeout: 30
tmp_size: 512m
flows_dir: wf
tasks_dir: wf/scripts
flow_workspace_keep: 3600
executor: swarm
swarm:
  placement: ["node.labels.pool==batch"]
  schedule_timeout: 20
results_author:
  name: Bot
  email: bot@example.org
notifications:
  - {url: "json://hooks.example.org/fastflow", name: ops}
site_url: https://ci.example.org/fastflow/
webhooks:
  listen: 127.0.0.1:8787
  public_url: https://ci.example.org/
  max_body: 2m
  rate_limit_per_client: 30
  burst_per_client: 5
  rate_limit_per_pipeline: 50
  max_queued_per_pipeline: 7
  read_timeout: 4
  threads: 2
  trusted_proxy: 127.0.0.1
"""


def test_repo_config_reads_every_key_with_sources():
    config, warns = parse_repo_config(CONFIG)
    assert warns == []
    assert (config.pipelines_dir, config.branch, config.results_branch) == ("flows", "trunk", "ff/results")
    assert (config.image, config.default_python, config.max_concurrent_runs) == ("my-runner:1", "3.12", 4)
    assert (config.default_timeout, config.default_retry_attempts) == (3600.0, 1)
    assert config.default_limits == Limits(2.0, 1024**3, 1.5, 512 * 1024**2)
    assert (config.log_cap_bytes, config.keep_runs, config.keep_days) == (10 * 1024**2, 100, 30)
    assert (config.ca_bundle, config.secrets_file, config.grace_period) == (
        "certs/ca.pem", ".fastflow/other.enc.yaml", 5.0
    )
    assert (config.author_name, config.author_email) == ("Bot", "bot@example.org")
    assert [(t.name, t.url) for t in config.notifications] == [
        ("ops", "json://hooks.example.org/fastflow")]
    assert config.site_url == "https://ci.example.org/fastflow"
    assert config.lease_timeout == 30.0
    assert config.tmp_size_bytes == 512 * 1024**2
    assert (config.flows_dir, config.tasks_dir) == ("wf", "wf/scripts")
    assert config.flow_workspace_keep == 3600.0
    assert (config.executor, config.swarm) == ("swarm", SwarmSettings(("node.labels.pool==batch",), 20.0))
    assert config.webhooks == WebhookSettings(
        "127.0.0.1:8787", "https://ci.example.org", 2 * 1024**2, 30, 5, 50, 7, 4.0, 2, "127.0.0.1")
    assert set(config.sources.values()) == {".fastflow/config.yaml"}


def test_lease_timeout_must_be_positive_and_defaults_to_three_heartbeats():
    assert parse_repo_config("")[0].lease_timeout == 180.0
    config, problems = read_repo_config("lease_timeout: 0")
    assert config is None
    assert [str(p) for p in problems] == [
        ".fastflow/config.yaml: lease_timeout: 0 is not a number of seconds > 0; use a number "
        "such as 60"]


def test_repo_config_defaults_when_the_file_is_missing(tmp_path: Path):
    config, warns = load_repo_config(tmp_path)
    assert warns == [] and config == default_repo_config()
    assert set(config.sources.values()) == {"default"}
    assert (config.pipelines_dir, config.branch, config.results_branch) == ("pipelines", "main", "fastflow/results")
    assert config.log_cap_bytes == 5 * 1024**2 and config.default_python == "3.11"


@pytest.mark.parametrize(
    "text, message",
    [
        ("max_concurrent_runs: 0", "max_concurrent_runs: 0 is not a whole number >= 1"),
        ("default_timeout: -5", "default_timeout: -5 is not a number of seconds >= 0; use a number such as 300"),
        ("log_cap: lots", 'log_cap: "lots" is not a size; use bytes or a number with a unit such as "5m" or "1g"'),
        ("default_limits:\n  mem_hard_limit: 12x", f'default_limits.mem_hard_limit: "12x" is not a memory size; {MEM_FIX}'),
        ("default_limits: 2", "default_limits: 2 is not a mapping; write it as indented key: value lines"),
        ("retention:\n  keep_runs: 0", "retention.keep_runs: 0 is not a whole number >= 1"),
        ("results_author:\n  email: bot", 'results_author.email: "bot" is not an e-mail address; use name@example.org'),
        ("pipelines_dir: ../elsewhere",
         'pipelines_dir: "../elsewhere" is outside the repository; use a path relative to the repository root such as "pipelines" or "."'),
        ("branch: fastflow/results", 'results_branch: "fastflow/results" is also the followed branch; results need their own branch such as "fastflow/results"'),
        ("branch: 'a b'", 'branch: "a b" is not a valid git branch name'),
        ("default_python: 3.10", 'default_python: 3.1 is a number; write the version as a string such as "3.11" (3.10 as a number is 3.1)'),
        ("image: ''", 'image: "" is empty; give a value or remove the key'),
        ("- a\n- b", 'the file must be a mapping of keys to values, not a list'),
        ("tmp_size: 0", 'tmp_size: 0 is below the minimum of "1m"; use a size such as "256m"'),
        ("tmp_size: 100g", 'tmp_size: "100g" is above the maximum of "64g"; use a smaller size'),
    ],
)
def test_repo_config_errors_are_exact(text, message):
    config, problems = read_repo_config(text)
    assert config is None
    assert [str(p) for p in problems] == [f".fastflow/config.yaml: {message}"]


def test_repo_config_invalid_yaml_names_the_line():
    with pytest.raises(ConfigError) as info:
        parse_repo_config("branch: main\nimage: [a\n")
    assert str(info.value) == (
        ".fastflow/config.yaml: invalid YAML at line 3, column 1: expected ',' or ']', but got "
        "'<stream end>'; fix the syntax (indent with spaces, quote values containing ': ')"
    )


def test_repo_config_error_lists_every_problem_one_per_line():
    with pytest.raises(ConfigError) as info:
        parse_repo_config("max_concurrent_runs: 0\ngrace_period: x\n")
    assert str(info.value) == (
        ".fastflow/config.yaml: max_concurrent_runs: 0 is not a whole number >= 1\n"
        '.fastflow/config.yaml: grace_period: "x" is not a number of seconds >= 0; use a number such as 300'
    )


def test_repo_config_unknown_key_is_a_warning_with_did_you_mean():
    config, warns = parse_repo_config("max_concurent_runs: 3\n")
    assert config.max_concurrent_runs == 2
    assert [str(w) for w in warns] == [
        '.fastflow/config.yaml: max_concurent_runs: unknown key, ignored; did you mean "max_concurrent_runs"?'
    ]


def test_load_repo_config_resolves_and_checks_ca_bundle(tmp_path: Path):
    (tmp_path / ".fastflow").mkdir()
    (tmp_path / ".fastflow/config.yaml").write_text("ca_bundle: certs/ca.pem\n")
    with pytest.raises(ConfigError) as info:
        load_repo_config(tmp_path)
    assert str(info.value) == (
        '.fastflow/config.yaml: ca_bundle: "certs/ca.pem" does not exist; give the path of a PEM '
        "file of CA certificates or remove the key"
    )
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs/ca.pem").write_bytes(CA_BUNDLE.read_bytes())
    config, _ = load_repo_config(tmp_path)
    assert config.ca_bundle == str((tmp_path / "certs/ca.pem").resolve())
    assert config.sources["ca_bundle"] == ".fastflow/config.yaml"


@pytest.mark.parametrize("value, message", [
    ("/etc/passwd", '"/etc/passwd" holds no PEM certificate (no "-----BEGIN CERTIFICATE-----" line)'),
    ("/etc", '"/etc" is not a file'),
    ("certs/empty.pem", '"certs/empty.pem" holds no PEM certificate (no "-----BEGIN CERTIFICATE-----" line)'),
])
def test_ca_bundle_must_be_a_readable_file_of_pem_certificates(tmp_path: Path, value, message):
    (tmp_path / ".fastflow").mkdir()
    (tmp_path / ".fastflow/config.yaml").write_text(f"ca_bundle: {value}\n")
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs/empty.pem").write_text("")
    config, problems = check_repo_config(tmp_path)
    assert config is None
    assert [str(p) for p in problems] == [
        f".fastflow/config.yaml: ca_bundle: {message}; give the path of a PEM file of CA "
        "certificates or remove the key"]


def test_check_repo_config_never_raises(tmp_path: Path):
    (tmp_path / ".fastflow").mkdir()
    (tmp_path / ".fastflow/config.yaml").write_text("branch: [\n")
    config, problems = check_repo_config(tmp_path)
    assert config is None and problems[0].file == ".fastflow/config.yaml"


def test_the_projects_own_config_is_valid(project_root: Path):
    config, warns = load_repo_config(project_root)
    assert warns == [] and config.pipelines_dir == "pipelines"
