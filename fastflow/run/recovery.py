"""Finishing a run that a dead daemon left behind: re-attach to its attempt, then record it.

When `fastflow serve` dies (`kill -9`, power loss) while a run's container is running, the
container goes on (nothing removes it but its owner). The next daemon finds the run in its
journal and asks the executor to re-attach (`Executor.reattach`), which supervises the attempt
to its end exactly as a fresh one (timeout counted from the container's start, OOM, cancel)
and hands over the output the dead daemon had not yet written to the live log. This module is
the daemon-side half: what the live log says was already delivered, which attempts ran before,
and the run's record and capped log once the attempt ended.

The attempt's error is judged as the runner judges a fresh one (`runner.attempt_error`): uv's
own failure to prepare the environment (kind `dependencies` or `python`, uv's reason) before
the exit code. Its output is read by the runner's `UvFailureWatcher` in the order it was
written: first the attempt's lines the dead daemon already put in the live log, then those
the re-attach hands over. Output withheld for want of its secrets is not read: a uv failure
in it is recorded as the exit code.

The re-attached attempt is the run's last: a `failed`, `timed_out` or `oom_killed` attempt is
recorded as the run's outcome even when its retry policy allows more attempts. The daemon that
owned the retries died, and retrying from the restarted one would run the pipeline again at an
older commit with its secrets loaded anew, possibly in a loop when the pipeline is what brings
the host down; the record says so (`not retried after the daemon restarted`) and a new run is
one `fastflow run --remote` away.
"""
from __future__ import annotations

import logging
import re
import threading
from dataclasses import replace
from datetime import datetime
from pathlib import Path

from fastflow.errors import ExecutorError
from fastflow.executors.base import (
    STDERR,
    STDOUT,
    AttemptResult,
    Clock,
    Executor,
    OutputLine,
    OutputSink,
    ReattachedAttempt,
)
from fastflow.model import Pipeline, RunStatus
from fastflow.record import Attempt, ErrorInfo, LogInfo, RunRecord
from fastflow.run.capture import (
    RUNNER,
    LogCapture,
    Masker,
    parse_line,
    parse_omitted,
    read_log_lines,
    read_log_text,
    split_log_lines,
)
from fastflow.run.runner import (
    RunOutcome,
    RunSettings,
    UvFailureWatcher,
    attempt_error,
    attempt_summary,
    downstream_to_fire,
    should_retry,
)

logger = logging.getLogger(__name__)

# The runner's own lines (see runner._run_attempts), read back from the live log.
_STARTED = re.compile(r"^attempt (\d+) of (\d+) started$")
_RETRY = re.compile(r"^retry \d+: attempt (\d+) of (\d+) starts in ([0-9.e+-]+)s$")
_ENDED = re.compile(r"^attempt (\d+) of (\d+) ([a-z_]+)(?: \(exit code (-?\d+)\))?(?::|$)")


def attempt_lines(live_text: str, attempt: int) -> list[OutputLine] | None:
    """The stdout and stderr lines of attempt `attempt` the live log already holds: those
    after the runner's last `attempt N of M started` line (None when it has no such line)."""
    lines: list[OutputLine] | None = None
    for raw in split_log_lines(live_text):
        line = parse_line(raw)
        if line is None:
            continue
        if line.stream == RUNNER:
            match = _STARTED.match(line.text)
            if match and int(match[1]) == attempt:
                lines = []
        elif lines is not None and line.stream in (STDOUT, STDERR):
            lines.append(line)
    return lines


def delivered_lines(live_text: str, attempt: int) -> dict[str, int]:
    """How many stdout and stderr lines of attempt `attempt` the live log already holds
    (see `attempt_lines`; {} when it has no start line of that attempt)."""
    counts: dict[str, int] | None = None
    for raw in split_log_lines(live_text):
        line = parse_line(raw)
        if line is None:  # the live log's cap marker counts the lines it stands for
            omitted = parse_omitted(raw)
            if omitted is not None and counts is not None:
                for stream, n in omitted[1].items():
                    counts[stream] += n
        elif line.stream == RUNNER:
            match = _STARTED.match(line.text)
            if match and int(match[1]) == attempt:
                counts = {STDOUT: 0, STDERR: 0}
        elif counts is not None and line.stream in counts:
            counts[line.stream] += 1
    return counts or {}


