"""`DockerExecutor`: each attempt in a fresh, hardened container of its Python's runner image.

The parts: `container` builds and hardens an attempt's container and removes what it leaves;
`supervisor` follows a container to its verdict (timeout, cancel, OOM, output to the last
line); `reattach` reads back from a container what a process that did not create it needs;
`preheat` fills the shared cache. This module joins them under the contract of `base`.

Execute: the runner image of the attempt's Python (`image.runner_image`: `{python}` of the
configured image replaced; a missing image, or one labelled with another Python, is an
`ExecutorError` with the fix before anything is created), the record's environment (image,
Python, uv, requirements hash, and the package set when the attempt is pre-heated, i.e. runs
offline), then a container created, started attached
and supervised to its end; the container, its cache volume and the scratch folder are removed
once the attempt is collected, by its owner or, when the owner died (`kill -9`), by the process
that re-attaches: a container is never auto-removed.

Re-attach (`reattach(run_id, ...)`): the container of the run is found by its labels, which
carry everything needed to supervise it (run id, pipeline, attempt, timeout, grace period,
limits). A running one is followed like a fresh attempt: its output from the engine's copy
(skipping the lines the dead owner delivered), the timeout counted from the container's
StartedAt, resource sampling, cancel; a finished one gives its exit code, OOM flag and output.

Pre-heat (`preheat(job)`): `preheat.preheat_requirements` in a trusted container with the same
image (that of the job's Python), cache and CA bundle as the runs, so a run of those
requirements starts offline.
"""
from __future__ import annotations

import logging
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

import docker
import docker.errors

