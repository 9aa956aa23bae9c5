"""Configuration: parse and validate `.fastflow/config.yaml` and pipeline.json into the model.

The one import point for other layers. The work is split by file:
`repo` (config.yaml -> `RepoConfig`), `pipeline` (pipeline.json -> the fields of a `Pipeline`),
`schedules` (schedules.yaml -> `Schedule`s), with `sections`, `values` and `sizes` below them. Pure apart from
`load_repo_config` / `check_repo_config`, which read the one file they are named after.
"""
from __future__ import annotations

from fastflow.config.pipeline import (
    PIPELINE_KEYS,
    PipelineMetadata,
    parse_pipeline_metadata,
)
from fastflow.config.repo import (
    CONFIG_FILE,
    check_repo_config,
    default_repo_config,
    load_repo_config,
    parse_repo_config,
    read_repo_config,
)
from fastflow.config.sizes import parse_size, spell_size

__all__ = [
    "CONFIG_FILE",
    "PIPELINE_KEYS",
    "PipelineMetadata",
    "check_repo_config",
    "default_repo_config",
    "spell_size",
    "load_repo_config",
    "parse_pipeline_metadata",
    "parse_repo_config",
    "parse_size",
    "read_repo_config",
]
