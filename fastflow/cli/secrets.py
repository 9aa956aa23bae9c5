"""`fastflow secrets ...`: thin commands over `fastflow.secrets` (see docs/secrets.md).

Values are read from stdin or a hidden prompt, never from argv (argv shows in `ps` and in shell
history). Identities come from the environment the way `sops` finds them.
"""
from __future__ import annotations

import shlex
import sys
from datetime import datetime, timezone
from pathlib import Path

import click

from fastflow import secrets as lib
from fastflow.cli.common import FastflowGroup, echo_json, host_environment, repo_option
from fastflow.config import check_repo_config
from fastflow.defaults import DEFAULT_SECRETS_FILE
from fastflow.deploy.discovery import metadata_files
from fastflow.errors import SecretsError


def _now() -> datetime:
    return datetime.now(timezone.utc)


def file_option(func):
    """`--repo DIR` and `--file PATH` (default: <repo>/.fastflow/secrets.enc.yaml)."""
    func = click.option("--file", "file", type=click.Path(dir_okay=False, path_type=Path),
                        default=None, help=f"The secrets file [default: <repo>/{DEFAULT_SECRETS_FILE}].")(func)
    return repo_option(func)


def _path(repo: Path, file: Path | None) -> Path:
    """`--file`, else the repository's `secrets_file` (config.yaml), else the default path."""
    if file is not None:
        return file
    config, _ = check_repo_config(repo)
    return repo / (config.secrets_file if config is not None else DEFAULT_SECRETS_FILE)


def _identities(path: Path) -> list:
    return lib.identities_for(path, host_environment())


@click.group(cls=FastflowGroup)
def secrets() -> None:
    """Encrypted secrets (SOPS format, age keys) and which pipelines may receive them."""


@secrets.command()
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the identity to this file (mode 0600) instead of stdout.")
def keygen(output: Path | None) -> None:
    """Generate an age identity; prints its public key (the recipient)."""
    identity = lib.X25519Identity.generate()
    if output is None:
        click.echo(lib.identity_file_text(identity, _now()), nl=False)
        click.echo(f"Public key: {identity.recipient}", err=True)
        return
    lib.write_identity_file(output, identity, _now())
    click.echo(identity.recipient)


@secrets.command()
@file_option
@click.option("--recipient", "recipients", multiple=True, metavar="AGE1...",
              help="An age recipient (repeatable); default: the .sops.yaml creation rule.")
def init(repo: Path, file: Path | None, recipients: tuple[str, ...]) -> None:
    """Create the secrets file (and a .sops.yaml rule when there is none)."""
    path = _path(repo, file)
    config = lib.init_secrets(path, recipients, _now(), repo, host_environment())
    click.echo(f"Created {path}" + (f" and {config}" if config else ""))


def _read_value(name: str) -> str:
    if sys.stdin is not None and not sys.stdin.isatty():
        value = click.get_text_stream("stdin").read()
        return value[:-2] if value.endswith("\r\n") else value.removesuffix("\n")
    return click.prompt(f"Value for {name}", hide_input=True, confirmation_prompt=True)


@secrets.command("set")
@file_option
@click.argument("name")
def set_(repo: Path, file: Path | None, name: str) -> None:
    """Set secret NAME from stdin (one trailing newline dropped) or a hidden prompt."""
    path = _path(repo, file)
    created = lib.set_secret(path, name, _read_value(name), _identities(path), _now())
    click.echo(f"{'Created' if created else 'Updated'} {name}", err=True)


@secrets.command()
@file_option
@click.argument("name")
def get(repo: Path, file: Path | None, name: str) -> None:
    """Print the value of secret NAME."""
    path = _path(repo, file)
    click.echo(lib.get_secret(path, name, _identities(path)))


@secrets.command("list")
@file_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_(repo: Path, file: Path | None, as_json: bool) -> None:
    """List secret names and the pipelines granted each (never values)."""
    path = _path(repo, file)
    identities = _identities(path)
    infos = lib.list_secrets(path, identities or None)
    if as_json:
        echo_json({"verified": bool(identities),
                   "secrets": [{"name": i.name, "pipelines": list(i.pipelines)} for i in infos]})
        return
    if not identities:
        click.echo("Warning: no age identity found; grants shown are not verified", err=True)
    for info in infos:
        click.echo(f"{info.name}\t{', '.join(info.pipelines) or '(no pipeline)'}")


