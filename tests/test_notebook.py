"""The notebook runner (fastflow/executors/notebook.py): run directly with Python, and through
real runs (on the host, and in a container from a discovered pipeline.json)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import utc_now

from fastflow.deploy.workspace import open_workspace
from fastflow.executors.base import NOTEBOOK_RUNNER
from fastflow.executors.local import LocalExecutor, host_base_env
from fastflow.model import Pipeline, PipelineType, RunStatus
from fastflow.run.runner import RunRequest, run_pipeline


def code(source: str, tags: list[str] | None = None, cell_id: str | None = None) -> dict:
    cell = {"cell_type": "code", "metadata": {"tags": tags} if tags else {},
            "source": source.splitlines(True), "outputs": [], "execution_count": None}
    if cell_id:
        cell["id"] = cell_id
    return cell


def markdown(text: str) -> dict:
    return {"cell_type": "markdown", "metadata": {}, "source": text}


def write_notebook(folder: Path, cells: list[dict]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "main.ipynb"
    path.write_text(json.dumps({"cells": cells, "metadata": {}, "nbformat": 4,
                                "nbformat_minor": 5}), encoding="utf-8")
    return path


def run_notebook(path: Path, cells_config: dict | str | None = None):
    env = {k: v for k, v in os.environ.items() if k != "FASTFLOW_NOTEBOOK_CELLS"}
    if cells_config is not None:
        env["FASTFLOW_NOTEBOOK_CELLS"] = (
            cells_config if isinstance(cells_config, str) else json.dumps(cells_config))
    return subprocess.run([sys.executable, str(NOTEBOOK_RUNNER), path.name], cwd=path.parent,
                          env=env, capture_output=True, text=True, timeout=60)


# Fails on its first run, succeeds on the second (state lives in the shared namespace).
FLAKY = "tries = globals().get('tries', 0) + 1\nif tries < 2:\n    raise ConnectionError('flaky')\nprint('ok after', tries)"


def test_cells_run_in_order_in_one_namespace(tmp_path):
    path = write_notebook(tmp_path, [
        markdown("# title"),
        code("x = 2\nprint('x is', x)"),
        code("x * 21"),
        code("None"),
        code(""),
    ])
    done = run_notebook(path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "[fastflow] cell 1", "x is 2", "[fastflow] cell 2", "42", "[fastflow] cell 3"]


def test_failing_cell_exits_1_naming_the_cell(tmp_path):
    path = write_notebook(tmp_path, [code("print('a')"), code("1 / 0", tags=["math"]), code("print('never')")])
    done = run_notebook(path)
    assert done.returncode == 1
    assert "never" not in done.stdout
    assert 'File "<cell 1>", line 1' in done.stderr
    assert "    1 / 0" in done.stderr
    assert "notebook.py" not in done.stderr  # the runner's own frames are hidden
    assert done.stderr.splitlines()[-1] == (
        "[fastflow] cell 1 (tags: math) failed after 1 attempt(s): ZeroDivisionError: division by zero")


@pytest.mark.parametrize("key", ["1", "fetch", "cell-abc"])
def test_cell_retries_by_index_tag_or_id(tmp_path, key):
    path = write_notebook(tmp_path, [code("print('start')"), code(FLAKY, tags=["fetch"], cell_id="cell-abc")])
    done = run_notebook(path, {key: {"retry_attempts": 2, "retry_delay": 0}})
    assert done.returncode == 0, done.stderr
    assert "ok after 2" in done.stdout
    assert "[fastflow] cell 1 (tags: fetch) failed (attempt 1 of 3); retrying in 0s" in done.stderr


def test_code_keys_count_code_cells_only_empty_ones_included(tmp_path):
    # Fast-Flow's list form, resolved to "code:<i>": markdown cells are not counted, an empty
    # code cell is (it is code cell 0 here, never run), so FLAKY is code cell 2 at position 4.
    path = write_notebook(tmp_path, [markdown("# a"), code(""), code("print('start')"),
                                     markdown("b"), code(FLAKY)])
    done = run_notebook(path, {"code:2": {"retry_attempts": 1, "retry_delay": 0}})
    assert done.returncode == 0, done.stderr
    assert "ok after 2" in done.stdout
    assert "[fastflow] cell 4 failed (attempt 1 of 2); retrying in 0s" in done.stderr
    assert run_notebook(path, {"code:1": {"retry_attempts": 1, "retry_delay": 0}}).returncode == 1


# One policy per kind of key, each with its own number of retries, for a cell at position 1 that
# is code cell 0 with id "c" and tag "t": the winner shows in the number of attempts.
ALL_KEYS = {"1": 4, "code:0": 3, "c": 2, "t": 1}


@pytest.mark.parametrize("dropped, attempts", [
    ((), 5), (("1",), 4), (("1", "code:0"), 3), (("1", "code:0", "c"), 2),
    (("1", "code:0", "c", "t"), 1),
])
def test_key_precedence_position_then_code_index_then_id_then_tag(tmp_path, dropped, attempts):
    path = write_notebook(tmp_path, [markdown("x"), code("raise ValueError('no')", tags=["t"],
                                                        cell_id="c")])
    config = {key: {"retry_attempts": n, "retry_delay": 0}
              for key, n in ALL_KEYS.items() if key not in dropped}
    done = run_notebook(path, config)
    assert done.returncode == 1
    assert done.stderr.splitlines()[-1] == (
        f"[fastflow] cell 1 (tags: t) failed after {attempts} attempt(s): ValueError: no")


def fastflow_meta(cell: dict, override: object) -> dict:
    cell["metadata"]["fastflow"] = override
    return cell


def test_metadata_override_replaces_only_the_fields_it_sets(tmp_path):
    policy = {"code:0": {"retry_attempts": 3, "retry_delay": 0}}
    # retries from the cell (1), delay from pipeline.json (0)
    path = write_notebook(tmp_path, [fastflow_meta(code("raise ValueError('no')"), {"retries": 1})])
    done = run_notebook(path, policy)
    assert "[fastflow] cell 0 failed (attempt 1 of 2); retrying in 0s" in done.stderr
    assert done.stderr.splitlines()[-1] == (
        "[fastflow] cell 0 failed after 2 attempt(s): ValueError: no")
    # delay from the cell, retries from pipeline.json
    path = write_notebook(tmp_path, [fastflow_meta(code(FLAKY), {"delay_seconds": 0.05})])
    done = run_notebook(path, policy)
    assert done.returncode == 0, done.stderr
    assert "[fastflow] cell 0 failed (attempt 1 of 4); retrying in 0.05s" in done.stderr
    # a zero in the cell beats pipeline.json's retries
    path = write_notebook(tmp_path, [fastflow_meta(code(FLAKY), {"retries": 0})])
    done = run_notebook(path, policy)
    assert done.returncode == 1
    assert done.stderr.splitlines()[-1] == (
        "[fastflow] cell 0 failed after 1 attempt(s): ConnectionError: flaky")


def test_metadata_override_without_a_pipeline_policy_uses_fast_flows_defaults(tmp_path):
    path = write_notebook(tmp_path, [fastflow_meta(code(FLAKY), {"retries": 1, "note": "x"})])
    done = run_notebook(path)
    assert done.returncode == 0, done.stderr
    assert "ok after 2" in done.stdout
    assert "[fastflow] cell 0 failed (attempt 1 of 2); retrying in 1s" in done.stderr
    assert done.stderr.splitlines()[0] == (
        '[fastflow] warning: main.ipynb: cells[0] (code cell 0).metadata.fastflow.note: unknown '
        'key, ignored; only "retries" and "delay_seconds" are read')


def test_bad_metadata_override_exits_1_before_any_cell_runs(tmp_path):
    path = write_notebook(tmp_path, [
        code("print('first cell ran')"),
        markdown("m"),
        fastflow_meta(code("print(2)"), {"retries": -1, "delay_seconds": "5"}),
        fastflow_meta(code("print(3)"), {"retries": 2.5}),
        fastflow_meta(code("print(4)"), [2]),
        fastflow_meta(code("print(5)"), {"retries": True, "delay_seconds": 1e400}),
    ])
    done = run_notebook(path, {"code:1": {"retry_attempts": 1, "retry_delay": 0}})
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        "[fastflow] main.ipynb: cells[2] (code cell 1).metadata.fastflow.retries: -1 is not a "
        "whole number >= 0; use a number such as 2 (without quotes)",
        '[fastflow] main.ipynb: cells[2] (code cell 1).metadata.fastflow.delay_seconds: "5" is '
        "not a number of seconds >= 0; use a number such as 1 (without quotes)",
        "[fastflow] main.ipynb: cells[3] (code cell 2).metadata.fastflow.retries: 2.5 is not a "
        "whole number >= 0; use a number such as 2 (without quotes)",
        '[fastflow] main.ipynb: cells[4] (code cell 3).metadata.fastflow: [2] is not an object; '
        'write {"retries": 2, "delay_seconds": 1}',
        "[fastflow] main.ipynb: cells[5] (code cell 4).metadata.fastflow.retries: true is not a "
        "whole number >= 0; use a number such as 2 (without quotes)",
        "[fastflow] main.ipynb: cells[5] (code cell 4).metadata.fastflow.delay_seconds: Infinity "
        "is above the maximum of 3155760000 seconds (100 years); use a smaller number",
        "[fastflow] main.ipynb: no cell was run; fix the cell metadata (in Jupyter: the cell's "
        "metadata editor) and run again",
    ]


def test_cell_retries_exhausted(tmp_path):
    path = write_notebook(tmp_path, [code("raise ValueError('always')", tags=["t"])])
    done = run_notebook(path, {"t": {"retry_attempts": 2, "retry_delay": 0}})
    assert done.returncode == 1
    assert done.stderr.count("ValueError: always") == 4  # 3 tracebacks + the summary line
    assert done.stderr.splitlines()[-1] == (
        "[fastflow] cell 0 (tags: t) failed after 3 attempt(s): ValueError: always")


def test_system_exit_code_is_kept(tmp_path):
    path = write_notebook(tmp_path, [code("import sys\nsys.exit(7)")])
    assert run_notebook(path).returncode == 7


def test_ipython_lines_are_skipped_with_a_warning(tmp_path):
    path = write_notebook(tmp_path, [code("%matplotlib inline\n!pip list\nprint('after magics')")])
    done = run_notebook(path)
    assert done.returncode == 0
    assert "after magics" in done.stdout
    assert "[fastflow] cell 0: skipping IPython-only line: %matplotlib inline" in done.stderr


def test_imports_resolve_next_to_the_notebook_not_the_runner(tmp_path):
    (tmp_path / "helper.py").write_text("VALUE = 'mine'\n")
    path = write_notebook(tmp_path, [code("import helper; print(helper.VALUE)"),
                                     code("import importlib.util as u; print(u.find_spec('capture'))")])
    done = run_notebook(path)
    assert done.stdout.splitlines()[1] == "mine"
    assert done.stdout.splitlines()[3] == "None"  # fastflow/capture.py is not importable


def test_bad_cells_config_and_bad_notebook(tmp_path):
    path = write_notebook(tmp_path, [code("print(1)")])
    done = run_notebook(path, "{not json")
    assert done.returncode == 2
    assert done.stderr.startswith("[fastflow] FASTFLOW_NOTEBOOK_CELLS is not valid JSON: ")
    path.write_text("[]")
    done = run_notebook(path)
    assert done.returncode == 1
    assert done.stderr.strip() == "[fastflow] main.ipynb is not a Jupyter notebook (no 'cells' list)"


@pytest.mark.slow
def test_notebook_run_with_cell_retries_through_the_runner(tmp_path):
    folder = tmp_path / "nb"
    write_notebook(folder, [markdown("x"), code("print('run', __import__('os').environ['FASTFLOW_ATTEMPT'])"),
                            code(FLAKY, tags=["fetch"])])
    pipeline = Pipeline(name="nb", path=folder, entry="main.ipynb", type=PipelineType.NOTEBOOK,
                        metadata_file=None, requirements=None,
                        cells={"fetch": {"retry_attempts": 1, "retry_delay": 0.1}})
    executor = LocalExecutor(host_base_env(os.environ), clock=utc_now)
    outcome = run_pipeline(RunRequest(pipeline), executor, clock=utc_now)
    assert outcome.record.status is RunStatus.SUCCEEDED, outcome.log_text
    assert " stdout | run 1\n" in outcome.log_text
    assert " stdout | ok after 2\n" in outcome.log_text
    assert " stderr | ConnectionError: flaky\n" in outcome.log_text
    assert len(outcome.record.attempts) == 1

    failing = Pipeline(**{**vars(pipeline), "cells": {}})
    outcome = run_pipeline(RunRequest(failing), executor, clock=utc_now)
    assert outcome.record.status is RunStatus.FAILED
    assert outcome.record.exit_code == 1
    assert (" stderr | [fastflow] cell 2 (tags: fetch) failed after 1 attempt(s): "
            "ConnectionError: flaky\n") in outcome.log_text


# Creates a marker in the container's /tmp and fails on its first try; the retry finds it.
MARKED = ("import pathlib\nmarker = pathlib.Path('/tmp/tried')\nif not marker.exists():\n"
          "    marker.write_text('1')\n    raise RuntimeError('first try')\nprint('second try ok')")


@pytest.mark.docker
@pytest.mark.slow
def test_fast_flows_cells_list_retries_the_second_code_cell_in_a_container(
        tmp_path, docker_executor_factory):
    root = tmp_path / "repo"
    write_notebook(root / "pipelines" / "nb", [
        markdown("# two code cells"), code("print('first code cell')"), markdown("then"),
        code(MARKED)])
    (root / "pipelines" / "nb" / "pipeline.json").write_text(json.dumps({
        "type": "notebook",
        "cells": [{"retries": 0}, {"retries": 2, "delay_seconds": 0}],
        "retry_attempts": 0}), encoding="utf-8")
    workspace = open_workspace(root)
    pipeline = workspace.pipeline("nb")
    assert pipeline.cells["code:1"] == {"retry_attempts": 2, "retry_delay": 0.0}
    outcome = run_pipeline(RunRequest(pipeline), docker_executor_factory(), clock=utc_now)
    assert outcome.record.status is RunStatus.SUCCEEDED, outcome.log_text
    assert len(outcome.record.attempts) == 1  # the cell was retried, not the run
    assert " stdout | first code cell\n" in outcome.log_text
    assert " stderr | RuntimeError: first try\n" in outcome.log_text
    assert " stderr | [fastflow] cell 3 failed (attempt 1 of 3); retrying in 0s\n" in outcome.log_text
    assert " stdout | second try ok\n" in outcome.log_text
