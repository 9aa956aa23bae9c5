"""The Fast-Flow secrets file (`.fastflow/secrets.enc.yaml`): named secrets and their grants.

A plain SOPS file: each top-level key is a secret (encrypted), and `access_unencrypted` maps a
secret name to the pipelines allowed to receive it. The access map stays readable in review
(SOPS's `_unencrypted` suffix) but is covered by the MAC, so a grant edited without the key makes
the whole file refused. Every operation here is the library twin of a `fastflow secrets` command;
the runner calls `resolve_for_pipeline`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Mapping, Sequence

from fastflow.defaults import RESERVED_ENV_PREFIX
from fastflow.errors import SecretsError
from fastflow.files import write_atomic
from fastflow.secrets.age import X25519Identity
from fastflow.secrets.keys import (
    creation_rule_for,
    find_sops_config,
    load_identities,
    split_recipients,
)
from fastflow.secrets.sops import Decrypted, format_go_float
from fastflow.secrets.sopsfile import decrypt_file, encrypt_plain, parse_file, reencrypt
from fastflow.secrets.yamltree import Comment, YMap, YSeq, format_time

ACCESS_KEY = "access_unencrypted"
SECRET_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
PIPELINE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
SOPS_CONFIG_RULE = r"(^|/)\.fastflow/secrets\.enc\.yaml$"


@dataclass(frozen=True)
class SecretInfo:
    """A secret's name and the pipelines granted it (never its value)."""

    name: str
    pipelines: tuple[str, ...]


# --- Reading and writing ---------------------------------------------------------------------

