"""Following one attempt's container to its end, whoever started it.

Outcomes: exit 0 `succeeded`; a non-zero exit `failed`, or `oom_killed` when the engine says
the kernel OOM-killed it (State.OOMKilled; not every 137 is an OOM). Timeout and cancel stop
the container (SIGTERM, `grace_period`, SIGKILL) and report `timed_out` / `cancelled`. A
container stopped or killed by someone else (`fastflow cancel`, `docker stop`, `docker kill`)
is reported `cancelled`: the engine's event log shows a `kill` event we did not send. A
container that vanished (`docker rm -f`) is `lost`.

Output of a fresh attempt comes from an attach made before the start and is read to the end
after the exit, so the last line is never lost (`supervise`). An attempt a dead process left
behind is followed from the engine's json-file copy of its output, minus the lines already
delivered, and caught up after the exit for what a follow may miss (`resume`).
"""
from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass
from typing import Callable

import docker.errors

from fastflow.errors import ExecutorError
from fastflow.executors.base import (
    RUNNER,
    STDERR,
    STDOUT,
    AttemptSpec,
    Clock,
    OutputLine,
    OutputSink,
    soft_limit_line,
)
from fastflow.executors.docker.engine import DockerError, parse_engine_time
from fastflow.executors.docker.reattach import SkipDelivered
from fastflow.executors.docker.stats import ResourceSampler, StatsReader
from fastflow.executors.docker.streams import LineSplitter
from fastflow.model import RunStatus
from fastflow.record import ErrorInfo

logger = logging.getLogger(__name__)



@dataclass(frozen=True)
class Pace:
    """The executor's clocks and limits a supervisor works with."""

    clock: Clock
    monotonic: Callable[[], float]
    poll_interval: float
    max_line_bytes: int


def note(sink: OutputSink, clock: Clock, text: str) -> None:
    """Hand one of Fast-Flow's own lines (stream `runner`) to the sink; a broken sink is logged."""
    try:
        sink(OutputLine(RUNNER, text, clock()))
    except Exception:  # noqa: BLE001 - a broken sink must not break the run
        logger.exception("output sink failed")


