"""The test harness's plain helpers (fixtures are in conftest.py); each chore has one helper here.

Clocks (`utc_now`, `Clock`), waiting (`wait_for`, `alive`), a real sink (`Lines`), files and
git (`write_files`, `git`, `run_git`, `Origin`, `GitDaemon` for a git:// remote), attempt
specs (`make_spec`), Docker (`require_docker`, `containers_of`), the daemon factory
(`make_daemon`) and process (`start_serve`), the command tree (`command_paths`) and the sample
site of test_site and test_site_browser (`build_sample`).
Test modules import from here, never from each other.
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable

import click
import pytest

from fastflow.config.repo import default_repo_config
from fastflow.config.schedules import check_schedules
from fastflow.daemon.inbox import Inbox
from fastflow.daemon.loop import Daemon, ServeOptions
from fastflow.daemon.payloads import AcceptedRequests
from fastflow.daemon.webhooks.intake import Intake
from fastflow.deploy.discovery import discover
from fastflow.executors import choose_executor
from fastflow.executors import docker as docker_executor
from fastflow.executors.base import AttemptSpec, OutputLine
from fastflow.flow.record import FlowRunRecord, TaskState
from fastflow.model import PipelineType, Problem, RunStatus
from fastflow.record import (
    Attempt,
    CommitRef,
    Environment,
    ErrorInfo,
    LogInfo,
    Resources,
    RunRecord,
    Trigger,
)
from fastflow.site import SiteData, summarize_runs

ROOT = Path(__file__).resolve().parent.parent  # the Fast-Flow checkout (its own demo repository)
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")  # the host's CA bundle, mounted into runs


# --- clocks -------------------------------------------------------------------------------------

def utc_now() -> datetime:
    """The real clock, for tests where real processes take real time (runs, daemons, CLIs)."""
    return datetime.now(timezone.utc)


class Clock:
    """A fixed clock to inject where code takes `clock`: it says `now` until the test moves it
    (`clock.now = moment` or `clock.advance(minutes=5)`)."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


# --- waiting and processes ----------------------------------------------------------------------

def wait_for(predicate: Callable[[], object], timeout: float = 60.0, what: str = "a condition",
             interval: float = 0.05):
    """Poll `predicate` until it returns something truthy (returned) or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


def alive(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie is dead: it only waits to be reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat[stat.rfind(")") + 2] not in "ZX"  # the state follows the command name "(...)"


class Lines:
    """A real sink collecting lines; `triggers[text]` runs an action when a line matches."""

    def __init__(self) -> None:
        self.lines: list[OutputLine] = []
        self.triggers: dict[str, Callable[[], None]] = {}
        self.lock = threading.Lock()

    def __call__(self, line: OutputLine) -> None:
        with self.lock:
            self.lines.append(line)
        if line.text in self.triggers:
            self.triggers[line.text]()

    def texts(self, stream: str) -> list[str]:
        return [line.text for line in self.lines if line.stream == stream]


# --- files and git ------------------------------------------------------------------------------

def write_files(root: Path, files: dict[str, str]) -> Path:
    """Write a {relative path: text} mapping under `root` (made as needed); returns `root`."""
    root.mkdir(parents=True, exist_ok=True)
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


# The tests play the user with the git CLI (the product uses pygit2): a fixed identity, and
# none of the machine's git configuration (a global init.defaultBranch or signing setting).
GIT_ENV = {
    "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
    "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com",
    "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull,
}


def run_git(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run `git *args` in `cwd` as the tests' user; raises when git fails. For the rare test
    that reads git's stderr (a push's `remote:` lines); the others call `git`."""
    return subprocess.run(["git", *args], cwd=cwd, env={**os.environ, **GIT_ENV},
                          capture_output=True, text=True, check=True)


def git(*args: str, cwd: Path) -> str:
    """Run `git *args` in `cwd` as the tests' user; returns its stripped standard output."""
    return run_git(*args, cwd=cwd).stdout.strip()


