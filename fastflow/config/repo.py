"""`.fastflow/config.yaml` -> `RepoConfig`: every key optional, typed, and traced to its source.

Reference: docs/config-yaml.md. `read_repo_config` is pure (text in, config and problems out);
`load_repo_config` reads the file of a repository and raises `ConfigError` listing every error.
"""
from __future__ import annotations

import posixpath
from dataclasses import replace
from pathlib import Path
from typing import Any

from fastflow import defaults
from fastflow.config.links import link_problem
from fastflow.config.notifications import read_targets
from fastflow.config.values import (
    MISSING,
    Fields,
    choice,
    cpu,
    hard_memory,
    integer,
    memory,
    nonempty_text,
    placement_constraint,
    positive_seconds,
    python_version,
    seconds,
    size,
    string_list,
)
from fastflow.config.yamlfile import load_yaml
from fastflow.errors import ConfigError, Invalid
from fastflow.humanize import show
from fastflow.model import (
    Limits,
    Problem,
    RepoConfig,
    Severity,
    SwarmSettings,
    WebhookSettings,
)

CONFIG_FILE = defaults.CONFIG_FILE
DEFAULT = "default"
MAX_LOG_CAP = 1024**3  # 1 GiB of log per run: what the results branch and a page can hold
MAX_KEEP_DAYS = 36_525  # 100 years
MAX_CA_BUNDLE_BYTES = 16 * 1024**2  # the host's whole bundle is about 200 KiB

MIN_TMP_SIZE, MAX_TMP_SIZE = 1024**2, 64 * 1024**3  # the engine reads a size of 0 as no limit


def tmp_size(value: Any) -> int:
    """The size of a container's tmpfs /tmp: 1 MiB to 64 GiB."""
    found = size(MAX_TMP_SIZE, '"64g"')(value)
    if found < MIN_TMP_SIZE:
        raise Invalid(f'{show(value)} is below the minimum of "1m"; use a size such as "256m"')
    return found


def image_name(value: Any) -> str:
    """The runner image: a name, where `{python}` (the only placeholder) stands for the major.minor
    of a run's Python (one image per Python; docs/docker.md)."""
    name = nonempty_text(value)
    rest = name.replace(defaults.IMAGE_PYTHON_PLACEHOLDER, "")
    if "{" in rest or "}" in rest:
        raise Invalid(f"{show(value)} has a placeholder other than {{python}}; write {{python}} "
                      "(replaced by a run's Python version, e.g. fastflow-runner:py{python}) or "
                      "no braces (one image for every Python)")
    return name


# key -> (RepoConfig attribute, checker, default, nullable)
_SCALARS: dict[str, tuple[str, Any, Any, bool]] = {
    "pipelines_dir": ("pipelines_dir", nonempty_text, defaults.DEFAULT_PIPELINES_DIR, False),
    "branch": ("branch", nonempty_text, defaults.DEFAULT_BRANCH, False),
    "results_branch": ("results_branch", nonempty_text, defaults.DEFAULT_RESULTS_BRANCH, False),
    "image": ("image", image_name, defaults.DEFAULT_IMAGE, False),
    "default_python": ("default_python", python_version, defaults.DEFAULT_PYTHON, True),
    "max_concurrent_runs": (
        "max_concurrent_runs", integer(1), defaults.DEFAULT_MAX_CONCURRENT_RUNS, False
    ),
    "default_timeout": ("default_timeout", seconds, defaults.DEFAULT_TIMEOUT, False),
    "default_retry_attempts": (
        "default_retry_attempts", integer(0), defaults.DEFAULT_RETRY_ATTEMPTS, False
    ),
    "log_cap": ("log_cap_bytes", size(MAX_LOG_CAP, '"1g"'), defaults.DEFAULT_LOG_CAP_BYTES, False),
    "ca_bundle": ("ca_bundle", nonempty_text, None, True),
    "secrets_file": ("secrets_file", nonempty_text, defaults.DEFAULT_SECRETS_FILE, False),
    "grace_period": ("grace_period", seconds, defaults.DEFAULT_GRACE_PERIOD, False),
    "lease_timeout": ("lease_timeout", positive_seconds, defaults.DEFAULT_LEASE_TIMEOUT, False),
    "tmp_size": ("tmp_size_bytes", tmp_size, defaults.DEFAULT_TMP_SIZE_BYTES, False),
    "flows_dir": ("flows_dir", nonempty_text, None, True),
    "tasks_dir": ("tasks_dir", nonempty_text, None, True),
    "flow_workspace_keep": (
        "flow_workspace_keep", seconds, defaults.DEFAULT_FLOW_WORKSPACE_KEEP, False
    ),
    "executor": ("executor", choice(("docker", "swarm")), "docker", False),
}
_LIMIT_CHECKS = {
    "cpu_hard_limit": cpu,
    "mem_hard_limit": hard_memory,
    "cpu_soft_limit": cpu,
    "mem_soft_limit": memory,
}
_SECTIONS = ("default_limits", "retention", "results_author", "notifications", "webhooks",
             "site_url", "swarm")
