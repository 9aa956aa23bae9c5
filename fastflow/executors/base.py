"""The executor contract: run one attempt of a pipeline and report how it ended; pre-heat.

An executor is given an `AttemptSpec` (everything about the attempt, already resolved: the env
with its precedence applied, limits, timeout), an `OutputSink` that receives the live output
line by line with the stream kept, and a `threading.Event` that asks it to cancel. It returns an
`AttemptResult`. It never retries (the runner does) and never raises for an outcome of the
pipeline itself: a non-zero exit, a timeout, an OOM kill or a cancel are results, not errors.
`ExecutorError` is raised only when the executor itself cannot work (no engine, no uv).

Contract, shared by every backend (tests/test_executor_contract.py runs it against each):
- exit 0 -> `succeeded`; any other exit -> `failed` with the exit code.
- `spec.timeout > 0`: when it expires, SIGTERM, then SIGKILL after `spec.grace_period`;
  status `timed_out` whatever the exit code.
- `cancel` set: the attempt's whole process tree is stopped the same way; status `cancelled`.
- `oom_killed` only when the kernel/engine reports an OOM kill.
- every line written before the process ends reaches the sink, the last one too, even without a
  trailing newline.
- `FASTFLOW_ROUTE_FILE` is set to a writable file; what the pipeline writes there (stripped)
  is `AttemptResult.route`.
- `spec.webhook_payload` (a webhook run): `FASTFLOW_WEBHOOK_PAYLOAD` is the path, as the
  attempt sees it, of that file's content, which the attempt can read and not change (in a
  container a read-only bind mount of a copy at `CONTAINER_WEBHOOK_PAYLOAD`); otherwise unset.

Pre-heat (`preheat`): prepare a pipeline's requirements before its runs need them, where that
backend's runs will find them: uv's own cache on the host (`LocalExecutor`), the shared cache
filled by a trusted container (`DockerExecutor`). The daemon pre-heats through the executor it
runs with, so the two can never disagree about where packages live.
- an install that fails is an outcome, not an error: `ok=False` and a message that is uv's
  reason naming the pipeline and the requirements file (`preheat_failure`, the one wording).
- a backend that remembers what it pre-heated (Docker's markers, keyed by the requirements
  text, the Python version and the image) answers a repeat at once: "already pre-heated".
- `ExecutorError` only when no pre-heat can run: no requirements file, no uv, no engine or
  no runner image.

Re-attaching (optional, `reattach`): a backend whose attempts outlive the process that started
them (Docker containers) can hand a later process the attempt a dead one left behind, running
or finished, and supervise it to the same verdict `execute` would have given. Backends that
cannot (host processes die with their parent's process group) return None: the run is `lost`.
"""
from __future__ import annotations

import abc
import threading
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable, Mapping, Protocol

from fastflow.defaults import DEFAULT_LOG_CAP_BYTES, FLOW_TMP_DIR_ENV
from fastflow.errors import ExecutorError
from fastflow.humanize import show
from fastflow.model import Limits, NetworkMode, PipelineType, RunStatus
from fastflow.record import Environment, ErrorInfo, Resources

Clock = Callable[[], datetime]

STDOUT = "stdout"
STDERR = "stderr"
RUNNER = "runner"  # the stream of lines written by Fast-Flow itself (notes, uv failures)

# Where the notebook runner script lives inside the package; executors make it reachable.
NOTEBOOK_RUNNER = Path(__file__).resolve().parent / "notebook.py"

WEBHOOK_PAYLOAD_ENV = "FASTFLOW_WEBHOOK_PAYLOAD"  # the body of a webhook run's request
CONTAINER_WEBHOOK_PAYLOAD = "/run/fastflow/webhook/payload"  # where a container finds it

# A flow's task (docs/flows.md, "Workspace and outputs"): the flow run's workspace, the one
# writable mount of its containers, at this path in a container (the host path on the host).
CONTAINER_WORKSPACE = "/workspace"
WORKSPACE_ENV = "FASTFLOW_WORKSPACE"
WORKSPACE_TMP_ENV = FLOW_TMP_DIR_ENV  # Featherflow's name for the shared folder
OUTPUT_ENV = "FASTFLOW_OUTPUT"  # the file a task may write its output (a JSON object) to
OUTPUTS_DIR = ".fastflow/outputs"  # inside the workspace: one output file per attempt


@dataclass(frozen=True)
class PreheatJob:
    """What to pre-heat: a pipeline's folder (an immutable snapshot) and its requirements."""

    pipeline: str
    workdir: Path
    requirements: str  # file name inside workdir
    python_version: str | None


@dataclass(frozen=True)
class PreheatOutcome:
    """How a pre-heat ended: `ok`, a message for people (uv's reason when not ok), the cache key."""

    ok: bool
    message: str  # uv's reason when not ok; a short note otherwise
    key: str | None = None
    duration_s: float | None = None