class Origin:
    """A bare repository (`bare`, branch main) and a clone of it (`work`): a developer who
    commits and pushes with the git CLI."""

    def __init__(self, root: Path, bare: str = "origin.git", work: str = "work") -> None:
        self.bare = root / bare
        git("init", "-q", "--bare", "-b", "main", str(self.bare), cwd=root)
        self.work = root / work
        git("clone", "-q", str(self.bare), str(self.work), cwd=root)
        git("checkout", "-q", "-b", "main", cwd=self.work)

    def push(self, files: dict[str, str | None], message: str = "change") -> str:
        """Commit `files` ({path: text}, None deletes) on main and push; returns the commit."""
        for rel, text in files.items():
            path = self.work / rel
            if text is None:
                path.unlink()
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        git("add", "-A", cwd=self.work)
        git("commit", "-q", "-m", message, cwd=self.work)
        git("push", "-q", "origin", "main", cwd=self.work)
        return git("rev-parse", "HEAD", cwd=self.work)



class GitDaemon:
    """`git daemon` serving the bare repositories under `base` over git:// on 127.0.0.1, pushes
    allowed: a real network remote, whose hooks run (libgit2's local transport runs none).

    `stall()` replaces it, on the same port, by a listener that accepts connections and never
    answers (a fetch or push hangs there until the test resumes); `accepted()` waits for the
    first connection to it; `start()` serves again."""

    def __init__(self, base: Path) -> None:
        self.base = base
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.proc: subprocess.Popen | None = None
        self._stalled: socket.socket | None = None
        self._hung: list[socket.socket] = []

    def url(self, bare: Path) -> str:
        return f"git://127.0.0.1:{self.port}/{bare.relative_to(self.base)}"

    def _answers(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            return True
        except OSError:
            return False

    def start(self) -> "GitDaemon":
        self._resume()
        self.proc = subprocess.Popen(
            ["git", "daemon", "--reuseaddr", f"--base-path={self.base}", "--export-all",
             "--enable=receive-pack", f"--port={self.port}", "--listen=127.0.0.1", str(self.base)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(self._answers, timeout=10, what="git daemon to listen")
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None
        self._resume()

    def stall(self) -> None:
        self.stop()
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(8)
        self._stalled = listener

    def accepted(self, timeout: float = 30.0) -> None:
        assert self._stalled is not None, "stall() first"
        self._stalled.settimeout(timeout)
        connection, _ = self._stalled.accept()
        self._hung.append(connection)

    def _resume(self) -> None:
        for sock in [*self._hung, *([self._stalled] if self._stalled else [])]:
            sock.close()
        self._hung, self._stalled = [], None

# --- attempt specs ------------------------------------------------------------------------------

def make_spec(tmp_path: Path, code: str, **overrides) -> AttemptSpec:
    """An attempt of a one-file pipeline: `code` (dedented) is written as main.py of the folder
    tmp_path/<pipeline> (default "pipe"); `overrides` replace any AttemptSpec field. Run ids are
    unique, so containers of one test never meet another's."""
    folder = tmp_path / overrides.pop("pipeline", "pipe")
    folder.mkdir(exist_ok=True)
    (folder / "main.py").write_text(textwrap.dedent(code), encoding="utf-8")
    values = dict(run_id=f"20261122T143000Z-{folder.name}-{os.urandom(2).hex()}",
                  pipeline=folder.name, attempt=1, workdir=folder, entry="main.py",
                  type=PipelineType.SCRIPT, python_version=None, requirements=None,
                  env={"PYTHONUNBUFFERED": "1"}, grace_period=2.0)
    values.update(overrides)
    return AttemptSpec(**values)


# --- Docker -------------------------------------------------------------------------------------

def require_docker() -> None:
    """Skip (locally) or fail (CI, FASTFLOW_REQUIRE_DOCKER=1) when no Docker engine answers."""
    if docker_executor.docker_available():
        return
    if os.environ.get("FASTFLOW_REQUIRE_DOCKER"):
        pytest.fail("Docker tests must run in CI, but no Docker engine answers")
    pytest.skip("no Docker engine answers (start dockerd)")


def containers_of(run_id: str) -> list:
    """Every container (running or not) labelled with `run_id`."""
    return docker_executor.connect().containers.list(
        ignore_removed=True, all=True, filters={"label": f"org.fastflow.run_id={run_id}"})


# --- the daemon ---------------------------------------------------------------------------------

def make_intake(state_dir: Path, max_queued: int = 100,
                clock: Callable[[], datetime] = None) -> Intake:
    """A webhook intake on `state_dir` as the daemon builds it (its accepted requests opened,
    handing to an inbox of the state dir), without HTTP or a daemon loop."""
    requests = AcceptedRequests(state_dir)
    requests.open()
    return Intake(requests, Inbox(state_dir), clock or utc_now, max_queued)


def make_daemon(source: str | Path, state_dir: Path, *, clock: Callable[[], datetime] = utc_now,
                environ: dict[str, str] | None = None, **options) -> Daemon:
    """A daemon (not started) following `source` (a path or URL) with host executors, reading
    `clock`; `environ` defaults to a copy of this process's, `options` go to ServeOptions."""
    environ = dict(os.environ) if environ is None else environ
    return Daemon(
        ServeOptions(str(source), state_dir, **options), clock=clock, environ=environ,
        executor_factory=lambda c: choose_executor(c, local=True, environ=environ, clock=clock),
    )



class ServeProcesses:
    """`fastflow serve` processes on one state dir, started, killed with SIGKILL and stopped by
    the test (the Docker, flow and supervision daemon tests' one harness): each start logs to
    `<logs>/serve-<n>.log` and returns once the daemon wrote its status."""

    def __init__(self, bare: Path, state: Path, cache: Path, logs: Path) -> None:
        self.bare, self.state, self.logs = bare, state, logs
        self.env = {**os.environ, "FASTFLOW_CACHE_DIR": str(cache)}
        self.procs: list[subprocess.Popen] = []

    def start(self, *args: str) -> subprocess.Popen:
        (self.state / "status.json").unlink(missing_ok=True)  # the new process writes its own
        out = open(self.logs / f"serve-{len(self.procs)}.log", "w")
        proc = subprocess.Popen(
            [sys.executable, "-m", "fastflow", "serve", "--repo", str(self.bare),
             "--state-dir", str(self.state), "--poll-interval", "1", *args],
            env=self.env, stdout=out, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        wait_for(lambda: (self.state / "status.json").exists(), what="the daemon's status")
        return proc

    def kill(self) -> None:
        proc = self.procs[-1]
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(40)
                except subprocess.TimeoutExpired:
                    proc.kill()

    def output(self) -> str:
        return "".join(p.read_text() for p in sorted(self.logs.glob("serve-*.log")))


def start_serve(source: str | Path, state_dir: Path, log: Path, *args: str,
                env: dict[str, str] | None = None) -> subprocess.Popen:
    """`python -m fastflow serve --repo source --state-dir state_dir *args` as a real process,
    its output in `log`; returns once it wrote its first heartbeat (`status.json`, removed
    first so an old one does not count). Kill it with `proc.send_signal(signal.SIGKILL)`."""
    (state_dir / "status.json").unlink(missing_ok=True)
    with open(log, "a") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "fastflow", "serve", "--repo", str(source),
             "--state-dir", str(state_dir), *args],
            env={**os.environ, **(env or {})}, stdout=out, stderr=subprocess.STDOUT)

    def started() -> bool:
        assert proc.poll() is None, f"fastflow serve exited:\n{log.read_text()}"
        return (state_dir / "status.json").exists()

    wait_for(started, timeout=60, what=f"the daemon's first heartbeat in {state_dir}")
    return proc

# --- the command tree ---------------------------------------------------------------------------

def command_paths(group: click.Group,
                  prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], click.Command]]:
    """Every command under `group`, depth first, with its path of names below `prefix`."""
    found = []
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        path = (*prefix, name)
        found.append((path, command))
        if isinstance(command, click.Group):
            found.extend(command_paths(command, path))
    return found


