"""DockerExecutor against a real engine and the real runner image (built once per session).

Pure parts (line splitting, resource bookkeeping, engine timestamps) are tested without an
engine; everything else starts real containers (marked `docker` and `slow`).
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
from helpers import CA_BUNDLE, Lines, containers_of, make_spec, utc_now, wait_for

from fastflow.daemon.loop import Daemon, ServeOptions
from fastflow.errors import EngineUnavailable, ExecutorError
from fastflow.executors import choose_executor
from fastflow.executors.base import AttemptSpec, PreheatJob
from fastflow.executors.docker import (
    DockerExecutor,
    cancel_run,
    connect,
    docker_available,
    list_running,
    preheat_requirements,
)
from fastflow.executors.docker.engine import parse_engine_time
from fastflow.executors.docker.stats import ResourceSampler, cpu_cores, memory_usage
from fastflow.executors.docker.streams import LineSplitter
from fastflow.model import (
    Limits,
    NetworkMode,
    Pipeline,
    PipelineType,
    RetryPolicy,
    RunStatus,
)
from fastflow.record import LogInfo, RunRecord, Trigger
from fastflow.run.capture import Masker, format_line, parse_line
from fastflow.run.recovery import recover_run
from fastflow.run.runner import RunRequest, resolve_settings, run_pipeline

FIXED = datetime(2026, 11, 22, 14, 30, tzinfo=timezone.utc)


# The image, the shared cache and the executor factory are fixtures of conftest.py.

def tree_digest(root: Path) -> str:
    """A digest of every path, mode and content under `root` (to prove nothing changed)."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        digest.update(f"{path.relative_to(root)} {st.st_mode} {st.st_size}".encode())
        if path.is_file() and not path.is_symlink():
            digest.update(path.read_bytes())
    return digest.hexdigest()


def run(executor: DockerExecutor, spec: AttemptSpec, cancel: threading.Event | None = None):
    sink = Lines()
    return executor.execute(spec, sink, cancel or threading.Event()), sink


# --- pure parts -------------------------------------------------------------------------------

def test_line_splitter_keeps_streams_partial_lines_and_the_last_line():
    sink = Lines()
    splitter = LineSplitter(sink, lambda: FIXED, max_line_bytes=8)
    splitter.pump(iter([(b"one\ntw", None), (None, b"err\r\n"), (b"o\n\xc3", None),
                        (b"\xa9t\xc3\xa9 long line\n", None), (b"tail", None)]))
    # 8 bytes at most per piece, never cutting the 2-byte \u00e9 in half.
    assert sink.texts("stdout") == ["one", "two", "\u00e9t\u00e9 lo", "ng line", "tail"]
    assert sink.texts("stderr") == ["err"]


def test_line_splitter_keeps_draining_when_the_sink_fails():
    seen = []

    def sink(line):
        seen.append(line.text)
        raise RuntimeError("broken display")

    LineSplitter(sink, lambda: FIXED).pump(iter([(b"a\nb\nc", None)]))
    assert seen == ["a", "b", "c"]


def test_line_splitter_cuts_a_line_of_exactly_the_limit_and_longer_ones():
    sink = Lines()
    splitter = LineSplitter(sink, lambda: FIXED, max_line_bytes=8)
    splitter.pump(iter([(b"12345678", None), (b"\nabcdefghijklmnopq\nend", None)]))
    assert sink.texts("stdout") == ["12345678", "abcdefgh", "ijklmnop", "q", "end"]


def test_sampler_summary_and_one_event_per_excursion():
    sampler = ResourceSampler(Limits(cpu_soft_limit=1.5, mem_soft_limit=100))
    for t, mem, cpu in [(0, 50, 0.5), (1, 150, 2.0), (2, 180, 3.0), (3, 90, 1.0), (4, 120, 1.6)]:
        sampler.add(t, mem, cpu)
    res = sampler.resources()
    assert (res.peak_memory_bytes, res.cpu_max_cores, res.cpu_mean_cores) == (180, 3.0, 1.62)
    assert res.soft_limit_events == (
        {"t": 1, "kind": "memory", "value": 180, "limit": 100},
        {"t": 1, "kind": "cpu", "value": 3.0, "limit": 1.5},
        {"t": 4, "kind": "memory", "value": 120, "limit": 100},
        {"t": 4, "kind": "cpu", "value": 1.6, "limit": 1.5},
    )


def test_sampler_downsamples_to_at_most_max_points_keeping_maxima():
    sampler = ResourceSampler(max_points=120)
    for t in range(1000):
        sampler.add(t, 1000 + t, 0.1 if t != 777 else 3.5)
    res = sampler.resources()
    assert len(res.samples) <= 120
    assert max(s["cpu"] for s in res.samples) == 3.5
    assert max(s["mem"] for s in res.samples) == 1999
    assert res.samples[0]["t"] == 0


