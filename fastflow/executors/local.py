"""`LocalExecutor`: run one attempt as a host process tree, under the contract of `base`.

The attempt is `uv run ...` (see `base.uv_command`) started in the pipeline folder in a new
session, so the attempt's processes share one session and process group; stopping an attempt
(timeout or cancel) signals that whole tree: SIGTERM, up to `spec.grace_period` seconds for it
to go, then SIGKILL. Like a container whose main process ended, processes left behind after
the main process exits are killed too: nothing of an attempt outlives it. The attempt runs
under `reaper` (a child subreaper), so a process that left the session (setsid and a double
fork) is still its descendant and is signalled with the rest.

Output is read line by line from two reader threads (stdout, stderr) and handed to the sink as
`OutputLine`s; a line longer than `max_line_bytes` is handed over in pieces, and the last line
is delivered even without its newline. An exit by signal N is reported as exit code 128 + N
(the shell's and Docker's convention: 137 for SIGKILL, 143 for SIGTERM).

Limits: the host executor enforces no hard limits (`cpu_hard_limit`, `mem_hard_limit`); only
the Docker executor does. When a spec asks for them, a warning is logged and the attempt runs
unlimited; `oom_killed` is therefore never reported here. Memory and CPU use of the tree are
sampled from /proc (Linux) for the record's `resources`, with soft-limit events.

Pre-heat (`preheat`) runs the attempt's `uv run` without the program, filling the host's uv
cache, the one a later run of the same requirements uses.

The child's environment is `base_env` (a minimal host environment, see `host_base_env`, chosen
by the caller: the CLI is the only module that reads `os.environ`) overlaid with `spec.env`
and `FASTFLOW_ROUTE_FILE`, a file in a per-attempt temporary folder removed afterwards (and, for
a webhook run, `FASTFLOW_WEBHOOK_PAYLOAD`: the path of the stored body itself).
"""
from __future__ import annotations

import codecs
import errno
import hashlib
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Mapping

from fastflow.errors import ExecutorError
from fastflow.executors import reaper
from fastflow.executors.base import (
    DEFAULT_PREHEAT_TIMEOUT,
    NOTEBOOK_RUNNER,
    RUNNER,
    STDERR,
    STDOUT,
    WEBHOOK_PAYLOAD_ENV,
    AttemptResult,
    AttemptSpec,
    Clock,
    Executor,
    OutputLine,
    OutputSink,
    PreheatJob,
    PreheatOutcome,
    missing_requirements,
    preheat_failure,
    read_route,
    requirements_problem,
    soft_limit_line,
    uv_command,
    with_uv_warnings,
    workspace_env,
)
from fastflow.model import Limits, RunStatus
from fastflow.record import Environment, ErrorInfo, Resources

logger = logging.getLogger(__name__)

DEFAULT_MAX_LINE_BYTES = 64 * 1024

_BASE_ENV_KEYS = {
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TERM",
    "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE",
    "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY",
    "http_proxy", "https_proxy", "no_proxy", "all_proxy",
    "XDG_CACHE_HOME", "XDG_DATA_HOME", "XDG_CONFIG_HOME", "XDG_BIN_HOME",
}
_BASE_ENV_PREFIXES = ("LC_", "UV_")