PreheatFunction = Callable[[PreheatJob], PreheatOutcome]

# How long one pre-heat may install before it is stopped and reported failed (every backend).
DEFAULT_PREHEAT_TIMEOUT = 900.0


def preheat_failure(job: PreheatJob, output: str) -> str:
    """The message of a failed pre-heat, whichever backend ran uv: uv's reason (its first
    `error:` line and what follows, else the last lines of `output`), naming the pipeline and
    the requirements file."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [i for i, line in enumerate(lines) if line.startswith("error:")]
    reason = " ".join(lines[errors[0]:][:8]) if errors else " ".join(lines[-5:])
    return (f"uv could not install the requirements of pipeline {job.pipeline!r} from "
            f"{job.requirements}: {reason or 'no output'}")


# pip options that choose where packages come from: uv ignores them in a requirements file (with
# a warning), so a package of the same name would come from the default index instead.
_INDEX_OPTIONS = ("--index-url", "--extra-index-url", "--find-links", "--index", "--default-index",
                  "--no-index", "--trusted-host", "-i", "-f")


def with_uv_warnings(note: str, output: str) -> str:
    """A successful pre-heat's `note` followed by uv's `warning:` lines (never swallowed)."""
    warnings = [line.strip() for line in output.splitlines() if line.strip().startswith("warning:")]
    return "; ".join([note, *warnings[:5]])


def requirements_problem(job: PreheatJob) -> str | None:
    """Why the pipeline's requirements file cannot be pre-heated as written, or None: it is not
    UTF-8 text, or a line sets a package index (refused: dependency confusion)."""
    name = f"requirements file {job.requirements} of pipeline {job.pipeline!r}"
    try:
        raw = (job.workdir / job.requirements).read_bytes()
    except OSError:
        return None  # a missing file has its own error (missing_requirements)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return (f"{name} is not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}); "
                "save it as UTF-8")
    for number, line in enumerate(text.splitlines(), 1):
        word = line.strip().split("=", 1)[0].split(None, 1)[0] if line.strip() else ""
        if word in _INDEX_OPTIONS or (word[:2] in ("-i", "-f") and not word.startswith("--")):
            return (f"{name}: line {number}: {show(line.strip())} sets a package index, which "
                    "is refused there (uv would not honour it, and a package of the same name "
                    "could come from the default index); remove the line")
    return None


def missing_requirements(workdir: Path, requirements: str) -> ExecutorError:
    """The error of a pre-heat whose requirements file is not there (every backend's words)."""
    return ExecutorError(f"{workdir / requirements} does not exist; nothing to pre-heat")


@dataclass(frozen=True)
class OutputLine:
    """One line of output (without its newline), the stream it came on, and when. A line of
    Fast-Flow's own (stream `runner`) may carry `event`: a soft-limit excursion as it starts
    (`soft_limit_line`), which the daemon hands to notifications while the run goes on."""

    stream: str
    text: str
    at: datetime
    event: Mapping[str, object] | None = None


def soft_limit_line(event: Mapping[str, object], at: datetime) -> OutputLine:
    """The runner line telling that an attempt went over a soft limit (`event`: {t, kind, value,
    limit} as in `Resources.soft_limit_events`), carrying the event. The run goes on."""
    kind, value, limit = event.get("kind"), event.get("value"), event.get("limit")
    if kind == "memory" and isinstance(value, (int, float)) and isinstance(limit, (int, float)):
        shown = f"{value / 1024**2:.0f} MiB over the soft limit {limit / 1024**2:.0f} MiB"
    else:
        shown = f"{value} cores over the soft limit {limit}"
    return OutputLine(RUNNER, f"soft limit: {kind} {shown}, {event.get('t')} s into the "
                      "attempt (a warning: the run goes on)", at, dict(event))


class OutputSink(Protocol):
    def __call__(self, line: OutputLine) -> None: ...


@dataclass(frozen=True)
class AttemptSpec:
    """Everything one attempt needs, fully resolved by the runner."""

    run_id: str
    pipeline: str
    attempt: int
    workdir: Path  # the pipeline folder on the host
    entry: str  # main.py or main.ipynb
    type: PipelineType
    python_version: str | None
    requirements: str | None  # file name inside workdir, or None
    env: Mapping[str, str]  # the pipeline's environment, precedence applied
    limits: Limits = Limits()
    timeout: float = 0.0  # seconds, 0 = none
    grace_period: float = 10.0
    network: NetworkMode = NetworkMode.BRIDGE
    cells: Mapping[str, object] = field(default_factory=dict)
    # The run's log cap: a backend that keeps its own copy of the output (Docker's json-file
    # log, read back on re-attach) bounds that copy from it.
    log_cap_bytes: int = DEFAULT_LOG_CAP_BYTES
    # Keep what the attempt leaves (a container and its outcome) until `release(spec)`: the
    # caller first writes the outcome where a successor finds it (the live log), so a kill -9
    # between the end and the record never loses the outcome. False: cleaned up at once.
    hold: bool = False
    # A webhook run: the host file holding its request's body (`WEBHOOK_PAYLOAD_ENV`).
    webhook_payload: Path | None = None
    # Where a cluster backend may place the attempt (Swarm constraints such as
    # `node.labels.gpu==true`, from pipeline.json's `placement`); single-host backends ignore it.
    placement: tuple[str, ...] = ()
    # Arguments after the entry (a flow task's `args`), passed as they are.
    args: tuple[str, ...] = ()
    # A flow's task: the host folder of its flow run's workspace, mounted read-write
    # (`workspace_env`); None for a pipeline's run.
    workspace: Path | None = None


@dataclass(frozen=True)
class AttemptResult:
    status: RunStatus
    exit_code: int | None
    started_at: datetime
    finished_at: datetime
    error: ErrorInfo | None = None
    route: str | None = None
    resources: Resources = Resources()
    environment: Environment = Environment()


@dataclass(frozen=True)
class ReattachedAttempt:
    """What `Executor.reattach` found and supervised: the attempt number and how it ended."""

    attempt: int
    result: AttemptResult


# Per attempt number: how many stdout and stderr lines the dead owner already delivered, so a
# re-attach hands over only the rest ({} when nothing is known: everything is handed over).
Delivered = Callable[[int], Mapping[str, int]]


class Executor(abc.ABC):
    """Runs one attempt and pre-heats requirements. Subclasses: `LocalExecutor` (host
    processes), `DockerExecutor` (containers)."""

    name: str = "base"
    can_reattach: bool = False  # True when `reattach` can find attempts a dead process left

    @abc.abstractmethod
    def execute(
        self, spec: AttemptSpec, sink: OutputSink, cancel: threading.Event
    ) -> AttemptResult:
        """Run the attempt to its end and return how it ended (see the module contract)."""

    @abc.abstractmethod
    def preheat(self, job: PreheatJob) -> PreheatOutcome:
        """Install `job`'s requirements where this backend's runs will look for them, and say
        how it went (see the module contract: a failed install is `ok=False` with uv's reason;
        `ExecutorError` only when no pre-heat can run)."""

    def reattach(self, run_id: str, sink: OutputSink, cancel: threading.Event,
                 delivered: Delivered = lambda attempt: {}) -> ReattachedAttempt | None:
        """Supervise the attempt of `run_id` that a previous (dead) process left behind, to its
        end, with the verdict `execute` would give; None when nothing of it is left (the run
        is then `lost`). The output not yet `delivered` goes to `sink`; `delivered(attempt)`
        is asked before the first line is handed over, so a caller may read what it already
        holds of that attempt first. Default: None."""
        return None

    def release(self, spec: AttemptSpec) -> None:
        """Clean up what a `hold` attempt left, now that its outcome is written down elsewhere
        (idempotent; a re-attach finds a held attempt like any other). Default: nothing."""


def uv_command(spec: AttemptSpec, notebook_runner: str, uv: str = "uv") -> list[str]:
    """The `uv run` command line for an attempt, identical on the host and in a container.

    `notebook_runner` is the path of `fastflow/executors/notebook.py` as seen by the process (it
    differs between the host and a container).
    """
    cmd = [uv, "run", "--no-project"]
    if spec.python_version:
        cmd += ["--python", spec.python_version]
    if spec.requirements:
        cmd += ["--with-requirements", spec.requirements]
    if spec.type is PipelineType.NOTEBOOK:
        cmd += [notebook_runner, spec.entry]
    else:
        cmd += [spec.entry, *spec.args]
    return cmd


def output_name(run_id: str, attempt: int) -> str:
    """Where attempt `attempt` of flow task run `run_id` writes its output, relative to the
    workspace: one file per attempt, so a failed attempt's output never passes for a later
    one's."""
    return f"{OUTPUTS_DIR}/{run_id}.{attempt}.json"


def workspace_env(spec: AttemptSpec, root: str) -> dict[str, str]:
    """The variables of a flow task's workspace, `root` being the workspace as the attempt
    sees it: `FASTFLOW_WORKSPACE` and `TMP_DIR` (the folder), `FASTFLOW_OUTPUT` (its output
    file); empty for a pipeline's run."""
    if spec.workspace is None:
        return {}
    return {WORKSPACE_ENV: root, WORKSPACE_TMP_ENV: root,
            OUTPUT_ENV: f"{root.rstrip('/')}/{output_name(spec.run_id, spec.attempt)}"}


def read_route(path: Path) -> str | None:
    """The label a pipeline wrote to its route file, or None when it wrote none."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip()
    except FileNotFoundError:
        return None
    return text.splitlines()[-1].strip() if text else None