def test_stats_parsing_cores_are_not_clamped_and_cache_is_excluded():
    stats = {
        "cpu_stats": {"cpu_usage": {"total_usage": 5_000_000_000}, "system_cpu_usage": 20_000_000_000,
                      "online_cpus": 4},
        "precpu_stats": {"cpu_usage": {"total_usage": 2_000_000_000},
                         "system_cpu_usage": 16_000_000_000},
        "memory_stats": {"usage": 300, "stats": {"total_inactive_file": 100}},
    }
    assert cpu_cores(stats) == 3.0
    assert memory_usage(stats) == 200
    assert cpu_cores({"cpu_stats": {}, "precpu_stats": {}}) is None


def test_engine_time_parsing():
    assert parse_engine_time("2026-11-22T14:30:00.123456789Z") == FIXED.replace(microsecond=123456)
    assert parse_engine_time("0001-01-01T00:00:00Z") is None


def test_engine_unavailable_message():
    with pytest.raises(EngineUnavailable) as err:
        connect(base_url="unix:///nonexistent/docker.sock")
    assert not docker_available(base_url="unix:///nonexistent/docker.sock")
    assert str(err.value).startswith("no Docker engine answers (")
    assert str(err.value).endswith(
        "); start one with `sudo systemctl start docker` (or `sudo dockerd &`), "
        "or run on the host with `--local`")


# --- real containers --------------------------------------------------------------------------

