"""The executor contract of fastflow/executors/base.py, run against every executor.

To add a backend, add a name to `EXECUTORS` and a branch to `executor_factory`. Each test writes
a real pipeline folder and runs it with real uv: on the host, and in real containers of the
runner image (skipped locally without an engine, failing in CI).
"""
from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path
from typing import Callable

import pytest
from helpers import Lines, make_spec, utc_now

from fastflow.errors import ExecutorError
from fastflow.executors.base import AttemptSpec, Executor, PreheatJob, with_uv_warnings
from fastflow.executors.local import LocalExecutor, host_base_env
from fastflow.model import RunStatus

pytestmark = pytest.mark.slow

EXECUTORS = ["local", "docker", "swarm"]


@pytest.fixture(params=EXECUTORS)
def executor_factory(request) -> Callable[[], Executor]:
    """A function making a fresh executor of the parametrized backend."""
    if request.param == "local":
        return lambda: LocalExecutor(host_base_env(os.environ), clock=utc_now)
    if request.param == "docker":
        return request.getfixturevalue("docker_executor_factory")
    if request.param == "swarm":  # a one-node swarm on the CI engine (tests/conftest.py)
        return request.getfixturevalue("swarm_executor_factory")
    raise AssertionError(f"unknown executor {request.param}")


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


def test_long_lines_are_cut_into_pieces_and_the_output_after_them_is_kept(executor_factory,
                                                                          tmp_path):
    spec = make_spec(tmp_path, """
        import sys
        sys.stdout.write("a" * 70 * 1024 + "\\n")
        print("after the 70 KiB line")
        sys.stdout.write("b" * 3 * 1024 * 1024 + "\\n")
        print("after the 3 MB line")
        sys.stdout.write("the end")
    """)
    sink = Lines()
    result = executor_factory().execute(spec, sink, threading.Event())
    out = sink.texts("stdout")
    assert result.status is RunStatus.SUCCEEDED, out[-3:]
    assert "after the 70 KiB line" in out and out[-2:] == ["after the 3 MB line", "the end"]
    first = out.index("after the 70 KiB line")
    assert "".join(out[:first]) == "a" * 70 * 1024 and first == 2
    assert "".join(out[first + 1:-2]) == "b" * 3 * 1024 * 1024
    assert all(len(piece) <= 64 * 1024 for piece in out)


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


# --- pre-heat: every backend prepares requirements where its runs look for them -------------------

PREHEAT_FIXTURES = Path(__file__).resolve().parent / "fixtures" / "preheat"


def preheat_job(tmp_path: Path, which: str) -> PreheatJob:
    """A pre-heat of tests/fixtures/preheat/<which>/requirements.txt, from a copy in tmp_path
    (as the daemon pre-heats from a snapshot of the pipeline's folder)."""
    folder = shutil.copytree(PREHEAT_FIXTURES / which, tmp_path / "pipe")
    return PreheatJob(pipeline="pipe", workdir=folder, requirements="requirements.txt",
                      python_version=None)


def test_preheat_of_good_requirements_is_ok(executor_factory, tmp_path):
    outcome = executor_factory().preheat(preheat_job(tmp_path, "good"))
    assert outcome.ok, outcome.message
    assert outcome.message.startswith(("pre-heated in ", "already pre-heated"))
    assert outcome.duration_s is not None


def test_preheat_of_bad_requirements_gives_uvs_reason(executor_factory, tmp_path):
    outcome = executor_factory().preheat(preheat_job(tmp_path, "bad"))
    assert not outcome.ok
    assert outcome.message == (  # the same words from every backend
        "uv could not install the requirements of pipeline 'pipe' from requirements.txt: "
        "error: No solution found when resolving `--with` dependencies cause: Because "
        "this-package-does-not-exist-fastflow was not found in the package registry and you "
        "require this-package-does-not-exist-fastflow==0.0.1, we can conclude that your "
        "requirements are unsatisfiable.")


def test_preheat_of_non_utf8_requirements_names_the_file(executor_factory, tmp_path):
    job = preheat_job(tmp_path, "good")
    (job.workdir / "requirements.txt").write_bytes(b"six\ncaf\xe9\n")
    outcome = executor_factory().preheat(job)
    assert (outcome.ok, outcome.message) == (False, (
        "requirements file requirements.txt of pipeline 'pipe' is not UTF-8 text (byte 0xe9 at "
        "offset 7); save it as UTF-8"))


@pytest.mark.parametrize("line", ["--index-url https://example.org/simple", "-i https://x.test",
                                  "--extra-index-url=https://x.test", "--find-links ./wheels"])
def test_preheat_refuses_index_options_in_requirements(executor_factory, tmp_path, line):
    job = preheat_job(tmp_path, "good")
    (job.workdir / "requirements.txt").write_text(f"# pinned\n{line}\nsix\n")
    outcome = executor_factory().preheat(job)
    assert (outcome.ok, outcome.message) == (False, (
        f"requirements file requirements.txt of pipeline 'pipe': line 2: \"{line}\" sets a "
        "package index, which is refused there (uv would not honour it, and a package of the "
        "same name could come from the default index); remove the line"))


