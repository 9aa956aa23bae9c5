"""The SOPS encrypted-file format (YAML store, age master keys), compatible with `sops` >= 3.7.

Values are `ENC[AES256_GCM,data:...,iv:...,tag:...,type:...]` under a 32-byte data key with the
key path as AAD (`a:b:`, list indices not included); comments become `#ENC[...,type:comment]`;
keys under an `_unencrypted` suffix (or the file's other crypt rule) stay plain. The MAC is the
upper-hex SHA-512 over every value's plaintext in file order, encrypted with `lastmodified` as AAD.
The data key is wrapped for each age recipient as an armored age file in the `sops:` block.
The format is the SOPS project's (getsops/sops); docs/secrets.md, "Format details", sums it up.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import math
import os
import re
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from fastflow.errors import SecretsError
from fastflow.secrets.yamltree import Comment, YMap, YSeq, format_time

SOPS_VERSION = "3.10.2"  # the sops release whose format we write (type:time needs >= 3.10)
DEFAULT_SUFFIX = "_unencrypted"
CRYPT_RULE_KINDS = ("unencrypted_suffix", "encrypted_suffix", "unencrypted_regex",
                    "encrypted_regex")
UNSUPPORTED_RULES = ("unencrypted_comment_regex", "encrypted_comment_regex")
_ENC_RE = re.compile(r"^ENC\[AES256_GCM,data:(.+),iv:(.+),tag:(.+),type:(.+)\]")
_PARSE_BOOL = {"1": True, "t": True, "T": True, "TRUE": True, "true": True, "True": True,
               "0": False, "f": False, "F": False, "FALSE": False, "false": False, "False": False}
Stash = dict  # (aad, type, plaintext bytes) -> iv, so unchanged values keep their ciphertext


class _BadValue(Exception):
    """A value-level failure; the tree walkers add the file and key path."""


@dataclass(frozen=True)
class CryptRule:
    """Which leaves are encrypted: one of SOPS's suffix/regex options (default `_unencrypted`)."""

    kind: str = "unencrypted_suffix"
    value: str = DEFAULT_SUFFIX

    def encrypts(self, path: Sequence[str]) -> bool:
        """Whether a value (or comment) at `path` (ancestor keys + own key) is encrypted."""
        if self.kind == "unencrypted_suffix":
            return not any(k.endswith(self.value) for k in path)
        if self.kind == "encrypted_suffix":
            return any(k.endswith(self.value) for k in path)
        if self.kind == "unencrypted_regex":
            return not any(re.search(self.value, k) for k in path)
        return any(re.search(self.value, k) for k in path)


@dataclass(frozen=True)
class AgeEntry:
    """One age master key: the recipient and the data key wrapped to it (armored age file)."""

    recipient: str
    enc: str


@dataclass(frozen=True)
class Metadata:
    """The `sops:` block. `extra` keeps other master keys (pgp, kms, ...) as read."""

    age: tuple[AgeEntry, ...]
    lastmodified: str = ""
    mac: str = ""
    version: str = SOPS_VERSION
    rule: CryptRule = CryptRule()
    mac_only_encrypted: bool = False
    extra: tuple[tuple[str, Any], ...] = ()

    @property
    def recipients(self) -> list[str]:
        return [entry.recipient for entry in self.age]


@dataclass
class SopsFile:
    """An encrypted file as read: its documents (values still `ENC[...]`) and metadata."""

    source: str
    documents: list[YMap]
    metadata: Metadata


@dataclass
class Decrypted:
    """A decrypted file: plaintext documents, the data key, metadata and the IV stash."""

    source: str
    documents: list[YMap] = field(repr=False)  # plaintext: never in reprs or tracebacks
    data_key: bytes = field(repr=False)
    metadata: Metadata = field(repr=False)
    stash: Stash = field(default_factory=dict, repr=False)


# --- Values ----------------------------------------------------------------------------------