@pytest.mark.docker
@pytest.mark.slow
class TestContainers:
    @pytest.fixture(autouse=True)
    def _executor(self, docker_executor_factory):
        self.executor = docker_executor_factory()

    def test_output_streams_env_route_and_last_line(self, tmp_path):
        spec = make_spec(tmp_path, """
            import os, sys
            print("to stdout")
            print("to stderr", file=sys.stderr)
            print(os.getcwd(), os.environ["GREETING"], os.environ["FASTFLOW_RUN_ID"])
            open(os.environ["FASTFLOW_ROUTE_FILE"], "w").write("publish\\n")
            sys.stdout.write("last line without newline")
        """, env={"GREETING": "hej", "FASTFLOW_RUN_ID": "r-1"})
        result, sink = run(self.executor, spec)
        assert result.status is RunStatus.SUCCEEDED, sink.lines
        assert sink.texts("stdout") == ["to stdout", "/work/pipe hej r-1", "last line without newline"]
        assert sink.texts("stderr") == ["to stderr"]
        assert result.route == "publish"
        env = result.environment
        assert (env.image, env.python, env.uv_version) == ("fastflow-runner:py3.11", "3.11", "0.13.9")
        assert env.image_id.startswith("sha256:")

    def test_nonzero_exit_is_failed_and_the_container_is_removed(self, tmp_path):
        spec = make_spec(tmp_path, "import sys; sys.exit(3)")
        result, _ = run(self.executor, spec)
        assert (result.status, result.exit_code, result.error) == (RunStatus.FAILED, 3, None)
        left = connect().containers.list(ignore_removed=True, all=True, filters={"label": f"org.fastflow.run_id={spec.run_id}"})
        assert left == []

    def test_hardening_non_root_read_only_no_capabilities_no_socket(self, tmp_path):
        spec = make_spec(tmp_path, """
            import os
            print("uid", os.getuid(), os.getgid())
            for path in ("main.py", "new-file", "/usr/new-file"):
                try:
                    open(path, "a").close()
                    print("writable", path)
                except OSError as exc:
                    print("refused", path, exc.errno)
            open("/tmp/scratch", "w").write("ok")
            print("tmp ok")
            print("socket", os.path.exists("/var/run/docker.sock"))
            print("caps", [l.split()[1] for l in open("/proc/self/status") if l.startswith("CapEff")])
            print("nnp", [l.split()[1] for l in open("/proc/self/status") if l.startswith("NoNewPrivs")])
        """)
        # Permissions would allow writing the code: only the read-only mount refuses it (EROFS=30).
        spec.workdir.chmod(0o777)
        (spec.workdir / "main.py").chmod(0o666)
        result, sink = run(self.executor, spec)
        assert result.status is RunStatus.SUCCEEDED, sink.lines
        assert sink.texts("stdout") == [
            "uid 10001 10001", "refused main.py 30", "refused new-file 30",
            "refused /usr/new-file 30", "tmp ok", "socket False",
            "caps ['0000000000000000']", "nnp ['1']",
        ]

    @pytest.mark.parametrize("size", [None, 64 * 1024**2])
    def test_tmp_is_a_sized_tmpfs(self, tmp_path, runner_image, shared_cache, size):
        executor = DockerExecutor(clock=utc_now, cache_dir=shared_cache, image=runner_image,
                                  **({"tmp_size": size} if size else {}))
        made = executor.containers.create(make_spec(tmp_path, "print(1)"), offline=False)
        try:
            tmpfs = connect().api.inspect_container(made.id)["HostConfig"]["Tmpfs"]
        finally:
            executor.containers.discard(made.id, made.name, made.scratch)
        assert tmpfs == {"/tmp": f"rw,nosuid,nodev,exec,mode=1777,size={size or 256 * 1024**2}"}

    def test_network_none_has_no_network(self, tmp_path):
        spec = make_spec(tmp_path, """
            import socket
            print(sorted(name for _, name in socket.if_nameindex()))
            try:
                socket.create_connection(("151.101.0.223", 443), timeout=3)
                print("connected")
            except OSError as exc:
                print("no network")
        """, network=NetworkMode.NONE)
        result, sink = run(self.executor, spec)
        assert result.status is RunStatus.SUCCEEDED, sink.lines
        assert sink.texts("stdout") == ["['lo']", "no network"]

    def test_oom_killed_under_50m_and_succeeds_under_256m(self, tmp_path):
        code = """
            block = bytearray(100 * 1024 * 1024)
            for i in range(0, len(block), 4096):
                block[i] = 1
            print("allocated")
        """
        small = make_spec(tmp_path, code, limits=Limits(mem_hard_limit=50 * 1024**2))
        result, sink = run(self.executor, small)
        assert result.status is RunStatus.OOM_KILLED, sink.lines
        assert result.exit_code == 137
        assert result.error.kind == "oom"
        assert result.error.message == "killed by the kernel's OOM killer (mem_hard_limit 52428800 bytes)"
        big = make_spec(tmp_path, code, limits=Limits(mem_hard_limit=256 * 1024**2))
        result, sink = run(self.executor, big)
        assert result.status is RunStatus.SUCCEEDED, sink.lines
        assert sink.texts("stdout") == ["allocated"]

    def test_exit_137_without_oom_is_failed(self, tmp_path):
        spec = make_spec(tmp_path, "import os, signal; os.kill(os.getpid(), signal.SIGKILL)",
                         limits=Limits(mem_hard_limit=256 * 1024**2))
        result, _ = run(self.executor, spec)
        assert result.status is RunStatus.FAILED
        assert result.exit_code == 137

    def test_timeout_stops_with_sigterm_then_sigkill(self, tmp_path):
        spec = make_spec(tmp_path, """
            import signal, time
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            print("ready", flush=True)
            time.sleep(300)
        """, timeout=1.5, grace_period=1.0)
        result, sink = run(self.executor, spec)
        assert result.status is RunStatus.TIMED_OUT
        assert result.error.message == "timed out after 1.5s (timeout 1.5s)"
        took = (result.finished_at - result.started_at).total_seconds()
        assert 2.5 <= took < 15, took
        assert sink.texts("runner") == ["timeout of 1.5s reached: stopping the container"]

    def test_cancel_event(self, tmp_path):
        spec = make_spec(tmp_path, "import time; print('ready', flush=True); time.sleep(300)")
        cancel = threading.Event()
        sink = Lines()
        sink.triggers["ready"] = lambda: threading.Timer(0.2, cancel.set).start()
        result = self.executor.execute(spec, sink, cancel)
        assert result.status is RunStatus.CANCELLED
        assert (result.finished_at - result.started_at).total_seconds() < 10

    def test_ps_lists_the_run_and_cancel_run_stops_it(self, tmp_path):
        spec = make_spec(tmp_path, "import time; print('ready', flush=True); time.sleep(300)",
                         attempt=2)
        seen = []

        def from_outside():
            seen.extend(list_running())
            cancel_run(spec.run_id, grace_period=1)

        sink = Lines()
        sink.triggers["ready"] = lambda: threading.Thread(target=from_outside).start()
        result = self.executor.execute(spec, sink, threading.Event())
        assert result.status is RunStatus.CANCELLED
        assert result.error.message == ("the container was stopped from outside (fastflow cancel, "
                                        "docker stop or docker kill)")
        mine = [r for r in seen if r.run_id == spec.run_id]
        assert [(r.pipeline, r.attempt) for r in mine] == [("pipe", 2)]
        assert mine[0].started.tzinfo is not None

    def test_cancel_run_of_an_unknown_id(self):
        with pytest.raises(ExecutorError) as err:
            cancel_run("no-such-run")
        assert str(err.value) == ("no running run has the id 'no-such-run'; "
                                  "`fastflow ps` lists the running runs")

    def test_removed_container_is_lost(self, tmp_path):
        spec = make_spec(tmp_path, "import time; print('ready', flush=True); time.sleep(300)")
        sink = Lines()

        def remove():
            for c in connect().containers.list(ignore_removed=True, filters={"label": f"org.fastflow.run_id={spec.run_id}"}):
                c.remove(force=True)

        sink.triggers["ready"] = lambda: threading.Thread(target=remove).start()
        result = self.executor.execute(spec, sink, threading.Event())
        # `docker rm -f` kills first: whether the executor still sees the kill (cancelled) or
        # only a vanished container (lost) depends on timing; both are terminal, never retried.
        assert result.status in (RunStatus.LOST, RunStatus.CANCELLED)

    def test_cpu_quota_is_visible_in_the_samples(self, tmp_path):
        spec = make_spec(tmp_path, """
            import time
            end = time.monotonic() + 4
            while time.monotonic() < end:
                pass
        """, limits=Limits(cpu_hard_limit=0.5, cpu_soft_limit=0.2))
        result, sink = run(self.executor, spec)
        res = result.resources
        # The excess is told as it starts (a runner line carrying the event), not only recorded.
        [told] = [line for line in sink.lines if line.event is not None]
        first = res.soft_limit_events[0]  # its value is the excursion's peak by the end
        assert told.stream == "runner" and (told.event["kind"], told.event["t"]) == \
            (first["kind"], first["t"]) and told.event["value"] <= first["value"]
        assert told.text.startswith("soft limit: cpu ") and told.at < result.finished_at
        assert result.status is RunStatus.SUCCEEDED
        assert len(res.samples) >= 2
        # A 0.5-core quota: a busy loop stays well under the 2 cores it would take unlimited;
        # a sample's window may still catch a burst above the quota on a loaded machine.
        assert 0.3 <= res.cpu_max_cores <= 0.8, res
        assert res.peak_memory_bytes > 1_000_000
        assert [e["kind"] for e in res.soft_limit_events] == ["cpu"]

    def test_a_lot_of_output_is_streamed_completely(self, tmp_path):
        spec = make_spec(tmp_path, """
            import sys
            for i in range(200_000):
                print(f"line {i}")
            sys.stdout.write("the end")
        """)
        result, sink = run(self.executor, spec)
        out = sink.texts("stdout")
        assert result.status is RunStatus.SUCCEEDED
        assert len(out) == 200_001 and out[-2:] == ["line 199999", "the end"]

    def test_unreadable_pipeline_folder(self, tmp_path):
        spec = make_spec(tmp_path, "print('hi')")
        spec.workdir.chmod(0o700)
        with pytest.raises(ExecutorError) as err:
            run(self.executor, spec)
        assert str(err.value) == (
            f"{spec.workdir} is not readable by the container user (uid 10001, mode 700); make "
            f"the pipeline folder world-readable with `chmod -R o+rX {spec.workdir}`")

    def test_missing_image(self, tmp_path, shared_cache):
        executor = DockerExecutor(clock=utc_now, cache_dir=shared_cache, image="fastflow-nope:1")
        with pytest.raises(ExecutorError) as err:
            run(executor, make_spec(tmp_path, "print('hi')"))
        assert str(err.value) == ("pipeline 'pipe': the runner image 'fastflow-nope:1' of Python "
                                  "3.11 does not exist; build it with `fastflow image build "
                                  "--bootstrap --python 3.11` (or `--base IMAGE`)")