KNOWN_KEYS = (*_SCALARS, *_SECTIONS)


def default_repo_config() -> RepoConfig:
    """The configuration of a repository without `.fastflow/config.yaml`: every default."""
    config, _ = read_repo_config("", CONFIG_FILE)
    assert config is not None
    return config


def read_repo_config(text: str, file: str = CONFIG_FILE) -> tuple[RepoConfig | None, list[Problem]]:
    """Parse the text of a config.yaml; never raises for bad input.

    Returns the config (None when there is any error) and every problem found, errors and
    warnings, each naming `file` and the key path. Empty text means "all defaults".
    """
    problems: list[Problem] = []
    try:
        data = load_yaml(text) if text.strip() else {}
    except Invalid as exc:
        return None, [Problem(file, "", str(exc))]
    if data is None:
        data = {}
    if not isinstance(data, dict):
        message = f"the file must be a mapping of keys to values, not {_kind(data)}"
        return None, [Problem(file, "", message)]
    config = _build(Fields(data, problems, file), file)
    if any(p.severity is Severity.ERROR for p in problems):
        return None, problems
    return config, problems


def parse_repo_config(text: str, file: str = CONFIG_FILE) -> tuple[RepoConfig, list[Problem]]:
    """Like `read_repo_config`, but raise `ConfigError` (one line per error) when invalid."""
    config, problems = read_repo_config(text, file)
    if config is None:
        raise ConfigError("\n".join(str(p) for p in problems if p.severity is Severity.ERROR))
    return config, [p for p in problems if p.severity is Severity.WARNING]


def check_repo_config(root: Path) -> tuple[RepoConfig | None, list[Problem]]:
    """Read `.fastflow/config.yaml` of the repository at `root`; never raises for bad input.

    A missing file is all defaults. Also checks that `ca_bundle` exists (relative paths are
    taken from the repository root and returned absolute).
    """
    path = Path(root) / CONFIG_FILE
    link = link_problem(Path(root), path)  # never read through it, never the defaults instead
    if link is not None:
        return None, [Problem(CONFIG_FILE, "", link)]
    if not path.exists():
        return default_repo_config(), []
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return None, [Problem(CONFIG_FILE, "", f"cannot be read: {exc}")]
    config, problems = read_repo_config(text, CONFIG_FILE)
    if config is not None and config.ca_bundle is not None:
        bundle = Path(root) / config.ca_bundle  # an absolute ca_bundle replaces the root
        wrong = _ca_bundle_problem(bundle)
        if wrong:
            fix = "give the path of a PEM file of CA certificates or remove the key"
            problems.append(Problem(CONFIG_FILE, "ca_bundle", f"{show(config.ca_bundle)} {wrong}; {fix}"))
            return None, problems
        config = replace(config, ca_bundle=str(bundle.resolve()))
    return config, problems


def _ca_bundle_problem(bundle: Path) -> str | None:
    """What makes `bundle` no CA bundle (it is mounted into every run: a readable file holding
    at least one PEM certificate, not any host file such as /etc/passwd), or None."""
    if not bundle.exists():
        return "does not exist"
    if not bundle.is_file():
        return "is not a file"
    try:
        with bundle.open("rb") as handle:
            head = handle.read(MAX_CA_BUNDLE_BYTES + 1)
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    if len(head) > MAX_CA_BUNDLE_BYTES:
        return f"is larger than {MAX_CA_BUNDLE_BYTES // 1024**2} MiB, too large for a CA bundle"
    if b"-----BEGIN CERTIFICATE-----" not in head:
        return 'holds no PEM certificate (no "-----BEGIN CERTIFICATE-----" line)'
    return None


