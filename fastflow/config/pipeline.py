"""pipeline.json (or `<name>.json`) -> the resolved fields of a `Pipeline`, with every problem.

Pure: the text of the metadata file and the repository config go in; `PipelineMetadata` comes
out, holding the keyword arguments of `Pipeline`, where each value came from, and every error and
warning of the file (all of them, not just the first). `discovery` reads the files and decides
what the folder is. Reference: docs/pipeline-json.md.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any, Mapping

from fastflow import defaults
from fastflow.config.notifications import pipeline_targets
from fastflow.config.sections import retry_policy, timing
from fastflow.config.values import (
    MISSING,
    Fields,
    boolean,
    choice,
    cpu,
    env_mapping,
    hard_memory,
    integer,
    label,
    memory,
    nonempty_text,
    pipeline_type,
    placement_constraint,
    positive_seconds,
    python_version,
    restart_interval,
    seconds,
    secret_requests,
    string_list,
    text,
    timestamp,
    webhook_env_name,
    webhook_key,
    webhook_secret,
)
from fastflow.config.values import (
    name as id_name,
)
from fastflow.config.yamlfile import MAX_DEPTH
from fastflow.errors import Invalid
from fastflow.humanize import show
from fastflow.model import (
    DaemonPolicy,
    DownstreamTrigger,
    Limits,
    NetworkMode,
    PipelineType,
    Problem,
    RepoConfig,
    RetryPolicy,
    RetryStrategy,
    RunConfig,
    ScheduleSpec,
    Severity,
)

DEFAULT = "default"
LIMIT_CHECKS = {
    "cpu_hard_limit": cpu,
    "mem_hard_limit": hard_memory,
    "cpu_soft_limit": cpu,
    "mem_soft_limit": memory,
}
RETRY_KEYS = ("retry_attempts", "retry_strategy", "retry_on_exit_codes")
SCHEDULE_KEYS = (
    "schedule_cron", "schedule_interval_seconds", "schedule_start", "schedule_end", "run_once_at"
)
DAEMON_KEYS = ("max_instances", "restart_on_crash", "restart_cooldown", "restart_interval",
               "restart_cooldown_max", "restart_healthy_after", "restart_limit",
               "restart_limit_window")  # the last four are ours (docs/supervision.md)
PIPELINE_KEYS = (
    "description", "tags", "enabled", "type", "python_version", "cells", *LIMIT_CHECKS, "timeout",
    *RETRY_KEYS, "default_env", "encrypted_env", "secrets", *SCHEDULE_KEYS, "schedules", *DAEMON_KEYS,
    "downstream_triggers", "webhook_key", "webhook_secret", "webhook_env", "network",
    "run_on_change", "notifications", "placement",
)
RUN_CONFIG_TIMING = ("schedule_cron", "schedule_interval_seconds", "schedule_start", "schedule_end")
RUN_CONFIG_KEYS = (
    "id", *RUN_CONFIG_TIMING, "enabled", "default_env", "encrypted_env", "secrets", *LIMIT_CHECKS,
    "timeout", *RETRY_KEYS, "webhook_key",
)
# Keys whose misspelling would leave a schedule inert: an unknown key close to one is an error.
SCHEDULING_KEYS = (*SCHEDULE_KEYS, "schedules", "enabled")
# Our former short names inside schedules[] (and look-alikes): an error naming the real key.
RENAMED = {
    "cron": "schedule_cron",
    "interval": "schedule_interval_seconds",
    "interval_seconds": "schedule_interval_seconds",
    "start": "schedule_start",
    "end": "schedule_end",
}
TRIGGER_KEYS = ("pipeline", "on_success", "on_failure", "on_route", "run_config_id")
CELL_KEYS = ("retry_attempts", "retry_delay")
CELL_LIST_KEYS = ("retries", "delay_seconds")  # Fast-Flow's list form of `cells`
ENCRYPTED_ENV_FIX = (
    "Fast-Flow's Fernet-encrypted values are not read; move them into the secrets file with "
    "`ENCRYPTION_KEY=... fastflow secrets import-fernet` (docs/migrating-from-fastflow.md)"
)


@dataclass(frozen=True)
class PipelineMetadata:
    """The parsed metadata of one pipeline folder.

    `values` are keyword arguments of `Pipeline` (all but name, path, entry, metadata_file,
    requirements, warnings and sources); `sources` maps each pipeline.json key to the file, the
    repository config or "default"; `problems` holds errors and warnings in file order.
    """

    values: Mapping[str, Any] = field(default_factory=dict)
    sources: Mapping[str, str] = field(default_factory=dict)
    problems: tuple[Problem, ...] = ()

    @property
    def type(self) -> PipelineType:
        return self.values.get("type", PipelineType.SCRIPT)

    @property
    def errors(self) -> tuple[Problem, ...]:
        return tuple(p for p in self.problems if p.severity is Severity.ERROR)

    @property
    def warnings(self) -> tuple[Problem, ...]:
        return tuple(p for p in self.problems if p.severity is Severity.WARNING)


def parse_pipeline_metadata(
    text_: str | None, *, name: str, file: str, config: RepoConfig
) -> PipelineMetadata:
    """Parse and validate the metadata of pipeline `name` against the repository `config`.

    `text_` is the content of the metadata file, or None when the folder has none (everything
    then comes from `config` and the defaults). `file` is the file's path relative to the
    repository root, used in every problem. Never raises for bad input.
    """
    problems: list[Problem] = []
    data: Any = {} if text_ is None else load_json(text_, file, name, problems)
    if data is MISSING:
        return PipelineMetadata(problems=tuple(problems))
    if not isinstance(data, dict):
        problems.append(
            Problem(file, "", f"must be a JSON object {{...}}, not {show(data)}", pipeline=name)
        )
        return PipelineMetadata(problems=tuple(problems))
    builder = _Builder(Fields(data, problems, file, pipeline=name), name, file, config)
    values = builder.build()
    return PipelineMetadata(values, builder.sources, tuple(problems))


def load_json(text_: str, file: str, name: str | None, problems: list[Problem]) -> Any:
    """The JSON value of `text_`, or MISSING with the problem recorded (invalid JSON, NaN,
    nesting deeper than MAX_DEPTH); duplicate keys are recorded too (the last one is kept).
    `name` is the pipeline the problems belong to (None for a flow file)."""
    duplicates: list[str] = []

    def pairs(items: list[tuple[str, Any]]) -> dict:
        out: dict = {}
        for key, value in items:
            if key in out and key not in duplicates:
                duplicates.append(key)
            out[key] = value
        return out

    def constant(word: str) -> Any:
        raise ValueError(f"{word} is not a number in JSON")

    try:
        data = json.loads(text_, object_pairs_hook=pairs, parse_constant=constant)
    except json.JSONDecodeError as exc:
        message = f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        problems.append(Problem(file, "", message, pipeline=name))
        return MISSING
    except ValueError as exc:
        problems.append(Problem(file, "", f"invalid JSON: {exc}", pipeline=name))
        return MISSING
    except RecursionError:  # far deeper than MAX_DEPTH: json's parser recurses
        data = MISSING
    if data is MISSING or _too_deep(data):
        message = (f"invalid JSON: nested deeper than {MAX_DEPTH} levels; flatten the lists "
                   "and objects")
        problems.append(Problem(file, "", message, pipeline=name))
        return MISSING
    for key in duplicates:
        message = f'duplicate key "{key}"; JSON keys must be unique, keep only one'
        problems.append(Problem(file, "", message, pipeline=name))
    return data


class _Builder:
    """Reads one pipeline.json mapping into Pipeline keyword arguments and sources."""

    def __init__(self, fields: Fields, name: str, file: str, config: RepoConfig) -> None:
        self.f = fields
        self.name = name
        self.file = file
        self.config = config
        self.sources: dict[str, str] = {}

    def from_config(self, config_key: str) -> str:
        return self.config.sources.get(config_key, DEFAULT)

    def take(self, key: str, check: Any, default: Any, nullable: bool = False, origin: str = DEFAULT) -> Any:
        value = self.f.get(key, check, nullable=nullable)
        self.sources[key] = origin if value is MISSING else self.file
        return default if value is MISSING else value

    def build(self) -> dict[str, Any]:
        f = self.f
        f.warn_unknown(PIPELINE_KEYS, _refuse_top_level)
        check_encrypted_env(f)
        values: dict[str, Any] = {
            "description": self.take("description", text, ""),
            "tags": self.take("tags", string_list(), ()),
            "enabled": self.take("enabled", boolean, True),
            "type": PipelineType(self.take("type", pipeline_type, "script")),
            "python_version": self.take(
                "python_version", python_version, self.config.default_python, True,
                self.from_config("default_python"),
            ),
            "timeout": self.take(
                "timeout", seconds, self.config.default_timeout, False,
                self.from_config("default_timeout"),
            ),
            "default_env": self.take("default_env", env_mapping, {}),
            "secrets": self.take("secrets", secret_requests, {}),
            "webhook_key": self.take("webhook_key", webhook_key, None, True),
            "webhook_secret": self.take("webhook_secret", webhook_secret, (), True) or (),
            "webhook_env": self.take("webhook_env", string_list(webhook_env_name), ()),
            "network": NetworkMode(
                self.take("network", choice(n.value for n in NetworkMode), defaults.DEFAULT_NETWORK)
            ),
            "run_on_change": self.take("run_on_change", boolean, False),
            "placement": self.take("placement", string_list(placement_constraint), ()),
        }
        values["cells"] = self.cells(values["type"])
        values["limits"] = self.limits()
        values["retry"] = self.retry()
        values["schedule"] = self.schedule()
        values["daemon"] = self.daemon()
        values["run_configs"] = self.run_configs(values["limits"], values["retry"])
        values["schedule"] = self.unused_schedule(values["schedule"])
        values["downstream"] = self.downstream()
        values["notifications"] = pipeline_targets(f, self.config.notifications, self.name)
        self.sources["notifications"] = self.file if f.has("notifications") else \
            self.from_config("notifications")
        self.check_webhook_keys(values)
        self.check_webhook_env(values)
        return values

    # -- sections ---------------------------------------------------------------------------

    def limits(self) -> Limits:
        base = self.config.default_limits
        out: dict[str, Any] = {}
        for key, check in LIMIT_CHECKS.items():
            origin = self.from_config(f"default_limits.{key}")
            out[key] = self.take(key, check, getattr(base, key), True, origin)
        limits = Limits(**out)
        check_soft_limits(self.f, limits)
        return limits

    def retry(self) -> RetryPolicy:
        # As in Fast-Flow: retries without a retry_strategy wait a fixed 60 s before each retry.
        base = RetryPolicy(attempts=self.config.default_retry_attempts,
                           strategy=RetryStrategy.FIXED_DELAY, delay=defaults.DEFAULT_RETRY_DELAY)
        policy = retry_policy(self.f, base)
        self.sources["retry_attempts"] = (
            self.file if self.f.has("retry_attempts") else self.from_config("default_retry_attempts")
        )
        for key in ("retry_strategy", "retry_on_exit_codes"):
            self.sources[key] = self.file if self.f.has(key) else DEFAULT
        return policy

    def schedule(self) -> ScheduleSpec:
        cron, interval, start, end = timing(
            self.f, "schedule_cron", "schedule_interval_seconds", "schedule_start", "schedule_end"
        )
        once = self.f.get("run_once_at", timestamp, nullable=True)
        for key in SCHEDULE_KEYS:
            self.sources[key] = self.file if self.f.has(key) else DEFAULT
        return ScheduleSpec(
            cron=cron, interval_seconds=interval, start=start, end=end,
            run_once_at=None if once is MISSING else once,
        )

    def unused_schedule(self, spec: ScheduleSpec) -> ScheduleSpec:
        """As in Fast-Flow: with a non-empty schedules[] only its entries are scheduled, and the
        top-level schedule_cron / schedule_interval_seconds (and their window) are not used."""
        items = self.f.data.get("schedules")
        if not (isinstance(items, list) and items):
            return spec
        for key in ("schedule_cron", "schedule_interval_seconds"):
            if self.f.data.get(key) is not None:
                self.f.warn(key, "is not used because schedules[] is not empty: only its entries "
                            "are scheduled (as in Fast-Flow); move this schedule into a "
                            "schedules[] entry or remove it")
        return replace(spec, cron=None, interval_seconds=None, start=None, end=None)

    def daemon(self) -> DaemonPolicy:
        policy = DaemonPolicy(
            max_instances=self.take("max_instances", integer(1), 1),
            restart_on_crash=self.take("restart_on_crash", boolean, False),
            restart_cooldown=self.take("restart_cooldown", seconds, defaults.DEFAULT_RESTART_COOLDOWN),
            restart_interval=self.take("restart_interval", restart_interval, None, True),
            restart_cooldown_max=self.take("restart_cooldown_max", seconds,
                                           defaults.DEFAULT_RESTART_COOLDOWN_MAX),
            restart_healthy_after=self.take("restart_healthy_after", seconds,
                                            defaults.DEFAULT_RESTART_HEALTHY_AFTER),
            restart_limit=self.take("restart_limit", integer(1), defaults.DEFAULT_RESTART_LIMIT),
            restart_limit_window=self.take("restart_limit_window", positive_seconds,
                                           defaults.DEFAULT_RESTART_LIMIT_WINDOW),
        )
        self.check_supervision(policy)
        return policy

    def check_supervision(self, policy: DaemonPolicy) -> None:
        """Our supervision fields: the cap is at least the cooldown, and they need
        `restart_on_crash` to mean anything (a warning, as an unused schedule field)."""
        if self.f.has("restart_cooldown_max") and policy.restart_cooldown_max < policy.restart_cooldown:
            self.f.error("restart_cooldown_max",
                         f"{policy.restart_cooldown_max:g} is below restart_cooldown "
                         f"({policy.restart_cooldown:g}); use a cap of at least "
                         f"{policy.restart_cooldown:g} or lower restart_cooldown")
        if policy.restart_on_crash:
            return
        for key in ("restart_cooldown_max", "restart_healthy_after", "restart_limit",
                    "restart_limit_window"):
            if self.f.has(key):
                self.f.warn(key, 'has no effect without "restart_on_crash": true; add it or '
                            "remove this field")

    def cells(self, kind: PipelineType) -> dict[str, dict[str, Any]]:
        data = self.f.get("cells", _cells)
        self.sources["cells"] = DEFAULT if data is MISSING else self.file
        if data is MISSING:
            return {}
        if kind is not PipelineType.NOTEBOOK:
            self.f.warn("cells", 'only notebook pipelines have cells ("type": "notebook"); ignored')
        section = self.f.child(data, "cells")
        if isinstance(data, list):
            return cell_list(section, data)
        out: dict[str, dict[str, Any]] = {}
        for key, entry in data.items():
            if not isinstance(entry, dict):
                section.error(
                    key, f'{show(entry)} is not an object; write {{"retry_attempts": 2, "retry_delay": 5}}'
                )
                continue
            cell = section.child(entry, key)
            cell.warn_unknown(CELL_KEYS)
            attempts = cell.get("retry_attempts", integer(0))
            delay = cell.get("retry_delay", seconds)
            out[key] = {
                "retry_attempts": 0 if attempts is MISSING else attempts,
                "retry_delay": 0.0 if delay is MISSING else delay,
            }
        return out

    def run_configs(self, limits: Limits, retry: RetryPolicy) -> tuple[RunConfig, ...]:
        items = self.f.get("schedules", _list)
        self.sources["schedules"] = DEFAULT if items is MISSING else self.file
        if items is MISSING:
            return ()
        seen: dict[str, int] = {}
        configs: list[RunConfig] = []
        for index, item in enumerate(items):
            if not isinstance(item, dict):
                self.f.child(items, "schedules").error(
                    index, f'{show(item)} is not an object; write {{"id": "nightly", '
                    '"schedule_cron": "0 3 * * *"}'
                )
                continue
            sub = self.f.child(items, "schedules").entry(item, index, label(item, "id"))
            rc = run_config(sub, limits, retry)
            if rc is None:
                continue
            if rc.id in seen:
                sub.error("id", f'"{rc.id}" is already the id of schedules[{seen[rc.id]}]; ids must '
                          "be unique")
                continue
            seen[rc.id] = index
            configs.append(rc)
        return tuple(configs)

    def downstream(self) -> tuple[DownstreamTrigger, ...]:
        items = self.f.get("downstream_triggers", _list)
        self.sources["downstream_triggers"] = DEFAULT if items is MISSING else self.file
        if items is MISSING:
            return ()
        triggers = []
        for index, item in enumerate(items):
            base = self.f.child(items, "downstream_triggers")
            if not isinstance(item, dict):
                base.error(index, f'{show(item)} is not an object; write {{"pipeline": "other"}}')
                continue
            trigger = downstream_trigger(base.child(item, index), self.name)
            if trigger is not None:
                triggers.append(trigger)
        return tuple(triggers)

    def check_webhook_keys(self, values: dict[str, Any]) -> None:
        owners: dict[str, str] = {}
        if values["webhook_key"]:
            owners[values["webhook_key"]] = "webhook_key"
        schedules = self.f.data.get("schedules")
        for index, rc in enumerate(values["run_configs"]):
            if rc.webhook_key is None:
                continue
            where = _run_config_path(schedules, rc.id, index)
            if rc.webhook_key in owners:
                self.f.error(
                    f"{where}.webhook_key",
                    f"is the same webhook key as {owners[rc.webhook_key]}; every run configuration "
                    "needs its own key",
                )
            else:
                owners[rc.webhook_key] = f"{where}.webhook_key"


    def check_webhook_env(self, values: dict[str, Any]) -> None:
        """A webhook may never set a variable that carries a secret of this pipeline."""
        secret_vars = set(values["secrets"]).union(*(rc.secrets for rc in values["run_configs"]))
        for variable in values["webhook_env"]:
            if variable in secret_vars:
                self.f.error("webhook_env", f'"{variable}" is a secret of this pipeline '
                             "(secrets); a webhook may not set it, remove it from the list")


def cell_list(f: Fields, items: list) -> dict[str, dict[str, Any]]:
    """Fast-Flow's list form of `cells`: entry i is for the i-th code cell (markdown not
    counted), `{"retries": n, "delay_seconds": s}`; resolved to our keys `code:<i>`."""
    out: dict[str, dict[str, Any]] = {}
    for index, entry in enumerate(items):
        if not isinstance(entry, dict):
            f.error(index, f'{show(entry)} is not an object; write {{"retries": 2, "delay_seconds": 1}}')
            continue
        cell = f.child(entry, index)
        cell.warn_unknown(CELL_LIST_KEYS)
        retries = cell.get("retries", integer(0))
        delay = cell.get("delay_seconds", seconds)
        out[f"code:{index}"] = {
            "retry_attempts": 0 if retries is MISSING else retries,
            "retry_delay": defaults.DEFAULT_CELL_RETRY_DELAY if delay is MISSING else delay,
        }
    return out


def run_config(f: Fields, limits: Limits, retry: RetryPolicy) -> RunConfig | None:
    """One `schedules[]` entry; limits and retries given here override the pipeline's, field by field."""
    f.warn_unknown(RUN_CONFIG_KEYS, _refuse_in_run_config)
    check_encrypted_env(f)
    rc_id = f.get("id", id_name)
    if not f.has("id"):
        f.error("id", 'is missing; every run configuration needs a unique id such as "nightly"')
    cron, interval, start, end = timing(f, *RUN_CONFIG_TIMING)
    enabled = f.get("enabled", boolean)
    env = f.get("default_env", env_mapping)
    secrets = f.get("secrets", secret_requests)
    timeout = f.get("timeout", seconds)
    hook = f.get("webhook_key", webhook_key, nullable=True)
    rc_limits = None
    if any(f.has(key) for key in LIMIT_CHECKS):
        own = {key: f.get(key, check, nullable=True) for key, check in LIMIT_CHECKS.items()}
        rc_limits = replace(limits, **{k: v for k, v in own.items() if v is not MISSING})
        check_soft_limits(f, rc_limits)
    rc_retry = retry_policy(f, retry) if any(f.has(key) for key in RETRY_KEYS) else None
    if rc_id is MISSING:
        return None
    return RunConfig(
        id=rc_id, cron=cron, interval_seconds=interval, start=start, end=end,
        enabled=True if enabled is MISSING else enabled,
        default_env={} if env is MISSING else env,
        limits=rc_limits, timeout=None if timeout is MISSING else timeout,
        retry=rc_retry, webhook_key=None if hook is MISSING else hook,
        secrets={} if secrets is MISSING else secrets,
    )


