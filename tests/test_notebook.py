"""The notebook runner (fastflow/notebook.py): run directly with Python, and through a real run."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import utc_now

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
