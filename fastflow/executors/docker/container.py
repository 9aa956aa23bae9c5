"""The container of one attempt: how it is built and hardened, and what it leaves on the host.

The container runs `uv run ...` (see `base.uv_command`) as uid 10001 with: the pipeline folder
bind-mounted read-only at /work/<pipeline> (the working dir), the shared uv cache through a
per-attempt copy-on-write overlay at /cache (see `cache`), a per-attempt host folder at
/run/fastflow for `FASTFLOW_ROUTE_FILE`, for a flow's task its flow run's workspace read-write at
/workspace (`FASTFLOW_WORKSPACE`, `TMP_DIR`, `FASTFLOW_OUTPUT`: the only writable bind mount
besides the route folder), for a webhook run a read-only bind mount of a copy of its
request's body at /run/fastflow/webhook/payload (`FASTFLOW_WEBHOOK_PAYLOAD`; the copy, readable by
the runner user, lives in the scratch folder), a read-only root filesystem with a tmpfs /tmp (also
HOME), `cap_drop=ALL`, `no-new-privileges`, a pids limit, an init process (signals, zombies),
a private IPC namespace, no Docker socket, `network_mode=none` when the pipeline says so,
memory = memory+swap = `mem_hard_limit` and a CPU quota of `cpu_hard_limit` cores.

Everything a later process needs to supervise the attempt is on the container (labels, the
engine's bounded copy of the output, the scratch folder as a mount: see `reattach`), and a
container is never auto-removed: its owner, or whoever re-attaches to it, `discard`s it with
its cache volume and scratch folder once the attempt is collected.
"""
from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import docker
import docker.errors
import docker.types

from fastflow.defaults import DEFAULT_TMP_SIZE_BYTES
from fastflow.errors import ExecutorError
from fastflow.executors.base import (
    CONTAINER_WEBHOOK_PAYLOAD,
    CONTAINER_WORKSPACE,
    NOTEBOOK_RUNNER,
    WEBHOOK_PAYLOAD_ENV,
    AttemptSpec,
    uv_command,
    workspace_env,
)
from fastflow.executors.docker.cache import (
    CONTAINER_CA_BUNDLE,
    CONTAINER_CACHE,
    CacheLayout,
    create_overlay_volume,
    give_to_runner,
    overlay_options,
    remove_tree,
    remove_volume,
)
from fastflow.executors.docker.engine import DockerError
from fastflow.executors.docker.image import RUNNER_UID
from fastflow.executors.docker.reattach import (
    CONTAINER_ROUTE_DIR,
    labels_of,
    log_config,
)
from fastflow.model import NetworkMode, PipelineType

logger = logging.getLogger(__name__)

CONTAINER_NOTEBOOK_RUNNER = "/opt/fastflow/notebook.py"


@dataclass(frozen=True)
class RunContainer:
    """A created attempt container: its id and name, and its scratch folder on the host
    (the overlay's upper and work dirs, the route folder)."""

    id: str
    name: str
    scratch: Path

    @property
    def route_file(self) -> Path:
        return route_file(self.scratch)


def route_file(scratch: Path) -> Path:
    """The host side of an attempt's `FASTFLOW_ROUTE_FILE`, inside its scratch folder."""
    return scratch / "route" / "route"


def container_name(spec: AttemptSpec) -> str:
    """The name of an attempt's container (its cache volume is this name + `-cache`)."""
    return f"fastflow-{spec.run_id}-{spec.attempt}"[:200]


def volume_name(container: str) -> str:
    """The attempt's copy-on-write cache volume, named after its container."""
    return f"{container}-cache"