def check_encrypted_env(f: Fields) -> None:
    """Fast-Flow's `encrypted_env` (Fernet tokens) is refused, naming the import that moves it
    into the secrets file; its values are never echoed. An empty one only warns."""
    if not f.has("encrypted_env"):
        return
    if f.data["encrypted_env"] in (None, {}):
        f.warn("encrypted_env", "is empty and ignored; remove it (secrets come from the secrets "
               "file, see docs/secrets.md)")
    else:
        f.error("encrypted_env", ENCRYPTED_ENV_FIX)


def downstream_trigger(f: Fields, own_name: str) -> DownstreamTrigger | None:
    """One `downstream_triggers[]` entry; naming the pipeline itself is an error."""
    f.warn_unknown(TRIGGER_KEYS)
    target = f.get("pipeline", nonempty_text)
    if not f.has("pipeline"):
        f.error("pipeline", 'is missing; name the pipeline to run, e.g. {"pipeline": "report"}')
    elif target == own_name:
        f.error("pipeline", f'"{own_name}" is this pipeline itself; a pipeline cannot trigger itself')
        target = MISSING
    on_success = f.get("on_success", boolean)
    on_failure = f.get("on_failure", boolean)
    on_route = f.get("on_route", _routes, nullable=True)
    rc_id = f.get("run_config_id", id_name, nullable=True)
    trigger = DownstreamTrigger(
        pipeline="" if target is MISSING else target,
        on_success=True if on_success is MISSING else on_success,
        on_failure=False if on_failure is MISSING else on_failure,
        on_route=() if on_route in (MISSING, None) else on_route,
        run_config_id=None if rc_id is MISSING else rc_id,
    )
    if not (trigger.on_success or trigger.on_failure or trigger.on_route):
        f.warn(None, "never fires: on_success and on_failure are false and on_route is empty; "
               "set on_success or on_failure to true, or name a route in on_route")
    return None if target is MISSING else trigger


