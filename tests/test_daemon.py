"""The daemon against real repositories: a bare repository, a clone pushing with the git CLI
(the tests play the user with git; the product uses pygit2), real uv runs on the host executor.
Docker-specific behaviour (re-attaching containers after kill -9) is in test_daemon_docker.py.
"""
from __future__ import annotations

import json
import os
import time
from datetime import datetime, timedelta

import pytest
from helpers import git, make_daemon, start_serve, utc_now, wait_for

from fastflow.daemon.loop import Daemon
from fastflow.daemon.statedir import StateDirBusy, queue_remote_run
from fastflow.errors import RepositoryError
from fastflow.model import RunStatus
from fastflow.record import RunRecord, Trigger, new_run_id
from fastflow.results.store import ResultsStore

pytestmark = pytest.mark.slow


def records(daemon: Daemon, pipeline: str) -> list:
    return daemon.store.list_runs(pipeline, limit=50)


PRINT_COMMIT = 'import os; print("code v{v} at", os.environ["FASTFLOW_COMMIT"], os.environ["FASTFLOW_TRIGGER"])\n'


@pytest.fixture
def user(origin):
    origin.push({
        ".fastflow/config.yaml": "max_concurrent_runs: 2\n",
        "pipelines/etl/main.py": PRINT_COMMIT.format(v=1),
        "pipelines/etl/pipeline.json": '{"run_on_change": true}',
        "pipelines/report/main.py": "print('report')\n",
    }, "first")
    return origin


@pytest.fixture
def daemon(user, tmp_path):
    d = make_daemon(str(user.bare), tmp_path / "state")
    d.start()
    yield d
    d.stop(grace=30)


def test_first_sync_deploys_without_running_run_on_change(daemon, user):
    assert sorted(daemon.deployment.active) == ["etl", "report"]
    assert daemon.deployment.changes.first_sync
    assert records(daemon, "etl") == []


def test_a_push_of_a_run_on_change_pipeline_runs_it_at_that_commit(daemon, user):
    sha = user.push({"pipelines/etl/main.py": PRINT_COMMIT.format(v=2)}, "etl v2")
    daemon.inbox.post_push(f"{'0' * 40} {sha} refs/heads/main\n")
    daemon.tick(utc_now())
    assert daemon.deployment.commit == sha
    assert [c.name for c in daemon.deployment.changes.changed] == ["etl"]
    assert daemon.dispatcher.wait_idle(60)
    (record,) = wait_for(lambda: records(daemon, "etl"))
    assert record.status is RunStatus.SUCCEEDED
    assert record.trigger.kind == "push"
    assert record.commit.sha == sha
    assert f"code v2 at {sha} push" in daemon.store.read_log(record.run_id)
    assert records(daemon, "report") == []  # unchanged pipelines do not run


def test_a_push_to_another_branch_changes_nothing(daemon, user):
    before = daemon.deployment.commit
    git("checkout", "-q", "-b", "feature", cwd=user.work)
    (user.work / "pipelines/etl/main.py").write_text("print('feature')\n")
    git("commit", "-qam", "feature", cwd=user.work)
    git("push", "-q", "origin", "feature", cwd=user.work)
    daemon.inbox.post_push(f"{'0' * 40} {'1' * 40} refs/heads/feature\n")
    daemon.tick(utc_now())
    assert daemon.deployment.commit == before


def test_broken_metadata_keeps_the_last_valid_version(daemon, user):
    good = daemon.deployment.active["etl"]
    user.push({"pipelines/etl/pipeline.json": '{"run_on_change": true, "timeout": -5}',
               "pipelines/etl/main.py": PRINT_COMMIT.format(v=3)}, "broken")
    daemon.sync(utc_now())
    assert daemon.deployment.active["etl"] == good  # old code, old metadata, old commit
    (error,) = [p for p in daemon.deployment.errors if p.pipeline == "etl"]
    assert error.file == "pipelines/etl/pipeline.json" and error.field == "timeout"
    assert error.message.endswith(f"(the last valid version (commit {good.commit[:10]}) stays active)")
    run_id = daemon.submit("etl", Trigger("manual"), now=utc_now())
    assert daemon.dispatcher.wait_idle(60)
    assert "code v1" in wait_for(lambda: daemon.store.read_log(run_id))


