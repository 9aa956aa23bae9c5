"""The daemon's inbox: atomic one-file messages, drain order, malformed files, the waiter."""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from helpers import utc_now

from fastflow.daemon.inbox import (
    Inbox,
    MalformedMessage,
    PushMessage,
    RefUpdate,
    RunRequestMessage,
    parse_message,
)

NOW = datetime(2026, 11, 22, 14, 30, 0, 123456, tzinfo=timezone.utc)
OLD = "0" * 40
NEW = "7f182d91b453615cdafaf4b3e6db5c9af91e9e3b"
LINE = f"{OLD} {NEW} refs/heads/main\n"
NOW_NS = 1795357800_123456000  # NOW in nanoseconds since the epoch


def test_push_round_trip(tmp_path: Path):
    inbox = Inbox(tmp_path / "state")
    path = inbox.post_push(LINE + f"{NEW} {OLD} refs/heads/other\n", posted_ns=5)
    assert path.parent == tmp_path / "state" / "inbox"
    assert path.name.startswith("push-5-")
    assert inbox.pending()
    [message] = inbox.drain()
    assert message == PushMessage(
        path.name, 5, (RefUpdate(OLD, NEW, "refs/heads/main"), RefUpdate(NEW, OLD, "refs/heads/other"))
    )
    assert message.updates_ref("refs/heads/main")
    assert not message.updates_ref("refs/heads/dev")
    assert not inbox.pending()
    assert os.listdir(inbox.path) == []


def test_empty_push_means_something_was_pushed(tmp_path: Path):
    inbox = Inbox(tmp_path)
    inbox.post_push("")
    [message] = inbox.drain()
    assert message.updates == ()
    assert message.updates_ref("refs/heads/main")


def test_post_push_refuses_lines_drain_would_reject(tmp_path: Path):
    inbox = Inbox(tmp_path)
    with pytest.raises(MalformedMessage, match="line 1 is not '<old> <new> <ref>': 'main'"):
        inbox.post_push("main\n")
    assert not inbox.pending()


def test_run_request_round_trip(tmp_path: Path):
    inbox = Inbox(tmp_path)
    request_id = inbox.post_run_request("etl", {"A": "1"}, "nightly", NOW)
    assert request_id.startswith("20261122T143000Z-")
    [name] = os.listdir(inbox.path)
    assert name.startswith(f"run-{NOW_NS}-") and name.endswith(".json")
    body = json.loads((inbox.path / name).read_text())
    assert body == {"pipeline": "etl", "env": {"A": "1"}, "run_config": "nightly",
                    "requested_at": "2026-11-22T14:30:00.123456+00:00", "request_id": request_id}
    [message] = inbox.drain()
    assert message == RunRequestMessage(name, NOW_NS, request_id, "etl", {"A": "1"}, "nightly", NOW)


def test_drain_returns_arrival_order_across_kinds(tmp_path: Path):
    inbox = Inbox(tmp_path)
    base = NOW_NS
    inbox.post_run_request("b", {}, None, NOW + timedelta(seconds=2))
    inbox.post_push(LINE, posted_ns=base + 3_000_000_000)
    inbox.post_push("", posted_ns=base + 1_000_000_000)
    inbox.post_run_request("a", {}, None, NOW)
    # A larger number with more digits must not sort before a smaller one (no string order).
    inbox.post_push("", posted_ns=base * 10)
    kinds = [(type(m).__name__, getattr(m, "pipeline", None)) for m in inbox.drain()]
    assert kinds == [("RunRequestMessage", "a"), ("PushMessage", None), ("RunRequestMessage", "b"),
                     ("PushMessage", None), ("PushMessage", None)]


def test_drain_ignores_files_still_being_written(tmp_path: Path):
    inbox = Inbox(tmp_path)
    (inbox.path / ".tmp-push-1-2").write_text("half a mess")
    assert not inbox.pending()
    assert inbox.drain() == []
    assert (inbox.path / ".tmp-push-1-2").exists()


@pytest.mark.parametrize(
    "name, content, reason",
    [
        ("push-1-abc", b"main\n", "line 1 is not '<old> <new> <ref>': 'main'"),
        ("push-1-abc", b"\xff\xfe", "not UTF-8 text"),
        ("run-1-abc.json", b"{not json", "not valid JSON"),
        ("run-1-abc.json", b"[]", "expected a JSON object, got list"),
        ("run-1-abc.json", b'{"pipeline": "a"}', "missing key(s) env, request_id, requested_at, run_config"),
        ("run-1-abc.json",
         b'{"pipeline": "a", "env": {"A": 1}, "run_config": null, "requested_at": "x", "request_id": "r"}',
         "'env' must map strings to strings, got {'A': 1}"),
        ("run-1-abc.json",
         b'{"pipeline": "a", "env": {}, "run_config": null, "requested_at": "yesterday", "request_id": "r"}',
         "'requested_at' is not an ISO 8601 time: 'yesterday'"),
        ("run-1-abc", b"{}", "the name is neither push-<time_ns>-<rand> nor run-<time_ns>-<rand>.json"),
        ("notes.txt", b"hello", "the name is neither push-<time_ns>-<rand> nor run-<time_ns>-<rand>.json"),
    ],
)
def test_malformed_files_are_moved_aside_with_a_warning(tmp_path: Path, caplog, name, content, reason):
    inbox = Inbox(tmp_path)
    inbox.post_push(LINE, posted_ns=2)
    (inbox.path / name).write_bytes(content)
    with caplog.at_level(logging.WARNING, logger="fastflow.daemon.inbox"):
        messages = inbox.drain()
    assert [type(m) for m in messages] == [PushMessage]
    assert (inbox.path / "bad" / name).read_bytes() == content
    [record] = caplog.records
    assert record.getMessage().startswith(
        f"inbox: {inbox.path / name} is not a valid message ({reason}"
    )
    assert record.getMessage().endswith(f"moved to {inbox.path / 'bad' / name}")
    assert not inbox.pending()  # bad/ itself is not a message


