"""Building the execution side from configuration: the executor, which also pre-heats.

Docker when asked (the default), the host with `local=True`. The environment is passed in by
the caller (the CLI is the only module that reads `os.environ`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

from fastflow.defaults import DEFAULT_PYTHON, DEFAULT_TMP_SIZE_BYTES
from fastflow.executors.base import Clock, Executor
from fastflow.model import RepoConfig


def cache_dir(environ: Mapping[str, str]) -> Path:
    """The shared uv cache of Docker runs: $FASTFLOW_CACHE_DIR, else $XDG_CACHE_HOME/fastflow,
    else ~/.cache/fastflow."""
    if environ.get("FASTFLOW_CACHE_DIR"):
        return Path(environ["FASTFLOW_CACHE_DIR"])
    base = environ.get("XDG_CACHE_HOME") or str(Path(environ.get("HOME", "~")) / ".cache")
    return Path(base).expanduser() / "fastflow"


def choose_executor(config: RepoConfig, *, local: bool, environ: Mapping[str, str],
                    clock: Clock, engine: bool = True, kind: str | None = None) -> Executor:
    """`LocalExecutor` when `local`, else a `DockerExecutor` for the configured image (one
    runner image per Python when `image` holds `{python}`); its `preheat` fills the cache its
    runs use.

    Without a reachable engine this raises `EngineUnavailable`, which says how to start one
    and mentions `--local`: it never falls back to the host silently. `engine=False`: the
    Docker executor connects only when it needs the engine (a dry run never does).
    `kind` ("docker" | "swarm", default `executor` of config.yaml): "swarm" is a
    `SwarmExecutor` on the engine's Swarm (it must be a manager; docs/swarm.md).
    """
    # The backends are imported here, not at the top: every `fastflow.executors.*` import runs
    # this package first, and the Docker SDK with its HTTP stack costs ~0.15 s of CLI start-up
    # that `fastflow list` or `--local` runs must not pay.
    if local:
        from fastflow.executors.local import LocalExecutor, host_base_env
        return LocalExecutor(host_base_env(environ), clock=clock)
    if (kind or config.executor) == "swarm" and engine:
        from fastflow.executors.swarm import SwarmExecutor
        return SwarmExecutor(
            clock=clock, image=config.image, default_python=config.default_python or DEFAULT_PYTHON,
            ca_bundle=Path(config.ca_bundle) if config.ca_bundle else None,
            tmp_size=config.tmp_size_bytes or DEFAULT_TMP_SIZE_BYTES,
            placement=config.swarm.placement, schedule_timeout=config.swarm.schedule_timeout,
        )
    from fastflow.executors.docker import DockerExecutor, connect
    return DockerExecutor(
        clock=clock,
        cache_dir=cache_dir(environ),
        image=config.image,
        default_python=config.default_python or DEFAULT_PYTHON,
        ca_bundle=Path(config.ca_bundle) if config.ca_bundle else None,
        client=connect() if engine else None,
        tmp_size=config.tmp_size_bytes or DEFAULT_TMP_SIZE_BYTES,
    )
