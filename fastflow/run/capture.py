"""Output capture: the capped run log, secret masking, and the log file format.

Every line an executor produces goes through a `LogCapture`, which is itself an `OutputSink`:
it masks secret values, stores the line in a byte-capped buffer and forwards the masked line to
another sink (the CLI's live display). The capture is thread-safe: an executor's stdout and
stderr reader threads call it at the same time.

Log file format (one line per output line, UTF-8, `\\n`-terminated)::

    2026-11-22T14:30:00.123Z stdout | text as printed
    2026-11-22T14:30:00.125Z stderr | Traceback (most recent call last):
    2026-11-22T14:30:01.000Z runner | attempt 2 of 3 starting after a 2s wait

The timestamp is UTC with milliseconds; the stream is `stdout`, `stderr` or `runner` (lines
written by Fast-Flow itself: attempt boundaries, timeouts, cancels), always six characters so
the text column lines up; ` | ` separates the prefix from the text, which is kept as printed
(only its line ending is removed), except that a carriage return or line feed inside it is
written as the two characters `\\r` or `\\n`: one output line is one log line, so output can
never forge a line of its own (a `runner` line after a `\\r`). Readers split the file on
`\\n` only (`split_log_lines`, `read_log_lines`), never on `\\r` or U+2028 as
`str.splitlines` does.

Cap: the log keeps at most about `cap_bytes` bytes. The first half of the budget keeps the
head (the first lines), the second half keeps the tail (the most recent lines; the last lines
before the process ended are therefore never lost). When lines were dropped, one marker line
without prefix sits between head and tail::

    --- 12345 bytes omitted by Fast-Flow (log cap 5.0 MiB) ---

A single line longer than half the cap is cut to fit and ends with ` [line cut by Fast-Flow]`.

Masking: `Masker` replaces every occurrence of each secret value with `***`, per line, before
the line is stored or forwarded. Executors hand over whole lines (never raw chunks), so a value
split across two reads of a pipe is still masked; a multi-line value (a PEM key) is masked
line by line.
"""
from __future__ import annotations

import logging
import re
import threading
from collections import deque
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping

from fastflow.executors.base import RUNNER, STDERR, STDOUT, OutputLine, OutputSink
from fastflow.files import write_atomic

MASK = "***"
CUT_SUFFIX = " [line cut by Fast-Flow]"


def format_timestamp(at: datetime) -> str:
    """`at` as UTC ISO 8601 with milliseconds and a `Z`, e.g. `2026-11-22T14:30:00.123Z`."""
    at = at.astimezone(timezone.utc)
    return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"


_ESCAPE_BREAKS = str.maketrans({"\r": "\\r", "\n": "\\n"})


def format_line(line: OutputLine) -> str:
    """One output line in the log file format (without its newline; a `\\r` or `\\n` in the
    text is escaped, see the module doc)."""
    return f"{format_timestamp(line.at)} {line.stream:<6} | {line.text.translate(_ESCAPE_BREAKS)}"


def split_log_lines(text: str) -> list[str]:
    """The lines of a log file's text: split on `\\n` only (a last line without one counts)."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def read_log_text(path: Path) -> str:
    """The text of the log file `path` as written (no newline translation: a `\\r` stays), ""
    when it does not exist."""
    try:
        return path.read_bytes().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return ""


def read_log_lines(path: Path) -> Iterator[str]:
    """The lines of the log file `path`, streamed (never read whole), split on `\\n` only,
    without their newline; nothing when it does not exist."""
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return
    with f:
        for raw in f:  # binary lines end at b"\n" only
            yield raw.rstrip(b"\n").decode("utf-8", errors="replace")


def parse_line(raw: str) -> OutputLine | None:
    """A line of the log file format back into an `OutputLine` (None for anything else, e.g.
    the omitted marker): the inverse of `format_line`, to the millisecond."""
    stamp, sep, rest = raw.partition(" ")
    if not sep or rest[6:9] != " | " or not stamp.endswith("Z"):
        return None
    try:
        at = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
    except ValueError:
        return None
    return OutputLine(rest[:6].rstrip(), rest[9:], at)


def format_size(n: int) -> str:
    """The log cap as the omitted-bytes marker spells it: `512 B`, `64.0 KiB`, `5.0 MiB`.

    Part of the stored log format (always one decimal), so it never changes with the words the
    CLI and the site use (`humanize.format_bytes`)."""
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB"):
        value /= 1024
        if value < 1024 or unit == "GiB":
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")


def omitted_marker(omitted: int, cap_bytes: int, lines: Mapping[str, int] | None = None) -> str:
    """The line that replaces the dropped middle of a capped log. The live log's marker also
    counts the stdout and stderr lines it stands for (`lines`), so a re-attach knows how many
    lines of the attempt were delivered."""
    counts = ""
    if lines is not None:
        counts = f"; {lines.get(STDOUT, 0)} stdout and {lines.get(STDERR, 0)} stderr lines"
    return (f"--- {omitted} bytes omitted by Fast-Flow (log cap {format_size(cap_bytes)}"
            f"{counts}) ---")


_MARKER = re.compile(r"^--- (\d+) bytes omitted by Fast-Flow \(log cap [^;)]*"
                     r"(?:; (\d+) stdout and (\d+) stderr lines)?\) ---$")


def parse_omitted(raw: str) -> tuple[int, dict[str, int]] | None:
    """An omitted marker back into (bytes, {stream: lines}) ({} when it counts no lines);
    None for any other line."""
    match = _MARKER.match(raw)
    if match is None:
        return None
    lines = {STDOUT: int(match[2]), STDERR: int(match[3])} if match[2] is not None else {}
    return int(match[1]), lines


def fit_line(rendered: str, half: int) -> str:
    """`rendered` (a formatted line) cut to fit half a cap, ending with CUT_SUFFIX when cut."""
    data = rendered.encode("utf-8")
    if len(data) + 1 <= half:
        return rendered
    room = max(half - 1 - len(CUT_SUFFIX.encode("utf-8")), 0)
    return data[:room].decode("utf-8", errors="ignore") + CUT_SUFFIX


class Masker:
    """Replaces secret values with `***` in text, longest value first.

    Empty values are ignored (they would match everywhere). A value containing newlines is
    registered as each of its non-blank lines, because output is masked one line at a time.
    """

    def __init__(self, values: Iterable[str] = ()) -> None:
        self._values: list[str] = []
        self._lock = threading.Lock()
        self.add(values)

    def add(self, values: Iterable[str]) -> None:
        """Register more secret values to mask from now on."""
        pieces = set(self._values)
        for value in map(str, values):
            if "\n" in value or "\r" in value:
                pieces.update(p.strip() for p in value.splitlines() if p.strip())
            elif value:
                pieces.add(value)
        with self._lock:
            self._values = sorted(pieces, key=lambda v: (-len(v), v))

    def __bool__(self) -> bool:
        return bool(self._values)

    def mask(self, text: str) -> str:
        """`text` with every registered value replaced by `***`."""
        for value in self._values:
            if value in text:
                text = text.replace(value, MASK)
        return text


class LogCapture:
    """A thread-safe `OutputSink` keeping a capped head+tail log; see the module docstring.

    `forward`, when given, receives every (masked) line as it arrives, for live display.
    """

    def __init__(
        self,
        cap_bytes: int,
        forward: OutputSink | None = None,
        masker: Masker | None = None,
    ) -> None:
        if cap_bytes < 2:
            raise ValueError(f"log cap must be at least 2 bytes, got {cap_bytes}")
        self.cap_bytes = cap_bytes
        self._half = cap_bytes // 2
        self._forward = forward
        self._masker = masker or Masker()
        self._lock = threading.Lock()
        self._head: list[str] = []
        self._head_bytes = 0
        self._head_full = False
        self._tail: deque[str] = deque()
        self._tail_bytes = 0
        self._total_bytes = 0

    def __call__(self, line: OutputLine) -> None:
        if self._masker:
            line = replace(line, text=self._masker.mask(line.text))
        rendered = self._fit(format_line(line)) + "\n"
        size = len(rendered.encode("utf-8"))
        with self._lock:
            self._store(rendered, size)
        if self._forward is not None:
            self._forward(line)

    def _fit(self, rendered: str) -> str:
        return fit_line(rendered, self._half)

    def omit(self, size: int) -> None:
        """Count `size` bytes as dropped from the middle (a capped log replayed: its marker)."""
        with self._lock:
            self._total_bytes += size
            self._head_full = True

    def _store(self, rendered: str, size: int) -> None:
        self._total_bytes += size
        if not self._head_full and self._head_bytes + size <= self._half:
            self._head.append(rendered)
            self._head_bytes += size
            return
        self._head_full = True
        self._tail.append(rendered)
        self._tail_bytes += size
        while self._tail_bytes > self._half and self._tail:
            self._tail_bytes -= len(self._tail.popleft().encode("utf-8"))

    @property
    def total_bytes(self) -> int:
        """Bytes of every line ever received (as formatted), kept or not."""
        return self._total_bytes

    @property
    def omitted_bytes(self) -> int:
        """Bytes dropped from the middle of the log by the cap."""
        with self._lock:
            return self._total_bytes - self._head_bytes - self._tail_bytes

    @property
    def truncated(self) -> bool:
        return self.omitted_bytes > 0

    def text(self) -> str:
        """The log file contents: head, the omitted marker when lines were dropped, tail."""
        with self._lock:
            omitted = self._total_bytes - self._head_bytes - self._tail_bytes
            parts = list(self._head)
            if omitted:
                parts.append(omitted_marker(omitted, self.cap_bytes) + "\n")
            parts.extend(self._tail)
        return "".join(parts)

    def emit(self, text: str, at: datetime) -> None:
        """Write a line of Fast-Flow's own (stream `runner`) into the log and the forward sink."""
        self(OutputLine(RUNNER, text, at))


