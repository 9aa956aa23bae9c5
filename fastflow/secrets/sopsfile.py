"""Whole SOPS files: the `sops:` metadata block, the age-wrapped data key, `sops -d`/`sops -e`.

`parse_file`/`dump_file` move between text and `SopsFile`; `open_data_key` unwraps the data key
with the caller's age identities; `decrypt_file_text`/`encrypt_file_text` are the library twins of
`sops -d FILE` and `sops -e --age R FILE`.
"""
from __future__ import annotations

import os
from dataclasses import replace
from datetime import datetime
from typing import Any, Sequence

from fastflow.errors import SecretsError
from fastflow.secrets import age
from fastflow.secrets.sops import (
    CRYPT_RULE_KINDS,
    DEFAULT_SUFFIX,
    UNSUPPORTED_RULES,
    AgeEntry,
    CryptRule,
    Decrypted,
    Metadata,
    SopsFile,
    decrypt_documents,
    encrypt_documents,
)
from fastflow.secrets.yamltree import (
    Comment,
    YMap,
    YSeq,
    dump_documents,
    format_time,
    load_documents,
)

_META_KEYS = {"age", "lastmodified", "mac", "version", "mac_only_encrypted", *CRYPT_RULE_KINDS}


def parse_file(text: str, source: str) -> SopsFile:
    """Read an encrypted SOPS YAML file; metadata from the first document's `sops` key."""
    documents = load_documents(text, source)
    if not documents or not isinstance(documents[0].get("sops"), YMap):
        raise SecretsError(f"{source}: sops metadata not found (no `sops:` key at the top level); "
                           "this file is not encrypted; encrypt it with `fastflow secrets encrypt`")
    meta = _parse_metadata(documents[0].get("sops"), source)
    for doc in documents:
        doc.remove("sops")
    return SopsFile(source, documents, meta)


def _parse_metadata(raw: YMap, source: str) -> Metadata:
    rules = [k for k in (*CRYPT_RULE_KINDS, *UNSUPPORTED_RULES) if raw.get(k) not in (None, "")]
    if len(rules) > 1:
        raise SecretsError(f"{source}: sops metadata sets {', '.join(rules)}; only one may be set")
    if rules and rules[0] in UNSUPPORTED_RULES:
        raise SecretsError(f"{source}: sops.{rules[0]} is not supported by Fast-Flow; use "
                           "unencrypted_suffix, encrypted_suffix or one of the key regexes")
    rule = CryptRule(rules[0], str(raw.get(rules[0]))) if rules else CryptRule()
    lastmodified = raw.get("lastmodified")
    if isinstance(lastmodified, str):
        try:
            lastmodified = datetime.fromisoformat(lastmodified.replace("z", "Z"))
        except ValueError:
            raise SecretsError(f"{source}: sops.lastmodified {lastmodified!r} is not an RFC 3339 "
                               "time; restore the file from version control") from None
    if not isinstance(lastmodified, datetime):
        raise SecretsError(f"{source}: sops.lastmodified is missing; restore the file from "
                           "version control")
    extra = tuple(item for item in raw if isinstance(item, tuple) and item[0] not in _META_KEYS)
    return Metadata(
        age=tuple(_age_entries(raw, source)),
        lastmodified=format_time(lastmodified.replace(microsecond=0)),
        mac=str(raw.get("mac") or ""),
        version=str(raw.get("version") or ""),
        rule=rule,
        mac_only_encrypted=raw.get("mac_only_encrypted") is True,
        extra=extra,
    )


def _age_entries(raw: YMap, source: str) -> list[AgeEntry]:
    groups = raw.get("key_groups")
    if isinstance(groups, YSeq) and groups:
        if len(groups) > 1:
            raise SecretsError(f"{source}: the data key is split across {len(groups)} key groups "
                               "(Shamir); Fast-Flow supports a single key group")
        lists = [groups[0].get("age") if isinstance(groups[0], YMap) else None]
    else:
        lists = [raw.get("age")]
    entries = []
    for item in lists[0] or []:
        if not isinstance(item, YMap) or not item.get("recipient") or not item.get("enc"):
            raise SecretsError(f"{source}: sops.age has an entry without recipient and enc; "
                               "restore the file from version control")
        entries.append(AgeEntry(str(item.get("recipient")), str(item.get("enc"))))
    return entries


def dump_file(sops_file: SopsFile) -> str:
    """The file text: documents with the `sops:` block as the last key of each one."""
    meta = sops_file.metadata
    block = YMap([("age", YSeq(YMap([("recipient", e.recipient), ("enc", e.enc)]) for e in meta.age))])
    block.extend(meta.extra)
    block.extend([("lastmodified", meta.lastmodified), ("mac", meta.mac)])
    if meta.mac_only_encrypted:
        block.append(("mac_only_encrypted", True))
    block.append((meta.rule.kind, meta.rule.value))
    block.append(("version", meta.version))
    block.sort(key=lambda item: item[0])  # sops >= 3.13 writes the block in key order
    documents = [YMap([*doc, ("sops", block)]) for doc in sops_file.documents]
    return dump_documents(documents)


def wrap_data_key(data_key: bytes, recipients: Sequence[str]) -> tuple[AgeEntry, ...]:
    """Wrap the data key for each recipient (one armored age file each), duplicates dropped."""
    unique = list(dict.fromkeys(r.strip() for r in recipients if r.strip()))
    if not unique:
        raise SecretsError("no age recipients given; pass --age age1... or add a creation rule "
                           "with age recipients to .sops.yaml")
    return tuple(AgeEntry(r, age.encrypt(data_key, [r], armored=True).decode()) for r in unique)