class RunContainers:
    """Creates and discards the hardened containers of attempts (see the module docstring)."""

    def __init__(self, client: Callable[[], docker.DockerClient], *,
                 image: Callable[[AttemptSpec], str], cache: CacheLayout, scratch_dir: Path,
                 ca_bundle: Path | None, pids_limit: int,
                 tmp_size: int = DEFAULT_TMP_SIZE_BYTES) -> None:
        self._client = client
        self.image_of = image  # the runner image of an attempt (of its Python)
        self.cache, self.scratch_dir = cache, scratch_dir
        self.ca_bundle, self.pids_limit, self.tmp_size = ca_bundle, pids_limit, tmp_size

    def create(self, spec: AttemptSpec, *, offline: bool, image: str | None = None) -> RunContainer:
        """Create (not start) the attempt's container of `image` (default: the runner image of
        its Python) with its scratch folder and cache volume; `offline`: the cache holds
        everything the attempt needs (uv may not download).
        Raises `ExecutorError` (having removed what it made) when it cannot."""
        if not spec.workdir.is_dir():
            raise ExecutorError(f"pipeline folder {spec.workdir} does not exist; "
                                f"cannot run {spec.pipeline!r}")
        check_readable(spec.workdir, spec.entry)
        self.scratch_dir.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=f"{spec.pipeline}-{spec.attempt}-",
                                        dir=self.scratch_dir))
        name = container_name(spec)
        try:
            return RunContainer(self._create(spec, image or self.image_of(spec), scratch,
                                             offline, name), name, scratch)
        except BaseException:
            self.discard(None, name, scratch)
            raise

    def discard(self, container_id: str | None, name: str, scratch: Path | None) -> None:
        """Remove an attempt's container, its cache volume and its scratch folder (what exists)."""
        client = self._client()
        if container_id is not None:
            remove_container(client, container_id)
        remove_volume(client, volume_name(name))
        if scratch is not None and not remove_tree(scratch):
            logger.warning("could not remove the scratch folder %s (files of uid %d); "
                           "remove it as root", scratch, RUNNER_UID)

    def _create(self, spec: AttemptSpec, image: str, scratch: Path, offline: bool,
                name: str) -> str:
        self.cache.prepare()
        for sub in ("upper", "work", "route"):
            (scratch / sub).mkdir()
        give_to_runner(scratch / "upper")
        give_to_runner(scratch / "route")
        mounts = self.mounts(spec, scratch)
        client = self._client()
        try:
            mounts.append(create_overlay_volume(client, volume_name(name), self.cache.root,
                                                scratch / "upper", scratch / "work", labels_of(spec)))
            container = client.api.create_container(
                image, **self.container_config(spec, name, offline),
                host_config=client.api.create_host_config(**self.host_config(spec, mounts)),
            )
        except docker.errors.ImageNotFound as exc:  # removed since the executor looked
            raise missing_image(image) from exc
        except DockerError as exc:
            raise ExecutorError(f"cannot create the container of {spec.pipeline!r} "
                                f"attempt {spec.attempt}: {exc}") from exc
        return container["Id"]

    def mounts(self, spec: AttemptSpec, scratch: Path) -> list:
        """The bind mounts of an attempt's container (the cache overlay is added by the
        caller): the pipeline folder read-only, the route folder, and what the attempt asks
        for (workspace, webhook payload, notebook runner, CA bundle)."""
        mounts = [
            docker.types.Mount(workdir_of(spec), str(spec.workdir.resolve()), type="bind", read_only=True),
            docker.types.Mount(CONTAINER_ROUTE_DIR, str(scratch / "route"), type="bind"),
        ]
        if spec.webhook_payload is not None:
            mounts.append(webhook_payload_mount(spec.webhook_payload, scratch))
        if spec.workspace is not None:  # a flow's task: its flow run's workspace, read-write
            mounts.append(docker.types.Mount(CONTAINER_WORKSPACE, str(spec.workspace.resolve()),
                                             type="bind"))
        if spec.type is PipelineType.NOTEBOOK:
            if not NOTEBOOK_RUNNER.is_file():
                raise ExecutorError(f"the notebook runner {NOTEBOOK_RUNNER} is missing; "
                                    "reinstall fastflow")
            mounts.append(docker.types.Mount(CONTAINER_NOTEBOOK_RUNNER, str(NOTEBOOK_RUNNER),
                                             type="bind", read_only=True))
        if self.ca_bundle and spec.network is not NetworkMode.NONE:
            mounts.append(docker.types.Mount(CONTAINER_CA_BUNDLE, str(self.ca_bundle.resolve()),
                                             type="bind", read_only=True))
        return mounts

    def container_config(self, spec: AttemptSpec, name: str, offline: bool) -> dict:
        """The engine's create-container keywords of an attempt but its image and host config."""
        return dict(command=uv_command(spec, CONTAINER_NOTEBOOK_RUNNER), name=name,
                    working_dir=workdir_of(spec), user=f"{RUNNER_UID}:{RUNNER_UID}",
                    environment=self.env(spec, offline), labels=labels_of(spec),
                    stdin_open=False, tty=False)

    def docker_run_args(self, spec: AttemptSpec, *, image: str, scratch: Path, name: str,
                        offline: bool = False) -> list[str]:
        """The `docker run` command line of the container `create` would make for `spec`:
        rendered from the same keywords (`container_config`, `mounts`, `host_config`), with
        the cache overlay as the named volume `overlay_volume_args(...)` creates (its scratch
        folders in `scratch`). What `fastflow flow run --dry-run` prints; nothing is created."""
        mounts = self.mounts(spec, scratch)
        mounts.append(docker.types.Mount(target=CONTAINER_CACHE, source=volume_name(name),
                                         type="volume"))
        config = self.container_config(spec, name, offline)
        args = ["docker", "run", "--rm", "--name", config.pop("name"),
                "--workdir", config.pop("working_dir"), "--user", config.pop("user")]
        for key, value in sorted(config.pop("environment").items()):
            args += ["--env", f"{key}={value}"]
        for key, value in sorted(config.pop("labels").items()):
            args += ["--label", f"{key}={value}"]
        command = config.pop("command")
        if config != {"stdin_open": False, "tty": False}:
            raise AssertionError(f"container keywords without a docker run flag: {sorted(config)}")
        for key, value in self.host_config(spec, mounts).items():
            args += _host_flag(key, value)
        return [*args, image, *command]

    def overlay_volume_args(self, spec: AttemptSpec, scratch: Path, name: str) -> list[str]:
        """The `docker volume create` command line of an attempt's cache overlay
        (`create_overlay_volume`'s own options), its upper and work folders in `scratch`."""
        args = ["docker", "volume", "create", "--driver", "local"]
        for key, value in overlay_options(self.cache.root, scratch / "upper",
                                          scratch / "work").items():
            args += ["--opt", f"{key}={value}"]
        for key, value in sorted(labels_of(spec).items()):
            args += ["--label", f"{key}={value}"]
        return [*args, volume_name(name)]

    def host_config(self, spec: AttemptSpec, mounts: list) -> dict:
        """The hardening and limits of an attempt's container (engine host config keywords)."""
        limits = spec.limits
        config = dict(
            mounts=mounts, read_only=True, init=True, cap_drop=["ALL"],
            security_opt=["no-new-privileges"], pids_limit=self.pids_limit,
            # Sized: an unsized tmpfs may fill the host's memory when no memory limit is set.
            tmpfs={"/tmp": f"rw,nosuid,nodev,exec,mode=1777,size={self.tmp_size}"},
            network_mode="none" if spec.network is NetworkMode.NONE else "bridge",
            log_config=log_config(spec.log_cap_bytes), ipc_mode="private",
        )
        if limits.mem_hard_limit:
            # memory+swap = memory: no swapping around the limit, the kernel OOM-kills instead.
            config.update(mem_limit=limits.mem_hard_limit, memswap_limit=limits.mem_hard_limit)
        if limits.cpu_hard_limit:
            config["nano_cpus"] = int(limits.cpu_hard_limit * 1e9)
        return config

    def env(self, spec: AttemptSpec, offline: bool) -> dict[str, str]:
        """The attempt's environment inside the container (`attempt_env`)."""
        return attempt_env(spec, offline=offline, ca_bundle=self.ca_bundle)


