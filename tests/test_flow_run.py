"""Flow runs: the engine's rules (pure), and flows run for real in Docker (`fastflow flow run`).

The engine tests drive `flow.run.FlowEngine` by hand with a fixed clock: what starts when, what
is skipped and why, `max_parallel`, cancel, reruns. The Docker tests run flows as a user does.
"""
from __future__ import annotations

import json
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from helpers import utc_now

from fastflow.daemon.flowhere import run_flow_here
from fastflow.deploy.flows import discover_flows, find_flow
from fastflow.deploy.workspace import open_workspace
from fastflow.errors import ConfigError
from fastflow.executors import choose_executor
from fastflow.flow.record import FlowRunRecord, task_run_id
from fastflow.flow.run import (
    FlowEngine,
    Workspaces,
    new_flow_record,
    rerun_record,
    resolve_params,
)
from fastflow.model import Flow, FlowTask, TaskWhen
from fastflow.record import CommitRef, ErrorInfo, Trigger

NOW = datetime(2026, 12, 2, 1, 30, tzinfo=timezone.utc)
FLOW_RUN = "20261202T013000Z-diamond-0a1b2c3d"


def make_flow(*tasks: FlowTask, max_parallel: int | None = None, params=None) -> Flow:
    return Flow(name="diamond", file="flows/diamond.json", path=Path("/x/flows/diamond.json"),
                tasks_dir=Path("/x/tasks"), tasks=tasks, max_parallel=max_parallel,
                params=params or {})


def task(id_: str, *deps: str, when: TaskWhen = TaskWhen.SUCCESS, **kw) -> FlowTask:
    return FlowTask(id=id_, script=f"{id_}.py", depends_on=deps, when=when, **kw)


def engine_of(flow: Flow) -> FlowEngine:
    return FlowEngine(flow, new_flow_record(flow, FLOW_RUN, trigger=Trigger(), commit=CommitRef(),
                                            params={}, now=NOW))


def end(engine: FlowEngine, task_id: str, status: str = "succeeded", output=None) -> None:
    engine.task_ended(task_id, status=status, run_id=None, attempts=1,
                      exit_code=0 if status == "succeeded" else 1,
                      error=None if status == "succeeded" else ErrorInfo("exit_code", "x"),
                      output=output, started_at=NOW, finished_at=NOW + timedelta(seconds=2))


def ids(states) -> list[str]:
    return [s.id for s in states]


def test_fan_out_starts_every_ready_task_at_once_and_a_join_waits_for_all():
    flow = make_flow(task("a"), task("b"), task("c"), task("join", "a", "b", "c"),
                     task("final", "join"))
    engine = engine_of(flow)
    assert ids(engine.start_due(NOW)) == ["a", "b", "c"]
    assert engine.start_due(NOW) == []
    end(engine, "a", output={"rows": 1})
    end(engine, "b")
    assert engine.start_due(NOW) == []  # c still running: the join waits
    end(engine, "c", output={"rows": 3})
    (join,) = engine.start_due(NOW)
    assert join.id == "join" and join.run_id == "20261202T013000Z-diamond.join-0a1b2c3d"
    assert engine.task_input(join, Path("/ws")).inputs == {"a": {"rows": 1}, "b": None,
                                                           "c": {"rows": 3}}
    end(engine, "join")
    assert ids(engine.start_due(NOW)) == ["final"]
    end(engine, "final")
    assert engine.done and engine.finish(NOW).status == "succeeded"


def test_a_task_starts_as_soon_as_its_own_dependencies_ended_not_in_waves():
    flow = make_flow(task("slow"), task("fast"), task("after_fast", "fast"))
    engine = engine_of(flow)
    engine.start_due(NOW)
    end(engine, "fast")
    assert ids(engine.start_due(NOW)) == ["after_fast"]  # slow is still running


def test_a_failed_branch_skips_its_dependents_with_the_reason_and_when_always_runs():
    flow = make_flow(task("ok"), task("bad"), task("after_bad", "bad"),
                     task("after_after", "after_bad"), task("after_ok", "ok"),
                     task("cleanup", "bad", "ok", when=TaskWhen.ALWAYS),
                     task("on_failure", "after_bad", when=TaskWhen.FAILURE),
                     task("on_failure_ok", "ok", when=TaskWhen.FAILURE))
    engine = engine_of(flow)
    engine.start_due(NOW)
    end(engine, "bad", "failed")
    due = ids(engine.start_due(NOW))
    record = engine.record
    assert record.task("after_bad").status == "skipped"
    assert record.task("after_bad").reason == "dependency 'bad' failed"
    assert record.task("after_after").reason == "dependency 'after_bad' was skipped"
    assert due == ["on_failure"]  # skipped because of a failure further up counts as failed
    end(engine, "ok")
    assert ids(engine.start_due(NOW)) == ["after_ok", "cleanup"]
    assert engine.record.task("on_failure_ok").reason == "when: failure, and no dependency failed"
    for t in ("on_failure", "after_ok", "cleanup"):
        end(engine, t)
    assert engine.done and engine.finish(NOW).status == "failed"


