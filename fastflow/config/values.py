"""Typed reading of configuration values, collecting every problem instead of stopping at one.

`Fields` wraps one mapping of a parsed file (JSON or YAML) and reads its keys through checkers:
small functions that return the converted value or raise `Invalid` with a one-line message that
names the value and the fix. `config.pipeline`, `config.repo` and `config.schedules` are built on it, so both files
speak with one voice.
"""
from __future__ import annotations

import math
import re
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Mapping

from fastflow.config.sizes import parse_size
from fastflow.defaults import RESERVED_ENV_PREFIX
from fastflow.errors import Invalid
from fastflow.humanize import closest, did_you_mean, show
from fastflow.model import PipelineType, Problem, Severity
from fastflow.schedule.cron import is_valid_cron
from fastflow.schedule.timevalues import MAX_SECONDS, in_years

MISSING: Any = object()
Checker = Callable[[Any], Any]

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
PYTHON_RE = re.compile(r"3\.\d{1,2}(\.\d{1,3})?")
SECONDS_TEXT = re.compile(r"\d+(\.\d*)?")  # restart_interval "3600": seconds, not a cron
WEBHOOK_KEY_RE = re.compile(r"[A-Za-z0-9._~-]+")
CRON_ALIASES = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")
# Docker refuses smaller memory limits ("Minimum memory limit allowed is 6MB").
DOCKER_MIN_MEMORY = 6 * 1024 * 1024
MEMORY_FIX = 'use a number with a unit such as "512m", "1.5g" or "2Gi"'
# Bounds a demanding user never meets, far below where Python's datetime, Docker or the kernel
# overflow (values above them used to validate and then crash the planner, the run or the site).
MAX_COUNT = 1_000_000  # retries, instances, concurrent runs, catch-up slots
MAX_CPU = 1024  # cores
MAX_MEMORY = 1024**5  # 1 PiB, spelled "1024t"
MAX_ENV_VALUE = 128 * 1024  # characters of one environment value (Linux: 128 KiB per string)