def load_repo_config(root: Path) -> tuple[RepoConfig, list[Problem]]:
    """The validated configuration of the repository at `root` and its warnings.

    Raises `ConfigError` whose message lists every error, one `file: field: message` per line.
    """
    config, problems = check_repo_config(root)
    if config is None:
        raise ConfigError("\n".join(str(p) for p in problems if p.severity is Severity.ERROR))
    return config, problems


# --- building ------------------------------------------------------------------------------


def _build(fields: Fields, file: str) -> RepoConfig:
    fields.warn_unknown(KNOWN_KEYS)
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for key, (attr, check, default, nullable) in _SCALARS.items():
        value = fields.get(key, check, nullable=nullable)
        values[attr] = default if value is MISSING else value
        sources[key] = DEFAULT if value is MISSING else file
    _check_pipelines_dir(fields, values)
    _check_branches(fields, values)
    values["default_limits"] = _limits(fields, sources, file)
    values.update(_retention(fields, sources, file))
    values.update(_author(fields, sources, file))
    values["notifications"] = read_targets(fields, "notifications")
    sources["notifications"] = file if fields.has("notifications") else DEFAULT
    site_url = fields.get("site_url", public_url, nullable=True)
    values["site_url"] = None if site_url is MISSING else site_url
    sources["site_url"] = DEFAULT if site_url is MISSING else file
    values["webhooks"] = _webhooks(fields, sources, file)
    values["swarm"] = _swarm(fields, sources, file)
    return RepoConfig(**values, sources=sources)


def _mapping(value: Any) -> dict:
    if not isinstance(value, dict):
        raise Invalid(f"{show(value)} is not a mapping; write it as indented key: value lines")
    return value


def _section(fields: Fields, key: str, known: tuple[str, ...]) -> Fields | None:
    data = fields.get(key, _mapping, nullable=True)
    if data in (MISSING, None):
        return None
    section = fields.child(data, key)
    section.warn_unknown(known)
    return section


def _limits(fields: Fields, sources: dict[str, str], file: str) -> Limits:
    section = _section(fields, "default_limits", tuple(_LIMIT_CHECKS))
    values: dict[str, Any] = {}
    for key, check in _LIMIT_CHECKS.items():
        value = MISSING if section is None else section.get(key, check, nullable=True)
        values[key] = None if value is MISSING else value
        sources[f"default_limits.{key}"] = DEFAULT if value is MISSING else file
    return Limits(**values)


def _retention(fields: Fields, sources: dict[str, str], file: str) -> dict[str, Any]:
    section = _section(fields, "retention", ("keep_runs", "keep_days"))
    out: dict[str, Any] = {}
    for key, check in (("keep_runs", integer(1)), ("keep_days", integer(1, MAX_KEEP_DAYS))):
        value = MISSING if section is None else section.get(key, check, nullable=True)
        out[key] = None if value is MISSING else value
        sources[f"retention.{key}"] = DEFAULT if value is MISSING else file
    return out


def _author(fields: Fields, sources: dict[str, str], file: str) -> dict[str, Any]:
    section = _section(fields, "results_author", ("name", "email"))
    name = MISSING if section is None else section.get("name", nonempty_text)
    email = MISSING if section is None else section.get("email", nonempty_text)
    if email is not MISSING and "@" not in email:
        section.error("email", f"{show(email)} is not an e-mail address; use name@example.org")
        email = MISSING
    sources["results_author.name"] = DEFAULT if name is MISSING else file
    sources["results_author.email"] = DEFAULT if email is MISSING else file
    return {
        "author_name": defaults.DEFAULT_AUTHOR_NAME if name is MISSING else name,
        "author_email": defaults.DEFAULT_AUTHOR_EMAIL if email is MISSING else email,
    }


MAX_WEBHOOK_BODY = 64 * 1024**2  # a webhook body is held in memory, then written to a file


def listen_address(value: Any) -> str:
    """`HOST:PORT` (`[::1]:8787` for IPv6) with a port from 0 (any free one, logged) to
    65535: where the webhook intake listens; nothing is listened on that the user did not
    write."""
    text = nonempty_text(value) if not isinstance(value, int) else str(value)
    host, sep, port = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535 or " " in host:
        raise Invalid(f'{show(value)} is not HOST:PORT; write e.g. "127.0.0.1:8787" (or null: off)')
    return text


def public_url(value: Any) -> str:
    """The address the outside world reaches the intake at, `https://...` without a query."""
    url = nonempty_text(value).rstrip("/")
    if not url.startswith(("https://", "http://")) or "?" in url or "#" in url or " " in url:
        raise Invalid(f'{show(value)} is not an http(s) URL; write e.g. "https://ci.example.org"')
    return url