from fastflow.defaults import (
    DEFAULT_IMAGE,
    DEFAULT_PIDS_LIMIT,
    DEFAULT_PYTHON,
    DEFAULT_TMP_SIZE_BYTES,
)
from fastflow.errors import ExecutorError
from fastflow.executors.base import (
    RUNNER,
    AttemptResult,
    AttemptSpec,
    Clock,
    Delivered,
    Executor,
    OutputLine,
    OutputSink,
    PreheatJob,
    PreheatOutcome,
    ReattachedAttempt,
    preheat_failure,
    read_route,
    requirements_problem,
    with_uv_warnings,
)
from fastflow.executors.docker.cache import (
    CacheLayout,
    read_requirements,
    requirements_key,
)
from fastflow.executors.docker.container import (
    RunContainer,
    RunContainers,
    container_name,
    route_file,
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
from fastflow.executors.docker.image import runner_image, runner_image_problem
from fastflow.executors.docker.preheat import preheat_requirements
from fastflow.executors.docker.reattach import (
    environment_of,
    name_of,
    scratch_of,
    sha256_text,
    spec_from_container,
)
from fastflow.executors.docker.supervisor import ContainerSupervisor, Pace
from fastflow.model import RunStatus
from fastflow.record import Environment, ErrorInfo

logger = logging.getLogger(__name__)

DEFAULT_MAX_LINE_BYTES = 64 * 1024


class DockerExecutor(Executor):
    """Runs each attempt in a new container of its Python's runner image (see the module
    docstring). `image` is `image` of config.yaml, with `{python}` or without (one image for
    every Python); `default_python` is the Python of attempts that name none."""

    name = "docker"
    can_reattach = True

    def __init__(self, *, clock: Clock, cache_dir: Path, image: str = DEFAULT_IMAGE,
                 default_python: str = DEFAULT_PYTHON, scratch_dir: Path | None = None,
                 ca_bundle: Path | None = None,
                 pids_limit: int = DEFAULT_PIDS_LIMIT, client: docker.DockerClient | None = None,
                 monotonic: Callable[[], float] = time.monotonic, poll_interval: float = 0.05,
                 max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
                 tmp_size: int = DEFAULT_TMP_SIZE_BYTES) -> None:
        self.clock, self.monotonic = clock, monotonic
        self.image, self.default_python = image, default_python
        self.cache = CacheLayout(Path(cache_dir))
        self.scratch_dir = Path(scratch_dir or Path(tempfile.gettempdir()) / "fastflow-scratch")
        self.ca_bundle = Path(ca_bundle) if ca_bundle else None
        self.pace = Pace(clock, monotonic, poll_interval, max_line_bytes)
        self.containers = RunContainers(lambda: self.client, cache=self.cache,
                                        image=lambda spec: self.runner_image(spec.python_version),
                                        scratch_dir=self.scratch_dir, ca_bundle=self.ca_bundle,
                                        pids_limit=pids_limit, tmp_size=tmp_size)
        self._client = client
        self._image_attrs: dict[str, dict] = {}  # by tag; a missing image is asked again
        self._held: dict[tuple[str, int], RunContainer] = {}  # hold attempts, until release
        self._held_lock = threading.Lock()

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
        leftover = self._adopt_leftover(spec, sink, cancel)
        if leftover is not None:
            return leftover
        environment, offline = self._environment(spec)
        container = self.containers.create(spec, image=environment.image, offline=offline)
        held = False
        try:
            run = self._supervisor(spec, container.id, sink, cancel)
            status, exit_code, error = run.supervise()
            result = AttemptResult(
                status=status, exit_code=exit_code, started_at=started,
                finished_at=self.clock(), error=error, route=read_route(container.route_file),
                resources=run.sampler.resources(), environment=environment,
            )
            if spec.hold:  # the exited container keeps the outcome until the caller wrote it
                with self._held_lock:
                    self._held[(spec.run_id, spec.attempt)] = container
                held = True
            return result
        finally:
            if not held:
                self.containers.discard(container.id, container.name, container.scratch)

    def release(self, spec: AttemptSpec) -> None:
        """Remove the exited container of a `hold` attempt (its outcome is written down)."""
        with self._held_lock:
            container = self._held.pop((spec.run_id, spec.attempt), None)
        if container is not None:
            self.containers.discard(container.id, container.name, container.scratch)

    def _adopt_leftover(self, spec: AttemptSpec, sink: OutputSink,
                        cancel: threading.Event) -> AttemptResult | None:
        """A container named for this very attempt is already there (its owner died before
        removing it, or another daemon runs the same slot): follow it to its end, or collect
        how it ended, as a re-attach does, instead of failing on the name. None when there
        is none (or it never started: it is removed, and the attempt starts afresh)."""
        name = container_name(spec)
        try:
            attrs = self.client.api.inspect_container(name)
        except docker.errors.NotFound:
            return None
        except DockerError as exc:
            raise ExecutorError(f"cannot inspect the container {name}: {exc}") from exc
        scratch = scratch_of(attrs, self.scratch_dir)
        try:
            if parse_engine_time(attrs.get("State", {}).get("StartedAt")) is None:
                return None  # created, never started: discarded below, then made anew
            sink(OutputLine(RUNNER, f"the container {name} of this attempt is already there, "
                            "left by an earlier process: following it to its end instead of "
                            "starting the attempt again", self.clock()))
            found = self._resume(attrs["Id"], attrs, scratch, sink, cancel, lambda attempt: {})
            return found.result if found is not None else None
        except docker.errors.NotFound:
            return None  # removed while we looked at it
        except DockerError as exc:
            raise ExecutorError(f"cannot follow the container {name}: {exc}") from exc
        finally:
            self.containers.discard(attrs["Id"], name, scratch)

    def preheat(self, job: PreheatJob) -> PreheatOutcome:
        """Fill the shared cache with `job`'s requirements in a trusted container of this
        executor's image (with its CA bundle); a repeat of the same requirements, Python and
        image is answered from the marker at once ("already pre-heated")."""
        refused = requirements_problem(job)
        if refused:
            return PreheatOutcome(False, refused)
        try:
            image, _ = self._image(job.python_version)
        except ExecutorError as exc:  # the run would fail the same way: say it now, as it will
            return PreheatOutcome(False, f"pipeline {job.pipeline!r}: {exc}")
        result = preheat_requirements(image, self.cache.root, job.workdir, job.requirements,
                                      job.python_version, self.ca_bundle, client=self.client)
        if result.ok:
            note = "already pre-heated" if result.skipped else f"pre-heated in {result.duration_s:.1f}s"
            return PreheatOutcome(True, with_uv_warnings(note, result.output), result.key,
                                  result.duration_s)
        return PreheatOutcome(False, preheat_failure(job, result.output), result.key,
                              result.duration_s)

    def _supervisor(self, spec: AttemptSpec, container_id: str, sink: OutputSink,
                    cancel: threading.Event) -> ContainerSupervisor:
        return ContainerSupervisor(self.client.api, spec, container_id, sink, cancel, self.pace)

    def _environment(self, spec: AttemptSpec) -> tuple[Environment, bool]:
        """The record's environment, and whether the attempt's packages are pre-heated."""
        image, attrs = self._image(spec.python_version, spec.pipeline)
        labels = attrs.get("Config", {}).get("Labels") or {}
        text = read_requirements(spec.workdir, spec.requirements)
        python = spec.python_version or labels.get(LABEL_PYTHON)
        key = requirements_key(text, spec.python_version, attrs["Id"])
        same_python = spec.python_version in (None, labels.get(LABEL_PYTHON))
        offline = self.cache.is_preheated(key) if text is not None else same_python
        env = Environment(
            image=image, image_id=attrs["Id"], python=python, uv_version=labels.get(LABEL_UV),
            requirements_hash=sha256_text(text) if text is not None else None,
            # offline, uv can only use what the pre-heat put in the cache: this exact set
            resolved=self.cache.resolved(key) if text is not None and offline else (),
        )
        return env, offline

    def dry_run_commands(self, spec: AttemptSpec, scratch: Path) -> tuple[list[list[str]], list[str]]:
        """The shell commands that would run `spec` as `execute` does, nothing created: the
        ones preparing its scratch folder `scratch` (the overlay's upper and work folders, the
        route folder, the cache overlay volume) and its `docker run` (`RunContainers`' own
        keywords rendered as flags). The cache is assumed cold (uv may download)."""
        upper, work, route = scratch / "upper", scratch / "work", scratch / "route"
        name = container_name(spec)
        setup = [["mkdir", "-p", str(self.cache.root), str(upper), str(work), str(route)],
                 ["chmod", "0777", str(upper), str(route)],
                 self.containers.overlay_volume_args(spec, scratch, name)]
        run = self.containers.docker_run_args(spec, image=self.runner_image(spec.python_version),
                                              scratch=scratch, name=name)
        return setup, run

    def runner_image(self, python_version: str | None) -> str:
        """The runner image of an attempt or pre-heat asking for `python_version` (None: the
        default Python)."""
        return runner_image(self.image, python_version or self.default_python)

    def _image(self, python_version: str | None, pipeline: str | None = None) -> tuple[str, dict]:
        """The runner image of `python_version` and its engine attributes; `ExecutorError` with
        the fix (`runner_image_problem`) when it is missing or labelled with another Python."""
        python = python_version or self.default_python
        tag = runner_image(self.image, python)
        attrs = self._image_attrs.get(tag)
        if attrs is None:
            try:
                attrs = self.client.api.inspect_image(tag)
            except docker.errors.ImageNotFound:
                attrs = None
            except DockerError as exc:
                raise ExecutorError(f"cannot inspect the image {tag!r}: {exc}") from exc
        labels = None if attrs is None else (attrs.get("Config", {}).get("Labels") or {})
        problem = runner_image_problem(self.image, python, labels)
        if problem:
            raise ExecutorError(f"pipeline {pipeline!r}: {problem}" if pipeline else problem)
        self._image_attrs[tag] = attrs
        return tag, attrs

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
            self.containers.discard(stale["Id"], name_of(stale), None)
        container_id, scratch = found[-1]["Id"], None
        try:
            attrs = self.client.api.inspect_container(container_id)
            scratch = scratch_of(attrs, self.scratch_dir)
            return self._resume(container_id, attrs, scratch, sink, cancel, delivered)
        except docker.errors.NotFound:
            return None  # removed while we looked at it
        except DockerError as exc:
            raise ExecutorError(f"cannot re-attach to the container of run {run_id}: {exc}") from exc
        finally:
            self.containers.discard(container_id, name_of(found[-1]), scratch)

    def _resume(self, container_id: str, attrs: dict, scratch: Path | None, sink: OutputSink,
                cancel: threading.Event, delivered: Delivered) -> ReattachedAttempt | None:
        """Follow a container found by `reattach` to its end, with the verdict of `execute`."""
        spec = spec_from_container(attrs)
        started = parse_engine_time(attrs.get("State", {}).get("StartedAt"))
        if started is None:
            return None  # created but never started
        run = self._supervisor(spec, container_id, sink, cancel)
        # The deadline counts from the container's start, not from now.
        elapsed = max((self.clock() - started).total_seconds(), 0.0)
        status, exit_code, error = run.resume(self.monotonic() - elapsed, delivered(spec.attempt))
        finished = None
        if status is not RunStatus.LOST and not run.stopped_by_us:
            finished = parse_engine_time(run.final_state.get("FinishedAt"))
        return ReattachedAttempt(spec.attempt, AttemptResult(
            status=status, exit_code=exit_code, started_at=started,
            finished_at=finished or self.clock(), error=error,
            route=read_route(route_file(scratch)) if scratch else None,
            resources=run.sampler.resources(), environment=environment_of(self.client.api, attrs),
        ))
