"""Hostile configuration files and values (issue 12): deep nesting, YAML bombs, huge and
non-finite numbers, instants at the edges of the calendar. Each is a problem naming file, field,
value and bound, reported by `validate`, `list`, `schedule check` and the daemon alike; never a
traceback, a hang or a crash later on."""
from __future__ import annotations

import time

import pytest
from click.testing import CliRunner
from helpers import make_daemon, utc_now

from fastflow.cli import main
from fastflow.config.yamlfile import load_yaml
from fastflow.errors import Invalid

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
