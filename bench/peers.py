"""One trivial task run as a whole process by Dagster, Prefect and Fast-Flow (not a test).

Each side runs a task that prints one line, start to exit, as a user would run it:
- Dagster: `dagster job execute -f job.py -j hello_job` (one op; a fresh DAGSTER_HOME);
- Prefect: `python flow.py` (one `@flow`, the default ephemeral mode; a fresh PREFECT_HOME);
- Fast-Flow: `fastflow run hello --repo REPO` (the installed entry point) in a Docker container
  of the runner image, i.e. each run isolated, which neither peer does.
Alternating, `--rounds` times after one warm-up each; prints the medians and the ratios
peer / Fast-Flow. Targets: Dagster >= 8x and Prefect >= 20x Fast-Flow's time.

Dagster and Prefect are never installed into this environment: `--install` makes two throw-away
virtual environments under a temporary folder (`--venvs DIR` keeps them for the next run) and
installs each with pip. Without `--install` or `--venvs` the script says how to run it.

    python bench/peers.py --install [--rounds 5] [--venvs /tmp/fastflow-peers]
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
import time
from pathlib import Path

from fastflow.defaults import DEFAULT_IMAGE, DEFAULT_PYTHON
from fastflow.executors.docker import runner_image

TARGETS = {"dagster": 8.0, "prefect": 20.0}
DAGSTER_JOB = '''from dagster import job, op


@op
def hello():
    print("hello from dagster")


@job
def hello_job():
    hello()
'''
PREFECT_FLOW = '''from prefect import flow


@flow
def hello():
    print("hello from prefect")


if __name__ == "__main__":
    hello()
'''
GIT_ENV = {**os.environ, "GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@b",
           "GIT_COMMITTER_NAME": "b", "GIT_COMMITTER_EMAIL": "b@b"}


def make_venv(venvs: Path, name: str, package: str, install: bool) -> Path:
    """venvs/<name> with `package` installed by pip (kept when already there; installed only
    with `install`)."""
    env_dir = venvs / name
    python = env_dir / "bin" / "python"
    probe = subprocess.run([str(python), "-c", f"import {name}"], capture_output=True) \
        if python.exists() else None
    if probe is None or probe.returncode != 0:
        if not install:
            sys.exit(f"{env_dir} has no {package}; add --install to install it there")
        print(f"installing {package} into {env_dir} (pip) ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(env_dir)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", package], check=True)
    return env_dir


def make_fastflow_repo(root: Path, image: str) -> Path:
    repo = root / "repo"
    (repo / "pipelines" / "hello").mkdir(parents=True)
    (repo / "pipelines" / "hello" / "main.py").write_text("print('hello from fastflow')\n")
    (repo / ".fastflow").mkdir()
    (repo / ".fastflow" / "config.yaml").write_text(f"image: {image}\n")
    for path in (repo, repo / "pipelines", repo / "pipelines" / "hello"):
        path.chmod(0o755)
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "peers"]):
        subprocess.run(["git", *args], cwd=repo, env=GIT_ENV, check=True, capture_output=True)
    return repo


def timed(cmd: list[str], cwd: Path, env: dict, expect: str) -> float:
    began = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    took = time.perf_counter() - began
    if proc.returncode != 0 or expect not in proc.stdout + proc.stderr:
        raise RuntimeError(f"{' '.join(cmd)} (exit {proc.returncode}) did not print "
                           f"{expect!r}:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return took


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--install", action="store_true",
                        help="Install Dagster and Prefect into throw-away virtual environments.")
    parser.add_argument("--venvs", type=Path, help="Where the environments are (kept).")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--image", default=runner_image(DEFAULT_IMAGE, DEFAULT_PYTHON))
    args = parser.parse_args()
    if not args.install and args.venvs is None:
        print("This bench compares with Dagster and Prefect, which it installs only when asked:\n"
              "  python bench/peers.py --install            (throw-away venvs, removed after)\n"
              "  python bench/peers.py --install --venvs DIR (kept in DIR for the next run)\n"
              "It needs pip access to the package index and a few minutes for the installs.")
        return 0
    root = Path(tempfile.mkdtemp(prefix="fastflow-bench-peers-"))
    venvs = args.venvs or root / "venvs"
    try:
        dagster = make_venv(venvs, "dagster", "dagster", args.install)
        prefect = make_venv(venvs, "prefect", "prefect", args.install)
        work = root / "work"
        work.mkdir()
        (work / "job.py").write_text(DAGSTER_JOB)
        (work / "flow.py").write_text(PREFECT_FLOW)
        repo = make_fastflow_repo(root, args.image)
        base = {k: v for k, v in os.environ.items() if not k.startswith(("DAGSTER", "PREFECT"))}
        sides = {
            "fastflow": ([str(Path(sysconfig.get_path("scripts")) / "fastflow"), "run", "hello",
                          "--repo", str(repo)], {**base, "FASTFLOW_CACHE_DIR": str(root / "cache")},
                         "hello from fastflow"),
            "dagster": ([str(dagster / "bin" / "dagster"), "job", "execute", "-f", "job.py",
                         "-j", "hello_job"], {**base, "DAGSTER_HOME": str(root / "dagster-home")},
                        "hello from dagster"),
            "prefect": ([str(prefect / "bin" / "python"), "flow.py"],
                        {**base, "PREFECT_HOME": str(root / "prefect-home"),
                         # its ephemeral server may take longer than the default 20 s to come
                         # up on a loaded machine; the wait is part of its time either way
                         "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180"},
                        "hello from prefect"),
        }
        (root / "dagster-home").mkdir()
        times: dict[str, list[float]] = {name: [] for name in sides}
        for name, (cmd, env, expect) in sides.items():  # warm-up: caches, first-run set-up
            timed(cmd, work, env, expect)
        for _ in range(args.rounds):
            for name, (cmd, env, expect) in sides.items():
                times[name].append(timed(cmd, work, env, expect))
        medians = {name: statistics.median(values) for name, values in times.items()}
        print(f"rounds {args.rounds}, alternating; load average "
              f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} (2 cores shared with other work)")
        for name, values in times.items():
            print(f"{name:9s} median {medians[name]:6.2f}s  min {min(values):6.2f}s")
        for name, target in TARGETS.items():
            ratio = medians[name] / medians["fastflow"]
            print(f"ratio {name} / fastflow {ratio:5.1f}x (target >= {target:g}x): "
                  f"{'met' if ratio >= target else 'NOT met'}")
        return 0
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