def read_text(path: Path) -> str:
    """The secrets file's text; SecretsError saying how to create it when missing."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SecretsError(f"{path}: no secrets file; create it with "
                           "`fastflow secrets init --recipient age1...`") from None
    except OSError as exc:
        raise SecretsError(f"{path}: cannot read the secrets file: {exc.strerror}") from None


def open_secrets(path: Path, identities: Sequence[X25519Identity]) -> Decrypted:
    """Decrypt the secrets file and verify its MAC and shape (grants must be MAC-covered)."""
    decrypted = decrypt_file(parse_file(read_text(path), str(path)), identities)
    if decrypted.metadata.mac_only_encrypted:
        raise SecretsError(f"{path}: sops.mac_only_encrypted is true, so the grants in "
                           f"{ACCESS_KEY} are not protected by the MAC; re-create the file "
                           "with `fastflow secrets init`")
    validate(decrypted.documents, str(path), decrypted.metadata.rule.encrypts)
    return decrypted


def validate(documents: list[YMap], source: str, encrypts: Any = None) -> None:
    """Check the layout: one document, secret names usable as env vars, the access map shape."""
    if len(documents) != 1:
        raise SecretsError(f"{source}: a secrets file has exactly one YAML document, not "
                           f"{len(documents)}")
    root = documents[0]
    for name in root.keys():
        if name == ACCESS_KEY:
            continue
        _check_name(name, source)
        if encrypts is not None and not encrypts([name]):
            raise SecretsError(f"{source}: secret {name} is not encrypted by the file's "
                               "sops rule; every secret must be encrypted")
    access = root.get(ACCESS_KEY, YMap())
    if not isinstance(access, YMap):
        raise SecretsError(f"{source}: {ACCESS_KEY} must map secret names to lists of pipelines")
    for item in access:
        if isinstance(item, Comment):
            continue
        name, pipelines = item
        if not isinstance(pipelines, YSeq) or not all(
                isinstance(p, (str, Comment)) for p in pipelines):
            raise SecretsError(f"{source}: {ACCESS_KEY}.{name} must be a list of pipeline names")
        for pipeline in (p for p in pipelines if isinstance(p, str)):
            _check_pipeline(pipeline, source)


def valid_secret_name(name: str) -> bool:
    """Whether `name` can be a secret of the file (it becomes an environment variable)."""
    return bool(SECRET_NAME_RE.match(name)) and not name.endswith("_unencrypted") and \
        not name.startswith(RESERVED_ENV_PREFIX) and name != "sops"


def _check_name(name: str, source: str) -> None:
    if not valid_secret_name(name):
        raise SecretsError(f"{source}: {name!r} is not a valid secret name: use letters, digits "
                           "and _, not starting with a digit, FASTFLOW_ or ending in _unencrypted "
                           "(it becomes an environment variable)")


def _check_pipeline(name: str, source: str) -> None:
    if not PIPELINE_NAME_RE.match(name):
        raise SecretsError(f"{source}: {name!r} is not a valid pipeline name "
                           "([A-Za-z0-9][A-Za-z0-9_.-]{0,62})")


def _secrets(root: YMap) -> dict[str, Any]:
    return {k: v for k, v in (i for i in root if isinstance(i, tuple)) if k != ACCESS_KEY}


def _grants(root: YMap) -> dict[str, tuple[str, ...]]:
    access = root.get(ACCESS_KEY) or YMap()
    return {k: tuple(p for p in v if isinstance(p, str))
            for k, v in (i for i in access if isinstance(i, tuple))}


def _as_env(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return format_go_float(value)
    if isinstance(value, datetime):
        return format_time(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _save(path: Path, decrypted: Decrypted, now: datetime, **options: Any) -> None:
    write_atomic(path, reencrypt(decrypted, decrypted.documents, now, **options))


def _require(root: YMap, name: str, path: Path) -> None:
    if name not in _secrets(root):
        known = ", ".join(sorted(_secrets(root))) or "none"
        raise SecretsError(f"{path}: no secret named {name} (secrets: {known})")


# --- Operations (library twins of `fastflow secrets ...`) --------------------------------------

def init_secrets(path: Path, recipients: Sequence[str], now: datetime, repo_root: Path,
                 environ: Any = None) -> Path | None:
    """Create an empty secrets file for `recipients` and, when the repository has no
    `.sops.yaml`, one whose creation rule names them; returns the `.sops.yaml` written or None."""
    if path.exists():
        raise SecretsError(f"{path}: the secrets file already exists; add recipients with "
                           "`fastflow secrets recipients add`")
    config = find_sops_config(repo_root, environ or {})
    recipients = split_recipients(list(recipients))
    if config is not None:
        rule = creation_rule_for(config, path)
        recipients = recipients or list(rule.recipients)
    if not recipients:
        raise SecretsError("no recipients: pass --recipient age1... (see `fastflow secrets keygen`)")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, encrypt_plain([YMap([(ACCESS_KEY, YMap())])], str(path), recipients, now))
    if config is not None:
        return None
    config = repo_root / ".sops.yaml"
    config.write_text("creation_rules:\n"
                      f"    - path_regex: '{SOPS_CONFIG_RULE}'\n"
                      f"      age: '{','.join(recipients)}'\n", encoding="utf-8")
    return config


def set_secret(path: Path, name: str, value: str, identities: Sequence[X25519Identity],
               now: datetime) -> bool:
    """Create or replace secret `name`; True when it is new. Other values keep their ciphertext."""
    _check_name(name, str(path))
    if value == "":
        raise SecretsError(f"{path}: the value for {name} is empty; SOPS stores empty values "
                           "unencrypted, so Fast-Flow refuses them")
    decrypted = open_secrets(path, identities)
    root = decrypted.documents[0]
    created = name not in _secrets(root)
    if created:
        position = next((i for i, item in enumerate(root)
                         if isinstance(item, tuple) and item[0] == ACCESS_KEY), len(root))
        root.insert(position, (name, value))
    else:
        root.set(name, value)
    _save(path, decrypted, now)
    return created


def read_secrets(path: Path, identities: Sequence[X25519Identity]
                 ) -> tuple[dict[str, str], dict[str, tuple[str, ...]]]:
    """Every secret's value (as its environment text) and every grant, MAC verified."""
    root = open_secrets(path, identities).documents[0]
    return {k: _as_env(v) for k, v in _secrets(root).items()}, _grants(root)