def test_broken_config_yaml_keeps_the_previous_configuration(daemon, user):
    user.push({".fastflow/config.yaml": "max_concurrent_runs: lots\n"}, "bad config")
    daemon.sync(utc_now())
    assert daemon.deployment.config.max_concurrent_runs == 2
    (error,) = daemon.deployment.errors
    assert error.file == ".fastflow/config.yaml" and error.field == "max_concurrent_runs"
    assert error.message.endswith("(the previous valid configuration stays active)")
    assert sorted(daemon.deployment.active) == ["etl", "report"]


def test_a_push_during_a_run_changes_nothing_for_it(daemon, user):
    first = user.push({"pipelines/etl/main.py":
                       "import time; time.sleep(3); print('old code')\n"}, "slow")
    daemon.sync(utc_now())
    (record_id,) = [r.run_id for r in daemon.dispatcher.running()] or [None]
    user.push({"pipelines/etl/main.py": "print('new code')\n"}, "new")
    daemon.sync(utc_now())
    assert daemon.dispatcher.wait_idle(60)
    runs = wait_for(lambda: len(records(daemon, "etl")) == 2 and records(daemon, "etl"))
    old = next(r for r in runs if r.commit.sha == first)
    assert "old code" in daemon.store.read_log(old.run_id)
    assert record_id == old.run_id


def test_changed_requirements_are_preheated_before_the_next_run(daemon, user):
    user.push({"pipelines/report/requirements.txt": "six==1.16.0\n",
               "pipelines/report/main.py": "import six; print('six', six.__version__)\n"}, "deps")
    daemon.sync(utc_now())
    assert daemon.preheater.state("report").status in ("in_progress", "ready")
    run_id = daemon.submit("report", Trigger("manual"), now=utc_now())
    assert daemon.dispatcher.wait_idle(120)
    record = wait_for(lambda: daemon.store.read_run(run_id))
    state = daemon.preheater.state("report")
    assert state.status == "ready"
    assert datetime.fromisoformat(state.at) <= record.started_at
    assert record.status is RunStatus.SUCCEEDED


def test_unresolvable_requirements_fail_runs_fast_with_uvs_reason(daemon, user):
    user.push({"pipelines/report/requirements.txt": "this-package-does-not-exist-fastflow==1.0\n"})
    daemon.sync(utc_now())
    assert daemon.preheater.wait_all(120)
    state = daemon.preheater.state("report")
    assert state.status == "broken"
    assert state.message.startswith(
        "uv could not install the requirements of pipeline 'report' from requirements.txt: ")
    assert "this-package-does-not-exist-fastflow" in state.message
    run_id = daemon.submit("report", Trigger("manual"), now=utc_now())
    assert daemon.dispatcher.wait_idle(60)
    record = wait_for(lambda: daemon.store.read_run(run_id))
    assert record.status is RunStatus.FAILED
    assert record.attempts == ()
    assert record.error.kind == "dependencies" and record.error.message == state.message


def test_downstream_runs_start_after_the_parent_is_recorded(daemon, user):
    user.push({
        "pipelines/parent/main.py": "import os; open(os.environ['FASTFLOW_ROUTE_FILE'], 'w').write('go')\n",
        "pipelines/parent/pipeline.json": json.dumps(
            {"downstream_triggers": [{"pipeline": "report", "on_route": "go"}]}),
    })
    daemon.sync(utc_now())
    parent = daemon.submit("parent", Trigger("manual"), now=utc_now())
    child = wait_for(lambda: records(daemon, "report"), timeout=60)[0]
    assert child.trigger.kind == "downstream" and child.trigger.parent_run_id == parent


