"""The domain model: frozen dataclasses and str Enums shared by every layer.

Nothing here does I/O. Configuration files are parsed into these types once (`config`), then
passed down explicitly. Defaults live in `fastflow.defaults`.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Mapping


class RunStatus(str, enum.Enum):
    """The life of a run: queued -> running -> one terminal state (or skipped)."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    OOM_KILLED = "oom_killed"
    CANCELLED = "cancelled"
    LOST = "lost"
    SKIPPED = "skipped"

    @property
    def terminal(self) -> bool:
        return self not in (RunStatus.QUEUED, RunStatus.RUNNING)

    @property
    def retryable(self) -> bool:
        """A terminal outcome that a retry policy may retry (never cancelled, lost or skipped)."""
        return self in (RunStatus.FAILED, RunStatus.TIMED_OUT, RunStatus.OOM_KILLED)


class PipelineType(str, enum.Enum):
    SCRIPT = "script"
    NOTEBOOK = "notebook"


class NetworkMode(str, enum.Enum):
    BRIDGE = "bridge"
    NONE = "none"


class RetryStrategy(str, enum.Enum):
    EXPONENTIAL_BACKOFF = "exponential_backoff"
    FIXED_DELAY = "fixed_delay"
    CUSTOM_SCHEDULE = "custom_schedule"


class TaskWhen(str, enum.Enum):
    """When a flow task runs, judged by how its dependencies ended (docs/flows.md)."""

    SUCCESS = "success"  # every dependency succeeded (the default)
    FAILURE = "failure"  # at least one dependency failed
    ALWAYS = "always"  # once every dependency has ended, however


class NotifyEvent(str, enum.Enum):
    """What a notification target can hear about (docs/notifications.md, "Events")."""

    FAILURE = "failure"  # the first failed outcome after a success
    RECOVERY = "recovery"  # the first success after failures
    EVERY_FAILURE = "every_failure"
    AFTER = "after"  # the Nth consecutive failure (`after: N`)
    MISSED = "missed"  # a schedule slot with no run started within the grace period
    STUCK = "stuck"  # running longer than a limit or k times its median duration
    SOFT_LIMIT = "soft_limit"  # a run went over a soft limit
    GIVEN_UP = "given_up"  # supervision stopped restarting a crashing pipeline
    SCHEDULER_STALE = "scheduler_stale"  # the daemon's own heartbeat stopped


class Severity(str, enum.Enum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True)
class Problem:
    """One finding of validation: where (file, field), what, and how bad."""

    file: str
    field: str
    message: str
    severity: Severity = Severity.ERROR
    pipeline: str | None = None

    def __str__(self) -> str:
        where = f"{self.file}: {self.field}" if self.field else self.file
        return f"{where}: {self.message}"

    def to_json(self) -> dict:
        return {
            "file": self.file,
            "field": self.field,
            "message": self.message,
            "severity": self.severity.value,
            "pipeline": self.pipeline,
        }


@dataclass(frozen=True)
class Limits:
    """Resource limits. Hard limits are enforced; soft limits only produce warnings."""

    cpu_hard_limit: float | None = None
    mem_hard_limit: int | None = None  # bytes
    cpu_soft_limit: float | None = None
    mem_soft_limit: int | None = None  # bytes

    def to_json(self) -> dict:
        return {
            "cpu_hard_limit": self.cpu_hard_limit,
            "mem_hard_limit": self.mem_hard_limit,
            "cpu_soft_limit": self.cpu_soft_limit,
            "mem_soft_limit": self.mem_soft_limit,
        }


