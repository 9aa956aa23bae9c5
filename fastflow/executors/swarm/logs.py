"""The output of a Swarm job, read through the manager, stdout and stderr kept apart.

The manager serves a service's logs from every node (`/services/{id}/logs`, the node's
json-file copy, bounded by `log_config`). The SDK's `service_logs` drops the stream of each
frame; `frames` reads the multiplexed response itself so stderr stays stderr.

Lines pass through `EntryMarks` first: the entry step's one marked line (its outcome: exit
code, OOM kills, route, samples) is taken out of the log and kept, so a pipeline's log holds
only what the pipeline wrote.
"""
from __future__ import annotations

import json
import logging
import socket
import struct
import threading
from typing import Iterator

from fastflow.executors.base import STDERR, STDOUT, Clock, OutputLine, OutputSink
from fastflow.executors.docker.engine import DockerError
from fastflow.executors.docker.reattach import SkipDelivered
from fastflow.executors.docker.streams import LineSplitter
from fastflow.executors.swarm.entry import MARK

logger = logging.getLogger(__name__)

_STREAMS = {1: STDOUT, 2: STDERR}


def open_logs(api, service_id: str, follow: bool, of: str = "services"):
    """The raw, multiplexed log response of a service (all its tasks, from the start), or of
    one task (`of="tasks"`)."""
    return api._get(api._url("/" + of + "/{0}/logs", service_id),
                    params={"stdout": 1, "stderr": 1, "follow": int(follow), "tail": "all"},
                    stream=True)


def frames(response) -> Iterator[tuple[str, bytes]]:
    """(stream, bytes) frames of a multiplexed log response, to its end."""
    response.raise_for_status()
    while True:
        header = response.raw.read(8)
        if len(header) < 8:
            return
        kind, length = struct.unpack(">BxxxL", header)
        data = response.raw.read(length) if length else b""
        if length and not data:
            return
        if kind in _STREAMS:
            yield _STREAMS[kind], data


def read_all(api, task_id: str) -> str:
    """One task's whole output, both streams, as text (a pre-heat's, for its message)."""
    return b"".join(data for _, data in frames(open_logs(api, task_id, False, "tasks"))).decode(
        "utf-8", errors="replace")


class EntryMarks:
    """A sink that keeps the entry step's marked outcome line out of the log."""

    def __init__(self, sink: OutputSink, nonce: str) -> None:
        self.sink, self.prefix = sink, f"{MARK}{nonce} "
        self.outcome: dict | None = None

    def __call__(self, line: OutputLine) -> None:
        if line.stream == STDERR and line.text.startswith(self.prefix):
            try:
                self.outcome = json.loads(line.text[len(self.prefix):])
            except ValueError:
                logger.warning("unreadable outcome line of the entry step")
            return
        self.sink(line)


class ServiceOutput:
    """Delivers a job's output once: live while it runs (`follow`), then what the follow did
    not deliver from a full read after the end (`catch_up`, which also flushes a last line
    without newline). `delivered` lines per stream (a dead owner's) are skipped."""

    def __init__(self, api, service_id: str, sink: OutputSink, clock: Clock, nonce: str,
                 max_line_bytes: int, delivered: dict | None = None) -> None:
        self.api, self.id, self.clock, self.max_line_bytes = api, service_id, clock, max_line_bytes
        self.skips = {stream: SkipDelivered(sink, (delivered or {}).get(stream, 0))
                      for stream in (STDOUT, STDERR)}
        self.nonce = nonce
        self.marks = {stream: EntryMarks(self.skips[stream], nonce) for stream in self.skips}
        self._response = None
        self._thread: threading.Thread | None = None
        self._closing = False

    @property
    def outcome(self) -> dict | None:
        return self.marks[STDERR].outcome

    def follow(self) -> None:
        """Start handing over the output as it comes (a thread; `stop` ends it)."""
        try:
            self._response = open_logs(self.api, self.id, follow=True)
        except DockerError as exc:
            logger.warning("cannot follow the output of service %s: %s", self.id[:12], exc)
            return
        splitter = LineSplitter(self._route, self.clock, self.max_line_bytes)

        def pump() -> None:
            try:
                for stream, data in frames(self._response):
                    splitter.feed(stream, data)  # never flushed: catch_up ends the last line
            except Exception as exc:  # noqa: BLE001 - a broken follow is caught up after the end
                if not self._closing:
                    logger.debug("service log follow ended: %s", exc)

        self._thread = threading.Thread(target=pump, name="fastflow-swarm-out", daemon=True)
        self._thread.start()

    def _route(self, line: OutputLine) -> None:
        self.marks[line.stream](line)

    def stop(self, wait: float = 0.0) -> None:
        """End the follow (after the job ended, its lines are all in the engine's copy)."""
        if self._thread is None:
            return
        self._thread.join(timeout=wait)
        if self._thread.is_alive():
            self._closing = True
            try:  # a shutdown wakes the reading thread at once (a close would wait for it)
                raw = self.api._get_raw_response_socket(self._response)
                getattr(raw, "_sock", raw).shutdown(socket.SHUT_RDWR)  # unix: a SocketIO
            except Exception:  # noqa: BLE001 - closing a dead connection
                pass
            self._thread.join(timeout=5)

    def catch_up(self) -> None:
        """Read the whole log and hand over, per stream, the lines not yet handed over."""
        lines: list[OutputLine] = []
        try:
            response = open_logs(self.api, self.id, follow=False)
            LineSplitter(lines.append, self.clock, self.max_line_bytes).pump(
                ((data, None) if stream == STDOUT else (None, data))
                for stream, data in frames(response))
        except DockerError as exc:
            logger.warning("cannot read the output of service %s: %s", self.id[:12], exc)
        kept: dict[str, list[OutputLine]] = {STDOUT: [], STDERR: []}
        finder = EntryMarks(lambda line: kept[line.stream].append(line), self.nonce)
        for line in lines:
            finder(line)
        for stream, got in kept.items():
            for line in got[self.skips[stream].seen:]:
                self.skips[stream](line)
        if finder.outcome is not None:  # whether the follow saw the outcome line or not
            self.marks[STDERR].outcome = finder.outcome
