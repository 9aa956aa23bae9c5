"""Building the execution side from configuration: the executor and its pre-heat function.

Docker when asked (the default), the host with `local=True`. The environment is passed in by
the caller (the CLI is the only module that reads `os.environ`).
"""
from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Mapping

from fastflow.executors.base import (
    Clock,
    Executor,
    PreheatFunction,
    PreheatJob,
    PreheatOutcome,
)
from fastflow.executors.docker import DockerExecutor, connect, preheat_requirements
from fastflow.executors.local import LocalExecutor, host_base_env
from fastflow.model import RepoConfig


def cache_dir(environ: Mapping[str, str]) -> Path:
    """The shared uv cache of Docker runs: $FASTFLOW_CACHE_DIR, else $XDG_CACHE_HOME/fastflow,
    else ~/.cache/fastflow."""
    if environ.get("FASTFLOW_CACHE_DIR"):
        return Path(environ["FASTFLOW_CACHE_DIR"])
    base = environ.get("XDG_CACHE_HOME") or str(Path(environ.get("HOME", "~")) / ".cache")
    return Path(base).expanduser() / "fastflow"


def choose_executor(config: RepoConfig, *, local: bool, environ: Mapping[str, str],
                    clock: Clock) -> Executor:
    """`LocalExecutor` when `local`, else a `DockerExecutor` for the configured image.

    Without a reachable engine this raises `EngineUnavailable`, which says how to start one
    and mentions `--local`: it never falls back to the host silently.
    """
    if local:
        return LocalExecutor(host_base_env(environ), clock=clock)
    return DockerExecutor(
        clock=clock,
        cache_dir=cache_dir(environ),
        image=config.image,
        ca_bundle=Path(config.ca_bundle) if config.ca_bundle else None,
        client=connect(),
    )


def preheat_function(config: RepoConfig, *, local: bool, environ: Mapping[str, str]) -> PreheatFunction:
    """The pre-heat that matches `choose_executor`: a trusted runner-image container filling
    the shared cache (Docker), or uv on the host filling the host's cache (`local`)."""
    if local:
        return _host_preheat(host_base_env(environ))
    image, cache = config.image, cache_dir(environ)
    ca_bundle = Path(config.ca_bundle) if config.ca_bundle else None

    def preheat(job: PreheatJob) -> PreheatOutcome:
        result = preheat_requirements(image, cache, job.workdir, job.requirements,
                                      job.python_version, ca_bundle)
        if result.ok:
            note = "already pre-heated" if result.skipped else f"pre-heated in {result.duration_s:.1f}s"
            return PreheatOutcome(True, note, result.key, result.duration_s)
        return PreheatOutcome(False, _uv_reason(job, result.output), result.key, result.duration_s)

    return preheat


def _host_preheat(base_env: Mapping[str, str]) -> PreheatFunction:
    def preheat(job: PreheatJob) -> PreheatOutcome:
        cmd = ["uv", "run", "--no-project"]
        if job.python_version:
            cmd += ["--python", job.python_version]
        cmd += ["--with-requirements", job.requirements, "python", "-c", "pass"]
        begin = time.monotonic()
        proc = subprocess.run(cmd, cwd=job.workdir, env=dict(base_env), capture_output=True,
                              text=True, timeout=900)
        duration = round(time.monotonic() - begin, 3)
        if proc.returncode == 0:
            return PreheatOutcome(True, f"pre-heated in {duration:.1f}s", None, duration)
        return PreheatOutcome(False, _uv_reason(job, proc.stderr), None, duration)

    return preheat


def _uv_reason(job: PreheatJob, output: str) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [i for i, line in enumerate(lines) if line.startswith("error:")]
    reason = " ".join(lines[errors[0]:][:8]) if errors else " ".join(lines[-5:])
    return (f"uv could not install the requirements of pipeline {job.pipeline!r} from "
            f"{job.requirements}: {reason or 'no output'}")