def earlier_attempts(live_text: str) -> tuple[dict[int, Attempt], int | None]:
    """The attempts the live log shows (by number, ended or not) and the total it announced."""
    attempts: dict[int, Attempt] = {}
    waits: dict[int, float] = {}
    total = None
    for raw in split_log_lines(live_text):
        line = parse_line(raw)
        if line is None or line.stream != RUNNER:
            continue
        if match := _RETRY.match(line.text):
            waits[int(match[1])] = float(match[3])
        elif match := _STARTED.match(line.text):
            n, total = int(match[1]), int(match[2])
            attempts[n] = Attempt(n, line.at, None, None, RunStatus.RUNNING, waits.get(n, 0.0))
        elif (match := _ENDED.match(line.text)) and int(match[1]) in attempts:
            try:
                status = RunStatus(match[3])
            except ValueError:
                continue
            code = int(match[4]) if match[4] is not None else None
            attempts[int(match[1])] = replace(attempts[int(match[1])], finished_at=line.at,
                                              exit_code=code, status=status)
    return attempts, total


def first_attempt_never_ran(live_text: str) -> bool:
    """Whether the live log shows attempt 1 announced as started and nothing else of it: no
    output and no summary line. Asked once no container of the run was found: an executor that
    holds its attempts (`AttemptSpec.hold`) keeps the container until the summary line is
    written, so the daemon died between the start line and the container's start, and the
    pipeline never ran (it may run now, once)."""
    earlier, _ = earlier_attempts(live_text)
    return (list(earlier) == [1] and earlier[1].status is RunStatus.RUNNING
            and not attempt_lines(live_text, 1))


def capped_log(live: str | Path, cap_bytes: int) -> LogCapture:
    """The live log (already masked; its text, or its file, then streamed) replayed into a
    capture: the run log with its cap (what the live log's own cap dropped counts as omitted)."""
    capture = LogCapture(cap_bytes)
    for raw in split_log_lines(live) if isinstance(live, str) else read_log_lines(live):
        line = parse_line(raw)
        if line is not None:
            capture(line)
        elif (omitted := parse_omitted(raw)) is not None:
            capture.omit(omitted[0])
    return capture


def would_retry(found: ReattachedAttempt, retryable: bool, settings: RunSettings | None) -> bool:
    """Whether the dead daemon would have retried the attempt (it is not: see module doc)."""
    if settings is None:
        return False
    return should_retry(found.result, retryable, settings.retry, found.attempt)


def reattached_record(base: RunRecord, found: ReattachedAttempt, *, earlier: dict[int, Attempt],
                      error: ErrorInfo | None, pipeline: Pipeline | None,
                      settings: RunSettings | None, capture: LogCapture,
                      finished: datetime) -> RunRecord:
    """The run's record: `base` (identity, trigger, commit, times from the journal) completed
    with the attempts before (from the live log) and the re-attached one (the run's last)."""
    result, n = found.result, found.attempt
    wait_s = earlier[n].wait_before_s if n in earlier else 0.0
    attempts = [a for k, a in sorted(earlier.items()) if k < n]
    attempts.append(Attempt(n, result.started_at, result.finished_at, result.exit_code,
                            result.status, wait_s))
    if error is not None and len(attempts) > 1:
        error = ErrorInfo(error.kind, f"{error.message} (after {len(attempts)} attempts)")
    text = capture.text()
    limits = {}
    if settings is not None:
        limits = {**settings.limits.to_json(), "timeout_s": settings.timeout,
                  "retry": settings.retry.to_json()}
    started = base.started_at or result.started_at
    return replace(
        base, status=result.status, exit_code=result.exit_code, error=error,
        environment=result.environment, limits=limits, started_at=started, finished_at=finished,
        duration_s=round((finished - started).total_seconds(), 3), attempts=tuple(attempts),
        resources=result.resources, route=result.route,
        log=LogInfo(base.log.path, len(text.encode("utf-8")), capture.truncated),
        downstream=tuple(downstream_to_fire(pipeline, result.status, result.route))
        if pipeline is not None else (),
    )


