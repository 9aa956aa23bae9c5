"""A flow file (`<name>.json`, Featherflow's format with our additions) -> `Flow`, with every problem.

Pure: the text of the file, where it is and the repository config go in; a `Flow` (valid) or an
`InvalidFlow` (every error and warning of the file, not just the first) comes out. The limit,
timeout and retry keys of a task are read by the very checkers pipeline.json uses
(`config.pipeline.LIMIT_CHECKS`, `config.sections.retry_policy`), so both files speak with one
voice. `deploy.flows` finds the files and checks what needs the file system (scripts exist, the
pipelines named exist). Reference: docs/flows.md.
"""
from __future__ import annotations

import posixpath
import re
from collections import deque
from pathlib import Path
from typing import Any, Mapping

from fastflow import defaults
from fastflow.config.pipeline import (
    LIMIT_CHECKS,
    RETRY_KEYS,
    check_soft_limits,
    load_json,
)
from fastflow.config.sections import retry_policy
from fastflow.config.values import (
    MISSING,
    Fields,
    choice,
    env_mapping,
    integer,
    label,
    nonempty_text,
    python_version,
    seconds,
    string_list,
    text,
    webhook_key,
)
from fastflow.config.values import (
    name as id_name,
)
from fastflow.errors import Invalid
from fastflow.humanize import did_you_mean, show
from fastflow.model import (
    Flow,
    FlowTask,
    InvalidFlow,
    Limits,
    NetworkMode,
    Problem,
    RepoConfig,
    RetryPolicy,
    RetryStrategy,
    Severity,
    TaskWhen,
)

# Keys a task and the flow's top level share: defaults for the script tasks at the top level.
RUN_KEYS = ("python_version", *LIMIT_CHECKS, "timeout", *RETRY_KEYS, "network")
FLOW_KEYS = (
    "name", "description", "version", "tasks", "max_parallel", "requirements", "params",
    "webhook_key", *RUN_KEYS,
)
TASK_KEYS = (
    "id", "script", "pipeline", "args", "env", "depends_on", "when", "requirements", *RUN_KEYS,
)
# Variables every task is given by Fast-Flow (docs/flows.md): a task's env may not set them.
WORKSPACE_ENV = defaults.FLOW_TMP_DIR_ENV  # set by Fast-Flow for every task (the workspace)
PARAM_RE = re.compile(r"\$\{params\.([^}]*)\}")
PARAM_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def parse_flow(
    text_: str, *, name: str, file: str, path: Path, tasks_dir: Path, config: RepoConfig
) -> Flow | InvalidFlow:
    """Parse and validate the flow file `file` (relative to the repository root) of flow `name`.

    `path` is the file on disk and `tasks_dir` the folder its scripts are in (both kept on the
    `Flow`, neither read here). Never raises for bad input: an invalid file is an `InvalidFlow`
    with every problem, each naming `file` and the task (`tasks[2] (id "merge").depends_on`).
    """
    problems: list[Problem] = []
    data = load_json(text_, file, None, problems)
    if data is MISSING:
        return InvalidFlow(name, file, tuple(problems))
    if not isinstance(data, dict):
        problems.append(Problem(file, "", f"must be a JSON object {{...}}, not {show(data)}"))
        return InvalidFlow(name, file, tuple(problems))
    f = Fields(data, problems, file)
    f.warn_unknown(FLOW_KEYS, _refuse_flow_key)
    flow_name = f.get("name", nonempty_text)
    if flow_name is not MISSING and flow_name != name:
        f.warn("name", f'"{flow_name}" is not the file\'s name: the flow is called "{name}" '
               f"after its file (as Featherflow finds it); rename one of them to match")
    description = f.get("description", text)
    version = f.get("version", _version)
    max_parallel = f.get("max_parallel", integer(1), nullable=True)
    requirements = f.get("requirements", relative_file, nullable=True)
    params = f.get("params", _param_defaults)
    key = f.get("webhook_key", webhook_key, nullable=True)
    base = _flow_defaults(f, config)
    tasks = _tasks(f, base, None if requirements in (MISSING, None) else requirements)
    if tasks:
        _check_graph(f, tasks)
        _check_params(tasks)
    if any(p.severity is Severity.ERROR for p in problems):
        return InvalidFlow(name, file, tuple(problems))
    return Flow(
        name=name, file=file, path=path, tasks_dir=tasks_dir, tasks=tuple(t for t, _ in tasks),
        description="" if description is MISSING else description,
        version=None if version is MISSING else version,
        max_parallel=None if max_parallel is MISSING else max_parallel,
        requirements=None if requirements is MISSING else requirements,
        params={} if params is MISSING else params,
        warnings=tuple(problems),
        webhook_key=None if key is MISSING else key,
    )


