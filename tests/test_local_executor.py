"""LocalExecutor specifics: the process tree, the host environment, limits, resources, errors.

The contract shared with Docker is in test_executor_contract.py.
"""
from __future__ import annotations

import functools
import logging
import os
import threading
import time

import helpers
import pytest
from helpers import alive, utc_now

from fastflow.errors import ExecutorError
from fastflow.executors.base import OutputLine
from fastflow.executors.local import LocalExecutor, host_base_env
from fastflow.model import Limits, RunStatus

# The shared spec with a 1 s grace period: the runner notes checked below name it.
make_spec = functools.partial(helpers.make_spec, run_id="r", grace_period=1.0)


def executor(**kwargs) -> LocalExecutor:
    return LocalExecutor(host_base_env(os.environ), clock=utc_now, **kwargs)


# A pipeline whose child ignores SIGTERM and starts a grandchild that ignores it too.
TREE = """
    import os, signal, subprocess, sys, time
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    child = subprocess.Popen([sys.executable, "-c",
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(300)"])
    with open(os.environ["PIDFILE"], "w") as f:
        f.write(f"{os.getpid()} {child.pid}")
    print("ready", flush=True)
    time.sleep(300)
"""


@pytest.mark.slow
def test_timeout_kills_the_whole_tree(tmp_path):
    pidfile = tmp_path / "pids"
    spec = make_spec(tmp_path, TREE, timeout=1.5, env={"PIDFILE": str(pidfile)})
    lines: list[OutputLine] = []
    result = executor().execute(spec, lines.append, threading.Event())
    assert result.status is RunStatus.TIMED_OUT
    assert result.exit_code == 137  # SIGKILL: SIGTERM was ignored
    pids = [int(p) for p in pidfile.read_text().split()]
    assert not any(alive(pid) for pid in pids)
    notes = [line.text for line in lines if line.stream == "runner"]
    assert notes == [
        "timeout of 1.5s reached: stopping the attempt",
        "still running 1s after SIGTERM: sending SIGKILL",
    ]


@pytest.mark.slow
def test_cancel_kills_the_whole_tree(tmp_path):
    pidfile = tmp_path / "pids"
    spec = make_spec(tmp_path, TREE, env={"PIDFILE": str(pidfile)})
    cancel = threading.Event()

    def sink(line: OutputLine) -> None:
        if line.text == "ready":
            threading.Thread(target=cancel.set).start()

    result = executor().execute(spec, sink, cancel)
    assert result.status is RunStatus.CANCELLED
    assert result.error.kind == "cancelled"
    assert not any(alive(int(pid)) for pid in pidfile.read_text().split())


@pytest.mark.slow
def test_background_processes_do_not_outlive_the_attempt(tmp_path):
    pidfile = tmp_path / "pids"
    spec = make_spec(tmp_path, """
        import os, subprocess, sys
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
        open(os.environ["PIDFILE"], "w").write(str(child.pid))
        print("leaving my child behind")
    """, env={"PIDFILE": str(pidfile)})
    started = time.monotonic()
    result = executor().execute(spec, lambda line: None, threading.Event())
    assert result.status is RunStatus.SUCCEEDED
    assert time.monotonic() - started < 30
    assert not alive(int(pidfile.read_text()))


# A pipeline whose grandchild leaves the session (setsid, double fork) and ignores SIGTERM.
ESCAPE = """
    import os, signal, sys, time
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            open(os.environ["PIDFILE"], "w").write(str(os.getpid()))
            time.sleep(300)
        os._exit(0)
    while not os.path.getsize(os.environ["PIDFILE"]):
        time.sleep(0.01)
    print("ready", flush=True)
    if os.environ["HOW"] == "sleep":
        time.sleep(300)
"""


@pytest.mark.slow
@pytest.mark.parametrize("how", ["timeout", "cancel", "exit"])
def test_a_process_that_left_the_session_does_not_outlive_the_attempt(tmp_path, how):
    pidfile = tmp_path / "pid"
    pidfile.write_text("")
    spec = make_spec(tmp_path, ESCAPE, timeout=2.0 if how == "timeout" else 0.0,
                     env={"PIDFILE": str(pidfile), "HOW": "exit" if how == "exit" else "sleep"})
    cancel = threading.Event()

    def sink(line: OutputLine) -> None:
        if line.text == "ready" and how == "cancel":
            threading.Thread(target=cancel.set).start()

    started = time.monotonic()
    result = executor().execute(spec, sink, cancel)
    expected = {"timeout": RunStatus.TIMED_OUT, "cancel": RunStatus.CANCELLED,
                "exit": RunStatus.SUCCEEDED}[how]
    assert result.status is expected
    assert time.monotonic() - started < 15  # no wait on a pipe the escaped process held open
    assert not alive(int(pidfile.read_text()))