def add_secrets(path: Path, values: Mapping[str, str], grants: Mapping[str, Sequence[str]],
                identities: Sequence[X25519Identity], now: datetime,
                recipients: Sequence[str] = ()) -> None:
    """Set several secrets and add grants (secret -> pipelines) in one write. A missing file is
    created for `recipients`, like `init_secrets` (no identity needed then); in an existing one
    the other values keep their ciphertext."""
    for name, value in values.items():
        _check_name(name, str(path))
        if value == "":
            raise SecretsError(f"{path}: the value for {name} is empty; SOPS stores empty "
                               "values unencrypted, so Fast-Flow refuses them")
    for pipeline in (p for names in grants.values() for p in names):
        _check_pipeline(pipeline, str(path))
    if path.exists():
        decrypted = open_secrets(path, identities)
        root = decrypted.documents[0]
    else:
        decrypted, root = None, YMap([(ACCESS_KEY, YMap())])
    for name, value in values.items():
        if name in _secrets(root):
            root.set(name, value)
        else:
            position = next((i for i, item in enumerate(root)
                             if isinstance(item, tuple) and item[0] == ACCESS_KEY), len(root))
            root.insert(position, (name, value))
    access = root.get(ACCESS_KEY)
    if not isinstance(access, YMap):
        access = YMap()
        root.append((ACCESS_KEY, access))
    for name, pipelines in grants.items():
        _require(root, name, path)
        current = access.get(name)
        if not isinstance(current, YSeq):
            current = YSeq()
            access.set(name, current)
        current.extend(p for p in dict.fromkeys(pipelines) if p not in current)
    if decrypted is not None:
        _save(path, decrypted, now)
        return
    if not recipients:
        raise SecretsError(f"{path}: no secrets file and no recipients to create it for; "
                           "create it with `fastflow secrets init --recipient age1...`")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, encrypt_plain([root], str(path), list(recipients), now))


def get_secret(path: Path, name: str, identities: Sequence[X25519Identity]) -> str:
    """The value of secret `name` (after verifying the whole file's MAC)."""
    root = open_secrets(path, identities).documents[0]
    _require(root, name, path)
    return _as_env(_secrets(root)[name])


def list_secrets(path: Path, identities: Sequence[X25519Identity] | None = None) -> list[SecretInfo]:
    """Secret names and their grants. With identities the MAC is verified first; without,
    the names and grants are read as they stand in the file (unverified)."""
    if identities is None:
        sops_file = parse_file(read_text(path), str(path))
        validate(sops_file.documents, str(path))
        root = sops_file.documents[0]
    else:
        root = open_secrets(path, identities).documents[0]
    grants = _grants(root)
    return [SecretInfo(name, grants.get(name, ())) for name in _secrets(root)]


def remove_secret(path: Path, name: str, identities: Sequence[X25519Identity], now: datetime) -> None:
    """Delete secret `name` and its grants."""
    decrypted = open_secrets(path, identities)
    root = decrypted.documents[0]
    _require(root, name, path)
    root.remove(name)
    access = root.get(ACCESS_KEY)
    if isinstance(access, YMap):
        access.remove(name)
    _save(path, decrypted, now)


def grant_secret(path: Path, name: str, pipelines: Sequence[str],
                 identities: Sequence[X25519Identity], now: datetime) -> list[str]:
    """Allow `pipelines` to receive secret `name`; returns the pipelines newly granted."""
    for pipeline in pipelines:
        _check_pipeline(pipeline, str(path))
    decrypted = open_secrets(path, identities)
    root = decrypted.documents[0]
    _require(root, name, path)
    access = root.get(ACCESS_KEY)
    if not isinstance(access, YMap):
        access = YMap()
        root.append((ACCESS_KEY, access))
    current = access.get(name)
    if not isinstance(current, YSeq):
        current = YSeq()
        access.set(name, current)
    added = [p for p in dict.fromkeys(pipelines) if p not in current]
    current.extend(added)
    _save(path, decrypted, now)
    return added


def revoke_secret(path: Path, name: str, pipelines: Sequence[str],
                  identities: Sequence[X25519Identity], now: datetime) -> list[str]:
    """Withdraw `pipelines`' grant of secret `name`; returns the pipelines that had it."""
    decrypted = open_secrets(path, identities)
    root = decrypted.documents[0]
    _require(root, name, path)
    access = root.get(ACCESS_KEY)
    current = access.get(name) if isinstance(access, YMap) else None
    had = [p for p in pipelines if isinstance(current, YSeq) and p in current]
    missing = [p for p in pipelines if p not in had]
    if missing:
        raise SecretsError(f"{path}: secret {name} is not granted to {', '.join(missing)} "
                           f"(granted to: {', '.join(_grants(root).get(name, ())) or 'none'})")
    current[:] = [p for p in current if p not in had]
    if not [p for p in current if isinstance(p, str)]:
        access.remove(name)
    _save(path, decrypted, now)
    return had


