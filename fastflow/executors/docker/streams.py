"""Demultiplexed container output -> `OutputLine`s, one per line, the stream kept.

The engine sends chunks that may hold many lines or part of one; each stream keeps its own
pending bytes. A line is decoded whole (a UTF-8 character split across chunks stays intact),
a line longer than `max_line_bytes` is handed over in pieces, and whatever is pending when the
stream ends (a last line without newline) is delivered too.
"""
from __future__ import annotations

import logging
from typing import Iterable

from fastflow.executors.base import STDERR, STDOUT, Clock, OutputLine, OutputSink

logger = logging.getLogger(__name__)


class LineSplitter:
    """Cuts (stdout, stderr) byte chunks into lines and hands them to a sink."""

    def __init__(self, sink: OutputSink, clock: Clock, max_line_bytes: int = 64 * 1024) -> None:
        self.sink, self.clock, self.max_line_bytes = sink, clock, max_line_bytes
        self._pending = {STDOUT: b"", STDERR: b""}
        self._sink_failed = False

    def pump(self, chunks: Iterable[tuple[bytes | None, bytes | None]]) -> None:
        """Read `chunks` to their end (an engine attach stream with demux), then flush."""
        try:
            for out, err in chunks:
                if out:
                    self.feed(STDOUT, out)
                if err:
                    self.feed(STDERR, err)
        except Exception as exc:  # noqa: BLE001 - a dropped stream still flushes what it has
            logger.warning("container output stream broke off: %s", exc)
        finally:
            self.flush()

    def feed(self, stream: str, data: bytes) -> None:
        """Add bytes of one stream; emit every complete line."""
        buf, start, limit = self._pending[stream] + data, 0, self.max_line_bytes
        while True:
            cut = buf.find(b"\n", start, start + limit + 1)
            if cut >= 0:
                self._emit(stream, buf[start:cut])
                start = cut + 1
            elif len(buf) - start > limit:  # no newline within the limit: hand over a piece
                cut = _safe_cut(buf, start, limit)
                self._emit(stream, buf[start:cut])
                start = cut
            else:
                break
        self._pending[stream] = buf[start:]

    def flush(self) -> None:
        """Emit what is pending on each stream (the last line, without its newline)."""
        for stream, buf in self._pending.items():
            if buf:
                self._emit(stream, buf)
            self._pending[stream] = b""

    def _emit(self, stream: str, raw: bytes) -> None:
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        line = OutputLine(stream, raw.decode("utf-8", errors="replace"), self.clock())
        try:
            self.sink(line)
        except Exception:  # noqa: BLE001 - keep draining: a stalled reader would block the container
            if not self._sink_failed:
                logger.exception("output sink failed; continuing to drain %s", stream)
            self._sink_failed = True


def _safe_cut(buf: bytes, start: int, limit: int) -> int:
    """A cut position in (start, start + limit] that does not split a UTF-8 character
    (`buf` holds more than `limit` bytes after `start`)."""
    cut = start + limit
    while cut > start and (buf[cut] & 0xC0) == 0x80:
        cut -= 1
    return cut if cut > start else start + limit
