"""One run's life: environment, attempts, retries, captured log and the run record.

`run_pipeline(request, executor, clock=...)` drives a run from start to terminal state and
returns a `RunOutcome`: the full `RunRecord` and the captured (capped, masked) log text, which
the caller stores (`logs/<pipeline>/<YYYY>/<MM>/<run_id>.log` on the results branch, or a
file for `fastflow run`). Nothing here prints or reads the process environment.

Decisions, for users and for the code that calls this:
- Effective settings: a run configuration's `timeout` and `retry` replace the pipeline's when
  set; its `limits` override the pipeline's field by field.
- Retries: a run makes at most `retry.attempts + 1` attempts. `failed`, `timed_out` and
  `oom_killed` attempts are retried; a cancel never is. With `retry_on_exit_codes`, only
  `failed` attempts whose exit code is listed are retried (not timeouts, not OOM kills).
  A dependency failure that retrying cannot fix (uv finds no solution, a requirements file it
  cannot parse, an unknown Python) is not retried; a network failure of uv is.
- The wait before retry n is `RetryPolicy.wait_before_retry(n)`, spent in the injected
  `wait(seconds, cancel)`, which returns True when the cancel came during the wait: the run
  is then `cancelled` with the attempts made so far, and its `exit_code` is null.
- uv failures: when an attempt fails without a line on stdout (the program never ran) and
  uv wrote an `error: ...` line on stderr that is one of uv's environment errors, the error
  kind is `dependencies` (or `python` for an interpreter uv cannot find) and the message is
  uv's reason, naming the requirements file. "No line on stdout" is judged over the whole
  attempt, not by the order lines arrive in: stdout and stderr are read apart, so a program's
  stdout line may reach us after its stderr. A re-attached attempt (`recovery`) is judged by
  the same `UvFailureWatcher` and `attempt_error`.
- Downstream triggers (reported in the record, not run here): `downstream_to_fire` gives
  Fast-Flow's rule. Without `on_route`, `on_success` fires on `succeeded` and `on_failure` on
  `failed`, `timed_out` or `oom_killed`; with `on_route`, only a run that wrote one of its
  labels fires, on success (also when both flags are false, as in Fast-Flow) and, with
  `on_failure`, on a failure. A cancelled or lost run fires none.
- A bug (an unexpected exception in the attempt loop or from an executor) still ends in a
  record: `failed`, error kind `internal`, the exception's type and message; the traceback goes
  to Fast-Flow's own log (`logging`), the run's log gets one line.
- A webhook run (`RunRequest.webhook`): its payload file must still be there, else the run
  fails before any attempt (error kind `webhook`); the variables of the request's env that
  `env.webhook_env` refuses are left out, each named in the log with the reason.
"""
from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Callable, Mapping

from fastflow.defaults import DEFAULT_GRACE_PERIOD, DEFAULT_LOG_CAP_BYTES
from fastflow.errors import ConfigError, ExecutorError, SecretsError
from fastflow.executors.base import (
    STDERR,
    STDOUT,
    AttemptResult,
    AttemptSpec,
    Clock,
    Executor,
    OutputLine,
    OutputSink,
)
from fastflow.files import write_atomic
from fastflow.model import Limits, Pipeline, RetryPolicy, RunConfig, RunStatus
from fastflow.record import (
    Attempt,
    CommitRef,
    Environment,
    ErrorInfo,
    FlowTaskInput,
    LogInfo,
    Resources,
    RunRecord,
    Trigger,
    WebhookInput,
    new_run_id,
)
from fastflow.run.capture import LogCapture, Masker
from fastflow.run.env import RunContext, build_env, webhook_env
from fastflow.run.output import read_output

logger = logging.getLogger(__name__)
Wait = Callable[[float, threading.Event], bool]

# uv's first error line when it cannot prepare the environment (before the program runs).
# Those retrying cannot fix come first; network failures are retried like any failure.
_UV_PERMANENT = (
    "No solution found when resolving",
    "Failed to resolve",
    "Failed to parse",
    "File not found",
    "Failed to read",
    "Failed to build",
    "Distribution not found",
)
_UV_TRANSIENT = ("Failed to fetch", "Failed to download", "Request failed", "Failed to prepare")
_UV_PYTHON = ("No interpreter found", "No download found for request")