# --- the sample site (test_site, test_site_browser) ---------------------------------------------

SAMPLE_NOW = datetime(2026, 11, 22, 14, 30, tzinfo=timezone.utc)
MIB = 1024 * 1024

SAMPLE_PIPELINES = {
    "pipelines/etl_daily/main.py": "print('hi')\n",
    "pipelines/etl_daily/pipeline.json": json.dumps({
        "description": "Loads yesterday's orders into the warehouse.",
        "tags": ["etl", "nightly"],
        "schedule_cron": "0 3 * * 1-5",
        "mem_hard_limit": "512m", "mem_soft_limit": "384m",
        "cpu_hard_limit": 2, "cpu_soft_limit": 1.5,
        "retry_attempts": 2,
        "retry_strategy": {"type": "fixed_delay", "delay": 5},
    }),
    "pipelines/every_15/main.py": "print('tick')\n",
    "pipelines/every_15/pipeline.json": json.dumps({"schedule_interval_seconds": 900}),
    "pipelines/minimal/main.py": "print('min')\n",
    "pipelines/broken/main.py": "print('x')\n",
    "pipelines/broken/pipeline.json": json.dumps({"timeout": "soon"}),
}
STATUS_CYCLE = [RunStatus.SUCCEEDED] * 5 + [RunStatus.FAILED, RunStatus.SUCCEEDED,
                                            RunStatus.TIMED_OUT, RunStatus.SUCCEEDED,
                                            RunStatus.OOM_KILLED]

