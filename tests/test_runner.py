"""fastflow.run.runner: run ids, env building, settings, retries, records, with real uv runs."""
from __future__ import annotations

import json
import os
import textwrap
import threading
from datetime import datetime, timezone
from pathlib import Path

import pytest
from helpers import utc_now

from fastflow.errors import ConfigError
from fastflow.executors.base import OutputLine
from fastflow.executors.local import LocalExecutor, host_base_env
from fastflow.model import (
    DownstreamTrigger,
    Limits,
    Pipeline,
    PipelineType,
    RetryPolicy,
    RetryStrategy,
    RunConfig,
    RunStatus,
)
from fastflow.record import CommitRef, RunRecord, Trigger, new_run_id
from fastflow.run.env import RunContext, build_env
from fastflow.run.runner import (
    RunRequest,
    UvFailureWatcher,
    downstream_to_fire,
    resolve_settings,
    run_pipeline,
    write_record_json,
)

NOW = datetime(2026, 11, 22, 14, 30, 0, tzinfo=timezone.utc)


def make_pipeline(tmp_path: Path, code: str = "print('hi')", **fields) -> Pipeline:
    folder = tmp_path / "pipelines" / "pipe"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "main.py").write_text(textwrap.dedent(code), encoding="utf-8")
    (folder / "pipeline.json").write_text("{}", encoding="utf-8")
    values = dict(
        name="pipe", path=folder, entry="main.py", type=PipelineType.SCRIPT,
        metadata_file=folder / "pipeline.json", requirements=None,
    )
    values.update(fields)
    return Pipeline(**values)


class Waits:
    """An injected `wait` that records the requested waits and returns at once."""

    def __init__(self, cancel_on: int | None = None) -> None:
        self.calls: list[float] = []
        self.cancel_on = cancel_on

    def __call__(self, seconds: float, cancel: threading.Event) -> bool:
        self.calls.append(seconds)
        if self.cancel_on == len(self.calls):
            cancel.set()
        return cancel.is_set()


def run(pipeline: Pipeline, *, wait=None, sink=None, cancel=None, **request_fields):
    executor = LocalExecutor(host_base_env(os.environ), clock=utc_now)
    request = RunRequest(pipeline=pipeline, grace_period=1.0, **request_fields)
    return run_pipeline(request, executor, clock=utc_now, wait=wait or Waits(), sink=sink,
                        cancel=cancel, run_id="20261122T143000Z-pipe-abcd")


# --- run ids -------------------------------------------------------------------------------

def test_run_id_shape_and_order():
    assert new_run_id("pipeline_a", NOW, rand="7f3a") == "20261122T143000Z-pipeline_a-7f3a"
    later = datetime(2026, 11, 22, 14, 30, 1, tzinfo=timezone.utc)
    ids = [new_run_id("p", later), new_run_id("p", NOW)]
    assert sorted(ids)[0].startswith("20261122T143000Z-p-")
    assert len(ids[0].rsplit("-", 1)[1]) == 8
    assert len({new_run_id("p", NOW) for _ in range(50)}) > 40


def test_run_id_needs_an_aware_time():
    with pytest.raises(ValueError, match="timezone-aware"):
        new_run_id("p", datetime(2026, 1, 1))


# --- environment ---------------------------------------------------------------------------

CONTEXT = RunContext("rid", "pipe", 2, "schedule", "nightly", "abc123")


def test_env_precedence_and_run_context(tmp_path):
    pipeline = make_pipeline(tmp_path, default_env={"A": "pipe", "B": "pipe", "C": "pipe", "D": "pipe"})
    rc = RunConfig(id="nightly", default_env={"B": "rc", "C": "rc", "D": "rc"})
    env = build_env(pipeline, rc, {"C": "trigger", "D": "trigger"}, {"D": "secret"}, CONTEXT)
    assert env == {
        "A": "pipe", "B": "rc", "C": "trigger", "D": "secret",
        "FASTFLOW_RUN_ID": "rid", "FASTFLOW_PIPELINE": "pipe", "FASTFLOW_ATTEMPT": "2",
        "FASTFLOW_TRIGGER": "schedule", "FASTFLOW_RUN_CONFIG": "nightly",
        "FASTFLOW_COMMIT": "abc123", "PYTHONUNBUFFERED": "1",
    }