def check_soft_limits(f: Fields, limits: Limits) -> None:
    """Warn when a soft limit is above its hard limit: it could never be reached."""
    for kind in ("cpu", "mem"):
        soft = getattr(limits, f"{kind}_soft_limit")
        hard = getattr(limits, f"{kind}_hard_limit")
        if soft is not None and hard is not None and soft > hard:
            f.warn(
                f"{kind}_soft_limit",
                f"is above {kind}_hard_limit, so it can never be reached; lower it or remove it",
            )


def _routes(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return (nonempty_text(value),)
    if isinstance(value, list):
        return string_list()(value)
    raise Invalid(f'{show(value)} is not a route label or a list of labels; write "publish" or ["a", "b"]')


def _too_deep(data: Any) -> bool:
    """Whether lists and objects nest deeper than MAX_DEPTH (walked without recursion)."""
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, (dict, list)):
            if depth > MAX_DEPTH:
                return True
            items = value.values() if isinstance(value, dict) else value
            stack.extend((item, depth + 1) for item in items)
    return False


def _cells(value: Any) -> list | dict:
    if not isinstance(value, (list, dict)):
        raise Invalid(f'{show(value)} is not a list or an object; write one entry per code cell, '
                      '[{"retries": 2, "delay_seconds": 1}], or {"fetch": {"retry_attempts": 2}}')
    return value