# key -> (WebhookSettings attribute, checker, default, nullable)
_WEBHOOK_KEYS: dict[str, tuple[str, Any, Any, bool]] = {
    "listen": ("listen", listen_address, None, True),
    "public_url": ("public_url", public_url, None, True),
    "max_body": ("max_body_bytes", size(MAX_WEBHOOK_BODY, '"64m"'),
                 defaults.DEFAULT_WEBHOOK_MAX_BODY, False),
    "rate_limit_per_client": ("client_rate_per_minute", integer(1),
                              defaults.DEFAULT_WEBHOOK_CLIENT_RATE, False),
    "burst_per_client": ("client_burst", integer(1), defaults.DEFAULT_WEBHOOK_CLIENT_BURST, False),
    "rate_limit_per_pipeline": ("pipeline_rate_per_minute", integer(1),
                                defaults.DEFAULT_WEBHOOK_PIPELINE_RATE, False),
    "max_queued_per_pipeline": ("max_queued_per_pipeline", integer(1),
                                defaults.DEFAULT_WEBHOOK_MAX_QUEUED, False),
    "read_timeout": ("read_timeout", positive_seconds, defaults.DEFAULT_WEBHOOK_READ_TIMEOUT, False),
    "threads": ("threads", integer(1, 64), defaults.DEFAULT_WEBHOOK_THREADS, False),
    "trusted_proxy": ("trusted_proxy", nonempty_text, None, True),
}


def _webhooks(fields: Fields, sources: dict[str, str], file: str) -> WebhookSettings:
    section = _section(fields, "webhooks", tuple(_WEBHOOK_KEYS))
    values: dict[str, Any] = {}
    for key, (attr, check, default, nullable) in _WEBHOOK_KEYS.items():
        value = MISSING if section is None else section.get(key, check, nullable=nullable)
        values[attr] = default if value is MISSING else value
        sources[f"webhooks.{key}"] = DEFAULT if value is MISSING else file
    return WebhookSettings(**values)


# key -> (SwarmSettings attribute, checker, default)
_SWARM_KEYS: dict[str, tuple[str, Any, Any]] = {
    "placement": ("placement", string_list(placement_constraint), ()),
    "schedule_timeout": ("schedule_timeout", positive_seconds, SwarmSettings().schedule_timeout),
}


def _swarm(fields: Fields, sources: dict[str, str], file: str) -> SwarmSettings:
    section = _section(fields, "swarm", tuple(_SWARM_KEYS))
    values: dict[str, Any] = {}
    for key, (attr, check, default) in _SWARM_KEYS.items():
        value = MISSING if section is None else section.get(key, check)
        values[attr] = default if value is MISSING else value
        sources[f"swarm.{key}"] = DEFAULT if value is MISSING else file
    return SwarmSettings(**values)


def _check_pipelines_dir(fields: Fields, values: dict[str, Any]) -> None:
    examples = {"pipelines_dir": '"pipelines" or "."', "flows_dir": '"flows"', "tasks_dir": '"tasks"'}
    for key, example in examples.items():
        raw = values[key]
        if raw is None:
            continue
        normalized = posixpath.normpath(raw.replace("\\", "/"))
        if raw.startswith("/") or normalized == ".." or normalized.startswith("../"):
            fields.error(
                key,
                f'{show(raw)} is outside the repository; use a path relative to the repository '
                f"root such as {example}",
            )
            values[key] = _SCALARS[key][2]
            continue
        values[key] = normalized


def _check_branches(fields: Fields, values: dict[str, Any]) -> None:
    for key in ("branch", "results_branch"):
        branch = values[key]
        bad = (
            branch.startswith(("-", "/")) or branch.endswith(("/", ".lock", "."))
            or ".." in branch or any(c in branch for c in " ~^:?*[\\\t\n")
        )
        if bad:
            fields.error(key, f"{show(branch)} is not a valid git branch name")
    if values["branch"] == values["results_branch"]:
        fields.error(
            "results_branch",
            f'{show(values["results_branch"])} is also the followed branch; results need their '
            'own branch such as "fastflow/results"',
        )


def _kind(value: Any) -> str:
    return {list: "a list", str: "a string", int: "a number", float: "a number", bool: "a boolean"}.get(
        type(value), type(value).__name__
    )