SAMPLE_LOG = (
    "2026-11-22T14:00:00.123Z stdout | starting <script>alert(1)</script>\n"
    "2026-11-22T14:00:01.000Z stderr | Traceback & <b>boom</b>\n"
    "--- 12345 bytes omitted by Fast-Flow (log cap 5.0 MiB) ---\n"
    "2026-11-22T14:00:02.000Z runner | attempt 2 of 3 starting after a 5s wait\n"
    "a line without prefix\n"
)


def sample_record(pipeline: str, i: int, status: RunStatus, **changes) -> RunRecord:
    """Run number `i` (0 = oldest) of `pipeline`, an hour apart, finishing before SAMPLE_NOW."""
    start = SAMPLE_NOW - timedelta(hours=200 - i)
    duration = 30.0 + (i % 7) * 11.5
    samples = tuple({"t": float(t), "mem": (100 + t * 3) * MIB, "cpu": round(0.3 + (t % 15) / 12, 3)}
                    for t in range(0, int(duration), 5))
    error = None if status is RunStatus.SUCCEEDED else ErrorInfo(status.value, f"{status.value} <b>")
    record = RunRecord(
        run_id=f"{start:%Y%m%dT%H%M%SZ}-{pipeline}-{i:04x}", pipeline=pipeline, status=status,
        trigger=Trigger("schedule", "etl_daily.cron", start) if i % 2 else Trigger("push"),
        commit=CommitRef("0123456789abcdef0123456789abcdef01234567", "f" * 40),
        environment=Environment(image="fastflow-runner:py3.11", python="3.11.9", uv_version="0.4.0",
                                requirements_hash="abc123", resolved=("requests==2.32.3",)),
        limits={"mem_hard_limit": 512 * MIB, "mem_soft_limit": 384 * MIB,
                "cpu_hard_limit": 2.0, "cpu_soft_limit": 1.5},
        exit_code=0 if status is RunStatus.SUCCEEDED else 1, error=error,
        queued_at=start - timedelta(seconds=2), started_at=start,
        finished_at=start + timedelta(seconds=duration), duration_s=duration,
        attempts=(Attempt(1, start, start + timedelta(seconds=duration), 0, status),),
        resources=Resources(peak_memory_bytes=(100 + int(duration) * 3) * MIB,
                            cpu_mean_cores=0.8, cpu_max_cores=1.4, samples=samples),
        log=LogInfo(f"logs/{pipeline}/x.log", 120, False),
    )
    return dataclasses.replace(record, **changes)


def _retried_record() -> RunRecord:
    start = SAMPLE_NOW - timedelta(minutes=30)
    base = sample_record("etl_daily", 199, RunStatus.SUCCEEDED)
    attempts = (
        Attempt(1, start, start + timedelta(seconds=10), 1, RunStatus.FAILED),
        Attempt(2, start + timedelta(seconds=15), start + timedelta(seconds=25), 1,
                RunStatus.FAILED, wait_before_s=5.0),
        Attempt(3, start + timedelta(seconds=30), start + timedelta(seconds=60), 0,
                RunStatus.SUCCEEDED, wait_before_s=5.0),
    )
    events = ({"t": 20.0, "kind": "memory", "value": 400 * MIB, "limit": 384 * MIB},)
    return dataclasses.replace(
        base, attempts=attempts, log=LogInfo("logs/etl_daily/x.log", 6_000_000, True),
        resources=dataclasses.replace(base.resources, soft_limit_events=events))