# --- one runner image per Python -------------------------------------------------------------

PREHEAT_GOOD = Path(__file__).resolve().parent / "fixtures" / "preheat" / "good" / "requirements.txt"
VERSION = "import sys; print('python', '%d.%d' % sys.version_info[:2])\n"


@pytest.mark.docker
@pytest.mark.slow
class TestPythonVersions:
    def test_one_image_for_every_python_refuses_another_python_at_run_start(
            self, runner_image, shared_cache, tmp_path):
        executor = DockerExecutor(clock=utc_now, cache_dir=shared_cache, image=runner_image)
        spec = make_spec(tmp_path, VERSION, python_version="3.13")
        with pytest.raises(ExecutorError) as err:
            run(executor, spec)
        assert str(err.value) == (
            "pipeline 'pipe': the image 'fastflow-runner:py3.11' (`image` of "
            ".fastflow/config.yaml, one image for every Python) has Python 3.11 (label "
            "org.fastflow.python), not 3.13; write {python} in `image` (e.g. "
            "fastflow-runner:py{python}) for one image per Python and build it with `fastflow "
            "image build --bootstrap --python 3.13` (or `--base IMAGE`), or set python_version "
            "(or default_python) to \"3.11\"")
        assert containers_of(spec.run_id) == []  # refused before anything was created

    def test_a_preheat_for_a_python_without_an_image_fails_with_the_fix(self, shared_cache,
                                                                          tmp_path):
        executor = DockerExecutor(clock=utc_now, cache_dir=shared_cache)
        (tmp_path / "requirements.txt").write_text(PREHEAT_GOOD.read_text())
        outcome = executor.preheat(PreheatJob("gap", tmp_path, "requirements.txt", "3.12"))
        assert not outcome.ok
        assert outcome.message == (
            "pipeline 'gap': the runner image 'fastflow-runner:py3.12' of Python 3.12 does not "
            "exist; build it with `fastflow image build --base python:3.12-slim --python 3.12` "
            "(no Debian suite ships Python 3.12 for --bootstrap)")

    def test_a_daemon_runs_each_python_in_its_own_image(self, origin, tmp_path, runner_image,
                                                         runner_image_py313):
        """3.11 and 3.13 side by side, the 3.13 one pre-heated and run with `network: none`;
        a pipeline on a Python without an image fails at once with the fix, never hangs."""
        origin.push({
            ".fastflow/config.yaml": f"ca_bundle: {CA_BUNDLE}\n",
            "pipelines/old/main.py": VERSION,
            "pipelines/old/pipeline.json": '{"python_version": "3.11"}',
            "pipelines/new/main.py": VERSION + "import six; print('six', six.__version__)\n",
            "pipelines/new/pipeline.json": '{"python_version": "3.13", "network": "none"}',
            "pipelines/new/requirements.txt": PREHEAT_GOOD.read_text(),
            "pipelines/gap/main.py": VERSION,
            "pipelines/gap/pipeline.json": '{"python_version": "3.12"}',
        }, "three Pythons")
        environ = {**os.environ, "FASTFLOW_CACHE_DIR": str(tmp_path / "cache")}
        daemon = Daemon(ServeOptions(str(origin.bare), tmp_path / "state"), clock=utc_now,
                        environ=environ, executor_factory=lambda config: choose_executor(
                            config, local=False, environ=environ, clock=utc_now))
        daemon.start()
        try:
            assert daemon.preheater.wait_all(300)
            assert daemon.preheater.state("new").status == "ready", daemon.preheater.state("new")
            runs = {name: daemon.submit(name, Trigger("manual"), now=utc_now())
                    for name in ("old", "new", "gap")}
            assert daemon.dispatcher.wait_idle(180)
            records = {name: wait_for(lambda r=run_id: daemon.store.read_run(r))
                       for name, run_id in runs.items()}
            logs = {name: daemon.store.read_log(run_id) for name, run_id in runs.items()}
        finally:
            daemon.stop(grace=30)
        for name, python in (("old", "3.11"), ("new", "3.13")):
            record = records[name]
            assert record.status is RunStatus.SUCCEEDED, logs[name]
            assert f"python {python}" in logs[name]
            assert record.environment.image == f"fastflow-runner:py{python}"
            assert record.environment.python == python
        assert "six 1.16.0" in logs["new"]
        assert "six==1.16.0" in records["new"].environment.resolved  # pre-heated, run offline
        gap = records["gap"]
        assert (gap.status, gap.error.kind) == (RunStatus.FAILED, "executor")
        assert gap.error.message == (
            "pipeline 'gap': the runner image 'fastflow-runner:py3.12' of Python 3.12 does not "
            "exist; build it with `fastflow image build --base python:3.12-slim --python 3.12` "
            "(no Debian suite ships Python 3.12 for --bootstrap)")


