"""`fastflow secrets import-fernet`: the original Fast-Flow's `encrypted_env` into the secrets file.

Fast-Flow (ttuhin03/fastflow) keeps secrets in pipeline.json as `encrypted_env`: Fernet tokens made
with the server's `ENCRYPTION_KEY`, at the pipeline level and per run configuration
(`schedules[].encrypted_env`, merged over the pipeline's for runs of that run configuration).
This module, the only user of cryptography's Fernet, decrypts them in memory, stores each value in
the SOPS secrets file, grants it to its pipeline and rewrites the metadata file to ask for it by
name at the same level (`secrets`), so a run receives what Fast-Flow would have injected.

The metadata files are read as raw JSON, never through `config.pipeline`: with `encrypted_env`
they are invalid pipelines. They are rewritten by splicing their text, so key order, indentation
and everything else the import does not touch stay as they were. `plan_import` decides
everything and changes nothing; `apply_import` writes the plan. Reference: docs/secrets.md
("Migrating from Fast-Flow's encrypted_env").
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

from cryptography.fernet import Fernet, InvalidToken

from fastflow.config.links import link_problem
from fastflow.config.repo import check_repo_config
from fastflow.errors import SecretsError
from fastflow.files import write_atomic
from fastflow.model import Severity
from fastflow.secrets.jsontext import (
    Edit,
    Member,
    array_starts,
    line_indent,
    object_members,
    removals,
    skip_space,
    splice,
)
from fastflow.secrets.keys import creation_rule_for, find_sops_config
from fastflow.secrets.store import (
    add_secrets,
    identities_for,
    read_secrets,
    valid_secret_name,
)

ENCRYPTED_ENV = "encrypted_env"
KEY_VARIABLE = "ENCRYPTION_KEY"


@dataclass(frozen=True)
class Entry:
    """One `encrypted_env` entry: its file, pipeline, run configuration and variable."""

    file: str  # the metadata file, relative to the repository
    pipeline: str
    run_config: str | None  # schedules[].id; None at the pipeline level
    index: int | None  # the position in schedules[]; None at the pipeline level
    key: str  # as written; Fast-Flow strips it to get the variable

    @property
    def variable(self) -> str:
        return self.key.strip()

    @property
    def field(self) -> str:
        return f"{_level_path(self.index)}{ENCRYPTED_ENV}.{self.key}"


@dataclass(frozen=True)
class Skipped:
    """A value that cannot be imported, and why (never the value itself)."""

    file: str
    field: str
    variable: str
    reason: str

    def __str__(self) -> str:
        where = self.field + (f" ({self.variable})" if self.variable else "")
        return f"{self.file}: {where}: {self.reason}" if where else f"{self.file}: {self.reason}"


@dataclass(frozen=True)
class Assignment:
    """An entry stored as secret `secret`; `new` when this entry creates it (else the secret,
    existing or made for an earlier entry of the import, already holds the same value)."""

    entry: Entry
    secret: str
    new: bool


@dataclass(frozen=True)
class ImportPlan:
    """What the import does: the secrets it creates, grants and pipeline files it rewrites."""

    secrets_file: str  # relative to the repository
    creates_file: bool
    assignments: tuple[Assignment, ...]
    skipped: tuple[Skipped, ...]
    grants: tuple[tuple[str, tuple[str, ...]], ...]  # secret -> pipelines newly granted
    files: tuple[str, ...]  # metadata files rewritten
    root: Path = field(repr=False)
    recipients: tuple[str, ...] = field(default=(), repr=False)
    values: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)
    texts: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    @property
    def new_secrets(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(a.secret for a in self.assignments if a.new))

    @property
    def changed_files(self) -> tuple[str, ...]:
        """Every file the import writes: the secrets file (unless each value is there and
        granted already), then the rewritten metadata files."""
        changes_secrets = bool(self.values or self.grants)
        return (self.secrets_file,) * changes_secrets + self.files


def fernet_key(text: str) -> Fernet:
    """The Fernet of Fast-Flow's `ENCRYPTION_KEY`; SecretsError (never echoing it) when invalid."""
    try:
        return Fernet(text.strip().encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        raise SecretsError(
            f"{KEY_VARIABLE} is not a valid Fernet key (32 bytes in url-safe base64: 44 "
            "characters ending in '='); set it to the ENCRYPTION_KEY of the Fast-Flow server, "
            "as its .env holds it") from None


def plan_import(root: Path, key: Fernet, environ: Mapping[str, str],
                metadata: Iterable[tuple[str, Path]]) -> ImportPlan:
    """Decrypt every `encrypted_env` value of the `metadata` files ((pipeline, file) of the
    repository at `root`, as discovery finds them: `deploy.discovery.metadata_files`) and decide, without changing anything, the secret name of each, the grants and the
    rewritten metadata files.

    A value that cannot be imported (wrong key, corrupt token, ...) is listed in `skipped`. The
    secrets file is decrypted (with identities from `environ`) to reuse a name that holds the
    same value; a missing one gets the recipients of `.sops.yaml`, else SecretsError.
    """
    root = Path(root)
    config, problems = check_repo_config(root)
    if config is None:
        raise SecretsError("\n".join(str(p) for p in problems if p.severity is Severity.ERROR))
    path = root / config.secrets_file
    link = link_problem(root, path)
    if link is not None:
        raise SecretsError(f"{config.secrets_file}: {link}")
    existing, grants, recipients = _open_target(root, path, config.secrets_file, environ)
    scan = _Scan(root, key)
    for pipeline, meta in metadata:
        scan.read(pipeline, meta)
    assignments = _assign(scan.decrypted, existing)
    new_grants: dict[str, list[str]] = {}
    for a in assignments:
        if a.entry.pipeline not in grants.get(a.secret, ()) and \
                a.entry.pipeline not in new_grants.setdefault(a.secret, []):
            new_grants[a.secret].append(a.entry.pipeline)
    texts = scan.rewrite(assignments)
    return ImportPlan(
        secrets_file=config.secrets_file, creates_file=not path.exists(),
        assignments=tuple(assignments), skipped=tuple(scan.skipped),
        grants=tuple((k, tuple(v)) for k, v in new_grants.items() if v),
        files=tuple(texts), root=root, recipients=tuple(recipients),
        values={a.secret: scan.values[a.entry] for a in assignments if a.new}, texts=texts,
    )


def apply_import(plan: ImportPlan, environ: Mapping[str, str], now: datetime) -> None:
    """Write `plan`: the secrets and grants into the secrets file (one encrypted write, no
    plaintext anywhere), then each rewritten metadata file."""
    path = plan.root / plan.secrets_file
    if plan.secrets_file in plan.changed_files:
        add_secrets(path, plan.values, dict(plan.grants), identities_for(path, environ), now,
                    plan.recipients)
    for file, text in plan.texts.items():
        write_atomic(plan.root / file, text)


# --- the secrets file ---------------------------------------------------------------------------

def _open_target(root: Path, path: Path, shown: str, environ: Mapping[str, str]
                 ) -> tuple[dict[str, str], dict[str, tuple[str, ...]], list[str]]:
    """The existing secrets and grants, or (for a file to create) the recipients to use."""
    if path.exists():
        try:
            values, grants = read_secrets(path, identities_for(path, environ))
        except SecretsError as exc:
            message = str(exc)
            if message.startswith(f"{path}:"):
                message = shown + message[len(str(path)):]
            raise SecretsError(message) from None
        return values, grants, []
    config = find_sops_config(root, environ)
    if config is None:
        raise SecretsError(
            f"{shown}: does not exist and there is no .sops.yaml to create it from; create it "
            "with `fastflow secrets init --recipient age1...` (an identity comes from "
            "`fastflow secrets keygen`), then run the import again")
    return {}, {}, list(creation_rule_for(config, path).recipients)


# --- naming ---------------------------------------------------------------------------------

def _assign(decrypted: list[tuple[Entry, str]], existing: Mapping[str, str]) -> list[Assignment]:
    """A secret name for each value: its variable when free or holding the same value, else
    `<PIPELINE>_<VAR>` (`<PIPELINE>_<RUNCONFIG>_<VAR>`), numbered on a further clash."""
    taken = dict(existing)
    assignments = []
    for entry, value in decrypted:
        for name in _candidates(entry):
            if name not in taken:
                taken[name] = value
                assignments.append(Assignment(entry, name, True))
                break
            if taken[name] == value:
                assignments.append(Assignment(entry, name, False))
                break
    return assignments


def _candidates(entry: Entry) -> Iterator[str]:
    yield entry.variable
    parts = [entry.pipeline, *([entry.run_config] if entry.run_config else []), entry.variable]
    base = re.sub(r"[^A-Z0-9_]", "_", "_".join(parts).upper())
    if not valid_secret_name(base):  # starts with a digit, or with FASTFLOW_
        base = "_" + base
    yield base
    n = 2
    while True:
        yield f"{base}_{n}"
        n += 1


# --- reading and rewriting pipeline.json ----------------------------------------------------------

@dataclass
class _Level:
    """One place holding `encrypted_env`: the pipeline object or one schedules[] entry."""

    index: int | None
    run_config: str | None
    start: int  # the object's `{`
    members: list[Member]
    data: dict
    kept: list[str] = field(default_factory=list)  # keys left in place


class _Scan:
    """The metadata files read so far: their decrypted values, skipped values and levels."""

    def __init__(self, root: Path, key: Fernet) -> None:
        self.root, self.key = root, key
        self.decrypted: list[tuple[Entry, str]] = []
        self.values: dict[Entry, str] = {}
        self.skipped: list[Skipped] = []
        self.files: dict[str, tuple[str, list[_Level]]] = {}

    def read(self, pipeline: str, path: Path) -> None:
        file = path.relative_to(self.root).as_posix()
        try:
            raw = path.read_bytes()
        except OSError as exc:
            self.skipped.append(Skipped(file, "", "", f"cannot be read: {exc.strerror}"))
            return
        if ENCRYPTED_ENV.encode() not in raw:
            return
        try:
            text = raw.decode("utf-8")
            data = json.loads(text)
        except ValueError as exc:
            self.skipped.append(Skipped(file, "", "", f"is not valid JSON ({exc}); fix it first"))
            return
        if not isinstance(data, dict):
            return
        top = object_members(text, skip_space(text))
        levels = [_Level(None, None, skip_space(text), top, data)]
        schedules = _last(top, "schedules")
        if schedules is not None and isinstance(data.get("schedules"), list):
            for i, (start, item) in enumerate(zip(array_starts(text, schedules.value_start),
                                                  data["schedules"])):
                if isinstance(item, dict) and item.get(ENCRYPTED_ENV) not in (None, {}):
                    rc = item.get("id")
                    levels.append(_Level(i, rc if isinstance(rc, str) else None, start,
                                         object_members(text, start), item))
        # An empty encrypted_env ({} or null) holds nothing to import (validate only warns).
        levels = [lv for lv in levels if lv.data.get(ENCRYPTED_ENV) not in (None, {})]
        for level in levels:
            self._read_level(file, pipeline, level, data)
        self.files[file] = (text, levels)

    def _read_level(self, file: str, pipeline: str, level: _Level, top: dict) -> None:
        where = _level_path(level.index)
        values = level.data[ENCRYPTED_ENV]
        reason = _level_problem(level, top)
        if reason is not None or not isinstance(values, dict):
            reason = reason or f"{where}{ENCRYPTED_ENV} is not an object of VARIABLE: token"
            self.skipped.append(Skipped(file, f"{where}{ENCRYPTED_ENV}", "", reason))
            level.kept = list(values) if isinstance(values, dict) else []
            return
        asked = _asked(top.get("secrets")) | _asked(level.data.get("secrets"))
        for key, token in values.items():
            entry = Entry(file, pipeline, level.run_config, level.index, key)
            reason, value = self._decrypt(entry, token, asked)
            if reason is not None:
                self.skipped.append(Skipped(file, entry.field, entry.variable, reason))
                level.kept.append(key)
            else:
                self.decrypted.append((entry, value))
                self.values[entry] = value

    def _decrypt(self, entry: Entry, token: Any, asked: set[str]) -> tuple[str | None, str]:
        variable = entry.variable
        if not valid_secret_name(variable):
            return (f"{variable!r} is not a valid environment variable name here: use letters, "
                    "digits and _, not starting with a digit or FASTFLOW_"), ""
        if variable in asked:
            return (f"{variable} is also in secrets, which Fast-Flow injects over "
                    "encrypted_env (this value was never used); remove one of the two"), ""
        if not isinstance(token, str):
            return "is not a Fernet token (a string)", ""
        try:
            plain = self.key.decrypt(token.strip().encode("ascii"))
        except (InvalidToken, UnicodeEncodeError):
            return (f"cannot be decrypted with this {KEY_VARIABLE} (made with another key, or a "
                    "corrupt token)"), ""
        try:
            value = plain.decode("utf-8")
        except UnicodeDecodeError:
            return "decrypts to bytes that are not UTF-8 text", ""
        if value == "":
            return ("decrypts to an empty value, which the secrets file cannot hold (SOPS leaves "
                    "empty values unencrypted); move it to default_env"), ""
        return None, value

    def rewrite(self, assignments: list[Assignment]) -> dict[str, str]:
        """The new text of each metadata file that has imported values."""
        by_level: dict[tuple[str, int | None], dict[str, str]] = {}
        for a in assignments:
            by_level.setdefault((a.entry.file, a.entry.index), {})[a.entry.key] = a.secret
        texts = {}
        for file, (text, levels) in self.files.items():
            edits = []
            for level in levels:
                imported = by_level.get((file, level.index))
                if imported:
                    edits += _level_edits(text, level, imported)
            if edits:
                texts[file] = splice(text, edits, file, "move encrypted_env to secrets by hand")
        return texts


def _level_path(index: int | None) -> str:
    return "" if index is None else f"schedules[{index}]."


def _level_problem(level: _Level, top: dict) -> str | None:
    """Why no value of this level can be imported, or None."""
    where = _level_path(level.index)
    if level.index is not None and (level.run_config is None or not level.run_config.strip()):
        return f"{where}id is missing: a run configuration needs an id to ask for secrets"
    for holder, shown in ((top, "secrets"), (level.data, f"{where}secrets")):
        if holder.get("secrets") is not None and _asked(holder.get("secrets")) is None:
            return f"{shown} is neither a list of names nor an object of VARIABLE: secret; fix it"
    duplicated = [k for k in (ENCRYPTED_ENV, "secrets")
                  if sum(m.key == k for m in level.members) > 1]
    if duplicated:
        return f"{where}{duplicated[0]} appears twice in the object; keep one"
    return None


def _asked(secrets: Any) -> set[str] | None:
    """The variables a `secrets` field asks for; None when it has neither valid form."""
    if secrets is None:
        return set()
    if isinstance(secrets, list) and all(isinstance(s, str) for s in secrets):
        return set(secrets)
    if isinstance(secrets, dict) and all(isinstance(s, str) for s in secrets.values()):
        return set(secrets)
    return None


def _new_secrets(current: Any, imported: Mapping[str, str]) -> list | dict:
    """`secrets` with the imported variables added: the list form while every secret is named
    as its variable, else the object form."""
    same = all(var == name for var, name in imported.items())
    if current is None:
        return list(imported) if same else dict(imported)
    if isinstance(current, list):
        if same:
            return current + [v for v in imported if v not in current]
        return {**{n: n for n in current}, **imported}
    return {**current, **imported}


def _level_edits(text: str, level: _Level, imported: Mapping[str, str]) -> list[Edit]:
    """The splices that move `imported` (key -> secret) from `encrypted_env` to `secrets`."""
    ee = _last(level.members, ENCRYPTED_ENV)
    current = _last(level.members, "secrets")
    variables = {key.strip(): secret for key, secret in imported.items()}
    new = _new_secrets(level.data.get("secrets"), variables)
    indent = line_indent(text, ee.key_start)
    multiline = "\n" in text[level.start:ee.key_start]
    unit = indent[len(line_indent(text, level.start)):] or "  "
    rendered = _render(new, indent, unit, multiline)
    edits = []
    if level.kept:  # --partial: the values that stay are kept in place, as they are written
        inner = object_members(text, ee.value_start)
        edits += removals(text, ee.value_start, inner, {m.key for m in inner if m.key in imported})
        if current is None:
            separator = f"\n{indent}" if multiline else " "
            return edits + [(ee.value_end, ee.value_end, f',{separator}"secrets": {rendered}')]
    elif current is None:
        return [(ee.key_start, ee.value_end, f'"secrets": {rendered}')]
    else:
        edits += removals(text, level.start, level.members, {ENCRYPTED_ENV})
    return edits + [(current.value_start, current.value_end, rendered)]


def _render(value: list | dict, indent: str, unit: str, multiline: bool) -> str:
    if isinstance(value, list) or not multiline or not value:
        return json.dumps(value, ensure_ascii=False)
    inner = indent + unit
    lines = [f"{inner}{json.dumps(k, ensure_ascii=False)}: {json.dumps(v, ensure_ascii=False)}"
             for k, v in value.items()]
    return "{\n" + ",\n".join(lines) + f"\n{indent}}}"


def _last(members: list[Member], key: str) -> Member | None:
    found = [m for m in members if m.key == key]
    return found[-1] if found else None
