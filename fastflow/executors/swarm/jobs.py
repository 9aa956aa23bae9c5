"""The running Swarm jobs of runs, for `fastflow ps` and `fastflow cancel` on a manager.

Like the Docker executor's containers, each job carries the run's labels, so the manager's
service list is the source of truth for what runs where: no registry of our own.
"""
from __future__ import annotations

from datetime import datetime

import docker

from fastflow.executors.docker.engine import (
    KIND_RUN,
    LABEL_ATTEMPT,
    LABEL_KIND,
    LABEL_PIPELINE,
    LABEL_RUN_ID,
    DockerError,
    RunningRun,
    cancel_run,
    connect,
    list_running,
    parse_engine_time,
)
from fastflow.executors.swarm.service import stop_job


def is_manager(client: docker.DockerClient) -> bool:
    """Whether the engine is a Swarm manager (never raises)."""
    try:
        info = client.api.info().get("Swarm") or {}
    except DockerError:
        return False
    return info.get("LocalNodeState") == "active" and bool(info.get("ControlAvailable"))


def running_jobs(client: docker.DockerClient) -> list[RunningRun]:
    """The runs whose Swarm job has a running task, with the node it runs on."""
    api, runs, nodes = client.api, [], {}
    for service in api.services(filters={"label": f"{LABEL_KIND}={KIND_RUN}"}):
        labels = service["Spec"].get("Labels") or {}
        for task in api.tasks(filters={"service": service["ID"]}):  # a job's desired state is "complete"
            status = task.get("Status") or {}
            if status.get("State") != "running":
                continue
            node_id = task.get("NodeID")
            if node_id and node_id not in nodes:
                try:
                    nodes[node_id] = api.inspect_node(node_id)["Description"]["Hostname"]
                except DockerError:
                    nodes[node_id] = node_id
            runs.append(RunningRun(
                run_id=labels.get(LABEL_RUN_ID, ""), pipeline=labels.get(LABEL_PIPELINE, ""),
                attempt=int(labels.get(LABEL_ATTEMPT, "1") or 1),
                started=parse_engine_time(status.get("Timestamp")),
                container_id=(status.get("ContainerStatus") or {}).get("ContainerID", ""),
                node=nodes.get(node_id)))
    return runs


def cancel_jobs(client: docker.DockerClient, run_id: str) -> list[str]:
    """Stop the Swarm jobs of `run_id` (`service.stop_job`); the ids of those stopped."""
    stopped = []
    for service in client.api.services(filters={
            "label": [f"{LABEL_KIND}={KIND_RUN}", f"{LABEL_RUN_ID}={run_id}"]}):
        stop_job(client.api, service["ID"])
        stopped.append(service["ID"])
    return stopped


def running_runs(client: docker.DockerClient | None = None) -> list[RunningRun]:
    """Every running run this engine knows: its own containers and, on a Swarm manager, the
    Swarm jobs on any node (with the node), oldest first."""
    client = connect(client)
    runs = list_running(client) + (running_jobs(client) if is_manager(client) else [])
    return sorted(runs, key=lambda r: (r.started is None, r.started or datetime.min, r.run_id))


def cancel_anywhere(run_id: str, grace_period: float = 10.0,
                    client: docker.DockerClient | None = None) -> list[str]:
    """Cancel `run_id` where it runs: its Swarm jobs (on a manager), else its containers on
    this engine (`engine.cancel_run`, which raises when there are none)."""
    client = connect(client)
    if is_manager(client):
        stopped = cancel_jobs(client, run_id)
        if stopped:
            return stopped
    return cancel_run(run_id, grace_period, client)
