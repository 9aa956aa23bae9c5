"""The environment of one attempt: the layers of env with their precedence, and the
`FASTFLOW_*` run-context variables (docs/pipeline-json.md, "Environment")."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Mapping

from fastflow.config.values import MAX_ENV_VALUE, is_runner_variable
from fastflow.defaults import RESERVED_ENV_PREFIX
from fastflow.errors import ConfigError
from fastflow.model import Pipeline, PipelineType, RunConfig
from fastflow.record import FlowTaskInput, WebhookInput

NOTEBOOK_CELLS_ENV = "FASTFLOW_NOTEBOOK_CELLS"  # read by fastflow/executors/notebook.py
WEBHOOK_HEADERS_ENV = "FASTFLOW_WEBHOOK_HEADERS"  # JSON of a webhook request's selected headers


@dataclass(frozen=True)
class RunContext:
    """The values of the `FASTFLOW_*` variables of one attempt."""

    run_id: str
    pipeline: str
    attempt: int
    trigger: str
    run_config: str | None = None
    commit: str | None = None


def flow_env(flow: FlowTaskInput) -> dict[str, str]:
    """The `FASTFLOW_*` variables of a flow's task (docs/flows.md, "What a task gets"):
    the flow, the flow run, the task, the params and the outputs of its dependencies as JSON.
    The workspace variables (`FASTFLOW_WORKSPACE`, `TMP_DIR`, `FASTFLOW_OUTPUT`) come from
    the executor, which knows where the workspace is mounted."""
    return {
        "FASTFLOW_FLOW": flow.flow,
        "FASTFLOW_FLOW_RUN_ID": flow.flow_run_id,
        "FASTFLOW_TASK": flow.task,
        "FASTFLOW_PARAMS": json.dumps(dict(flow.params), sort_keys=True),
        "FASTFLOW_INPUTS": json.dumps(dict(flow.inputs), sort_keys=True),
    }


def _check_user_env(env: Mapping[str, object], where: str) -> None:
    for key in env:
        if str(key).startswith(RESERVED_ENV_PREFIX):
            raise ConfigError(
                f"{where}: {key} cannot be set: variables starting with FASTFLOW_ are set by "
                "Fast-Flow for every run and cannot be overridden; rename the variable"
            )


def webhook_env(pipeline: Pipeline, webhook: WebhookInput,
                secrets: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
    """The env a webhook request sets that its run gets, and one line per variable refused,
    saying why (the run's log lists them: never silently dropped). Checked again at run start,
    against the pipeline at the run's commit, whatever the intake let through: a variable must
    be in the pipeline's `webhook_env`, and may never be a secret's variable, a `FASTFLOW_*`
    variable or a runner variable (`config.values.is_runner_variable`: PATH, HOME, PYTHON*,
    UV_*, LD_* and the like); its value may hold no NUL character and at most
    `MAX_ENV_VALUE` characters (what an environment can carry)."""
    allowed, refused = {}, []
    for name, value in webhook.env.items():
        if name in secrets:
            reason = "it would override a secret"
        elif name.startswith(RESERVED_ENV_PREFIX):
            reason = "variables starting with FASTFLOW_ are set by Fast-Flow"
        elif is_runner_variable(name):
            reason = "it is set by the runner (PATH, HOME, PYTHON*, UV_*, LD_* and the like)"
        elif name not in pipeline.webhook_env:
            reason = (f"it is not in the webhook_env of pipeline {pipeline.name!r}; add it "
                      "there to allow it")
        elif "\0" in value:
            reason = "its value contains a NUL character, which environment values cannot hold"
        elif len(value) > MAX_ENV_VALUE:
            reason = (f"its value of {len(value):,} characters is above the maximum of "
                      f"{MAX_ENV_VALUE:,}; send large data in the body, which the run reads "
                      "from FASTFLOW_WEBHOOK_PAYLOAD")
        else:
            allowed[name] = value
            continue
        refused.append(f"webhook env: {name} refused: {reason}")
    return allowed, refused


def build_env(
    pipeline: Pipeline,
    run_config: RunConfig | None,
    trigger_env: Mapping[str, str],
    secrets: Mapping[str, str],
    context: RunContext,
    webhook: WebhookInput | None = None,
    flow: FlowTaskInput | None = None,
) -> dict[str, str]:
    """The environment of one attempt, precedence applied (low to high): the pipeline's
    `default_env`, the run configuration's `default_env`, the trigger's env (`--env`), the
    env of a webhook request (`webhook.env`, already cut by `webhook_env`), secrets
    (by variable name: the pipeline's `secrets` with its run configuration's over them, as
    `secrets.runtime.requested_secrets` maps them), then `FASTFLOW_*` (with
    `FASTFLOW_WEBHOOK_HEADERS` for a webhook run) and `PYTHONUNBUFFERED=1`.
    A user variable named `FASTFLOW_*` raises `ConfigError` naming where it came from.
    `FASTFLOW_ROUTE_FILE` and `FASTFLOW_WEBHOOK_PAYLOAD` are added by the executor; a flow's
    task (`flow`) also gets `flow_env`.
    """
    metadata = pipeline.metadata_file.name if pipeline.metadata_file else "pipeline.json"
    layers = [(pipeline.default_env, f"pipeline {pipeline.name!r} ({metadata}): default_env")]
    if run_config is not None:
        layers.append(
            (run_config.default_env, f"run configuration {run_config.id!r} of pipeline "
             f"{pipeline.name!r} ({metadata}): default_env")
        )
    layers.append((trigger_env, "trigger env (--env)"))
    if webhook is not None:
        layers.append((webhook.env, "webhook env"))
    layers.append((secrets, "secrets"))
    env: dict[str, str] = {}
    for values, where in layers:
        _check_user_env(values, where)
        env.update({str(k): str(v) for k, v in values.items()})
    env.update(
        FASTFLOW_RUN_ID=context.run_id,
        FASTFLOW_PIPELINE=context.pipeline,
        FASTFLOW_ATTEMPT=str(context.attempt),
        FASTFLOW_TRIGGER=context.trigger,
        FASTFLOW_RUN_CONFIG=context.run_config or "",
        FASTFLOW_COMMIT=context.commit or "",
        PYTHONUNBUFFERED="1",
    )
    if webhook is not None:
        env[WEBHOOK_HEADERS_ENV] = json.dumps(dict(webhook.headers), sort_keys=True)
    if flow is not None:
        env.update(flow_env(flow))
    if pipeline.type is PipelineType.NOTEBOOK:
        env[NOTEBOOK_CELLS_ENV] = json.dumps(dict(pipeline.cells), sort_keys=True)
    return env
