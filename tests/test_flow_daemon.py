"""Flows through the real daemon and Docker: `fastflow serve` runs every task as its own run.

Each test pushes a flow to a bare repository, starts `python -m fastflow serve` as a real process,
queues the flow run through the inbox (`fastflow flow run NAME --remote`'s request) and reads the
results branch: the flow record (`flows/...`) and each task's run record (`runs/...`).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import Origin, utc_now, wait_for
from helpers import ServeProcesses as Serve

from fastflow.daemon.statedir import queue_remote_flow
from fastflow.errors import FastflowError
from fastflow.results.store import ResultsStore

pytestmark = [pytest.mark.docker, pytest.mark.slow]
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def setup(tmp_path, origin, runner_image, shared_cache):
    serve = Serve(origin.bare, tmp_path / "state", shared_cache, tmp_path)
    yield origin, serve
    serve.stop_all()


def store_of(serve: Serve, tmp: Path) -> ResultsStore:
    return ResultsStore(serve.bare, tmp / "reader-journal", utc_now)


def flow_record(serve: Serve, tmp: Path, flow_run_id: str, status=("succeeded", "failed"),
                timeout: float = 120) -> dict:
    store = store_of(serve, tmp)

    def read():
        try:
            data = store.read_flow(flow_run_id)
        except FastflowError:
            return None
        return data if data["status"] in status else None

    return wait_for(read, timeout=timeout,
                    what=f"flow run {flow_run_id} to end:\n{serve.output()}")


def run_of(serve: Serve, tmp: Path, task: dict):
    return store_of(serve, tmp).read_run(task["run_id"], task["pipeline"])


def log_of(serve: Serve, tmp: Path, task: dict) -> str:
    return store_of(serve, tmp).read_log(task["run_id"], task["pipeline"])


FAN = {
    ".fastflow/config.yaml": "max_concurrent_runs: 4\n",  # the default (2) would queue one
    ".fastflow/flows/fan.json": json.dumps({
        "name": "fan", "params": {"day": None, "who": "world"},
        "tasks": [
            {"id": "a", "script": "part.py", "args": {"part": "a", "day": "${params.day}"}},
            {"id": "b", "script": "part.py", "args": ["--part", "b", "--day", "${params.day}"]},
            {"id": "c", "script": "part.py", "args": {"part": "c", "day": "${params.day}"}},
            {"id": "join", "script": "join.py", "depends_on": ["a", "b", "c"],
             "env": {"GREETING": "hello ${params.who}"}},
            {"id": "final", "script": "final.py", "depends_on": ["join"]},
        ]}),
    ".fastflow/flows/tasks/part.py": (
        "import argparse, json, os, time\n"
        "p = argparse.ArgumentParser(); p.add_argument('--part'); p.add_argument('--day')\n"
        "a = p.parse_args()\n"
        "time.sleep(3)\n"
        "with open(os.path.join(os.environ['FASTFLOW_WORKSPACE'], a.part + '.txt'), 'w') as f:\n"
        "    f.write(a.day)\n"
        "json.dump({'part': a.part, 'day': a.day}, open(os.environ['FASTFLOW_OUTPUT'], 'w'))\n"
        "print('part', a.part, 'done')\n"),
    ".fastflow/flows/tasks/join.py": (
        "import json, os\n"
        "inputs = json.loads(os.environ['FASTFLOW_INPUTS'])\n"
        "ws = os.environ['TMP_DIR']\n"
        "files = sorted(n for n in os.listdir(ws) if n.endswith('.txt'))\n"
        "print('inputs', sorted(inputs), 'files', files, os.environ['GREETING'])\n"
        "print('params', os.environ['FASTFLOW_PARAMS'])\n"
        "json.dump({'parts': sorted(v['part'] for v in inputs.values())},\n"
        "          open(os.environ['FASTFLOW_OUTPUT'], 'w'))\n"),
    ".fastflow/flows/tasks/final.py": (
        "import json, os\n"
        "print('final got', json.loads(os.environ['FASTFLOW_INPUTS'])['join']['parts'])\n"
        "try:\n"
        "    open('/work/written-by-task', 'w')\n"
        "except OSError as exc:\n"
        "    print('code is read-only:', type(exc).__name__)\n"),
}


def test_a_fan_out_fan_in_flow_runs_its_tasks_in_parallel_and_passes_outputs_and_workspace(
        setup, tmp_path):
    user, serve = setup
    user.push(FAN, "fan flow")
    serve.start()
    flow_run_id = queue_remote_flow(serve.state, "fan", {"day": "2026-12-01"}, utc_now())
    data = flow_record(serve, tmp_path, flow_run_id)
    assert data["status"] == "succeeded", json.dumps(data, indent=1)
    tasks = {t["id"]: t for t in data["tasks"]}
    assert data["params"] == {"day": "2026-12-01", "who": "world"}
    assert tasks["a"]["output"] == {"part": "a", "day": "2026-12-01"}
    assert tasks["join"]["output"] == {"parts": ["a", "b", "c"]}
    runs = {t: run_of(serve, tmp_path, tasks[t]) for t in tasks}
    # the three parallel tasks all started before any of them finished
    assert max(runs[t].started_at for t in "abc") < min(runs[t].finished_at for t in "abc")
    assert runs["join"].started_at >= max(runs[t].finished_at for t in "abc")
    assert runs["final"].started_at >= runs["join"].finished_at
    assert runs["a"].pipeline == "fan.a" and runs["a"].trigger.kind == "flow"
    assert (runs["a"].trigger.flow_run_id, runs["a"].trigger.task) == (flow_run_id, "a")
    assert runs["a"].commit.sha == data["commit"]["sha"]
    join_log = log_of(serve, tmp_path, tasks["join"])
    assert "inputs ['a', 'b', 'c'] files ['a.txt', 'b.txt', 'c.txt'] hello world" in join_log
    assert '"day": "2026-12-01"' in join_log
    final_log = log_of(serve, tmp_path, tasks["final"])
    assert "final got ['a', 'b', 'c']" in final_log
    assert "code is read-only: OSError" in final_log
    assert not (serve.state / "workspaces" / flow_run_id).exists()  # removed after success
    # The flow journal entry goes once the record is stored (just after: wait for it).
    wait_for(lambda: not list((serve.state / "flows").glob("*.json")), timeout=30,
             what="the flow journal emptied after the flow run's record")


BRANCHES = {
    ".fastflow/flows/branches.json": json.dumps({
        "name": "branches",
        "tasks": [
            {"id": "ok", "script": "say.py", "args": ["ok"]},
            {"id": "bad", "script": "bad.py", "retry_attempts": 1,
             "retry_strategy": {"type": "fixed_delay", "delay": 0}},
            {"id": "after_bad", "script": "say.py", "args": ["after_bad"], "depends_on": ["bad"]},
            {"id": "after_ok", "script": "say.py", "args": ["after_ok"], "depends_on": ["ok"]},
            {"id": "cleanup", "script": "say.py", "args": ["cleanup"],
             "depends_on": ["bad", "ok"], "when": "always"},
        ]}),
    ".fastflow/flows/tasks/say.py": "import sys\nprint('say', sys.argv[1])\n",
    ".fastflow/flows/tasks/bad.py": (
        "import os, sys\n"
        "if not os.path.exists(os.path.join(os.environ['FASTFLOW_WORKSPACE'], 'fixed')):\n"
        "    sys.exit('not fixed yet')\n"
        "print('fixed now')\n"),
}


def test_a_failing_branch_skips_its_dependents_and_a_rerun_runs_only_those(setup, tmp_path):
    user, serve = setup
    user.push(BRANCHES, "branches flow")
    serve.start()
    flow_run_id = queue_remote_flow(serve.state, "branches", {}, utc_now())
    data = flow_record(serve, tmp_path, flow_run_id)
    tasks = {t["id"]: t for t in data["tasks"]}
    assert data["status"] == "failed"
    assert (tasks["bad"]["status"], tasks["bad"]["attempts"]) == ("failed", 2)
    assert tasks["after_bad"]["status"] == "skipped"
    assert tasks["after_bad"]["reason"] == "dependency 'bad' failed"
    assert tasks["after_ok"]["status"] == tasks["cleanup"]["status"] == "succeeded"
    workspace = serve.state / "workspaces" / flow_run_id
    assert workspace.is_dir() and data["workspace_kept_until"]  # kept for a rerun
    (workspace / "fixed").write_text("yes")
    rerun = subprocess.run([sys.executable, "-m", "fastflow", "flow", "rerun", flow_run_id,
                            "--state-dir", str(serve.state)], capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert rerun.stdout.strip() == f"queued a rerun of {flow_run_id} on the daemon of {serve.state}"
    again = flow_record(serve, tmp_path, flow_run_id, status=("succeeded",))
    tasks2 = {t["id"]: t for t in again["tasks"]}
    assert (again["generation"], again["rerun_of"]) == (1, flow_run_id)
    assert tasks2["ok"]["run_id"] == tasks["ok"]["run_id"]  # kept, not run again
    assert tasks2["ok"]["reused_from"] == flow_run_id
    assert tasks2["bad"]["run_id"] == tasks["bad"]["run_id"] + "r1"
    assert "fixed now" in log_of(serve, tmp_path, tasks2["bad"])
    assert tasks2["after_bad"]["status"] == "succeeded"
    assert tasks2["cleanup"]["reused_from"] == flow_run_id  # it succeeded: only failed and
    # skipped tasks run again
    history = subprocess.run([sys.executable, "-m", "fastflow", "flow", "history", "branches",
                              "--repo", str(serve.bare), "--json"], capture_output=True, text=True)
    assert history.returncode == 0, history.stderr
    (entry,) = json.loads(history.stdout)["runs"]
    assert (entry["flow_run_id"], entry["status"], entry["generation"]) == \
        (flow_run_id, "succeeded", 1)
    assert entry["tasks"]["after_bad"] == "succeeded"
    assert not workspace.exists()


SLOW = {
    ".fastflow/flows/chain.json": json.dumps({
        "name": "chain",
        "tasks": [
            {"id": "first", "script": "step.py", "args": ["first", "0"]},
            {"id": "middle", "script": "step.py", "args": ["middle", "8"], "depends_on": ["first"]},
            {"id": "last", "script": "step.py", "args": ["last", "0"], "depends_on": ["middle"]},
        ]}),
    ".fastflow/flows/tasks/step.py": (
        "import sys, time\n"
        "print('begin', sys.argv[1], flush=True)\n"
        "time.sleep(float(sys.argv[2]))\n"
        "print('end', sys.argv[1], flush=True)\n"),
}


def test_a_kill_of_the_daemon_mid_flow_resumes_the_flow_run_and_runs_no_task_twice(
        setup, tmp_path):
    user, serve = setup
    user.push(SLOW, "chain flow")
    serve.start()
    flow_run_id = queue_remote_flow(serve.state, "chain", {}, utc_now())
    live = serve.state / "live"
    wait_for(lambda: any("begin middle" in p.read_text() for p in live.glob("*chain.middle*")),
             timeout=90, what=f"task middle running:\n{serve.output()}")
    serve.kill()
    serve.start()
    data = flow_record(serve, tmp_path, flow_run_id)
    assert data["status"] == "succeeded", json.dumps(data, indent=1)
    for task in data["tasks"]:
        log = log_of(serve, tmp_path, task)
        assert log.count(f"begin {task['id']}") == 1, log
        assert run_of(serve, tmp_path, task).attempts[-1].n == 1
    assert "flow run resumed" in serve.output()


def test_a_featherflow_project_runs_unchanged_on_the_daemon(setup, tmp_path):
    user, serve = setup
    fixture = ROOT / "tests" / "fixtures" / "featherflow-project"
    user.push({str(p.relative_to(fixture)): p.read_text() for p in fixture.rglob("*")
               if p.is_file()}, "a Featherflow project")
    serve.start()
    flow_run_id = queue_remote_flow(serve.state, "weather", {}, utc_now())
    data = flow_record(serve, tmp_path, flow_run_id)
    assert data["status"] == "succeeded", json.dumps(data, indent=1)
    synopsis = next(t for t in data["tasks"] if t["id"] == "synopsis")
    assert "synopsis (fancy): 7 observations, max 12" in log_of(serve, tmp_path, synopsis)


def test_flow_run_here_streams_each_task_prefixed_and_exits_non_zero_on_a_failure(
        tmp_path, runner_image, shared_cache):
    user = Origin(tmp_path)
    user.push(BRANCHES, "branches flow")
    env = {**os.environ, "FASTFLOW_CACHE_DIR": str(shared_cache)}
    done = subprocess.run([sys.executable, "-m", "fastflow", "flow", "run", "branches",
                           "--repo", str(user.work)], capture_output=True, text=True, env=env,
                          timeout=300)
    assert done.returncode == 10, done.stderr
    assert "[ok] say ok" in done.stdout and "[cleanup] say cleanup" in done.stdout
    assert "fastflow: [bad] retry 1: attempt 2 of 2 starts in 0s" in done.stderr
    assert "fastflow: [after_bad] skipped: dependency 'bad' failed" in done.stderr
    assert "flow run " in done.stderr and ": failed" in done.stderr


def test_a_schedule_starts_flow_runs_with_its_params(setup, tmp_path):
    user, serve = setup
    user.push({
        ".fastflow/flows/tick.json": json.dumps({"name": "tick", "params": {"who": None}, "tasks": [
            {"id": "hello", "script": "hello.py", "args": ["${params.who}"]}]}),
        ".fastflow/flows/tasks/hello.py": "import sys\nprint('hello', sys.argv[1])\n",
        ".fastflow/schedules.yaml": ("schedules:\n  - flow: tick\n    interval: 5s\n"
                                     "    params: {who: schedule}\n"),
    }, "a scheduled flow")
    serve.start()
    store = store_of(serve, tmp_path)
    ids = wait_for(lambda: store.list_flow_run_ids("tick", 2) if len(
        store.list_flow_run_ids("tick", 2)) >= 2 else None, timeout=90,
        what=f"two flow runs of the schedule:\n{serve.output()}")
    data = flow_record(serve, tmp_path, ids[-1])  # the older: ended
    assert data["status"] == "succeeded" and data["trigger"]["kind"] == "schedule"
    assert data["trigger"]["schedule_id"] == "tick"
    assert data["params"] == {"who": "schedule"}
    assert "hello schedule" in log_of(serve, tmp_path, data["tasks"][0])


def test_a_pipelines_downstream_trigger_starts_a_flow_run_once(setup, tmp_path):
    user, serve = setup
    user.push({
        "pipelines/start/main.py": "print('start')\n",
        "pipelines/start/pipeline.json": json.dumps(
            {"downstream_triggers": [{"pipeline": "after", "on_success": True}]}),
        ".fastflow/flows/after.json": json.dumps({"name": "after", "tasks": [
            {"id": "one", "script": "one.py"}]}),
        ".fastflow/flows/tasks/one.py": "import os\nprint('after', os.environ['FASTFLOW_FLOW'])\n",
    }, "a pipeline that triggers a flow")
    validate = subprocess.run([sys.executable, "-m", "fastflow", "validate", "--repo",
                               str(user.work)], capture_output=True, text=True)
    assert validate.returncode == 0 and "will not fire" not in validate.stdout + validate.stderr
    serve.start()
    from fastflow.daemon.statedir import queue_remote_run
    run_id = queue_remote_run(serve.state, "start", {}, None, utc_now())
    store = store_of(serve, tmp_path)

    def parent():
        try:
            return store.read_run(run_id, "start")
        except FastflowError:
            return None

    record = wait_for(parent, timeout=90, what=f"the run of start:\n{serve.output()}")
    (fired,) = record.downstream
    assert fired["pipeline"] == "after" and fired["skipped"] is None
    data = flow_record(serve, tmp_path, fired["run_id"])
    assert data["status"] == "succeeded"
    assert (data["trigger"]["kind"], data["trigger"]["parent_run_id"]) == ("downstream", run_id)
    assert store.list_flow_run_ids("after", 5) == [fired["run_id"]]


def test_a_webhook_starts_a_flow_run_with_the_bodys_params_and_a_repeat_starts_none(
        setup, tmp_path):
    import socket
    import urllib.request

    user, serve = setup
    user.push({
        ".fastflow/flows/hooked.json": json.dumps({
            "name": "hooked", "webhook_key": "k3y-for-flow", "params": {"who": None},
            "tasks": [{"id": "greet", "script": "greet.py", "args": ["${params.who}"]}]}),
        ".fastflow/flows/tasks/greet.py": "import sys\nprint('hi', sys.argv[1])\n",
    }, "a flow with a webhook key")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    serve.start("--webhooks", f"127.0.0.1:{port}")
    url = f"http://127.0.0.1:{port}/api/webhooks/hooked/k3y-for-flow"

    def post(key_url: str) -> tuple[int, dict]:
        request = urllib.request.Request(key_url, data=json.dumps({"params": {"who": "hook"}})
                                         .encode(), method="POST",
                                         headers={"Content-Type": "application/json",
                                                  "Idempotency-Key": "delivery-1"})
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                return answer.status, json.loads(answer.read())
        except urllib.error.HTTPError as exc:
            return exc.code, {}

    def listening():
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2)
            return True
        except OSError:
            return False

    wait_for(listening, timeout=30, what="the webhook intake")
    assert post(url.replace("k3y-for-flow", "wrong"))[0] == 404
    status, body = post(url)
    assert status == 202, body
    flow_run_id = body["run_id"]
    data = flow_record(serve, tmp_path, flow_run_id)
    assert data["status"] == "succeeded" and data["params"] == {"who": "hook"}
    assert data["trigger"]["kind"] == "webhook"
    assert data["trigger"]["delivery_id"] == "delivery-1"
    assert "hi hook" in log_of(serve, tmp_path, data["tasks"][0])
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{body['status_url']}", timeout=10) as answer:
        looked = json.loads(answer.read())  # the status URL of the 202 answers for a flow run
    assert (looked["flow"], looked["flow_run_id"], looked["status"], looked["tasks"]) == \
        ("hooked", flow_run_id, "succeeded", {"greet": "succeeded"})
    again, body = post(url)
    assert (again, body["run_id"]) == (200, flow_run_id)
    assert store_of(serve, tmp_path).list_flow_run_ids("hooked", 5) == [flow_run_id]