def wait_on_event(seconds: float, cancel: threading.Event) -> bool:
    """The default `wait`: sleep `seconds` unless cancelled; True when cancelled."""
    return cancel.wait(seconds)


@dataclass(frozen=True)
class RunSettings:
    """What a run uses once its run configuration is applied over the pipeline."""

    run_config: RunConfig | None
    timeout: float
    limits: Limits
    retry: RetryPolicy


def resolve_settings(pipeline: Pipeline, run_config_id: str | None) -> RunSettings:
    """Apply run configuration `run_config_id` (None: the pipeline's own settings)."""
    if run_config_id is None:
        return RunSettings(None, pipeline.timeout, pipeline.limits, pipeline.retry)
    try:
        rc = pipeline.run_config(run_config_id)
    except KeyError:
        known = ", ".join(r.id for r in pipeline.run_configs) or "none"
        metadata = pipeline.metadata_file.name if pipeline.metadata_file else "pipeline.json"
        raise ConfigError(
            f"pipeline {pipeline.name!r} has no run configuration {run_config_id!r} "
            f"({metadata}: schedules[].id; known: {known})"
        ) from None
    limits = pipeline.limits
    if rc.limits is not None:
        overrides = {k: v for k, v in vars(rc.limits).items() if v is not None}
        limits = replace(limits, **overrides)
    return RunSettings(
        rc,
        rc.timeout if rc.timeout is not None else pipeline.timeout,
        limits,
        rc.retry if rc.retry is not None else pipeline.retry,
    )


@dataclass(frozen=True)
class RunRequest:
    """Everything a run needs besides the executor. `workdir` (default: the pipeline's folder)
    is where it runs, e.g. an immutable snapshot of a commit; `log_path` goes in the record."""

    pipeline: Pipeline
    run_config_id: str | None = None
    trigger: Trigger = Trigger()
    trigger_env: Mapping[str, str] = field(default_factory=dict)
    secrets: Mapping[str, str] = field(default_factory=dict)
    commit: CommitRef = CommitRef()
    log_cap_bytes: int = DEFAULT_LOG_CAP_BYTES
    grace_period: float = DEFAULT_GRACE_PERIOD
    queued_at: datetime | None = None
    workdir: Path | None = None
    log_path: str | None = None
    # Decrypts the pipeline's secrets at run start (in memory only); a SecretsError it raises
    # fails the run before any attempt, with the reason. Its values join `secrets`.
    secrets_loader: Callable[[], Mapping[str, str]] | None = None
    # What a webhook request gives the run: payload file, headers, env (see the module doc).
    webhook: WebhookInput | None = None
    # What a flow run gives one of its tasks: args, workspace, inputs, params (docs/flows.md).
    flow: FlowTaskInput | None = None


@dataclass(frozen=True)
class RunOutcome:
    """What `run_pipeline` returns: the run record and the captured log (file contents)."""

    record: RunRecord
    log_text: str
    output: dict | None = None  # a flow task's output ($FASTFLOW_OUTPUT), when it wrote one


class UvFailureWatcher:
    """An `OutputSink` in front of another (the capture) that spots uv's own error, the one
    it writes when it cannot prepare the environment and the program never runs."""

    def __init__(self, sink: OutputSink) -> None:
        self.sink = sink
        self.saw_stdout = False
        self.lines: list[str] = []

    def __call__(self, line: OutputLine) -> None:
        self.sink(line)
        self.observe(line)

    def observe(self, line: OutputLine) -> None:
        """Take note of one line of the attempt without passing it on (lines already
        delivered, e.g. read back from a live log)."""
        if line.stream == STDOUT:
            self.saw_stdout = True
        elif line.stream == STDERR and not self.saw_stdout and len(self.lines) < 20:
            if self.lines or line.text.startswith("error: "):
                self.lines.append(line.text)

    def failure(self) -> tuple[str, str, bool] | None:
        """(kind, uv's reason, retryable) when uv failed to prepare the environment."""
        if not self.lines or self.saw_stdout:  # a line on stdout: the program ran
            return None
        first = self.lines[0][len("error: "):]
        if first.startswith(_UV_PYTHON):
            kind, retryable = "python", False
        elif first.startswith(_UV_PERMANENT):
            kind, retryable = "dependencies", False
        elif first.startswith(_UV_TRANSIENT):
            kind, retryable = "dependencies", True
        else:
            return None
        causes = []
        for text in self.lines[1:]:
            text = text.strip().removeprefix("cause:").removeprefix("╰─▶").strip()
            if text:
                causes.append(text)
        return kind, ": ".join([first, *causes]), retryable