def test_a_directory_in_the_inbox_is_moved_aside(tmp_path: Path):
    inbox = Inbox(tmp_path)
    (inbox.path / "push-1-x").mkdir()
    assert inbox.drain() == []
    assert (inbox.path / "bad" / "push-1-x").is_dir()


def test_a_second_bad_file_of_the_same_name_keeps_both(tmp_path: Path):
    inbox = Inbox(tmp_path)
    for _ in range(2):
        (inbox.path / "junk").write_text("x")
        inbox.drain()
    assert len(os.listdir(inbox.path / "bad")) == 2


def test_parse_message_direct():
    message = parse_message("push-12-ab", LINE.encode())
    assert message == PushMessage("push-12-ab", 12, (RefUpdate(OLD, NEW, "refs/heads/main"),))


def test_concurrent_writers_never_produce_partial_reads(tmp_path: Path):
    inbox = Inbox(tmp_path)
    big_env = {f"K{i}": "v" * 200 for i in range(50)}  # ~12 KB: many write() calls if not atomic
    per_thread, threads = 60, 4
    drained: list = []
    done = threading.Event()

    def write(n: int) -> None:
        for i in range(per_thread):
            if i % 2:
                inbox.post_push(LINE * 40)
            else:
                inbox.post_run_request(f"p{n}", big_env, None, utc_now())

    def drain_loop() -> None:
        while not done.is_set():
            drained.extend(inbox.drain())
        drained.extend(inbox.drain())

    reader = threading.Thread(target=drain_loop)
    reader.start()
    writers = [threading.Thread(target=write, args=(n,)) for n in range(threads)]
    for w in writers:
        w.start()
    for w in writers:
        w.join()
    done.set()
    reader.join()
    assert len(drained) == per_thread * threads
    assert not (inbox.path / "bad").exists()
    for m in drained:
        if isinstance(m, RunRequestMessage):
            assert m.env == big_env
        else:
            assert len(m.updates) == 40


# -- the waiter ---------------------------------------------------------------------------------

def test_waiter_wakes_quickly_when_a_message_lands(tmp_path: Path):
    inbox = Inbox(tmp_path)
    with inbox.waiter() as waiter:
        assert not waiter.polling
        threading.Timer(0.2, inbox.post_push, args=(LINE,)).start()
        start = time.monotonic()
        assert waiter.wait(5) is True
        assert time.monotonic() - start < 0.2 + 0.5
        assert len(inbox.drain()) == 1


def test_waiter_latency_is_milliseconds(tmp_path: Path):
    inbox = Inbox(tmp_path)
    with inbox.waiter() as waiter:
        latencies = []
        for _ in range(5):
            landed = []
            # the time is taken before posting: the waiter may wake before the timer thread
            # returns from post_push
            t = threading.Timer(0.05, lambda: (landed.append(time.monotonic()), inbox.post_push("")))
            t.start()
            assert waiter.wait(5)
            latencies.append(time.monotonic() - landed[0])
            inbox.drain()
            t.join()
        assert sorted(latencies)[2] < 0.1


def test_waiter_does_not_wake_without_a_message(tmp_path: Path):
    inbox = Inbox(tmp_path)
    inbox.post_push(LINE)
    with inbox.waiter() as waiter:
        assert waiter.wait(1) is True  # was already there when the waiter started
        inbox.drain()  # deletions do not count
        assert waiter.wait(0.3) is False
        (inbox.path / ".tmp-push-1-2").write_text("in progress")  # temp files do not count
        (inbox.path / "bad").mkdir()
        assert waiter.wait(0.3) is False
        assert waiter.wait(0) is False


def test_a_message_during_drain_is_not_missed(tmp_path: Path):
    inbox = Inbox(tmp_path)
    with inbox.waiter() as waiter:
        inbox.post_push("")
        assert waiter.wait(5)
        inbox.post_push("")  # lands after the wake, before/while the daemon drains
        time.sleep(0.1)
        assert len(inbox.drain()) == 2
        # A spurious-looking wake is the price of never missing one: the next drain is empty.
        assert waiter.wait(1) is True
        assert inbox.drain() == []
        assert waiter.wait(0.2) is False


def test_idle_waiter_uses_no_cpu(tmp_path: Path):
    inbox = Inbox(tmp_path)
    with inbox.waiter() as waiter:
        before = time.process_time()  # all threads of this process, watchdog's included
        assert waiter.wait(2.0) is False
        assert time.process_time() - before < 0.05


def test_polling_fallback_wakes_too(tmp_path: Path):
    # The fallback for hosts without inotify, forced here: it is a real polling observer.
    inbox = Inbox(tmp_path)
    with inbox.waiter(polling=True) as waiter:
        assert waiter.polling
        assert waiter.wait(0.5) is False
        inbox.post_run_request("etl", {}, None, NOW)
        start = time.monotonic()
        assert waiter.wait(5) is True
        assert time.monotonic() - start < 1.0


def test_close_is_idempotent(tmp_path: Path):
    waiter = Inbox(tmp_path).waiter()
    waiter.close()
    waiter.close()
