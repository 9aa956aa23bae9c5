"""Flow files (config.flows) and where they are found (deploy.flows): every message exact; one bad
flow never hides another flow or a pipeline; a Featherflow project is read as it is."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from helpers import git, write_files

from fastflow import repo as gitrepo
from fastflow.config import (
    default_repo_config,
    parse_pipeline_metadata,
    parse_repo_config,
)
from fastflow.config.flows import args_list, substitute_params
from fastflow.deploy.discovery import discover
from fastflow.deploy.flows import discover_flows, find_flow, flows_at_commit
from fastflow.deploy.workspace import validate_workspace
from fastflow.errors import Invalid, PipelineNotFound
from fastflow.model import RetryStrategy, TaskWhen

FIXTURE = Path(__file__).parent / "fixtures" / "featherflow-project"
SCRIPT = "print('task')\n"


def scan(root: Path, config_text: str | None = None):
    config = default_repo_config() if config_text is None else parse_repo_config(config_text)[0]
    return discover_flows(root, config, discover(root, config))


def flow_file(tasks: list, **top) -> str:
    return json.dumps({"tasks": tasks, **top})


def messages(found, name: str) -> list[str]:
    return [str(p) for p in found.invalid[name].problems]


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    write_files(root, {".fastflow/flows/tasks/a.py": SCRIPT, ".fastflow/flows/tasks/b.py": SCRIPT})
    return root


def test_a_featherflow_project_is_found_as_it_is(tmp_path: Path):
    root = shutil.copytree(FIXTURE, tmp_path / "ff")
    found = scan(root)
    assert found.names == ["weather"] and found.problems == ()
    flow = found.flows["weather"]
    assert flow.file == "flows/weather.json" and flow.tasks_dir == root.resolve() / "tasks"
    assert flow.description.startswith("Collect") and flow.version == "1.0"
    assert [t.id for t in flow.tasks] == ["get_a", "get_b", "get_c", "merge", "synopsis"]
    merge = flow.task("merge")
    assert merge.depends_on == ("get_a", "get_b", "get_c") and merge.env == {"OUT": "all.csv"}
    assert merge.when is TaskWhen.SUCCESS and merge.script == "merge.py"
    # Featherflow's args rule: a list as is; one letter -k value, longer --key=value
    assert flow.task("get_b").args == ("--station", "B")
    assert flow.task("get_c").args == ("--station=C", "-n", "3")
    assert validate_workspace(root) == [p for p in validate_workspace(root)
                                        if p.field == "pipelines_dir"]


def test_args_follow_featherflows_rule():
    assert args_list({"v": True, "ratio": 1.5, "name": "x y"}) == ("-v", "True", "--ratio=1.5",
                                                                   "--name=x y")
    assert args_list(["a", 1, False]) == ("a", "1", "False")
    with pytest.raises(Invalid, match=r'^key "--x" is not an option name; write it without dashes'):
        args_list({"--x": 1})
    with pytest.raises(Invalid, match=r'^"k": null is not a string, number or boolean; quote it$'):
        args_list({"k": None})


def test_fastflow_layout_and_every_run_key_parsed_as_pipeline_json_does(repo: Path):
    write_files(repo, {".fastflow/flows/etl.json": flow_file(
        [{"id": "a", "script": "a.py", "mem_hard_limit": "1.5g", "timeout": 30,
          "retry_attempts": 2, "retry_strategy": {"type": "custom_schedule", "delays": [1, 5]}},
         {"id": "b", "script": "b.py", "depends_on": ["a"], "when": "always"}],
        max_parallel=2, cpu_hard_limit=0.5, timeout=60, python_version="3.13",
        retry_attempts=1, params={"date": None, "region": "eu"})})
    flow = scan(repo).flows["etl"]
    a, b = flow.task("a"), flow.task("b")
    meta = parse_pipeline_metadata('{"mem_hard_limit": "1.5g", "cpu_hard_limit": 0.5}', name="p",
                                   file="p.json", config=default_repo_config())
    assert a.limits == meta.values["limits"] and b.limits.mem_hard_limit is None
    assert a.timeout == 30.0 and b.timeout == 60.0 and b.python_version == "3.13"
    assert a.retry.attempts == 2 and a.retry.strategy is RetryStrategy.CUSTOM_SCHEDULE
    assert b.retry.attempts == 1 and b.retry.delay == 60.0 and b.when is TaskWhen.ALWAYS
    assert flow.max_parallel == 2 and flow.params == {"date": None, "region": "eu"}
    assert a.overrides == {"mem_hard_limit", "timeout", "retry_attempts", "retry_strategy"}


def test_validation_errors_name_the_file_and_the_task(repo: Path):
    write_files(repo, {".fastflow/flows/bad.json": flow_file([
        {"id": "a", "script": "a.py", "depend_on": ["b"]},
        {"id": "b", "script": "missing.py", "depends_on": ["a", "c", "dd"]},
        {"id": "a", "script": "b.py"},
        {"id": "d", "script": "a.py", "pipeline": "p"},
        {"id": "e"},
        {"id": "f", "script": "../a.py", "when": "sucess", "mem_hard_limit": "5k"},
    ], max_paralel=3, colour="blue")})
    assert messages(scan(repo), "bad") == [
        '.fastflow/flows/bad.json: max_paralel: unknown key; did you mean "max_parallel"? Fix its '
        "name or remove it",
        ".fastflow/flows/bad.json: colour: unknown key, ignored",
        '.fastflow/flows/bad.json: tasks[0] (id "a").depend_on: unknown key of a task; fix its '
        'name or remove it; did you mean "depends_on"?',
        '.fastflow/flows/bad.json: tasks[2] (id "a").id: "a" is already the id of tasks[0]; task '
        "ids must be unique, rename one of them",
        '.fastflow/flows/bad.json: tasks[3] (id "d").pipeline: cannot be combined with script; a '
        "task runs either a script of the tasks folder or a pipeline, choose one",
        '.fastflow/flows/bad.json: tasks[4] (id "e"): has neither script nor pipeline; add '
        '"script": "fetch.py" (a file of the tasks folder) or "pipeline": "NAME"',
        '.fastflow/flows/bad.json: tasks[5] (id "f").script: "../a.py" leads outside the tasks '
        'folder; give a path relative to it such as "fetch.py"',
        '.fastflow/flows/bad.json: tasks[5] (id "f").when: "sucess" is not one of "success" or '
        '"failure" or "always"; did you mean "success"?',
        '.fastflow/flows/bad.json: tasks[5] (id "f").mem_hard_limit: "5k" is below Docker\'s '
        'minimum of 6m; use at least "6m"',
        '.fastflow/flows/bad.json: tasks[1] (id "b").depends_on: "c" is not a task of this flow; '
        'the tasks are "a", "d", "e", "f"',
        '.fastflow/flows/bad.json: tasks[1] (id "b").depends_on: "dd" is not a task of this '
        'flow; did you mean "d"?',
    ]


def test_a_cycle_is_named_with_its_path(repo: Path):
    write_files(repo, {".fastflow/flows/loop.json": flow_file([
        {"id": "a", "script": "a.py", "depends_on": ["c"]},
        {"id": "b", "script": "a.py", "depends_on": ["a"]},
        {"id": "c", "script": "a.py", "depends_on": ["b"]},
        {"id": "d", "script": "a.py", "depends_on": ["d"]},
    ])})
    assert messages(scan(repo), "loop") == [
        '.fastflow/flows/loop.json: tasks[3] (id "d").depends_on: "d" is this task itself; a task '
        "cannot depend on itself, remove it",
        '.fastflow/flows/loop.json: tasks[0] (id "a").depends_on: the dependencies form a cycle '
        "a -> b -> c -> a; a task would wait for itself, remove one of these depends_on entries",
    ]


def test_missing_files_and_pipelines_are_errors_of_the_flow_only(repo: Path):
    write_files(repo, {
        "pipelines/report/main.py": SCRIPT,
        "pipelines/broken/pipeline.json": "{}",
        ".fastflow/flows/files.json": flow_file([
            {"id": "a", "script": "aa.py"},
            {"id": "b", "pipeline": "reprot"},
            {"id": "c", "pipeline": "broken"},
            {"id": "d", "script": "b.py", "requirements": "req.txt"},
        ]),
        ".fastflow/flows/good.json": flow_file([{"id": "x", "pipeline": "report"}]),
        ".fastflow/flows/report.json": flow_file([{"id": "x", "script": "a.py"}]),
        ".fastflow/flows/not json.json": "{",
        ".fastflow/flows/syntax.json": '{"tasks": [}',
    })
    found = scan(repo)
    assert sorted(found.flows) == ["good"]
    assert messages(found, "files") == [
        '.fastflow/flows/files.json: tasks[0] (id "a").script: "aa.py" does not exist in '
        '.fastflow/flows/tasks/; did you mean "a.py"?',
        '.fastflow/flows/files.json: tasks[1] (id "b").pipeline: no pipeline named "reprot"; '
        'did you mean "report"?',
        '.fastflow/flows/files.json: tasks[2] (id "c").pipeline: pipeline "broken" is invalid; '
        "fix it first (fastflow validate)",
        '.fastflow/flows/files.json: tasks[3] (id "d").requirements: "req.txt" does not exist in '
        ".fastflow/flows/tasks/; add it or fix the name",
    ]
    assert messages(found, "report") == [
        '.fastflow/flows/report.json: "report" is also the name of a pipeline; flows and '
        "pipelines share one namespace (fastflow run NAME, schedules, triggers): rename the "
        "flow file"]
    assert messages(found, "not json") == [
        ".fastflow/flows/not json.json: \"not json\" is not a valid flow name; rename the file "
        "using 1-63 letters, digits, '_', '.' or '-', starting with a letter or digit (the flow "
        "is named after its file)"]
    assert messages(found, "syntax") == [
        ".fastflow/flows/syntax.json: invalid JSON at line 1, column 12: Expecting value"]
    assert "report" in discover(repo, default_repo_config()).pipelines  # untouched
    with pytest.raises(PipelineNotFound) as info:
        find_flow(found, "syntax")
    assert str(info.value) == ('flow "syntax" is invalid; fix it first:\n  .fastflow/flows/'
                               "syntax.json: invalid JSON at line 1, column 12: Expecting value")
    with pytest.raises(PipelineNotFound, match=r'^no flow named "god" in \.fastflow/flows/; did '
                       r'you mean "good"\?$'):
        find_flow(found, "god")
    problems = [str(p) for p in validate_workspace(repo)]
    assert '.fastflow/flows/files.json: tasks[0] (id "a").script: "aa.py" does not exist in ' \
           '.fastflow/flows/tasks/; did you mean "a.py"?' in problems


def test_two_flows_of_one_name_are_both_invalid(repo: Path):
    write_files(repo, {".fastflow/flows/etl.json": flow_file([{"id": "a", "script": "a.py"}]),
                       "flows/etl.json": flow_file([{"id": "a", "script": "a.py"}]),
                       "tasks/a.py": SCRIPT})
    found = scan(repo)
    assert messages(found, "etl") == [
        'flows/etl.json: is a second flow called "etl" (also .fastflow/flows/etl.json); flow '
        "names must be unique, rename one of the files"]


def test_task_env_params_and_the_flow_name(repo: Path):
    write_files(repo, {".fastflow/flows/p.json": flow_file(
        [{"id": "a", "script": "a.py", "args": ["${params.day}", "${params.bad-name}"],
          "env": {"TMP_DIR": "/x", "D": "${params.day}"}},
         {"id": "b", "script": "a.py", "env": {"FASTFLOW_X": "1"}}],
        name="other", params={"day": {"a": 1}})})
    assert messages(scan(repo), "p") == [
        '.fastflow/flows/p.json: name: "other" is not the file\'s name: the flow is called "p" '
        "after its file (as Featherflow finds it); rename one of them to match",
        '.fastflow/flows/p.json: params: "day": {"a": 1} is not a string, number or boolean; '
        'give a value such as "2026-12-01"',
        '.fastflow/flows/p.json: tasks[0] (id "a").env: key "TMP_DIR" is set by Fast-Flow to the '
        "flow run's shared workspace (as Featherflow sets it); remove it",
        '.fastflow/flows/p.json: tasks[1] (id "b").env: key "FASTFLOW_X" is reserved: FASTFLOW_* '
        "variables are set by Fast-Flow",
        '.fastflow/flows/p.json: tasks[0] (id "a").args: "${params.bad-name}" is not a parameter '
        "reference; parameter names use letters, digits and '_', e.g. ${params.date}",
    ]
    assert substitute_params("${params.day}-x-${params.day}", {"day": "d"}) == "d-x-d"


def test_configured_flows_and_tasks_folders_replace_the_defaults(repo: Path):
    write_files(repo, {"wf/x.json": flow_file([{"id": "a", "script": "s.py"}]),
                       "scripts/s.py": SCRIPT,
                       ".fastflow/flows/y.json": flow_file([{"id": "a", "script": "a.py"}])})
    found = scan(repo, "flows_dir: wf\ntasks_dir: scripts\n")
    assert found.names == ["x"] and found.flows["x"].tasks_dir == repo.resolve() / "scripts"
    found = scan(repo, "flows_dir: wf\n")
    assert messages(found, "x") == [
        "wf/x.json: its scripts are read from wf/tasks/, which is not a folder of the "
        "repository; create it or set tasks_dir in .fastflow/config.yaml"]
    assert parse_repo_config("flows_dir: wf\n")[0].tasks_dir is None
    with pytest.raises(Exception, match='flows_dir: "../x" is outside the repository; use a path '
                       'relative to the repository root such as "flows"'):
        parse_repo_config("flows_dir: ../x\n")


def test_the_flows_of_a_commit_are_read_from_its_snapshot(tmp_path: Path):
    work = shutil.copytree(FIXTURE, tmp_path / "work")
    git("init", "-q", "-b", "main", cwd=work)
    git("add", ".", cwd=work)
    git("commit", "-q", "-m", "one", cwd=work)
    first = git("rev-parse", "HEAD", cwd=work)
    (work / "flows" / "weather.json").write_text("{")
    git("commit", "-q", "-am", "two", cwd=work)
    repository = gitrepo.open_repo(work)
    snapshots = tmp_path / "snapshots"
    assert flows_at_commit(repository, first, snapshots).names == ["weather"]
    later = flows_at_commit(repository, git("rev-parse", "HEAD", cwd=work), snapshots)
    assert later.flows == {} and list(later.invalid) == ["weather"]
    assert later.flows == {} and str(snapshots) in str(later.root)


@pytest.mark.parametrize("text, expected", [
    ("[1]", ["must be a JSON object {...}, not [1]"]),
    ("{}", ['tasks: is missing; a flow needs a list of tasks such as [{"id": "fetch", '
            '"script": "fetch.py"}]']),
    ('{"tasks": []}', ['tasks: [] is not a non-empty list; write [{"id": "fetch", '
                       '"script": "fetch.py"}]']),
    ('{"tasks": ["a", {"script": "a.py"}]}', [
        'tasks[0]: "a" is not an object; write {"id": "fetch", "script": "fetch.py"}',
        'tasks[1].id: is missing; every task needs a unique id such as "fetch"']),
    ('{"tasks": [{"id": "a", "pipeline": "p", "requirements": "r.txt"}]}', [
        'tasks[0] (id "a").requirements: is not used by a pipeline task (its pipeline '
        "folder's requirements.txt is); remove it"]),
    ('{"max_parallel": 0, "params": [], "tasks": [{"id": "a", "script": "a.py", '
     '"args": {"": 1}, "depends_on": "b"}]}', [
        "max_parallel: 0 is not a whole number >= 1",
        'params: [] is not an object; write {"date": null, "region": "eu"}',
        'tasks[0] (id "a").args: key "" is not an option name; write it without dashes or '
        'spaces, e.g. {"station": "A"} for --station=A',
        'tasks[0] (id "a").depends_on: "b" is not a list; write ["a", "b"]']),
    ('{"requirements": "req.txt", "tasks": [{"id": "a", "script": "a.py"}]}', [
        'requirements: "req.txt" does not exist in .fastflow/flows/tasks/; add it or remove '
        "the key"]),
])
def test_every_structural_error_names_its_place(repo: Path, text: str, expected: list[str]):
    write_files(repo, {".fastflow/flows/s.json": text})
    assert messages(scan(repo), "s") == [f".fastflow/flows/s.json: {m}" for m in expected]