@secrets.command()
@file_option
@click.argument("name")
def rm(repo: Path, file: Path | None, name: str) -> None:
    """Delete secret NAME and its grants."""
    path = _path(repo, file)
    lib.remove_secret(path, name, _identities(path), _now())
    click.echo(f"Removed {name}", err=True)


@secrets.command()
@file_option
@click.argument("name")
@click.argument("pipelines", nargs=-1, required=True)
def grant(repo: Path, file: Path | None, name: str, pipelines: tuple[str, ...]) -> None:
    """Allow PIPELINES to receive secret NAME."""
    path = _path(repo, file)
    lib.grant_secret(path, name, pipelines, _identities(path), _now())
    click.echo(f"Granted {name} to {', '.join(pipelines)}", err=True)


@secrets.command()
@file_option
@click.argument("name")
@click.argument("pipelines", nargs=-1, required=True)
def revoke(repo: Path, file: Path | None, name: str, pipelines: tuple[str, ...]) -> None:
    """Withdraw secret NAME from PIPELINES."""
    path = _path(repo, file)
    lib.revoke_secret(path, name, pipelines, _identities(path), _now())
    click.echo(f"Revoked {name} from {', '.join(pipelines)}", err=True)


@secrets.command()
@file_option
def edit(repo: Path, file: Path | None) -> None:
    """Edit the decrypted file in $EDITOR (a private temporary file), then re-encrypt it."""
    path = _path(repo, file)
    environ = host_environment()
    editor = shlex.split(environ.get("VISUAL") or environ.get("EDITOR") or "vi")
    changed = lib.edit_secrets(path, _identities(path), editor, _now())
    click.echo(f"Saved {path}" if changed else "No changes", err=True)


@secrets.command()
@file_option
def rotate(repo: Path, file: Path | None) -> None:
    """Make a new data key and re-encrypt every value with it."""
    path = _path(repo, file)
    lib.rotate_data_key(path, _identities(path), _now())
    click.echo(f"Rotated the data key of {path}", err=True)


@secrets.command("import-fernet")
@repo_option
@click.option("--dry-run", is_flag=True,
              help="Print the plan (names, grants, files); change nothing.")
@click.option("--partial", is_flag=True,
              help="Import what can be decrypted; leave the values that cannot in place.")
def import_fernet(repo: Path, dry_run: bool, partial: bool) -> None:
    """Move Fast-Flow's encrypted_env (Fernet, key in $ENCRYPTION_KEY) into the secrets file."""
    environ = host_environment()
    if not environ.get(lib.KEY_VARIABLE):
        raise SecretsError(f"{lib.KEY_VARIABLE} is not set; run `{lib.KEY_VARIABLE}=... fastflow "
                           "secrets import-fernet` with the key of the Fast-Flow server (from its "
                           ".env); it is never taken as an argument")
    plan = lib.plan_import(repo, lib.fernet_key(environ[lib.KEY_VARIABLE]), environ,
                           _metadata_files(repo))
    if not plan.assignments and not plan.skipped:
        click.echo("Nothing to import: no pipeline metadata file has encrypted_env values")
        return
    if dry_run or (plan.skipped and not partial):
        _echo_plan(plan, done=False)
        if plan.skipped and not partial:
            raise SecretsError(f"nothing was changed: {len(plan.skipped)} value(s) of "
                               "encrypted_env cannot be imported (listed above); fix them, or "
                               "import the others with --partial")
        click.echo("Nothing was changed (--dry-run).")
        return
    lib.apply_import(plan, environ, _now())
    _echo_plan(plan, done=True)
    if plan.skipped:
        click.echo("The values that cannot be imported stay in encrypted_env; their pipelines "
                   "stay invalid until they are fixed.", err=True)
    click.echo("Next: review the change with `git diff`, then commit it: "
               f"git commit {' '.join(plan.changed_files)}")


def _metadata_files(repo: Path) -> list[tuple[str, Path]]:
    """(pipeline, metadata file) of every pipeline discovery finds (none when config.yaml is
    invalid: `plan_import` then says why)."""
    config, _ = check_repo_config(repo)
    return metadata_files(repo, config) if config is not None else []