class _Handover:
    """The sink and the `delivered` of a re-attach: the output not yet in the live log goes
    there masked (or is withheld when `masker` is None), and the runner's `UvFailureWatcher`
    reads the attempt's output in the order it was written, the live log's part first."""

    def __init__(self, live_text: str, live_sink: OutputSink, masker: Masker | None) -> None:
        self.live_text, self.masker = live_text, masker
        self.watcher = UvFailureWatcher(live_sink)
        self._read: set[int] = set()

    def __call__(self, line: OutputLine) -> None:
        if self.masker is not None:
            self.watcher(replace(line, text=self.masker.mask(line.text)))

    def delivered(self, attempt: int) -> dict[str, int]:
        # Asked before the first line is handed over: what the live log holds is read first.
        if attempt not in self._read:
            self._read.add(attempt)
            for line in attempt_lines(self.live_text, attempt) or ():
                self.watcher.observe(line)
        return delivered_lines(self.live_text, attempt)


def ended_outcome(base: RunRecord, live_text: str, *, live_sink: OutputSink,
                  pipeline: Pipeline | None, settings: RunSettings | None, cap_bytes: int,
                  clock: Clock, live_path: Path) -> RunOutcome | None:
    """The outcome of a run whose last attempt the live log shows ended, or None.

    The daemon died after the attempt ended (its container already removed) and before the
    run was recorded, or during the wait before a retry. The attempt's outcome is its
    `attempt N of M ...` line, its error judged from its lines as the runner judged it (uv's
    failure first); a retry the dead daemon would have made is not made (see the module doc).
    Resources, environment and route are not in the live log: the record has none.
    """
    earlier, total = earlier_attempts(live_text)
    if earlier and earlier[max(earlier)].status is RunStatus.RUNNING and max(earlier) > 1 \
            and not attempt_lines(live_text, max(earlier)):
        # A retry announced as started with nothing of it anywhere (no output, and no
        # container: this is asked only once none was found): the daemon died between the
        # start line and the container's creation, so the attempt never ran. The run ends as
        # its last ended attempt did, like a kill during the retry wait.
        live_sink(OutputLine(RUNNER, f"attempt {max(earlier)} never ran: the daemon stopped "
                             "before its container existed", clock()))
        del earlier[max(earlier)]
    if not earlier or earlier[max(earlier)].status is RunStatus.RUNNING:
        return None
    n = max(earlier)
    last = earlier[n]
    result = AttemptResult(last.status, last.exit_code, last.started_at,
                           last.finished_at or clock())
    watcher = UvFailureWatcher(lambda line: None)
    for line in attempt_lines(live_text, n) or ():
        watcher.observe(line)
    error, retryable = attempt_error(result, watcher, pipeline, Masker())
    written = _ended_message(live_text, n)
    if error is not None and written:
        error = ErrorInfo(error.kind, written)  # the words the dead daemon's runner chose
    live_sink(OutputLine(RUNNER, "the daemon restarted: the run's last attempt had ended; "
                         "recorded from its live log", clock()))
    found = ReattachedAttempt(n, result)
    if error is not None and (_retry_announced(live_text, n + 1)
                              or would_retry(found, retryable, settings)):
        total = total or settings.retry.attempts + 1
        live_sink(OutputLine(RUNNER, f"attempt {n + 1} of {total} does not start: runs are not "
                             "retried after the daemon restarted", clock()))
        error = ErrorInfo(error.kind, f"{error.message} (not retried after the daemon restarted)")
    capture = capped_log(live_path, cap_bytes)
    record = reattached_record(base, found, earlier=earlier, error=error, pipeline=pipeline,
                               settings=settings, capture=capture, finished=result.finished_at)
    return RunOutcome(record, capture.text())