@dataclass(frozen=True)
class RetryPolicy:
    """How many times to retry a failed attempt and how long to wait before each retry.

    `attempts` is the number of *retries* (Fast-Flow's `retry_attempts`): a run makes at most
    `attempts + 1` attempts.
    """

    attempts: int = 0
    strategy: RetryStrategy = RetryStrategy.FIXED_DELAY
    initial_delay: float = 1.0
    max_delay: float = 300.0
    multiplier: float = 2.0
    delay: float = 0.0
    delays: tuple[float, ...] = ()
    on_exit_codes: tuple[int, ...] | None = None  # ours: retry only these exit codes

    def wait_before_retry(self, n: int) -> float:
        """Seconds to wait before retry number `n` (1-based)."""
        if n < 1:
            raise ValueError("retry numbers start at 1")
        if self.strategy is RetryStrategy.EXPONENTIAL_BACKOFF:
            try:
                return min(self.initial_delay * self.multiplier ** (n - 1), self.max_delay)
            except OverflowError:  # the 1,025th retry doubling: far past any max_delay
                return self.max_delay
        if self.strategy is RetryStrategy.CUSTOM_SCHEDULE:
            if not self.delays:
                return 0.0
            return self.delays[min(n, len(self.delays)) - 1]
        return self.delay

    def to_json(self) -> dict:
        data: dict = {"attempts": self.attempts, "strategy": self.strategy.value}
        if self.strategy is RetryStrategy.EXPONENTIAL_BACKOFF:
            data.update(
                initial_delay=self.initial_delay, max_delay=self.max_delay, multiplier=self.multiplier
            )
        elif self.strategy is RetryStrategy.FIXED_DELAY:
            data["delay"] = self.delay
        else:
            data["delays"] = list(self.delays)
        if self.on_exit_codes is not None:
            data["on_exit_codes"] = list(self.on_exit_codes)
        return data


@dataclass(frozen=True)
class DownstreamTrigger:
    """Run another pipeline when this one ends (on success, failure, or a route label)."""

    pipeline: str
    on_success: bool = True
    on_failure: bool = False
    on_route: tuple[str, ...] = ()
    run_config_id: str | None = None
    inert_reason: str | None = None  # set when the target does not exist: the trigger never fires


@dataclass(frozen=True)
class RunConfig:
    """A named run configuration (`schedules[]` entry of pipeline.json).

    Fields left as None inherit the pipeline's value.
    """

    id: str
    cron: str | None = None
    interval_seconds: float | None = None
    start: datetime | None = None
    end: datetime | None = None
    enabled: bool = True
    default_env: Mapping[str, str] = field(default_factory=dict)
    limits: Limits | None = None
    timeout: float | None = None
    retry: RetryPolicy | None = None
    webhook_key: str | None = None
    # Variable -> secret name, added over the pipeline's `secrets` for runs of this configuration.
    secrets: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ScheduleSpec:
    """The pipeline-level schedule fields of pipeline.json."""

    cron: str | None = None
    interval_seconds: float | None = None
    start: datetime | None = None
    end: datetime | None = None
    run_once_at: datetime | None = None

    @property
    def empty(self) -> bool:
        return self.cron is None and self.interval_seconds is None and self.run_once_at is None


@dataclass(frozen=True)
class DaemonPolicy:
    """Long-running pipelines: how many instances and how to restart them."""

    max_instances: int = 1
    restart_on_crash: bool = False
    restart_cooldown: float = 60.0  # seconds; defaults.DEFAULT_RESTART_COOLDOWN
    restart_interval: float | str | None = None  # seconds, or a 5-field cron (as in Fast-Flow)
    # Ours (docs/supervision.md); defaults.DEFAULT_RESTART_*
    restart_cooldown_max: float = 3600.0  # the doubled cooldown stops growing here
    restart_healthy_after: float = 600.0  # up this long: the next crash waits the first cooldown
    restart_limit: int = 5  # this many crashes within restart_limit_window: given up
    restart_limit_window: float = 600.0

    @property
    def supervised(self) -> bool:
        """Whether the daemon supervises the pipeline (restarts after a crash or planned)."""
        return self.restart_on_crash or self.restart_interval is not None