def _echo_plan(plan: lib.ImportPlan, done: bool) -> None:
    """The plan as people read it: names, grants and files, never a value."""
    def verb(would: str, did: str) -> str:
        return did if done else would

    target = plan.secrets_file + (" (a new file)" if plan.creates_file else "")
    if plan.assignments:
        click.echo(f"{verb('Would import', 'Imported')} {len(plan.assignments)} value(s) into "
                   f"{target}:")
    for a in plan.assignments:
        how = "new secret" if a.new else "same value as secret " + a.secret
        click.echo(f"  {a.entry.file}: {a.entry.field} -> {a.secret} ({how})")
    for name, pipelines in plan.grants:
        click.echo(f"{verb('Would grant', 'Granted')} {name} to {', '.join(pipelines)}")
    if plan.files:
        click.echo(f"{verb('Would rewrite', 'Rewrote')} {', '.join(plan.files)} "
                   "(encrypted_env -> secrets)")
    if plan.skipped:
        click.echo(f"Cannot import {len(plan.skipped)} value(s):", err=True)
        for skipped in plan.skipped:
            click.echo(f"  {skipped}", err=True)


@secrets.group(cls=FastflowGroup)
def recipients() -> None:
    """The age recipients the data key is wrapped for."""


@recipients.command("list")
@file_option
def recipients_list(repo: Path, file: Path | None) -> None:
    """Print the recipients, one a line."""
    for recipient in lib.list_recipients(_path(repo, file)):
        click.echo(recipient)


@recipients.command("add")
@file_option
@click.argument("recipients_", metavar="AGE1...", nargs=-1, required=True)
def recipients_add(repo: Path, file: Path | None, recipients_: tuple[str, ...]) -> None:
    """Wrap the data key for more recipients."""
    path = _path(repo, file)
    added = lib.add_recipients(path, recipients_, _identities(path), _now())
    click.echo(f"Added {', '.join(added) or 'nothing (already recipients)'}", err=True)


@recipients.command("rm")
@file_option
@click.argument("recipients_", metavar="AGE1...", nargs=-1, required=True)
def recipients_rm(repo: Path, file: Path | None, recipients_: tuple[str, ...]) -> None:
    """Stop wrapping the data key for recipients (the data key is rotated too)."""
    path = _path(repo, file)
    lib.remove_recipients(path, recipients_, _identities(path), _now())
    click.echo(f"Removed {', '.join(recipients_)} and rotated the data key", err=True)


def _read_file(file: Path) -> str:
    try:
        return file.read_text(encoding="utf-8")
    except OSError as exc:
        raise SecretsError(f"{file}: cannot read: {exc.strerror}") from None


def _emit(text: str, file: Path, in_place: bool) -> None:
    if in_place:
        lib.write_atomic(file, text)
    else:
        click.echo(text, nl=False)


@secrets.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-i", "--in-place", is_flag=True, help="Replace FILE instead of printing.")
def decrypt(file: Path, in_place: bool) -> None:
    """Decrypt any SOPS YAML FILE (like `sops -d`)."""
    text = _read_file(file)
    identities = lib.load_identities(host_environment(), lib.recipients_of(text, str(file)))
    _emit(lib.decrypt_file_text(text, str(file), identities), file, in_place)


@secrets.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--age", "age_", default=None, metavar="AGE1,...",
              help="Comma-separated recipients; default: the matching .sops.yaml rule.")
@click.option("-i", "--in-place", is_flag=True, help="Replace FILE instead of printing.")
def encrypt(file: Path, age_: str | None, in_place: bool) -> None:
    """Encrypt any plain YAML FILE (like `sops -e --age ...`)."""
    environ = host_environment()
    config = lib.find_sops_config(Path.cwd(), environ)
    rule = lib.creation_rule_for(config, file) if config and not age_ else None
    recipients = lib.split_recipients(age_) if age_ else (list(rule.recipients) if rule else [])
    text = lib.encrypt_file_text(_read_file(file), str(file), recipients, _now(),
                                 rule.rule if rule else None,
                                 rule.mac_only_encrypted if rule else False)
    _emit(text, file, in_place)
