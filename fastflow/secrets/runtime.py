"""Secrets at run time: decrypt what one pipeline may have, only when its run starts."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping

from fastflow.config.links import link_problem
from fastflow.errors import SecretsError
from fastflow.model import Pipeline, RepoConfig


def secrets_loader(repo_root: Path, config: RepoConfig, pipeline: Pipeline,
                   environ: Mapping[str, str]) -> Callable[[], dict[str, str]] | None:
    """A function that decrypts the secrets `pipeline` asks for (None when it asks for none).

    Nothing is read or decrypted until the function is called at run start; the values live
    only in memory. `SecretsError` names the file and the secrets that are missing, not
    granted, or untrusted (MAC mismatch, no identity).
    """
    if not pipeline.secrets:
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
            raise SecretsError(
                f"{config.secrets_file}: does not exist, but pipeline {pipeline.name!r} asks for "
                f"secrets {', '.join(pipeline.secrets)}; create it with `fastflow secrets init` "
                "and `fastflow secrets set NAME`"
            )
        try:
            return resolve_for_pipeline(path, pipeline.name, pipeline.secrets,
                                        identities_for(path, environ))
        except SecretsError as exc:
            # The store names the file it opened: for the daemon, a snapshot of the commit in
            # its state dir. People know the file by its name in the repository.
            message = str(exc)
            if not message.startswith(f"{path}:"):
                raise
            raise SecretsError(config.secrets_file + message[len(str(path)):]) from None

    return load