def _requirements_name(pipeline: Pipeline) -> str | None:
    if pipeline.requirements is None:
        return None
    try:
        return str(Path(pipeline.requirements).relative_to(pipeline.path))
    except ValueError:
        return Path(pipeline.requirements).name


def attempt_error(
    result: AttemptResult, watcher: UvFailureWatcher, pipeline: Pipeline | None, masker: Masker
) -> tuple[ErrorInfo | None, bool]:
    """The error of an attempt as the record words it, and whether retrying it can help
    (before the retry policy): uv's own failure (read by `watcher`) before the exit code. Used
    for fresh attempts and re-attached ones alike; `pipeline` None (no longer known, on
    re-attach): the exit code only."""
    status = result.status
    if status is RunStatus.SUCCEEDED:
        return None, False
    if status is RunStatus.FAILED:
        uv = watcher.failure() if pipeline is not None else None
        if uv is not None:
            kind, reason, retryable = uv
            return ErrorInfo(kind, masker.mask(_uv_message(kind, reason, pipeline))), retryable
        entry = pipeline.entry if pipeline is not None else "the pipeline"
        message = f"{entry} exited with code {result.exit_code}"
        return result.error or ErrorInfo("exit_code", message), True
    defaults = {
        RunStatus.TIMED_OUT: ErrorInfo("timeout", "timed out"),
        RunStatus.OOM_KILLED: ErrorInfo("oom", "killed for using more memory than mem_hard_limit"),
        RunStatus.CANCELLED: ErrorInfo("cancelled", "cancelled"),
        RunStatus.LOST: ErrorInfo("lost", "the run's process or container vanished"),
    }
    error = result.error or defaults.get(status, ErrorInfo(status.value, status.value))
    return error, status.retryable


def _uv_message(kind: str, reason: str, pipeline: Pipeline) -> str:
    if kind == "python":
        wanted = pipeline.python_version or "the default Python"
        return f"uv could not find or install Python {wanted} for pipeline {pipeline.name!r}: {reason}"
    name = _requirements_name(pipeline)
    where = f"{name} ({pipeline.requirements})" if name else "its requirements"
    return f"uv could not install the requirements of pipeline {pipeline.name!r} from {where}: {reason}"


def should_retry(
    result: AttemptResult, retryable: bool, policy: RetryPolicy, attempt: int
) -> bool:
    """Whether attempt number `attempt` (1-based), which ended as `result`, is retried."""
    if attempt > policy.attempts or not retryable or not result.status.retryable:
        return False
    if policy.on_exit_codes is not None:
        return result.status is RunStatus.FAILED and result.exit_code in policy.on_exit_codes
    return True


def downstream_to_fire(pipeline: Pipeline, status: RunStatus, route: str | None) -> list[dict]:
    """The downstream triggers a run ending as `status` with `route` fires, Fast-Flow's rule
    (`_matches` of its downstream_triggers service) with our extensions:

    - without `on_route`: `on_success` fires on `succeeded`, `on_failure` on a failure
      (`failed`, `timed_out`, `oom_killed`);
    - with `on_route`: only when the run wrote one of its labels, and then on `succeeded`
      unless `on_success` is false, on a failure when `on_failure` is true; both false (the
      form Fast-Flow documents, `{"on_route": "x", "on_success": false}`) means on `succeeded`,
      as in Fast-Flow, which ignores the flags when `on_route` is set;
    - `cancelled`, `lost` and `skipped` fire nothing (the outcome is not the program's);
    - an inert trigger (its target is missing) never fires; two triggers to the same pipeline
      and run configuration fire once (as in Fast-Flow).

    Each entry is `{"pipeline", "run_config_id", "reason"}`; the daemon adds what it did
    (`run_id` of the run it started, or `skipped` with why).
    """
    succeeded, failed = status is RunStatus.SUCCEEDED, status.retryable
    fired: list[dict] = []
    seen: set[tuple[str, str | None]] = set()
    for trigger in pipeline.downstream:
        if trigger.inert_reason is not None or (trigger.pipeline, trigger.run_config_id) in seen:
            continue
        if trigger.on_route:
            if route is None or route not in trigger.on_route:
                continue
            on_success = trigger.on_success or not trigger.on_failure
            fires = (succeeded and on_success) or (failed and trigger.on_failure)
            reason = f"route {route}" if succeeded else f"failure, route {route}"
        else:
            fires = (succeeded and trigger.on_success) or (failed and trigger.on_failure)
            reason = "success" if succeeded else "failure"
        if fires:
            seen.add((trigger.pipeline, trigger.run_config_id))
            fired.append(
                {"pipeline": trigger.pipeline, "run_config_id": trigger.run_config_id, "reason": reason}
            )
    return fired