def test_the_parent_records_its_child_and_why_a_disabled_target_was_skipped(daemon, user):
    user.push({
        "pipelines/parent/main.py": "print('parent')\n",
        "pipelines/parent/pipeline.json": json.dumps({"downstream_triggers": [
            {"pipeline": "report"}, {"pipeline": "off"}, {"pipeline": "cfg", "run_config_id": "old"},
            {"pipeline": "report", "on_success": False, "on_failure": True}]}),
        "pipelines/off/main.py": "print('off')\n",
        "pipelines/off/pipeline.json": '{"enabled": false}',
        "pipelines/cfg/main.py": "print('cfg')\n",
        "pipelines/cfg/pipeline.json": '{"schedules": [{"id": "old", "enabled": false}]}',
    })
    daemon.sync(utc_now())
    commit = daemon.deployment.commit[:12]
    parent = daemon.submit("parent", Trigger("manual"), now=utc_now())
    (child,) = wait_for(lambda: records(daemon, "report"), timeout=60)
    assert child.trigger.parent_run_id == parent
    record = daemon.store.read_run(parent)
    assert record.downstream == (
        {"pipeline": "report", "run_config_id": None, "reason": "success", "run_id": child.run_id,
         "skipped": None},
        {"pipeline": "off", "run_config_id": None, "reason": "success", "run_id": None,
         "skipped": f"pipeline 'off' is disabled (\"enabled\": false at commit {commit}); enable "
                    "it and push"},
        {"pipeline": "cfg", "run_config_id": "old", "reason": "success", "run_id": None,
         "skipped": "run configuration 'old' of pipeline 'cfg' is disabled (\"enabled\": false in "
                    f"its schedules[] entry at commit {commit}); enable it and push"},
    )
    assert daemon.dispatcher.wait_idle(60)
    assert records(daemon, "off") == [] and records(daemon, "cfg") == []
    page = git("--git-dir", str(user.bare), "show",
               f"fastflow/results:site/runs/parent/{parent[:4]}/{parent[4:6]}/{parent}.html",
               cwd=user.bare)
    assert f"report (success): started {child.run_id}</a>" in page
    assert "off (success): skipped: pipeline &#39;off&#39; is disabled" in page


def test_a_downstream_run_is_journalled_before_its_parents_record_and_never_twice(user, tmp_path):
    """The child is journalled when the parent's outcome is decided, before its record is
    stored: deciding again (the parent recorded again after a kill -9) finds it, and a daemon
    that stops before queueing it leaves it to the next start, which runs it."""
    state = tmp_path / "state"
    daemon = make_daemon(user.bare, state)
    daemon.start()
    parent = RunRecord(run_id=new_run_id("etl", utc_now()), pipeline="etl",
                       status=RunStatus.SUCCEEDED, downstream=(
                           {"pipeline": "report", "run_config_id": None, "reason": "success"},))
    try:
        first = daemon.launcher.before_record(parent)
        again = daemon.launcher.before_record(parent)
        (entry,) = first.downstream
        assert again.downstream == first.downstream and entry["skipped"] is None
        assert [o.run_id for o in daemon.launcher.journal.orders()] == [entry["run_id"]]
    finally:
        daemon.stop(grace=30)
    assert records(daemon, "report") == []  # never queued: the daemon stopped first
    daemon = make_daemon(user.bare, state)
    daemon.start()
    try:
        child = wait_for(lambda: records(daemon, "report"), timeout=60)[0]
        assert (child.run_id, child.trigger.kind, child.trigger.parent_run_id) == (
            entry["run_id"], "downstream", parent.run_id)
    finally:
        daemon.stop(grace=30)


CHAIN = {
    "pipelines/a/main.py": "print('a')\n",
    "pipelines/a/pipeline.json": json.dumps(
        {"downstream_triggers": [{"pipeline": "b", "run_config_id": "prod"}]}),
    # B fails its first attempt: only prod's retry_attempts (1) lets it succeed and fire C.
    "pipelines/b/main.py": "import os, sys\n"
                           "print('level', os.environ['LEVEL'], os.environ['BASE'],\n"
                           "      os.environ['FASTFLOW_RUN_CONFIG'], os.environ['FASTFLOW_TRIGGER'])\n"
                           "sys.exit(3 if os.environ['FASTFLOW_ATTEMPT'] == '1' else 0)\n",
    "pipelines/b/pipeline.json": json.dumps({
        "default_env": {"LEVEL": "base", "BASE": "kept"}, "timeout": 600, "retry_attempts": 0,
        "schedules": [{"id": "prod", "default_env": {"LEVEL": "prod"}, "timeout": 30,
                       "retry_attempts": 1,
                       "retry_strategy": {"type": "fixed_delay", "delay": 0},
                       "mem_hard_limit": "256m"}],
        "downstream_triggers": [{"pipeline": "c"}]}),
    "pipelines/c/main.py": "import os; print('c after', os.environ['FASTFLOW_TRIGGER'])\n",
}


