"""A process that owns one Docker attempt, for tests that kill the owner with SIGKILL.

    python tests/docker_owner.py SPEC_JSON LINES_FILE

runs `DockerExecutor.execute` for the spec and appends every output line to LINES_FILE in the
log file format (as the daemon's live log does), so a test can `kill -9` it mid-attempt and
re-attach from another process.
"""
from __future__ import annotations

import json
import sys
import threading
from datetime import datetime, timezone
from pathlib import Path

from fastflow.executors.base import AttemptSpec
from fastflow.executors.docker import DockerExecutor
from fastflow.model import Limits, PipelineType
from fastflow.run.capture import format_line


def main() -> None:
    data = json.loads(sys.argv[1])
    lines = Path(sys.argv[2])
    spec = AttemptSpec(
        run_id=data["run_id"], pipeline=data["pipeline"], attempt=data.get("attempt", 1),
        workdir=Path(data["workdir"]), entry="main.py", type=PipelineType.SCRIPT,
        python_version=None, requirements=None, env={"PYTHONUNBUFFERED": "1"},
        limits=Limits(**data.get("limits", {})), timeout=data.get("timeout", 0.0),
        grace_period=data.get("grace_period", 2.0),
    )
    executor = DockerExecutor(clock=lambda: datetime.now(timezone.utc),
                              cache_dir=Path(data["cache_dir"]), image=data["image"])
    lock = threading.Lock()

    def sink(line) -> None:
        with lock, open(lines, "a", encoding="utf-8") as f:
            f.write(format_line(line) + "\n")

    result = executor.execute(spec, sink, threading.Event())
    print(result.status.value, flush=True)


if __name__ == "__main__":
    main()
