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

Output comes from an attach made before the start and is read to the end after the exit, so
the last line is never lost. The engine also keeps a bounded copy (log driver `json-file`,
`max-size` = the run's log cap, `max-file` = 2), which is what a later process reads back
when it re-attaches. The container, its cache volume and the scratch folder are removed once
the attempt is collected, by its owner or, when the owner died (`kill -9`), by the process
that re-attaches (`reattach`): a container is never auto-removed.

Re-attach (`reattach(run_id, ...)`): the container of the run is found by its labels, which
carry everything needed to supervise it (run id, pipeline, attempt, timeout, grace period,
limits). A running one is followed like a fresh attempt: its output from the engine's copy
(skipping the lines the dead owner delivered), the timeout counted from the container's
StartedAt, resource sampling, cancel; a finished one gives its exit code, OOM flag and output.
"""
from __future__ import annotations

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
    NOTEBOOK_RUNNER,
    STDERR,
    STDOUT,
    AttemptResult,
    AttemptSpec,
    Clock,
    Delivered,
    Executor,
    OutputLine,
    OutputSink,
    ReattachedAttempt,
    read_route,
    uv_command,
)
from fastflow.executors.docker.cache import (
    CONTAINER_CA_BUNDLE,
    CacheLayout,
    create_overlay_volume,
    give_to_runner,
    read_requirements,
    remove_tree,
    remove_volume,
    requirements_key,
)
from fastflow.executors.docker.engine import (
    KIND_RUN,
    LABEL_ATTEMPT,
    LABEL_KIND,
    LABEL_PYTHON,
    LABEL_RUN_ID,
    LABEL_UV,
    DockerError,
    connect,
    parse_engine_time,
)
from fastflow.executors.docker.image import RUNNER_UID
from fastflow.executors.docker.reattach import (
    CONTAINER_ROUTE_DIR,
    SkipDelivered,
    environment_of,
    labels_of,
    log_config,
    name_of,
    scratch_of,
    sha256_text,
    spec_from_container,
)
from fastflow.executors.docker.stats import ResourceSampler, StatsReader
from fastflow.executors.docker.streams import LineSplitter
from fastflow.model import NetworkMode, PipelineType, RunStatus
from fastflow.record import Environment, ErrorInfo

logger = logging.getLogger(__name__)

RUNNER_STREAM = "runner"  # same value as fastflow.capture.RUNNER (capture is a higher layer)
CONTAINER_NOTEBOOK_RUNNER = "/opt/fastflow/notebook.py"
DEFAULT_MAX_LINE_BYTES = 64 * 1024


class DockerExecutor(Executor):
    """Runs each attempt in a new container of `image` (see the module docstring)."""

    name = "docker"
    can_reattach = True

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
                                                scratch / "upper", scratch / "work", labels_of(spec)))
            container = self.client.api.create_container(
                self.image, command=uv_command(spec, CONTAINER_NOTEBOOK_RUNNER),
                name=_container_name(spec), working_dir=workdir, user=f"{RUNNER_UID}:{RUNNER_UID}",
                environment=self._env(spec, offline), labels=labels_of(spec),
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
            log_config=log_config(spec.log_cap_bytes), ipc_mode="private",
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
        same_python = spec.python_version in (None, labels.get(LABEL_PYTHON))
        offline = self.cache.is_preheated(key) if text is not None else same_python
        env = Environment(
            image=self.image, image_id=attrs["Id"], python=python, uv_version=labels.get(LABEL_UV),
            requirements_hash=sha256_text(text) if text is not None else None,
            # offline, uv can only use what the pre-heat put in the cache: this exact set
            resolved=self.cache.resolved(key) if text is not None and offline else (),
        )
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

    # --- re-attaching after the owner died --------------------------------------------

    def reattach(self, run_id: str, sink: OutputSink, cancel: threading.Event,
                 delivered: Delivered = lambda attempt: {}) -> ReattachedAttempt | None:
        """Supervise the container a dead process left for `run_id` to its end (see the module
        docstring), then remove it; None when no container of the run exists (`lost`).

        `delivered(attempt)` gives how many stdout / stderr lines the dead owner had already
        handed over; only the rest reaches `sink`. A container that was created but never
        started (the owner died in between) is removed and reported as None too.
        """
        try:
            found = self.client.api.containers(all=True, filters={
                "label": [f"{LABEL_KIND}={KIND_RUN}", f"{LABEL_RUN_ID}={run_id}"]})
        except DockerError as exc:
            raise ExecutorError(f"cannot list the containers of run {run_id}: {exc}") from exc
        if not found:
            return None
        found.sort(key=lambda c: int((c.get("Labels") or {}).get(LABEL_ATTEMPT, "0") or 0))
        for stale in found[:-1]:  # an earlier attempt's container its owner could not remove
            self._remove(stale["Id"])
        container_id = found[-1]["Id"]
        scratch = None
        try:
            attrs = self.client.api.inspect_container(container_id)
            scratch = scratch_of(attrs, self.scratch_dir)
            spec = spec_from_container(attrs)
            started = parse_engine_time(attrs.get("State", {}).get("StartedAt"))
            if started is None:
                return None
            run = _Attempt(self, spec, container_id, sink, cancel)
            # The deadline counts from the container's start, not from now.
            elapsed = max((self.clock() - started).total_seconds(), 0.0)
            counts = delivered(spec.attempt)
            status, exit_code, error = run.resume(self.monotonic() - elapsed, counts)
            finished = None
            if status is not RunStatus.LOST and not run.stopped_by_us:
                finished = parse_engine_time(run.final_state.get("FinishedAt"))
            return ReattachedAttempt(spec.attempt, AttemptResult(
                status=status, exit_code=exit_code, started_at=started,
                finished_at=finished or self.clock(), error=error,
                route=read_route(scratch / "route" / "route") if scratch else None,
                resources=run.sampler.resources(), environment=environment_of(self.client.api, attrs),
            ))
        except docker.errors.NotFound:
            return None  # removed while we looked at it
        except DockerError as exc:
            raise ExecutorError(f"cannot re-attach to the container of run {run_id}: {exc}") from exc
        finally:
            self._remove(container_id)
            remove_volume(self.client, f"{name_of(found[-1])}-cache")
            if scratch is not None and not remove_tree(scratch):
                logger.warning("could not remove the scratch folder %s (files of uid %d); "
                               "remove it as root", scratch, RUNNER_UID)

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
        self.final_state: dict = {}  # the container's State once it ended (from _verdict)
        self.done = threading.Event()
        self.stopped_by_us = False

    def supervise(self) -> tuple[RunStatus, int | None, ErrorInfo | None]:
        """Start the container (attached first) and supervise it to its end."""
        pump = self._start_pump()
        try:
            self.api.start(self.id)
        except DockerError as exc:
            raise ExecutorError(f"cannot start the container of {self.spec.pipeline!r}: {exc}") from exc
        return self._follow([pump], self.x.monotonic(), sample=True)

    def resume(self, begin: float, delivered: dict | None = None
               ) -> tuple[RunStatus, int | None, ErrorInfo | None]:
        """Supervise a container started by a process that died (`begin`: its start on our
        monotonic clock), its output from the engine's json-file copy minus `delivered`."""
        running = self.api.inspect_container(self.id).get("State", {}).get("Running", False)
        skips = {stream: SkipDelivered(self.sink, (delivered or {}).get(stream, 0))
                 for stream in (STDOUT, STDERR)}
        pumps = [self._start_log_pump(stream, skip) for stream, skip in skips.items()]
        verdict = self._follow(pumps, begin, sample=running)
        for stream, skip in skips.items():
            self._catch_up(stream, skip)
        if any(skip.left > 0 for skip in skips.values()):
            self.x.note(self.sink, "the engine kept less output than was already delivered "
                                   "(its copy was rotated); lines may be missing from this log")
        return verdict

    def _follow(self, pumps: list[threading.Thread], begin: float, sample: bool
                ) -> tuple[RunStatus, int | None, ErrorInfo | None]:
        stats = None
        if sample:  # a finished container has no stats stream worth reading
            stats = StatsReader(self.api.stats(self.id, stream=True, decode=True), self.sampler,
                                self.x.monotonic, begin)
            stats.start()
        threading.Thread(target=self._wait, name="fastflow-docker-wait", daemon=True).start()
        verdict = self._watch(begin)
        self.done.wait()
        for pump in pumps:
            pump.join(timeout=30)  # an output stream ends once the container's output is closed
            if pump.is_alive():
                logger.warning("%s: output stream still open after the container ended",
                               self.spec.pipeline)
        if stats is not None:
            stats.stop()
        return verdict or self._verdict()

    def _catch_up(self, stream: str, skip: SkipDelivered) -> None:
        """Hand over what the follow missed: the engine may end a follow at the exit before
        it wrote the last line (a last line without newline, typically)."""
        try:
            data = self.api.logs(self.id, stdout=stream == STDOUT, stderr=stream == STDERR,
                                 stream=False, follow=False)
        except DockerError as exc:
            logger.warning("cannot read the output of container %s: %s", self.id[:12], exc)
            return
        lines: list[OutputLine] = []
        LineSplitter(lines.append, self.x.clock, self.x.max_line_bytes).pump(
            [(data, None) if stream == STDOUT else (None, data)])
        for line in lines[skip.seen:]:
            skip(line)

    def _start_log_pump(self, stream: str, sink: OutputSink) -> threading.Thread:
        """Follow one stream of the engine's copy of the output, from the container's start."""
        try:
            chunks = self.api.logs(self.id, stdout=stream == STDOUT, stderr=stream == STDERR,
                                   stream=True, follow=True)
        except DockerError as exc:
            raise ExecutorError(f"cannot read the output of the container of "
                                f"{self.spec.pipeline!r}: {exc}") from exc
        splitter = LineSplitter(sink, self.x.clock, self.x.max_line_bytes)
        pairs = ((c, None) if stream == STDOUT else (None, c) for c in chunks)
        thread = threading.Thread(target=splitter.pump, args=(pairs,),
                                  name=f"fastflow-docker-{stream}", daemon=True)
        thread.start()
        return thread

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
        self.final_state = attrs.get("State", {})
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


def _container_name(spec: AttemptSpec) -> str:
    return f"fastflow-{spec.run_id}-{spec.attempt}"[:200]