def task_field(index: int, task_id: str | None) -> str:
    """How messages name task `index`: `tasks[3] (id "merge")` (the id only when valid)."""
    where = label({"id": task_id}, "id") if task_id else None
    return f"tasks[{index}] ({where})" if where else f"tasks[{index}]"


def param_names(value: str) -> list[str]:
    """The parameter names `${params.NAME}` of `value` refers to, in order."""
    return [m.group(1) for m in PARAM_RE.finditer(value)]


def substitute_params(value: str, params: Mapping[str, str]) -> str:
    """`value` with every `${params.NAME}` replaced by its value (all names are in `params`:
    `flow.plan` checks that first, before anything runs)."""
    return PARAM_RE.sub(lambda m: params[m.group(1)], value)


def args_list(value: Any) -> tuple[str, ...]:
    """`args` as the command line gets it, Featherflow's rule: a list as is (each item one
    argument); an object's one-letter key `k` becomes `-k value` (two arguments), a longer key
    `--key=value` (one). Values are written as Featherflow writes them (Python's str: True,
    1.5); null is refused."""
    if isinstance(value, list):
        return tuple(_arg(index, item) for index, item in enumerate(value))
    if not isinstance(value, dict):
        raise Invalid(f'{show(value)} is not a list or an object; write ["--station", "A"] or '
                      '{"station": "A"}')
    out: list[str] = []
    for key, item in value.items():
        if not key or key.startswith("-") or any(c.isspace() for c in key):
            raise Invalid(f'key {show(key)} is not an option name; write it without dashes or '
                          'spaces, e.g. {"station": "A"} for --station=A')
        item = _arg(key, item)
        out += [f"-{key}", item] if len(key) == 1 else [f"--{key}={item}"]
    return tuple(out)


def relative_file(value: Any) -> str:
    """A file inside the tasks folder, as a relative posix path that stays inside it."""
    path = nonempty_text(value)
    normal = posixpath.normpath(path.replace("\\", "/"))
    if path.startswith("/") or normal == ".." or normal.startswith("../") or "\0" in path:
        raise Invalid(f"{show(value)} leads outside the tasks folder; give a path relative to it "
                      'such as "fetch.py"')
    return normal


# --- the top level ---------------------------------------------------------------------------


def _flow_defaults(f: Fields, config: RepoConfig) -> dict[str, Any]:
    """The run keys of the flow's top level over config.yaml's defaults: the base of every
    script task."""
    limits = {}
    for key, check in LIMIT_CHECKS.items():
        value = f.get(key, check, nullable=True)
        limits[key] = getattr(config.default_limits, key) if value is MISSING else value
    # As for a pipeline: retries without a retry_strategy wait a fixed 60 s before each retry.
    retry = RetryPolicy(attempts=config.default_retry_attempts,
                        strategy=RetryStrategy.FIXED_DELAY, delay=defaults.DEFAULT_RETRY_DELAY)
    python = f.get("python_version", python_version, nullable=True)
    timeout = f.get("timeout", seconds)
    network = f.get("network", _network)
    return {
        "python_version": config.default_python if python is MISSING else python,
        "limits": Limits(**limits),
        "timeout": config.default_timeout if timeout is MISSING else timeout,
        "retry": retry_policy(f, retry),
        "network": NetworkMode(defaults.DEFAULT_NETWORK if network is MISSING else network),
    }


def _tasks(f: Fields, base: dict[str, Any], requirements: str | None) -> list[tuple[FlowTask, Fields]]:
    if not f.has("tasks"):
        f.error("tasks", 'is missing; a flow needs a list of tasks such as '
                '[{"id": "fetch", "script": "fetch.py"}]')
        return []
    items = f.data["tasks"]
    if not isinstance(items, list) or not items:
        f.error("tasks", f'{show(items)} is not a non-empty list; write '
                '[{"id": "fetch", "script": "fetch.py"}]')
        return []
    seen: dict[str, int] = {}
    tasks: list[tuple[FlowTask, Fields]] = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            f.child(items, "tasks").error(index, f'{show(item)} is not an object; write '
                                          '{"id": "fetch", "script": "fetch.py"}')
            continue
        sub = f.child(items, "tasks").entry(item, index, label(item, "id"))
        task = _task(sub, base, requirements)
        if task is None:
            continue
        if task.id in seen:
            sub.error("id", f'"{task.id}" is already the id of tasks[{seen[task.id]}]; task ids '
                      "must be unique, rename one of them")
            continue
        seen[task.id] = index
        tasks.append((task, sub))
    return tasks


