"""An append-only log of records in preallocated segment files, made durable in groups.

For a writer that may answer only once what it wrote survives a power cut, and must answer many
times a second: the webhook intake (`daemon.payloads` stores its accepted requests here).

- **Segments.** `<folder>/<seq:012d>.log`, each `segment_bytes` long (bigger when one record
  needs it), written full of zeros and fsynced with its folder *before* its first record: a
  background thread keeps the next one ready. A record is then a write into blocks the file
  already has, so its `fdatasync` writes the data and flushes the disk, with nothing else to
  commit: no new file, no size change, no folder to fsync, no wait for the filesystem's journal
  (which the daemon's run journal, the results branch and the containers share). Old segments
  are never written again; a start writes to a new one.
- **Records.** A 16-byte header (`MAGIC`, the payload's length, the meta's length, the
  payload's CRC-32), then the payload: `meta` as JSON, then `body`, raw bytes.
- **Group commit.** `append` writes its record at once (`pwrite`, in order, under a lock). A
  durable append then waits until an `fdatasync` that began after its write has returned: the
  first waiter to find none running starts one for everything written so far, the others wait
  for it (then, if written after it began, for the next). Appenders arriving together share one
  or two flushes instead of one each, and no thread is kept for it.
- **Replay** (`open`) reads every segment up to its first record that does not check. Zeros end
  a segment normally (never written). Anything else is a torn write: a record never
  acknowledged, since an acknowledged record was flushed with everything written before it, so
  what precedes a bad record is whole, and what follows it was never answered; it is reported
  and skipped.
- **A failed `fdatasync`** raises `OSError` in every append of its group; the segment is left
  for a fresh one (the kernel may have dropped the pages it could not write, and a later flush
  of the same file would not say so). What the records meant is the caller's to undo.

No knowledge of what the records mean: the caller drops a segment (`drop`) once it needs none
of its records.
"""
from __future__ import annotations

import json
import logging
import os
import re
import struct
import threading
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterator

from fastflow.files import fsync_dir

logger = logging.getLogger(__name__)

MAGIC = b"FFr1"
_HEADER = struct.Struct("<4sIII")  # magic, payload length, meta length, crc32(payload)
HEADER_BYTES = _HEADER.size
DEFAULT_SEGMENT_BYTES = 16 * 1024 * 1024
_ZEROS = bytes(1024 * 1024)
FAILURES_KEPT = 64  # failed flushes remembered for the appends still to be told
_NAME = re.compile(r"(?P<seq>\d{12})\.log")


@dataclass(frozen=True, order=True)
class Location:
    """Where a record is: its segment, its offset in it and its length, header included."""

    seq: int
    offset: int
    length: int


@dataclass(frozen=True)
class Record:
    """A record read back: where it is, its meta and its body."""

    location: Location
    meta: dict
    body: bytes


def frame(meta: dict, body: bytes = b"") -> bytes:
    """The bytes of one record (header, meta JSON, body)."""
    head = json.dumps(meta, separators=(",", ":"), sort_keys=True).encode("utf-8")
    payload = head + body
    return _HEADER.pack(MAGIC, len(payload), len(head), zlib.crc32(payload)) + payload


def _parse(data: bytes, seq: int, offset: int) -> Record | None:
    """The record at `offset` of `data` (segment `seq`), or None when the bytes there do not
    check: magic, lengths within `data`, CRC-32 of the payload, meta a JSON object."""
    if offset + HEADER_BYTES > len(data):
        return None
    magic, length, head, crc = _HEADER.unpack_from(data, offset)
    end = offset + HEADER_BYTES + length
    payload = data[offset + HEADER_BYTES:end]
    if magic != MAGIC or head > length or end > len(data) or zlib.crc32(payload) != crc:
        return None
    try:
        meta = json.loads(payload[:head])
    except ValueError:
        return None
    if not isinstance(meta, dict):
        return None
    return Record(Location(seq, offset, end - offset), meta, payload[head:])


def segment_name(seq: int) -> str:
    return f"{seq:012d}.log"


class _Segment:
    """A segment open for writing: its descriptor, size and where the next record goes."""

    def __init__(self, seq: int, path: Path, fd: int, size: int) -> None:
        self.seq, self.path, self.fd, self.size = seq, path, fd, size
        self.tail = 0
        self.failed = False  # an fdatasync of it failed: written no more

    def room(self, length: int) -> bool:
        return not self.failed and self.tail + length <= self.size


