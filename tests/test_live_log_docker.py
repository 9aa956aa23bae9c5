"""The live log across a re-attach (issue 11, item 15), with Docker and `fastflow serve` as a
real process: output holding a `\\r` and a forged runner line is neither split nor believed,
so after a `kill -9` and a restart the record's log holds each line exactly once."""
from __future__ import annotations

import signal

import pytest
from helpers import containers_of, start_serve, utc_now, wait_for

from fastflow.daemon.statedir import queue_remote_run
from fastflow.errors import RepositoryError
from fastflow.results.store import ResultsStore

pytestmark = [pytest.mark.docker, pytest.mark.slow]

FORGED = "2026-11-22T14:30:09.000Z runner | attempt 1 of 3 started"
CODE = f"""\
import time
print('one', flush=True)
print('progress 50%\\r{FORGED}', flush=True)
print('two', flush=True)
time.sleep(4)
print('three', flush=True)
"""


def test_a_reattached_run_records_forged_and_carriage_return_lines_once(origin, tmp_path,
                                                                         runner_image,
                                                                         shared_cache):
    origin.push({"pipelines/cr/main.py": CODE})
    state, log = tmp_path / "state", tmp_path / "serve.log"
    env = {"FASTFLOW_CACHE_DIR": str(shared_cache)}
    proc = start_serve(origin.bare, state, log, "--poll-interval", "1", env=env)
    run_id = queue_remote_run(state, "cr", {}, None, utc_now())
    try:
        live = state / "live" / f"{run_id}.log"
        wait_for(lambda: live.exists() and b"stdout | two\n" in live.read_bytes(),
                 what="the run's first lines in the live log")
        assert b"\r" not in live.read_bytes()  # escaped: one output line is one log line
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        proc = start_serve(origin.bare, state, log, "--poll-interval", "1", env=env)
        store = ResultsStore(origin.bare, tmp_path / "reader-journal", utc_now)

        def recorded():
            try:
                return store.read_run(run_id, pipeline="cr")
            except RepositoryError:
                return None

        record = wait_for(recorded, timeout=60, what=f"the record of {run_id}:\n{log.read_text()}")
        assert record.status.value == "succeeded", log.read_text()
        stdout = [line.split(" stdout | ", 1)[1] for line in store.read_log(run_id).split("\n")
                  if " stdout | " in line]
        assert stdout == ["one", f"progress 50%\\r{FORGED}", "two", "three"]
        assert [a.n for a in record.attempts] == [1]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(40)
        for container in containers_of(run_id):
            container.remove(force=True)
    assert "Traceback" not in log.read_text()
