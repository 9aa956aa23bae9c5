"""`DockerExecutor`: each attempt in a fresh, hardened container from the one runner image.

The container runs `uv run ...` (see `base.uv_command`) as uid 10001 with: the pipeline folder
bind-mounted read-only at /work/<pipeline> (the working dir), the shared uv cache through a
per-attempt copy-on-write overlay at /cache (see `cache`), a per-attempt host folder at
/run/fastflow for `FASTFLOW_ROUTE_FILE`, a read-only root filesystem with a tmpfs /tmp (also
HOME), `cap_drop=ALL`, `no-new-privileges`, a pids limit, an init process (signals, zombies),
no Docker socket, `network_mode=none` when the pipeline says so, memory = memory+swap =
`mem_hard_limit` and a CPU quota of `cpu_hard_limit` cores.

Outcomes: exit 0 `succeeded`; a non-zero exit `failed`, or `oom_killed` when the engine says
the kernel OOM-killed it (State.OOMKilled; not every 137 is an OOM). Timeout and cancel stop
the container (SIGTERM, `grace_period`, SIGKILL) and report `timed_out` / `cancelled`. A
container stopped or killed by someone else (`fastflow cancel`, `docker stop`, `docker kill`)
is reported `cancelled`: the engine's event log shows a `kill` event we did not send. A
container that vanished (`docker rm -f`) is `lost`.

Output comes from an attach made before the start (log driver `none`: nothing is kept by the
engine, so a pipeline printing gigabytes cannot fill its disk) and is read to the end after the
exit, so the last line is never lost. The container and the scratch folder are removed in
every case.
"""
from __future__ import annotations

import hashlib
import logging
import math
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

import docker
import docker.errors
import docker.types

from fastflow.defaults import DEFAULT_IMAGE, DEFAULT_PIDS_LIMIT
from fastflow.errors import ExecutorError
from fastflow.executors.base import (
    NOTEBOOK_RUNNER, AttemptResult, AttemptSpec, Clock, Executor, OutputLine, OutputSink,
    read_route, uv_command,
)
from fastflow.executors.docker.cache import (
    CONTAINER_CA_BUNDLE, CacheLayout, create_overlay_volume, give_to_runner, read_requirements,
    remove_tree, remove_volume, requirements_key,
)
from fastflow.executors.docker.engine import (
    KIND_RUN, LABEL_ATTEMPT, LABEL_KIND, LABEL_PIPELINE, LABEL_PYTHON, LABEL_RUN_ID, LABEL_UV,
    DockerError, connect, parse_engine_time,
)
from fastflow.executors.docker.image import RUNNER_UID
from fastflow.executors.docker.stats import ResourceSampler, StatsReader
from fastflow.executors.docker.streams import LineSplitter
from fastflow.model import NetworkMode, PipelineType, RunStatus
from fastflow.record import Environment, ErrorInfo

logger = logging.getLogger(__name__)

RUNNER_STREAM = "runner"  # same value as fastflow.capture.RUNNER (capture is a higher layer)
CONTAINER_NOTEBOOK_RUNNER = "/opt/fastflow/notebook.py"
CONTAINER_ROUTE_DIR = "/run/fastflow"
DEFAULT_MAX_LINE_BYTES = 64 * 1024