def test_notebook_env_carries_cell_policies(tmp_path):
    pipeline = make_pipeline(tmp_path, type=PipelineType.NOTEBOOK,
                             cells={"fetch": {"retry_attempts": 2, "retry_delay": 0.5}})
    env = build_env(pipeline, None, {}, {}, CONTEXT)
    assert json.loads(env["FASTFLOW_NOTEBOOK_CELLS"]) == {
        "fetch": {"retry_attempts": 2, "retry_delay": 0.5}
    }


@pytest.mark.parametrize(
    "where, message",
    [
        ("pipeline", "pipeline 'pipe' (pipeline.json): default_env: FASTFLOW_RUN_ID cannot be "
                     "set: variables starting with FASTFLOW_ are set by Fast-Flow for every run "
                     "and cannot be overridden; rename the variable"),
        ("run_config", "run configuration 'nightly' of pipeline 'pipe' (pipeline.json): "
                       "default_env: FASTFLOW_RUN_ID cannot be set: variables starting with "
                       "FASTFLOW_ are set by Fast-Flow for every run and cannot be overridden; "
                       "rename the variable"),
        ("trigger", "trigger env (--env): FASTFLOW_RUN_ID cannot be set: variables starting "
                    "with FASTFLOW_ are set by Fast-Flow for every run and cannot be "
                    "overridden; rename the variable"),
        ("secrets", "secrets: FASTFLOW_RUN_ID cannot be set: variables starting with FASTFLOW_ "
                    "are set by Fast-Flow for every run and cannot be overridden; rename the "
                    "variable"),
    ],
)
def test_fastflow_variables_cannot_be_overridden(tmp_path, where, message):
    bad = {"FASTFLOW_RUN_ID": "mine"}
    pipeline = make_pipeline(tmp_path, default_env=bad if where == "pipeline" else {})
    rc = RunConfig(id="nightly", default_env=bad if where == "run_config" else {})
    with pytest.raises(ConfigError) as err:
        build_env(pipeline, rc, bad if where == "trigger" else {},
                  bad if where == "secrets" else {}, CONTEXT)
    assert str(err.value) == message


# --- settings, retry decisions, downstream ---------------------------------------------------

def test_run_config_overrides_pipeline_settings(tmp_path):
    retry = RetryPolicy(attempts=5)
    pipeline = make_pipeline(
        tmp_path, timeout=60.0, limits=Limits(cpu_hard_limit=1.0, mem_hard_limit=100),
        run_configs=(RunConfig(id="big", timeout=600.0, limits=Limits(mem_hard_limit=999),
                               retry=retry), RunConfig(id="plain")),
    )
    big = resolve_settings(pipeline, "big")
    assert (big.timeout, big.limits, big.retry) == (
        600.0, Limits(cpu_hard_limit=1.0, mem_hard_limit=999), retry)
    plain = resolve_settings(pipeline, "plain")
    assert (plain.timeout, plain.limits, plain.retry) == (60.0, pipeline.limits, pipeline.retry)


def test_unknown_run_config_is_an_error(tmp_path):
    pipeline = make_pipeline(tmp_path, run_configs=(RunConfig(id="a"), RunConfig(id="b")))
    with pytest.raises(ConfigError) as err:
        resolve_settings(pipeline, "nightly")
    assert str(err.value) == (
        "pipeline 'pipe' has no run configuration 'nightly' "
        "(pipeline.json: schedules[].id; known: a, b)"
    )


