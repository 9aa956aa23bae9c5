"""Waking on files: block until a file lands in a folder (the owner of watchdog).

inotify through watchdog's default observer, so an idle daemon uses no CPU and wakes within
milliseconds; a polling observer when inotify cannot start. Hidden files (`.tmp-*`, written
before their atomic rename) and ignored names never wake a waiter.
"""
from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any, Callable, Iterable

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.polling import PollingObserver

log = logging.getLogger(__name__)

POLL_INTERVAL = 0.2  # seconds between scans of the polling fallback


class _Handler(FileSystemEventHandler):
    """Sets the waiter's event when a file (not hidden, not ignored) appears directly in the folder."""

    def __init__(self, folder: Path, wake: threading.Event, ignore: frozenset[str]) -> None:
        self._dir = os.path.realpath(folder)
        self._wake = wake
        self._ignore = ignore

    def _lands(self, path: str | bytes) -> bool:
        path = os.fsdecode(path)
        name = os.path.basename(path)
        return (
            os.path.realpath(os.path.dirname(path)) == self._dir
            and not name.startswith(".")
            and name not in self._ignore
        )

    def on_created(self, event: FileSystemEvent) -> None:
        if not event.is_directory and self._lands(event.src_path):
            self._wake.set()

    def on_moved(self, event: FileSystemEvent) -> None:
        if not event.is_directory and self._lands(event.dest_path):
            self._wake.set()


class FolderWaiter:
    """Blocks until a file lands directly in `folder`; end with `close()` (or use `with`).

    Uses inotify (watchdog's default observer on Linux): no CPU while idle, wakes within a few
    milliseconds. When inotify cannot start (instance or watch limits, unsupported filesystem) it
    falls back to a polling observer that scans the folder every `POLL_INTERVAL` seconds.
    """

    def __init__(self, folder: Path, *, pending: Callable[[], bool], ignore: Iterable[str] = (),
                 polling: bool = False) -> None:
        self.folder = folder
        self._wake = threading.Event()
        handler = _Handler(folder, self._wake, frozenset(ignore))
        self.polling = polling
        self._observer = self._start(handler, polling)
        if pending():  # landed before the watch began: report it on the first wait
            self._wake.set()

    def _start(self, handler: _Handler, polling: bool) -> Any:
        if not polling:
            observer = Observer()
            try:
                observer.schedule(handler, str(self.folder), recursive=False)
                observer.start()
                return observer
            except OSError as exc:
                log.warning("watch: inotify unavailable (%s); polling %s every %ss instead",
                            exc, self.folder, POLL_INTERVAL)
                self.polling = True
        observer = PollingObserver(timeout=POLL_INTERVAL)
        observer.schedule(handler, str(self.folder), recursive=False)
        observer.start()
        return observer

    def wait(self, timeout: float | None) -> bool:
        """Wait up to `timeout` seconds (None: forever) for a new message; True when one landed.

        The flag is cleared before returning, so drain the inbox after a True: a message landing
        during the drain makes the next wait return at once rather than being missed.
        """
        if timeout is not None and timeout <= 0:
            woke = self._wake.is_set()
        else:
            woke = self._wake.wait(timeout)
        if woke:
            self._wake.clear()
        return woke

    def wake(self) -> None:
        """Make the current or next `wait` return at once (e.g. to stop; signal-handler safe)."""
        self._wake.set()

    def close(self) -> None:
        """Stop watching the inbox (idempotent)."""
        if self._observer.is_alive():
            self._observer.stop()
            self._observer.join(timeout=5)

    def __enter__(self) -> "FolderWaiter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
