"""The append log of the webhook intake (`daemon.segmentlog`): records back as written, across
segments and restarts; torn tails; the group commit; failed flushes; a full disk.

Real files on the test's filesystem and a real tmpfs for the full disk (needs root for mount).
A failing `fdatasync` cannot be produced on a healthy disk: that one test passes a function that
raises, the only fake here.
"""
from __future__ import annotations

import errno
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from fastflow.daemon.segmentlog import HEADER_BYTES, SegmentLog, segment_name

pytestmark = pytest.mark.timeout(60)


def test_records_come_back_in_order_across_segments_and_a_restart(tmp_path: Path):
    log = SegmentLog(tmp_path / "log", segment_bytes=4096)
    assert log.open() == []
    written = [({"n": n}, os.urandom(n * 40)) for n in range(30)]
    locations = [log.append(meta, body) for meta, body in written]
    assert len({loc.seq for loc in locations}) > 3  # rotated
    assert [log.read(loc).body for loc in locations] == [body for _, body in written]
    log.close()
    files = sorted((tmp_path / "log").glob("*.log"))
    assert all(p.stat().st_size == 4096 and p.stat().st_mode & 0o777 == 0o600 for p in files)
    again = SegmentLog(tmp_path / "log", segment_bytes=4096)
    records = again.open()
    assert [(r.meta, r.body) for r in records] == written
    assert [r.location for r in records] == locations
    new = again.append({"n": "after"})
    assert new.seq > max(loc.seq for loc in locations)  # a start writes to a new segment


def test_a_record_bigger_than_a_segment_gets_its_own(tmp_path: Path):
    log = SegmentLog(tmp_path, segment_bytes=4096)
    log.open()
    small = log.append({"a": 1}, b"x")
    big = log.append({"a": 2}, b"y" * 10_000)
    after = log.append({"a": 3}, b"z")
    assert big.seq != small.seq and big.offset == 0
    assert (tmp_path / segment_name(big.seq)).stat().st_size == 12_288  # rounded to 4 KiB
    assert after.seq == big.seq  # the room left in it is used
    log.close()
    assert [r.body for r in SegmentLog(tmp_path).open()] == [b"x", b"y" * 10_000, b"z"]


def test_a_torn_record_ends_its_segment_and_is_reported(tmp_path: Path, caplog):
    log = SegmentLog(tmp_path)
    log.open()
    for n in range(3):
        log.append({"n": n}, b"body %d" % n)
    last = log.append({"n": 3}, b"cut short")
    log.close()
    path = tmp_path / segment_name(last.seq)
    with open(path, "r+b") as handle:  # half of the last record reached the disk
        handle.seek(last.offset + HEADER_BYTES + 5)
        handle.write(b"\0" * 10)
    records = SegmentLog(tmp_path).open()
    assert [r.meta["n"] for r in records] == [0, 1, 2]
    assert f"{path}: the record at byte {last.offset} does not check" in caplog.text


def test_zeros_end_a_segment_quietly(tmp_path: Path, caplog):
    log = SegmentLog(tmp_path)
    log.open()
    log.append({"n": 1})
    log.close()
    assert [r.meta for r in SegmentLog(tmp_path).open()] == [{"n": 1}]
    assert "does not check" not in caplog.text


def test_appends_arriving_together_share_flushes(tmp_path: Path):
    calls = []

    def slow_fdatasync(fd: int) -> None:  # the real flush, made slow like a busy disk
        calls.append(fd)
        os.fdatasync(fd)
        time.sleep(0.005)

    log = SegmentLog(tmp_path, fdatasync=slow_fdatasync)
    log.open()
    locations = []

    def appender(n: int) -> None:
        for k in range(20):
            locations.append(log.append({"n": n, "k": k}, b"b" * 500))

    threads = [threading.Thread(target=appender, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(locations) == 320
    assert len(calls) == log.flushes <= 320 / 4  # measured: about 40
    log.close()
    assert sorted((r.meta["n"], r.meta["k"]) for r in SegmentLog(tmp_path).open()) == \
        sorted((n, k) for n in range(16) for k in range(20))


def test_a_failed_flush_fails_its_appends_and_the_segment_is_left(tmp_path: Path, caplog):
    failing = threading.Event()

    def fdatasync(fd: int) -> None:
        if failing.is_set():
            failing.clear()
            raise OSError(errno.EIO, "Input/output error")
        os.fdatasync(fd)

    log = SegmentLog(tmp_path, fdatasync=fdatasync)
    log.open()
    first = log.append({"n": 1})
    failing.set()
    with pytest.raises(OSError, match="not durable: Input/output error"):
        log.append({"n": 2})
    third = log.append({"n": 3})
    assert third.seq != first.seq  # never written again after a failed flush
    assert "a flush failed" in caplog.text
    log.close()


def test_an_append_that_cannot_make_its_segment_leaves_nothing(tmp_path: Path):
    """A real full disk: a 1 MiB tmpfs cannot hold a 2 MiB segment."""
    folder = tmp_path / "small"
    folder.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)], check=True)
    try:
        log = SegmentLog(folder / "log", segment_bytes=2 * 1024 * 1024)
        log.open()
        with pytest.raises(OSError) as raised:
            log.append({"n": 1})
        assert raised.value.errno == errno.ENOSPC
        assert list((folder / "log").iterdir()) == []
        log.close()
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def test_only_segments_no_longer_written_may_be_dropped(tmp_path: Path):
    log = SegmentLog(tmp_path, segment_bytes=4096)
    log.open()
    log.append({"n": 1})
    log.close()
    again = SegmentLog(tmp_path, segment_bytes=4096)
    again.open()
    assert again.retired() == [1, 2]  # the one written, the one made ahead and never used
    again.warm()
    new = again.append({"n": 2})
    assert again.retired() == [1, 2]  # not the current one, nor the one made ahead
    with pytest.raises(ValueError, match="not retired"):
        again.drop(new.seq)
    again.drop(1)
    again.drop(2)
    assert again.segments() == [new.seq, new.seq + 1]
    again.close()
    with pytest.raises(OSError, match="closed"):
        again.append({"n": 3})