def test_downstream_triggers_that_fire(tmp_path):
    pipeline = make_pipeline(tmp_path, downstream=(
        DownstreamTrigger("on_ok"),
        DownstreamTrigger("on_bad", on_success=False, on_failure=True, run_config_id="alert"),
        DownstreamTrigger("on_big", on_route=("big",)),
        DownstreamTrigger("missing", inert_reason="no pipeline 'missing'"),
    ))
    assert downstream_to_fire(pipeline, RunStatus.SUCCEEDED, None) == [
        {"pipeline": "on_ok", "run_config_id": None, "reason": "success"}]
    assert downstream_to_fire(pipeline, RunStatus.SUCCEEDED, "big") == [
        {"pipeline": "on_ok", "run_config_id": None, "reason": "success"},
        {"pipeline": "on_big", "run_config_id": None, "reason": "route big"}]
    assert downstream_to_fire(pipeline, RunStatus.TIMED_OUT, "big") == [
        {"pipeline": "on_bad", "run_config_id": "alert", "reason": "failure"}]
    assert downstream_to_fire(pipeline, RunStatus.CANCELLED, None) == []


S, F, T, O = RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.TIMED_OUT, RunStatus.OOM_KILLED
C, L, K = RunStatus.CANCELLED, RunStatus.LOST, RunStatus.SKIPPED


ROUTES = (None, "full", "thin")


def _any_route(*statuses: RunStatus) -> set:
    return {(status, route) for status in statuses for route in ROUTES}


@pytest.mark.parametrize("flags, fires_on", [
    # (on_success, on_failure, on_route) -> the (status, route) pairs that fire; the table of
    # docs/pipeline-json.md "Downstream triggers"
    ((True, False, ()), _any_route(S)),
    ((False, True, ()), _any_route(F, T, O)),
    ((True, True, ()), _any_route(S, F, T, O)),
    ((False, False, ()), set()),
    ((True, False, ("full",)), {(S, "full")}),
    ((False, False, ("full",)), {(S, "full")}),  # Fast-Flow's documented form: success + route
    ((True, True, ("full",)), {(S, "full"), (F, "full"), (T, "full"), (O, "full")}),
    ((False, True, ("full",)), {(F, "full"), (T, "full"), (O, "full")}),
], ids=["default", "on_failure", "both", "neither", "route", "route-flags-false",
        "route-and-failure", "route-failure-only"])
def test_downstream_rule_for_every_outcome(tmp_path, flags, fires_on):
    on_success, on_failure, on_route = flags
    pipeline = make_pipeline(tmp_path, downstream=(
        DownstreamTrigger("next", on_success=on_success, on_failure=on_failure, on_route=on_route),))
    fired = {(status, route) for status in (S, F, T, O, C, L, K) for route in ROUTES
             if downstream_to_fire(pipeline, status, route)}
    assert fired == fires_on


def test_downstream_reasons_and_one_run_per_pipeline_and_run_config(tmp_path):
    pipeline = make_pipeline(tmp_path, downstream=(
        DownstreamTrigger("next", on_route=("full",), on_failure=True, run_config_id="prod"),
        DownstreamTrigger("next", on_failure=True, run_config_id="prod"),  # the same target
        DownstreamTrigger("next", on_failure=True),  # another run configuration: its own run
    ))
    assert downstream_to_fire(pipeline, RunStatus.FAILED, "full") == [
        {"pipeline": "next", "run_config_id": "prod", "reason": "failure, route full"},
        {"pipeline": "next", "run_config_id": None, "reason": "failure"}]
    assert downstream_to_fire(pipeline, RunStatus.SUCCEEDED, "full") == [
        {"pipeline": "next", "run_config_id": "prod", "reason": "route full"},
        {"pipeline": "next", "run_config_id": None, "reason": "success"}]


# --- real runs -----------------------------------------------------------------------------