def _task(f: Fields, base: dict[str, Any], requirements: str | None) -> FlowTask | None:
    f.warn_unknown(TASK_KEYS, _refuse_task_key)
    task_id = f.get("id", id_name)
    if not f.has("id"):
        f.error("id", 'is missing; every task needs a unique id such as "fetch"')
    script = f.get("script", relative_file)
    pipeline = f.get("pipeline", id_name)
    if f.has("script") and f.has("pipeline"):
        f.error("pipeline", "cannot be combined with script; a task runs either a script of the "
                "tasks folder or a pipeline, choose one")
    elif not (f.has("script") or f.has("pipeline")):
        f.error(None, 'has neither script nor pipeline; add "script": "fetch.py" (a file of the '
                'tasks folder) or "pipeline": "NAME"')
    args = f.get("args", args_list)
    env = f.get("env", _task_env)
    depends = f.get("depends_on", string_list(id_name))
    when = f.get("when", choice(w.value for w in TaskWhen))
    own_requirements = f.get("requirements", relative_file)
    if f.has("requirements") and f.has("pipeline"):
        f.error("requirements", "is not used by a pipeline task (its pipeline folder's "
                "requirements.txt is); remove it")
    run = _run_values(f, base)
    if task_id is MISSING:
        return None
    return FlowTask(
        id=task_id,
        script=None if script is MISSING else script,
        pipeline=None if pipeline is MISSING else pipeline,
        args=() if args is MISSING else args,
        env={} if env is MISSING else env,
        depends_on=() if depends is MISSING else depends,
        when=TaskWhen.SUCCESS if when is MISSING else TaskWhen(when),
        requirements=requirements if own_requirements is MISSING else own_requirements,
        overrides=frozenset(key for key in RUN_KEYS if f.has(key)),
        **run,
    )


def _run_values(f: Fields, base: dict[str, Any]) -> dict[str, Any]:
    """The limits, timeout, retries, Python and network of a task: its own keys over `base`."""
    limits = {}
    for key, check in LIMIT_CHECKS.items():
        value = f.get(key, check, nullable=True)
        limits[key] = getattr(base["limits"], key) if value is MISSING else value
    resolved = Limits(**limits)
    check_soft_limits(f, resolved)
    python = f.get("python_version", python_version, nullable=True)
    timeout = f.get("timeout", seconds)
    network = f.get("network", _network)
    return {
        "limits": resolved,
        "python_version": base["python_version"] if python is MISSING else python,
        "timeout": base["timeout"] if timeout is MISSING else timeout,
        "retry": retry_policy(f, base["retry"]),
        "network": base["network"] if network is MISSING else NetworkMode(network),
    }


# --- across tasks ----------------------------------------------------------------------------


def _check_graph(f: Fields, tasks: list[tuple[FlowTask, Fields]]) -> None:
    """Every dependency names a task of the flow; the dependencies form no cycle."""
    ids = [task.id for task, _ in tasks]
    edges: dict[str, list[str]] = {}
    for task, sub in tasks:
        known = []
        for dep in task.depends_on:
            if dep == task.id:
                sub.error("depends_on", f'"{dep}" is this task itself; a task cannot depend on '
                          "itself, remove it")
            elif dep not in ids:
                others = [i for i in ids if i != task.id]
                hint = did_you_mean(dep, others) or f"; the tasks are {_listed(others)}"
                sub.error("depends_on", f'"{dep}" is not a task of this flow{hint}')
            else:
                known.append(dep)
        edges[task.id] = known
    reported: set[frozenset[str]] = set()
    for task, sub in tasks:
        for dep in edges[task.id]:
            back = _path(edges, dep, task.id)
            if back is None:
                continue
            cycle = [task.id, *back]
            key = frozenset(cycle)
            if key in reported:
                continue
            reported.add(key)
            shown = " -> ".join(reversed(cycle))
            sub.error("depends_on", f"the dependencies form a cycle {shown}; a task would wait "
                      "for itself, remove one of these depends_on entries")