def host_base_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The part of a host environment an attempt inherits: PATH, HOME, locale, CA bundles, proxies,
    XDG folders and `UV_*` settings; nothing else (no credentials, no VIRTUAL_ENV)."""
    return {
        k: v
        for k, v in environ.items()
        if k in _BASE_ENV_KEYS or k.startswith(_BASE_ENV_PREFIXES)
    }


def _exit_code(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode


class LocalExecutor(Executor):
    """Runs attempts as host processes; see the module docstring for what it does and does not."""

    name = "local"

    def __init__(
        self,
        base_env: Mapping[str, str],
        *,
        clock: Clock,
        uv: str = "uv",
        poll_interval: float = 0.05,
        sample_interval: float = 0.5,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    ) -> None:
        self.base_env = dict(base_env)
        self.clock = clock
        self.uv = uv
        self.poll_interval = poll_interval
        self.sample_interval = sample_interval
        self.max_line_bytes = max_line_bytes
        self._versions: dict[tuple[str, str | None], str | None] = {}
        self._uv_version: str | None = None

    def execute(
        self, spec: AttemptSpec, sink: OutputSink, cancel: threading.Event
    ) -> AttemptResult:
        """Run the attempt to its end and return how it ended (see `base` for the contract)."""
        started = self.clock()
        if cancel.is_set():
            return AttemptResult(
                RunStatus.CANCELLED, None, started, self.clock(),
                ErrorInfo("cancelled", "cancelled before the attempt started"),
            )
        self._warn_hard_limits(spec)
        tmp = Path(tempfile.mkdtemp(prefix=f"fastflow-{spec.pipeline}-"))
        try:
            route_file = tmp / "route"
            route_file.touch()
            proc = self._start(spec, route_file)
            readers = [
                self._start_reader(proc.stdout, STDOUT, sink),
                self._start_reader(proc.stderr, STDERR, sink),
            ]
            status, error, sampler = self._supervise(proc, spec, cancel, sink)
            self._join_readers(readers, spec)
            finished = self.clock()
            exit_code = _exit_code(proc.returncode)
            if status is None:
                status = RunStatus.SUCCEEDED if exit_code == 0 else RunStatus.FAILED
            return AttemptResult(
                status=status,
                exit_code=exit_code,
                started_at=started,
                finished_at=finished,
                error=error,
                route=read_route(route_file),
                resources=sampler.resources(),
                environment=self._environment(spec),
            )
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def preheat(self, job: PreheatJob) -> PreheatOutcome:
        """Fill the host's uv cache with `job`'s requirements: the same `uv run` a run makes,
        minus the program, so the run finds everything there. uv's cache is not ours to
        mark, so a repeat runs uv again (quickly: it finds what it installed)."""
        if not (job.workdir / job.requirements).is_file():
            raise missing_requirements(job.workdir, job.requirements)
        refused = requirements_problem(job)
        if refused:
            return PreheatOutcome(False, refused)
        cmd = [self.uv, "run", "--no-project"]
        if job.python_version:
            cmd += ["--python", job.python_version]
        cmd += ["--with-requirements", job.requirements, "python", "-c", "pass"]
        begin = time.monotonic()
        try:
            proc = subprocess.run(cmd, cwd=job.workdir, env=self.base_env, capture_output=True,
                                  text=True, timeout=DEFAULT_PREHEAT_TIMEOUT)
        except OSError as exc:
            raise ExecutorError(f"cannot start {cmd[0]!r} to pre-heat {job.pipeline!r}: "
                                f"{exc.strerror}; install uv (pip install uv)") from exc
        except subprocess.TimeoutExpired:
            reason = f"pre-heat timed out after {DEFAULT_PREHEAT_TIMEOUT:g}s"
            return PreheatOutcome(False, preheat_failure(job, reason), None, DEFAULT_PREHEAT_TIMEOUT)
        duration = round(time.monotonic() - begin, 3)
        if proc.returncode == 0:
            note = with_uv_warnings(f"pre-heated in {duration:.1f}s", proc.stderr)
            return PreheatOutcome(True, note, None, duration)
        return PreheatOutcome(False, preheat_failure(job, proc.stderr), None, duration)

    def _warn_hard_limits(self, spec: AttemptSpec) -> None:
        asked = [
            f"{name}={value}"
            for name, value in (
                ("cpu_hard_limit", spec.limits.cpu_hard_limit),
                ("mem_hard_limit", spec.limits.mem_hard_limit),
            )
            if value is not None
        ]
        if asked:
            logger.warning(
                "%s: %s not enforced by the local executor (only Docker enforces hard limits); "
                "the attempt runs without them",
                spec.pipeline,
                ", ".join(asked),
            )

    def _start(self, spec: AttemptSpec, route_file: Path) -> subprocess.Popen:
        if not spec.workdir.is_dir():
            raise ExecutorError(
                f"pipeline folder {spec.workdir} does not exist; cannot run {spec.pipeline!r}"
            )
        env = {**self.base_env, **spec.env, "FASTFLOW_ROUTE_FILE": str(route_file)}
        if spec.webhook_payload is not None:
            env[WEBHOOK_PAYLOAD_ENV] = str(spec.webhook_payload)
        if spec.workspace is not None:
            env.update(workspace_env(spec, str(spec.workspace)))
        cmd = uv_command(spec, str(NOTEBOOK_RUNNER), self.uv)
        # Under the reaper (see fastflow/executors/reaper.py): processes that leave the session
        # stay its descendants. It execs the program by path: find it as Popen would have.
        found = shutil.which(cmd[0], path=os.pathsep.join(os.get_exec_path(env)))
        try:
            if found is None:
                raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), cmd[0])
            return subprocess.Popen(
                [sys.executable, "-I", "-S", str(REAPER), found, *cmd[1:]],
                cwd=spec.workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as exc:
            raise ExecutorError(
                f"cannot start {cmd[0]!r} for pipeline {spec.pipeline!r}: {exc.strerror}; "
                "install uv (pip install uv) and make sure it is on PATH"
            ) from exc

    def _start_reader(self, pipe: IO[bytes] | None, stream: str, sink: OutputSink) -> threading.Thread:
        thread = threading.Thread(
            target=self._pump, args=(pipe, stream, sink), name=f"fastflow-{stream}", daemon=True
        )
        thread.start()
        return thread

    def _pump(self, pipe: IO[bytes] | None, stream: str, sink: OutputSink) -> None:
        """Read `pipe` to its end, one line (or `max_line_bytes` piece) at a time, into `sink`."""
        assert pipe is not None
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        failed = False
        with pipe:
            while True:
                chunk = pipe.readline(self.max_line_bytes)
                text = decoder.decode(chunk, final=not chunk)
                if text:
                    line = text[:-1] if text.endswith("\n") else text
                    if line.endswith("\r"):
                        line = line[:-1]
                    try:
                        sink(OutputLine(stream, line, self.clock()))
                    except Exception:  # a broken sink must not stall the child on a full pipe
                        if not failed:
                            logger.exception("output sink failed; continuing to drain %s", stream)
                        failed = True
                if not chunk:
                    return

    def _supervise(
        self, proc: subprocess.Popen, spec: AttemptSpec, cancel: threading.Event, sink: OutputSink
    ) -> tuple[RunStatus | None, ErrorInfo | None, TreeSampler]:
        """Wait for the process, sampling resources; stop the tree on timeout or cancel."""
        sampler = TreeSampler(proc.pid, spec.limits, time.monotonic())
        begin = time.monotonic()
        deadline = begin + spec.timeout if spec.timeout > 0 else None
        next_sample = begin
        while True:
            try:
                proc.wait(timeout=self.poll_interval)
                break
            except subprocess.TimeoutExpired:
                pass
            now = time.monotonic()
            if now >= next_sample:
                for event in sampler.sample(now):  # an excess is told at once (notifications)
                    self._tell(sink, soft_limit_line(event, self.clock()))
                next_sample = now + self.sample_interval
            if cancel.is_set():
                self._note(sink, "cancel requested: stopping the attempt's processes")
                self._stop_tree(proc, spec.grace_period, sink)
                return RunStatus.CANCELLED, ErrorInfo("cancelled", "cancelled while running"), sampler
            if deadline is not None and now >= deadline:
                self._note(sink, f"timeout of {spec.timeout:g}s reached: stopping the attempt")
                self._stop_tree(proc, spec.grace_period, sink)
                message = f"timed out after {spec.timeout:g}s (timeout {spec.timeout:g}s)"
                return RunStatus.TIMED_OUT, ErrorInfo("timeout", message), sampler
        leftovers = live_session_pids(proc.pid)
        if leftovers:
            self._note(sink, f"main process ended; killing {len(leftovers)} leftover process(es)")
            self._kill_tree(proc.pid)
        return None, None, sampler

    def _stop_tree(self, proc: subprocess.Popen, grace: float, sink: OutputSink) -> None:
        """SIGTERM the tree, wait up to `grace` seconds for all of it to end, then SIGKILL."""
        _signal_tree(proc.pid, signal.SIGTERM)
        end = time.monotonic() + grace
        while time.monotonic() < end:
            if proc.poll() is not None and not live_session_pids(proc.pid):
                return
            time.sleep(0.02)
        self._note(sink, f"still running {grace:g}s after SIGTERM: sending SIGKILL")
        self._kill_tree(proc.pid)
        proc.wait()

    def _kill_tree(self, sid: int) -> None:
        # The reaper's descendants first: killed first, the reaper would hand them to init.
        for _ in range(100):
            escaped = reaper.descendant_pids(sid)
            for pid in escaped:
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            if not escaped:
                break
            time.sleep(0.02)
        # Repeat: a process may fork between the scan and the signal.
        for _ in range(100):
            _signal_tree(sid, signal.SIGKILL)
            if not live_session_pids(sid):
                break
            time.sleep(0.02)

    def _join_readers(self, readers: list[threading.Thread], spec: AttemptSpec) -> None:
        for thread in readers:
            thread.join(timeout=5.0)
            if thread.is_alive():
                # Only a process that left the session (setsid) can still hold the pipe open.
                logger.warning(
                    "%s attempt %d: output pipe still open after the attempt ended; "
                    "a process escaped the attempt's session",
                    spec.pipeline,
                    spec.attempt,
                )

    def _note(self, sink: OutputSink, text: str) -> None:
        self._tell(sink, OutputLine(RUNNER, text, self.clock()))

    def _tell(self, sink: OutputSink, line: OutputLine) -> None:
        try:
            sink(line)
        except Exception:
            logger.exception("output sink failed")

    def _environment(self, spec: AttemptSpec) -> Environment:
        return Environment(
            python=self._python_version(spec),
            uv_version=self._uv_version_string(),
            requirements_hash=_file_hash(spec.workdir / spec.requirements)
            if spec.requirements
            else None,
        )

    def _uv_version_string(self) -> str | None:
        if self._uv_version is None:
            out = self._probe([self.uv, "--version"], None)
            match = re.match(r"uv (\S+)", out or "")
            self._uv_version = match.group(1) if match else None
        return self._uv_version

    def _python_version(self, spec: AttemptSpec) -> str | None:
        key = (str(spec.workdir), spec.python_version)
        if key not in self._versions:
            cmd = [self.uv, "run", "--no-project"]
            if spec.python_version:
                cmd += ["--python", spec.python_version]
            cmd += ["python", "-c", "import platform; print(platform.python_version())"]
            out = self._probe(cmd, spec.workdir)
            self._versions[key] = out.strip() if out else None
        return self._versions[key]

    def _probe(self, cmd: list[str], cwd: Path | None) -> str | None:
        """Output of a short helper command, or None when it fails (the record shows null)."""
        try:
            done = subprocess.run(
                cmd, cwd=cwd, env=self.base_env, capture_output=True, text=True, timeout=60
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            logger.debug("probe %s failed: %s", cmd, exc)
            return None
        return done.stdout if done.returncode == 0 else None


REAPER = Path(reaper.__file__)


def _signal_tree(sid: int, sig: int) -> None:
    """Send `sig` to every descendant of the reaper `sid` (also those that left its session),
    to the process group `sid` and to every live process of session `sid`."""
    for pid in reaper.descendant_pids(sid):
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
    try:
        os.killpg(sid, sig)
    except (ProcessLookupError, PermissionError):
        pass
    for pid in live_session_pids(sid):
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _file_hash(path: Path) -> str | None:
    try:
        return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


# --- the attempt's process tree, seen through /proc (Linux; elsewhere these find nothing) ---

_PROC = Path("/proc")
_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_MAX_SAMPLES = 240


def _session_stats(sid: int) -> list[tuple[int, int, int]]:
    """(pid, cpu ticks, rss bytes) of every live, non-zombie process of session `sid`."""
    found = []
    try:
        entries = [e for e in os.listdir(_PROC) if e.isdigit()]
    except OSError:
        return found
    for entry in entries:
        try:
            raw = (_PROC / entry / "stat").read_bytes()
        except OSError:
            continue  # ended while we looked
        # Fields after the command name, which may itself contain spaces and parentheses.
        fields = raw[raw.rfind(b")") + 2 :].split()
        if len(fields) < 22 or fields[0] in (b"Z", b"X") or int(fields[3]) != sid:
            continue
        ticks = int(fields[11]) + int(fields[12])
        found.append((int(entry), ticks, int(fields[21]) * _PAGE_SIZE))
    return found


def live_session_pids(sid: int) -> list[int]:
    """Pids of the live processes of session `sid` (zombies excluded: they are dead)."""
    return [pid for pid, _, _ in _session_stats(sid)]


class TreeSampler:
    """Samples memory (sum of RSS) and CPU (cores) of an attempt's session for the record.

    CPU is the growth of the live processes' user+system time between two samples; a process
    that ended between samples takes its last interval with it, so the figures are a lower bound.
    """

    def __init__(self, sid: int, limits: Limits, start: float) -> None:
        self.sid = sid
        self.limits = limits
        self.start = start
        self.peak_memory = 0
        self.cpu_max = 0.0
        self.cpu_total = 0.0  # core-seconds
        self.samples: list[dict] = []
        self.events: list[dict] = []
        self._last: tuple[float, dict[int, int]] | None = None
        self._over: set[str] = set()
        self._first: float | None = None

    def sample(self, now: float) -> list[dict]:
        """Take one sample at monotonic time `now`; returns the soft-limit excursions it
        started (their events)."""
        known = len(self.events)
        stats = _session_stats(self.sid)
        memory = sum(rss for _, _, rss in stats)
        ticks = {pid: t for pid, t, _ in stats}
        cpu = 0.0
        if self._last is not None:
            then, before = self._last
            grown = sum(max(t - before.get(pid, 0), 0) for pid, t in ticks.items())
            seconds = grown / _CLK_TCK
            cpu = seconds / max(now - then, 1e-6)
            self.cpu_total += seconds
        self._last = (now, ticks)
        if self._first is None:
            self._first = now
        self.peak_memory = max(self.peak_memory, memory)
        self.cpu_max = max(self.cpu_max, cpu)
        t = round(now - self.start, 2)
        self.samples.append({"t": t, "mem": memory, "cpu": round(cpu, 3)})
        if len(self.samples) > _MAX_SAMPLES:
            self.samples = self.samples[::2]
        self._check_soft("memory", memory, self.limits.mem_soft_limit, t)
        self._check_soft("cpu", cpu, self.limits.cpu_soft_limit, t)
        return [dict(e) for e in self.events[known:]]

    def _check_soft(self, kind: str, value: float, limit: float | None, t: float) -> None:
        # One event per crossing from under to over the soft limit, not one per sample.
        if limit is None or value <= limit:
            self._over.discard(kind)
            return
        if kind not in self._over and len(self.events) < 100:
            self.events.append({"t": t, "kind": kind, "value": value, "limit": limit})
        self._over.add(kind)

    def resources(self) -> Resources:
        """What was seen, for the record (all None when nothing could be sampled)."""
        if not self.samples:
            return Resources()
        measured = self._first is not None and self._last is not None and len(self.samples) > 1
        elapsed = self._last[0] - self._first if measured else 0.0  # type: ignore[index]
        return Resources(
            peak_memory_bytes=self.peak_memory,
            cpu_mean_cores=round(self.cpu_total / elapsed, 3) if elapsed > 0 else None,
            cpu_max_cores=round(self.cpu_max, 3) if measured else None,
            samples=tuple(self.samples),
            soft_limit_events=tuple(self.events),
        )
