"""`SwarmExecutor`: each attempt a one-shot Swarm job, placed by Swarm on any node that qualifies.

The daemon runs on a Swarm manager and talks only to its engine (the SDK, the manager API):
`service` builds the job (code, entry step and payload as Swarm configs, hardening, limits,
placement), `logs` reads its output back through the manager, and this module follows the job
to the same verdicts as `DockerExecutor` (see `base`):

- the task pending longer than `schedule_timeout` (no node qualifies) or rejected (the runner
  image is not on the node) is an `ExecutorError` that says so: a run never hangs there;
- the timeout is kept by the entry step in the task (SIGTERM, grace, SIGKILL, from the task's
  own start); the executor removes a job that outlives it by more than `BACKSTOP` seconds;
- cancel removes the service: the engine sends SIGTERM, the entry step stops the pipeline's
  whole process group (grace, SIGKILL); a service removed by someone else, or a task container
  stopped from outside, is `cancelled` too;
- `oom_killed` when the kernel counted an OOM kill in the task's memory cgroup during the
  pipeline (the entry step reads it), or the engine reports `OOMKilled` for a task container on
  this very engine; never for a bare exit 137;
- the route, the exit code and resource samples (cgroup memory and CPU, once a second) come
  from the entry step's outcome line; the record names the node (`environment.node`).

A finished job is collected (outcome, output, node) and its service, configs and network are
removed; with `hold` only at `release`. Everything a later process needs is on the service
(labels, the engine's copy of the output), so `reattach` supervises a job whose owner died.
"""
from __future__ import annotations

import logging
import threading
import time
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
    AttemptResult,
    AttemptSpec,
    Clock,
    Delivered,
    Executor,
    OutputSink,
    PreheatJob,
    PreheatOutcome,
    ReattachedAttempt,
    missing_requirements,
    preheat_failure,
    requirements_problem,
    with_uv_warnings,
)
from fastflow.executors.docker.cache import read_requirements
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
from fastflow.executors.docker.reattach import sha256_text, spec_from_labels
from fastflow.executors.docker.stats import ResourceSampler
from fastflow.executors.docker.supervisor import note
from fastflow.executors.swarm.entry import EXIT_ENTRY
from fastflow.executors.swarm.logs import ServiceOutput
from fastflow.executors.swarm.preheat import preheat_on_nodes
from fastflow.executors.swarm.service import (
    LABEL_NONCE,
    NO_OP,
    SwarmJobs,
    service_name,
    stop_job,
)
from fastflow.model import RunStatus
from fastflow.record import Environment, ErrorInfo

logger = logging.getLogger(__name__)

DEFAULT_SCHEDULE_TIMEOUT = 60.0
BACKSTOP = 30.0  # seconds past timeout + grace after which the executor removes a job itself
DEFAULT_MAX_LINE_BYTES = 64 * 1024
_BEFORE_START = {"new", "pending", "assigned", "accepted", "preparing", "ready", "starting"}
_ENDED = {"complete", "failed", "shutdown", "rejected", "orphaned", "remove"}