class DockerExecutor(Executor):
    """Runs each attempt in a new container of `image` (see the module docstring)."""

    name = "docker"

    def __init__(self, *, clock: Clock, cache_dir: Path, image: str = DEFAULT_IMAGE,
                 scratch_dir: Path | None = None, ca_bundle: Path | None = None,
                 pids_limit: int = DEFAULT_PIDS_LIMIT, client: docker.DockerClient | None = None,
                 monotonic: Callable[[], float] = time.monotonic, poll_interval: float = 0.05,
                 max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> None:
        self.clock, self.monotonic = clock, monotonic
        self.image = image
        self.cache = CacheLayout(Path(cache_dir))
        self.scratch_dir = Path(scratch_dir or Path(tempfile.gettempdir()) / "fastflow-scratch")
        self.ca_bundle = Path(ca_bundle) if ca_bundle else None
        self.pids_limit = pids_limit
        self.poll_interval = poll_interval
        self.max_line_bytes = max_line_bytes
        self._client = client
        self._image_attrs: dict | None = None

    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            self._client = connect()
        return self._client

    def execute(self, spec: AttemptSpec, sink: OutputSink,
                cancel: threading.Event) -> AttemptResult:
        """Run the attempt in a container to its end and return how it ended (see `base`)."""
        started = self.clock()
        if cancel.is_set():
            return AttemptResult(RunStatus.CANCELLED, None, started, self.clock(),
                                 ErrorInfo("cancelled", "cancelled before the attempt started"))
        environment, offline = self._environment(spec)
        self.scratch_dir.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=f"{spec.pipeline}-{spec.attempt}-",
                                        dir=self.scratch_dir))
        container_id = None
        volume = f"{_container_name(spec)}-cache"
        try:
            container_id = self._create(spec, scratch, offline, volume)
            run = _Attempt(self, spec, container_id, sink, cancel)
            status, exit_code, error = run.supervise()
            return AttemptResult(
                status=status, exit_code=exit_code, started_at=started,
                finished_at=self.clock(), error=error,
                route=read_route(scratch / "route" / "route"),
                resources=run.sampler.resources(), environment=environment,
            )
        finally:
            if container_id is not None:
                self._remove(container_id)
            remove_volume(self.client, volume)
            if not remove_tree(scratch):
                logger.warning("could not remove the scratch folder %s (files of uid %d); "
                               "remove it as root", scratch, RUNNER_UID)

    # --- creating the container -------------------------------------------------------

    def _create(self, spec: AttemptSpec, scratch: Path, offline: bool, volume: str) -> str:
        if not spec.workdir.is_dir():
            raise ExecutorError(f"pipeline folder {spec.workdir} does not exist; "
                                f"cannot run {spec.pipeline!r}")
        _check_readable(spec.workdir, spec.entry)
        self.cache.prepare()
        for sub in ("upper", "work", "route"):
            (scratch / sub).mkdir()
        give_to_runner(scratch / "upper")
        give_to_runner(scratch / "route")
        workdir = f"/work/{spec.pipeline}"
        mounts = [
            docker.types.Mount(workdir, str(spec.workdir.resolve()), type="bind", read_only=True),
            docker.types.Mount(CONTAINER_ROUTE_DIR, str(scratch / "route"), type="bind"),
        ]
        if spec.type is PipelineType.NOTEBOOK:
            if not NOTEBOOK_RUNNER.is_file():
                raise ExecutorError(f"the notebook runner {NOTEBOOK_RUNNER} is missing; "
                                    "reinstall fastflow")
            mounts.append(docker.types.Mount(CONTAINER_NOTEBOOK_RUNNER, str(NOTEBOOK_RUNNER),
                                             type="bind", read_only=True))
        if self.ca_bundle and spec.network is not NetworkMode.NONE:
            mounts.append(docker.types.Mount(CONTAINER_CA_BUNDLE, str(self.ca_bundle.resolve()),
                                             type="bind", read_only=True))
        try:
            mounts.append(create_overlay_volume(self.client, volume, self.cache.root,
                                                scratch / "upper", scratch / "work", _labels(spec)))
            container = self.client.api.create_container(
                self.image, command=uv_command(spec, CONTAINER_NOTEBOOK_RUNNER),
                name=_container_name(spec), working_dir=workdir, user=f"{RUNNER_UID}:{RUNNER_UID}",
                environment=self._env(spec, offline), labels=_labels(spec),
                stdin_open=False, tty=False,
                host_config=self.client.api.create_host_config(**self._host_config(spec, mounts)),
            )
        except docker.errors.ImageNotFound as exc:
            raise ExecutorError(f"the runner image {self.image!r} does not exist; build it with "
                                "`fastflow image build --bootstrap` (or `--base IMAGE`)") from exc
        except DockerError as exc:
            raise ExecutorError(f"cannot create the container of {spec.pipeline!r} "
                                f"attempt {spec.attempt}: {exc}") from exc
        return container["Id"]

    def _host_config(self, spec: AttemptSpec, mounts: list) -> dict:
        limits = spec.limits
        config = dict(
            mounts=mounts, read_only=True, init=True, cap_drop=["ALL"],
            security_opt=["no-new-privileges"], pids_limit=self.pids_limit,
            tmpfs={"/tmp": "rw,nosuid,nodev,exec,mode=1777"},
            network_mode="none" if spec.network is NetworkMode.NONE else "bridge",
            log_config=docker.types.LogConfig(type="none"), ipc_mode="private",
        )
        if limits.mem_hard_limit:
            # memory+swap = memory: no swapping around the limit, the kernel OOM-kills instead.
            config.update(mem_limit=limits.mem_hard_limit, memswap_limit=limits.mem_hard_limit)
        if limits.cpu_hard_limit:
            config["nano_cpus"] = int(limits.cpu_hard_limit * 1e9)
        return config

    def _env(self, spec: AttemptSpec, offline: bool) -> dict[str, str]:
        env = dict(spec.env)
        env.update(
            FASTFLOW_ROUTE_FILE=f"{CONTAINER_ROUTE_DIR}/route", PYTHONUNBUFFERED="1",
            HOME="/tmp", UV_CACHE_DIR="/cache/uv", UV_PYTHON_INSTALL_DIR="/cache/python",
            UV_NO_PROGRESS="1",
        )
        if offline or spec.network is NetworkMode.NONE:
            env["UV_OFFLINE"] = "1"
        if self.ca_bundle and spec.network is not NetworkMode.NONE:
            env["SSL_CERT_FILE"] = CONTAINER_CA_BUNDLE
            env.setdefault("REQUESTS_CA_BUNDLE", CONTAINER_CA_BUNDLE)
        return env

    def _environment(self, spec: AttemptSpec) -> tuple[Environment, bool]:
        """The record's environment, and whether the attempt's packages are pre-heated."""
        attrs = self._image()
        labels = attrs.get("Config", {}).get("Labels") or {}
        text = read_requirements(spec.workdir, spec.requirements)
        python = spec.python_version or labels.get(LABEL_PYTHON)
        key = requirements_key(text, spec.python_version, attrs["Id"])
        env = Environment(
            image=self.image, image_id=attrs["Id"], python=python, uv_version=labels.get(LABEL_UV),
            requirements_hash=_sha256(text) if text is not None else None,
        )
        same_python = spec.python_version in (None, labels.get(LABEL_PYTHON))
        offline = self.cache.is_preheated(key) if text is not None else same_python
        return env, offline

    def _image(self) -> dict:
        if self._image_attrs is None:
            try:
                self._image_attrs = self.client.api.inspect_image(self.image)
            except docker.errors.ImageNotFound as exc:
                raise ExecutorError(
                    f"the runner image {self.image!r} does not exist; build it with "
                    "`fastflow image build --bootstrap` (or `--base IMAGE`)") from exc
        return self._image_attrs

    def _remove(self, container_id: str) -> None:
        try:
            self.client.api.remove_container(container_id, v=True, force=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            if exc.status_code != 409:  # 409: someone else is already removing it
                logger.warning("could not remove container %s: %s", container_id[:12], exc)
        except DockerError as exc:
            logger.warning("could not remove container %s: %s", container_id[:12], exc)

    def note(self, sink: OutputSink, text: str) -> None:
        try:
            sink(OutputLine(RUNNER_STREAM, text, self.clock()))
        except Exception:  # noqa: BLE001 - a broken sink must not break the run
            logger.exception("output sink failed")


class _Attempt:
    """One started container: output pump, stats, waiting, stopping, and the final verdict."""

    def __init__(self, executor: DockerExecutor, spec: AttemptSpec, container_id: str,
                 sink: OutputSink, cancel: threading.Event) -> None:
        self.x, self.spec, self.id, self.sink, self.cancel = executor, spec, container_id, sink, cancel
        self.api = executor.client.api
        self.sampler = ResourceSampler(spec.limits)
        self.exit_status: dict | None = None
        self.done = threading.Event()
        self.stopped_by_us = False

    def supervise(self) -> tuple[RunStatus, int | None, ErrorInfo | None]:
        pump = self._start_pump()
        try:
            self.api.start(self.id)
        except DockerError as exc:
            raise ExecutorError(f"cannot start the container of {self.spec.pipeline!r}: {exc}") from exc
        begin = self.x.monotonic()
        stats = StatsReader(self.api.stats(self.id, stream=True, decode=True), self.sampler,
                            self.x.monotonic, begin)
        stats.start()
        threading.Thread(target=self._wait, name="fastflow-docker-wait", daemon=True).start()
        verdict = self._watch(begin)
        self.done.wait()
        pump.join(timeout=30)  # the attach stream ends once the container's output is closed
        stats.stop()
        if pump.is_alive():
            logger.warning("%s: output stream still open after the container ended", self.spec.pipeline)
        return verdict or self._verdict()

    def _start_pump(self) -> threading.Thread:
        try:
            stream = self.api.attach(self.id, stdout=True, stderr=True, stream=True, logs=False,
                                     demux=True)
        except DockerError as exc:
            raise ExecutorError(f"cannot attach to the container of {self.spec.pipeline!r}: {exc}") from exc
        splitter = LineSplitter(self.sink, self.x.clock, self.x.max_line_bytes)
        thread = threading.Thread(target=splitter.pump, args=(stream,), name="fastflow-docker-out",
                                  daemon=True)
        thread.start()
        return thread

    def _wait(self) -> None:
        try:
            self.exit_status = self.api.wait(self.id)
        except docker.errors.NotFound:
            self.exit_status = None  # removed under our feet: lost
        except Exception as exc:  # noqa: BLE001 - reported as a lost container
            logger.warning("waiting for container %s failed: %s", self.id[:12], exc)
        finally:
            self.done.set()

    def _watch(self, begin: float):
        """Wait for the exit; on cancel or timeout stop the container and return that verdict."""
        spec = self.spec
        deadline = begin + spec.timeout if spec.timeout > 0 else None
        while not self.done.wait(self.x.poll_interval):
            if self.cancel.is_set():
                self.x.note(self.sink, "cancel requested: stopping the container")
                self._stop()
                return RunStatus.CANCELLED, self._exit_code(), ErrorInfo("cancelled", "cancelled while running")
            if deadline is not None and self.x.monotonic() >= deadline:
                self.x.note(self.sink, f"timeout of {spec.timeout:g}s reached: stopping the container")
                self._stop()
                message = f"timed out after {spec.timeout:g}s (timeout {spec.timeout:g}s)"
                return RunStatus.TIMED_OUT, self._exit_code(), ErrorInfo("timeout", message)
        return None

    def _stop(self) -> None:
        self.stopped_by_us = True
        try:
            # The engine sends SIGTERM, waits `grace`, then SIGKILL; the init forwards signals.
            self.api.stop(self.id, timeout=max(math.ceil(self.spec.grace_period), 0))
        except docker.errors.NotFound:
            pass
        self.done.wait()

    def _exit_code(self) -> int | None:
        self.done.wait()
        return (self.exit_status or {}).get("StatusCode")

    def _verdict(self) -> tuple[RunStatus, int | None, ErrorInfo | None]:
        if self.exit_status is None:
            return RunStatus.LOST, None, ErrorInfo("lost", "the container vanished while running "
                                                   "(removed or the engine restarted)")
        code = self.exit_status.get("StatusCode")
        try:
            attrs = self.api.inspect_container(self.id)
        except docker.errors.NotFound:
            return RunStatus.LOST, code, ErrorInfo("lost", "the container vanished before its "
                                                   "state could be read")
        if code == 0:
            return RunStatus.SUCCEEDED, 0, None
        if attrs.get("State", {}).get("OOMKilled"):
            limit = self.spec.limits.mem_hard_limit
            return RunStatus.OOM_KILLED, code, ErrorInfo(
                "oom", f"killed by the kernel's OOM killer (mem_hard_limit {limit} bytes)"
                if limit else "killed by the kernel's OOM killer")
        if self._killed_from_outside(attrs):
            return RunStatus.CANCELLED, code, ErrorInfo(
                "cancelled", "the container was stopped from outside (fastflow cancel, "
                "docker stop or docker kill)")
        return RunStatus.FAILED, code, None

    def _killed_from_outside(self, attrs: dict) -> bool:
        """Whether the engine logged a kill signal for this container (we sent none)."""
        state = attrs.get("State", {})
        since, until = _unix(attrs.get("Created")), _unix(state.get("FinishedAt"))
        if since is None or until is None:
            return False
        try:
            events = self.api.events(since=f"{since:.9f}", until=f"{until + 0.01:.9f}", decode=True,
                                     filters={"container": self.id, "event": "kill"})
            return any(True for _ in events)
        except DockerError as exc:
            logger.warning("cannot read the engine's events: %s", exc)
            return False


def _unix(value: str | None) -> float | None:
    parsed = parse_engine_time(value)
    return parsed.timestamp() if parsed else None


def _check_readable(workdir: Path, entry: str) -> None:
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


def _labels(spec: AttemptSpec) -> dict[str, str]:
    return {LABEL_KIND: KIND_RUN, LABEL_RUN_ID: spec.run_id, LABEL_PIPELINE: spec.pipeline,
            LABEL_ATTEMPT: str(spec.attempt)}


def _container_name(spec: AttemptSpec) -> str:
    return f"fastflow-{spec.run_id}-{spec.attempt}"[:200]


def _sha256(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()