def _retry_announced(live_text: str, attempt: int) -> bool:
    """Whether the runner announced the wait before attempt `attempt` (a retry was coming)."""
    for raw in split_log_lines(live_text):
        line = parse_line(raw)
        if line is not None and line.stream == RUNNER:
            match = _RETRY.match(line.text)
            if match and int(match[1]) == attempt:
                return True
    return False


def _ended_message(live_text: str, attempt: int) -> str | None:
    """The error message of the runner's last line closing attempt `attempt`, if it has one."""
    message = None
    for raw in split_log_lines(live_text):
        line = parse_line(raw)
        if line is None or line.stream != RUNNER:
            continue
        match = _ENDED.match(line.text)
        if match and int(match[1]) == attempt:
            message = line.text[match.end():].strip() or None
    return message


def recover_run(executor: Executor, base: RunRecord, *, live_path: Path,
                live_sink: OutputSink, masker: Masker | None, pipeline: Pipeline | None,
                settings: RunSettings | None, cap_bytes: int, clock: Clock,
                cancel: threading.Event) -> RunOutcome | None:
    """Re-attach to the attempt of run `base.run_id` and return the run's outcome, or None
    when nothing of it is left (the caller records it `lost`).

    `base` holds what the journal knows (identity, trigger, commit, queue and start times, log
    path). The output not yet in the live log (`live_path`) is masked with `masker` and
    appended through `live_sink`; `masker=None` withholds it (the secrets to mask it with
    could not be loaded). The record's log is the whole live log, capped at `cap_bytes`.
    """
    before = read_log_text(live_path)
    ended = ended_outcome(base, before, live_sink=live_sink, pipeline=pipeline, settings=settings,
                          cap_bytes=cap_bytes, clock=clock, live_path=live_path)
    if ended is not None:  # what the dead daemon had not removed yet goes; its output is known
        try:
            executor.reattach(base.run_id, lambda line: None, cancel)
        except ExecutorError as exc:
            logger.warning("run %s: cannot remove what is left of it: %s", base.run_id, exc)
        return ended
    earlier, total = earlier_attempts(before)

    handover = _Handover(before, live_sink, masker)

    def note(text: str) -> None:
        live_sink(OutputLine(RUNNER, text, clock()))

    note("the daemon restarted: re-attaching to the run's container")
    if masker is None:
        note("its output from here on is withheld: the secrets to mask it could not be loaded")
    try:
        found = executor.reattach(base.run_id, handover, cancel, handover.delivered)
    except ExecutorError as exc:
        logger.warning("run %s: cannot re-attach: %s", base.run_id, exc)
        found = None
    if found is None:
        return None
    # What the watcher read is masked already (the live log, or by `masker`); without a
    # masker it read only the live log, so there is nothing left to mask.
    error, retryable = attempt_error(found.result, handover.watcher, pipeline, masker or Masker())
    total = total or (settings.retry.attempts + 1 if settings is not None else found.attempt)
    note(attempt_summary(found.attempt, total, found.result.status, found.result.exit_code, error))
    if error is not None and would_retry(found, retryable, settings):
        note(f"attempt {found.attempt + 1} of {total} does not start: runs are not retried "
             "after the daemon restarted")
        error = ErrorInfo(error.kind, f"{error.message} (not retried after the daemon restarted)")
    capture = capped_log(live_path, cap_bytes)
    record = reattached_record(base, found, earlier=earlier, error=error, pipeline=pipeline,
                               settings=settings, capture=capture, finished=clock())
    return RunOutcome(record, capture.text())