class SwarmExecutor(Executor):
    """Runs each attempt as a one-shot Swarm job (see the module docstring). `image`,
    `default_python`, `ca_bundle` and `tmp_size` mean what they mean for `DockerExecutor`;
    `placement` holds constraints every attempt gets (a pipeline's `placement` adds to them)."""

    name = "swarm"
    can_reattach = True

    def __init__(self, *, clock: Clock, image: str = DEFAULT_IMAGE,
                 default_python: str = DEFAULT_PYTHON, ca_bundle=None,
                 pids_limit: int = DEFAULT_PIDS_LIMIT, tmp_size: int = DEFAULT_TMP_SIZE_BYTES,
                 client: docker.DockerClient | None = None, placement: tuple[str, ...] = (),
                 schedule_timeout: float = DEFAULT_SCHEDULE_TIMEOUT, poll_interval: float = 0.1,
                 monotonic: Callable[[], float] = time.monotonic,
                 max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> None:
        self.clock, self.monotonic = clock, monotonic
        self.image, self.default_python = image, default_python
        self.schedule_timeout, self.poll_interval = schedule_timeout, poll_interval
        self.max_line_bytes = max_line_bytes
        self.client = connect(client)
        self.jobs = SwarmJobs(self.client.api, pids_limit=pids_limit, tmp_size=tmp_size,
                              ca_bundle=ca_bundle, placement_default=tuple(placement))
        self._nodes: dict[str, str] = {}
        self._held: set[str] = set()
        self._held_lock = threading.Lock()
        check_manager(self.client)

    @property
    def api(self):
        return self.client.api

    # --- execute ---------------------------------------------------------------------------

    def execute(self, spec: AttemptSpec, sink: OutputSink,
                cancel: threading.Event) -> AttemptResult:
        """Run the attempt as a Swarm job to its end and return how it ended (see `base`)."""
        started = self.clock()
        if cancel.is_set():
            return AttemptResult(RunStatus.CANCELLED, None, started, self.clock(),
                                 ErrorInfo("cancelled", "cancelled before the attempt started"))
        name = service_name(spec.run_id, spec.attempt)
        leftover = self._adopt_leftover(name, spec, sink, cancel)
        if leftover is not None:
            return leftover
        environment = self._environment(spec)
        service_id = self.jobs.create(spec, environment.image)
        held = False
        try:
            result = self._supervise(service_id, spec, sink, cancel, started, environment, {})
            if spec.hold:
                with self._held_lock:
                    self._held.add(name)
                held = True
            return result
        finally:
            if not held:
                self.jobs.remove(name)

    def release(self, spec: AttemptSpec) -> None:
        """Remove the finished job of a `hold` attempt (its outcome is written down)."""
        name = service_name(spec.run_id, spec.attempt)
        with self._held_lock:
            held = name in self._held
            self._held.discard(name)
        if held:
            self.jobs.remove(name)

    def _adopt_leftover(self, name: str, spec: AttemptSpec, sink: OutputSink,
                        cancel: threading.Event) -> AttemptResult | None:
        """A job of this very attempt is already there (its owner died): follow it to its end
        instead of starting the attempt a second time."""
        try:
            attrs = self.api.inspect_service(name)
        except docker.errors.NotFound:
            self.jobs.remove_leftovers(name)
            return None
        except DockerError as exc:
            raise ExecutorError(f"cannot inspect the Swarm service {name}: {exc}") from exc
        note(sink, self.clock, f"the Swarm job {name} of this attempt is already there, left by "
             "an earlier process: following it to its end instead of starting it again")
        try:
            found = self._resume(attrs, sink, cancel, lambda attempt: {})
            return found.result if found is not None else None
        finally:
            self.jobs.remove(name)

    def _supervise(self, service_id: str, spec: AttemptSpec, sink: OutputSink,
                   cancel: threading.Event, started, environment: Environment,
                   delivered: dict) -> AttemptResult:
        nonce = self.api.inspect_service(service_id)["Spec"]["Labels"][LABEL_NONCE]
        output = ServiceOutput(self.api, service_id, sink, self.clock, nonce,
                               self.max_line_bytes, delivered)
        task = self._wait_for_start(service_id, spec, cancel)
        if task is None:  # cancelled before the task ran
            return AttemptResult(RunStatus.CANCELLED, None, started, self.clock(),
                                 ErrorInfo("cancelled", "cancelled before the attempt started"),
                                 environment=environment)
        node = self._node(task.get("NodeID"))
        output.follow()
        ended, stopped = self._wait_for_end(service_id, task["ID"], spec, cancel, sink)
        output.stop()
        if ended is not None:
            output.catch_up()
        status, code, error = self._verdict(ended, stopped, output.outcome, spec)
        return AttemptResult(
            status=status, exit_code=code, started_at=started, finished_at=self.clock(),
            error=error, route=(output.outcome or {}).get("route"),
            resources=_resources(spec, output.outcome), environment=_with_node(environment, node))

    def _tasks(self, service_id: str) -> list[dict] | None:
        """The service's tasks, newest first; None when the service is gone."""
        try:
            self.api.inspect_service(service_id)
            tasks = self.api.tasks(filters={"service": service_id})
        except docker.errors.NotFound:
            return None
        # the attempt's task, not the no-op `stop_job` replaces it with
        tasks = [t for t in tasks if (t.get("Spec") or {}).get("ContainerSpec", {}).get(
            "Command") != NO_OP]
        return sorted(tasks, key=lambda t: t.get("CreatedAt", ""), reverse=True)

    def _wait_for_start(self, service_id: str, spec: AttemptSpec,
                        cancel: threading.Event) -> dict | None:
        """The task once it runs (or already ended); None when cancelled first. Pending past
        `schedule_timeout` or rejected by its node: `ExecutorError` with the reason."""
        begin = self.monotonic()
        while True:
            tasks = self._tasks(service_id)
            if tasks is None:
                return None  # removed from outside before it ran: cancelled
            task = tasks[0] if tasks else None
            state = (task or {}).get("Status", {}).get("State", "new")
            if state not in _BEFORE_START:
                if state == "rejected" or (state in _ENDED and not _container_of(task)):
                    raise self._rejected(spec, task)
                return task
            if cancel.is_set():
                return None
            if self.monotonic() - begin > self.schedule_timeout:
                reason = (task or {}).get("Status", {}).get("Err") or state
                raise ExecutorError(
                    f"no Swarm node started the task of pipeline {spec.pipeline!r} within "
                    f"{self.schedule_timeout:g}s ({reason}); check the pipeline's placement "
                    "and `docker node ls` (a node must be ready, active and match every "
                    "constraint)")
            time.sleep(self.poll_interval)

    def _rejected(self, spec: AttemptSpec, task: dict) -> ExecutorError:
        node = self._node(task.get("NodeID")) or "?"
        err = task.get("Status", {}).get("Err") or task.get("Status", {}).get("Message") or "?"
        if "No such image" in err:
            return ExecutorError(
                f"the runner image of pipeline {spec.pipeline!r} is not on Swarm node {node!r} "
                f"({err}); put it on every node with `fastflow image push-to-nodes`")
        return ExecutorError(f"Swarm node {node!r} could not start the task of pipeline "
                             f"{spec.pipeline!r}: {err}")

    def _wait_for_end(self, service_id: str, task_id: str, spec: AttemptSpec,
                      cancel: threading.Event, sink: OutputSink
                      ) -> tuple[dict | None, RunStatus | None]:
        """(the ended task, None), or (the task, CANCELLED / TIMED_OUT) when we stopped it, or
        (None, None) when the service vanished (removed from outside)."""
        backstop = spec.timeout + spec.grace_period + BACKSTOP if spec.timeout > 0 else None
        begin, stopped = self.monotonic(), None
        while True:
            task = self._task(service_id, task_id)
            if task is None:
                return None, stopped
            if task.get("Status", {}).get("State") in _ENDED:
                return task, stopped
            if stopped is None and cancel.is_set():
                note(sink, self.clock, "cancel requested: stopping the Swarm job")
                stopped = self._stop(service_id, RunStatus.CANCELLED)
            if stopped is None and backstop is not None and self.monotonic() - begin > backstop:
                note(sink, self.clock, f"the job outlived its timeout of {spec.timeout:g}s: "
                     "stopping it")
                stopped = self._stop(service_id, RunStatus.TIMED_OUT)
            time.sleep(self.poll_interval)

    def _task(self, service_id: str, task_id: str) -> dict | None:
        try:
            self.api.inspect_service(service_id)
            return self.api.inspect_task(task_id)
        except docker.errors.NotFound:
            return None

    def _stop(self, service_id: str, why: RunStatus) -> RunStatus:
        """Stop the job's task wherever it runs (`service.stop_job`); `why` is the verdict."""
        stop_job(self.api, service_id)
        return why

    def _verdict(self, task: dict | None, stopped: RunStatus | None, outcome: dict | None,
                 spec: AttemptSpec) -> tuple[RunStatus, int | None, ErrorInfo | None]:
        code = (outcome or {}).get("exit")
        if stopped is RunStatus.CANCELLED:
            return stopped, code, ErrorInfo("cancelled", "cancelled while running")
        if stopped is RunStatus.TIMED_OUT:
            return stopped, code, ErrorInfo("timeout", f"timed out after {spec.timeout:g}s "
                                            f"(timeout {spec.timeout:g}s)")
        if task is None:
            return RunStatus.CANCELLED, None, ErrorInfo(
                "cancelled", "the Swarm service was removed from outside (fastflow cancel or "
                "docker service rm)")
        code = task.get("Status", {}).get("ContainerStatus", {}).get("ExitCode")
        if outcome is None:
            if code == EXIT_ENTRY:
                return RunStatus.FAILED, code, ErrorInfo(
                    "code", "the entry step on the node refused to run the pipeline (see the "
                    "log's `fastflow:` line: the code did not arrive as sent)")
            if code and self._engine_says_oom(task):
                return RunStatus.OOM_KILLED, code, _oom(spec)
            return RunStatus.FAILED, code, ErrorInfo(
                "lost", f"the task ended without its outcome ({task['Status'].get('Err') or code})")
        code = outcome.get("exit", code)
        if outcome.get("timed_out"):
            return RunStatus.TIMED_OUT, code, ErrorInfo(
                "timeout", f"timed out after {spec.timeout:g}s (timeout {spec.timeout:g}s)")
        if code == 0:
            return RunStatus.SUCCEEDED, 0, None
        if outcome.get("oom_kills") or self._engine_says_oom(task):
            return RunStatus.OOM_KILLED, code, _oom(spec)
        if outcome.get("stopped"):
            return RunStatus.CANCELLED, code, ErrorInfo(
                "cancelled", "the task was stopped from outside (fastflow cancel, docker stop)")
        return RunStatus.FAILED, code, None

    def _engine_says_oom(self, task: dict) -> bool:
        """The engine's OOMKilled flag, when the task's container is on this engine."""
        cid = _container_of(task)
        try:
            return bool(cid and self.api.inspect_container(cid)["State"].get("OOMKilled"))
        except DockerError:
            return False

    def _node(self, node_id: str | None) -> str | None:
        """A node's host name (cached)."""
        if not node_id:
            return None
        if node_id not in self._nodes:
            try:
                self._nodes[node_id] = self.api.inspect_node(node_id)["Description"]["Hostname"]
            except DockerError:
                return node_id
        return self._nodes[node_id]

    # --- the record's environment, the image ------------------------------------------------

    def _environment(self, spec: AttemptSpec) -> Environment:
        image, attrs = self._image(spec.python_version, spec.pipeline)
        labels = attrs.get("Config", {}).get("Labels") or {}
        text = read_requirements(spec.workdir, spec.requirements)
        return Environment(image=image, image_id=attrs["Id"],
                           python=spec.python_version or labels.get(LABEL_PYTHON),
                           uv_version=labels.get(LABEL_UV),
                           requirements_hash=sha256_text(text) if text is not None else None)

    def runner_image_of(self, spec: AttemptSpec) -> str:
        """The runner image an attempt runs in (that of its Python)."""
        return self._image(spec.python_version, spec.pipeline)[0]

    def _image(self, python_version: str | None, pipeline: str | None = None) -> tuple[str, dict]:
        """The runner image (on the manager: `push-to-nodes` copies it from there) and its
        attributes; `ExecutorError` with the fix when it is missing or of another Python."""
        python = python_version or self.default_python
        tag = runner_image(self.image, python)
        try:
            attrs = self.api.inspect_image(tag)
        except docker.errors.ImageNotFound:
            attrs = None
        except DockerError as exc:
            raise ExecutorError(f"cannot inspect the image {tag!r}: {exc}") from exc
        labels = None if attrs is None else (attrs.get("Config", {}).get("Labels") or {})
        problem = runner_image_problem(self.image, python, labels)
        if problem:
            raise ExecutorError(f"pipeline {pipeline!r}: {problem}" if pipeline else problem)
        return tag, attrs

    # --- pre-heat ------------------------------------------------------------------------------

    def preheat(self, job: PreheatJob) -> PreheatOutcome:
        """Install `job`'s requirements into the uv cache of every node that qualifies (a
        `global-job`, see `preheat`); a node that joins later fills its cache on first use."""
        refused = requirements_problem(job)
        if refused:
            return PreheatOutcome(False, refused)
        if read_requirements(job.workdir, job.requirements) is None:
            raise missing_requirements(job.workdir, job.requirements)
        try:
            image, _ = self._image(job.python_version)
        except ExecutorError as exc:
            return PreheatOutcome(False, f"pipeline {job.pipeline!r}: {exc}")
        done = preheat_on_nodes(self.jobs, image, job, node_name=self._node,
                                placement=self.jobs.placement_default,
                                poll_interval=self.poll_interval, monotonic=self.monotonic)
        if done.failed:
            node, (_, output) = sorted(done.failed.items())[0]
            return PreheatOutcome(False, preheat_failure(job, output), None, done.duration_s)
        outputs = "\n".join(output for _, output in done.results.values())
        note = f"pre-heated in {done.duration_s:.1f}s on {len(done.results)} node(s)"
        return PreheatOutcome(True, with_uv_warnings(note, outputs), None, done.duration_s)

    # --- re-attaching after the owner died -------------------------------------------------

    def reattach(self, run_id: str, sink: OutputSink, cancel: threading.Event,
                 delivered: Delivered = lambda attempt: {}) -> ReattachedAttempt | None:
        """Supervise the job a dead process left for `run_id` to its end, then remove it; None
        when no job of the run exists (or its task never started: it is removed)."""
        try:
            found = self.api.services(filters={
                "label": [f"{LABEL_KIND}={KIND_RUN}", f"{LABEL_RUN_ID}={run_id}"]})
        except DockerError as exc:
            raise ExecutorError(f"cannot list the Swarm services of run {run_id}: {exc}") from exc
        if not found:
            return None
        found.sort(key=lambda s: int(s["Spec"]["Labels"].get(LABEL_ATTEMPT, "0") or 0))
        for stale in found[:-1]:
            self.jobs.remove(stale["Spec"]["Name"])
        last = found[-1]
        try:
            return self._resume(last, sink, cancel, delivered)
        finally:
            self.jobs.remove(last["Spec"]["Name"])

    def _resume(self, service: dict, sink: OutputSink, cancel: threading.Event,
                delivered: Delivered) -> ReattachedAttempt | None:
        labels = service["Spec"]["Labels"]
        spec = spec_from_labels(labels)
        tasks = self._tasks(service["ID"]) or []
        if not tasks or tasks[0].get("Status", {}).get("State") in _BEFORE_START:
            return None  # never started: the attempt has not run
        image = service["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"]
        environment = Environment(image=image, python=labels.get(LABEL_PYTHON))
        started = parse_engine_time(service.get("CreatedAt")) or self.clock()
        result = self._supervise(service["ID"], spec, sink, cancel, started, environment,
                                 dict(delivered(spec.attempt)))
        return ReattachedAttempt(spec.attempt, result)


def check_manager(client: docker.DockerClient) -> None:
    """`ExecutorError` unless the engine is a Swarm manager (only managers create services)."""
    try:
        info = client.api.info().get("Swarm") or {}
    except DockerError as exc:
        raise ExecutorError(f"cannot ask the Docker engine about Swarm: {exc}") from exc
    state = info.get("LocalNodeState") or "inactive"
    if state != "active" or not info.get("ControlAvailable"):
        what = "a Swarm worker" if state == "active" else f"not in a swarm (state {state!r})"
        raise ExecutorError(
            f"`executor: swarm` needs the Docker engine of a Swarm manager, and this one is "
            f"{what}; run `docker swarm init` here or point DOCKER_HOST at a manager "
            "(docs/swarm.md)")


def _container_of(task: dict | None) -> str | None:
    return ((task or {}).get("Status", {}).get("ContainerStatus") or {}).get("ContainerID")


def _oom(spec: AttemptSpec) -> ErrorInfo:
    limit = spec.limits.mem_hard_limit
    return ErrorInfo("oom", f"killed by the kernel's OOM killer (mem_hard_limit {limit} bytes)"
                     if limit else "killed by the kernel's OOM killer")


def _with_node(environment: Environment, node: str | None) -> Environment:
    return Environment(**{**environment.__dict__, "node": node})


def _resources(spec: AttemptSpec, outcome: dict | None):
    sampler = ResourceSampler(spec.limits)
    for t, memory, cpu in (outcome or {}).get("samples") or ():
        sampler.add(t, memory, cpu)
    return sampler.resources()
