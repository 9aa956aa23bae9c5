"""The HTTP server of the webhook intake: waitress (the only module that imports it).

waitress parses HTTP and buffers each whole request (headers up to `MAX_HEADER_BYTES`, the body
up to `max_body`, answering 413 beyond) before a worker thread sees it, so a slow client never
holds a worker; a connection silent for `read_timeout` seconds is closed; at most
`CONNECTION_LIMIT` are open at once (more wait in the listen backlog).

`WebhookServer.start()` binds and listens (the error names the address and the fix when it
cannot) and runs waitress's event loop in a thread of its own. `stop()` is the SIGTERM order:
close the listener (nothing new is accepted), let the requests already read be answered (up to
`grace` seconds), then close every connection and the worker threads.
"""
from __future__ import annotations

import logging
import sys
import threading
import time

from waitress import create_server, wasyncore

from fastflow.errors import FastflowError
from fastflow.model import WebhookSettings

logger = logging.getLogger(__name__)

MAX_HEADER_BYTES = 64 * 1024
CONNECTION_LIMIT = 200
STOP_GRACE = 10.0  # seconds in-flight requests get to be answered at a stop
# An accept gives up the GIL a few times (the log's write and flush, the socket) and takes it
# back each time; while another thread of the daemon runs Python code (the loop journalling a
# burst, a run's log capture), taking it back waits up to the interpreter's switch interval,
# 5 ms by default. Measured with bench/webhooks.py at 200 req/s: p99 31-40 ms at 5 ms, 15-20 ms
# at 0.5 ms.
SWITCH_INTERVAL = 0.0005


class ListenError(FastflowError):
    """The webhook intake cannot listen where config.yaml or --webhooks says."""


def split_listen(listen: str) -> tuple[str, int]:
    """(host, port) of `HOST:PORT` or `[IPv6]:PORT` (already checked by config)."""
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)


class WebhookServer:
    """waitress serving `app` at `settings.listen`, in a background thread; see the module doc."""

    def __init__(self, app, settings: WebhookSettings, source: str = "webhooks.listen") -> None:
        self.app = app
        self.settings = settings
        self.source = source  # where the address came from, for error messages
        self._server = None
        self._map: dict = {}
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._closed = threading.Event()
        self._grace = STOP_GRACE

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) it listens on (the real port when the configured one was 0)."""
        host, port = self._server.socket.getsockname()[:2]
        return host, port

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def start(self) -> None:
        host, port = split_listen(self.settings.listen)
        kw = dict(host=host, port=port, threads=self.settings.threads,
                  channel_timeout=self.settings.read_timeout,
                  cleanup_interval=max(1, min(30, int(self.settings.read_timeout / 2) or 1)),
                  # waitress refuses a body of max_request_body_size bytes or more: the cap
                  # itself is allowed, one byte over is not
                  max_request_body_size=self.settings.max_body_bytes + 1,
                  max_request_header_size=MAX_HEADER_BYTES, connection_limit=CONNECTION_LIMIT,
                  ident="fastflow", expose_tracebacks=False, asyncore_loop_timeout=1,
                  clear_untrusted_proxy_headers=True)
        if self.settings.trusted_proxy:
            kw.update(trusted_proxy=self.settings.trusted_proxy,
                      trusted_proxy_headers={"x-forwarded-for"}, trusted_proxy_count=1)
        try:
            self._server = create_server(self.app, map=self._map, **kw)
        except (OSError, ValueError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise ListenError(
                f"{self.source}: cannot listen on {self.settings.listen!r}: {reason}; pick a "
                "free port and an address of this machine (e.g. 127.0.0.1:8787)") from None
        if sys.getswitchinterval() > SWITCH_INTERVAL:  # for the whole process: see above
            sys.setswitchinterval(SWITCH_INTERVAL)
        self._thread = threading.Thread(target=self._loop, name="webhooks-http", daemon=True)
        self._thread.start()
        logger.info("webhooks: listening on %s", self.url)

    def _loop(self) -> None:
        try:
            while not self._stop.is_set():
                wasyncore.loop(timeout=1.0, map=self._map, count=1)
            self._drain()
        finally:
            self._closed.set()

    def _drain(self) -> None:
        """Stop accepting, answer what was read, then close (in the loop's own thread:
        waitress's event loop is not to be touched from another)."""
        server = self._server
        server.del_channel()
        try:
            server.socket.close()
        except OSError:
            pass
        deadline = time.monotonic() + self._grace
        while time.monotonic() < deadline and self.in_flight():
            wasyncore.loop(timeout=0.05, map=self._map, count=1)
        for channel in list(self._map.values()):
            if channel is not server.trigger:
                try:
                    channel.close()
                except OSError:
                    pass
        server.task_dispatcher.shutdown(cancel_pending=True, timeout=self._grace)
        server.trigger.close()

    def in_flight(self) -> int:
        """Connections with a request read and not yet answered (or an answer not yet sent)."""
        trigger = self._server.trigger if self._server is not None else None
        return sum(1 for ch in list(self._map.values()) if ch is not trigger and (
            getattr(ch, "requests", None) or getattr(ch, "total_outbufs_len", 0)))

    def stop(self, grace: float = STOP_GRACE) -> None:
        """Close the listener, give in-flight requests up to `grace` seconds, then close all.
        Idempotent; returns when the server thread has ended."""
        if self._thread is None:
            return
        self._grace = grace
        self._stop.set()
        try:
            self._server.pull_trigger()
        except (OSError, AttributeError):
            pass
        self._closed.wait(grace + 10)
        self._thread.join(timeout=1)
        self._thread = None
        logger.info("webhooks: stopped listening")