@dataclass
class _Progress:
    """What the attempt loop has produced so far."""

    attempts: list[Attempt] = field(default_factory=list)
    results: list[AttemptResult] = field(default_factory=list)
    error: ErrorInfo | None = None
    cancelled_waiting: bool = False


def run_pipeline(
    request: RunRequest,
    executor: Executor,
    *,
    clock: Clock,
    wait: Wait = wait_on_event,
    sink: OutputSink | None = None,
    cancel: threading.Event | None = None,
    run_id: str | None = None,
) -> RunOutcome:
    """Run a pipeline through its attempts and return its record and log (see module doc).

    `sink` receives every (masked) output line live, plus Fast-Flow's own `runner` lines;
    `cancel`, when set (e.g. from a Ctrl-C handler), stops the run: status `cancelled`.
    Raises `ConfigError` before anything runs for an unknown run configuration or a
    `FASTFLOW_*` variable in a user env.
    """
    cancel = cancel or threading.Event()
    pipeline = request.pipeline
    started = clock()
    run_id = run_id or new_run_id(pipeline.name, started)
    settings = resolve_settings(pipeline, request.run_config_id)
    if request.secrets_loader is not None:
        try:
            loaded = request.secrets_loader()
        except SecretsError as exc:
            return _refused(request, settings, run_id, started, clock(), sink,
                            ErrorInfo("secrets", str(exc)))
        request = replace(request, secrets={**request.secrets, **loaded}, secrets_loader=None)
    refused: list[str] = []
    if request.webhook is not None:
        payload = Path(request.webhook.payload_file)
        if not payload.is_file():
            return _refused(request, settings, run_id, started, clock(), sink, ErrorInfo(
                "webhook", f"the payload file {payload} of the webhook request is gone; the "
                "sender may deliver it again (a new delivery id starts a new run)"))
        allowed, refused = webhook_env(pipeline, request.webhook, request.secrets)
        request = replace(request, webhook=replace(request.webhook, env=allowed))
    build_env(pipeline, settings.run_config, request.trigger_env, request.secrets,
              _context(request, run_id, 1), request.webhook,
              request.flow)  # validates it before anything runs
    masker = Masker(request.secrets.values())
    capture = LogCapture(request.log_cap_bytes, forward=sink, masker=masker)
    for line in refused:
        capture.emit(line, clock())
    progress = _Progress()
    try:
        _run_attempts(request, settings, executor, capture, masker, clock, wait, cancel, run_id,
                      progress)
    except Exception as exc:  # a bug in Fast-Flow: the run still gets its record, saying so
        logger.exception("run %s failed inside Fast-Flow", run_id)
        progress.error = internal_error(exc, masker)
        capture.emit(f"the run failed inside Fast-Flow: {progress.error.message}", clock())
    output = _judge_output(request, run_id, progress, capture, clock)
    record = _make_record(request, settings, run_id, started, clock(), progress, capture)
    return RunOutcome(record, capture.text(), output)


def _judge_output(request: RunRequest, run_id: str, progress: _Progress, capture: LogCapture,
                  clock: Clock) -> dict | None:
    """A flow task's output once its last attempt succeeded: read and checked
    (`run.output`); a bad one turns the run `failed` with error kind `output`."""
    last = progress.results[-1] if progress.results else None
    if request.flow is None or last is None or last.status is not RunStatus.SUCCEEDED \
            or progress.error is not None:
        return None
    output, error = read_output(Path(request.flow.workspace), run_id, len(progress.results),
                                request.flow.output_max_bytes, request.flow.task)
    if error is not None:
        progress.results[-1] = replace(last, status=RunStatus.FAILED, error=error)
        progress.attempts[-1] = replace(progress.attempts[-1], status=RunStatus.FAILED)
        progress.error = error
        capture.emit(f"the run failed: {error.message}", clock())
    return output