@dataclass(frozen=True)
class NotificationTarget:
    """One entry of `notifications:` (config.yaml) or `"notifications"` (pipeline.json): where
    messages go (a URL of the notification library, or the name of a secret holding one), which
    events, and the options of those events (defaults: `fastflow.defaults`, DEFAULT_NOTIFY_*)."""

    name: str  # names it in `fastflow notify test --target` and in delivery records
    url: str | None = None  # written in the file (then it holds no token)
    secret: str | None = None  # or: the secrets-file entry holding the URL
    events: tuple[NotifyEvent, ...] = ()
    after: int = 3  # consecutive failures for the `after` event
    repeat: float | None = None  # seconds: send again while the state lasts; None: never
    stuck_after: float | None = None  # seconds running that count as stuck; None: by the median
    stuck_factor: float = 3.0  # stuck when running longer than this times the median duration
    missed_grace: float = 300.0  # seconds after a slot without a run before it counts as missed
    group_window: float = 30.0  # events within this many seconds go out as one message
    file: str = ""  # the file that declared it
    pipeline: str | None = None  # the pipeline whose pipeline.json declared it (grants its secret)


@dataclass(frozen=True)
class Pipeline:
    """A valid pipeline: its folder, entry point and fully resolved metadata.

    `sources` maps each field name to where its value came from (the metadata file, the
    repository config, or the built-in default), for `fastflow show`.
    """

    name: str
    path: Path
    entry: str
    type: PipelineType
    metadata_file: Path | None
    requirements: Path | None
    description: str = ""
    tags: tuple[str, ...] = ()
    enabled: bool = True
    python_version: str | None = None
    timeout: float = 0.0  # seconds; 0 means no timeout
    retry: RetryPolicy = RetryPolicy()
    limits: Limits = Limits()
    cells: Mapping[str, object] = field(default_factory=dict)
    default_env: Mapping[str, str] = field(default_factory=dict)
    # Variable -> secret name (the list form of pipeline.json names both alike); iterating gives
    # the variable names.
    secrets: Mapping[str, str] = field(default_factory=dict)
    schedule: ScheduleSpec = ScheduleSpec()
    run_configs: tuple[RunConfig, ...] = ()
    daemon: DaemonPolicy = DaemonPolicy()
    downstream: tuple[DownstreamTrigger, ...] = ()
    webhook_key: str | None = None
    # Names of the secrets (in the secrets file, granted to this pipeline) that signed webhooks
    # are checked with; several at once while a secret is rotated.
    webhook_secret: tuple[str, ...] = ()
    # The variables a Fast-Flow-form webhook body `{"env": {...}}` may set.
    webhook_env: tuple[str, ...] = ()
    network: NetworkMode = NetworkMode.BRIDGE
    # Ours: Swarm placement constraints (`node.labels.gpu==true`); other executors ignore them.
    placement: tuple[str, ...] = ()
    run_on_change: bool = False
    # Where this pipeline's events go: config.yaml's targets and its own, or only its own
    # (`"inherit": false`); resolved by config.notifications.
    notifications: tuple[NotificationTarget, ...] = ()
    warnings: tuple[Problem, ...] = ()
    sources: Mapping[str, str] = field(default_factory=dict)

    def run_config(self, run_config_id: str) -> RunConfig:
        for rc in self.run_configs:
            if rc.id == run_config_id:
                return rc
        raise KeyError(run_config_id)


@dataclass(frozen=True)
class InvalidPipeline:
    """A folder that is meant to be a pipeline but cannot be used; `problems` says why."""

    name: str
    path: Path
    problems: tuple[Problem, ...]


@dataclass(frozen=True)
class SwarmSettings:
    """The `swarm:` section of config.yaml (docs/swarm.md), read when `executor: swarm`:
    placement constraints of every run (a pipeline's `placement` adds to them) and how long a
    task may wait for a node before its run fails."""

    placement: tuple[str, ...] = ()
    schedule_timeout: float = 60.0


@dataclass(frozen=True)
class WebhookSettings:
    """The `webhooks:` section of config.yaml (docs/webhooks.md): where `fastflow serve`
    listens for HTTP and the limits it applies (defaults: `fastflow.defaults`, DEFAULT_WEBHOOK_*).
    `listen` None: no HTTP intake at all."""

    listen: str | None  # "HOST:PORT"
    public_url: str | None  # e.g. "https://ci.example.org": status_url becomes absolute
    max_body_bytes: int
    client_rate_per_minute: int
    client_burst: int
    pipeline_rate_per_minute: int
    max_queued_per_pipeline: int
    read_timeout: float  # seconds a connection may stay silent (waitress channel_timeout)
    threads: int
    trusted_proxy: str | None  # the reverse proxy whose X-Forwarded-For names the client


