"""Choosing the executor for a command: Docker when an engine answers, the host with --local."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

from fastflow.executors.base import Clock, Executor
from fastflow.executors.docker import DockerExecutor, connect
from fastflow.executors.local import LocalExecutor, host_base_env
from fastflow.workspace import Workspace


def cache_dir(environ: Mapping[str, str]) -> Path:
    """The shared uv cache of Docker runs: $FASTFLOW_CACHE_DIR, else $XDG_CACHE_HOME/fastflow,
    else ~/.cache/fastflow."""
    if environ.get("FASTFLOW_CACHE_DIR"):
        return Path(environ["FASTFLOW_CACHE_DIR"])
    base = environ.get("XDG_CACHE_HOME") or str(Path(environ.get("HOME", "~")) / ".cache")
    return Path(base).expanduser() / "fastflow"


def choose_executor(workspace: Workspace, *, local: bool, environ: Mapping[str, str],
                    clock: Clock) -> Executor:
    """`LocalExecutor` when `local`, else a `DockerExecutor` for the configured image.

    Without a reachable engine this raises `EngineUnavailable`, which says how to start one
    and mentions `--local`: it never falls back to the host silently.
    """
    if local:
        return LocalExecutor(host_base_env(environ), clock=clock)
    config = workspace.config
    return DockerExecutor(
        clock=clock,
        cache_dir=cache_dir(environ),
        image=config.image,
        ca_bundle=Path(config.ca_bundle) if config.ca_bundle else None,
        client=connect(),
    )
