"""fastflow.files: atomic writes and locks, with real files and real processes."""
from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fastflow.files import flocked, is_temporary, try_lock, write_atomic

ROOT = Path(__file__).resolve().parent.parent


def test_write_atomic_replaces_and_leaves_no_temporary(tmp_path: Path):
    target = tmp_path / "state.json"
    write_atomic(target, "one")
    write_atomic(target, b"two", durable=True)
    assert target.read_text() == "two"
    assert os.listdir(tmp_path) == ["state.json"]


def test_write_atomic_mode_is_not_reduced_by_the_umask(tmp_path: Path):
    old = os.umask(0o077)
    try:
        write_atomic(tmp_path / "hook", "#!/bin/sh\n", mode=0o755)
    finally:
        os.umask(old)
    assert (tmp_path / "hook").stat().st_mode & 0o777 == 0o755


def test_exclusive_never_replaces_and_cleans_up(tmp_path: Path):
    target = tmp_path / "msg"
    write_atomic(target, "first", exclusive=True)
    with pytest.raises(FileExistsError):
        write_atomic(target, "second", exclusive=True)
    assert target.read_text() == "first"
    assert os.listdir(tmp_path) == ["msg"]


def test_a_killed_writer_leaves_the_old_content_and_a_recognisable_temporary(tmp_path: Path):
    target = tmp_path / "big"
    target.write_text("old")
    code = (f"import os, signal\nimport fastflow.files as f\n"
            f"os.write = lambda fd, data: os.kill(os.getpid(), signal.SIGKILL)\n"
            f"f.write_atomic(__import__('pathlib').Path({str(target)!r}), 'new' * 1000)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT)
    assert proc.returncode == -9
    assert target.read_text() == "old"
    leftovers = [n for n in os.listdir(tmp_path) if n != "big"]
    assert len(leftovers) == 1 and is_temporary(leftovers[0])


def test_try_lock_excludes_another_process_until_released(tmp_path: Path):
    lock = tmp_path / "daemon.lock"
    fd = try_lock(lock)
    assert fd is not None
    probe = (f"import sys\nfrom pathlib import Path\nfrom fastflow.files import try_lock\n"
             f"sys.exit(0 if try_lock(Path({str(lock)!r})) is None else 1)\n")
    assert subprocess.run([sys.executable, "-c", probe], cwd=ROOT).returncode == 0  # held
    os.close(fd)
    assert subprocess.run([sys.executable, "-c", probe], cwd=ROOT).returncode == 1  # free again


def test_flocked_shared_locks_coexist_and_block_an_exclusive_one(tmp_path: Path):
    lock = tmp_path / "snap.lock"
    with flocked(lock, fcntl.LOCK_SH), flocked(lock, fcntl.LOCK_SH):
        probe = (f"import fcntl\nfrom pathlib import Path\nfrom fastflow.files import flocked\n"
                 f"try:\n    with flocked(Path({str(lock)!r}), fcntl.LOCK_EX | fcntl.LOCK_NB):\n"
                 f"        raise SystemExit(1)\nexcept BlockingIOError:\n    raise SystemExit(0)\n")
        assert subprocess.run([sys.executable, "-c", probe], cwd=ROOT).returncode == 0