def test_max_parallel_bounds_the_tasks_running_at_once():
    engine = engine_of(make_flow(task("a"), task("b"), task("c"), max_parallel=2))
    assert ids(engine.start_due(NOW)) == ["a", "b"]
    end(engine, "b")
    assert ids(engine.start_due(NOW)) == ["c"]


def test_cancel_skips_what_did_not_start_and_the_flow_run_is_cancelled():
    engine = engine_of(make_flow(task("a"), task("b", "a")))
    engine.start_due(NOW)
    engine.cancel(NOW)
    assert engine.record.task("b").reason == "the flow run was cancelled before it started"
    end(engine, "a")
    assert engine.start_due(NOW) == [] and engine.finish(NOW).status == "cancelled"


def test_a_rerun_keeps_the_succeeded_tasks_and_runs_the_others_under_new_run_ids():
    flow = make_flow(task("a"), task("b", "a"), task("c", "b"))
    engine = engine_of(flow)
    engine.start_due(NOW)
    end(engine, "a", output={"n": 1})
    engine.start_due(NOW)
    end(engine, "b", "failed")
    engine.start_due(NOW)
    first = engine.finish(NOW)
    assert first.status == "failed" and first.task("c").status == "skipped"
    again = FlowEngine(flow, rerun_record(first, flow, trigger=Trigger(), now=NOW))
    assert again.record.generation == 1 and again.record.rerun_of == FLOW_RUN
    assert again.record.task("a").reused_from == FLOW_RUN
    (b,) = again.start_due(NOW)
    assert b.run_id == task_run_id(FLOW_RUN, "diamond", "diamond.b", 1) \
        == "20261202T013000Z-diamond.b-0a1b2c3dr1"
    assert again.task_input(b, Path("/ws")).inputs == {"a": {"n": 1}}
    with pytest.raises(ValueError, match="nothing to rerun"):
        done = engine_of(make_flow(task("a")))
        done.start_due(NOW)
        end(done, "a")
        rerun_record(done.finish(NOW), done.flow, trigger=Trigger(), now=NOW)


def test_the_flow_record_round_trips_through_json():
    engine = engine_of(make_flow(task("a"), task("b", "a")))
    engine.start_due(NOW)
    end(engine, "a", output={"x": [1, 2]})
    data = json.loads(json.dumps(engine.record.to_json()))
    assert data["schema"] == 1 and data["tasks"][0]["output"] == {"x": [1, 2]}
    assert FlowRunRecord.from_json(data) == engine.record


def test_params_defaults_given_values_and_a_missing_param_before_anything_runs():
    flow = make_flow(task("a", args=("--day=${params.day}",), env={"W": "${params.who}"}),
                     params={"who": "me", "day": None})
    assert resolve_params(flow, {"day": "2026-12-01", "n": 3}) == \
        {"day": "2026-12-01", "n": "3", "who": "me"}
    with pytest.raises(ConfigError) as info:
        resolve_params(flow, {})
    assert str(info.value) == (
        "flow 'diamond' (flows/diamond.json) needs the param(s) day; give them with "
        "--params '{\"day\": \"...\"}' (or a default in the flow's \"params\")")
    engine = FlowEngine(flow, new_flow_record(flow, FLOW_RUN, trigger=Trigger(), commit=CommitRef(),
                                              params=resolve_params(flow, {"day": "d1"}), now=NOW))
    (a,) = engine.start_due(NOW)
    assert engine.task_input(a, Path("/ws")).args == ("--day=d1",)
    assert engine.task_env(a) == {"W": "me"}


def test_workspaces_are_removed_after_success_and_kept_for_a_while_after_a_failure(tmp_path):
    spaces = Workspaces(tmp_path / "ws")
    folder = spaces.create(FLOW_RUN)
    assert (folder / ".fastflow" / "outputs").is_dir() and oct(folder.stat().st_mode)[-3:] == "777"
    engine = engine_of(make_flow(task("a")))
    engine.start_due(NOW)
    end(engine, "a", "failed")
    kept = spaces.ended(engine.finish(NOW), NOW, keep_s=60)
    assert kept.workspace_kept_until == NOW + timedelta(seconds=60) and folder.is_dir()
    assert spaces.sweep(NOW + timedelta(seconds=30)) == [] and folder.is_dir()
    assert spaces.sweep(NOW + timedelta(seconds=61)) == [FLOW_RUN] and not folder.exists()


def test_a_schedule_names_a_flow_with_params_and_a_wrong_one_is_an_error():
    from fastflow.config.schedules import check_schedules

    text = ("schedules:\n"
            "  - flow: diamond\n    interval: 1h\n    params: {day: today}\n"
            "  - flow: nope\n    interval: 1h\n"
            "  - flow: diamond\n    pipeline: x\n    interval: 1h\n"
            "  - flow: diamond\n    env: {A: b}\n    interval: 1h\n")
    found = check_schedules(text, {}, flows=("diamond",))
    (schedule,) = found.schedules
    assert (schedule.id, schedule.pipeline, dict(schedule.env)) == \
        ("diamond", "diamond", {"day": "today"})
    messages = [str(p) for p in found.problems]
    assert len(messages) == 3, messages
    assert any('"nope" is not a valid flow; use the name of a flow file' in m for m in messages)
    assert any("cannot be combined with pipeline; a schedule runs either a pipeline or a flow"
               in m for m in messages)
    assert any("env: is not used by a flow schedule (a flow takes `params`); remove it" in m
               for m in messages)
    slot = task_run_id("20261202T030000Z-diamond", "diamond", "diamond.a")
    assert slot == "20261202T030000Z-diamond.a"  # a slot of the schedule named after the flow


@pytest.mark.parametrize("written, message", [
    pytest.param("[1, 2]", "task 'a': its output ($FASTFLOW_OUTPUT) is a JSON list, not an object; write "
               "one JSON object, e.g. {\"rows\": 12}", id="a list"),
    pytest.param("x" * 70000, "task 'a': its output ($FASTFLOW_OUTPUT) is larger than 64 KiB; "
                 "write a small JSON object there and put bigger data in a file of the "
                 "workspace ($FASTFLOW_WORKSPACE)", id="too big"),
])
def test_a_bad_output_fails_the_task_run_with_a_clear_error(tmp_path, written, message):
    repo = tmp_path / "repo"
    tasks = repo / ".fastflow" / "flows" / "tasks"
    tasks.mkdir(parents=True)
    (tasks / "a.py").write_text(f"import os\nopen(os.environ['FASTFLOW_OUTPUT'], 'w').write({written!r})\n")
    (tasks / "b.py").write_text("print('never')\n")
    (repo / ".fastflow" / "flows" / "out.json").write_text(json.dumps({"tasks": [
        {"id": "a", "script": "a.py"}, {"id": "b", "script": "b.py", "depends_on": ["a"]}]}))
    workspace = open_workspace(repo)
    flow = find_flow(discover_flows(workspace.root, workspace.config, workspace.discovery), "out")
    outcome = run_flow_here(
        flow, pipelines={}, config=workspace.config,
        executor=choose_executor(workspace.config, local=True, environ=dict(os.environ),
                                 clock=utc_now),
        params={}, workspaces=Workspaces(tmp_path / "ws"), clock=utc_now,
        sink_for=lambda task: (lambda line: None), events=lambda *a: None)
    a, b = outcome.record.tasks
    assert (a.status, a.error.kind, a.error.message) == ("failed", "output", message)
    assert outcome.runs["a"].record.error.message == message  # the task's run record says it
    assert "the run failed: " + message in outcome.runs["a"].log_text
    assert (b.status, b.reason) == ("skipped", "dependency 'a' failed")


def test_flow_workspace_keep_0_removes_a_failed_runs_workspace_at_once(tmp_path):
    from fastflow.config.repo import parse_repo_config

    config, _ = parse_repo_config("flow_workspace_keep: 0\n")
    spaces = Workspaces(tmp_path / "ws")
    folder = spaces.create(FLOW_RUN)
    engine = engine_of(make_flow(task("a")))
    engine.start_due(NOW)
    end(engine, "a", "failed")
    record = spaces.ended(engine.finish(NOW), NOW, config.flow_workspace_keep)
    assert (record.workspace, record.workspace_kept_until) == (None, None)
    assert not folder.exists()