class SegmentLog:
    """The segments of `folder`; see the module doc. `fdatasync` may be replaced (tests that
    must see a flush fail, which a real disk here cannot be made to do)."""

    def __init__(self, folder: Path, segment_bytes: int = DEFAULT_SEGMENT_BYTES, *,
                 fdatasync: Callable[[int], None] = os.fdatasync) -> None:
        self.folder = Path(folder)
        self.segment_bytes = segment_bytes
        self._fdatasync = fdatasync
        self._lock = threading.Lock()  # the tail: reserving, writing, rotating
        self._flush = threading.Condition(threading.Lock())  # the group commit
        self._written = 0  # appends written so far (tickets)
        self._synced = 0  # every append up to this ticket is durable
        self._syncing = False
        self._dirty: dict[int, _Segment] = {}  # written since the last flush began
        self._failed: list[tuple[int, int, OSError]] = []  # (after, up to) tickets, error
        self._current: _Segment | None = None
        self._writers: dict[int, _Segment] = {}  # segments written by this process, open
        self._next_seq = 1
        self._first_own = 1  # the first segment this process writes (set by `open`)
        self._ready: _Segment | None = None  # prepared ahead by `_preparer`
        self._preparer: threading.Thread | None = None
        self._closed = False
        self.flushes = 0  # fdatasync calls made (what the group commit saves is seen here)
        self.durable_appends = 0  # appends that waited for a flush

    # --- opening -------------------------------------------------------------------------

    def open(self) -> list[Record]:
        """Create the folder; read every segment's records, oldest first (module doc: a
        torn record ends its segment, reported). New records go to new segments."""
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        records: list[Record] = []
        for seq in self.segments():
            records.extend(self._replay(seq))
            self._next_seq = max(self._next_seq, seq + 1)
        self._first_own = self._next_seq
        return records

    def retired(self) -> list[int]:
        """The segments no longer written (every one before the current; before the first
        append, every one an earlier process wrote): those a caller may `drop`. A segment
        being prepared or ready ahead is never one of them."""
        with self._lock:
            below = self._current.seq if self._current is not None else self._first_own
        return [seq for seq in self.segments() if seq < below]

    def segments(self) -> list[int]:
        """The sequence numbers of the segment files in the folder, in order."""
        try:
            names = os.listdir(self.folder)
        except FileNotFoundError:
            return []
        return sorted(int(m["seq"]) for m in map(_NAME.fullmatch, names) if m)

    def _replay(self, seq: int) -> Iterator[Record]:
        path = self.folder / segment_name(seq)
        try:
            data = path.read_bytes()
        except OSError as exc:
            logger.error("%s cannot be read (%s); its records are skipped", path, exc)
            return
        offset = 0
        while offset + HEADER_BYTES <= len(data):
            if not any(data[offset:offset + HEADER_BYTES]):
                return  # never written
            record = _parse(data, seq, offset)
            if record is None:
                logger.warning("%s: the record at byte %d does not check (a write cut short, "
                               "never acknowledged); the rest of the segment is skipped",
                               path, offset)
                return
            yield record
            offset += record.location.length

    def read(self, location: Location) -> Record:
        """The record at `location` (`OSError` when its segment is gone; `ValueError` when the
        bytes there are not a record)."""
        fd = os.open(self.folder / segment_name(location.seq), os.O_RDONLY)
        try:
            data = os.pread(fd, location.length, location.offset)
        finally:
            os.close(fd)
        record = _parse(data, location.seq, 0)
        if record is None or record.location.length != location.length:
            raise ValueError(f"no record at {location}")
        return replace(record, location=location)

    # --- writing -------------------------------------------------------------------------

    def warm(self) -> None:
        """Have a segment ready for the first append (in the background): a writer about to
        take requests calls it so that the first one does not wait for the zeros."""
        with self._lock:
            if self._current is None and self._ready is None and self._preparer is None:
                self._prepare_ahead()

    @property
    def ready(self) -> bool:
        """Whether a segment is made and waits for the next append that needs one."""
        preparer = self._preparer
        return self._ready is not None and (preparer is None or not preparer.is_alive())

    @property
    def current(self) -> int | None:
        """The segment appends go to now (None before the first append)."""
        current = self._current
        return current.seq if current is not None else None

    def append(self, meta: dict, body: bytes = b"", *, durable: bool = True) -> Location:
        """Write one record; with `durable`, return only once it is flushed (group commit).
        `OSError` when it cannot be written (no room for a new segment: nothing of it is
        left) or its flush failed (module doc)."""
        record = frame(meta, body)
        with self._lock:
            if self._closed:
                raise OSError(f"{self.folder}: the log is closed")
            segment = self._room(len(record))
            offset = segment.tail
            view = memoryview(record)
            while view:  # a write into preallocated blocks: short only on a signal
                done = os.pwrite(segment.fd, view, offset + len(record) - len(view))
                view = view[done:]
            segment.tail += len(record)
            self._written += 1
            ticket = self._written
            self._dirty[segment.seq] = segment
            self.durable_appends += durable
        if durable:
            self._wait_flushed(ticket)
        return Location(segment.seq, offset, len(record))

    def flush(self) -> None:
        """Return once everything appended so far is durable (`OSError` as `append`)."""
        with self._lock:
            ticket = self._written
        self._wait_flushed(ticket)

    def _room(self, length: int) -> _Segment:
        """The segment the next `length` bytes go to: the current one, else the one prepared
        ahead (waited for), else one made now; a record bigger than a segment gets its own."""
        current = self._current
        if current is not None and current.room(length):
            return current
        if length > self.segment_bytes:
            segment = self._make(self._take_seq(), _round_up(length))
        else:
            segment = self._take_ready() or self._make(self._take_seq(), self.segment_bytes)
        self._current = segment
        if length <= self.segment_bytes:
            self._prepare_ahead()
        return segment

    def _take_seq(self) -> int:
        seq, self._next_seq = self._next_seq, self._next_seq + 1
        return seq

    def _take_ready(self) -> _Segment | None:
        preparer = self._preparer
        if preparer is not None:
            preparer.join()
        ready, self._ready = self._ready, None
        return ready

    def _prepare_ahead(self) -> None:
        """Make the next segment in a background thread (called under `_lock`)."""
        seq = self._take_seq()

        def prepare() -> None:
            try:
                self._ready = self._make(seq, self.segment_bytes)
            except OSError as exc:  # e.g. a full disk: the append that needs it makes one
                logger.warning("%s: the next segment cannot be made yet: %s", self.folder, exc)

        self._preparer = threading.Thread(target=prepare, name="segment-log-prepare",
                                          daemon=True)
        self._preparer.start()

    def _make(self, seq: int, size: int) -> _Segment:
        """Create segment `seq` full of zeros, fsynced with the folder; `OSError` leaves no
        file behind."""
        path = self.folder / segment_name(seq)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            left = size
            while left:
                left -= os.write(fd, _ZEROS[:min(left, len(_ZEROS))])
            os.fsync(fd)
            fsync_dir(self.folder)
        except OSError:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        segment = _Segment(seq, path, fd, size)
        self._writers[seq] = segment
        return segment

    def _wait_flushed(self, ticket: int) -> None:
        with self._flush:
            while self._synced < ticket:
                if self._syncing:
                    self._flush.wait()
                    continue
                self._syncing = True
                with self._lock:
                    target, dirty = self._written, list(self._dirty.values())
                    self._dirty.clear()
                self._flush.release()
                try:
                    error = self._flush_all(dirty)
                finally:
                    self._flush.acquire()
                    self._syncing = False
                if error is not None:
                    self._failed.append((self._synced, target, error))
                    del self._failed[:-FAILURES_KEPT]
                self._synced = target
                self._flush.notify_all()
            for after, upto, error in self._failed:  # was this append's flush the failed one?
                if after < ticket <= upto:
                    raise OSError(error.errno, f"{self.folder}: not durable: {error.strerror}")

    def _flush_all(self, dirty: list[_Segment]) -> OSError | None:
        """fdatasync each segment written since the last flush; the error of one that
        failed (it is written no more: module doc), else None."""
        error = None
        for segment in dirty:
            try:
                self._fdatasync(segment.fd)
                self.flushes += 1
            except OSError as exc:
                segment.failed = True
                error = exc
                logger.error("%s: a flush failed (%s); the appends it covered are not durable",
                             segment.path, exc)
        return error

    # --- dropping ------------------------------------------------------------------------

    def drop(self, seq: int) -> None:
        """Remove retired segment `seq`: its records are no longer needed."""
        if seq not in self.retired():
            raise ValueError(f"segment {seq} of {self.folder} is not retired")
        with self._lock:
            segment = self._writers.pop(seq, None)
            self._dirty.pop(seq, None)
        if segment is not None:
            os.close(segment.fd)
        (self.folder / segment_name(seq)).unlink(missing_ok=True)

    def close(self) -> None:
        """Flush what was written, then close every segment (appends raise from now on). The
        segment prepared ahead stays, empty: the next open reads nothing from it."""
        with self._lock:
            self._closed = True
            preparer = self._preparer
        if preparer is not None:
            preparer.join()
        with self._lock:
            ticket = self._written
        try:
            self._wait_flushed(ticket)
        except OSError:
            pass  # logged by the flush; their appends were told
        if ticket:
            logger.info("%s: %d records appended, %d of them durable, in %d flushes",
                        self.folder, ticket, self.durable_appends, self.flushes)
        with self._lock:
            for segment in self._writers.values():
                os.close(segment.fd)
            self._writers.clear()
            self._dirty.clear()
            self._current = self._ready = None


def _round_up(length: int, block: int = 4096) -> int:
    return -(-length // block) * block