def test_a_chain_through_a_run_configuration_in_fastflow_serve(origin, tmp_path):
    """A -> B (run_config_id prod) -> C through a real `fastflow serve`: B runs with prod's
    default_env, FASTFLOW_RUN_CONFIG, timeout, retries and limits; each parent records the id
    of the child it started."""
    origin.push(CHAIN, "chain")
    state, log = tmp_path / "state", tmp_path / "serve.log"
    serve = start_serve(origin.bare, state, log, "--local", "--poll-interval", "600")
    try:
        store = ResultsStore(origin.bare, tmp_path / "reader-journal", utc_now)

        def recorded(run_id: str, pipeline: str):
            def read():
                try:
                    return store.read_run(run_id, pipeline=pipeline)
                except RepositoryError:
                    return None
            return wait_for(read, timeout=90, what=f"the record of {run_id}:\n{log.read_text()}")

        a = recorded(queue_remote_run(state, "a", {}, None, utc_now()), "a")
        assert a.status is RunStatus.SUCCEEDED
        ((b_entry),) = a.downstream
        assert (b_entry["pipeline"], b_entry["run_config_id"], b_entry["skipped"]) == ("b", "prod", None)
        b = recorded(b_entry["run_id"], "b")
        assert b.status is RunStatus.SUCCEEDED, b.error
        assert (b.run_config, b.trigger.kind, b.trigger.parent_run_id) == ("prod", "downstream", a.run_id)
        assert [(x.n, x.exit_code) for x in b.attempts] == [(1, 3), (2, 0)]
        assert b.limits["timeout_s"] == 30 and b.limits["mem_hard_limit"] == 256 * 1024 ** 2
        assert b.limits["retry"] == {"attempts": 1, "strategy": "fixed_delay", "delay": 0.0}
        assert "stdout | level prod kept prod downstream\n" in store.read_log(b.run_id, pipeline="b")
        ((c_entry),) = b.downstream
        c = recorded(c_entry["run_id"], "c")
        assert c.status is RunStatus.SUCCEEDED and c.run_config is None
        assert c.trigger.parent_run_id == b.run_id and c.started_at >= b.finished_at
        assert "stdout | c after downstream\n" in store.read_log(c.run_id, pipeline="c")
    finally:
        serve.terminate()
        serve.wait(40)
    assert "Traceback" not in log.read_text()


def test_remote_run_requests_are_queued_with_a_known_run_id(daemon, user):
    run_id = queue_remote_run(daemon.state_dir, "report", {"X": "1"}, None, utc_now())
    daemon.tick(utc_now())
    assert daemon.dispatcher.wait_idle(60)
    record = wait_for(lambda: daemon.store.read_run(run_id))
    assert record.status is RunStatus.SUCCEEDED and record.trigger.kind == "manual"


def test_one_daemon_per_state_dir(daemon, user, tmp_path):
    other = make_daemon(str(user.bare), tmp_path / "state")
    with pytest.raises(StateDirBusy) as info:
        other.start()
    assert str(info.value) == (
        f"{(tmp_path / 'state').resolve()}: another `fastflow serve` (pid {os.getpid()}) uses "
        "this state dir; stop it first or pass another --state-dir"
    )


def test_a_remote_url_is_mirrored_and_polled(user, tmp_path):
    d = make_daemon(f"file://{user.bare}", tmp_path / "state-url", poll_interval=0.2)
    d.start()
    try:
        sha = user.push({"pipelines/etl/main.py": PRINT_COMMIT.format(v=9)}, "v9")
        time.sleep(0.3)
        d.tick(utc_now())  # the poll interval has passed: fetch, then deploy
        assert d.deployment.commit == sha
        assert (tmp_path / "state-url" / "mirror.git").is_dir()
        assert d.dispatcher.wait_idle(60)
        (record,) = wait_for(lambda: records(d, "etl"))
        assert record.commit.sha == sha
    finally:
        d.stop(grace=30)
    # The results branch was pushed to the remote.
    assert git("rev-parse", "fastflow/results", cwd=user.bare)


def test_restart_continues_from_the_saved_deployment(user, tmp_path):
    state = tmp_path / "state"
    d = make_daemon(str(user.bare), state)
    d.start()
    good = d.deployment.active["etl"]
    user.push({"pipelines/etl/pipeline.json": "{not json"}, "broken")
    d.sync(utc_now())
    d.stop()
    again = make_daemon(str(user.bare), state)
    again.start()
    try:
        assert again.deployment.active["etl"] == good
    finally:
        again.stop()