@pytest.mark.slow
def test_successful_run_record_and_log(tmp_path):
    pipeline = make_pipeline(tmp_path, """
        import os, sys
        print("hello from", os.environ["FASTFLOW_PIPELINE"])
        print("warning!", file=sys.stderr)
        open(os.environ["FASTFLOW_ROUTE_FILE"], "w").write("big")
    """, downstream=(DownstreamTrigger("next", on_route=("big",)),))
    seen: list[OutputLine] = []
    outcome = run(pipeline, sink=seen.append, trigger=Trigger(kind="manual"),
                  commit=CommitRef(sha="abc", tree="def"), log_path="logs/pipe/x.log")
    record = outcome.record
    assert record.status is RunStatus.SUCCEEDED
    assert (record.exit_code, record.error, record.route) == (0, None, "big")
    assert record.downstream == ({"pipeline": "next", "run_config_id": None, "reason": "route big"},)
    assert [(a.n, a.status, a.exit_code, a.wait_before_s) for a in record.attempts] == [
        (1, RunStatus.SUCCEEDED, 0, 0.0)]
    assert record.duration_s >= 0 and record.environment.uv_version
    assert record.log.path == "logs/pipe/x.log"
    assert record.log.bytes == len(outcome.log_text.encode())
    assert " stdout | hello from pipe\n" in outcome.log_text
    assert " stderr | warning!\n" in outcome.log_text
    assert " runner | attempt 1 of 1 started\n" in outcome.log_text
    assert any(line.text == "hello from pipe" and line.stream == "stdout" for line in seen)
    write_record_json(record, tmp_path / "record.json")
    assert RunRecord.from_json(json.loads((tmp_path / "record.json").read_text())) == record


@pytest.mark.slow
def test_env_reaches_the_run(tmp_path):
    pipeline = make_pipeline(tmp_path, """
        import os
        for key in ("A", "B", "FASTFLOW_ATTEMPT", "FASTFLOW_TRIGGER", "FASTFLOW_RUN_ID",
                    "FASTFLOW_COMMIT", "FASTFLOW_RUN_CONFIG", "PYTHONUNBUFFERED"):
            print(key, os.environ[key])
    """, default_env={"A": "pipe", "B": "pipe"}, run_configs=(RunConfig(id="rc"),))
    outcome = run(pipeline, trigger_env={"B": "cli"}, run_config_id="rc",
                  trigger=Trigger(kind="schedule"), commit=CommitRef(sha="c0ffee"))
    out = [l.split(" | ", 1)[1] for l in outcome.log_text.splitlines() if " stdout | " in l]
    assert out == ["A pipe", "B cli", "FASTFLOW_ATTEMPT 1", "FASTFLOW_TRIGGER schedule",
                   "FASTFLOW_RUN_ID 20261122T143000Z-pipe-abcd", "FASTFLOW_COMMIT c0ffee",
                   "FASTFLOW_RUN_CONFIG rc", "PYTHONUNBUFFERED 1"]


@pytest.mark.slow
def test_failure_names_the_exit_code(tmp_path):
    outcome = run(make_pipeline(tmp_path, "import sys; sys.exit(3)"))
    record = outcome.record
    assert (record.status, record.exit_code) == (RunStatus.FAILED, 3)
    assert (record.error.kind, record.error.message) == ("exit_code", "main.py exited with code 3")


ALWAYS_FAILS = "import sys; sys.exit(1)"


@pytest.mark.slow
@pytest.mark.parametrize("policy, waits", [
    (RetryPolicy(attempts=4, strategy=RetryStrategy.EXPONENTIAL_BACKOFF, initial_delay=1,
                 multiplier=3, max_delay=5), [1, 3, 5, 5]),
    (RetryPolicy(attempts=3, strategy=RetryStrategy.FIXED_DELAY, delay=2), [2, 2, 2]),
    (RetryPolicy(attempts=3, strategy=RetryStrategy.CUSTOM_SCHEDULE, delays=(5, 10)), [5, 10, 10]),
])
def test_retry_strategies_wait_exactly(tmp_path, policy, waits):
    waiter = Waits()
    record = run(make_pipeline(tmp_path, ALWAYS_FAILS, retry=policy), wait=waiter).record
    assert waiter.calls == waits
    assert [a.wait_before_s for a in record.attempts] == [0.0, *waits]
    assert [a.n for a in record.attempts] == list(range(1, len(waits) + 2))
    assert record.status is RunStatus.FAILED
    assert record.error.message == f"main.py exited with code 1 (after {len(waits) + 1} attempts)"


