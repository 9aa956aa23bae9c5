"""The Swarm job of one attempt: its configs (code, entry step, payload), its service spec.

An attempt is one `replicated-job` service (one completion, restart condition `none`: Swarm
never retries behind the runner's back) named after the attempt (`service_name`), labelled like
a Docker executor's container (`docker.reattach.labels_of`) plus the code's tree hash, so a
later process can supervise it from the labels alone.

What reaches the node, without any shared filesystem: Swarm configs (stored in the managers'
Raft log, sent only to the node that runs the task) for the entry step, the pipeline folder as
a gzipped tar (at most `MAX_CONFIG_BYTES`), the notebook runner, the CA bundle and a webhook
run's payload. The image must be on the node (`nodes.push_image`).

Hardening as far as Swarm 20.10 (API 1.41) allows: read-only root filesystem, tmpfs for /tmp,
the code and the route folder, `cap_drop ALL` (the entry step keeps SETUID, SETGID, SETPCAP
until it drops root, see `entry`; the init keeps KILL to forward signals to it), an init
process, a pids limit, no Docker socket, CPU and
memory limits, the engine's bounded json-file copy of the output (`log_config`), and for
`network: none` a per-attempt internal overlay network (no route out, nobody else on it).
"""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import logging
import os
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

import docker.errors
import docker.types

from fastflow.errors import ExecutorError
from fastflow.executors.base import (
    CONTAINER_WEBHOOK_PAYLOAD,
    CONTAINER_WORKSPACE,
    NOTEBOOK_RUNNER,
    AttemptSpec,
    uv_command,
)
from fastflow.executors.docker.cache import CONTAINER_CA_BUNDLE
from fastflow.executors.docker.container import (
    CONTAINER_NOTEBOOK_RUNNER,
    attempt_env,
    workdir_of,
)
from fastflow.executors.docker.engine import DockerError
from fastflow.executors.docker.reattach import (
    CONTAINER_ROUTE_DIR,
    labels_of,
    log_config,
)
from fastflow.executors.swarm import entry
from fastflow.model import NetworkMode, PipelineType

logger = logging.getLogger(__name__)

MAX_CONFIG_BYTES = 1000 * 1024 - 1  # Swarm refuses configs of 1,024,000 bytes or more
CONTAINER_ENTRY = "/opt/fastflow/entry.py"
CONTAINER_CODE = "/opt/fastflow/code.tar.gz"
NODE_CACHE_VOLUME = "fastflow-uv-cache"  # one per node, made by the engine on first use
CODE_TMPFS_BYTES = 256 * 1024 * 1024
LABEL_TREE = "org.fastflow.tree"
LABEL_NONCE = "org.fastflow.nonce"
LABEL_SERVICE = "org.fastflow.swarm"  # on configs and networks: the service they belong to
NO_OP = ["true"]  # the command `stop_job` replaces a running job's with
SAMPLE_EVERY = 1.0  # seconds between the entry step's cgroup samples


def service_name(run_id: str, attempt: int) -> str:
    """The service of an attempt (Swarm names hold at most 63 characters: a digest)."""
    return "fastflow-" + hashlib.sha256(f"{run_id}/{attempt}".encode()).hexdigest()[:24]


@dataclass(frozen=True)
class Shipment:
    """The code of an attempt as it travels: the archive and the tree hash it must unpack to."""

    archive: bytes
    tree: str


def pack(spec: AttemptSpec) -> Shipment:
    """The pipeline folder as a gzipped tar (root-relative, sorted, no owners or times) and its
    git tree hash; `ExecutorError` when it is not a folder, holds something a tar cannot carry
    faithfully, or is too big for a Swarm config."""
    folder = spec.workdir
    if not folder.is_dir():
        raise ExecutorError(f"pipeline folder {folder} does not exist; cannot run {spec.pipeline!r}")
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(folder.rglob("*")):
            rel = path.relative_to(folder).as_posix()
            if not (path.is_symlink() or path.is_file() or path.is_dir()):
                raise ExecutorError(f"{path} is neither a file nor a folder; the swarm executor "
                                    "ships only files, folders and links")
            info = tar.gettarinfo(str(path), rel)
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = 0
            if info.isfile():
                with open(path, "rb") as f:
                    tar.addfile(info, f)
            else:
                tar.addfile(info)
    archive = gzip.compress(raw.getvalue(), mtime=0)
    if len(archive) > MAX_CONFIG_BYTES:
        raise ExecutorError(
            f"pipeline folder {folder} is {len(archive) // 1024} KiB as a gzipped tar; the swarm "
            f"executor ships code in a Swarm config, which holds at most {MAX_CONFIG_BYTES // 1024} "
            "KiB: keep data files out of the pipeline folder (fetch them at run time)")
    return Shipment(archive, entry.tree_hash(str(folder)))