def open_data_key(metadata: Metadata, identities: Sequence[age.X25519Identity], source: str) -> bytes:
    """Unwrap the data key with the first identity that matches a recipient of the file."""
    recipients = ", ".join(metadata.recipients)
    if not metadata.age:
        raise SecretsError(f"{source}: the data key is not wrapped for any age recipient; "
                           "Fast-Flow only uses age keys: add one with `sops updatekeys`")
    if not identities:
        raise SecretsError(
            f"{source}: no age identity found to decrypt it; it is encrypted for {recipients}. "
            "Provide the identity of one of them in SOPS_AGE_KEY_FILE, SOPS_AGE_KEY or "
            "SOPS_AGE_KEY_CMD, or in ~/.config/sops/age/keys.txt")
    for entry in metadata.age:
        try:
            key = age.decrypt(entry.enc.encode(), identities)
        except age.NoMatchingIdentity:
            continue
        except age.AgeError as exc:
            raise SecretsError(f"{source}: the data key wrapped for {entry.recipient} is "
                               f"corrupt ({exc}); restore the file from version control") from None
        if len(key) != 32:
            raise SecretsError(f"{source}: the data key wrapped for {entry.recipient} is "
                               f"{len(key)} bytes, not 32; restore the file from version control")
        return key
    mine = ", ".join(identity.recipient for identity in identities)
    raise SecretsError(
        f"{source}: wrong key: none of your age identities ({mine}) is a recipient of this "
        f"file ({recipients}); use the identity of one of them, or ask someone who has one to "
        "run `fastflow secrets recipients add <your age1...>`")


def decrypt_file(sops_file: SopsFile, identities: Sequence[age.X25519Identity]) -> Decrypted:
    """Unwrap the data key, decrypt every value and verify the MAC."""
    key = open_data_key(sops_file.metadata, identities, sops_file.source)
    return decrypt_documents(sops_file, key)


def new_metadata(data_key: bytes, recipients: Sequence[str], rule: CryptRule | None = None,
                 mac_only_encrypted: bool = False) -> Metadata:
    """Metadata for a new file: the data key wrapped for `recipients`, the crypt rule."""
    return Metadata(age=wrap_data_key(data_key, recipients), rule=rule or CryptRule(),
                    mac_only_encrypted=mac_only_encrypted)


def encrypt_plain(documents: list[YMap], source: str, recipients: Sequence[str], now: datetime,
                  rule: CryptRule | None = None, mac_only_encrypted: bool = False) -> str:
    """Encrypt plaintext documents under a fresh data key for `recipients`; the file text."""
    if not documents:
        raise SecretsError(f"{source}: the file is empty; SOPS cannot encrypt an empty file")
    if documents[0].get("sops") is not None:
        raise SecretsError(f"{source}: the file is already encrypted (it has a `sops:` key)")
    data_key = os.urandom(32)
    meta = new_metadata(data_key, recipients, rule, mac_only_encrypted)
    return dump_file(encrypt_documents(documents, data_key, meta, now, source=source))


def reencrypt(decrypted: Decrypted, documents: list[YMap], now: datetime, *,
              recipients: Sequence[str] | None = None, rotate: bool = False) -> str:
    """Re-encrypt edited documents of a decrypted file: unchanged values keep their ciphertext
    (unless `rotate`, which also makes a new data key); `recipients` re-wraps the data key."""
    meta, key, stash = decrypted.metadata, decrypted.data_key, decrypted.stash
    if rotate:
        key, stash = os.urandom(32), {}
    if rotate or recipients is not None:
        targets = list(recipients) if recipients is not None else meta.recipients
        if meta.extra and any(k in ("pgp", "kms", "gcp_kms", "azure_kv", "hc_vault", "hckms")
                              and v for k, v in meta.extra):
            raise SecretsError(f"{decrypted.source}: the data key is also wrapped for non-age "
                               "master keys (pgp, kms, ...) that Fast-Flow cannot re-wrap; "
                               "rotate or change recipients with `sops` itself")
        meta = replace(meta, age=wrap_data_key(key, targets))
    encrypted = encrypt_documents(documents, key, meta, now, stash, decrypted.source)
    return dump_file(encrypted)


def decrypt_file_text(text: str, source: str, identities: Sequence[age.X25519Identity]) -> str:
    """`sops -d`: the plaintext YAML of an encrypted file (comments and types kept)."""
    decrypted = decrypt_file(parse_file(text, source), identities)
    return dump_documents(decrypted.documents)


def encrypt_file_text(text: str, source: str, recipients: Sequence[str], now: datetime,
                      rule: CryptRule | None = None, mac_only_encrypted: bool = False) -> str:
    """`sops -e`: encrypt a plaintext YAML file for `recipients` (default `_unencrypted` rule)."""
    return encrypt_plain(load_documents(text, source), source, recipients, now, rule,
                         mac_only_encrypted)


def default_rule() -> CryptRule:
    """The rule written when none is configured: `unencrypted_suffix: _unencrypted`."""
    return CryptRule("unencrypted_suffix", DEFAULT_SUFFIX)


def plain_tree(value: Any) -> Any:
    """A YMap/YSeq tree as plain dicts and lists without comments (for tests and callers)."""
    if isinstance(value, YMap):
        return {k: plain_tree(v) for k, v in (i for i in value if isinstance(i, tuple))}
    if isinstance(value, YSeq):
        return [plain_tree(v) for v in value if not isinstance(v, Comment)]
    return value


def recipients_of(text: str, source: str) -> list[str]:
    """The age recipients of an encrypted file's text; [] when it cannot be read as one."""
    try:
        return parse_file(text, source).metadata.recipients
    except SecretsError:
        return []