logger = logging.getLogger(__name__)


class LiveLog:
    """The live log of a running run (`<state dir>/live/<run_id>.log`): an `OutputSink`
    appending each (masked) line to the file, capped on disk like the run log.

    The file grows to at most twice `cap_bytes`; then it is rewritten (atomically) as the head
    (half the cap), the omitted marker and the tail (half the cap), and grows again. Unlike the
    run log it keeps every `runner` line (attempt boundaries, a handful per attempt) in place,
    and its markers count the stdout and stderr lines they stand for: a re-attach reads the
    attempts and the lines already delivered from it. Memory is bounded by the cap too. An
    existing file (a re-attach after a restart) is read back first, streamed. A write that
    fails (a full disk) drops the line from the live file only (the run log keeps it) and is
    reported once through `on_error`.
    """

    def __init__(self, path: Path, cap_bytes: int,
                 on_error: Callable[[OSError], None] | None = None) -> None:
        self.path, self.cap_bytes, self._half = Path(path), cap_bytes, max(cap_bytes // 2, 1)
        self._on_error, self._failed = on_error, False
        self._lock = threading.Lock()
        self._head: list[str] = []
        self._head_bytes, self._head_full = 0, False
        self._middle: list[str | list[int]] = []  # runner lines, [bytes, stdout, stderr] runs
        self._tail: deque[tuple[str, str]] = deque()  # (stream, rendered)
        self._tail_bytes = 0
        self._file_bytes = 0
        for raw in read_log_lines(self.path):
            self._load(raw)
        self._file_bytes = self.path.stat().st_size if self.path.exists() else 0

    def _load(self, raw: str) -> None:
        omitted = parse_omitted(raw)
        if omitted is not None:
            size, lines = omitted
            self._head_full = True
            self._drop("", size, lines.get(STDOUT, 0), lines.get(STDERR, 0))
            return
        line = parse_line(raw)
        self._add(line.stream if line else "", raw + "\n")

    def __call__(self, line: OutputLine) -> None:
        rendered = fit_line(format_line(line), self._half) + "\n"
        with self._lock:
            self._add(line.stream, rendered)
            try:
                with open(self.path, "a", encoding="utf-8", newline="") as f:
                    f.write(rendered)
                self._file_bytes += len(rendered.encode("utf-8"))
                if self._file_bytes > 2 * self.cap_bytes:
                    text = self.text()
                    write_atomic(self.path, text)
                    self._file_bytes = len(text.encode("utf-8"))
                self._failed = False
            except OSError as exc:
                if not self._failed and self._on_error is not None:
                    self._on_error(exc)
                self._failed = True

    def _add(self, stream: str, rendered: str) -> None:
        size = len(rendered.encode("utf-8"))
        if not self._head_full and self._head_bytes + size <= self._half:
            self._head.append(rendered)
            self._head_bytes += size
            return
        self._head_full = True
        self._tail.append((stream, rendered))
        self._tail_bytes += size
        while self._tail_bytes > self._half and len(self._tail) > 1:
            old_stream, old = self._tail.popleft()
            old_size = len(old.encode("utf-8"))
            self._tail_bytes -= old_size
            if old_stream == RUNNER:
                self._middle.append(old)
            else:
                self._drop(old_stream, old_size, old_stream == STDOUT, old_stream == STDERR)

    def _drop(self, stream: str, size: int, stdout: int, stderr: int) -> None:
        if not self._middle or isinstance(self._middle[-1], str):
            self._middle.append([0, 0, 0])
        run = self._middle[-1]
        run[0] += size
        run[1] += int(stdout)
        run[2] += int(stderr)

    def text(self) -> str:
        """The live log as the file holds it after a rewrite: head, middle, tail."""
        parts = list(self._head)
        for item in self._middle:
            if isinstance(item, str):
                parts.append(item)
            else:
                lines = {STDOUT: item[1], STDERR: item[2]}
                parts.append(omitted_marker(item[0], self.cap_bytes, lines) + "\n")
        parts.extend(rendered for _, rendered in self._tail)
        return "".join(parts)