def test_a_restart_checks_every_pre_heat_even_when_the_branch_did_not_move(user, tmp_path):
    # e.g. the runner image was rebuilt or the cache cleared while the daemon was down
    user.push({"pipelines/report/requirements.txt": "six==1.16.0\n"}, "deps")
    state = tmp_path / "state"
    first = make_daemon(str(user.bare), state)
    first.start()
    first.preheater.wait_all()
    first.stop()
    (state / "preheat" / "report.json").unlink()
    again = make_daemon(str(user.bare), state)
    again.start()
    try:
        assert again.preheater.state("report").status in ("in_progress", "ready")
        again.preheater.wait_all()
        assert again.preheater.state("report").status == "ready"
    finally:
        again.stop()


def test_retention_removes_old_runs_with_their_pages_and_keeps_the_site_consistent(daemon, user):
    sha = user.push({".fastflow/config.yaml": "max_concurrent_runs: 2\nretention:\n  keep_runs: 2\n"})
    daemon.inbox.post_push(f"{'0' * 40} {sha} refs/heads/main\n")
    daemon.tick(utc_now())
    ids, start = [], utc_now()
    for i in range(3):  # one second apart: run ids sort by their time, not their random suffix
        ids.append(daemon.submit("report", Trigger(kind="manual"), now=start + timedelta(seconds=i)))
        assert daemon.dispatcher.wait_idle(60)
    removed = daemon.apply_retention(utc_now())
    assert removed == {"report": [ids[0]]}
    assert [r.run_id for r in records(daemon, "report")] == ids[:0:-1]
    tree = git("--git-dir", str(user.bare), "ls-tree", "-r", "--name-only", "fastflow/results",
               cwd=user.bare)
    assert ids[0] not in tree and ids[1] in tree and f"site/runs/report/{ids[2][:4]}/{ids[2][4:6]}/{ids[2]}.html" in tree
    assert daemon.store.read_summary()["pipelines"]["report"]["runs_recorded"] == 2
    page = git("--git-dir", str(user.bare), "show", "fastflow/results:site/pipelines/report/index.html",
               cwd=user.bare)
    assert ids[0] not in page and ids[2] in page
    assert daemon.apply_retention(utc_now()) == {}


def test_a_bad_folder_name_never_stops_the_other_pipelines_records(daemon, user):
    """Issue 12: `pipelines/bad name/` and `pipelines/<script>/` beside a good pipeline are
    listed as invalid; the good pipeline's runs are still recorded with their pages."""
    user.push({"pipelines/bad name/main.py": "print(1)\n",
               "pipelines/<script>/main.py": "print(1)\n"}, "bad names")
    daemon.sync(utc_now())
    assert sorted(daemon.deployment.invalid) == ["<script>", "bad name"]
    assert sorted(daemon.deployment.active) == ["etl", "report"]
    ids = [daemon.submit("report", Trigger("manual"), now=utc_now()) for _ in range(2)]
    assert daemon.dispatcher.wait_idle(60)
    assert sorted(r.run_id for r in wait_for(lambda: len(records(daemon, "report")) == 2
                                                 and records(daemon, "report"))) == sorted(ids)
    overview = git("--git-dir", str(user.bare), "show", "fastflow/results:site/index.html",
                   cwd=user.bare)
    assert "bad name" in overview and "&lt;script&gt;" in overview
    assert "is not a valid pipeline name" in overview


def test_every_daemon_guarantee_names_tests_that_exist(project_root):
    """docs/serve.md, Guarantees: each `file.py::test_name` (or `::test_name` of the file
    before it, or a `TestClass`) names a test that is defined in that file."""
    import re

    table = (project_root / "docs/serve.md").read_text().split("## Guarantees", 1)[1]
    table = table.split("\n## ", 1)[0]
    named = []
    for row in (line for line in table.splitlines() if line.startswith("| ") and "`" in line):
        current = None
        for ref in re.findall(r"`([^`]+)`", row.split("|")[2]):
            file, _, name = ref.partition("::") if "::" in ref else (ref, "", "")
            current = file or current
            named.append((current, name or None))
    assert len(named) >= 20
    for file, name in named:
        source = (project_root / "tests" / file).read_text()
        if name:
            assert re.search(rf"^\s*(def|class) {name}\b", source, re.M), f"{file}::{name}"
