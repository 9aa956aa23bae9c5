"""A flow task's output: the small JSON object it may write to `$FASTFLOW_OUTPUT`.

Each attempt has its own file in the flow run's workspace (`executors.base.output_name`); the
run's output is what its last attempt wrote. No file is no output (null). A file over the cap,
not JSON, or JSON that is not an object fails the run (error kind `output`), with the reason and
the fix: the task's dependents must never get an output that is not what the task meant.
"""
from __future__ import annotations

import json
from pathlib import Path

from fastflow.executors.base import output_name
from fastflow.humanize import format_bytes
from fastflow.record import ErrorInfo


def output_file(workspace: Path, run_id: str, attempt: int) -> Path:
    """The host path of attempt `attempt`'s output file (`executors.base.output_name`)."""
    return Path(workspace) / output_name(run_id, attempt)


def read_output(workspace: Path, run_id: str, attempt: int, max_bytes: int,
                task: str) -> tuple[dict | None, ErrorInfo | None]:
    """(output, None), (None, None) when the attempt wrote none, or (None, error)."""
    path = output_file(workspace, run_id, attempt)
    try:
        with open(path, "rb") as handle:
            raw = handle.read(max_bytes + 1)
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        return None, ErrorInfo("output", f"task {task!r}: its output file $FASTFLOW_OUTPUT "
                               f"cannot be read: {exc.strerror or exc}")
    if len(raw) > max_bytes:
        return None, ErrorInfo("output", (
            f"task {task!r}: its output ($FASTFLOW_OUTPUT) is larger than "
            f"{format_bytes(max_bytes)}; write a small JSON object there and put bigger data "
            "in a file of the workspace ($FASTFLOW_WORKSPACE)"))
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        return None, ErrorInfo("output", f"task {task!r}: its output ($FASTFLOW_OUTPUT) is "
                               f"not JSON ({exc}); write one JSON object, e.g. "
                               '{"rows": 12}')
    if not isinstance(data, dict):
        return None, ErrorInfo("output", f"task {task!r}: its output ($FASTFLOW_OUTPUT) is a "
                               f"JSON {type(data).__name__}, not an object; write one JSON "
                               'object, e.g. {"rows": 12}')
    return data, None