def attempt_env(spec: AttemptSpec, *, offline: bool, ca_bundle: Path | None) -> dict[str, str]:
    """The environment of an attempt inside a container (a Docker one, or a Swarm task's): the
    pipeline's, then ours; `offline`: uv may not download (network none is offline too)."""
    env = dict(spec.env)
    env.update(
        FASTFLOW_ROUTE_FILE=f"{CONTAINER_ROUTE_DIR}/route", PYTHONUNBUFFERED="1",
        HOME="/tmp", UV_CACHE_DIR="/cache/uv", UV_PYTHON_INSTALL_DIR="/cache/python",
        UV_NO_PROGRESS="1",
    )
    if spec.webhook_payload is not None:
        env[WEBHOOK_PAYLOAD_ENV] = CONTAINER_WEBHOOK_PAYLOAD
    env.update(workspace_env(spec, CONTAINER_WORKSPACE))
    if offline or spec.network is NetworkMode.NONE:
        env["UV_OFFLINE"] = "1"
    if ca_bundle and spec.network is not NetworkMode.NONE:
        env["SSL_CERT_FILE"] = CONTAINER_CA_BUNDLE
        env.setdefault("REQUESTS_CA_BUNDLE", CONTAINER_CA_BUNDLE)
    return env


def workdir_of(spec: AttemptSpec) -> str:
    """Where an attempt's pipeline folder is mounted and run from in its container."""
    return f"/work/{spec.pipeline}"