@pytest.mark.slow
def test_retry_stops_at_first_success(tmp_path):
    pipeline = make_pipeline(tmp_path, "import os, sys; sys.exit(int(os.environ['FASTFLOW_ATTEMPT']) < 2)",
                             retry=RetryPolicy(attempts=5, delay=1))
    record = run(pipeline).record
    assert [a.status for a in record.attempts] == [RunStatus.FAILED, RunStatus.SUCCEEDED]
    assert (record.status, record.exit_code, record.error) == (RunStatus.SUCCEEDED, 0, None)


@pytest.mark.slow
def test_retry_on_exit_codes(tmp_path):
    # attempt 1 exits 75 (listed: retried), attempt 2 exits 1 (not listed: final)
    pipeline = make_pipeline(
        tmp_path, "import os, sys; sys.exit(75 if os.environ['FASTFLOW_ATTEMPT'] == '1' else 1)",
        retry=RetryPolicy(attempts=5, on_exit_codes=(75,)))
    record = run(pipeline).record
    assert [a.exit_code for a in record.attempts] == [75, 1]
    assert record.status is RunStatus.FAILED


@pytest.mark.slow
def test_timeouts_are_retried_unless_exit_codes_are_listed(tmp_path):
    code = "import time; time.sleep(60)"
    record = run(make_pipeline(tmp_path, code, timeout=0.8, retry=RetryPolicy(attempts=1))).record
    assert [a.status for a in record.attempts] == [RunStatus.TIMED_OUT] * 2
    assert record.error.kind == "timeout"
    listed = RetryPolicy(attempts=1, on_exit_codes=(1,))
    record = run(make_pipeline(tmp_path, code, timeout=0.8, retry=listed)).record
    assert [a.status for a in record.attempts] == [RunStatus.TIMED_OUT]


@pytest.mark.slow
def test_cancel_while_running_never_retries(tmp_path):
    cancel = threading.Event()

    def sink(line: OutputLine) -> None:
        if line.text == "ready":
            threading.Thread(target=cancel.set).start()

    pipeline = make_pipeline(tmp_path, "import time; print('ready'); time.sleep(60)",
                             retry=RetryPolicy(attempts=3))
    waiter = Waits()
    record = run(pipeline, sink=sink, cancel=cancel, wait=waiter).record
    assert record.status is RunStatus.CANCELLED
    assert [a.status for a in record.attempts] == [RunStatus.CANCELLED]
    assert waiter.calls == []
    assert record.error.kind == "cancelled"


@pytest.mark.slow
def test_cancel_during_the_wait_before_a_retry(tmp_path):
    waiter = Waits(cancel_on=1)
    pipeline = make_pipeline(tmp_path, ALWAYS_FAILS, retry=RetryPolicy(attempts=3, delay=7))
    record = run(pipeline, wait=waiter).record
    assert waiter.calls == [7]
    assert (record.status, record.exit_code) == (RunStatus.CANCELLED, None)
    assert [a.status for a in record.attempts] == [RunStatus.FAILED]
    assert record.error.message == "cancelled while waiting before attempt 2"


@pytest.mark.slow
def test_log_cap_keeps_head_tail_and_the_last_line(tmp_path):
    pipeline = make_pipeline(tmp_path, """
        import sys
        for i in range(5000):
            print(f"line {i}")
        sys.stdout.write("the very end")
    """)
    outcome = run(pipeline, log_cap_bytes=8192)
    text = outcome.log_text
    assert outcome.record.log.truncated
    assert " stdout | line 0\n" in text
    assert "--- " in text and " bytes omitted by Fast-Flow (log cap 8.0 KiB) ---" in text
    assert text.endswith(" runner | attempt 1 of 1 succeeded (exit code 0)\n")
    assert " stdout | the very end\n" in text
    assert len(text.encode()) < 8192 + 200