class ContainerSupervisor:
    """One attempt's container, followed to its end: output pump, stats, waiting, stopping,
    and the final verdict (see the module docstring)."""

    def __init__(self, api, spec: AttemptSpec, container_id: str, sink: OutputSink,
                 cancel: threading.Event, pace: Pace) -> None:
        self.api, self.spec, self.id, self.sink, self.cancel = api, spec, container_id, sink, cancel
        self.pace = pace
        self.sampler = ResourceSampler(  # an excess is told at once (notifications)
            spec.limits, on_excess=lambda event: self._tell(soft_limit_line(event, pace.clock())))
        self.exit_status: dict | None = None
        self.final_state: dict = {}  # the container's State once it ended (from _verdict)
        self.done = threading.Event()
        self.stopped_by_us = False

    def _tell(self, line: OutputLine) -> None:
        try:
            self.sink(line)
        except Exception:  # noqa: BLE001 - a broken sink must not break the run
            logger.exception("output sink failed")

    def supervise(self) -> tuple[RunStatus, int | None, ErrorInfo | None]:
        """Start the container (attached first) and supervise it to its end."""
        pump = self._start_pump()
        try:
            self.api.start(self.id)
        except DockerError as exc:
            raise ExecutorError(f"cannot start the container of {self.spec.pipeline!r}: {exc}") from exc
        return self._follow([pump], self.pace.monotonic(), sample=True)

    def resume(self, begin: float, delivered: dict | None = None
               ) -> tuple[RunStatus, int | None, ErrorInfo | None]:
        """Supervise a container started by a process that died (`begin`: its start on our
        monotonic clock), its output from the engine's json-file copy minus `delivered`."""
        running = self.api.inspect_container(self.id).get("State", {}).get("Running", False)
        skips = {stream: SkipDelivered(self.sink, (delivered or {}).get(stream, 0))
                 for stream in (STDOUT, STDERR)}
        pumps = [self._start_log_pump(stream, skip) for stream, skip in skips.items()]
        verdict = self._follow(pumps, begin, sample=running)
        for stream, skip in skips.items():
            self._catch_up(stream, skip)
        if any(skip.left > 0 for skip in skips.values()):
            self._note("the engine kept less output than was already delivered "
                       "(its copy was rotated); lines may be missing from this log")
        return verdict

    def _follow(self, pumps: list[threading.Thread], begin: float, sample: bool
                ) -> tuple[RunStatus, int | None, ErrorInfo | None]:
        stats = None
        if sample:  # a finished container has no stats stream worth reading
            stats = StatsReader(self.api.stats(self.id, stream=True, decode=True), self.sampler,
                                self.pace.monotonic, begin)
            stats.start()
        threading.Thread(target=self._wait, name="fastflow-docker-wait", daemon=True).start()
        verdict = self._watch(begin)
        self.done.wait()
        for pump in pumps:
            pump.join(timeout=30)  # an output stream ends once the container's output is closed
            if pump.is_alive():
                logger.warning("%s: output stream still open after the container ended",
                               self.spec.pipeline)
        if stats is not None:
            stats.stop()
        return verdict or self._verdict()

    def _note(self, text: str) -> None:
        note(self.sink, self.pace.clock, text)

    def _catch_up(self, stream: str, skip: SkipDelivered) -> None:
        """Hand over what the follow missed: the engine may end a follow at the exit before
        it wrote the last line (a last line without newline, typically)."""
        try:
            data = self.api.logs(self.id, stdout=stream == STDOUT, stderr=stream == STDERR,
                                 stream=False, follow=False)
        except DockerError as exc:
            logger.warning("cannot read the output of container %s: %s", self.id[:12], exc)
            return
        lines: list[OutputLine] = []
        LineSplitter(lines.append, self.pace.clock, self.pace.max_line_bytes).pump(
            [(data, None) if stream == STDOUT else (None, data)])
        for line in lines[skip.seen:]:
            skip(line)

    def _start_log_pump(self, stream: str, sink: OutputSink) -> threading.Thread:
        """Follow one stream of the engine's copy of the output, from the container's start."""
        try:
            chunks = self.api.logs(self.id, stdout=stream == STDOUT, stderr=stream == STDERR,
                                   stream=True, follow=True)
        except DockerError as exc:
            raise ExecutorError(f"cannot read the output of the container of "
                                f"{self.spec.pipeline!r}: {exc}") from exc
        splitter = LineSplitter(sink, self.pace.clock, self.pace.max_line_bytes)
        pairs = ((c, None) if stream == STDOUT else (None, c) for c in chunks)
        thread = threading.Thread(target=splitter.pump, args=(pairs,),
                                  name=f"fastflow-docker-{stream}", daemon=True)
        thread.start()
        return thread

    def _start_pump(self) -> threading.Thread:
        try:
            stream = self.api.attach(self.id, stdout=True, stderr=True, stream=True, logs=False,
                                     demux=True)
        except DockerError as exc:
            raise ExecutorError(f"cannot attach to the container of {self.spec.pipeline!r}: {exc}") from exc
        splitter = LineSplitter(self.sink, self.pace.clock, self.pace.max_line_bytes)
        thread = threading.Thread(target=splitter.pump, args=(stream,), name="fastflow-docker-out",
                                  daemon=True)
        thread.start()
        return thread

    def _wait(self) -> None:
        try:
            self.exit_status = self.api.wait(self.id)
        except docker.errors.NotFound:
            self.exit_status = None  # removed under our feet: lost
        except Exception as exc:  # noqa: BLE001 - reported as a lost container
            logger.warning("waiting for container %s failed: %s", self.id[:12], exc)
        finally:
            self.done.set()

    def _watch(self, begin: float):
        """Wait for the exit; on cancel or timeout stop the container and return that verdict."""
        spec = self.spec
        deadline = begin + spec.timeout if spec.timeout > 0 else None
        while not self.done.wait(self.pace.poll_interval):
            if self.cancel.is_set():
                self._note("cancel requested: stopping the container")
                self._stop()
                return RunStatus.CANCELLED, self._exit_code(), ErrorInfo("cancelled", "cancelled while running")
            if deadline is not None and self.pace.monotonic() >= deadline:
                self._note(f"timeout of {spec.timeout:g}s reached: stopping the container")
                self._stop()
                message = f"timed out after {spec.timeout:g}s (timeout {spec.timeout:g}s)"
                return RunStatus.TIMED_OUT, self._exit_code(), ErrorInfo("timeout", message)
        return None

    def _stop(self) -> None:
        self.stopped_by_us = True
        try:
            # The engine sends SIGTERM, waits `grace`, then SIGKILL; the init forwards signals.
            self.api.stop(self.id, timeout=max(math.ceil(self.spec.grace_period), 0))
        except docker.errors.NotFound:
            pass
        self.done.wait()

    def _exit_code(self) -> int | None:
        self.done.wait()
        return (self.exit_status or {}).get("StatusCode")

    def _verdict(self) -> tuple[RunStatus, int | None, ErrorInfo | None]:
        if self.exit_status is None:
            return RunStatus.LOST, None, ErrorInfo("lost", "the container vanished while running "
                                                   "(removed or the engine restarted)")
        code = self.exit_status.get("StatusCode")
        try:
            attrs = self.api.inspect_container(self.id)
        except docker.errors.NotFound:
            return RunStatus.LOST, code, ErrorInfo("lost", "the container vanished before its "
                                                   "state could be read")
        self.final_state = attrs.get("State", {})
        if code == 0:
            return RunStatus.SUCCEEDED, 0, None
        if attrs.get("State", {}).get("OOMKilled"):
            limit = self.spec.limits.mem_hard_limit
            return RunStatus.OOM_KILLED, code, ErrorInfo(
                "oom", f"killed by the kernel's OOM killer (mem_hard_limit {limit} bytes)"
                if limit else "killed by the kernel's OOM killer")
        if self._killed_from_outside(attrs):
            return RunStatus.CANCELLED, code, ErrorInfo(
                "cancelled", "the container was stopped from outside (fastflow cancel, "
                "docker stop or docker kill)")
        return RunStatus.FAILED, code, None

    def _killed_from_outside(self, attrs: dict) -> bool:
        """Whether the engine logged a kill signal for this container (we sent none)."""
        state = attrs.get("State", {})
        since, until = _unix(attrs.get("Created")), _unix(state.get("FinishedAt"))
        if since is None or until is None:
            return False
        try:
            events = self.api.events(since=f"{since:.9f}", until=f"{until + 0.01:.9f}", decode=True,
                                     filters={"container": self.id, "event": "kill"})
            return any(True for _ in events)
        except DockerError as exc:
            logger.warning("cannot read the engine's events: %s", exc)
            return False


def _unix(value: str | None) -> float | None:
    parsed = parse_engine_time(value)
    return parsed.timestamp() if parsed else None
