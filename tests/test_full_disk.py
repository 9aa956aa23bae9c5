"""A full state dir never kills the daemon (issue 11, item 10): a real full filesystem (a small
tmpfs mounted by the test as the state dir), `fastflow serve` as a real process (host executor),
a run in flight while the disk fills, `fastflow run --remote` against the full disk, then room
again. Needs root for `mount` (the CI container runs as root).
"""
from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import alive, utc_now, wait_for

from fastflow.daemon.statedir import queue_remote_run
from fastflow.errors import RepositoryError
from fastflow.model import RunStatus
from fastflow.results.store import ResultsStore

pytestmark = pytest.mark.slow


@pytest.fixture
def small_disk(tmp_path):
    """A 16 MiB tmpfs at tmp_path/state, unmounted afterwards."""
    mount = tmp_path / "state"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path) -> Path:
    """Write a file until the disk is full; returns it (delete it to free the space)."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        size = 1 << 20
        while size >= 512:  # smaller and smaller writes, to the last free block
            try:
                os.write(fd, b"\0" * size)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
                size //= 2
    finally:
        os.close(fd)
    return filler


def read_record(bare: Path, tmp_path: Path, run_id: str):
    store = ResultsStore(bare, tmp_path / "reader-journal", utc_now)
    try:
        return store.read_run(run_id, pipeline="slow")
    except RepositoryError:
        return None


def test_a_full_state_dir_pauses_intake_and_records_finished_runs(origin, tmp_path, small_disk):
    origin.push({"pipelines/slow/main.py":
                 "import time\nprint('started', flush=True)\ntime.sleep(4)\nprint('done')\n"})
    log_path = tmp_path / "serve.log"
    env = {**os.environ, "FASTFLOW_CACHE_DIR": str(tmp_path / "cache")}
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "fastflow", "serve", "--repo", str(origin.bare),
             "--state-dir", str(small_disk), "--poll-interval", "1", "--local"],
            env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: (small_disk / "status.json").exists(), what="the daemon's status")
        run_id = queue_remote_run(small_disk, "slow", {}, None, utc_now())
        live = small_disk / "live" / f"{run_id}.log"
        wait_for(lambda: live.exists() and "stdout | started" in live.read_text(),
                 what="the run to start")
        filler = fill(small_disk)
        # the run ends while the disk is full; the daemon stays up over several polls
        time.sleep(6)
        assert alive(proc.pid), log_path.read_text()
        assert read_record(origin.bare, tmp_path, run_id) is None  # its record cannot be written
        # `fastflow run --remote` says why, without a traceback
        cli = subprocess.run(
            [sys.executable, "-m", "fastflow", "run", "slow", "--remote",
             "--repo", str(origin.work), "--state-dir", str(small_disk)], env=env, capture_output=True, text=True)
        assert cli.returncode == 1, cli.stderr
        assert cli.stderr.startswith("Error: no space left on the device"), cli.stderr
        assert "free space on that disk" in cli.stderr and "Traceback" not in cli.stderr
        # room again: the finished run is recorded as finished, intake resumes
        filler.unlink()
        record = wait_for(lambda: read_record(origin.bare, tmp_path, run_id), timeout=30,
                          what=f"the record of {run_id}:\n{log_path.read_text()}")
        assert record.status is RunStatus.SUCCEEDED
        again = queue_remote_run(small_disk, "slow", {}, None, utc_now())
        assert wait_for(lambda: read_record(origin.bare, tmp_path, again), timeout=30,
                        what="a run queued after the disk had room").status is RunStatus.SUCCEEDED
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(40)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    output = log_path.read_text()
    assert alive(proc.pid) is False and proc.returncode == 0, output
    assert "Traceback" not in output, output
    assert output.count("is full") == 1, output  # said once
    assert output.count("has room again") == 1, output
    assert f"run {run_id}: cannot be recorded" in output, output


def test_serve_on_a_full_disk_says_so_without_a_traceback(origin, tmp_path, small_disk):
    origin.push({"pipelines/quick/main.py": "print('quick')\n"})
    filler = fill(small_disk)
    try:
        serve = subprocess.run(
            [sys.executable, "-m", "fastflow", "serve", "--repo", str(origin.bare),
             "--state-dir", str(small_disk / "state"), "--local"],
            capture_output=True, text=True, timeout=60)
    finally:
        filler.unlink()
    assert serve.returncode == 1, serve.stderr
    assert "Traceback" not in serve.stderr, serve.stderr
    (error,) = [line for line in serve.stderr.splitlines() if line.startswith("Error: ")]
    assert error.startswith("Error: no space left on the device"), serve.stderr
    assert error.endswith("free space on that disk (for `fastflow serve`, the one holding the "
                          "state dir) and try again"), serve.stderr
