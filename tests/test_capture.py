"""The capped, masked run log (fastflow.run.capture): fast unit tests, no processes."""
from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

import pytest

from fastflow.executors.base import OutputLine
from fastflow.run.capture import (
    LogCapture,
    Masker,
    format_line,
    format_size,
    format_timestamp,
    omitted_marker,
)

T0 = datetime(2026, 11, 22, 14, 30, 0, 123456, tzinfo=timezone.utc)


def line(text: str, stream: str = "stdout", at: datetime = T0) -> OutputLine:
    return OutputLine(stream, text, at)


def test_line_format_is_utc_millis_stream_and_text():
    cet = timezone(timedelta(hours=1))
    assert format_timestamp(T0.astimezone(cet)) == "2026-11-22T14:30:00.123Z"
    assert format_line(line("hello  world ")) == "2026-11-22T14:30:00.123Z stdout | hello  world "
    assert format_line(line("boom", "stderr")) == "2026-11-22T14:30:00.123Z stderr | boom"


def test_small_log_is_kept_whole_and_forwarded():
    seen: list[OutputLine] = []
    capture = LogCapture(1000, forward=seen.append)
    capture(line("one"))
    capture(line("two", "stderr"))
    capture.emit("attempt 1 of 1 started", T0)
    assert capture.text() == (
        "2026-11-22T14:30:00.123Z stdout | one\n"
        "2026-11-22T14:30:00.123Z stderr | two\n"
        "2026-11-22T14:30:00.123Z runner | attempt 1 of 1 started\n"
    )
    assert not capture.truncated
    assert [s.text for s in seen] == ["one", "two", "attempt 1 of 1 started"]


def test_cap_keeps_head_and_tail_with_marker():
    prefix = len(format_line(line(""))) + 1  # timestamp, stream, separator, newline
    capture = LogCapture(10 * (prefix + 3))  # room for 5 lines in the head, 5 in the tail
    for i in range(100):
        capture(line(f"{i:03d}"))
    text = capture.text().splitlines()
    assert [t[-3:] for t in text[:5]] == ["000", "001", "002", "003", "004"]
    assert [t[-3:] for t in text[-5:]] == ["095", "096", "097", "098", "099"]
    omitted = 90 * (prefix + 3)
    assert text[5] == f"--- {omitted} bytes omitted by Fast-Flow (log cap {format_size(capture.cap_bytes)}) ---"
    assert len(text) == 11
    assert capture.truncated
    assert capture.omitted_bytes == omitted
    assert capture.total_bytes == 100 * (prefix + 3)


def test_marker_text():
    assert omitted_marker(12345, 5 * 1024 * 1024) == (
        "--- 12345 bytes omitted by Fast-Flow (log cap 5.0 MiB) ---"
    )
    assert format_size(512) == "512 B"
    assert format_size(64 * 1024) == "64.0 KiB"


def test_log_never_exceeds_cap_plus_marker():
    capture = LogCapture(4096)
    for i in range(5000):
        capture(line("x" * (i % 97)))
    body = capture.text().encode()
    marker = omitted_marker(capture.omitted_bytes, 4096).encode()
    assert len(body) <= 4096 + len(marker) + 1


def test_overlong_line_is_cut_to_fit():
    capture = LogCapture(200)
    capture(line("y" * 1000))
    capture(line("last"))
    text = capture.text()
    assert text.splitlines()[0].endswith("y [line cut by Fast-Flow]")
    assert text.endswith("stdout | last\n")
    assert len(text.splitlines()[0].encode()) + 1 <= 100


def test_last_lines_survive_the_cap():
    capture = LogCapture(1024)
    for i in range(10_000):
        capture(line(f"line {i}"))
    assert capture.text().endswith("stdout | line 9999\n")


def test_masker_replaces_values_longest_first():
    masker = Masker(["abc", "abcdef", ""])
    assert masker.mask("x abcdef y abc z") == "x *** y *** z"
    assert masker.mask("nothing") == "nothing"
    assert not Masker([""])


def test_masker_masks_multiline_secrets_line_by_line():
    key = "-----BEGIN KEY-----\nAAAAsecretbody\n-----END KEY-----\n"
    masker = Masker([key])
    assert masker.mask("  AAAAsecretbody") == "  ***"
    assert masker.mask("-----END KEY-----") == "***"


def test_capture_masks_before_storing_and_forwarding():
    seen: list[OutputLine] = []
    masker = Masker(["hunter2"])
    capture = LogCapture(1000, forward=seen.append, masker=masker)
    capture(line("password is hunter2!"))
    masker.add(["later-secret"])
    capture(line("later-secret"))
    assert "hunter2" not in capture.text()
    assert "later-secret" not in capture.text()
    assert [s.text for s in seen] == ["password is ***!", "***"]


def test_capture_is_thread_safe():
    capture = LogCapture(10 * 1024 * 1024)

    def write(stream: str) -> None:
        for i in range(2000):
            capture(line(f"{stream} {i}", stream))

    threads = [threading.Thread(target=write, args=(s,)) for s in ("stdout", "stderr")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = capture.text().splitlines()
    assert len(lines) == 4000
    for stream in ("stdout", "stderr"):
        mine = [t.split(" | ")[1] for t in lines if f" {stream} |" in t]
        assert mine == [f"{stream} {i}" for i in range(2000)]


def test_cap_too_small_is_refused():
    with pytest.raises(ValueError, match="log cap must be at least 2 bytes, got 1"):
        LogCapture(1)