def internal_error(exc: BaseException, masker: Masker) -> ErrorInfo:
    """The record's error for a bug: kind `internal`, `<ExceptionType>: <message>` (masked)."""
    return ErrorInfo("internal", masker.mask(f"{type(exc).__name__}: {exc}"))


def _refused(request: RunRequest, settings: RunSettings, run_id: str, started: datetime,
             finished: datetime, sink: OutputSink | None, error: ErrorInfo) -> RunOutcome:
    """A run that fails before any attempt (secrets refused, dependencies broken)."""
    capture = LogCapture(request.log_cap_bytes, forward=sink)
    capture.emit(f"the run cannot start: {error.message}", finished)
    progress = _Progress(error=error)
    record = _make_record(request, settings, run_id, started, finished, progress, capture)
    fired = downstream_to_fire(request.pipeline, RunStatus.FAILED, None)
    return RunOutcome(replace(record, status=RunStatus.FAILED, downstream=tuple(fired)),
                      capture.text())


def refuse_run(request: RunRequest, error: ErrorInfo, *, clock: Clock,
               sink: OutputSink | None = None, run_id: str | None = None) -> RunOutcome:
    """The record of a run that fails before its first attempt, for a reason found by the
    caller (e.g. its dependencies are broken): status `failed`, no attempts, the reason."""
    started = clock()
    settings = resolve_settings(request.pipeline, request.run_config_id)
    run_id = run_id or new_run_id(request.pipeline.name, started)
    return _refused(request, settings, run_id, started, clock(), sink, error)


def _context(request: RunRequest, run_id: str, attempt: int) -> RunContext:
    return RunContext(
        run_id=run_id,
        pipeline=request.pipeline.name,
        attempt=attempt,
        trigger=request.trigger.kind,
        run_config=request.run_config_id,
        commit=request.commit.sha,
    )


def attempt_spec(request: RunRequest, run_id: str, attempt: int) -> AttemptSpec:
    """The `AttemptSpec` attempt `attempt` of run `run_id` of `request` would execute, env and
    settings resolved as `run_pipeline` resolves them (what `fastflow flow run --dry-run`
    shows). `ConfigError` as at a run's start (an unknown run configuration, a FASTFLOW_ env)."""
    return _spec(request, resolve_settings(request.pipeline, request.run_config_id), run_id,
                 attempt)


def _spec(request: RunRequest, settings: RunSettings, run_id: str, n: int) -> AttemptSpec:
    pipeline = request.pipeline
    env = build_env(pipeline, settings.run_config, request.trigger_env, request.secrets,
                    _context(request, run_id, n), request.webhook, request.flow)
    return AttemptSpec(
        run_id=run_id,
        pipeline=pipeline.name,
        attempt=n,
        workdir=request.workdir or pipeline.path,
        entry=pipeline.entry,
        type=pipeline.type,
        python_version=pipeline.python_version,
        requirements=_requirements_name(pipeline),
        env=env,
        limits=settings.limits,
        timeout=settings.timeout,
        grace_period=request.grace_period,
        network=pipeline.network,
        placement=pipeline.placement,
        cells=pipeline.cells,
        log_cap_bytes=request.log_cap_bytes,
        webhook_payload=Path(request.webhook.payload_file) if request.webhook else None,
        hold=True,  # released once the attempt's summary line is written (see _attempts)
        args=request.flow.args if request.flow else (),
        workspace=Path(request.flow.workspace) if request.flow else None,
    )