@pytest.mark.slow
def test_resources_and_soft_limit_events(tmp_path):
    spec = make_spec(tmp_path, """
        import time
        block = bytearray(80 * 1024 * 1024)
        for i in range(0, len(block), 4096):
            block[i] = 1
        time.sleep(1.0)
    """, limits=Limits(mem_soft_limit=40 * 1024 * 1024))
    result = executor(sample_interval=0.1).execute(spec, lambda line: None, threading.Event())
    assert result.resources.peak_memory_bytes > 80 * 1024 * 1024
    events = result.resources.soft_limit_events
    assert [(e["kind"], e["limit"]) for e in events] == [("memory", 40 * 1024 * 1024)]
    assert result.resources.cpu_max_cores is not None
    assert len(result.resources.samples) >= 2


@pytest.mark.slow
def test_hard_limits_are_reported_as_not_enforced(tmp_path, caplog):
    spec = make_spec(tmp_path, "print('hi')", limits=Limits(mem_hard_limit=512 * 1024 * 1024))
    with caplog.at_level(logging.WARNING, logger="fastflow.executors.local"):
        result = executor().execute(spec, lambda line: None, threading.Event())
    assert result.status is RunStatus.SUCCEEDED
    assert caplog.messages == [
        "pipe: mem_hard_limit=536870912 not enforced by the local executor (only Docker "
        "enforces hard limits); the attempt runs without them"
    ]


@pytest.mark.slow
def test_long_lines_are_split_and_utf8_survives(tmp_path):
    spec = make_spec(tmp_path, "print('é' * 100)")
    lines: list[OutputLine] = []
    executor(max_line_bytes=16).execute(spec, lines.append, threading.Event())
    text = [line.text for line in lines if line.stream == "stdout"]
    assert "".join(text) == "é" * 100
    assert len(text) > 1


def test_missing_folder_is_an_executor_error(tmp_path):
    spec = make_spec(tmp_path, "print(1)", workdir=tmp_path / "gone")
    with pytest.raises(ExecutorError) as err:
        executor().execute(spec, lambda line: None, threading.Event())
    assert str(err.value) == f"pipeline folder {tmp_path / 'gone'} does not exist; cannot run 'pipe'"


def test_missing_uv_is_an_executor_error(tmp_path):
    spec = make_spec(tmp_path, "print(1)")
    with pytest.raises(ExecutorError) as err:
        executor(uv="/nonexistent/uv").execute(spec, lambda line: None, threading.Event())
    assert str(err.value) == (
        "cannot start '/nonexistent/uv' for pipeline 'pipe': No such file or directory; "
        "install uv (pip install uv) and make sure it is on PATH"
    )


def test_host_base_env_keeps_only_what_a_run_needs():
    environ = {
        "PATH": "/bin", "HOME": "/root", "LANG": "C.UTF-8", "LC_ALL": "C", "TMPDIR": "/tmp",
        "SSL_CERT_FILE": "/ca.pem", "REQUESTS_CA_BUNDLE": "/ca.pem", "HTTPS_PROXY": "http://p",
        "no_proxy": "localhost", "UV_CACHE_DIR": "/cache", "AWS_SECRET_ACCESS_KEY": "nope",
        "VIRTUAL_ENV": "/venv", "GITHUB_TOKEN": "nope", "PYTHONPATH": "/x",
    }
    assert host_base_env(environ) == {
        "PATH": "/bin", "HOME": "/root", "LANG": "C.UTF-8", "LC_ALL": "C", "TMPDIR": "/tmp",
        "SSL_CERT_FILE": "/ca.pem", "REQUESTS_CA_BUNDLE": "/ca.pem", "HTTPS_PROXY": "http://p",
        "no_proxy": "localhost", "UV_CACHE_DIR": "/cache",
    }


@pytest.mark.slow
def test_child_env_is_base_plus_spec_only(tmp_path):
    spec = make_spec(tmp_path, """
        import os
        print(sorted(k for k in os.environ if k in ("SECRET_HOST_VAR", "MINE", "HOME")))
    """, env={"MINE": "1"})
    lines: list[OutputLine] = []
    LocalExecutor({"PATH": os.environ["PATH"], "HOME": "/root"}, clock=utc_now).execute(
        spec, lines.append, threading.Event()
    )
    assert [l.text for l in lines if l.stream == "stdout"] == ["['HOME', 'MINE']"]