def test_a_second_preheat_of_the_same_requirements_is_quick(executor_factory, tmp_path):
    executor = executor_factory()
    job = preheat_job(tmp_path, "good")
    assert executor.preheat(job).ok
    again = executor_factory().preheat(job)
    assert again.ok, again.message
    if executor.name == "docker":  # its markers remember what the shared cache holds
        assert again.message == "already pre-heated"
    else:  # uv's own cache on the host: uv runs again and finds everything there
        assert again.message.startswith("pre-heated in ")
        assert again.duration_s < 10, again


def test_preheat_without_the_requirements_file_is_an_executor_error(executor_factory, tmp_path):
    job = PreheatJob(pipeline="pipe", workdir=tmp_path, requirements="requirements.txt",
                     python_version=None)
    with pytest.raises(ExecutorError) as err:
        executor_factory().preheat(job)
    assert str(err.value) == f"{tmp_path / 'requirements.txt'} does not exist; nothing to pre-heat"


# --- re-attach: an attempt a dead owner left behind ends with the verdict of execute ----------------

LEFT_BEHIND = """
    import os, sys, time
    print("begun", flush=True)
    time.sleep(3)
    print("a warning", file=sys.stderr, flush=True)
    with open(os.environ["FASTFLOW_ROUTE_FILE"], "w") as f:
        f.write("publish")
    sys.stdout.write("ended")
    sys.exit(3)
"""


def leave_behind(executor: Executor, spec: AttemptSpec, finished: bool) -> None:
    """Leave `spec`'s attempt behind as an owner killed by `kill -9` right after starting it
    does: created and started by the backend's own parts, then nobody supervises it (for
    `finished`, until it has ended). Only backends that can re-attach leave anything."""
    if executor.name == "swarm":
        leave_swarm_job_behind(executor, spec, finished)
        return
    assert executor.name == "docker", f"no way to leave an attempt of {executor.name} behind"
    container = executor.containers.create(spec, offline=False)
    executor.client.api.start(container.id)
    if finished:
        executor.client.api.wait(container.id, timeout=120)
    else:
        assert executor.client.api.inspect_container(container.id)["State"]["Running"]


def leave_swarm_job_behind(executor: Executor, spec: AttemptSpec, finished: bool) -> None:
    """A Swarm job created by the executor's own parts, then left to itself (until it ran, or
    until it ended)."""
    service = executor.jobs.create(spec, executor.runner_image_of(spec))
    deadline = time.monotonic() + 60
    want = {"complete", "failed"} if finished else {"running"}
    while time.monotonic() < deadline:
        tasks = executor.api.tasks(filters={"service": service})
        if tasks and tasks[0]["Status"]["State"] in want:
            return
        time.sleep(0.1)
    raise AssertionError(f"the Swarm job of {spec.run_id} never reached {want}")


def test_reattach_with_nothing_left_is_none(executor_factory):
    executor = executor_factory()
    assert executor.reattach("20261122T143000Z-gone-0000", Lines(), threading.Event()) is None


@pytest.mark.parametrize("moment", ["running", "finished"])
def test_reattach_gives_the_verdict_of_execute(executor_factory, tmp_path, moment):
    executor = executor_factory()
    fresh = Lines()
    expected = executor.execute(make_spec(tmp_path, LEFT_BEHIND), fresh, threading.Event())
    assert (expected.status, expected.exit_code, expected.route) == (RunStatus.FAILED, 3, "publish")
    spec = make_spec(tmp_path, LEFT_BEHIND)
    if not executor.can_reattach:
        # A host attempt does not outlive its owner: nothing to re-attach to, the run is `lost`.
        assert executor.reattach(spec.run_id, Lines(), threading.Event()) is None
        return
    leave_behind(executor, spec, finished=moment == "finished")
    sink = Lines()
    found = executor_factory().reattach(spec.run_id, sink, threading.Event())
    assert found is not None and found.attempt == spec.attempt
    result = found.result
    assert (result.status, result.exit_code, result.error, result.route) == (
        expected.status, expected.exit_code, expected.error, expected.route)
    assert sink.texts("stdout") == fresh.texts("stdout") == ["begun", "ended"]
    assert sink.texts("stderr") == fresh.texts("stderr") == ["a warning"]
    assert result.started_at < result.finished_at
    assert executor.reattach(spec.run_id, Lines(), threading.Event()) is None  # collected


def test_uvs_warnings_are_kept_in_a_successful_preheats_message():
    output = "Resolved 1 package\nwarning: Ignoring `--trusted-host` in requirements.txt\n"
    assert with_uv_warnings("pre-heated in 1.0s", output) == (
        "pre-heated in 1.0s; warning: Ignoring `--trusted-host` in requirements.txt")
