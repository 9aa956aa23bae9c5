"""Files that survive a crash: atomic writes and advisory locks, the one home of both.

`write_atomic` writes a temporary file beside the target (`.<name>.tmp-<pid>-<random>`, hidden
so folder watchers and globs skip it), optionally fsyncs it, and renames it over the target: a
reader sees the old content or the new one, never half of either. With `durable=True` the
folder is fsynced too, so the rename itself survives a power cut (journals, run requests).
`exclusive=True` refuses to replace an existing file (the inbox: a name is a message).

`flocked` holds `flock` on a file for a `with` block; `hold_lock` keeps one for the life of an
object (the daemon's state-dir lock). The kernel drops both when the process dies, so a kill -9
never leaves a lock behind.
"""
from __future__ import annotations

import fcntl
import os
import secrets
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

TEMP_MARK = ".tmp-"  # every temporary name contains it; `is_temporary` recognises them


def temporary_name(path: Path) -> Path:
    """A fresh hidden sibling of `path` to write before the rename."""
    return path.with_name(f".{path.name}{TEMP_MARK}{os.getpid()}-{secrets.token_hex(4)}")


def is_temporary(name: str) -> bool:
    """Whether `name` is a temporary file of `write_atomic` (or an older `.tmp-*` one)."""
    return name.startswith(".") and TEMP_MARK in name


def fsync_dir(path: Path) -> None:
    """Make the entries of folder `path` (a rename into it) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: str | bytes, *, durable: bool = False, mode: int | None = None,
                 exclusive: bool = False) -> None:
    """Replace `path` with `data` (text is written as UTF-8) in one rename.

    `durable`: fsync the file and its folder before returning. `mode`: the file's permission
    bits (default: 0o644 minus the umask). `exclusive`: raise `FileExistsError` instead of
    replacing an existing `path` (the temporary file is then removed).
    """
    raw = data.encode("utf-8") if isinstance(data, str) else data
    tmp = temporary_name(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644 if mode is None else mode)
    try:
        try:
            if mode is not None:
                os.fchmod(fd, mode)  # not reduced by the umask: a hook must be executable
            view = memoryview(raw)
            while view:
                view = view[os.write(fd, view):]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        if exclusive:
            os.link(tmp, path)  # fails with FileExistsError, atomically, when path exists
            tmp.unlink()
        else:
            os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(path.parent)


@contextmanager
def flocked(path: Path, operation: int = fcntl.LOCK_EX) -> Iterator[int]:
    """Hold `flock(operation)` on `path` (created if needed) for the `with` block; yields the
    descriptor. With `fcntl.LOCK_NB` in `operation`, `BlockingIOError` when someone holds it."""
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, operation)
        yield fd
    finally:
        os.close(fd)  # closing the last descriptor releases the lock


def try_lock(path: Path) -> int | None:
    """Take an exclusive, non-blocking `flock` on `path` for as long as the returned descriptor
    stays open (close it to release); None when another process holds it."""
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd
