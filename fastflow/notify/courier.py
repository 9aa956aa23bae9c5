"""Delivery off the caller's thread: a queue, one worker, a timeout per attempt, bounded retries.

`Courier.post` never blocks and never raises: the daemon hands a message over and goes on with
its runs. The worker tries each message up to `attempts` times, waiting `retry_delay` seconds
before the first retry and twice as long before each next one, and reports every attempt to
`report(entry)` (the daemon records it on the results branch). An entry names the target by its
name and its private form (`delivery.describe`), never by the URL itself.
"""
from __future__ import annotations

import logging
import queue
import re
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Callable
from urllib.parse import parse_qsl, unquote, urlsplit

from fastflow import defaults
from fastflow.notify import delivery
from fastflow.notify.message import Message

logger = logging.getLogger(__name__)

MAX_QUEUED = 1000  # messages waiting; past it the oldest are recorded as dropped


@dataclass(frozen=True)
class Parcel:
    """One message for one target, with what to record about it."""

    id: str
    target: str  # the target's name
    shown: str  # what may be recorded of where it goes: the private URL or "secret NAME"
    url: str  # where it goes (in memory only: it may carry a token)
    message: Message
    queued_at: datetime


def entry(parcel: Parcel, attempts: list[dict], outcome: str) -> dict:
    """The record of `parcel` after `attempts` ("pending", "delivered", "failed", "dropped")."""
    return {
        "id": parcel.id, "target": parcel.target, "to": parcel.shown, "outcome": outcome,
        "queued_at": parcel.queued_at.isoformat(), "title": parcel.message.title,
        "events": [e.to_json() for e in parcel.message.events], "attempts": list(attempts),
    }


class Courier:
    """Delivers parcels one after another on a worker thread (see the module doc).

    `clock()` stamps attempts; `wait(seconds)` is how the worker waits between attempts (an
    Event's wait by default, so `stop` cuts it short); `send` is `delivery.send`'s shape.
    """

    def __init__(self, report: Callable[[dict], None], clock: Callable[[], datetime], *,
                 attempts: int = defaults.NOTIFY_ATTEMPTS,
                 retry_delay: float = defaults.NOTIFY_RETRY_DELAY,
                 timeout: float = defaults.NOTIFY_TIMEOUT,
                 send: Callable[[str, Message, float], None] = delivery.send) -> None:
        self.report = report
        self.clock = clock
        self.attempts = attempts
        self.retry_delay = retry_delay
        self.timeout = timeout
        self.send = send
        self._queue: queue.Queue[Parcel | None] = queue.Queue()
        self._stopping = threading.Event()
        self._idle = threading.Condition()
        self._busy = 0
        self._thread = threading.Thread(target=self._work, name="fastflow-notify", daemon=True)
        self._thread.start()

    def post(self, parcel: Parcel) -> None:
        """Queue `parcel` for delivery; returns at once."""
        with self._idle:
            self._busy += 1
        if self._queue.qsize() >= MAX_QUEUED:
            try:
                dropped = self._queue.get_nowait()
            except queue.Empty:
                dropped = None
            if dropped is not None:
                self._safe_report(entry(dropped, [], "dropped"))
                self._done()
        self._queue.put(parcel)

    def wait_idle(self, timeout: float) -> bool:
        """Whether every posted parcel was delivered or given up within `timeout` seconds."""
        with self._idle:
            return self._idle.wait_for(lambda: self._busy == 0, timeout)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop after the attempt in progress (waits up to `timeout`); parcels not yet tried are
        reported as dropped, so the record says what was never sent."""
        self._stopping.set()
        self._queue.put(None)
        self._thread.join(timeout)
        while True:
            try:
                parcel = self._queue.get_nowait()
            except queue.Empty:
                break
            if parcel is not None:
                self._safe_report(entry(parcel, [], "dropped"))

    def _work(self) -> None:
        while not self._stopping.is_set():
            parcel = self._queue.get()
            if parcel is None:
                return
            try:
                self._deliver(parcel)
            except Exception:  # noqa: BLE001 - the worker must outlive any one message
                logger.exception("notification %s to %s: delivery failed unexpectedly",
                                 parcel.id, parcel.target)
            finally:
                self._done()

    def _deliver(self, parcel: Parcel) -> None:
        attempts: list[dict] = []
        delay = self.retry_delay
        for n in range(1, self.attempts + 1):
            started = self.clock()
            try:
                self.send(parcel.url, parcel.message, self.timeout)
            except delivery.DeliveryFailed as exc:
                attempts.append(self._attempt(n, started, "failed", _masked(str(exc), parcel)))
                final = n == self.attempts or isinstance(exc, delivery.UnknownUrl) \
                    or self._stopping.is_set()
                self._safe_report(entry(parcel, attempts, "failed" if final else "pending"))
                if final or self._stopping.wait(delay):
                    logger.warning("notification %s to %s failed after %d attempt(s): %s",
                                   parcel.id, parcel.target, n, attempts[-1]["error"])
                    return
                delay *= 2
                continue
            attempts.append(self._attempt(n, started, "delivered"))
            self._safe_report(entry(parcel, attempts, "delivered"))
            logger.info("notification %s delivered to %s", parcel.id, parcel.target)
            return

    def _attempt(self, n: int, started: datetime, outcome: str, error: str | None = None) -> dict:
        return {"n": n, "at": started.isoformat(), "outcome": outcome, "error": error,
                "took_s": round((self.clock() - started).total_seconds(), 3)}

    def _safe_report(self, data: dict) -> None:
        try:
            self.report(data)
        except Exception:  # noqa: BLE001 - a record that cannot be written is logged, not fatal
            logger.exception("notification %s: its delivery record could not be written",
                             data.get("id"))

    def _done(self) -> None:
        with self._idle:
            self._busy -= 1
            self._idle.notify_all()


MIN_SECRET_PART = 6  # shorter parts of a URL (a port, "hook", "json") are not masked


def _masked(reason: str, parcel: Parcel) -> str:
    return redact(reason, parcel.url, parcel.shown)


def redact(reason: str, url: str, shown: str) -> str:
    """`reason` (the library's words on a failed delivery) without `url` (written as `shown`)
    or any part of it that may be a token: a service may name the address it called, which
    holds the URL's path and credentials in its own form (`https://hooks.slack.com/services/
    T.../B.../...` for `slack://T.../B.../...`)."""
    if not url:
        return reason
    reason = reason.replace(url, shown)
    for part in _secret_parts(url):
        reason = reason.replace(part, "***")
    return reason


def _secret_parts(url: str) -> list[str]:
    """The user, password, path segments and query values of `url`, longest first (its
    scheme, host and port are left: they say where a message went)."""
    try:
        split = urlsplit(url)
        host = split.hostname or ""
    except ValueError:
        split, host = None, ""
    parts = re.split(r"[/:@?&=#;,]+", url.split("://", 1)[-1])
    if split is not None:
        parts += [unquote(p) for p in (split.username, split.password) if p]
        parts += [unquote(v) for _, v in parse_qsl(split.query)]
    return sorted({p for p in parts if len(p) >= MIN_SECRET_PART and p != host
                   and p.lower() not in _PLAIN}, key=len, reverse=True)


# Query keys and values of the library's own URLs that are no secret (kept readable)
_PLAIN = {"method", "overflow", "upstream", "optional", "insecure", "format", "markdown",
          "localhost"}