def _run_attempts(
    request: RunRequest, settings: RunSettings, executor: Executor, capture: LogCapture,
    masker: Masker, clock: Clock, wait: Wait, cancel: threading.Event, run_id: str,
    progress: _Progress,
) -> None:
    """The attempt loop: wait, execute, judge, and decide whether to retry (into `progress`)."""
    total = settings.retry.attempts + 1
    for n in range(1, total + 1):
        wait_s = 0.0
        if n > 1:
            wait_s = settings.retry.wait_before_retry(n - 1)
            capture.emit(f"retry {n - 1}: attempt {n} of {total} starts in {wait_s:g}s", clock())
            if wait(wait_s, cancel) or cancel.is_set():
                capture.emit(f"cancelled while waiting before attempt {n}", clock())
                progress.cancelled_waiting = True
                progress.error = ErrorInfo("cancelled", f"cancelled while waiting before attempt {n}")
                break
        capture.emit(f"attempt {n} of {total} started", clock())
        watcher = UvFailureWatcher(capture)
        begun = clock()
        spec = _spec(request, settings, run_id, n)
        try:
            result = executor.execute(spec, watcher, cancel)
        except ExecutorError as exc:
            # The executor itself could not work: a failed run with the reason, never retried.
            result = AttemptResult(RunStatus.FAILED, None, begun, clock(),
                                   ErrorInfo("executor", masker.mask(str(exc))))
            retryable = False
            progress.error = result.error
        except Exception as exc:  # a bug in the executor: this attempt failed, never retried
            logger.exception("attempt %d of run %s failed inside Fast-Flow", n, run_id)
            result = AttemptResult(RunStatus.FAILED, None, begun, clock(), internal_error(exc, masker))
            retryable = False
            progress.error = result.error
        else:
            progress.error, retryable = attempt_error(result, watcher, request.pipeline, masker)
        progress.results.append(result)
        progress.attempts.append(
            Attempt(n, result.started_at, result.finished_at, result.exit_code, result.status, wait_s)
        )
        try:
            capture.emit(attempt_summary(n, total, result.status, result.exit_code, progress.error),
                         clock())
        finally:
            # Only now may the executor forget the attempt (its container goes): the summary
            # line is in the live log, where a daemon restarted after a kill -9 reads it back.
            executor.release(spec)
        if not should_retry(result, retryable, settings.retry, n):
            break


def attempt_summary(n: int, total: int, status: RunStatus, exit_code: int | None,
                    error: ErrorInfo | None) -> str:
    """The runner's line closing an attempt (`recovery` reads it back from a live log)."""
    text = f"attempt {n} of {total} {status.value}"
    if exit_code is not None:
        text += f" (exit code {exit_code})"
    return text + (f": {error.message}" if error else "")


def _make_record(
    request: RunRequest, settings: RunSettings, run_id: str, started: datetime,
    finished: datetime, progress: _Progress, capture: LogCapture,
) -> RunRecord:
    last = progress.results[-1] if progress.results else None
    if progress.error is not None and progress.error.kind == "internal":
        status, exit_code, route = RunStatus.FAILED, last and last.exit_code, None
    elif progress.cancelled_waiting or last is None:
        status, exit_code, route = RunStatus.CANCELLED, None, None
    else:
        status, exit_code, route = last.status, last.exit_code, last.route
    error = progress.error
    if error is not None and len(progress.attempts) > 1:
        error = ErrorInfo(error.kind, f"{error.message} (after {len(progress.attempts)} attempts)")
    text = capture.text()
    return RunRecord(
        run_id=run_id,
        pipeline=request.pipeline.name,
        status=status,
        run_config=request.run_config_id,
        trigger=request.trigger,
        commit=request.commit,
        environment=last.environment if last else Environment(),
        limits={**settings.limits.to_json(), "timeout_s": settings.timeout,
                "retry": settings.retry.to_json()},
        exit_code=exit_code,
        error=error,
        queued_at=request.queued_at or started,
        started_at=started,
        finished_at=finished,
        duration_s=round((finished - started).total_seconds(), 3),
        attempts=tuple(progress.attempts),
        resources=_merge_resources(progress.results),
        log=LogInfo(request.log_path, len(text.encode("utf-8")), capture.truncated),
        route=route,
        downstream=tuple(downstream_to_fire(request.pipeline, status, route)),
    )


def _merge_resources(results: list[AttemptResult]) -> Resources:
    """Peak memory over all attempts; CPU figures and samples of the last attempt measured."""
    measured = [r.resources for r in results if r.resources.peak_memory_bytes is not None]
    if not measured:
        return Resources()
    last = measured[-1]
    return replace(
        last,
        peak_memory_bytes=max(r.peak_memory_bytes or 0 for r in measured),
        soft_limit_events=tuple(e for r in measured for e in r.soft_limit_events),
    )


def write_record_json(record: RunRecord, path: Path) -> None:
    """Write `record` as indented JSON to `path`, atomically (a temporary file, then rename)."""
    write_atomic(Path(path), json.dumps(record.to_json(), indent=2) + "\n")
