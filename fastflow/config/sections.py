"""Groups of keys that pipeline.json uses twice: at the top level and in each `schedules[]` entry.

`timing` reads cron / interval / start / end, `retry_policy` reads retry_attempts,
retry_strategy and retry_on_exit_codes. Both record problems through `Fields`.
"""
from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any

from fastflow import defaults
from fastflow.config.values import (
    MAX_SECONDS,
    MISSING,
    Fields,
    choice,
    cron,
    integer,
    is_number,
    positive_number,
    positive_seconds,
    seconds,
    timestamp,
)
from fastflow.errors import Invalid
from fastflow.humanize import show
from fastflow.model import RetryPolicy, RetryStrategy

MAX_MULTIPLIER = 100  # of exponential backoff; max_delay (<= 100 years) caps the waits anyway
STRATEGY_NAMES = tuple(s.value for s in RetryStrategy)
STRATEGY_KEYS = {
    RetryStrategy.EXPONENTIAL_BACKOFF: ("type", "initial_delay", "max_delay", "multiplier"),
    RetryStrategy.FIXED_DELAY: ("type", "delay"),
    RetryStrategy.CUSTOM_SCHEDULE: ("type", "delays"),
}
EXAMPLES = {
    RetryStrategy.FIXED_DELAY: '{"type": "fixed_delay", "delay": 60}',
    RetryStrategy.CUSTOM_SCHEDULE: '{"type": "custom_schedule", "delays": [10, 60, 300]}',
}


def timing(
    f: Fields, cron_key: str, interval_key: str, start_key: str, end_key: str
) -> tuple[str | None, float | None, datetime | None, datetime | None]:
    """Cron or interval, and the window they run in; None for what is not set (or invalid)."""
    values = [
        f.get(cron_key, cron, nullable=True),
        f.get(interval_key, positive_seconds, nullable=True),
        f.get(start_key, timestamp, nullable=True),
        f.get(end_key, timestamp, nullable=True),
    ]
    expr, interval, start, end = (None if v is MISSING else v for v in values)
    if expr is not None and interval is not None:
        f.error(interval_key, f"cannot be combined with {cron_key}; choose one of them")
    if start is not None and end is not None and end <= start:
        f.error(
            end_key,
            f"{show(f.data[end_key])} is not after {start_key} {show(f.data[start_key])}; "
            "the window would be empty",
        )
    if expr is None and interval is None:
        for key in (start_key, end_key):
            if f.data.get(key) is not None:
                f.warn(key, f"has no effect without {cron_key} or {interval_key}")
    return expr, interval, start, end


def retry_policy(f: Fields, base: RetryPolicy) -> RetryPolicy:
    """`base` with the retry keys of this mapping applied."""
    changes: dict[str, Any] = {}
    attempts = f.get("retry_attempts", integer(0))
    if attempts is not MISSING:
        changes["attempts"] = attempts
    strategy = _strategy(f)
    if strategy is not MISSING:
        changes.update(strategy)
    codes = f.get("retry_on_exit_codes", _exit_codes, nullable=True)
    if codes is not MISSING:
        changes["on_exit_codes"] = codes
    policy = replace(base, **changes)
    if f.data.get("retry_strategy") is not None and policy.attempts == 0:
        f.warn("retry_strategy", "has no effect while retry_attempts is 0")
    return policy


def _exit_codes(value: Any) -> tuple[int, ...]:
    if not isinstance(value, list):
        raise Invalid(f"{show(value)} is not a list of exit codes; write [1, 75]")
    for item in value:
        if isinstance(item, bool) or not isinstance(item, int) or not 0 <= item <= 255:
            raise Invalid(f"{show(item)} is not an exit code; use whole numbers from 0 to 255")
    return tuple(dict.fromkeys(value))