def build_sample(tmp_path: Path, runs: int = 120):
    """Real pipelines discovered from files + realistic records: (data, runs_by_pipeline, logs)."""
    root = write_files(tmp_path / "repo", SAMPLE_PIPELINES)
    found = discover(root, default_repo_config())
    schedules = check_schedules(None, found.pipelines, root=root, invalid_pipelines=found.invalid)
    by_pipeline: dict[str, list] = {}
    for s in schedules.schedules:
        by_pipeline.setdefault(s.pipeline, []).append(s)
    etl = [sample_record("etl_daily", i, STATUS_CYCLE[i % len(STATUS_CYCLE)])
           for i in range(runs - 1)]
    etl.append(_retried_record())
    etl.reverse()  # newest first
    quick = [sample_record("every_15", i, s) for i, s in enumerate(
        [RunStatus.SUCCEEDED, RunStatus.CANCELLED, RunStatus.LOST, RunStatus.SKIPPED,
         RunStatus.FAILED])][::-1]
    runs_by_pipeline = {"etl_daily": etl, "every_15": quick}
    data = SiteData(
        now=SAMPLE_NOW, pipelines=found.pipelines, invalid=found.invalid,
        config_problems=[Problem(".fastflow/schedules.yaml", "schedules[2].cron",
                                 '"61 * * * *" is not a valid cron <expression>')],
        summaries={name: summarize_runs(r) for name, r in runs_by_pipeline.items()},
        next_runs={"etl_daily": (datetime(2026, 11, 23, 3, 0, tzinfo=timezone.utc), "UTC"),
                   "every_15": (SAMPLE_NOW + timedelta(minutes=15), "Europe/Berlin")},
        schedules=by_pipeline, heartbeat=SAMPLE_NOW - timedelta(seconds=30), title="Acme pipelines")
    logs = {r.run_id: SAMPLE_LOG for rs in runs_by_pipeline.values() for r in rs}
    return data, runs_by_pipeline, logs


SAMPLE_FLOW_RUN = "20261202T083000Z-weather-7f3a09c2"


def sample_flow_record(flow_run_id: str = SAMPLE_FLOW_RUN, status: str = "failed") -> dict:
    """A flow run record (its JSON, as on the results branch) of flow `weather`: two parallel
    tasks (one succeeded, one failed after a retry), a join skipped because of the failure and a
    `when: always` report that ran."""
    at = datetime(2026, 12, 2, 8, 30, tzinfo=timezone.utc)
    stamp, suffix = flow_run_id[:16], flow_run_id.rsplit("-", 1)[1]

    def run_id(task: str) -> str:
        return f"{stamp}-weather.{task}-{suffix}"

    tasks = (
        TaskState("get_a", "weather.get_a", status="succeeded", run_id=run_id("get_a"),
                  attempts=1, duration_s=3.2, started_at=at, finished_at=at),
        TaskState("get_b", "weather.get_b", status="failed", run_id=run_id("get_b"),
                  attempts=2, duration_s=65, error=ErrorInfo("exit", "exit code 1")),
        TaskState("merge", "weather.merge", ("get_a", "get_b"), status="skipped",
                  reason="get_b failed"),
        TaskState("report", "weather.report", ("merge",), when="always", status="succeeded",
                  run_id=run_id("report"), attempts=1, duration_s=1.0),
    )
    return FlowRunRecord(flow_run_id, "weather", tasks, status=status, trigger=Trigger("manual"),
                         params={"day": "2026-12-01"}, started_at=at,
                         finished_at=at + timedelta(seconds=70), duration_s=70.0).to_json()


# --- notification receivers (loopback) -----------------------------------------------------------