class SwarmJobs:
    """Creates and removes the services (with their configs and networks) of attempts."""

    def __init__(self, api, *, pids_limit: int, tmp_size: int, ca_bundle: Path | None,
                 placement_default: tuple[str, ...] = ()) -> None:
        self.api, self.pids_limit, self.tmp_size = api, pids_limit, tmp_size
        self.ca_bundle = ca_bundle
        self.placement_default = placement_default
        self._node_id: str | None = None  # this engine's Swarm node (flow tasks run there)

    def create(self, spec: AttemptSpec, image: str, shipment: Shipment | None = None) -> str:
        """Create the attempt's service (configs and network first); its id. `ExecutorError`
        (having removed what it made) when it cannot. `shipment`: the code as packed
        (default: `pack(spec)`)."""
        shipment = shipment or pack(spec)
        name = service_name(spec.run_id, spec.attempt)
        nonce = os.urandom(8).hex()
        labels = {**labels_of(spec), LABEL_TREE: shipment.tree, LABEL_NONCE: nonce}
        try:
            configs = self._configs(spec, name, shipment, labels)
            networks = self._networks(spec, name, labels)
            template = docker.types.TaskTemplate(
                self._container(spec, image, configs, shipment, nonce, labels),
                resources=self._resources(spec),
                restart_policy=docker.types.RestartPolicy("none"),
                placement=docker.types.Placement(
                    constraints=list(self.placement_default) + list(spec.placement)
                    + self._workspace_node(spec)),
                log_driver=docker.types.DriverConfig("json-file",
                                                     log_config(spec.log_cap_bytes)["Config"]),
                networks=networks,
            )
            # the SDK has no keyword for the pids limit (API 1.41 has the field)
            template.setdefault("Resources", {}).setdefault("Limits", {})["Pids"] = self.pids_limit
            created = self.api.create_service(
                template, name=name, labels=labels,
                mode=docker.types.ServiceMode("replicated-job", replicas=1, concurrency=1))
        except DockerError as exc:
            self.remove(name)
            raise ExecutorError(f"cannot create the Swarm service of {spec.pipeline!r} attempt "
                                f"{spec.attempt}: {exc}") from exc
        except BaseException:
            self.remove(name)
            raise
        return created["ID"]

    def _configs(self, spec: AttemptSpec, name: str, shipment: Shipment,
                 labels: dict) -> list[docker.types.ConfigReference]:
        files = [("entry", Path(entry.__file__).read_bytes(), CONTAINER_ENTRY),
                 ("code", shipment.archive, CONTAINER_CODE)]
        if spec.type is PipelineType.NOTEBOOK:
            files.append(("notebook", NOTEBOOK_RUNNER.read_bytes(), CONTAINER_NOTEBOOK_RUNNER))
        if self.ca_bundle and spec.network is not NetworkMode.NONE:
            files.append(("ca", self.ca_bundle.read_bytes(), CONTAINER_CA_BUNDLE))
        if spec.webhook_payload is not None:
            payload = spec.webhook_payload.read_bytes() or b"\n"
            if len(payload) > MAX_CONFIG_BYTES:
                raise ExecutorError(f"the webhook payload {spec.webhook_payload} is larger than "
                                    "a Swarm config holds (1000 KiB)")
            files.append(("payload", payload, CONTAINER_WEBHOOK_PAYLOAD))
        refs = []
        for kind, data, target in files:
            made = self.api.create_config(f"{name}-{kind}", data,
                                          labels={**labels, LABEL_SERVICE: name})
            refs.append(docker.types.ConfigReference(made["ID"], f"{name}-{kind}",
                                                     filename=target, uid="0", gid="0",
                                                     mode=0o444))
        return refs

    def _workspace_node(self, spec: AttemptSpec) -> list[str]:
        """A flow's task runs on this engine's node, where its flow run's workspace is (a
        folder of the daemon's state dir, bind-mounted): `node.id==<this node>`."""
        if spec.workspace is None:
            return []
        if self._node_id is None:
            self._node_id = self.api.info().get("Swarm", {}).get("NodeID") or None
        if self._node_id is None:
            raise ExecutorError(f"pipeline {spec.pipeline!r}: a flow's task runs on the daemon's "
                                "own node, and this engine is not a Swarm node; run `docker "
                                "swarm init` here, or flows with `executor: docker`")
        return [f"node.id=={self._node_id}"]

    def _networks(self, spec: AttemptSpec, name: str, labels: dict) -> list:
        if spec.network is not NetworkMode.NONE:
            return []  # the engine's default for tasks: the node's bridge (docker_gwbridge)
        # Swarm cannot attach a task to the `none` network: an internal overlay of its own
        # has no route out and no other member.
        made = self.api.create_network(f"{name}-none", driver="overlay", internal=True,
                                       labels={**labels, LABEL_SERVICE: name})
        return [{"Target": made["Id"]}]

    def _container(self, spec: AttemptSpec, image: str, configs: list, shipment: Shipment,
                   nonce: str, labels: dict) -> docker.types.ContainerSpec:
        workdir = workdir_of(spec)
        order = {"pipeline": spec.pipeline, "archive": CONTAINER_CODE, "workdir": workdir,
                 "tree": shipment.tree, "nonce": nonce, "timeout": spec.timeout,
                 "grace_period": spec.grace_period, "route_file": f"{CONTAINER_ROUTE_DIR}/route",
                 "sample_every": SAMPLE_EVERY,
                 "command": uv_command(spec, CONTAINER_NOTEBOOK_RUNNER)}
        mounts = [
            docker.types.Mount("/tmp", None, type="tmpfs", tmpfs_size=self.tmp_size,
                               tmpfs_mode=0o1777),
            docker.types.Mount(workdir, None, type="tmpfs", tmpfs_size=CODE_TMPFS_BYTES,
                               tmpfs_mode=0o755),
            docker.types.Mount(CONTAINER_ROUTE_DIR, None, type="tmpfs", tmpfs_size=1024 * 1024,
                               tmpfs_mode=0o1777),
            docker.types.Mount("/cache", NODE_CACHE_VOLUME, type="volume",
                               labels={"org.fastflow.kind": "cache"}),
        ]
        if spec.workspace is not None:  # a flow's task: its flow run's workspace, read-write
            mounts.append(docker.types.Mount(CONTAINER_WORKSPACE, str(spec.workspace.resolve()),
                                             type="bind"))
        return docker.types.ContainerSpec(
            image, ["python3", "-I", CONTAINER_ENTRY, json.dumps(order)], env=self.env(spec),
            workdir="/", user="0:0", labels=labels, mounts=mounts, configs=configs,
            # SETUID, SETGID, SETPCAP: for the entry step to drop root (it then drops them all);
            # KILL: for the init (uid 0) to forward the engine's SIGTERM to the entry step (uid
            # 10001 by then); the pipeline has none of them (empty bounding set)
            read_only=True, init=True, cap_drop=["ALL"],
            cap_add=["SETUID", "SETGID", "SETPCAP", "KILL"],
            # the entry step stops the pipeline itself (SIGTERM, grace, SIGKILL) on the
            # engine's SIGTERM; the engine's own SIGKILL comes a little later
            stop_grace_period=int((spec.grace_period + 5) * 1e9),
        )

    def _resources(self, spec: AttemptSpec) -> docker.types.Resources:
        limits = spec.limits
        return docker.types.Resources(
            cpu_limit=int(limits.cpu_hard_limit * 1e9) if limits.cpu_hard_limit else None,
            mem_limit=limits.mem_hard_limit or None)

    def env(self, spec: AttemptSpec) -> dict[str, str]:
        """The attempt's environment in the task, as in a Docker container (`attempt_env`),
        never offline: whether this node's cache holds the packages is not known here."""
        return attempt_env(spec, offline=False, ca_bundle=self.ca_bundle)

    def remove(self, name: str) -> None:
        """Remove an attempt's service, then its configs and network (what exists; gone is
        fine). A network still in use by the stopping task is retried a few times."""
        try:
            self.api.remove_service(name)
        except docker.errors.NotFound:
            pass
        except DockerError as exc:
            logger.warning("could not remove the Swarm service %s: %s", name, exc)
        self.remove_leftovers(name)

    def remove_leftovers(self, name: str) -> None:
        try:
            configs = self.api.configs(filters={"label": f"{LABEL_SERVICE}={name}"})
            networks = self.api.networks(filters={"label": f"{LABEL_SERVICE}={name}"})
        except DockerError as exc:
            logger.warning("cannot list what the Swarm service %s left: %s", name, exc)
            return
        for config in configs:
            _retry(lambda: self.api.remove_config(config["ID"]), f"config {config['ID']}")
        for network in networks:
            _retry(lambda: self.api.remove_network(network["Id"]), f"network {network['Id']}")


