"""Pre-heat on Swarm: a pipeline's requirements installed into the uv cache of every node.

One `global-job` service (a task on each node that qualifies) runs the Docker pre-heat's own
command (`docker.preheat.preheat_command`) in the runner image, with the node's cache volume
(`service.NODE_CACHE_VOLUME`) mounted read-write, the requirements file shipped as a Swarm
config, the network allowed and the CA bundle when configured. Nodes that join later, or miss
a pre-heat, fill their cache on first use instead (runs there download what they need).
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import docker.errors
import docker.types

from fastflow.errors import ExecutorError
from fastflow.executors.base import DEFAULT_PREHEAT_TIMEOUT, PreheatJob
from fastflow.executors.docker.cache import CONTAINER_CA_BUNDLE, read_requirements
from fastflow.executors.docker.engine import (
    KIND_PREHEAT,
    LABEL_KIND,
    LABEL_PIPELINE,
    DockerError,
)
from fastflow.executors.docker.image import RUNNER_UID
from fastflow.executors.docker.preheat import preheat_command
from fastflow.executors.swarm.logs import read_all
from fastflow.executors.swarm.service import LABEL_SERVICE, NODE_CACHE_VOLUME, SwarmJobs

_ENDED = {"complete", "failed", "shutdown", "rejected", "orphaned", "remove"}


@dataclass(frozen=True)
class NodesPreheat:
    """How a pre-heat went on the nodes: per node (host name) exit code and output."""

    results: dict[str, tuple[int | None, str]]
    duration_s: float

    @property
    def failed(self) -> dict[str, tuple[int | None, str]]:
        return {node: r for node, r in self.results.items() if r[0] != 0}


def preheat_on_nodes(jobs: SwarmJobs, image: str, job: PreheatJob, *, node_name: Callable,
                     placement: tuple[str, ...] = (), timeout: float = DEFAULT_PREHEAT_TIMEOUT,
                     poll_interval: float = 0.2,
                     monotonic: Callable[[], float] = time.monotonic) -> NodesPreheat:
    """Run the pre-heat of `job` on every node and wait for all of them (see the module)."""
    api, begin = jobs.api, monotonic()
    text = read_requirements(job.workdir, job.requirements)
    digest = hashlib.sha256(f"{job.pipeline}/{text}/{image}/{begin}".encode()).hexdigest()[:20]
    name = f"fastflow-preheat-{digest}"
    labels = {LABEL_KIND: KIND_PREHEAT, LABEL_PIPELINE: job.pipeline}
    workdir = f"/work/{job.pipeline}"
    try:
        files = [("req", (text or "\n").encode("utf-8") or b"\n", f"{workdir}/{job.requirements}")]
        env = {"UV_CACHE_DIR": "/cache/uv", "UV_PYTHON_INSTALL_DIR": "/cache/python",
               "HOME": "/tmp", "UV_NO_PROGRESS": "1"}
        if jobs.ca_bundle:
            files.append(("ca", Path(jobs.ca_bundle).read_bytes(), CONTAINER_CA_BUNDLE))
            env["SSL_CERT_FILE"] = CONTAINER_CA_BUNDLE
        refs = []
        for kind, data, target in files:
            made = api.create_config(f"{name}-{kind}", data, labels={**labels, LABEL_SERVICE: name})
            refs.append(docker.types.ConfigReference(made["ID"], f"{name}-{kind}", filename=target,
                                                     uid="0", gid="0", mode=0o444))
        container = docker.types.ContainerSpec(
            image, preheat_command(job.requirements, job.python_version), env=env,
            workdir=workdir, user=f"{RUNNER_UID}:{RUNNER_UID}", configs=refs, read_only=True,
            init=True, cap_drop=["ALL"],
            mounts=[docker.types.Mount("/tmp", None, type="tmpfs", tmpfs_mode=0o1777),
                    docker.types.Mount("/cache", NODE_CACHE_VOLUME, type="volume")])
        template = docker.types.TaskTemplate(
            container, restart_policy=docker.types.RestartPolicy("none"),
            placement=docker.types.Placement(constraints=list(placement)))
        service = api.create_service(template, name=name, labels=labels,
                                     mode=docker.types.ServiceMode("global-job"))
    except DockerError as exc:
        jobs.remove(name)
        raise ExecutorError(f"cannot create the Swarm pre-heat of {job.pipeline!r}: {exc}") from exc
    try:
        return NodesPreheat(_wait(api, service["ID"], node_name, timeout, poll_interval, monotonic),
                            round(monotonic() - begin, 3))
    finally:
        jobs.remove(name)


def _wait(api, service_id: str, node_name: Callable, timeout: float, poll: float,
          monotonic: Callable[[], float]) -> dict[str, tuple[int | None, str]]:
    """Each node's (exit code, output) once every task of the global job ended."""
    deadline = monotonic() + timeout
    while True:
        try:
            tasks = api.tasks(filters={"service": service_id})
        except docker.errors.NotFound:
            tasks = []
        if tasks and all(t.get("Status", {}).get("State") in _ENDED for t in tasks):
            break
        if monotonic() > deadline:
            return {node_name(t.get("NodeID")) or "?": (None, f"pre-heat timed out after {timeout:g}s")
                    for t in tasks} or {"?": (None, "no node ran the pre-heat")}
        time.sleep(poll)
    results = {}
    for task in tasks:
        status = task.get("Status", {})
        code = (status.get("ContainerStatus") or {}).get("ExitCode")
        output = read_all(api, task["ID"]) if status.get("State") != "rejected" else status.get("Err", "")
        results[node_name(task.get("NodeID")) or "?"] = (code, output)
    return results
