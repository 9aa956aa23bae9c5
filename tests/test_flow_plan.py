"""flow.plan and `fastflow flow run --dry-run`: order and groups, params, the printed plan, and the
docker run script, which really runs a flow against the Docker engine."""
from __future__ import annotations

import json
import shutil
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import write_files

from fastflow.cli import main
from fastflow.config import default_repo_config
from fastflow.daemon.flowdry import dry_run_flow
from fastflow.deploy.discovery import discover
from fastflow.deploy.flows import discover_flows
from fastflow.errors import ConfigError
from fastflow.executors import choose_executor
from fastflow.flow.plan import plan_flow

FIXTURE = Path(__file__).parent / "fixtures" / "featherflow-project"
NOW = datetime(2026, 12, 1, 8, 0, tzinfo=timezone.utc)
SCRIPT = "print('task')\n"


def load(root: Path, name: str):
    config = default_repo_config()
    pipelines = discover(root, config)
    return discover_flows(root, config, pipelines).flows[name], pipelines.pipelines


def diamond(root: Path) -> Path:
    write_files(root, {
        ".fastflow/flows/tasks/t.py": SCRIPT,
        "pipelines/report/main.py": SCRIPT,
        "pipelines/report/pipeline.json": json.dumps(
            {"secrets": ["API_KEY"], "default_env": {"LEVEL": "1"}, "timeout": 90}),
        ".fastflow/flows/diamond.json": json.dumps({"params": {"day": None, "zone": "eu"}, "tasks": [
            {"id": "start", "script": "t.py", "args": {"day": "${params.day}"}},
            {"id": "left", "script": "t.py", "depends_on": ["start"]},
            {"id": "right", "pipeline": "report", "depends_on": ["start"],
             "env": {"ZONE": "${params.zone}"}, "timeout": 30},
            {"id": "join", "script": "t.py", "depends_on": ["right", "left"], "when": "always"},
            {"id": "alone", "script": "t.py"},
        ]}),
    })
    return root


def test_order_groups_and_what_each_task_runs(tmp_path: Path):
    flow, pipelines = load(diamond(tmp_path / "r"), "diamond")
    plan = plan_flow(flow, pipelines, {"day": "2026-12-01"})
    assert plan.order == ("start", "alone", "left", "right", "join")
    assert plan.groups == (("start", "alone"), ("left", "right"), ("join",))
    assert plan.params == {"day": "2026-12-01", "zone": "eu"}
    start, right = plan.tasks["start"], plan.tasks["right"]
    assert start.args == ("--day=2026-12-01",) and start.pipeline.name == "diamond.start"
    assert right.env == {"ZONE": "eu"} and right.pipeline.name == "report"
    assert right.pipeline.timeout == 30.0 and right.secrets == ("API_KEY",)
    assert plan.tasks["join"].group == 3


def test_a_missing_param_is_an_error_before_anything_runs(tmp_path: Path):
    flow, pipelines = load(diamond(tmp_path / "r"), "diamond")
    with pytest.raises(ConfigError) as info:
        plan_flow(flow, pipelines, {})
    assert str(info.value) == (
        "flow 'diamond' (.fastflow/flows/diamond.json) needs the param(s) day; give them with "
        "--params '{\"day\": \"...\"}' (or a default in the flow's \"params\")")
    result = CliRunner().invoke(main, ["flow", "run", "diamond", "--dry-run", "--repo",
                                       str(tmp_path / "r")])
    assert result.exit_code == 1 and result.output.startswith("Error: flow 'diamond'")


def test_dry_run_prints_the_plan_masks_secrets_and_runs_nothing(tmp_path: Path):
    root = diamond(tmp_path / "r")
    (tmp_path / "p.json").write_text('{"day": "2026-12-24"}')
    result = CliRunner().invoke(main, ["flow", "run", "diamond", "--dry-run", "--params",
                                       f"@{tmp_path / 'p.json'}", "--repo", str(root)],
                                env={"FASTFLOW_CACHE_DIR": str(tmp_path / "cache")})
    assert result.exit_code == 0, result.output
    out = result.output
    assert out.startswith("Dry run of flow diamond (.fastflow/flows/diamond.json); nothing is "
                          'run.\nparams: {"day": "2026-12-24", "zone": "eu"}\n'
                          "order: start, alone, left, right, join\nparallel groups:\n"
                          "  1: start, alone\n  2: left, right\n  3: join\n")
    assert "task join (group 3, after right, left, when always): run as diamond.join" in out
    assert "  command: uv run --no-project --python 3.11 t.py --day=2026-12-24" in out
    assert "    API_KEY=***\n" in out and "    ZONE=eu\n" in out and "    LEVEL=1\n" in out
    assert "timeout 30s" in out and "image:   fastflow-runner:py3.11" in out
    assert "# The same as a bash script of docker run commands:\n#!/usr/bin/env bash" in out
    assert "--env 'API_KEY=***' " in out and " --read-only --init --cap-drop ALL " in out
    assert not (tmp_path / "cache").exists()  # nothing prepared, nothing run


def test_flow_list_and_show(tmp_path: Path):
    root = diamond(tmp_path / "r")
    write_files(root, {".fastflow/flows/bad.json": "{"})
    result = CliRunner().invoke(main, ["flow", "list", "--repo", str(root)])
    assert result.exit_code == 0
    assert [line.split()[:4] for line in result.output.splitlines()[1:]] == [
        ["bad", ".fastflow/flows/bad.json", "-", "invalid"],
        ["diamond", ".fastflow/flows/diamond.json", "5", "valid"]]
    result = CliRunner().invoke(main, ["flow", "show", "diamond", "--repo", str(root)])
    assert result.output == (
        "flow diamond (.fastflow/flows/diamond.json)\n"
        "group 1\n  start: script t.py\n  alone: script t.py\n"
        "group 2\n  left: script t.py <- start\n  right: pipeline report <- start\n"
        "group 3\n  join: script t.py <- right, left (when always)\n")
    result = CliRunner().invoke(main, ["validate", "--repo", str(root)])
    assert ".fastflow/flows/bad.json: invalid JSON at line 1, column 2" in result.output


@pytest.mark.docker
def test_the_dry_run_script_runs_the_featherflow_project_with_docker(tmp_path: Path,
                                                                    runner_image, shared_cache):
    root = shutil.copytree(FIXTURE, tmp_path / "ff")
    root.chmod(0o755)
    flow, pipelines = load(root, "weather")
    config = default_repo_config()
    executor = choose_executor(config, local=False, clock=lambda: NOW, engine=False,
                               environ={"FASTFLOW_CACHE_DIR": str(shared_cache)})
    dry = dry_run_flow(flow, pipelines=pipelines, config=config, params={}, executor=executor,
                       now=NOW)
    script = tmp_path / "weather.sh"
    script.write_text(dry.script)
    done = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "fetched 3 observations of C into /workspace/C.csv" in done.stdout
    assert "merged 7 rows into /workspace/all.csv" in done.stdout
    assert "synopsis (fancy): 7 observations, max 12" in done.stdout
