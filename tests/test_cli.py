"""The `fastflow` command line: help and docs for every command, exit codes, exact messages.

`run` is exercised through a real `python -m fastflow` subprocess with real uv (host executor),
so signals (Ctrl-C) and exit codes are the real ones.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import ROOT, alive, command_paths, git, start_serve, utc_now, wait_for

from fastflow.cli import main
from fastflow.daemon.statedir import queue_remote_run
from fastflow.defaults import STATE_DEPLOYMENT


def fastflow(*args: str, cwd: Path | None = None, env: dict | None = None, **kw):
    return subprocess.run(
        [sys.executable, "-m", "fastflow", *args], capture_output=True, text=True,
        cwd=cwd, env={**os.environ, **(env or {})}, timeout=300, **kw,
    )


def test_every_command_has_help_and_a_docs_section():
    docs = "\n".join(p.read_text() for p in sorted((ROOT / "docs").glob("*.md")))
    for names, command in command_paths(main, ("fastflow",)):
        path = " ".join(names)
        assert command.help, f"{path} has no help text"
        heading = re.compile(rf"^#{{2,4}} `?{re.escape(path)}(`| |$)", re.M)
        assert heading.search(docs), f"docs/ lacks a section for {path}"


def test_list_shows_every_gallery_pipeline():
    result = CliRunner().invoke(main, ["list", "--repo", str(ROOT)])
    assert result.exit_code == 0, result.output
    expected = json.loads((ROOT / "pipelines" / "expected.json").read_text())
    flows = CliRunner().invoke(main, ["flow", "list", "--repo", str(ROOT)])
    assert flows.exit_code == 0, flows.output
    for name in expected:  # a gallery flow (.fastflow/flows/) is listed by `fastflow flow list`
        is_flow = (ROOT / ".fastflow" / "flows" / f"{name}.json").is_file()
        assert name in (flows.output if is_flow else result.output)
    assert "cron */15 * * * *" in result.output


def test_list_shows_a_problem_as_text_not_markup(make_repo):
    repo = make_repo({"pipelines/bad/main.py": "print(1)\n",
                      "pipelines/bad/pipeline.json": '{"timeout": "[/x] \\u001b[2J"}'})
    result = CliRunner().invoke(main, ["list", "--repo", str(repo)])
    assert result.exit_code == 0, result.output
    (row,) = result.stdout.splitlines()[1:]
    assert result.stderr == "pipelines in pipelines/ (pipelines_dir: default)\n"
    # The value as written, not as markup (was a MarkupError); the message is config's.
    assert row.startswith("bad\t-\t-\t-\tinvalid: pipelines/bad/pipeline.json: timeout: "
                          '"[/x] \\u001b[2J" '.expandtabs(8))


def test_list_json_shows_invalid_pipelines_with_file_field_reason(make_repo):
    repo = make_repo({
        "pipelines/good/main.py": "print(1)\n",
        "pipelines/bad/main.py": "print(1)\n",
        "pipelines/bad/pipeline.json": '{"timeout": "soon"}',
    })
    result = CliRunner().invoke(main, ["list", "--repo", str(repo), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert [p["name"] for p in data["pipelines"]] == ["good"]
    (bad,) = data["invalid"]
    assert bad["name"] == "bad"
    assert bad["problems"][0]["file"] == "pipelines/bad/pipeline.json"
    assert bad["problems"][0]["field"] == "timeout"


def test_validate_exits_1_with_one_line_per_problem(make_repo):
    repo = make_repo({
        "pipelines/ok/main.py": "print(1)\n",
        "pipelines/broken/main.py": "print(1)\n",
        "pipelines/broken/pipeline.json": '{"timeout": 5,\n "retry_attempts": -1\n',
    })
    result = fastflow("validate", "--repo", str(repo))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: pipelines/broken/pipeline.json: invalid JSON at line 3, column 1: "
        "Expecting ',' delimiter"
    ]


def test_validate_ok_and_json(make_repo):
    repo = make_repo({"pipelines/ok/main.py": "print(1)\n"})
    result = fastflow("validate", "--repo", str(repo))
    assert result.returncode == 0
    assert result.stdout == "ok: the repository is valid\n"
    result = fastflow("validate", "--repo", str(repo), "--json")
    assert json.loads(result.stdout) == {"ok": True, "problems": []}


def test_validate_checks_every_file_the_daemon_reads_and_the_references_between_them(make_repo):
    """Was: the secrets file and trigger cycles were not looked at ("ok"; schedules.yaml since
    e41f831); --json holds the same problems."""
    repo = make_repo({
        "pipelines/etl/main.py": "print(1)\n", "pipelines/load/main.py": "print(1)\n",
        "pipelines/report/main.py": "print(1)\n",
        "pipelines/etl/pipeline.json": '{"secrets": ["DB_URL"], "downstream_triggers": [{"pipeline": "load"}]}',
        "pipelines/load/pipeline.json": '{"downstream_triggers": [{"pipeline": "etl"}]}',
        "pipelines/report/pipeline.json": '{"schedules": [{"id": "nightly", "schedule_cron": "0 3 * * *"}], '
                                          '"downstream_triggers": [{"pipeline": "reprot"}]}',
        ".fastflow/schedules.yaml": "schedules:\n  - pipeline: report\n    run_config: nigthly\n"
                                    '    cron: "0 4 * * *"\n  - id: hourly\n    pipeline: etl\n'
                                    "    interval: 1h\n    timezone: Mars/Olympus\n",
        ".fastflow/secrets.enc.yaml": "DB_URL: postgres://plain\n",
    })
    result = fastflow("validate", "--repo", str(repo))
    cycle = "; a run would trigger itself forever; remove one of the triggers"
    assert result.returncode == 1 and result.stderr.splitlines() == [
        'error: .fastflow/schedules.yaml: schedules[0] (pipeline "report").run_config: "nigthly" is not '
        'a run configuration of pipeline "report" (it has: "nightly"); use one of its `schedules[].id` '
        'values or remove run_config; did you mean "nightly"?',
        'error: .fastflow/schedules.yaml: schedules[1] (id "hourly").timezone: "Mars/Olympus" is not a '
        'known IANA time zone; use a name such as "Europe/Berlin", "America/New_York" or "UTC"',
        "error: .fastflow/secrets.enc.yaml: sops metadata not found (no `sops:` key at the top level); "
        "this file is not encrypted; encrypt it with `fastflow secrets encrypt`",
        "error: pipelines/etl/pipeline.json: downstream_triggers[0].pipeline: the triggers form a cycle "
        f"etl -> load -> etl{cycle}",
        "error: pipelines/load/pipeline.json: downstream_triggers[0].pipeline: the triggers form a cycle "
        f"load -> etl -> load{cycle}",
    ]
    assert result.stdout.splitlines() == [
        'warning: pipelines/report/pipeline.json: downstream_triggers[0].pipeline: no pipeline named '
        '"reprot"; this trigger will not fire; did you mean "report"?']
    result = fastflow("validate", "--repo", str(repo), "--json")
    data = json.loads(result.stdout)
    assert result.returncode == 1 and data["ok"] is False
    assert [(p["severity"], p["file"], p["pipeline"]) for p in data["problems"]] == [
        ("error", ".fastflow/schedules.yaml", "report"), ("error", ".fastflow/schedules.yaml", None),
        ("error", ".fastflow/secrets.enc.yaml", None), ("error", "pipelines/etl/pipeline.json", "etl"),
        ("error", "pipelines/load/pipeline.json", "load"),
        ("warning", "pipelines/report/pipeline.json", "report"),
    ]


def test_validate_reports_an_invalid_config_yaml(make_repo):
    repo = make_repo({
        "pipelines/ok/main.py": "print(1)\n",
        ".fastflow/config.yaml": "max_concurrent_runs: many\n",
    })
    result = fastflow("validate", "--repo", str(repo), "--json")
    assert result.returncode == 1
    (problem,) = json.loads(result.stdout)["problems"]
    assert problem["file"] == ".fastflow/config.yaml"
    assert problem["field"] == "max_concurrent_runs"


def test_a_folder_name_with_a_newline_prints_on_one_line(make_repo):
    """Issue 12: validate, list and show print such a name escaped (`new\\nline`)."""
    repo = make_repo({"pipelines/new\nline/main.py": "print(1)\n",
                      "pipelines/ok/main.py": "print(1)\n"})
    message = ('pipelines/new\\nline: "new\\nline" is not a valid pipeline name; rename the '
               "folder using 1-63 letters, digits, '_', '.' or '-', starting with a letter or digit")
    result = fastflow("validate", "--repo", str(repo))
    assert (result.returncode, result.stderr) == (1, f"error: {message}\n")
    result = fastflow("list", "--repo", str(repo))
    _, bad, ok = result.stdout.splitlines()
    assert bad.startswith("new\\nline ") and bad.endswith(f"invalid: {message}")
    assert ok.startswith("ok ")
    result = fastflow("show", "new\nline", "--repo", str(repo))
    assert result.stderr == f'Error: pipeline "new\\nline" is invalid; fix it first:\n  {message}\n'


def test_show_unknown_pipeline_suggests_a_name():
    result = fastflow("show", "standrd", "--repo", str(ROOT))
    assert result.returncode == 1
    assert result.stderr == 'Error: no pipeline named "standrd" in "pipelines"; did you mean "standard"?\n'


def test_show_gives_values_and_their_sources():
    result = CliRunner().invoke(main, ["show", "standard", "--repo", str(ROOT), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["timeout"] == {"value": 300.0, "source": "pipelines/standard/pipeline.json"}
    assert data["retry_attempts"]["source"] == "default"
    assert data["python_version"]["source"] == ".fastflow/config.yaml"


def test_show_prints_restart_interval_and_cooldown(make_repo):
    repo = make_repo({"pipelines/worker/main.py": "print(1)\n",
                      "pipelines/worker/pipeline.json": '{"restart_on_crash": true, '
                                                        '"restart_interval": "0 3 * * *"}'})
    result = CliRunner().invoke(main, ["show", "worker", "--repo", str(repo), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["restart_interval"] == {"value": "0 3 * * *", "source": "pipelines/worker/pipeline.json"}
    assert data["restart_cooldown"] == {"value": 60.0, "source": "default"}
    text = CliRunner().invoke(main, ["show", "worker", "--repo", str(repo)]).output
    assert "restart_interval" in text and "0 3 * * *" in text and "restart_cooldown" in text


def test_a_pipeline_run_imports_neither_git_nor_cron_libraries():
    # `fastflow run` start-up (bench/run_overhead.py): pygit2 and croniter cost ~70 ms and a
    # run of a pipeline from the working tree, without a schedule, needs neither.
    probe = ("import sys, fastflow.cli.run; "
             "print(sorted(m for m in ('pygit2', 'croniter') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_run_env_must_be_key_value():
    result = fastflow("run", "minimal", "--env", "BAD", "--local", "--repo", str(ROOT))
    assert result.returncode == 2
    assert "Invalid value for --env: 'BAD' is not KEY=VALUE" in result.stderr


def test_run_without_engine_says_how_to_start_one():
    result = fastflow("run", "minimal", "--repo", str(ROOT),
                      env={"DOCKER_HOST": "unix:///nonexistent/docker.sock"})
    assert result.returncode == 1
    assert result.stderr.startswith("Error: no Docker engine answers (")
    assert result.stderr.rstrip().endswith(
        "start one with `sudo systemctl start docker` (or `sudo dockerd &`), "
        "or run on the host with `--local`"
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    "main_py, metadata, status, code",
    [
        ("print('hi')\n", None, "succeeded", 0),
        ("import sys; sys.exit(4)\n", None, "failed", 10),
        ("import time; time.sleep(30)\n", '{"timeout": 1}', "timed_out", 124),
    ],
)
def test_run_exit_code_reflects_the_status(make_repo, tmp_path, main_py, metadata, status, code):
    files = {"pipelines/p/main.py": main_py}
    if metadata:
        files["pipelines/p/pipeline.json"] = metadata
    repo = make_repo(files)
    record_path = tmp_path / "record.json"
    result = fastflow("run", "p", "--local", "--repo", str(repo), "--record-json", str(record_path))
    assert result.returncode == code, result.stderr
    record = json.loads(record_path.read_text())
    assert record["schema"] == 1
    assert record["status"] == status
    assert f"run {record['run_id']}: {status}" in result.stderr


@pytest.mark.slow
def test_run_streams_stdout_and_stderr_apart_with_timestamps(make_repo, tmp_path):
    hostile = "clear\x1b[2J bell\x07 nul\x00 title\x1b]0;pwned\x07 end"
    repo = make_repo({"pipelines/p/main.py":
                      "import sys\nprint('to out')\nprint('to err', file=sys.stderr)\n"
                      f"print({hostile!r})\nprint({hostile!r}, file=sys.stderr)\n"})
    log_file = tmp_path / "run.log"
    result = fastflow("run", "p", "--local", "-t", "--repo", str(repo), "--log-file", str(log_file))
    assert result.returncode == 0, result.stderr
    assert "to out" in result.stdout and "to err" not in result.stdout
    assert "to err" in result.stderr
    (out_line,) = [line for line in result.stdout.splitlines() if "to out" in line]
    assert time.strptime(out_line.split(" ")[0][:8], "%H:%M:%S")
    log = log_file.read_text()
    assert "stdout | to out" in log and "stderr | to err" in log
    # The live output shows control characters; the log keeps them.
    shown = r"clear\x1b[2J bell\x07 nul\x00 title\x1b]0;pwned\x07 end"
    assert shown in result.stdout and shown in result.stderr
    assert "\x1b" not in result.stdout + result.stderr and "\x00" not in result.stdout
    assert f"stdout | {hostile}\n" in log and f"stderr | {hostile}\n" in log


@pytest.mark.slow
def test_ctrl_c_cancels_the_run_and_its_process_tree(make_repo, tmp_path):
    pid_file = tmp_path / "grandchild.pid"
    repo = make_repo({
        "pipelines/sleeper/main.py": (
            "import subprocess, sys, time\n"
            f"child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
            f"open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
            "print('ready', flush=True)\n"
            "time.sleep(120)\n"
        ),
        "pipelines/sleeper/pipeline.json": '{"retry_attempts": 3}',
    })
    record_path = tmp_path / "record.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "fastflow", "run", "sleeper", "--local", "--repo", str(repo),
         "--record-json", str(record_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert proc.stdout.readline().strip() == "ready"
    grandchild = int(pid_file.read_text())
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    record = json.loads(record_path.read_text())
    assert record["status"] == "cancelled"
    assert len(record["attempts"]) == 1  # a cancel is never retried
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and alive(grandchild):
        time.sleep(0.1)
    assert not alive(grandchild), "the pipeline's child process survived the cancel"


# --- serve's log -------------------------------------------------------------------------------

LOG_LINE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ (DEBUG|INFO|WARNING|ERROR) ([\w.]+): .+")


def serve_one_run(origin, tmp_path, *args: str, env: dict | None = None) -> tuple[str, list[str]]:
    """`fastflow serve *args` on a repository with one pipeline: one remote run, one push, then
    SIGTERM; returns the run id and the lines the daemon logged."""
    origin.push({"pipelines/p/main.py": "print('hi')\n"}, "p")
    state, log = tmp_path / "state", tmp_path / "serve.log"
    proc = start_serve(origin.bare, state, log, "--poll-interval", "0.2", *args, env=env)
    try:
        run_id = queue_remote_run(state, "p", {}, None, utc_now())
        wait_for(lambda: run_id in git("log", "--format=%s", "fastflow/results", cwd=origin.bare),
                 timeout=120, what=f"the record of {run_id}")
        commit = origin.push({"pipelines/p/main.py": "print('hi again')\n"}, "again")
        wait_for(lambda: commit in (state / STATE_DEPLOYMENT).read_text(), what="the second sync")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    return run_id, log.read_text().splitlines()


@pytest.mark.slow
def test_serve_logs_its_start_syncs_and_runs_one_line_each(origin, tmp_path):
    run_id, lines = serve_one_run(origin, tmp_path, "--local")
    assert all(LOG_LINE.fullmatch(line) for line in lines), "\n".join(lines)
    assert not [line for line in lines if " DEBUG " in line]
    text = "\n".join(lines)
    assert (f"INFO fastflow.cli.serve: following main of {origin.bare} (state dir "
            f"{tmp_path / 'state'}, executor local)") in text
    assert re.search(r"INFO fastflow.daemon.sync: synced [0-9a-f]{10}: ", text)
    assert re.search(rf"INFO fastflow.daemon.runs: run {run_id}: queued \(p, manual\)\n"
                     rf"(.*\n)*.*INFO fastflow.daemon.runs: run {run_id}: started\n"
                     rf"(.*\n)*.*INFO fastflow.daemon.runs: run {run_id}: succeeded in "
                     r"\d+\.\ds\n", text)
    assert re.search(r"INFO fastflow.daemon.sync: synced [0-9a-f]{10}: \{.*\}\n(.*\n)*.*"
                     r"INFO fastflow.daemon.sync: synced [0-9a-f]{10}: \{.*\}", text)  # the push
    assert "INFO fastflow.cli.serve: stopping (running runs get the grace period)" in text


@pytest.mark.slow
def test_serve_quiet_logs_only_warnings_and_errors(origin, tmp_path):
    _, lines = serve_one_run(origin, tmp_path, "--local", "-q")
    assert not [line for line in lines if " INFO " in line or " DEBUG " in line], lines


@pytest.mark.slow
@pytest.mark.docker
def test_serve_verbose_adds_fastflows_debug_lines_not_the_libraries(origin, tmp_path,
                                                                  runner_image, shared_cache):
    _, lines = serve_one_run(origin, tmp_path, "-v",
                             env={"FASTFLOW_CACHE_DIR": str(shared_cache)})
    assert [line for line in lines if " DEBUG fastflow." in line]
    loggers = {LOG_LINE.fullmatch(line)[2] for line in lines}  # urllib3, docker.*: absent
    assert all(name.startswith("fastflow.") for name in loggers), "\n".join(lines)
