"""Where age identities and recipients come from, the way `sops` finds them.

Identities (for decrypting), all sources combined as sops >= 3.11 does: `SOPS_AGE_KEY` (keys
separated by whitespace), `SOPS_AGE_KEY_FILE`, `SOPS_AGE_KEY_CMD` (run without a shell, with
`SOPS_AGE_RECIPIENT` set to each recipient of the file) and the default
`$XDG_CONFIG_HOME/sops/age/keys.txt` (else `~/.config/sops/age/keys.txt`; the Linux location is
used on every platform). Recipients (for encrypting) come from the file itself or from the first
matching `creation_rules` entry of `.sops.yaml`, searched from a directory upward (or
`SOPS_CONFIG`). Every function takes the environment as a parameter and never reads `os.environ`.
"""
from __future__ import annotations

import re
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from fastflow.config.yamlfile import load_yaml
from fastflow.errors import Invalid, SecretsError
from fastflow.secrets.age import (
    AgeError,
    X25519Identity,
    parse_identities,
    parse_recipient,
)
from fastflow.secrets.sops import CRYPT_RULE_KINDS, CryptRule

KEY_CMD_TIMEOUT = 60.0  # seconds a SOPS_AGE_KEY_CMD may take


def default_key_file(environ: Mapping[str, str]) -> Path | None:
    """`$XDG_CONFIG_HOME/sops/age/keys.txt`, else `$HOME/.config/sops/age/keys.txt`."""
    base = environ.get("XDG_CONFIG_HOME") or (
        str(Path(environ["HOME"]) / ".config") if environ.get("HOME") else "")
    return Path(base) / "sops" / "age" / "keys.txt" if base else None


def load_identities(environ: Mapping[str, str], recipients: Sequence[str] = ()) -> list[X25519Identity]:
    """Every age identity the environment provides (possibly none), duplicates removed."""
    found: list[X25519Identity] = []
    if environ.get("SOPS_AGE_KEY"):
        text = "\n".join(environ["SOPS_AGE_KEY"].split())
        found += _parse(text, "SOPS_AGE_KEY")
    if environ.get("SOPS_AGE_KEY_FILE"):
        found += _read_key_file(Path(environ["SOPS_AGE_KEY_FILE"]), "SOPS_AGE_KEY_FILE", True)
    if environ.get("SOPS_AGE_KEY_CMD"):
        for recipient in list(recipients) or [""]:
            found += _run_key_command(environ["SOPS_AGE_KEY_CMD"], environ, recipient)
    default = default_key_file(environ)
    if default is not None:
        found += _read_key_file(default, str(default), False)
    return list(dict.fromkeys(found))


def _parse(text: str, origin: str) -> list[X25519Identity]:
    try:
        return parse_identities(text, origin)
    except AgeError as exc:
        raise SecretsError(str(exc)) from None


def _read_key_file(path: Path, origin: str, required: bool) -> list[X25519Identity]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if required:
            raise SecretsError(f"{origin}: the identity file {path} does not exist; fix the "
                               "variable or create the file with `fastflow secrets keygen`") from None
        return []
    except OSError as exc:
        raise SecretsError(f"{origin}: cannot read the identity file {path}: {exc.strerror}") from None
    label = str(path) if origin == str(path) else f"{origin} ({path})"
    return _parse(text, label)


def _run_key_command(command: str, environ: Mapping[str, str], recipient: str) -> list[X25519Identity]:
    env = dict(environ)
    if recipient:
        env["SOPS_AGE_RECIPIENT"] = recipient
    try:
        done = subprocess.run(shlex.split(command), env=env, capture_output=True, text=True,
                              timeout=KEY_CMD_TIMEOUT, check=False)
    except (OSError, ValueError, subprocess.TimeoutExpired) as exc:
        raise SecretsError(f"SOPS_AGE_KEY_CMD: cannot run {command!r}: {exc}") from None
    if done.returncode != 0:
        raise SecretsError(f"SOPS_AGE_KEY_CMD: {command!r} exited with code {done.returncode}: "
                           f"{done.stderr.strip()[:500]}")
    return _parse(done.stdout, "SOPS_AGE_KEY_CMD output")


# --- .sops.yaml ------------------------------------------------------------------------------

@dataclass(frozen=True)
class CreationRule:
    """What a `.sops.yaml` creation rule says for one file: recipients and the crypt rule."""

    recipients: tuple[str, ...]
    rule: CryptRule | None = None
    mac_only_encrypted: bool = False


def find_sops_config(start: Path, environ: Mapping[str, str]) -> Path | None:
    """`SOPS_CONFIG`, else the first `.sops.yaml` from `start` upward (100 levels), else None."""
    if environ.get("SOPS_CONFIG"):
        return Path(environ["SOPS_CONFIG"])
    directory = start.resolve()
    for _ in range(100):
        candidate = directory / ".sops.yaml"
        if candidate.is_file():
            return candidate
        if directory.parent == directory:
            break
        directory = directory.parent
    return None


def split_recipients(value: object) -> list[str]:
    """Recipients from a comma-separated string or a list, trimmed and validated."""
    items = value if isinstance(value, list) else str(value or "").split(",")
    recipients = [str(item).strip() for item in items if str(item).strip()]
    for recipient in recipients:
        try:
            parse_recipient(recipient)
        except AgeError as exc:
            raise SecretsError(str(exc)) from None
    return recipients


def creation_rule_for(config: Path, file_path: Path) -> CreationRule:
    """The first `creation_rules` entry of `config` whose path_regex matches `file_path`."""
    try:
        data = load_yaml(config.read_text(encoding="utf-8")) or {}
    except (OSError, Invalid) as exc:
        raise SecretsError(f"{config}: cannot read the sops configuration: {exc}") from None
    rules = data.get("creation_rules") if isinstance(data, dict) else None
    if not isinstance(rules, list):
        raise SecretsError(f"{config}: creation_rules is missing or not a list")
    target = _relative_path(config, file_path)
    for index, rule in enumerate(rules):
        if not isinstance(rule, dict):
            raise SecretsError(f"{config}: creation_rules[{index}] is not a mapping")
        regex = rule.get("path_regex")
        if regex and not re.search(str(regex), target):
            continue
        return _rule_from(config, index, rule)
    raise SecretsError(f"{config}: no creation rule matches {target}; add a rule with a "
                       "path_regex for it and age recipients")


def _relative_path(config: Path, file_path: Path) -> str:
    absolute = file_path.resolve()
    try:
        return absolute.relative_to(config.resolve().parent).as_posix()
    except ValueError:
        return absolute.as_posix()


def _rule_from(config: Path, index: int, rule: dict) -> CreationRule:
    where = f"{config}: creation_rules[{index}]"
    group_age = []
    for group in rule.get("key_groups") or []:
        group_age += split_recipients((group or {}).get("age") or [])
    recipients = split_recipients(rule.get("age")) + group_age
    if not recipients:
        raise SecretsError(f"{where} has no age recipients; add `age: age1...`")
    kinds = [k for k in CRYPT_RULE_KINDS if rule.get(k)]
    if len(kinds) > 1:
        raise SecretsError(f"{where} sets {', '.join(kinds)}; only one may be set")
    crypt = CryptRule(kinds[0], str(rule[kinds[0]])) if kinds else None
    return CreationRule(tuple(dict.fromkeys(recipients)), crypt, rule.get("mac_only_encrypted") is True)