@pytest.mark.slow
def test_secrets_are_masked_in_the_log_and_the_sink(tmp_path):
    seen: list[OutputLine] = []
    pipeline = make_pipeline(tmp_path, "import os; print('token:', os.environ['API_TOKEN'])")
    outcome = run(pipeline, secrets={"API_TOKEN": "s3cr3t-value"}, sink=seen.append)
    assert "s3cr3t-value" not in outcome.log_text
    assert " stdout | token: ***\n" in outcome.log_text
    assert "token: ***" in [line.text for line in seen]


@pytest.mark.slow
def test_requirements_are_installed_for_the_run(tmp_path):
    pipeline = make_pipeline(tmp_path, "import idna; print(idna.encode('bücher.de'))")
    (pipeline.path / "requirements.txt").write_text("idna\n")
    pipeline = Pipeline(**{**vars(pipeline), "requirements": pipeline.path / "requirements.txt"})
    outcome = run(pipeline)
    assert outcome.record.status is RunStatus.SUCCEEDED, outcome.log_text
    assert " stdout | b'xn--bcher-kva.de'\n" in outcome.log_text
    assert outcome.record.environment.requirements_hash.startswith("sha256:")


@pytest.mark.slow
def test_unresolvable_requirement_fails_with_uvs_reason(tmp_path):
    pipeline = make_pipeline(tmp_path, "print('never runs')", retry=RetryPolicy(attempts=3))
    requirements = pipeline.path / "requirements.txt"
    requirements.write_text("this-package-does-not-exist-fastflow==1.0\n")
    pipeline = Pipeline(**{**vars(pipeline), "requirements": requirements})
    record = run(pipeline).record
    assert record.status is RunStatus.FAILED
    assert len(record.attempts) == 1  # retrying cannot fix an unsatisfiable requirement
    assert record.error.kind == "dependencies"
    assert record.error.message == (
        f"uv could not install the requirements of pipeline 'pipe' from requirements.txt "
        f"({requirements}): No solution found when resolving `--with` dependencies: Because "
        "this-package-does-not-exist-fastflow was not found in the package registry and you "
        "require this-package-does-not-exist-fastflow==1.0, we can conclude that your "
        "requirements are unsatisfiable."
    )


@pytest.mark.slow
def test_a_program_printing_error_lines_is_not_a_dependency_failure(tmp_path):
    code = "import sys; print('error: No solution found when resolving', file=sys.stderr); sys.exit(1)"
    record = run(make_pipeline(tmp_path, "print('started')\n" + code)).record
    assert record.error.kind == "exit_code"


def test_a_stdout_line_read_after_uvs_error_line_still_means_the_program_ran():
    # stdout and stderr are read apart: the program's first stdout line may come in second.
    watcher = UvFailureWatcher(lambda line: None)
    watcher(OutputLine("stderr", "error: No solution found when resolving `--with` dependencies:", NOW))
    assert watcher.failure() is not None
    watcher(OutputLine("stdout", "started", NOW))
    assert watcher.failure() is None


def test_executor_errors_become_a_failed_record(tmp_path):
    pipeline = make_pipeline(tmp_path, retry=RetryPolicy(attempts=2))
    executor = LocalExecutor(host_base_env(os.environ), clock=utc_now, uv="/nonexistent/uv")
    record = run_pipeline(RunRequest(pipeline), executor, clock=utc_now, wait=Waits()).record
    assert record.status is RunStatus.FAILED
    assert len(record.attempts) == 1
    assert record.error.kind == "executor"
    assert record.error.message.startswith("cannot start '/nonexistent/uv' for pipeline 'pipe'")