@dataclass(frozen=True)
class RepoConfig:
    """`.fastflow/config.yaml`, validated, with defaults from `fastflow.defaults` filled in."""

    pipelines_dir: str
    branch: str
    results_branch: str
    image: str
    default_python: str | None
    max_concurrent_runs: int
    default_timeout: float
    default_retry_attempts: int
    default_limits: Limits
    log_cap_bytes: int
    keep_runs: int | None
    keep_days: int | None
    ca_bundle: str | None
    secrets_file: str
    grace_period: float
    author_name: str
    author_email: str
    notifications: tuple[NotificationTarget, ...] = ()  # the defaults of every pipeline
    sources: Mapping[str, str] = field(default_factory=dict)
    lease_timeout: float | None = None  # seconds; None: DEFAULT_LEASE_TIMEOUT (config fills it in)
    tmp_size_bytes: int | None = None  # a container's tmpfs /tmp; None: DEFAULT_TMP_SIZE_BYTES
    webhooks: WebhookSettings | None = None  # config always fills it in
    site_url: str | None = None  # where the status site is served: messages link to run pages
    flows_dir: str | None = None  # None: .fastflow/flows and a Featherflow flows/ (docs/flows.md)
    tasks_dir: str | None = None  # None: the tasks folder that goes with each flows folder
    executor: str = "docker"  # "docker" | "swarm" (docs/swarm.md); --local runs on the host
    swarm: SwarmSettings = SwarmSettings()
    flow_workspace_keep: float = 604800.0  # seconds; defaults.DEFAULT_FLOW_WORKSPACE_KEEP


@dataclass(frozen=True)
class FlowTask:
    """One task of a flow: a script of the flow's tasks folder or a pipeline, run as a run.

    `args` and `env` are as written, `${params.NAME}` not yet substituted (`flow.plan` does).
    For a script task the limits, timeout, retry and Python are resolved (config.yaml < the
    flow's top level < the task); for a pipeline task only the keys the task writes itself
    (`overrides`) replace the pipeline's own.
    """

    id: str
    script: str | None = None  # path inside the tasks folder (posix)
    pipeline: str | None = None
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    depends_on: tuple[str, ...] = ()
    when: TaskWhen = TaskWhen.SUCCESS
    requirements: str | None = None  # path inside the tasks folder (posix)
    python_version: str | None = None
    limits: Limits = Limits()
    timeout: float = 0.0
    retry: RetryPolicy = RetryPolicy()
    network: NetworkMode = NetworkMode.BRIDGE
    overrides: frozenset[str] = frozenset()  # keys the task itself sets


@dataclass(frozen=True)
class Flow:
    """A valid flow: a DAG of tasks read from `<flows folder>/<name>.json` (docs/flows.md).

    `file` is the flow file relative to the repository root (what messages name), `path` the
    file on disk, `tasks_dir` the folder its scripts live in. `params` maps each declared
    parameter to its default (None: it must be given).
    """

    name: str
    file: str
    path: Path
    tasks_dir: Path
    tasks: tuple[FlowTask, ...]
    description: str = ""
    version: str | None = None
    max_parallel: int | None = None  # None: only the daemon's max_concurrent_runs bounds it
    requirements: str | None = None  # the flow's requirements for every script task (posix)
    params: Mapping[str, str | None] = field(default_factory=dict)
    warnings: tuple[Problem, ...] = ()
    webhook_key: str | None = None  # POST /api/webhooks/<flow>/<key> starts a flow run

    def task(self, task_id: str) -> FlowTask:
        for task in self.tasks:
            if task.id == task_id:
                return task
        raise KeyError(task_id)


@dataclass(frozen=True)
class InvalidFlow:
    """A flow file that cannot be used; `problems` says why (errors and warnings)."""

    name: str
    file: str
    problems: tuple[Problem, ...]
