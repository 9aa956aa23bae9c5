"""The Python API (`fastflow.api`), the twin of the commands: list, run, queue, status, history."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from helpers import git, utc_now

from fastflow import api
from fastflow.daemon.inbox import Inbox, RunRequestMessage
from fastflow.errors import FastflowError
from fastflow.flow.record import FlowRunRecord, TaskState
from fastflow.results.store import ResultsStore

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "fixtures" / "featherflow-project"


@pytest.fixture
def project(tmp_path) -> Path:
    """The Featherflow fixture plus a pipeline, as a git repository."""
    repo = tmp_path / "repo"
    shutil.copytree(FIXTURE, repo)
    (repo / "pipelines" / "hello").mkdir(parents=True)
    (repo / "pipelines" / "hello" / "main.py").write_text(
        "import os\nprint('hello', os.environ.get('WHO', 'nobody'))\n")
    git("init", "-q", "-b", "main", cwd=repo)
    git("add", "-A", cwd=repo)
    git("-c", "user.name=t", "-c", "user.email=t@x", "commit", "-q", "-m", "init", cwd=repo)
    return repo


def test_list_pipelines_and_flows(project):
    assert [(p["name"], p["valid"]) for p in api.list_pipelines(project)] == [("hello", True)]
    (flow,) = api.list_flows(project)
    assert (flow["name"], flow["file"], flow["valid"]) == ("weather", "flows/weather.json", True)
    assert flow["tasks"] == ["get_a", "get_b", "get_c", "merge", "synopsis"]


def test_run_a_pipeline_here_and_an_unknown_name_is_an_error(project):
    lines = []
    result = api.run("hello", repo=project, env={"WHO": "api"}, local=True,
                     on_line=lambda name, line: lines.append((name, line.text)))
    assert result.kind == "pipeline" and result.ok and result.record.pipeline == "hello"
    assert ("hello", "hello api") in lines and "hello api" in result.log
    with pytest.raises(FastflowError, match="no pipeline named 'nope'|nope"):
        api.run("nope", repo=project, local=True)


def test_run_a_flow_here_in_docker(project, runner_image, shared_cache, monkeypatch):
    monkeypatch.setenv("FASTFLOW_CACHE_DIR", str(shared_cache))
    lines = []
    result = api.run("weather", repo=project,
                     on_line=lambda task, line: lines.append((task, line.text)))
    assert result.kind == "flow" and result.ok, result.record.to_json()
    assert [t.status for t in result.record.tasks] == ["succeeded"] * 5
    assert ("synopsis", "synopsis (fancy): 7 observations, max 12") in lines
    assert result.runs["merge"].trigger.kind == "flow"


def test_queue_posts_a_run_or_a_flow_request_to_the_daemon_inbox(project, tmp_path):
    state = tmp_path / "state"
    (state / "inbox").mkdir(parents=True)
    run_id = api.queue("hello", repo=project, state_dir=state, env={"WHO": "q"})
    flow_run_id = api.queue("weather", repo=project, state_dir=state, params={"day": "d"})
    requests = [m for m in Inbox(state).read() if isinstance(m, RunRequestMessage)]
    by_name = {m.pipeline: m for m in requests}
    assert run_id.endswith("-hello-" + by_name["hello"].request_id.split("-")[-1])
    assert by_name["hello"].env == {"WHO": "q"}
    assert by_name["weather"].params == {"day": "d"} and "-weather-" in flow_run_id


def test_history_of_a_pipeline_and_of_a_flow(project, tmp_path):
    store = ResultsStore(project, tmp_path / "journal", utc_now)
    record = FlowRunRecord(flow_run_id="20261202T013000Z-weather-0a1b2c3d", flow="weather",
                           tasks=(TaskState("get_a", "weather.get_a", status="succeeded"),),
                           status="succeeded")
    store.record_flow(record.to_json())
    data = api.history("weather", repo=project)
    assert data["flow"] == "weather"
    assert data["runs"][0]["flow_run_id"] == record.flow_run_id
    assert data["runs"][0]["tasks"] == {"get_a": "succeeded"}
    assert json.loads(json.dumps(api.status(project)))  # plain JSON, as `status --json`
    assert api.history("hello", repo=project)["runs"] == []
