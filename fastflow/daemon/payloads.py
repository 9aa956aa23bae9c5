"""The webhook requests the intake accepted, from the answer to the run's record.

One store per state dir, `AcceptedRequests`, opened by the daemon and shared by the intake (which
adds to it before it answers) and the runs (which take the body at the start and settle at the
record). It keeps everything in a `segmentlog.SegmentLog` at `<state_dir>/webhooks/log/` and
an index in memory, so an accept creates no file: it is one record appended and flushed with
the others that arrive meanwhile (group commit).

- **accept** record: the request (`pipeline`, `run_config`, `request_id`, `requested_at`,
  `webhook`, `run_id`, `params` for a flow) and its body, appended durably before the answer.
- **settle** record: its run was recorded (or refused, or its flow run started): the body is no
  longer needed. Not flushed on its own: should it be lost, the next start sees the run on the
  results branch and settles it again.
- **void** record: the flush of an accept failed, so the sender was answered 503 and will send
  again; the record may still have reached the disk and must not run.

The index: the accepted requests not settled (`outstanding`: run id -> the request, where it
is, whether its run started: what the queue cap counts), and the **claims** of deliveries
(`(pipeline, delivery id)` hash -> run id), which make a repeated delivery start nothing for
`DELIVERY_KEEP_S`. A segment whose every accept is settled goes: its claims are first written
to `<state_dir>/webhooks/claims/<seq>.json` (fsynced; dropped once all are older than
`DELIVERY_KEEP_S`).

At start (`recover`): requests whose runs are recorded are settled (and their payload files
removed), the others not journalled are returned to be handed to the daemon again, and every
segment of the previous daemon is compacted (its outstanding requests appended again to the new
one, its claims saved, then dropped). Accepted files of earlier versions
(`webhooks/deliveries/`) are read into the log once, then removed.

The run's payload file (`statedir.webhook_payload_file`, what `FASTFLOW_WEBHOOK_PAYLOAD` names)
is written from the log when the run starts (`materialize`: not fsynced; should it be lost with
the machine, the run starts again from its journal and writes it again).
"""
from __future__ import annotations

import base64
import hashlib
import json
import logging
import threading
import time
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Callable, Mapping

from fastflow.daemon.segmentlog import DEFAULT_SEGMENT_BYTES, Location, SegmentLog
from fastflow.daemon.statedir import webhook_payload_dir
from fastflow.defaults import (
    STATE_WEBHOOK_CLAIMS,
    STATE_WEBHOOK_DELIVERIES,
    STATE_WEBHOOK_LOG,
)
from fastflow.errors import FastflowError
from fastflow.files import fsync_dir, write_atomic
from fastflow.record import WebhookInput

logger = logging.getLogger(__name__)

DELIVERY_KEEP_S = 30 * 86_400  # a delivery's claim is dropped 30 days after its request
_OLD_BODY_KEY = "body_base64"  # the body in an accepted file of earlier versions


class UnreadableRequest(FastflowError):
    """A stored webhook request cannot be read back: its run cannot get its body."""


