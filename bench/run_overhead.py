"""Overhead of a Docker run through Fast-Flow against a bare `docker run --rm` (not a timed test).

For a pipeline with a cached (pre-heated) requirement, measures in one run, alternating:
- `docker run --rm` of the same image with the same `uv run` command, user and mounts, the cache
  mounted directly (the baseline);
- `fastflow run NAME --repo DIR` through the installed entry point (the `fastflow` script next
  to this interpreter, not a shell wrapper such as a pyenv shim), start to exit
  (target <= 1.3x the baseline, stretch 1.15x);
- `DockerExecutor.execute` in this process, the library path (target <= 1.05x).

Then where the CLI's time goes: the bare interpreter, the imports of a `fastflow run`
(`python -X importtime`, the largest listed), and each Docker API call of one attempt with its
duration (the library path, requests timed in this process).

    python bench/run_overhead.py [--rounds 7] [--image fastflow-runner:py3.11]
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import sysconfig
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
CLI_TARGET, CLI_STRETCH, LIBRARY_TARGET = 1.3, 1.15, 1.05


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


def entry_point() -> Path:
    """The installed `fastflow` script of this interpreter (what `pip install` put there)."""
    script = Path(sysconfig.get_path("scripts")) / "fastflow"
    if not script.is_file():
        sys.exit(f"{script} is missing: install the package first (pip install -e .)")
    return script


def timed(cmd: list[str], env: dict) -> float:
    begin = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    took = time.perf_counter() - begin
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])}... exit {proc.returncode}:\n{proc.stdout}{proc.stderr}")
    return took


def import_times(cmd: list[str], env: dict) -> tuple[float, list[tuple[float, str]]]:
    """(total seconds of imports, [(seconds, module)] of the largest) of one run of `cmd`
    under `python -X importtime`: top-level imports, and fastflow's own one level down."""
    proc = subprocess.run([sys.executable, "-X", "importtime", *cmd], env=env,
                          capture_output=True, text=True)
    total, rows = 0.0, []
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative, name = line[len("import time:"):].split("|")
        depth = (len(name) - len(name.lstrip())) // 2
        seconds = int(cumulative) / 1e6
        if depth == 0:
            total += seconds
        if depth == 0 or (depth == 1 and name.strip().startswith("fastflow.")):
            rows.append((seconds, "  " * depth + name.strip()))
    return total, sorted(rows, reverse=True)[:14]


class ApiCalls:
    """Every HTTP request the Docker SDK sends in this process: (start offset, duration,
    method and path), timed around `requests.Session.send` (a bench-only wrapper)."""

    def __init__(self) -> None:
        import requests

        self.calls: list[tuple[float, float, str]] = []
        self.origin = time.perf_counter()
        original = requests.Session.send
        calls = self.calls

        def send(session, request, **kwargs):
            began = time.perf_counter()
            try:
                return original(session, request, **kwargs)
            finally:
                path = request.path_url.split("?")[0]
                path = "/" + path.split("/", 2)[-1] if path.startswith("/v1.") else path
                calls.append((began - self.origin, time.perf_counter() - began,
                              f"{request.method} {path}"))

        requests.Session.send = send

    def reset(self) -> None:
        self.calls.clear()
        self.origin = time.perf_counter()


def verdict(ratio: float, target: float) -> str:
    return "met" if ratio <= target else "NOT met"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--image", default=runner_image(DEFAULT_IMAGE, DEFAULT_PYTHON))
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
        calls = ApiCalls()
        executor = DockerExecutor(clock=lambda: datetime.now(timezone.utc), cache_dir=cache,
                                  image=args.image)
        cli = [str(entry_point()), "run", "bench", "--repo", str(repo)]
        bare = bare_cmd(args.image, pipeline, cache)

        def library() -> float:
            begin = time.perf_counter()
            result = executor.execute(spec_for(pipeline), lambda line: None, threading.Event())
            assert result.status.value == "succeeded", result
            return time.perf_counter() - begin

        timed(bare, env), timed(cli, env), library()  # warm-up: page cache, engine, client
        rounds = []
        for _ in range(args.rounds):
            calls.reset()
            rounds.append((timed(bare, env), timed(cli, env), library()))
        api = list(calls.calls)
        plain, ours, lib = (statistics.median(r[i] for r in rounds) for i in range(3))
        cli_ratio = statistics.median(r[1] / r[0] for r in rounds)
        lib_ratio = statistics.median(r[2] / r[0] for r in rounds)
        interpreter = statistics.median(timed([sys.executable, "-c", "pass"], env) for _ in range(5))
        imports, largest = import_times(cli, env)

        print(f"rounds: {args.rounds}, alternating; load average "
              f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} (2 cores shared with other work)")
        print(f"docker run --rm (baseline)  median {plain:.3f}s  min {min(r[0] for r in rounds):.3f}s")
        print(f"fastflow run (entry point)  median {ours:.3f}s  min {min(r[1] for r in rounds):.3f}s")
        print(f"DockerExecutor.execute      median {lib:.3f}s  min {min(r[2] for r in rounds):.3f}s")
        print(f"ratio CLI/baseline      {cli_ratio:.2f}x (median of round ratios; target <= "
              f"{CLI_TARGET}, stretch {CLI_STRETCH}): {verdict(cli_ratio, CLI_TARGET)}")
        print(f"ratio library/baseline  {lib_ratio:.2f}x (target <= {LIBRARY_TARGET}): "
              f"{verdict(lib_ratio, LIBRARY_TARGET)}")
        print("\nwhere the CLI's time goes (one run each):")
        print(f"  interpreter start (python -c pass)   {interpreter * 1000:6.0f} ms")
        print(f"  imports of `fastflow run` (total)    {imports * 1000:6.0f} ms; largest:")
        for seconds, name in largest:
            print(f"    {seconds * 1000:6.1f} ms  {name}")
        print("  Docker API calls of one attempt (library path, last round):")
        for offset, took, what in api:
            print(f"    at {offset * 1000:6.0f} ms  {took * 1000:6.1f} ms  {what}")
        print(f"  rest of the CLI (config, discovery, record, output): about "
              f"{(ours - lib - interpreter - imports) * 1000:.0f} ms")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