def stop_job(api, service_id: str) -> None:
    """Stop a job's running task on whatever node it runs: the service is updated to a command
    that does nothing, so Swarm shuts the task down (SIGTERM; the entry step stops the
    pipeline's group: grace, SIGKILL; the engine kills what is left after the stop grace
    period) and runs the no-op instead, which completes at once; the output stays readable.
    Removing the service instead would leave the task running (Docker 20.10, moby/moby#44312)."""
    try:
        info = api.inspect_service(service_id)
        spec = info["Spec"]
        template = spec["TaskTemplate"]
        template["ContainerSpec"]["Command"] = NO_OP
        template["ForceUpdate"] = int(template.get("ForceUpdate") or 0) + 1
        api.update_service(service_id, info["Version"]["Index"], task_template=template,
                           name=spec["Name"], labels=spec.get("Labels"), mode=spec["Mode"],
                           fetch_current_spec=False)
    except docker.errors.NotFound:
        pass
    except DockerError as exc:
        logger.warning("cannot stop the Swarm job %s: %s", service_id[:12], exc)


def _retry(remove, what: str, attempts: int = 100) -> None:
    """Remove something the engine may still hold for a stopping task (`in use`: 409/400)."""
    for n in range(attempts):
        try:
            remove()
            return
        except docker.errors.NotFound:
            return
        except DockerError as exc:
            if n == attempts - 1:
                logger.warning("could not remove the Swarm %s: %s", what, exc)
                return
            time.sleep(0.1)
