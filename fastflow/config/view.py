"""The resolved configuration of a pipeline as rows of (field, value, source), for `fastflow show`.

Pure data: values are JSON-compatible and spelled as pipeline.json would spell them (memory as
"256m", dates in ISO 8601), so a row can be copied back into the file. The CLI formats them.
Webhook keys are shown as "***": they work like passwords and `show` output gets pasted around.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any, Mapping

from fastflow.config.sizes import spell_size
from fastflow.model import Limits, NotificationTarget, Pipeline, RetryPolicy, RunConfig

FOLDER = "folder"
DEFAULT = "default"
MASK = "***"


def resolved_view(pipeline: Pipeline) -> list[tuple[str, Any, str]]:
    """Every field of `pipeline` in pipeline.json order, its resolved value and where it came from.

    The source is the metadata file (relative to the repository root), ".fastflow/config.yaml",
    "default", or "folder" for what the folder itself decides (name, entry point, requirements).
    """
    src = pipeline.sources

    def row(key: str, value: Any) -> tuple[str, Any, str]:
        return key, value, src.get(key, DEFAULT)

    rows = [
        ("name", pipeline.name, FOLDER),
        ("path", str(pipeline.path), FOLDER),
        ("entry", pipeline.entry, FOLDER),
        ("metadata_file", _opt_path(pipeline.metadata_file), FOLDER),
        ("requirements", _opt_path(pipeline.requirements), FOLDER),
        row("type", pipeline.type.value),
        row("description", pipeline.description),
        row("tags", list(pipeline.tags)),
        row("enabled", pipeline.enabled),
        row("python_version", pipeline.python_version),
    ]
    rows += [row(key, value) for key, value in _limits(pipeline.limits).items()]
    rows += [row("timeout", pipeline.timeout)]
    rows += [row(key, value) for key, value in _retry(pipeline.retry).items()]
    rows += [
        row("cells", dict(pipeline.cells)),
        row("default_env", dict(pipeline.default_env)),
        row("secrets", _secrets(pipeline.secrets)),
        row("schedule_cron", pipeline.schedule.cron),
        row("schedule_interval_seconds", pipeline.schedule.interval_seconds),
        row("schedule_start", _iso(pipeline.schedule.start)),
        row("schedule_end", _iso(pipeline.schedule.end)),
        row("run_once_at", _iso(pipeline.schedule.run_once_at)),
        row("schedules", [_run_config(rc) for rc in pipeline.run_configs]),
        row("max_instances", pipeline.daemon.max_instances),
        row("restart_on_crash", pipeline.daemon.restart_on_crash),
        row("restart_cooldown", pipeline.daemon.restart_cooldown),
        row("restart_interval", pipeline.daemon.restart_interval),
        row("restart_cooldown_max", pipeline.daemon.restart_cooldown_max),
        row("restart_healthy_after", pipeline.daemon.restart_healthy_after),
        row("restart_limit", pipeline.daemon.restart_limit),
        row("restart_limit_window", pipeline.daemon.restart_limit_window),
        row("downstream_triggers", [_trigger(t) for t in pipeline.downstream]),
        row("webhook_key", MASK if pipeline.webhook_key else None),
        row("webhook_secret", list(pipeline.webhook_secret)),
        row("webhook_env", list(pipeline.webhook_env)),
        row("network", pipeline.network.value),
        row("run_on_change", pipeline.run_on_change),
        row("notifications", [_target(t) for t in pipeline.notifications]),
    ]
    return rows


def _target(target: NotificationTarget) -> dict[str, Any]:
    """A notification target as `fastflow show` lists it: where it goes without the URL's
    token (a secret's name, or only the URL's scheme), its events and the file declaring it."""
    to = f"secret {target.secret}" if target.secret else \
        f"{(target.url or '').split('://', 1)[0]}://..."
    return {"name": target.name, "to": to, "events": [e.value for e in target.events],
            "declared_in": target.file}


def _limits(limits: Limits) -> dict[str, Any]:
    return {
        "cpu_hard_limit": limits.cpu_hard_limit,
        "mem_hard_limit": _mem(limits.mem_hard_limit),
        "cpu_soft_limit": limits.cpu_soft_limit,
        "mem_soft_limit": _mem(limits.mem_soft_limit),
    }


def _retry(retry: RetryPolicy) -> dict[str, Any]:
    strategy = retry.to_json()
    strategy.pop("attempts")
    strategy.pop("on_exit_codes", None)
    strategy["type"] = strategy.pop("strategy")
    codes = None if retry.on_exit_codes is None else list(retry.on_exit_codes)
    return {"retry_attempts": retry.attempts, "retry_strategy": strategy, "retry_on_exit_codes": codes}


def _run_config(rc: RunConfig) -> dict[str, Any]:
    data: dict[str, Any] = {"id": rc.id, "enabled": rc.enabled}
    optional = {
        "schedule_cron": rc.cron,
        "schedule_interval_seconds": rc.interval_seconds,
        "schedule_start": _iso(rc.start),
        "schedule_end": _iso(rc.end),
        "default_env": dict(rc.default_env) or None,
        "timeout": rc.timeout,
        "secrets": _secrets(rc.secrets) or None,
        "webhook_key": MASK if rc.webhook_key else None,
    }
    data.update({k: v for k, v in optional.items() if v is not None})
    if rc.limits is not None:
        data.update({k: v for k, v in _limits(rc.limits).items() if v is not None})
    if rc.retry is not None:
        data.update({k: v for k, v in _retry(rc.retry).items() if v is not None})
    return data


def _secrets(secrets: Mapping[str, str]) -> list[str] | dict[str, str]:
    """As pipeline.json spells them: a list when every variable is named like its secret."""
    if all(variable == secret for variable, secret in secrets.items()):
        return list(secrets)
    return dict(secrets)


def _trigger(trigger: Any) -> dict[str, Any]:
    data = {
        "pipeline": trigger.pipeline,
        "on_success": trigger.on_success,
        "on_failure": trigger.on_failure,
        "on_route": list(trigger.on_route),
        "run_config_id": trigger.run_config_id,
    }
    if trigger.inert_reason:
        data["inert_reason"] = trigger.inert_reason
    return data


def _mem(size: int | None) -> str | None:
    return None if size is None else spell_size(size)


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _opt_path(path: Any) -> str | None:
    return None if path is None else str(path)
