"""The executor contract of fastflow/executors/base.py, run against every executor.

To add a backend, add a name to `EXECUTORS` and a branch to `executor_factory`. Each test writes
a real pipeline folder and runs it with real uv: on the host, and in real containers of the
runner image (skipped locally without an engine, failing in CI).
"""
from __future__ import annotations

import os
import textwrap
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import pytest
from helpers import Lines
from test_docker_executor import docker_executor_factory, runner_image, shared_cache  # noqa: F401

from fastflow.executors.base import AttemptSpec, Executor
from fastflow.executors.local import LocalExecutor, host_base_env
from fastflow.model import PipelineType, RunStatus

pytestmark = pytest.mark.slow

EXECUTORS = ["local", "docker"]


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


@pytest.fixture(params=EXECUTORS)
def executor_factory(request) -> Callable[[], Executor]:
    """A function making a fresh executor of the parametrized backend."""
    if request.param == "local":
        return lambda: LocalExecutor(host_base_env(os.environ), clock=utc_now)
    if request.param == "docker":
        return request.getfixturevalue("docker_executor_factory")
    raise AssertionError(f"unknown executor {request.param}")


def make_spec(tmp_path: Path, code: str, **overrides) -> AttemptSpec:
    folder = tmp_path / "pipe"
    folder.mkdir(exist_ok=True)
    (folder / "main.py").write_text(textwrap.dedent(code), encoding="utf-8")
    values = dict(
        run_id="20261122T143000Z-pipe-0000",
        pipeline="pipe",
        attempt=1,
        workdir=folder,
        entry="main.py",
        type=PipelineType.SCRIPT,
        python_version=None,
        requirements=None,
        env={"PYTHONUNBUFFERED": "1"},
        grace_period=2.0,
    )
    values.update(overrides)
    return AttemptSpec(**values)


def test_success_output_and_streams(executor_factory, tmp_path):
    spec = make_spec(tmp_path, """
        import sys
        print("to stdout")
        print("to stderr", file=sys.stderr)
        sys.stdout.write("last line without newline")
    """)
    sink = Lines()
    result = executor_factory().execute(spec, sink, threading.Event())
    assert result.status is RunStatus.SUCCEEDED
    assert result.exit_code == 0
    assert sink.texts("stdout") == ["to stdout", "last line without newline"]
    assert "to stderr" in sink.texts("stderr")
    assert result.started_at <= result.finished_at
    assert all(line.at.tzinfo is not None for line in sink.lines)


def test_nonzero_exit_is_failed_with_the_code(executor_factory, tmp_path):
    spec = make_spec(tmp_path, "import sys; print('bye'); sys.exit(3)")
    result = executor_factory().execute(spec, Lines(), threading.Event())
    assert (result.status, result.exit_code) == (RunStatus.FAILED, 3)


def test_env_reaches_the_process(executor_factory, tmp_path):
    spec = make_spec(
        tmp_path,
        "import os; print(os.environ['GREETING'], os.environ['FASTFLOW_ROUTE_FILE'] != '')",
        env={"GREETING": "hej", "PYTHONUNBUFFERED": "1"},
    )
    sink = Lines()
    executor_factory().execute(spec, sink, threading.Event())
    assert sink.texts("stdout") == ["hej True"]


def test_route_file(executor_factory, tmp_path):
    spec = make_spec(tmp_path, """
        import os
        with open(os.environ["FASTFLOW_ROUTE_FILE"], "w") as f:
            f.write("  publish\\n")
    """)
    result = executor_factory().execute(spec, Lines(), threading.Event())
    assert result.route == "publish"
    nothing = make_spec(tmp_path, "print('no route')")
    assert executor_factory().execute(nothing, Lines(), threading.Event()).route is None


def test_timeout_sigterm_then_sigkill(executor_factory, tmp_path):
    spec = make_spec(tmp_path, """
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("ready", flush=True)
        time.sleep(300)
    """, timeout=1.5, grace_period=1.0)
    sink = Lines()
    result = executor_factory().execute(spec, sink, threading.Event())
    assert result.status is RunStatus.TIMED_OUT
    assert result.error is not None and result.error.kind == "timeout"
    took = (result.finished_at - result.started_at).total_seconds()
    assert 2.5 <= took < 20, took  # timeout + the whole grace period (SIGTERM was ignored)
    assert "ready" in sink.texts("stdout")


def test_timeout_ends_early_when_sigterm_is_obeyed(executor_factory, tmp_path):
    spec = make_spec(tmp_path, "import time; print('ready', flush=True); time.sleep(300)",
                     timeout=1.0, grace_period=30.0)
    result = executor_factory().execute(spec, Lines(), threading.Event())
    assert result.status is RunStatus.TIMED_OUT
    assert (result.finished_at - result.started_at).total_seconds() < 15


def test_cancel_from_another_thread(executor_factory, tmp_path):
    spec = make_spec(tmp_path, "import time; print('ready', flush=True); time.sleep(300)")
    cancel = threading.Event()
    sink = Lines()
    sink.triggers["ready"] = lambda: threading.Timer(0.2, cancel.set).start()
    result = executor_factory().execute(spec, sink, cancel)
    assert result.status is RunStatus.CANCELLED
    assert (result.finished_at - result.started_at).total_seconds() < 15


def test_cancel_before_start_runs_nothing(executor_factory, tmp_path):
    spec = make_spec(tmp_path, "print('should not run')")
    cancel = threading.Event()
    cancel.set()
    sink = Lines()
    result = executor_factory().execute(spec, sink, cancel)
    assert result.status is RunStatus.CANCELLED
    assert sink.texts("stdout") == []


def test_requirements_are_installed(executor_factory, tmp_path):
    spec = make_spec(tmp_path, "import six; print('six', six.__version__ != '')",
                     requirements="requirements.txt")
    (spec.workdir / "requirements.txt").write_text("six\n")
    sink = Lines()
    result = executor_factory().execute(spec, sink, threading.Event())
    assert result.status is RunStatus.SUCCEEDED, sink.lines
    assert sink.texts("stdout") == ["six True"]
    assert result.environment.uv_version
    assert result.environment.python
    assert result.environment.requirements_hash.startswith("sha256:")
