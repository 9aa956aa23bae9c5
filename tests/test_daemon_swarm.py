"""`fastflow serve --executor swarm` on a one-node swarm: the run record names the node, a
`kill -9` of the daemon mid-run is re-attached and recorded once, `fastflow cancel` and an OOM
kill end as they do with Docker. The daemon is a real process; the swarm is the CI engine's
(`swarm_engine` always leaves swarm mode)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ServeProcesses, services_of, utc_now, wait_for

from fastflow.daemon.statedir import queue_remote_flow, queue_remote_run
from fastflow.errors import FastflowError, RepositoryError
from fastflow.model import RunStatus
from fastflow.results.store import ResultsStore

pytestmark = [pytest.mark.docker, pytest.mark.slow]


class SwarmServe(ServeProcesses):
    """The harness's `fastflow serve` processes with `--executor swarm`; calling it starts one."""

    def __init__(self, origin, state: Path, cache: Path, logs: Path) -> None:
        super().__init__(origin.bare, state, cache, logs)
        self.origin = origin

    def __call__(self) -> subprocess.Popen:
        return self.start("--executor", "swarm")


@pytest.fixture
def serve(tmp_path, origin, swarm_engine, shared_cache):
    procs = SwarmServe(origin, tmp_path / "state", shared_cache, tmp_path)
    yield procs
    procs.stop_all()


def push(origin, code: str, metadata: str = "{}") -> None:
    origin.push({"pipelines/job/main.py": code, "pipelines/job/pipeline.json": metadata}, "job")


def run_until(serve, text: str) -> str:
    run_id = queue_remote_run(serve.state, "job", {}, None, utc_now())
    live = serve.state / "live" / f"{run_id}.log"
    wait_for(lambda: live.exists() and f"stdout | {text}\n" in live.read_text(), timeout=90,
             what=f"{text!r} in the live log:\n{serve.output()}")
    return run_id


def recorded(serve, run_id: str, tmp: Path):
    store = ResultsStore(serve.origin.bare, tmp / "reader-journal", utc_now)

    def read():
        try:
            return store.read_run(run_id, pipeline="job")
        except RepositoryError:
            return None

    return store, wait_for(read, timeout=90, what=f"the record of {run_id}:\n{serve.output()}")


def test_a_swarm_run_survives_a_kill_of_the_daemon_and_is_recorded_once_with_its_node(
        serve, tmp_path):
    push(serve.origin, "import time\nprint('before', flush=True)\ntime.sleep(6)\n"
                       "print('after', flush=True)\n")
    serve()
    run_id = run_until(serve, "before")
    serve.kill()
    assert len(services_of(run_id)) == 1  # the job runs on without its owner
    serve()
    store, record = recorded(serve, run_id, tmp_path)
    assert record.status is RunStatus.SUCCEEDED, serve.output()
    assert [(a.n, a.status) for a in record.attempts] == [(1, RunStatus.SUCCEEDED)]
    log = store.read_log(run_id, pipeline="job")
    assert [line.split(" stdout | ", 1)[1] for line in log.splitlines()
            if " stdout | " in line] == ["before", "after"]
    assert record.environment.node == os.uname().nodename or record.environment.node
    assert [r.run_id for r in store.list_runs("job")] == [run_id]
    wait_for(lambda: services_of(run_id) == [], what="the job removed")


def test_fastflow_cancel_of_a_swarm_run_records_it_cancelled(serve, tmp_path):
    push(serve.origin, "import time\nprint('ready', flush=True)\ntime.sleep(300)\n")
    serve()
    run_id = run_until(serve, "ready")
    listed = subprocess.run([sys.executable, "-m", "fastflow", "ps", "--json"],
                            capture_output=True, text=True, check=True)
    assert [(r["run_id"], bool(r["node"])) for r in json.loads(listed.stdout)
            if r["pipeline"] == "job"] == [(run_id, True)]  # the Swarm job, once, with its node
    done = subprocess.run([sys.executable, "-m", "fastflow", "cancel", run_id, "--grace", "2"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    _, record = recorded(serve, run_id, tmp_path)
    assert record.status is RunStatus.CANCELLED, serve.output()


def test_an_oom_kill_on_swarm_is_recorded_oom_killed(serve, tmp_path):
    push(serve.origin, "print('ready', flush=True)\nx = []\nwhile True:\n    x.append(bytearray(8 << 20))\n",
         '{"mem_hard_limit": "96m"}')
    serve()
    run_id = run_until(serve, "ready")
    _, record = recorded(serve, run_id, tmp_path)
    assert (record.status, record.exit_code) == (RunStatus.OOM_KILLED, 137), serve.output()
    assert record.environment.node


def test_a_flow_runs_on_swarm_its_tasks_sharing_the_workspace_on_the_daemons_node(
        serve, tmp_path):
    """`executor: swarm` runs a flow's tasks as Swarm jobs placed on the daemon's node, where
    the flow run's workspace is: a file one task leaves there and its output reach the next."""
    serve.origin.push({
        ".fastflow/flows/pair.json": json.dumps({"name": "pair", "tasks": [
            {"id": "make", "script": "make.py"},
            {"id": "use", "script": "use.py", "depends_on": ["make"]}]}),
        ".fastflow/flows/tasks/make.py": (
            "import json, os\n"
            "open(os.path.join(os.environ['TMP_DIR'], 'made.txt'), 'w').write('on the node')\n"
            "json.dump({'n': 42}, open(os.environ['FASTFLOW_OUTPUT'], 'w'))\n"),
        ".fastflow/flows/tasks/use.py": (
            "import json, os\n"
            "print('use got', open(os.path.join(os.environ['TMP_DIR'], 'made.txt')).read(),\n"
            "      json.loads(os.environ['FASTFLOW_INPUTS'])['make']['n'])\n"),
    }, "pair flow")
    serve()
    flow_run_id = queue_remote_flow(serve.state, "pair", {}, utc_now())
    store = ResultsStore(serve.origin.bare, tmp_path / "reader-journal", utc_now)

    def ended():
        try:
            data = store.read_flow(flow_run_id)
        except FastflowError:
            return None
        return data if data["status"] in ("succeeded", "failed") else None

    data = wait_for(ended, timeout=120, what=f"flow run {flow_run_id}:\n{serve.output()}")
    assert data["status"] == "succeeded", json.dumps(data, indent=1) + serve.output()
    use = next(t for t in data["tasks"] if t["id"] == "use")
    assert "use got on the node 42" in store.read_log(use["run_id"], use["pipeline"])
    record = store.read_run(use["run_id"], use["pipeline"])
    assert record.environment.node  # a Swarm task: the node it ran on
