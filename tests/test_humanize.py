"""fastflow.humanize: the words people read, one function each."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from fastflow.humanize import (
    did_you_mean,
    format_ago,
    format_bytes,
    format_cores,
    format_elapsed,
    format_roughly,
    format_seconds,
    format_time,
    format_until,
    show,
    visible_controls,
)

NOW = datetime(2026, 11, 22, 14, 30, tzinfo=timezone.utc)


@pytest.mark.parametrize("seconds, text", [(-5, "in the future"), (5, "just now"), (300, "5 min ago"),
                                           (7200, "2 h ago"), (86400, "1 day ago"),
                                           (3 * 86400, "3 days ago")])
def test_format_ago(seconds, text):
    assert format_ago(NOW - timedelta(seconds=seconds), NOW) == text


@pytest.mark.parametrize("seconds, text", [(5, "due now"), (300, "in 5 min"), (7200, "in 2 h"),
                                           (86400, "in 1 day"), (3 * 86400, "in 3 days")])
def test_format_until(seconds, text):
    assert format_until(NOW + timedelta(seconds=seconds), NOW) == text


def test_sizes_and_cores():
    assert [format_bytes(v) for v in (None, 512, 1536, 512 * 2**20, 1.5 * 2**30)] == [
        "-", "512 B", "1.5 KiB", "512 MiB", "1.5 GiB"]
    assert [format_cores(v) for v in (0.25, 1, 2)] == ["0.25 cores", "1 core", "2 cores"]


def test_durations_each_for_its_place():
    assert [format_seconds(v) for v in (0.25, 12.34, 245, 3725)] == ["250 ms", "12.3 s", "4m05s", "1h02m"]
    assert [format_elapsed(v) for v in (None, 12.5, 245, 3723)] == ["-", "12.5s", "4m05s", "1h02m03s"]
    assert [format_roughly(v) for v in (0, 90, 3900, 93784)] == ["0s", "1m30s", "1h5m", "1d2h"]


def test_time_value_and_hint():
    assert format_time(NOW, "Europe/Paris") == "2026-11-22 15:30:00 CET"
    assert format_time(None) == ""
    assert show("x" * 100) == '"' + "x" * 56 + "..."
    assert did_you_mean("timout", ["timeout", "tags"]) == '; did you mean "timeout"?'
    assert did_you_mean("zzz", ["timeout"]) == ""


def test_visible_controls_shows_what_a_terminal_would_obey():
    text = "a\x1b[2Jb\x07c\x00d\x1b]0;title\x07\te\r\x7f\x9b\u2028é\n"
    assert visible_controls(text) == (
        "a\\x1b[2Jb\\x07c\\x00d\\x1b]0;title\\x07\te\\r\\x7f\\x9b\u2028é\n")
    assert visible_controls("two\nlines", lines=False) == "two\\nlines"
