"""Two `fastflow serve` processes follow one bare repository with two state dirs: the lease
(fastflow.daemon.lease) lets exactly one of them execute work. A schedule fires every few
seconds in real containers; the holder is killed with SIGKILL and the standby takes over
within the lease timeout; a clean stop releases the lease at once. No slot runs twice: the
engine's own events show each attempt's container started once, and every record succeeded.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from helpers import ROOT, utc_now, wait_for

from fastflow import repo as gitrepo
from fastflow.daemon.lease import LEASE_FILE, LEASE_REF
from fastflow.executors.docker import connect
from fastflow.model import RunStatus
from fastflow.results.store import ResultsStore

pytestmark = [pytest.mark.docker, pytest.mark.slow]

LEASE_TIMEOUT = 4.0
# its own name: the run ids of a slot are deterministic, and other tests may use the engine now
PIPELINE = f"tick{os.getpid()}"


def serve(bare: Path, state: Path, log: Path, cache: Path) -> subprocess.Popen:
    """A `fastflow -v serve` process with a short lease timeout; returns once it wrote
    status.json (the holder and a standby both do at start)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "fastflow", "-v", "serve", "--repo", str(bare), "--state-dir",
         str(state), "--poll-interval", "1", "--lease-timeout", str(LEASE_TIMEOUT)],
        env={**os.environ, "FASTFLOW_CACHE_DIR": str(cache)}, cwd=ROOT,
        stdout=open(log, "a"), stderr=subprocess.STDOUT)
    wait_for(lambda: proc.poll() is None and (state / "status.json").exists() or proc.poll(),
             what=f"the heartbeat of {state}")
    assert proc.poll() is None, log.read_text()
    return proc


def lease_holder(bare: Path) -> dict:
    _, data = gitrepo.ref_file(gitrepo.open_repo(bare), LEASE_REF, LEASE_FILE)
    return json.loads(data)


def records(bare: Path, tmp: Path) -> list:
    store = ResultsStore(bare, tmp / "reader", utc_now)
    try:
        return store.list_runs(PIPELINE, limit=1000)
    except Exception:  # noqa: BLE001 - no results branch yet
        return []


def test_two_daemons_never_both_execute_and_the_standby_takes_over(tmp_path, origin, runner_image,
                                                                  shared_cache):
    origin.push({f"pipelines/{PIPELINE}/main.py": "print('tick')\n",
                 ".fastflow/schedules.yaml": f"schedules:\n  - pipeline: {PIPELINE}\n"
                                             "    interval: 3\n"})
    started = utc_now() - timedelta(seconds=1)
    a_log, b_log = tmp_path / "a.log", tmp_path / "b.log"
    a = serve(origin.bare, tmp_path / "a", a_log, shared_cache)
    b = serve(origin.bare, tmp_path / "b", b_log, shared_cache)
    procs = [a, b]
    try:
        assert lease_holder(origin.bare)["holder"]["state_dir"] == str(tmp_path / "a")
        assert "standing by: the lease is held by pid" in b_log.read_text()
        status = subprocess.run(
            [sys.executable, "-m", "fastflow", "status", "--repo", str(origin.bare),
             "--state-dir", str(tmp_path / "b")], capture_output=True, text=True, cwd=ROOT)
        assert "daemon: standing by (executes nothing), heartbeat" in status.stdout, status
        assert f"the lease (refs/fastflow/lease) is held by pid {a.pid}" in status.stdout
        wait_for(lambda: len(records(origin.bare, tmp_path)) >= 2, timeout=60,
                 what=f"two slots recorded by the holder:\n{a_log.read_text()}")
        assert "run " not in b_log.read_text().replace("running", "")  # the standby ran nothing
        # and published nothing: the branch's heartbeat is the holder's
        assert ResultsStore(origin.bare, tmp_path / "hb", utc_now).read_state("daemon")["pid"] == a.pid

        a.send_signal(signal.SIGKILL)
        a.wait(10)
        killed = time.monotonic()
        wait_for(lambda: "taking over:" in b_log.read_text(), timeout=LEASE_TIMEOUT + 10,
                 what=f"the standby to take over:\n{b_log.read_text()}")
        assert time.monotonic() - killed <= LEASE_TIMEOUT + 1.5
        assert lease_holder(origin.bare)["holder"]["state_dir"] == str(tmp_path / "b")
        before = len(records(origin.bare, tmp_path))
        wait_for(lambda: len(records(origin.bare, tmp_path)) >= before + 2, timeout=60,
                 what=f"two slots recorded by the new holder:\n{b_log.read_text()}")

        # a comes back: it stands by; b stops cleanly and releases the lease: a takes over
        a = serve(origin.bare, tmp_path / "a", a_log, shared_cache)
        procs.append(a)
        b.send_signal(signal.SIGTERM)
        b.wait(40)
        assert lease_holder(origin.bare)["released_at"] is not None
        # (at its next lease check, or at once when b released it before a's start ended)
        wait_for(lambda: lease_holder(origin.bare)["holder"]["state_dir"] == str(tmp_path / "a")
                 and lease_holder(origin.bare)["released_at"] is None, timeout=LEASE_TIMEOUT,
                 what=f"the restarted daemon to take over:\n{a_log.read_text()}")
        before = len(records(origin.bare, tmp_path))
        wait_for(lambda: len(records(origin.bare, tmp_path)) >= before + 1, timeout=60,
                 what=f"a slot recorded after the clean handover:\n{a_log.read_text()}")
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(40)
    logs = a_log.read_text() + b_log.read_text()
    assert "Traceback" not in logs and "Conflict" not in logs, logs
    found = records(origin.bare, tmp_path)
    assert {r.status for r in found} <= {RunStatus.SUCCEEDED, RunStatus.SKIPPED}, \
        [(r.run_id, r.status, r.error) for r in found]
    starts: dict[str, int] = {}
    for event in connect().events(since=started, until=utc_now(), decode=True, filters={
            "event": "start", "label": f"org.fastflow.pipeline={PIPELINE}"}):
        name = event["Actor"]["Attributes"]["name"]
        starts[name] = starts.get(name, 0) + 1
    assert starts and max(starts.values()) == 1, starts