def rotate_data_key(path: Path, identities: Sequence[X25519Identity], now: datetime) -> None:
    """A new data key: every value re-encrypted, the key re-wrapped for every recipient."""
    _save(path, open_secrets(path, identities), now, rotate=True)


def list_recipients(path: Path) -> list[str]:
    """The age recipients the data key is wrapped for (no key needed)."""
    return parse_file(read_text(path), str(path)).metadata.recipients


def identities_for(path: Path, environ: Mapping[str, str]) -> list[X25519Identity]:
    """The identities `environ` provides for this file (its recipients are passed to
    SOPS_AGE_KEY_CMD); when the file cannot be read, the error comes later, on opening it."""
    try:
        recipients = list_recipients(path)
    except SecretsError:
        recipients = []
    return load_identities(environ, recipients)


def add_recipients(path: Path, recipients: Sequence[str], identities: Sequence[X25519Identity],
                   now: datetime) -> list[str]:
    """Wrap the data key for more recipients; returns those newly added."""
    new = split_recipients(list(recipients))
    decrypted = open_secrets(path, identities)
    current = decrypted.metadata.recipients
    added = [r for r in dict.fromkeys(new) if r not in current]
    _save(path, decrypted, now, recipients=current + added)
    return added


def remove_recipients(path: Path, recipients: Sequence[str], identities: Sequence[X25519Identity],
                      now: datetime) -> None:
    """Stop wrapping the data key for `recipients`. The data key is rotated too, since a removed
    recipient may have kept the old one."""
    decrypted = open_secrets(path, identities)
    current = decrypted.metadata.recipients
    unknown = [r for r in recipients if r not in current]
    if unknown:
        raise SecretsError(f"{path}: {', '.join(unknown)} is not a recipient of this file "
                           f"(recipients: {', '.join(current)})")
    remaining = [r for r in current if r not in recipients]
    if not remaining:
        raise SecretsError(f"{path}: removing {', '.join(recipients)} would leave no recipient "
                           "able to decrypt the file; add another recipient first")
    _save(path, decrypted, now, recipients=remaining, rotate=True)


def resolve_for_pipeline(path: Path, pipeline_name: str,
                         requested: Mapping[str, str] | Sequence[str],
                         identities: Sequence[X25519Identity]) -> dict[str, str]:
    """The secrets a run asked for (variable -> secret name; a list of names asks for each under
    its own name), as env values by variable. SecretsError, before anything is injected, when the
    file is untrusted or a secret is missing or not granted (naming the variable when it differs)."""
    wanted = dict(requested) if isinstance(requested, Mapping) else {n: n for n in requested}
    if not wanted:
        return {}
    root = open_secrets(path, identities).documents[0]
    secrets, grants = _secrets(root), _grants(root)
    names = list(dict.fromkeys(wanted.values()))
    missing = [n for n in names if n not in secrets]
    refused = [n for n in names if n in secrets and pipeline_name not in grants.get(n, ())]

    def shown(name: str) -> str:
        variables = [v for v, n in wanted.items() if n == name and v != name]
        return name + (f" (asked for as {', '.join(variables)})" if variables else "")

    problems = []
    if missing:
        problems.append(f"asks for secrets that do not exist: {', '.join(map(shown, missing))} "
                        "(create them with `fastflow secrets set NAME`)")
    if refused:
        problems.append(f"is not granted {', '.join(map(shown, refused))} (the secret's owner "
                        f"grants it with `fastflow secrets grant NAME {pipeline_name}`)")
    if problems:
        raise SecretsError(f"{path}: pipeline {pipeline_name} " + "; and ".join(problems))
    return {variable: _as_env(secrets[name]) for variable, name in wanted.items()}