def delivery_digest(pipeline: str, delivery: str) -> str:
    """16 hex digits naming (pipeline, delivery id): a claim's key and the run id's suffix."""
    return hashlib.sha256(f"{pipeline}\0{delivery}".encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Pending:
    """An accepted request not settled: the request, where its record is, whether it started."""

    message: dict
    location: Location
    started: bool = False


@dataclass(frozen=True)
class Claim:
    run_id: str
    at: float  # seconds since the epoch of the request
    seq: int  # the segment of its accept (0: from a claims file)


class AcceptedRequests:
    """The accepted webhook requests of `state_dir`; see the module doc. `now` gives seconds
    since the epoch (claims' ages)."""

    def __init__(self, state_dir: Path | str, *, now: Callable[[], float] = time.time,
                 segment_bytes: int = DEFAULT_SEGMENT_BYTES,
                 log: SegmentLog | None = None) -> None:
        self.state_dir = Path(state_dir)
        self.now = now
        self.log = log or SegmentLog(self.state_dir / STATE_WEBHOOK_LOG, segment_bytes)
        self.claims_dir = self.state_dir / STATE_WEBHOOK_CLAIMS
        self._lock = threading.Lock()
        self._compacting = threading.Lock()  # one compaction at a time (runs settle at once)
        self._outstanding: dict[str, Pending] = {}
        self._claims: dict[str, Claim] = {}
        self._live: dict[int, int] = {}  # segment -> accepts in it not settled
        self._waiting: dict[str, int] = {}  # pipeline -> outstanding not started
        self._claim_files: dict[Path, float] = {}  # claims file -> its newest claim's time
        self._opened = False

    # --- opening -------------------------------------------------------------------------

    def open(self) -> None:
        """Read the claims files and the log into the index (and the accepted files of
        earlier versions into the log). Idempotent."""
        if self._opened:
            return
        self._opened = True
        self._load_claims()
        for record in self.log.open():
            self._apply(record.meta, record.location)
        self._import_old()

    def _apply(self, meta: dict, location: Location) -> None:
        """Replay one record into the index."""
        if isinstance(meta.get("accept"), dict):
            message = meta["accept"]
            run_id = message.get("run_id")
            if not isinstance(run_id, str):
                logger.warning("%s: an accept without a run id at %s; skipped",
                               self.log.folder, location)
                return
            self._index(message, location)
        elif isinstance(meta.get("settle"), str) or isinstance(meta.get("void"), str):
            run_id = meta.get("settle") or meta.get("void")
            self._pop(run_id)
            if "void" in meta:
                self._unclaim(run_id)

    def _put(self, run_id: str, pending: Pending) -> None:
        """Index `pending` (replacing what was there), keeping the counts (under `_lock`)."""
        self._pop(run_id)
        self._outstanding[run_id] = pending
        self._live[pending.location.seq] = self._live.get(pending.location.seq, 0) + 1
        if not pending.started:
            pipeline = pending.message.get("pipeline")
            self._waiting[pipeline] = self._waiting.get(pipeline, 0) + 1

    def _pop(self, run_id: str) -> Pending | None:
        """Drop `run_id` from the index, keeping the counts (under `_lock`)."""
        pending = self._outstanding.pop(run_id, None)
        if pending is not None:
            self._live[pending.location.seq] -= 1
            if not pending.started:
                self._waiting[pending.message.get("pipeline")] -= 1
        return pending

    def _index(self, message: dict, location: Location) -> None:
        run_id = message["run_id"]
        old = self._outstanding.get(run_id)  # appended again by a compaction: the newer counts
        self._put(run_id, Pending(message, location, old.started if old else False))
        digest = _claim_key(message)
        if digest is not None:
            at = _epoch(message.get("requested_at"))
            self._claims[digest] = Claim(run_id, at, location.seq)

    def _load_claims(self) -> None:
        cutoff = self.now() - DELIVERY_KEEP_S
        for path in sorted(self.claims_dir.glob("*.json")):
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                claims = {str(k): (str(v[0]), float(v[1])) for k, v in data["claims"].items()}
            except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
                logger.error("%s cannot be read (%s); the deliveries it remembers may start a "
                             "run again if sent again; left in place", path, exc)
                continue
            newest = max((at for _, at in claims.values()), default=0.0)
            if newest < cutoff:
                path.unlink(missing_ok=True)
                continue
            self._claim_files[path] = newest
            for digest, (run_id, at) in claims.items():
                if at >= cutoff:
                    self._claims[digest] = Claim(run_id, at, 0)

    def _import_old(self) -> None:
        """Accepted files of earlier versions (`webhooks/deliveries/<hash>.json`): a request
        still holding its body is appended to the log, a claim joins the claims (saved in a
        claims file); each file goes once its content is durable here. One that cannot be read
        is left in place, reported."""
        folder = self.state_dir / STATE_WEBHOOK_DELIVERIES
        claims, done = {}, []
        for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            try:
                message = json.loads(path.read_text(encoding="utf-8"))
                body = message.pop(_OLD_BODY_KEY, None)
                if body is not None:
                    self.add(message, base64.b64decode(body, validate=True))
                elif _claim_key(message) is not None:
                    claims[_claim_key(message)] = (str(message["run_id"]), path.stat().st_mtime)
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
                logger.error("%s: an accepted webhook request of an earlier version cannot be "
                             "read (%s); left in place", path, exc)
                continue
            done.append(path)
        if claims:
            self._save_claims("imported", claims)
            for digest, (run_id, at) in claims.items():
                self._claims.setdefault(digest, Claim(run_id, at, 0))
        for path in done:
            path.unlink(missing_ok=True)
        if done:
            logger.info("webhooks: %d accepted request(s) of an earlier version read into %s",
                        len(done), self.log.folder)

    # --- the intake ----------------------------------------------------------------------

    def warm(self) -> None:
        """Have the log's first segment made before the first request (`SegmentLog.warm`)."""
        self.log.warm()

    def claim(self, digest: str) -> str | None:
        """The run id a delivery (by `delivery_digest`) was given within `DELIVERY_KEEP_S`."""
        found = self._claims.get(digest)
        if found is None or found.at < self.now() - DELIVERY_KEEP_S:
            return None
        return found.run_id

    def add(self, message: dict, body: bytes) -> None:
        """Store an accepted request and its body, durably (returns once flushed); then it
        is outstanding and its delivery claimed. `OSError` when it cannot be made durable:
        then it is void (a void record follows) and nothing of it counts."""
        try:
            location = self.log.append({"accept": message}, body)
        except OSError:
            try:
                self.log.append({"void": message["run_id"]}, durable=False)
            except OSError:
                pass  # the next start may find it: it then runs (the sender was told 503)
            raise
        with self._lock:
            self._index(message, location)

    def waiting(self, pipeline: str) -> int:
        """Accepted requests of `pipeline` (or flow) whose runs have not started."""
        with self._lock:
            return self._waiting.get(pipeline, 0)

    def pending(self, run_id: str) -> dict | None:
        """The request of run `run_id` while it is outstanding, else None."""
        with self._lock:
            found = self._outstanding.get(run_id)
        return found.message if found is not None else None

    # --- the runs ------------------------------------------------------------------------

    def materialize(self, run_id: str, webhook: WebhookInput) -> None:
        """When webhook run `run_id` starts: write its body to its payload file
        (`webhook.payload_file`, mode 0600) and count it started. Nothing to do when the run
        is not outstanding (its payload file was written by whoever queued it). `OSError` when
        the file cannot be written; `UnreadableRequest` when the log cannot give the body."""
        with self._lock:
            found = self._outstanding.get(run_id)
            if found is None:
                return
            self._put(run_id, replace(found, started=True))
        try:
            body = self.log.read(found.location).body
        except (OSError, ValueError) as exc:
            raise UnreadableRequest(
                f"{self.log.folder}: the stored webhook request of {run_id} cannot be read "
                f"({exc}); the run cannot get its payload, and the sender must send the "
                "request again") from None
        payload = Path(webhook.payload_file)
        payload.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_atomic(payload, body, mode=0o600)

    def settle(self, run_id: str) -> None:
        """Webhook run `run_id` is recorded (or needs its body no more): drop it from the
        outstanding ones (a settle record, not flushed) and drop the segments left with
        none. Its delivery's claim stays."""
        with self._lock:
            if self._pop(run_id) is None:
                return
        try:
            self.log.append({"settle": run_id}, durable=False)
        except OSError as exc:  # the next start settles it again from the results branch
            logger.warning("webhooks: the settle of %s is not logged (%s)", run_id, exc)
        self.compact()

    # --- at start, and as segments empty -------------------------------------------------

    def recover(self, journalled: Mapping[str, bool],
                recorded: Callable[[str], bool]) -> list[dict]:
        """At the daemon's start: count started the outstanding requests `journalled` says
        (run id -> started: the daemon's reconcile settles those recorded meanwhile), settle
        the others whose runs are recorded, remove the payload files of runs recorded, and
        return, oldest first, the requests to hand to the daemon again (neither journalled
        nor recorded). Then compact every old segment."""
        again = []
        for run_id, pending in sorted(self._outstanding.items(),
                                      key=lambda item: item[1].location):
            if run_id in journalled:
                if journalled[run_id]:
                    with self._lock:
                        self._put(run_id, replace(pending, started=True))
            elif recorded(run_id):
                self.settle(run_id)
            else:
                again.append(pending.message)
        self._sweep_payload_files(journalled, recorded)
        self._move_forward()
        return again

    def _sweep_payload_files(self, journalled: Mapping[str, bool],
                             recorded: Callable[[str], bool]) -> None:
        """Remove the payload files of runs recorded (a daemon that died between a record and
        the removal left them)."""
        folder = webhook_payload_dir(self.state_dir)
        try:
            names = [p for p in folder.iterdir() if not p.name.startswith(".")]
        except FileNotFoundError:
            return
        for path in names:
            if path.name not in self._outstanding and path.name not in journalled \
                    and recorded(path.name):
                try:
                    path.unlink()
                except OSError as exc:  # e.g. a folder of that name: never stops the start
                    logger.warning("run %s: its webhook payload %s cannot be removed: %s",
                                   path.name, path, exc)

    def _move_forward(self) -> None:
        """Append the outstanding requests of segments not written by this process to the
        current one (flushed once, at the end), so that those segments can go."""
        retired = set(self.log.retired())
        with self._lock:
            old = [(run_id, p) for run_id, p in self._outstanding.items()
                   if p.location.seq in retired]
        moved = []
        for run_id, pending in sorted(old, key=lambda item: item[1].location):
            try:
                record = self.log.read(pending.location)
                location = self.log.append({"accept": record.meta["accept"]}, record.body,
                                           durable=False)
            except (OSError, ValueError, KeyError) as exc:  # its segment stays, and says why
                logger.error("webhooks: the request of %s cannot be moved out of %s (%s); "
                             "its segment is kept", run_id, self.log.folder, exc)
                continue
            moved.append((run_id, record.meta["accept"], location))
        try:
            self.log.flush()
        except OSError as exc:  # the old segments stay: the next start moves them again
            logger.error("webhooks: the requests moved out of the old segments of %s are not "
                         "durable (%s); those segments are kept", self.log.folder, exc)
            return
        with self._lock:
            for run_id, message, location in moved:
                if run_id in self._outstanding:
                    self._index(message, location)
        self.compact()

    def compact(self) -> None:
        """Drop each retired segment (`SegmentLog.retired`) left with no outstanding request,
        its claims saved first; drop claims past `DELIVERY_KEEP_S`. A failure (a full disk) is
        logged: the segment stays, tried again at the next settle."""
        with self._compacting:
            try:
                self._compact()
            except OSError as exc:
                logger.warning("webhooks: a settled segment of %s cannot be dropped yet (%s)",
                               self.log.folder, exc)

    def _compact(self) -> None:
        retired = self.log.retired()
        with self._lock:
            empty = [seq for seq in retired if self._live.get(seq, 0) <= 0]
            saved = {seq: {d: (c.run_id, c.at) for d, c in self._claims.items() if c.seq == seq}
                     for seq in empty}
        for seq in empty:
            if saved[seq]:
                self._save_claims(f"{seq:012d}", saved[seq])
            self.log.drop(seq)
            with self._lock:
                self._live.pop(seq, None)
                for digest in saved[seq]:
                    if digest in self._claims and self._claims[digest].seq == seq:
                        self._claims[digest] = replace(self._claims[digest], seq=0)
        if empty:
            self._expire_claims()

    def _save_claims(self, name: str, claims: Mapping[str, tuple[str, float]]) -> None:
        self.claims_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = self.claims_dir / f"{name}.json"
        write_atomic(path, json.dumps({"claims": {d: list(v) for d, v in sorted(claims.items())}}),
                     durable=True, mode=0o600)
        self._claim_files[path] = max(at for _, at in claims.values())

    def _expire_claims(self) -> None:
        cutoff = self.now() - DELIVERY_KEEP_S
        with self._lock:
            for digest in [d for d, c in self._claims.items() if c.at < cutoff and not c.seq]:
                del self._claims[digest]
        expired = [path for path, newest in self._claim_files.items() if newest < cutoff]
        for path in expired:  # known from their load or save: no file is read again
            path.unlink(missing_ok=True)
            del self._claim_files[path]
        if expired:
            fsync_dir(self.claims_dir)

    def _unclaim(self, run_id: str) -> None:
        for digest in [d for d, c in self._claims.items() if c.run_id == run_id]:
            del self._claims[digest]

    def close(self) -> None:
        self.log.close()


def _claim_key(message: dict) -> str | None:
    webhook = message.get("webhook")
    delivery = webhook.get("delivery_id") if isinstance(webhook, dict) else None
    pipeline = message.get("pipeline")
    if not isinstance(delivery, str) or not isinstance(pipeline, str):
        return None
    return delivery_digest(pipeline, delivery)


def _epoch(iso: object) -> float:
    try:
        return datetime.fromisoformat(str(iso)).timestamp()
    except ValueError:
        return time.time()