def _host_flag(key: str, value) -> list[str]:
    """The `docker run` flags of one host-config keyword of `RunContainers.host_config`; a
    keyword without a flag here is an error, so the dry run never omits a setting."""
    if key == "mounts":
        flags = []
        for mount in value:
            spec = f"type={mount['Type']},source={mount['Source']},target={mount['Target']}"
            flags += ["--mount", spec + (",readonly" if mount.get("ReadOnly") else "")]
        return flags
    if key == "log_config":
        flags = ["--log-driver", value["Type"]]
        for option, setting in sorted(value["Config"].items()):
            flags += ["--log-opt", f"{option}={setting}"]
        return flags
    if key == "tmpfs":
        return [flag for target, options in value.items() for flag in ("--tmpfs", f"{target}:{options}")]
    if key in ("cap_drop", "security_opt"):
        name = "--cap-drop" if key == "cap_drop" else "--security-opt"
        return [flag for item in value for flag in (name, item)]
    if key in ("read_only", "init"):
        return ["--read-only" if key == "read_only" else "--init"] if value else []
    if key == "nano_cpus":
        return ["--cpus", f"{value / 1e9:g}"]
    simple = {"pids_limit": "--pids-limit", "network_mode": "--network", "ipc_mode": "--ipc",
              "mem_limit": "--memory", "memswap_limit": "--memory-swap"}
    if key in simple:
        return [simple[key], str(value)]
    raise AssertionError(f"host config keyword {key!r} has no docker run flag")


def webhook_payload_mount(payload: Path, scratch: Path) -> docker.types.Mount:
    """The read-only bind mount of a webhook run's body at `CONTAINER_WEBHOOK_PAYLOAD`: a copy
    in the attempt's scratch folder (the stored body is the daemon's, mode 0600), readable by the
    runner user, mounted over an empty file made in the route folder (so the engine creates
    nothing there as root). `ExecutorError` when the stored body cannot be copied."""
    copy = scratch / "webhook" / "payload"
    copy.parent.mkdir()
    try:
        shutil.copyfile(payload, copy)
    except OSError as exc:
        raise ExecutorError(f"cannot copy the webhook payload {payload} for the container: "
                            f"{exc.strerror or exc}") from None
    copy.chmod(0o444)
    point = scratch / "route" / "webhook"
    point.mkdir()
    (point / "payload").touch(0o444)
    return docker.types.Mount(CONTAINER_WEBHOOK_PAYLOAD, str(copy), type="bind", read_only=True)


def missing_image(image: str) -> ExecutorError:
    """The error of a run or pre-heat whose runner image is not there, with the fix."""
    return ExecutorError(f"the runner image {image!r} does not exist; build it with "
                         "`fastflow image build --bootstrap` (or `--base IMAGE`)")


def remove_container(client: docker.DockerClient, container_id: str) -> None:
    """Remove a container and its anonymous volumes; gone already is fine, other trouble is
    logged (a leftover container is `docker rm`-able, not a reason to fail the run)."""
    try:
        client.api.remove_container(container_id, v=True, force=True)
    except docker.errors.NotFound:
        pass
    except docker.errors.APIError as exc:
        if exc.status_code != 409:  # 409: someone else is already removing it
            logger.warning("could not remove container %s: %s", container_id[:12], exc)
    except DockerError as exc:
        logger.warning("could not remove container %s: %s", container_id[:12], exc)


def check_readable(workdir: Path, entry: str) -> None:
    """The container user (uid 10001) must be able to read the pipeline folder and its entry."""
    for path, bits in ((workdir, 0o005), (workdir / entry, 0o004)):
        try:
            st = path.stat()
        except FileNotFoundError:
            continue  # a missing entry is the pipeline's failure, reported by uv
        if st.st_uid != RUNNER_UID and (st.st_mode & bits) != bits:
            raise ExecutorError(
                f"{path} is not readable by the container user (uid {RUNNER_UID}, mode "
                f"{st.st_mode & 0o777:o}); make the pipeline folder world-readable with "
                f"`chmod -R o+rX {workdir}`")