def _path(edges: Mapping[str, list[str]], start: str, goal: str) -> list[str] | None:
    """The ids from `start` to `goal` along `edges` (both included), fewest hops; None when
    `goal` cannot be reached. Breadth first, without recursion."""
    parents: dict[str, str | None] = {start: None}
    queue = deque([start])
    while queue:
        current = queue.popleft()
        if current == goal:
            path = [current]
            while parents[path[-1]] is not None:
                path.append(parents[path[-1]])  # type: ignore[arg-type]
            return path[::-1]
        for target in edges.get(current, ()):
            if target not in parents:
                parents[target] = current
                queue.append(target)
    return None


def _check_params(tasks: list[tuple[FlowTask, Fields]]) -> None:
    """Every `${params.NAME}` is well formed (a name of letters, digits and '_'). Whether a
    value is given is judged per run, before anything runs (`flow.plan`)."""
    for task, sub in tasks:
        values = [("args", arg) for arg in task.args]
        values += [(f"env.{key}", value) for key, value in task.env.items()]
        for where, value in values:
            for name_ in param_names(value):
                if not PARAM_NAME_RE.fullmatch(name_):
                    sub.error(where, f'"${{params.{name_}}}" is not a parameter reference; '
                              "parameter names use letters, digits and '_', e.g. ${params.date}")


# --- checkers --------------------------------------------------------------------------------


def _arg(where: Any, item: Any) -> str:
    if isinstance(item, bool) or isinstance(item, (int, float)):
        return str(item)  # Featherflow's f-string: True, 1.5
    if isinstance(item, str):
        if "\0" in item:
            raise Invalid(f"{show(where)}: {show(item)} contains a NUL character, which a "
                          "command line cannot hold; remove it")
        return item
    raise Invalid(f"{show(where)}: {show(item)} is not a string, number or boolean; quote it")


def _task_env(value: Any) -> dict[str, str]:
    env = env_mapping(value)
    if WORKSPACE_ENV in env:
        raise Invalid(f'key "{WORKSPACE_ENV}" is set by Fast-Flow to the flow run\'s shared '
                      "workspace (as Featherflow sets it); remove it")
    return env


def _param_defaults(value: Any) -> dict[str, str | None]:
    """`params`: each parameter's default (a string, number or boolean), null when it must be
    given for every run."""
    if not isinstance(value, dict):
        raise Invalid(f'{show(value)} is not an object; write {{"date": null, "region": "eu"}}')
    out: dict[str, str | None] = {}
    for key, item in value.items():
        if not isinstance(key, str) or not PARAM_NAME_RE.fullmatch(key):
            raise Invalid(f"key {show(key)} is not a parameter name; use letters, digits and '_', "
                          "not starting with a digit")
        if item is None:
            out[key] = None
            continue
        out[key] = param_value(key, item)
    return out


def param_value(key: str, item: Any) -> str:
    """One parameter's value as tasks see it (a string; numbers and booleans as JSON writes
    them: 3, 1.5, true). Dicts, lists and null are refused."""
    if isinstance(item, bool):
        return "true" if item else "false"
    if isinstance(item, (int, float)):
        return repr(item) if isinstance(item, float) else str(item)
    if isinstance(item, str):
        if "\0" in item:
            raise Invalid(f'"{key}": {show(item)} contains a NUL character; remove it')
        return item
    raise Invalid(f'"{key}": {show(item)} is not a string, number or boolean; give a value '
                  'such as "2026-12-01"')


def _version(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise Invalid(f'{show(value)} is not a version; write a string such as "1.0"')
    return str(value)


def _network(value: Any) -> str:
    return choice(n.value for n in NetworkMode)(value)


def _listed(ids: list[str]) -> str:
    shown = ", ".join(f'"{i}"' for i in ids[:8])
    return shown + (", ..." if len(ids) > 8 else "") if ids else "none"


def _refuse_task_key(key: str, close: str | None) -> str:
    """Every unknown key of a task is an error: a misspelled depends_on or when would change
    what runs without a word."""
    hint = f'; did you mean "{close}"?' if close else ""
    return f"unknown key of a task; fix its name or remove it{hint}"


def _refuse_flow_key(key: str, close: str | None) -> str | None:
    """An unknown top-level key close to a known one is an error (a misspelled max_parallel or
    timeout would be lost); others only warn."""
    if close is not None:
        return f'unknown key; did you mean "{close}"? Fix its name or remove it'
    return None


__all__ = [
    "FLOW_KEYS", "TASK_KEYS", "args_list", "param_names", "param_value", "parse_flow",
    "relative_file", "substitute_params", "task_field",
]