# --- the shared cache: pre-heat, warm runs offline, runs cannot change it ---------------------

@pytest.mark.docker
@pytest.mark.slow
class TestCache:
    def test_warm_run_needs_no_network_and_cannot_change_the_cache(self, runner_image, tmp_path):
        cache = tmp_path / "cache"
        spec = make_spec(tmp_path, """
            import glob, os, shutil, six
            print("six", six.__version__)
            # Try to tamper with the shared cache: rewrite, delete, add.
            for path in glob.glob("/cache/uv/**/six.py", recursive=True):
                open(path, "a").write("\\nraise SystemExit('poisoned')\\n")
            shutil.rmtree("/cache/uv/archive-v0", ignore_errors=True)
            open("/cache/uv/planted", "w").write("x")
            print("tampered")
        """, requirements="requirements.txt", python_version="3.11", network=NetworkMode.NONE)
        (spec.workdir / "requirements.txt").write_text("six==1.16.0\n")
        heat = preheat_requirements(runner_image, cache, spec.workdir, "requirements.txt", "3.11",
                                    CA_BUNDLE)
        assert heat.ok, heat.output
        again = preheat_requirements(runner_image, cache, spec.workdir, "requirements.txt", "3.11")
        assert again.skipped and again.key == heat.key
        before = tree_digest(cache)
        executor = DockerExecutor(clock=utc_now, cache_dir=cache, image=runner_image)
        for _ in range(2):  # the second run sees the cache exactly as the first did
            result, sink = run(executor, spec)
            assert result.status is RunStatus.SUCCEEDED, sink.lines
            assert sink.texts("stdout") == ["six 1.16.0", "tampered"]
            assert not any("Installed" in t for t in sink.texts("stderr")), sink.lines
            assert "six==1.16.0" in result.environment.resolved  # what the pre-heat resolved
        assert tree_digest(cache) == before

    def test_cold_run_installs_into_its_own_layer(self, runner_image, tmp_path):
        cache = tmp_path / "cache"
        spec = make_spec(tmp_path, "import six; print('six', six.__version__)",
                         requirements="requirements.txt")
        (spec.workdir / "requirements.txt").write_text("six==1.16.0\n")
        executor = DockerExecutor(clock=utc_now, cache_dir=cache, image=runner_image,
                                  ca_bundle=CA_BUNDLE)
        result, sink = run(executor, spec)
        assert result.status is RunStatus.SUCCEEDED, sink.lines
        assert sink.texts("stdout") == ["six 1.16.0"]
        assert list((cache / "uv").iterdir()) == []  # the download stayed in the run's layer

    def test_preheat_of_a_missing_file(self, runner_image, tmp_path):
        with pytest.raises(ExecutorError) as err:
            preheat_requirements(runner_image, tmp_path / "c", tmp_path, "requirements.txt")
        assert str(err.value) == f"{tmp_path / 'requirements.txt'} does not exist; nothing to pre-heat"

    def test_failed_preheat_is_a_result(self, runner_image, tmp_path):
        (tmp_path / "requirements.txt").write_text("this-package-does-not-exist-fastflow==0.0.1\n")
        tmp_path.chmod(0o755)
        heat = preheat_requirements(runner_image, tmp_path / "c", tmp_path, "requirements.txt",
                                    ca_bundle=CA_BUNDLE)
        assert not heat.ok and heat.exit_code not in (0, None)
        assert "this-package-does-not-exist-fastflow" in heat.output
        assert not (tmp_path / "c" / "preheated" / f"{heat.key}.json").exists()