def is_number(value: Any) -> bool:
    """An int or a float that is not NaN (infinities are numbers; the bounds refuse them)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not (
        isinstance(value, float) and math.isnan(value))


def at_most(value: Any, bound: float, spelled: str, fix: str) -> None:
    """Raise `Invalid` when `value` is above `bound`: "<value> is above the maximum of ..."."""
    if value > bound:
        raise Invalid(f"{show(value)} is above the maximum of {spelled}; {fix}")


# --- checkers -------------------------------------------------------------------------------


def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise Invalid(f"{show(value)} is not a boolean; use true or false (without quotes)")
    return value


def text(value: Any) -> str:
    if not isinstance(value, str):
        raise Invalid(f"{show(value)} is not a string; put it in double quotes")
    return value


def nonempty_text(value: Any) -> str:
    if text(value).strip() == "":
        raise Invalid(f"{show(value)} is empty; give a value or remove the key")
    return value


def integer(minimum: int, maximum: int = MAX_COUNT) -> Checker:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise Invalid(f"{show(value)} is not a whole number >= {minimum}")
        at_most(value, maximum, f"{maximum:,}", "use a smaller number")
        return value

    return check


def seconds(value: Any) -> float:
    """A duration in seconds, >= 0 (0 often means "none")."""
    if not is_number(value) or value < 0:
        raise Invalid(f"{show(value)} is not a number of seconds >= 0; use a number such as 300")
    at_most(value, MAX_SECONDS, f"{MAX_SECONDS} seconds (100 years)", "use a smaller number")
    return float(value)


def positive_seconds(value: Any) -> float:
    if not is_number(value) or value <= 0:
        raise Invalid(f"{show(value)} is not a number of seconds > 0; use a number such as 60")
    at_most(value, MAX_SECONDS, f"{MAX_SECONDS} seconds (100 years)", "use a smaller number")
    return float(value)


def positive_number(maximum: float) -> Checker:
    def check(value: Any) -> float:
        if not is_number(value) or value <= 0:
            raise Invalid(f"{show(value)} is not a number > 0")
        at_most(value, maximum, f"{maximum:g}", "use a smaller number")
        return float(value)

    return check


def cpu(value: Any) -> float:
    if not is_number(value) or value <= 0:
        raise Invalid(
            f"{show(value)} is not a positive number of CPU cores; use a number such as 1 or 0.5"
        )
    at_most(value, MAX_CPU, f"{MAX_CPU} CPU cores", "use a number such as 1 or 0.5")
    return float(value)


def memory(value: Any) -> int:
    try:
        size = parse_size(value)
    except ValueError:
        raise Invalid(f"{show(value)} is not a memory size; {MEMORY_FIX}") from None
    if size == 0:
        raise Invalid(f"{show(value)} is zero; {MEMORY_FIX}")
    if size > MAX_MEMORY:
        raise Invalid(f'{show(value)} is above the maximum of "1024t" (1 PiB); {MEMORY_FIX}')
    return size


def hard_memory(value: Any) -> int:
    size = memory(value)
    if size < DOCKER_MIN_MEMORY:
        raise Invalid(f"{show(value)} is below Docker's minimum of 6m; use at least \"6m\"")
    return size


def size(maximum: int, spelled: str) -> Checker:
    """A size in bytes up to `maximum` (written as `spelled`, e.g. '"1g"')."""

    def check(value: Any) -> int:
        try:
            found = parse_size(value)
        except ValueError:
            raise Invalid(
                f'{show(value)} is not a size; use bytes or a number with a unit such as "5m" or '
                '"1g"'
            ) from None
        if found > maximum:
            raise Invalid(f"{show(value)} is above the maximum of {spelled}; use a smaller size")
        return found

    return check


def choice(options: Iterable[str]) -> Checker:
    options = tuple(options)

    def check(value: Any) -> str:
        if not isinstance(value, str) or value not in options:
            listed = " or ".join(f'"{o}"' for o in options)
            hint = did_you_mean(value, options) if isinstance(value, str) else ""
            raise Invalid(f"{show(value)} is not one of {listed}{hint}")
        return value

    return check


def name(value: Any) -> str:
    """An identifier used in run ids and paths (run configuration ids)."""
    if not isinstance(value, str) or not NAME_RE.fullmatch(value):
        raise Invalid(
            f"{show(value)} is not a valid id; use 1-63 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        )
    return value


def label(item: Mapping[str, Any], *keys: str) -> str | None:
    """What names a list entry in messages besides its position: `id "nightly"` from the first
    of `keys` holding a valid name (None when none does; an invalid value is never echoed here)."""
    for key in keys:
        value = item.get(key)
        if isinstance(value, str) and NAME_RE.fullmatch(value):
            return f'{key} "{value}"'
    return None


def env_name(value: Any) -> str:
    if not isinstance(value, str) or not ENV_NAME_RE.fullmatch(value):
        raise Invalid(
            f"{show(value)} is not a valid environment variable name; use letters, digits and "
            "'_', not starting with a digit"
        )
    if value.startswith(RESERVED_ENV_PREFIX):
        raise Invalid(f'{show(value)} is reserved: FASTFLOW_* variables are set by Fast-Flow')
    return value


def secret_requests(value: Any) -> dict[str, str]:
    """`secrets`, variable -> secret name: a list of names (`["API_KEY"]`: the variable and the
    secret are named alike) or an object (`{"API_KEY": "ETL_API_KEY"}`)."""
    if isinstance(value, list):
        return {name: name for name in string_list(env_name)(value)}
    if not isinstance(value, dict):
        raise Invalid(f'{show(value)} is not a list of names or an object; write ["API_KEY"] or '
                      '{"API_KEY": "ETL_API_KEY"}')
    out: dict[str, str] = {}
    for variable, secret in value.items():
        env_key(variable)
        try:
            out[variable] = secret_name(secret)
        except Invalid as exc:
            raise Invalid(f'"{variable}": {exc}') from None
    return out


def secret_name(value: Any) -> str:
    """The name of a secret in the secrets file: a variable name, not FASTFLOW_*."""
    if not isinstance(value, str) or not ENV_NAME_RE.fullmatch(value) or value.startswith(
            RESERVED_ENV_PREFIX):
        raise Invalid(f"{show(value)} is not a valid secret name; use letters, digits and '_', "
                      "not starting with a digit or FASTFLOW_")
    return value


def webhook_secret(value: Any) -> tuple[str, ...]:
    """`webhook_secret`: the name of the secret signed webhooks are checked with, or a list of
    names (rotation: a request signed with any of them is accepted)."""
    if isinstance(value, str):
        return (secret_name(value),)
    if not isinstance(value, list):
        raise Invalid(f'{show(value)} is not a secret name or a list of names; write "GITHUB_HOOK" '
                      'or ["HOOK_OLD", "HOOK_NEW"]')
    return string_list(secret_name)(value)


# What the runner sets or what steers the interpreter, uv and the loader: a webhook request may
# never set them (FASTFLOW_* is refused by env_name already). Run start refuses them again.
RUNNER_VARIABLES = frozenset({"PATH", "HOME", "USER", "LOGNAME", "SHELL", "TMPDIR", "VIRTUAL_ENV"})
RUNNER_PREFIXES = (RESERVED_ENV_PREFIX, "PYTHON", "UV_", "LD_")


def is_runner_variable(name: str) -> bool:
    """Whether variable `name` belongs to the runner (see RUNNER_VARIABLES)."""
    return name in RUNNER_VARIABLES or name.startswith(RUNNER_PREFIXES)


def webhook_env_name(value: Any) -> str:
    """An entry of `webhook_env`: a variable a webhook body may set, never a runner variable."""
    name_ = env_name(value)
    if is_runner_variable(name_):
        raise Invalid(f'"{name_}" is set by the runner (PATH, HOME, PYTHON*, UV_*, LD_* and the '
                      "like); a webhook may not set it, remove it from the list")
    return name_


def pipeline_type(value: Any) -> str:
    """`type`, case-insensitive as in Fast-Flow ("Notebook", "SCRIPT"); resolved in lower case."""
    options = [t.value for t in PipelineType]
    if isinstance(value, str) and value.lower() in options:
        return value.lower()
    return choice(options)(value)


def restart_interval(value: Any) -> float | str:
    """As in Fast-Flow: a cron expression (restart at its times) or a number of seconds > 0;
    a string of digits ("3600", as Fast-Flow's string field allows) is seconds."""
    if isinstance(value, str):
        if SECONDS_TEXT.fullmatch(value.strip()):
            if float(value) <= 0:
                raise Invalid(f"{show(value)} is not a number of seconds > 0; use a number such "
                              'as 86400 or a cron such as "0 3 * * *"')
            return positive_seconds(float(value))
        return cron(value)
    if is_number(value):
        return positive_seconds(value)
    raise Invalid(f'{show(value)} is not a cron expression or a number of seconds; use a cron '
                  'such as "0 3 * * *" or seconds such as 86400')


_CONSTRAINT = re.compile(r"^\s*(node\.(id|hostname|role|platform\.os|platform\.arch|labels\.[A-Za-z0-9_.-]+)"
                         r"|engine\.labels\.[A-Za-z0-9_.-]+)\s*(==|!=)\s*\S+\s*$")


def placement_constraint(value: Any) -> str:
    """A Swarm placement constraint, as `docker service create --constraint` takes it."""
    if not isinstance(value, str) or not _CONSTRAINT.match(value):
        raise Invalid(f"{show(value)} is not a Swarm placement constraint; write e.g. "
                      '"node.labels.gpu==true", "node.role!=manager" or "node.hostname==box-2"')
    return value.strip()


def string_list(item: Checker = nonempty_text) -> Checker:
    """A list of values checked by `item`, duplicates dropped (first one kept)."""

    def check(value: Any) -> tuple:
        if not isinstance(value, list):
            raise Invalid(f'{show(value)} is not a list; write ["a", "b"]')
        out: list = []
        for index, entry in enumerate(value):
            try:
                checked = item(entry)
            except Invalid as exc:
                raise Invalid(f"item {index}: {exc}") from None
            if checked not in out:
                out.append(checked)
        return tuple(out)

    return check


def python_version(value: Any) -> str:
    if is_number(value):
        raise Invalid(
            f'{show(value)} is a number; write the version as a string such as "3.11" '
            "(3.10 as a number is 3.1)"
        )
    if not isinstance(value, str) or not PYTHON_RE.fullmatch(value):
        raise Invalid(f'{show(value)} is not a Python version; use a string such as "3.11"')
    return value


def timestamp(value: Any) -> datetime:
    """An ISO 8601 date-time; a value without an offset is UTC."""
    if not isinstance(value, str):
        raise Invalid(
            f'{show(value)} is not an ISO 8601 date-time; use a string such as "2026-01-31T08:00:00Z"'
        )
    raw = value.strip()
    if raw.endswith(("Z", "z")):
        raw = raw[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(raw)
    except ValueError:
        raise Invalid(
            f'{show(value)} is not an ISO 8601 date-time; use a string such as "2026-01-31T08:00:00Z"'
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    in_years(value, parsed)
    return parsed


def cron(value: Any) -> str:
    """A 5-field cron expression (or one of croniter's @daily style aliases)."""
    if not isinstance(value, str):
        raise Invalid(f'{show(value)} is not a cron expression; use a string such as "0 3 * * *"')
    expression = " ".join(value.split())
    if expression.lower() in CRON_ALIASES:
        return expression.lower()
    fields = expression.split(" ")
    if len(fields) != 5:
        raise Invalid(
            f"{show(value)} has {len(fields)} fields, cron needs 5 (minute hour day month "
            'weekday); use for example "0 3 * * *"'
        )
    if not is_valid_cron(expression):
        raise Invalid(
            f"{show(value)} is not a valid cron expression (minute hour day month weekday); "
            'use for example "0 3 * * *"'
        )
    return expression


def webhook_key(value: Any) -> str:
    if not isinstance(value, str) or not WEBHOOK_KEY_RE.fullmatch(value):
        # The value is not echoed: a webhook key works like a password.
        raise Invalid("is not a valid webhook key; use letters, digits, '.', '_', '~' or '-'")
    return value


def env_key(key: Any) -> str:
    """A key of an object of variables: `env_name`'s check, its message as "key ..."."""
    try:
        return env_name(key)
    except Invalid as exc:
        raise Invalid(f"key {exc}") from None


def env_mapping(value: Any) -> dict[str, str]:
    """`default_env`: names to string, number or bool values, all turned into strings."""
    if not isinstance(value, dict):
        raise Invalid(f'{show(value)} is not an object; write {{"NAME": "value"}}')
    out: dict[str, str] = {}
    for key, item in value.items():
        env_key(key)
        out[key] = env_value(key, item)
    return out


def env_value(key: str, item: Any) -> str:
    if isinstance(item, bool):
        return "true" if item else "false"
    if isinstance(item, str):
        if "\0" in item:
            raise Invalid(
                f'"{key}": {show(item)} contains a NUL character, which environment values '
                "cannot hold; remove it"
            )
        if len(item) > MAX_ENV_VALUE:
            raise Invalid(
                f'"{key}": a value of {len(item):,} characters is above the maximum of '
                f"{MAX_ENV_VALUE:,} (128 KiB); pass large data as a file of the pipeline"
            )
        return item
    if isinstance(item, int):
        return str(item)
    if isinstance(item, float):
        return repr(item)
    raise Invalid(
        f'"{key}": {show(item)} is not a string, number or boolean; environment values are '
        "strings, so quote it"
    )


# --- reading a mapping ----------------------------------------------------------------------


class Fields:
    """Reads the keys of one mapping with checkers and records problems in a shared list."""

    def __init__(
        self,
        data: Mapping[str, Any],
        problems: list[Problem],
        file: str,
        prefix: str = "",
        pipeline: str | None = None,
    ) -> None:
        self.data = data
        self.problems = problems
        self.file = file
        self.prefix = prefix
        self.pipeline = pipeline

    def path(self, key: str | int) -> str:
        if isinstance(key, int):
            return f"{self.prefix}[{key}]"
        return f"{self.prefix}.{key}" if self.prefix else key

    def child(self, data: Mapping[str, Any], key: str | int) -> "Fields":
        return Fields(data, self.problems, self.file, self.path(key), self.pipeline)

    def has(self, key: str) -> bool:
        return key in self.data

    def error(self, key: str | int | None, message: str) -> None:
        field = self.prefix if key is None else self.path(key)
        self.problems.append(Problem(self.file, field, message, Severity.ERROR, self.pipeline))

    def warn(self, key: str | int | None, message: str) -> None:
        field = self.prefix if key is None else self.path(key)
        self.problems.append(Problem(self.file, field, message, Severity.WARNING, self.pipeline))

    def get(self, key: str, check: Checker, *, nullable: bool = False) -> Any:
        """The checked value of `key`; MISSING when absent or invalid (the problem is recorded).

        With `nullable`, an explicit null is returned as None.
        """
        if key not in self.data:
            return MISSING
        value = self.data[key]
        if value is None and nullable:
            return None
        try:
            return check(value)
        except Invalid as exc:
            self.error(key, str(exc))
            return MISSING

    def entry(self, data: Mapping[str, Any], index: int, label: str | None = None) -> "Fields":
        """The Fields of item `index` of this list, named by position and, when `label` is given,
        by what identifies it: `schedules[3] (id "nightly")`."""
        prefix = self.path(index) if label is None else f"{self.path(index)} ({label})"
        return Fields(data, self.problems, self.file, prefix, self.pipeline)

    def warn_unknown(
        self, known: Iterable[str], refuse: Callable[[str, str | None], str | None] | None = None
    ) -> None:
        """Warn about keys not in `known`; keys starting with "_" or "$" are comments, skipped.

        `refuse(key, closest known key or None)` may return an error message instead: for a key
        whose loss must not go unnoticed (one that would leave a schedule inert).
        """
        known = tuple(known)
        for key in self.data:
            if not isinstance(key, str):
                self.warn(None, f"key {show(key)} is not a string and is ignored")
            elif key not in known and not key.startswith(("_", "$")):
                close = closest(key, known)
                refused = None if refuse is None else refuse(key, close)
                if refused is not None:
                    self.error(key, refused)
                else:
                    self.warn(key, f"unknown key, ignored{did_you_mean(key, known)}")