class JsonReceiver:
    """A real HTTP server on loopback for the JSON-webhook URL form (`json://127.0.0.1:PORT/...`):
    it keeps every POST (`received`: path and JSON body). `status` is what it answers; `stop()`
    closes it (a receiver that is down refuses connections)."""

    def __init__(self) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        receiver = self
        self.received: list[tuple[str, dict]] = []
        self.status = 200

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server spelling
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.received.append((self.path, json.loads(body or b"{}")))
                self.send_response(receiver.status)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path: str = "hook") -> str:
        return f"json://127.0.0.1:{self.port}/{path}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class MailReceiver:
    """A real SMTP server (aiosmtpd) on loopback: `messages` holds each mail as
    (from, [to], the message text)."""

    def __init__(self) -> None:
        from aiosmtpd.controller import Controller

        receiver = self
        self.messages: list[tuple[str, list[str], str]] = []

        class Handler:
            async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's
                receiver.messages.append((envelope.mail_from, list(envelope.rcpt_tos),
                                          envelope.content.decode("utf-8", "replace")))
                return "250 OK"

        self.port = free_port()
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def url(self, to: str = "ops@example.org") -> str:
        return f"mailto://127.0.0.1:{self.port}?from=fastflow@example.org&to={to}&mode=insecure"

    def stop(self) -> None:
        self.controller.stop()


# --- Docker Swarm -------------------------------------------------------------------------------