def format_go_float(value: float) -> str:
    """Go's strconv.FormatFloat(v, 'f', -1, 64): shortest digits, never an exponent."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return format(Decimal(repr(value)).normalize(), "f")


def to_bytes(value: Any) -> tuple[bytes, str]:
    """The plaintext bytes and SOPS type of a leaf value (also what the MAC hashes)."""
    if isinstance(value, bool):
        return (b"True" if value else b"False"), "bool"
    if isinstance(value, int):
        return str(value).encode(), "int"
    if isinstance(value, float):
        return format_go_float(value).encode(), "float"
    if isinstance(value, datetime):
        return format_time(value).encode(), "time"
    if isinstance(value, bytes):
        return value, "bytes"
    if isinstance(value, Comment):
        return value.text.encode(), "comment"
    return str(value).encode(), "str"


def _from_bytes(plain: bytes, kind: str) -> Any:
    try:
        text = plain.decode("utf-8")
        if kind in ("str", "comment"):
            return text
        if kind == "int":
            if not re.fullmatch(r"[+-]?[0-9]+", text):
                raise ValueError(text)
            return int(text)
        if kind == "float":
            return float(text)
        if kind == "bool":
            return _PARSE_BOOL[text]
        if kind == "time":
            return datetime.fromisoformat(text.replace("z", "Z"))
    except (UnicodeDecodeError, ValueError, KeyError):
        raise _BadValue(f"the decrypted text is not a valid {kind}") from None
    if kind == "bytes":
        return plain
    raise _BadValue(f"unknown type {kind!r}")


def encrypt_value(value: Any, key: bytes, aad: str, stash: Stash | None = None) -> str:
    """`ENC[AES256_GCM,...]` of one value; `""` stays `""`; reuses a stashed IV if unchanged."""
    plain, kind = to_bytes(value)
    if not plain:
        return ""
    stash_key = (aad, kind, plain)
    iv = (stash or {}).get(stash_key) or os.urandom(32)
    sealed = AESGCM(key).encrypt(iv, plain, aad.encode())
    b64 = lambda data: base64.b64encode(data).decode()  # noqa: E731
    return f"ENC[AES256_GCM,data:{b64(sealed[:-16])},iv:{b64(iv)},tag:{b64(sealed[-16:])},type:{kind}]"


def decrypt_value(text: str, key: bytes, aad: str, stash: Stash | None = None) -> Any:
    """The typed plaintext of an `ENC[...]` value; `_BadValue` with the reason otherwise."""
    if text == "":
        return ""
    match = _ENC_RE.match(text)
    if not match:
        raise _BadValue("it is not of the form ENC[AES256_GCM,data:...,iv:...,tag:...,type:...]")
    try:
        data, iv, tag = (base64.b64decode(part, validate=True) for part in match.groups()[:3])
    except (binascii.Error, ValueError):
        raise _BadValue("its data, iv or tag is not valid base64") from None
    kind = match.group(4)
    if kind not in ("str", "int", "float", "bool", "time", "bytes", "comment"):
        raise _BadValue(f"unknown type {kind!r}")
    if len(tag) != 16 or not iv:
        raise _BadValue("its iv or tag has the wrong length")
    try:
        plain = AESGCM(key).decrypt(iv, data + tag, aad.encode())
    except InvalidTag:
        raise _BadValue("it does not decrypt with the file's data key (tampered or moved)") from None
    if stash is not None:
        stash[(aad, kind, plain)] = iv
    return _from_bytes(plain, kind)


def _aad(path: Sequence[str]) -> str:
    return "".join(f"{k}:" for k in path) or ":"


def _display(path: Sequence[Any]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _keys_only(path: Sequence[Any]) -> list[str]:
    return [p for p in path if isinstance(p, str)]


# --- Tree walks ------------------------------------------------------------------------------

class _Walk:
    """One encrypt or decrypt pass over all documents, hashing the MAC as it goes."""

    def __init__(self, source: str, key: bytes, meta: Metadata, stash: Stash | None):
        self.source, self.key, self.meta, self.stash = source, key, meta, stash
        self.mac = hashlib.sha512()
        if meta.mac_only_encrypted:
            self.mac.update(hashlib.sha256(b"sops").digest())
        self.collection_paths: list[list[str]] = []

    def _hash(self, value: Any, encrypted: bool) -> None:
        if encrypted or not self.meta.mac_only_encrypted:
            self.mac.update(to_bytes(value)[0])

    def mac_hex(self) -> str:
        return self.mac.hexdigest().upper()

    def walk(self, node: Any, path: list, encrypt: bool) -> Any:
        if isinstance(node, YMap):
            items = [self._item(item, path, encrypt) for item in node]
            return YMap(items)
        if isinstance(node, YSeq):
            return YSeq(self._comment(item, path, encrypt) if isinstance(item, Comment)
                        else self.walk(item, path + [i], encrypt) for i, item in enumerate(node))
        return self._leaf(node, path, encrypt)

    def _item(self, item: Any, path: list, encrypt: bool) -> Any:
        if isinstance(item, Comment):
            return self._comment(item, path, encrypt)
        key, value = item
        return key, self.walk(value, path + [key], encrypt)

    def _leaf(self, value: Any, path: list, encrypt: bool) -> Any:
        if value is None:
            return None
        keys = _keys_only(path)
        if not self.meta.rule.encrypts(keys):
            self._hash(value, False)
            return value
        if encrypt:
            self._hash(value, True)
            return encrypt_value(value, self.key, _aad(keys), self.stash)
        if not isinstance(value, str) or (value and not value.startswith("ENC[")):
            raise SecretsError(
                f"{self.source}: {_display(path)} holds a plain value where an encrypted one is "
                f"expected; set it with `fastflow secrets set`/`edit`, or name the key with the "
                f"{self.meta.rule.value!r} suffix if it is meant to stay plain"
            )
        try:
            plain = decrypt_value(value, self.key, _aad(keys), self.stash)
        except _BadValue as exc:
            raise SecretsError(f"{self.source}: malformed encrypted value at {_display(path)}: "
                               f"{exc}; restore the file from version control") from None
        self._hash(plain, True)
        return plain

    def _comment(self, comment: Comment, path: list, encrypt: bool) -> Comment:
        keys = _keys_only(path)
        if encrypt:
            if not self.meta.rule.encrypts(keys):
                return comment
            return Comment(encrypt_value(comment, self.key, _aad(keys), self.stash))
        if not comment.text.startswith("ENC[AES256_GCM,"):
            return comment
        # yaml.v3 and our reader may attach a comment to a neighbouring collection: try its own
        # path first, then the others (comments are not in the MAC; failures keep the text).
        for candidate in [keys] + self.collection_paths:
            try:
                return Comment(decrypt_value(comment.text, self.key, _aad(candidate), self.stash))
            except _BadValue:
                continue
        return comment


def _collection_paths(node: Any, path: list[str], out: list[list[str]]) -> list[list[str]]:
    if isinstance(node, YMap):
        out.append(path)
        for item in node:
            if isinstance(item, tuple):
                _collection_paths(item[1], path + [item[0]], out)
    elif isinstance(node, YSeq):
        out.append(path)
        for item in node:
            _collection_paths(item, path, out)
    return out


def decrypt_documents(sops_file: SopsFile, data_key: bytes) -> Decrypted:
    """Decrypt every value with `data_key` and verify the MAC; SecretsError on any mismatch."""
    meta, stash = sops_file.metadata, {}
    walk = _Walk(sops_file.source, data_key, meta, stash)
    plain = []
    for doc in sops_file.documents:
        walk.collection_paths = _collection_paths(doc, [], [])
        plain.append(walk.walk(doc, [], encrypt=False))
    _verify_mac(sops_file.source, meta, data_key, walk.mac_hex())
    return Decrypted(sops_file.source, plain, data_key, meta, stash)


def _verify_mac(source: str, meta: Metadata, data_key: bytes, computed: str) -> None:
    tampered = (f"{source}: MAC mismatch: the file was changed without its key (a value, grant or "
                "order differs from what was encrypted), so nothing from it is used; restore it "
                "from version control or re-create the changed entries with `fastflow secrets`")
    if not meta.mac:
        raise SecretsError(tampered.replace("MAC mismatch", "the sops metadata has no mac", 1))
    try:
        stored = decrypt_value(meta.mac, data_key, meta.lastmodified)
    except _BadValue:
        raise SecretsError(tampered) from None
    if stored != computed:
        raise SecretsError(tampered)


def encrypt_documents(documents: list[YMap], data_key: bytes, metadata: Metadata, now: datetime,
                      stash: Stash | None = None, source: str = "<input>") -> SopsFile:
    """Encrypt plaintext documents; sets `lastmodified` from `now` and the encrypted MAC."""
    walk = _Walk(source, data_key, metadata, stash)
    encrypted = [walk.walk(doc, [], encrypt=True) for doc in documents]
    lastmodified = now.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    mac = encrypt_value(walk.mac_hex(), data_key, lastmodified)
    return SopsFile(source, encrypted, replace(metadata, lastmodified=lastmodified, mac=mac,
                                               version=SOPS_VERSION))
