"""Secrets at run time: decrypt what one pipeline may have, only when its run starts."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping

from fastflow.config.links import link_problem
from fastflow.errors import SecretsError
from fastflow.model import Pipeline, RepoConfig


def requested_secrets(pipeline: Pipeline, run_config_id: str | None = None) -> dict[str, str]:
    """What a run asks the secrets file for, variable -> secret name: the pipeline's `secrets`,
    with those of its run configuration `run_config_id` added over them (the same variable: the
    run configuration's secret). An unknown run configuration adds none: the runner refuses such
    a run before anything is loaded."""
    requested = dict(pipeline.secrets)
    if run_config_id is not None:
        try:
            requested.update(pipeline.run_config(run_config_id).secrets)
        except KeyError:
            pass
    return requested


def secrets_loader(repo_root: Path, config: RepoConfig, pipeline: Pipeline,
                   environ: Mapping[str, str], run_config_id: str | None = None
                   ) -> Callable[[], dict[str, str]] | None:
    """A function that decrypts the secrets a run of `pipeline` (with run configuration
    `run_config_id`) asks for and returns them by variable name; None when it asks for none.

    Nothing is read or decrypted until the function is called at run start; the values live
    only in memory. `SecretsError` names the file and the secrets that are missing, not
    granted, or untrusted (MAC mismatch, no identity).
    """
    requested = requested_secrets(pipeline, run_config_id)
    if not requested:
        return None
    path = Path(repo_root) / config.secrets_file
    environ = dict(environ)

    def load() -> dict[str, str]:
        # Imported here, at run start, and only for pipelines that ask for secrets: the
        # cryptography stack costs ~60 ms that every `fastflow run` would otherwise pay.
        from fastflow.secrets.store import identities_for, resolve_for_pipeline

        link = link_problem(Path(repo_root), path)  # never decrypt a file from elsewhere
        if link is not None:
            raise SecretsError(f"{config.secrets_file}: {link}")
        if not path.is_file():
            names = ", ".join(dict.fromkeys(requested.values()))
            raise SecretsError(
                f"{config.secrets_file}: does not exist, but pipeline {pipeline.name!r} asks for "
                f"secrets {names}; create it with `fastflow secrets init` "
                "and `fastflow secrets set NAME`"
            )
        try:
            return resolve_for_pipeline(path, pipeline.name, requested,
                                        identities_for(path, environ))
        except SecretsError as exc:
            # The store names the file it opened: for the daemon, a snapshot of the commit in
            # its state dir. People know the file by its name in the repository.
            message = str(exc)
            if not message.startswith(f"{path}:"):
                raise
            raise SecretsError(config.secrets_file + message[len(str(path)):]) from None

    return load