def _strategy(f: Fields) -> Any:
    """RetryPolicy fields for `retry_strategy` (a name or an object), MISSING when absent/invalid."""
    value = f.data.get("retry_strategy")
    if value is None:
        return MISSING
    if isinstance(value, str):
        kind = f.get("retry_strategy", choice(STRATEGY_NAMES))
        if kind is MISSING:
            return MISSING
        kind = RetryStrategy(kind)
        if kind is RetryStrategy.EXPONENTIAL_BACKOFF:
            return _backoff(MISSING, MISSING, MISSING)
        f.error("retry_strategy", f'"{kind.value}" needs its fields; write {EXAMPLES[kind]}')
        return MISSING
    if not isinstance(value, dict):
        f.error(
            "retry_strategy",
            f'{show(value)} is not a strategy; write a name such as "exponential_backoff" or an '
            'object such as {"type": "fixed_delay", "delay": 60}',
        )
        return MISSING
    return _strategy_object(f.child(value, "retry_strategy"))


def _strategy_object(sub: Fields) -> Any:
    if not sub.has("type"):
        listed = ", ".join(f'"{name}"' for name in STRATEGY_NAMES)
        sub.error("type", f"is missing; use one of {listed}")
        return MISSING
    kind = sub.get("type", choice(STRATEGY_NAMES))
    if kind is MISSING:
        return MISSING
    kind = RetryStrategy(kind)
    sub.warn_unknown(STRATEGY_KEYS[kind])
    if kind is RetryStrategy.EXPONENTIAL_BACKOFF:
        initial = sub.get("initial_delay", seconds)
        maximum = sub.get("max_delay", seconds)
        if initial is not MISSING and maximum is not MISSING and maximum < initial:
            sub.error("max_delay", f"{show(sub.data['max_delay'])} is below initial_delay; raise it")
        return _backoff(initial, maximum, sub.get("multiplier", positive_number(MAX_MULTIPLIER)))
    if kind is RetryStrategy.FIXED_DELAY:
        if not sub.has("delay"):
            sub.error("delay", f"is missing; fixed_delay needs it, e.g. {EXAMPLES[kind]}")
            return MISSING
        delay = sub.get("delay", seconds)
        return MISSING if delay is MISSING else _only(kind, delay=delay)
    if not sub.has("delays"):
        sub.error("delays", f"is missing; custom_schedule needs it, e.g. {EXAMPLES[kind]}")
        return MISSING
    delays = sub.get("delays", _delays)
    return MISSING if delays is MISSING else _only(kind, delays=delays)


def _backoff(initial: Any, maximum: Any, multiplier: Any) -> dict[str, Any]:
    return _only(
        RetryStrategy.EXPONENTIAL_BACKOFF,
        initial_delay=defaults.DEFAULT_BACKOFF_INITIAL_DELAY if initial is MISSING else initial,
        max_delay=defaults.DEFAULT_BACKOFF_MAX_DELAY if maximum is MISSING else maximum,
        multiplier=defaults.DEFAULT_BACKOFF_MULTIPLIER if multiplier is MISSING else multiplier,
    )


def _only(kind: RetryStrategy, **fields: Any) -> dict[str, Any]:
    """RetryPolicy fields for strategy `kind`: its own `fields`, and every field of the other
    strategies back at the model's blank value, so that nothing of a replaced strategy (the
    pipeline's, the 60 s default) lingers in the policy."""
    blank = RetryPolicy()
    return {
        "strategy": kind,
        "initial_delay": blank.initial_delay,
        "max_delay": blank.max_delay,
        "multiplier": blank.multiplier,
        "delay": blank.delay,
        "delays": blank.delays,
        **fields,
    }


def _delays(value: Any) -> tuple[float, ...]:
    ok = isinstance(value, list) and value and all(is_number(item) and item >= 0 for item in value)
    if not ok:
        raise Invalid(f"{show(value)} is not a non-empty list of seconds >= 0; write [10, 60, 300]")
    for index, item in enumerate(value):
        if item > MAX_SECONDS:
            raise Invalid(f"item {index}: {show(item)} is above the maximum of {MAX_SECONDS} "
                          "seconds (100 years); use a smaller number")
    return tuple(float(item) for item in value)