def host_address() -> str:
    """The host's address on its default route (no packet is sent), else 127.0.0.1: the Swarm
    manager advertises it, so a second engine in its own network namespace reaches it too."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.254", 9))
            return probe.getsockname()[0]
        except OSError:
            return "127.0.0.1"


SWARM_USERS = Path(tempfile.gettempdir()) / "fastflow-swarm-users"  # pids of sessions using it


@contextlib.contextmanager
def _swarm_users():
    """The list of live test processes using the engine's swarm, under a file lock."""
    with open(SWARM_USERS.with_suffix(".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            pids = {int(p) for p in SWARM_USERS.read_text().split()} if SWARM_USERS.exists() else set()
        except ValueError:
            pids = set()
        users = {pid for pid in pids if _alive(pid)}
        yield users
        SWARM_USERS.write_text(" ".join(str(pid) for pid in sorted(users)))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def one_node_swarm(advertise_addr: str | None = None):
    """The CI engine as a one-node Swarm manager inside the block; the last test process using
    it ALWAYS leaves swarm mode afterwards (`docker swarm leave --force`): test sessions running
    at the same time on one engine share the swarm (`SWARM_USERS`, dead ones pruned) instead of
    pulling it from under each other. Test code may shell out to docker; other tests keep using
    the same engine meanwhile, so nothing else about dockerd is changed."""
    require_docker()
    advertise_addr = advertise_addr or host_address()
    with _swarm_users() as users:
        state = subprocess.run(["docker", "info", "--format", "{{.Swarm.LocalNodeState}}"],
                               capture_output=True, text=True, check=True).stdout.strip()
        if state != "active":
            subprocess.run(["docker", "swarm", "init", "--advertise-addr", advertise_addr],
                           capture_output=True, text=True, check=True)
        users.add(os.getpid())
    try:
        yield
    finally:
        with _swarm_users() as users:
            users.discard(os.getpid())
            if not users:
                subprocess.run(["docker", "swarm", "leave", "--force"], capture_output=True,
                               text=True)


def services_of(run_id: str) -> list:
    """Every Swarm service labelled with `run_id`."""
    return docker_executor.connect().api.services(
        filters={"label": f"org.fastflow.run_id={run_id}"})


_CONTAINERD_CONFIG = """version = 2
root = "{base}/c-root"
state = "{base}/c-state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "{base}/containerd.sock"
[ttrpc]
  address = "{base}/containerd.sock.ttrpc"
[debug]
  address = "{base}/containerd-debug.sock"
"""


@dataclasses.dataclass
class SecondEngine:
    """A second Docker engine on this machine, joined to the CI engine's swarm as a worker."""

    name: str  # its host name (a UTS namespace of its own), the Swarm node's name
    url: str  # unix:///.../docker.sock
    base: Path  # its data root, exec root, socket and containerd live under it
    started_s: float  # seconds from nothing to an engine that answers
    joined_s: float


@contextlib.contextmanager
def second_swarm_node(name: str = "fastflow-node2"):
    """A real second node (inside a running `one_node_swarm`): its own containerd and dockerd
    with their own data root, exec root and socket, in a network namespace of their own joined
    to the host by a veth pair (10.231.0.1 host side, 10.231.0.2 node side; the node routes
    through the host, so it reaches the manager's advertised address), and a UTS namespace with
    `name` as its host name. Joined as a worker; at the end it leaves, is removed from the
    swarm, stopped, and its namespace, links and files are gone."""
    tag = f"{os.getpid() % 100000}"
    netns, host_if, node_if = f"ff{tag}", f"ffh{tag}", f"ffc{tag}"
    base = Path(tempfile.mkdtemp(prefix="ffn-", dir="/tmp"))  # short: unix socket paths
    procs: list[subprocess.Popen] = []

    def sh(*cmd: str) -> None:
        subprocess.run(cmd, check=True, capture_output=True, text=True)

    def inside(command: str, log: str) -> subprocess.Popen:
        proc = subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{netns}", "unshare", "--uts", "sh", "-c",
             f"hostname {name}; exec {command}"],
            stdout=open(base / log, "w"), stderr=subprocess.STDOUT, start_new_session=True)
        procs.append(proc)
        return proc

    url = f"unix://{base}/docker.sock"
    client = None
    try:
        begin = time.monotonic()
        sh("ip", "netns", "add", netns)
        sh("ip", "link", "add", host_if, "type", "veth", "peer", "name", node_if)
        sh("ip", "link", "set", node_if, "netns", netns)
        sh("ip", "addr", "add", "10.231.0.1/24", "dev", host_if)
        sh("ip", "link", "set", host_if, "up")
        for cmd in (("addr", "add", "10.231.0.2/24", "dev", node_if), ("link", "set", node_if, "up"),
                    ("link", "set", "lo", "up"), ("route", "add", "default", "via", "10.231.0.1")):
            sh("ip", "netns", "exec", netns, "ip", *cmd)
        (base / "containerd.toml").write_text(_CONTAINERD_CONFIG.format(base=base))
        inside(f"containerd -c {base}/containerd.toml", "containerd.log")
        wait_for(lambda: (base / "containerd.sock").exists(), timeout=30, what="containerd")
        inside(f"dockerd --data-root {base}/data --exec-root {base}/exec -H {url} "
               f"--pidfile {base}/docker.pid --containerd {base}/containerd.sock "
               f"--cgroup-parent {netns}", "dockerd.log")
        wait_for(lambda: docker_executor.docker_available(base_url=url), timeout=60,
                 what=f"the second engine:\n{(base / 'dockerd.log').read_text()[-2000:]}")
        client = docker_executor.connect(base_url=url)
        started = time.monotonic() - begin
        manager = docker_executor.connect()
        token = manager.api.inspect_swarm()["JoinTokens"]["Worker"]
        address = manager.api.info()["Swarm"]["NodeAddr"]
        client.api.join_swarm([f"{address}:2377"], token, advertise_addr="10.231.0.2")
        wait_for(lambda: any(n["Description"]["Hostname"] == name and n["Status"]["State"] == "ready"
                             for n in manager.api.nodes()), timeout=60, what=f"{name} ready")
        yield SecondEngine(name, url, base, round(started, 2), round(time.monotonic() - begin - started, 2))
    finally:
        if client is not None:
            try:
                client.api.leave_swarm(force=True)
            except Exception:  # noqa: BLE001 - tearing down what may be half made
                pass
        subprocess.run(["docker", "node", "rm", "--force", name], capture_output=True)
        for proc in reversed(procs):  # dockerd first, then containerd (and their shims)
            try:
                os.killpg(proc.pid, 15)
                proc.wait(30)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(proc.pid, 9)
                except ProcessLookupError:
                    pass
        subprocess.run(["ip", "netns", "del", netns], capture_output=True)
        subprocess.run(["ip", "link", "del", host_if], capture_output=True)
        subprocess.run(["umount", "-R", str(base)], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)