def _list(value: Any) -> list:
    if not isinstance(value, list):
        raise Invalid(f"{show(value)} is not a list; write [...]")
    return value


def _run_config_path(schedules: Any, rc_id: str, fallback: int) -> str:
    index = fallback
    if isinstance(schedules, list):
        found = [i for i, item in enumerate(schedules) if isinstance(item, dict) and item.get("id") == rc_id]
        index = found[0] if found else fallback
    return run_config_field(index, rc_id)


def run_config_field(index: int, rc_id: str) -> str:
    """How messages name run configuration `index`: by position and id, `schedules[3] (id "nightly")`."""
    return f'schedules[{index}] ({label({"id": rc_id}, "id")})'


def _refuse_in_run_config(key: str, close: str | None) -> str:
    """Every unknown key of a schedules[] entry is an error: it would be a setting silently lost."""
    if key in RENAMED:
        return (f'write "{RENAMED[key]}" instead: schedules[] entries spell their keys as the top '
                "level does (as in Fast-Flow)")
    hint = f'; did you mean "{close}"?' if close else ""
    return f"unknown key of a run configuration; fix its name or remove it{hint}"


def _refuse_top_level(key: str, close: str | None) -> str | None:
    """An unknown top-level key that looks like a schedule key is an error; others only warn."""
    if key in RENAMED:
        return f'write "{RENAMED[key]}" instead: pipeline.json spells it so (as in Fast-Flow)'
    if close in SCHEDULING_KEYS:
        return (f'unknown key; did you mean "{close}"? A misspelled schedule key would leave the '
                "pipeline unscheduled: fix its name or remove it")
    return None
