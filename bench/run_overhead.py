"""Overhead of a Docker run through Fast-Flow against a bare `docker run --rm` (not a timed test).

For a pipeline with a cached (pre-heated) requirement, measures the wall time of
`fastflow run NAME --repo DIR` from start to exit, and of `docker run --rm` of the same image
with the same `uv run` command, the same mounts and the cache mounted directly, alternating
the two, and prints the medians and their ratio (target: <= 1.2).

When the `fastflow run` command is not available (an older CLI), the Fast-Flow side is measured
by calling `DockerExecutor.execute` in this process instead (the figure then excludes the
CLI's own start-up); the output says which mode was used.

    python bench/run_overhead.py [--rounds 9] [--image fastflow-runner:py3.11]
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

from fastflow.defaults import DEFAULT_IMAGE, DEFAULT_PYTHON
from fastflow.executors.base import AttemptSpec, uv_command
from fastflow.executors.docker import DockerExecutor, preheat_requirements, runner_image
from fastflow.model import PipelineType

CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
MAIN = "import six\nprint('six', six.__version__)\n"


def make_repo(root: Path) -> Path:
    pipeline = root / "pipelines" / "bench"
    pipeline.mkdir(parents=True)
    (pipeline / "main.py").write_text(MAIN)
    (pipeline / "requirements.txt").write_text("six==1.16.0\n")
    (pipeline / "pipeline.json").write_text('{"python_version": "3.11"}\n')
    for path in (root, root / "pipelines", pipeline):
        path.chmod(0o755)
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    subprocess.run(["git", "-C", str(root), "add", "."], check=True)
    subprocess.run(["git", "-C", str(root), "-c", "user.name=b", "-c", "user.email=b@b",
                    "commit", "-qm", "bench"], check=True)
    return pipeline


def spec_for(pipeline: Path) -> AttemptSpec:
    return AttemptSpec(run_id="bench", pipeline="bench", attempt=1, workdir=pipeline,
                       entry="main.py", type=PipelineType.SCRIPT, python_version="3.11",
                       requirements="requirements.txt", env={"PYTHONUNBUFFERED": "1"})


def bare_cmd(image: str, pipeline: Path, cache: Path) -> list[str]:
    # The same network (the default bridge), user, mounts and command as the Fast-Flow run.
    return ["docker", "run", "--rm", "-u", "10001:10001",
            "-v", f"{pipeline}:/work/bench:ro", "-w", "/work/bench",
            "-v", f"{cache}:/cache", "-e", "UV_CACHE_DIR=/cache/uv", "-e", "UV_OFFLINE=1",
            image] + uv_command(spec_for(pipeline), "/opt/fastflow/notebook.py")


def timed(cmd: list[str], env: dict) -> float:
    begin = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    took = time.perf_counter() - begin
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])}... exit {proc.returncode}:\n{proc.stdout}{proc.stderr}")
    return took


def fastflow_cli_works(repo: Path, env: dict) -> bool:
    probe = subprocess.run([sys.executable, "-m", "fastflow", "run", "--help"], env=env,
                           capture_output=True, text=True)
    return probe.returncode == 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--image", default=runner_image(DEFAULT_IMAGE, DEFAULT_PYTHON))
    parser.add_argument("--library", action="store_true",
                        help="Measure DockerExecutor.execute in-process instead of the CLI.")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="fastflow-bench-"))
    try:
        repo, cache = root / "repo", root / "cache"
        repo.mkdir()
        pipeline = make_repo(repo)
        heat = preheat_requirements(args.image, cache, pipeline, "requirements.txt", "3.11",
                                    CA_BUNDLE if CA_BUNDLE.exists() else None)
        if not heat.ok:
            sys.exit(f"pre-heat failed:\n{heat.output}")
        env = {**os.environ, "FASTFLOW_CACHE_DIR": str(cache)}
        use_cli = not args.library and fastflow_cli_works(repo, env)
        executor = DockerExecutor(clock=lambda: datetime.now(timezone.utc), cache_dir=cache,
                                  image=args.image)
        ours_cmd = [sys.executable, "-m", "fastflow", "run", "bench", "--repo", str(repo)]

        def ours() -> float:
            if use_cli:
                return timed(ours_cmd, env)
            begin = time.perf_counter()
            result = executor.execute(spec_for(pipeline), lambda line: None, threading.Event())
            assert result.status.value == "succeeded", result
            return time.perf_counter() - begin

        bare = bare_cmd(args.image, pipeline, cache)
        ours(), timed(bare, env)  # warm-up: page cache, engine
        pairs = [(ours(), timed(bare, env)) for _ in range(args.rounds)]
        fast = statistics.median(p[0] for p in pairs)
        plain = statistics.median(p[1] for p in pairs)
        print(f"mode: {'fastflow run (CLI)' if use_cli else 'DockerExecutor.execute (library)'}")
        print(f"rounds: {args.rounds}")
        print(f"fastflow median: {fast:.3f}s  (min {min(p[0] for p in pairs):.3f}s)")
        print(f"docker run --rm median: {plain:.3f}s  (min {min(p[1] for p in pairs):.3f}s)")
        print(f"ratio of medians: {fast / plain:.2f}  (median of pair ratios "
              f"{statistics.median(a / b for a, b in pairs):.2f}; target <= 1.2)")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
