"""The Docker engine connection, the labels Fast-Flow puts on containers, `ps` and `cancel`.

Every container Fast-Flow starts carries `org.fastflow.*` labels, so runs can be listed
(`fastflow ps`) and cancelled (`fastflow cancel RUN_ID`) from any process talking to the same
engine, without a registry of our own: the engine is the source of truth for what is running.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import datetime

import docker
import docker.errors

from fastflow.errors import EngineUnavailable, ExecutorError

logger = logging.getLogger(__name__)

LABEL_KIND = "org.fastflow.kind"  # "run" | "preheat" on containers, "runner" on the image
LABEL_RUN_ID = "org.fastflow.run_id"
LABEL_PIPELINE = "org.fastflow.pipeline"
LABEL_ATTEMPT = "org.fastflow.attempt"
LABEL_PYTHON = "org.fastflow.python"
LABEL_UV = "org.fastflow.uv"
# What a re-attaching process needs to supervise an attempt it did not start (see
# `DockerExecutor.reattach`): the attempt's timeout and grace period (seconds) and its limits (JSON).
LABEL_TIMEOUT = "org.fastflow.timeout"
LABEL_GRACE_PERIOD = "org.fastflow.grace_period"
LABEL_LIMITS = "org.fastflow.limits"
KIND_RUN = "run"
SWARM_SERVICE_LABEL = "com.docker.swarm.service.id"  # the engine's label on a task container
KIND_PREHEAT = "preheat"

ENGINE_HINT = (
    "start one with `sudo systemctl start docker` (or `sudo dockerd &`), "
    "or run on the host with `--local`"
)
DockerError = docker.errors.DockerException


@dataclass(frozen=True)
class RunningRun:
    """One run container that the engine reports as running (for `fastflow ps`)."""

    run_id: str
    pipeline: str
    attempt: int
    started: datetime | None
    container_id: str
    node: str | None = None  # the Swarm node of a Swarm job (`swarm.jobs`); None: this engine


def connect(client: docker.DockerClient | None = None,
            base_url: str | None = None) -> docker.DockerClient:
    """A Docker client that has answered a ping, or `EngineUnavailable` saying how to start one.

    Without `base_url` the client is configured from the standard environment (`DOCKER_HOST`,
    `DOCKER_TLS_VERIFY`, `DOCKER_CERT_PATH`), like the `docker` command. Pass `client` to check
    an existing one.
    """
    try:
        if client is None:
            client = (docker.DockerClient(base_url=base_url, timeout=120) if base_url
                      else docker.from_env(timeout=120))
        client.ping()
    except DockerError as exc:
        raise EngineUnavailable(f"no Docker engine answers ({_reason(exc)}); {ENGINE_HINT}") from exc
    return client


def docker_available(client: docker.DockerClient | None = None,
                     base_url: str | None = None) -> bool:
    """Whether a Docker engine answers (never raises)."""
    try:
        connect(client, base_url)
    except EngineUnavailable:
        return False
    return True


def list_running(client: docker.DockerClient | None = None) -> list[RunningRun]:
    """The runs whose containers are running now, oldest first (by the labels we set)."""
    client = connect(client)
    containers = client.containers.list(filters={"label": f"{LABEL_KIND}={KIND_RUN}"})
    # a Swarm job's task container carries the run's labels too: `swarm.jobs` lists those
    runs = [_running_run(c) for c in containers if SWARM_SERVICE_LABEL not in c.labels]
    return sorted(runs, key=lambda r: (r.started is None, r.started or datetime.min, r.run_id))


def cancel_run(run_id: str, grace_period: float = 10.0,
               client: docker.DockerClient | None = None) -> list[str]:
    """Stop the running container(s) of `run_id` (SIGTERM, `grace_period`, SIGKILL).

    The process that owns the run sees its container stopped by someone else and reports the
    attempt as `cancelled` (see `DockerExecutor`). Returns the stopped container ids; raises
    `ExecutorError` when no running container has that run id.
    """
    client = connect(client)
    containers = client.containers.list(
        filters={"label": [f"{LABEL_KIND}={KIND_RUN}", f"{LABEL_RUN_ID}={run_id}"]}
    )
    if not containers:
        raise ExecutorError(
            f"no running run has the id {run_id!r}; `fastflow ps` lists the running runs"
        )
    stopped = []
    for container in containers:
        try:
            container.stop(timeout=int(round(grace_period)))
        except docker.errors.NotFound:
            continue  # it ended on its own meanwhile
        stopped.append(container.id)
    return stopped


def _running_run(container) -> RunningRun:
    labels = container.labels
    started = container.attrs.get("State", {}).get("StartedAt")
    return RunningRun(
        run_id=labels.get(LABEL_RUN_ID, ""),
        pipeline=labels.get(LABEL_PIPELINE, ""),
        attempt=int(labels.get(LABEL_ATTEMPT, "1") or 1),
        started=parse_engine_time(started),
        container_id=container.id,
    )


def parse_engine_time(value: str | None) -> datetime | None:
    """A timestamp as the engine writes it (RFC 3339, nanoseconds, `Z`) as an aware datetime."""
    match = _ENGINE_TIME.match(value or "")
    if not match or match["date"].startswith("0001-01-01"):
        return None  # the engine's zero time: never started
    micro = ((match["frac"] or "") + "000000")[:6]
    offset = "+00:00" if match["tz"] in ("Z", "z") else match["tz"]
    return datetime.fromisoformat(f"{match['date']}.{micro}{offset}")


_ENGINE_TIME = re.compile(
    r"^(?P<date>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(?P<frac>\d+))?(?P<tz>Z|z|[+-]\d\d:\d\d)$"
)


def _reason(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:200]