# --- re-attaching to an attempt whose owner was killed (kill -9) -----------------------------

OWNER = Path(__file__).resolve().parent / "docker_owner.py"


def start_owner(spec: AttemptSpec, image: str, cache: Path, lines: Path,
                ready: str | None) -> subprocess.Popen:
    """Run `spec` in another process that writes its output to `lines` (a live log); wait
    until `ready` was printed (or the container exists, for ready=None)."""
    data = {"run_id": spec.run_id, "pipeline": spec.pipeline, "attempt": spec.attempt,
            "workdir": str(spec.workdir), "timeout": spec.timeout,
            "grace_period": spec.grace_period, "limits": spec.limits.to_json(),
            "cache_dir": str(cache), "image": image}
    owner = subprocess.Popen([sys.executable, str(OWNER), json.dumps(data), str(lines)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        text = lines.read_text() if lines.exists() else ""
        if ready is not None and f"stdout | {ready}\n" in text:
            return owner
        if ready is None and containers_of(spec.run_id):
            return owner
        if owner.poll() is not None:
            raise AssertionError(f"the owner ended early: {owner.communicate()}")
        time.sleep(0.05)
    owner.kill()
    raise AssertionError("the owner never got ready")


def kill_owner(owner: subprocess.Popen) -> None:
    owner.send_signal(signal.SIGKILL)
    owner.wait(10)


def delivered_from(lines: Path):
    text = lines.read_text() if lines.exists() else ""
    counts = {"stdout": text.count(" stdout | "), "stderr": text.count(" stderr | ")}
    return lambda attempt: counts


@pytest.mark.docker
@pytest.mark.slow
class TestReattach:
    @pytest.fixture(autouse=True)
    def _executor(self, runner_image, shared_cache):
        self.image, self.cache = runner_image, shared_cache
        self.executor = DockerExecutor(clock=utc_now, cache_dir=shared_cache, image=runner_image)

    def test_a_running_container_is_followed_from_where_the_owner_stopped(self, tmp_path):
        spec = make_spec(tmp_path, """
            import sys, time
            print("before 1"); print("before 2"); print("err before", file=sys.stderr)
            time.sleep(3)
            print("after 1"); print("err after", file=sys.stderr)
            sys.stdout.write("after 2")
        """, attempt=2)
        lines = tmp_path / "live.log"
        owner = start_owner(spec, self.image, self.cache, lines, "before 2")
        time.sleep(0.3)  # let the owner write the stderr line too
        kill_owner(owner)
        (container,) = containers_of(spec.run_id)  # nothing removed it: its owner died
        assert container.attrs["HostConfig"]["LogConfig"] == {
            "Type": "json-file", "Config": {"max-file": "2", "max-size": "5120k"}}
        sink = Lines()
        found = self.executor.reattach(spec.run_id, sink, threading.Event(), delivered_from(lines))
        assert found.attempt == 2
        assert found.result.status is RunStatus.SUCCEEDED, sink.lines
        assert sink.texts("stdout") == ["after 1", "after 2"]
        assert sink.texts("stderr") == ["err after"]
        assert found.result.started_at < found.result.finished_at
        assert found.result.environment.image_id.startswith("sha256:")
        assert containers_of(spec.run_id) == []

    def test_the_timeout_counts_from_the_container_start(self, tmp_path):
        spec = make_spec(tmp_path, """
            import time
            print("ready", flush=True)
            time.sleep(300)
        """, timeout=5, grace_period=1.0)
        lines = tmp_path / "live.log"
        kill_owner(start_owner(spec, self.image, self.cache, lines, "ready"))
        sink = Lines()
        begin = time.monotonic()
        found = self.executor.reattach(spec.run_id, sink, threading.Event(), delivered_from(lines))
        assert found.result.status is RunStatus.TIMED_OUT
        assert found.result.error.message == "timed out after 5s (timeout 5s)"
        took = (found.result.finished_at - found.result.started_at).total_seconds()
        assert 5 <= took < 12, took
        assert time.monotonic() - begin < 8  # not a fresh 5 s from the re-attach on
        assert sink.texts("stdout") == []

    def test_a_container_that_ended_meanwhile_gives_its_exit_code_and_output(self, tmp_path):
        spec = make_spec(tmp_path, """
            import sys, time
            print("ready", flush=True)
            time.sleep(1)
            print("done")
            sys.exit(3)
        """)
        lines = tmp_path / "live.log"
        kill_owner(start_owner(spec, self.image, self.cache, lines, "ready"))
        connect().containers.get(containers_of(spec.run_id)[0].id).wait(timeout=30)
        sink = Lines()
        found = self.executor.reattach(spec.run_id, sink, threading.Event(), delivered_from(lines))
        assert (found.result.status, found.result.exit_code) == (RunStatus.FAILED, 3)
        assert sink.texts("stdout") == ["done"]
        assert containers_of(spec.run_id) == []

    def test_an_oom_kill_meanwhile_is_oom_killed(self, tmp_path):
        spec = make_spec(tmp_path, """
            import time
            print("ready", flush=True)
            time.sleep(1)
            block = bytearray(100 * 1024 * 1024)
            for i in range(0, len(block), 4096):
                block[i] = 1
        """, limits=Limits(mem_hard_limit=50 * 1024**2))
        lines = tmp_path / "live.log"
        kill_owner(start_owner(spec, self.image, self.cache, lines, "ready"))
        connect().containers.get(containers_of(spec.run_id)[0].id).wait(timeout=30)
        found = self.executor.reattach(spec.run_id, Lines(), threading.Event(), delivered_from(lines))
        assert found.result.status is RunStatus.OOM_KILLED
        assert found.result.error.message == (
            "killed by the kernel's OOM killer (mem_hard_limit 52428800 bytes)")

    def test_cancel_while_reattached(self, tmp_path):
        spec = make_spec(tmp_path, "import time; print('ready', flush=True); time.sleep(300)")
        lines = tmp_path / "live.log"
        kill_owner(start_owner(spec, self.image, self.cache, lines, "ready"))
        cancel = threading.Event()
        threading.Timer(0.5, cancel.set).start()
        found = self.executor.reattach(spec.run_id, Lines(), cancel, delivered_from(lines))
        assert found.result.status is RunStatus.CANCELLED
        assert containers_of(spec.run_id) == []

    def test_no_container_is_none(self):
        assert self.executor.reattach("20261122T143000Z-none-0000", Lines(), threading.Event()) is None


# --- re-attach reads a uv failure as a fresh attempt does ---------------------------------------

def leave_behind(executor: DockerExecutor, spec: AttemptSpec, finished: bool) -> None:
    """Leave `spec`'s attempt as an owner killed right after starting it does: its container
    created and started by the executor's own parts, then not supervised (for `finished`,
    until it has ended). Deterministic where killing an owner is not: uv fails in a second."""
    container = executor.containers.create(spec, offline=False)
    executor.client.api.start(container.id)
    if finished:
        executor.client.api.wait(container.id, timeout=120)


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.parametrize(("finished", "in_live_log"), [
    (False, "nothing"), (True, "nothing"), (True, "uv's lines")],
    ids=["just-started", "finished", "finished-and-written"])
def test_a_reattached_run_that_failed_in_uv_is_recorded_as_a_fresh_one(
        runner_image, shared_cache, tmp_path, finished, in_live_log):
    """The record's error is the runner's (kind `dependencies`, uv's reason naming the
    requirements file, not retried since retrying cannot help), not a plain exit code:
    whether the dead daemon had written uv's lines to the live log or not."""
    spec = make_spec(tmp_path, "print('never runs')", requirements="requirements.txt")
    (spec.workdir / "requirements.txt").write_text("this-package-does-not-exist-fastflow==0.0.1\n")
    pipeline = Pipeline(name=spec.pipeline, path=spec.workdir, entry="main.py",
                        type=PipelineType.SCRIPT, metadata_file=None,
                        requirements=spec.workdir / "requirements.txt",
                        retry=RetryPolicy(attempts=2))
    executor = DockerExecutor(clock=utc_now, cache_dir=shared_cache, image=runner_image,
                              ca_bundle=CA_BUNDLE)
    fresh = run_pipeline(RunRequest(pipeline), executor, clock=utc_now)
    assert fresh.record.error.kind == "dependencies", fresh.log_text
    lines = [parse_line(raw) for raw in fresh.log_text.splitlines()]
    summary = next(i for i, line in enumerate(lines) if line.text.startswith("attempt 1 of 3 failed"))
    written = lines[:summary] if in_live_log != "nothing" else lines[:1]  # [:1]: the start line
    assert written[0].text == "attempt 1 of 3 started"
    live = tmp_path / "live.log"
    live.write_text("".join(format_line(line) + "\n" for line in written), encoding="utf-8")

    def append(line) -> None:
        with open(live, "a", encoding="utf-8") as f:
            f.write(format_line(line) + "\n")

    leave_behind(executor, spec, finished)
    base = RunRecord(run_id=spec.run_id, pipeline=spec.pipeline, status=RunStatus.RUNNING,
                     started_at=utc_now(), log=LogInfo(f"logs/{spec.run_id}.log"))
    outcome = recover_run(
        DockerExecutor(clock=utc_now, cache_dir=shared_cache, image=runner_image), base,
        live_path=live, live_sink=append, masker=Masker(), pipeline=pipeline,
        settings=resolve_settings(pipeline, None), cap_bytes=1024 * 1024, clock=utc_now,
        cancel=threading.Event())
    assert outcome is not None
    record = outcome.record
    assert (record.status, record.exit_code, record.error) == (
        fresh.record.status, fresh.record.exit_code, fresh.record.error)
    assert record.error.message.startswith(
        "uv could not install the requirements of pipeline 'pipe' from requirements.txt ")
    assert len(record.attempts) == 1
    assert outcome.log_text.splitlines()[-1].endswith(lines[summary].text)
    assert containers_of(spec.run_id) == []


@pytest.mark.docker
@pytest.mark.slow
class TestLeftoverContainer:
    """A container of the same run id and attempt is already there (its owner died, or a second
    daemon started the same slot): an engine state to handle, never a failed attempt."""

    @pytest.fixture(autouse=True)
    def _executor(self, runner_image, shared_cache):
        self.image, self.cache = runner_image, shared_cache
        self.executor = DockerExecutor(clock=utc_now, cache_dir=shared_cache, image=runner_image)

    def test_a_running_leftover_is_followed_to_its_end_instead_of_a_name_conflict(self, tmp_path):
        spec = make_spec(tmp_path, """
            import time
            print("first", flush=True); time.sleep(2); print("second")
        """)
        kill_owner(start_owner(spec, self.image, self.cache, tmp_path / "live.log", "first"))
        sink = Lines()
        result = self.executor.execute(spec, sink, threading.Event())
        assert result.status is RunStatus.SUCCEEDED, result.error
        assert result.exit_code == 0
        assert sink.texts("stdout") == ["first", "second"]
        assert any("already there" in text for text in sink.texts("runner"))
        assert containers_of(spec.run_id) == []

    def test_a_finished_leftover_gives_its_real_outcome(self, tmp_path):
        spec = make_spec(tmp_path, """
            import sys
            print("done", flush=True); sys.exit(3)
        """)
        kill_owner(start_owner(spec, self.image, self.cache, tmp_path / "live.log", "done"))
        wait_for(lambda: [c.status for c in containers_of(spec.run_id)] == ["exited"],
                 what="the leftover container to exit")
        sink = Lines()
        result = self.executor.execute(spec, sink, threading.Event())
        assert (result.status, result.exit_code) == (RunStatus.FAILED, 3)
        assert sink.texts("stdout") == ["done"]
        assert containers_of(spec.run_id) == []

    def test_a_leftover_that_never_started_is_replaced_by_a_fresh_attempt(self, tmp_path):
        spec = make_spec(tmp_path, "print('fresh')\n")
        self.executor.containers.create(spec, offline=True)
        sink = Lines()
        result = self.executor.execute(spec, sink, threading.Event())
        assert result.status is RunStatus.SUCCEEDED, result.error
        assert sink.texts("stdout") == ["fresh"]
        assert containers_of(spec.run_id) == []


@pytest.mark.docker
@pytest.mark.slow
def test_an_attempts_container_stays_until_its_outcome_is_written(runner_image, shared_cache,
                                                                  tmp_path):
    """Issue 11, item 6: the runner holds each attempt (`AttemptSpec.hold`) and releases it only
    after the attempt's summary line reached the sink (the daemon's live log), so a kill -9
    after the end of an attempt finds its outcome in the live log or in the exited container,
    never in neither. `execute` on its own (no hold) still cleans up at once."""
    spec = make_spec(tmp_path, "raise SystemExit(3)")
    pipeline = Pipeline(name=spec.pipeline, path=spec.workdir, entry="main.py",
                        type=PipelineType.SCRIPT, metadata_file=None, requirements=None)
    executor = DockerExecutor(clock=utc_now, cache_dir=shared_cache, image=runner_image,
                              ca_bundle=CA_BUNDLE)
    seen: dict[str, list] = {}

    def sink(line) -> None:
        if line.stream == "runner" and line.text.startswith("attempt 1 of 1 failed"):
            seen["at_summary"] = containers_of(run_id)

    run_id = f"20261122T143000Z-{spec.pipeline}-{time.time_ns():x}"
    outcome = run_pipeline(RunRequest(pipeline), executor, clock=utc_now, sink=sink, run_id=run_id)
    assert outcome.record.exit_code == 3
    assert [c.status for c in seen["at_summary"]] == ["exited"]  # still there when written
    assert containers_of(run_id) == []  # released right after
    executor.execute(spec, lambda line: None, threading.Event())
    assert containers_of(spec.run_id) == []  # no hold: removed by execute itself
