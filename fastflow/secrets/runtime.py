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
    environ = dict(environ)
    return lambda: _resolve(Path(repo_root), config, pipeline, requested, environ)


def webhook_secrets(repo_root: Path, config: RepoConfig, pipeline: Pipeline,
                    environ: Mapping[str, str]) -> tuple[str, ...]:
    """The values of the secrets `pipeline`'s signed webhooks are checked with (its
    `webhook_secret` names, in that order), decrypted from the secrets file of the repository
    at `repo_root` (for the daemon: the snapshot of the deployed commit; the caller caches the
    result per commit). () when the pipeline names none. `SecretsError`, as for a run's
    secrets, when the file is missing or untrusted or a name is missing or not granted."""
    names = pipeline.webhook_secret
    if not names:
        return ()
    found = _resolve(Path(repo_root), config, pipeline, {n: n for n in names}, dict(environ))
    return tuple(found[n] for n in names)


def _resolve(repo_root: Path, config: RepoConfig, pipeline: Pipeline,
             requested: Mapping[str, str], environ: Mapping[str, str]) -> dict[str, str]:
    # Imported here, at run start, and only for pipelines that ask for secrets: the
    # cryptography stack costs ~60 ms that every `fastflow run` would otherwise pay.
    from fastflow.secrets.store import identities_for, resolve_for_pipeline

    path = repo_root / config.secrets_file
    link = link_problem(repo_root, path)  # never decrypt a file from elsewhere
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
        return resolve_for_pipeline(path, pipeline.name, requested, identities_for(path, environ))
    except SecretsError as exc:
        # The store names the file it opened: for the daemon, a snapshot of the commit in
        # its state dir. People know the file by its name in the repository.
        message = str(exc)
        if not message.startswith(f"{path}:"):
            raise
        raise SecretsError(config.secrets_file + message[len(str(path)):]) from None


def notification_urls(repo_root: Path, config: RepoConfig, names: Mapping[str, str | None],
                      environ: Mapping[str, str]) -> dict[str, str]:
    """The URLs of notification targets kept in the secrets file: secret name -> value, for
    `names` (secret name -> the pipeline whose pipeline.json names it, None for config.yaml's).

    A target of config.yaml may name any secret of the file (config.yaml holds the
    repository's own settings, and the URL never reaches a run); a target of a pipeline.json
    only a secret granted to that pipeline, as for its runs. `SecretsError` names the file and
    what is missing, not granted or untrusted; never a value."""
    if not names:
        return {}
    from fastflow.secrets.store import identities_for, read_secrets

    path = Path(repo_root) / config.secrets_file
    link = link_problem(Path(repo_root), path)
    if link is not None:
        raise SecretsError(f"{config.secrets_file}: {link}")
    listed = ", ".join(sorted(names))
    if not path.is_file():
        raise SecretsError(f"{config.secrets_file}: does not exist, but notifications name "
                           f"secrets {listed}; create it with `fastflow secrets init` and "
                           "`fastflow secrets set NAME`")
    try:
        values, grants = read_secrets(path, identities_for(path, environ))
    except SecretsError as exc:
        message = str(exc)
        if message.startswith(f"{path}:"):
            raise SecretsError(config.secrets_file + message[len(str(path)):]) from None
        raise
    missing = sorted(n for n in names if n not in values)
    refused = sorted(n for n, p in names.items() if n in values and p is not None
                     and p not in grants.get(n, ()))
    if missing:
        raise SecretsError(f"{config.secrets_file}: notifications name secrets that do not "
                           f"exist: {', '.join(missing)} (create them with `fastflow secrets "
                           "set NAME`)")
    if refused:
        shown = ", ".join(f"{n} (pipeline {names[n]})" for n in refused)
        raise SecretsError(f"{config.secrets_file}: notifications of a pipeline name secrets "
                           f"not granted to it: {shown} (grant with `fastflow secrets grant "
                           "NAME PIPELINE`)")
    return {n: values[n].strip() for n in names}
