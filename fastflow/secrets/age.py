"""The age v1 file format (age-encryption.org/v1) with X25519 recipients, on `cryptography`.

Enough of age for SOPS: X25519 identities and recipients in their Bech32 text form
(`AGE-SECRET-KEY-1...`, `age1...`), the header (stanzas + HMAC-SHA256), the ChaCha20-Poly1305
STREAM payload in 64 KiB chunks and the ASCII armor. Interoperates with the `age` CLI both ways.
Not supported: scrypt (passphrase) stanzas, SSH and plugin identities, post-quantum hybrids;
stanzas of unknown types are ignored as the spec requires (so grease from other tools is fine).
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from dataclasses import dataclass
from typing import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import (
    X25519PrivateKey,
    X25519PublicKey,
)
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fastflow.errors import SecretsError

INTRO = b"age-encryption.org/v1"
ARMOR_BEGIN = "-----BEGIN AGE ENCRYPTED FILE-----"
ARMOR_END = "-----END AGE ENCRYPTED FILE-----"
CHUNK_SIZE = 64 * 1024
TAG_SIZE = 16
X25519_LABEL = b"age-encryption.org/v1/X25519"
_BECH32 = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"


class AgeError(SecretsError):
    """An age file, identity or recipient is malformed or cannot be decrypted."""


class NoMatchingIdentity(AgeError):
    """None of the given identities can open any stanza of the age file."""


# --- Bech32 (BIP 173 without the 90-character limit, as age uses it) -------------------------

def _polymod(values: Sequence[int]) -> int:
    gen = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
    chk = 1
    for value in values:
        top = chk >> 25
        chk = (chk & 0x1FFFFFF) << 5 ^ value
        for i in range(5):
            chk ^= gen[i] if (top >> i) & 1 else 0
    return chk


def _hrp_expand(hrp: str) -> list[int]:
    return [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]


def _convert_bits(data: Sequence[int], frm: int, to: int, pad: bool) -> list[int] | None:
    acc = bits = 0
    out: list[int] = []
    maxv = (1 << to) - 1
    for value in data:
        acc = (acc << frm) | value
        bits += frm
        while bits >= to:
            bits -= to
            out.append((acc >> bits) & maxv)
    if pad and bits:
        out.append((acc << (to - bits)) & maxv)
    elif not pad and (bits >= frm or (acc << (to - bits)) & maxv):
        return None
    return out


def bech32_encode(hrp: str, data: bytes) -> str:
    """Encode `data` as Bech32 with human-readable part `hrp` (lowercase)."""
    data5 = _convert_bits(data, 8, 5, True) or []
    check = _polymod(_hrp_expand(hrp) + data5 + [0] * 6) ^ 1
    data5 += [(check >> 5 * (5 - i)) & 31 for i in range(6)]
    return hrp + "1" + "".join(_BECH32[d] for d in data5)


def bech32_decode(text: str) -> tuple[str, bytes] | None:
    """Decode Bech32 `text` into (hrp, data), or None when it is not valid Bech32."""
    if text.lower() != text and text.upper() != text:
        return None
    text = text.lower()
    pos = text.rfind("1")
    if pos < 1 or pos + 7 > len(text) or any(c not in _BECH32 for c in text[pos + 1:]):
        return None
    hrp = text[:pos]
    if any(ord(c) < 33 or ord(c) > 126 for c in hrp):
        return None
    data5 = [_BECH32.index(c) for c in text[pos + 1:]]
    if _polymod(_hrp_expand(hrp) + data5) != 1:
        return None
    data = _convert_bits(data5[:-6], 5, 8, False)
    return None if data is None else (hrp, bytes(data))


# --- Keys ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class X25519Identity:
    """An age X25519 identity (secret key). `str()` is never called on it in messages."""

    secret: bytes

    @classmethod
    def generate(cls) -> "X25519Identity":
        """A fresh random identity."""
        return cls(X25519PrivateKey.generate().private_bytes_raw())

    @classmethod
    def parse(cls, text: str) -> "X25519Identity":
        """Parse `AGE-SECRET-KEY-1...`; AgeError (without the key text) when it is not one."""
        decoded = bech32_decode(text)
        if (decoded is None or decoded[0] != "age-secret-key-" or len(decoded[1]) != 32
                or not text.isupper()):
            raise AgeError("not a valid age identity (expected AGE-SECRET-KEY-1...)")
        return cls(decoded[1])

    def to_string(self) -> str:
        """The `AGE-SECRET-KEY-1...` text form."""
        return bech32_encode("age-secret-key-", self.secret).upper()

    @property
    def public_key(self) -> bytes:
        return X25519PrivateKey.from_private_bytes(self.secret).public_key().public_bytes_raw()

    @property
    def recipient(self) -> str:
        """The matching `age1...` recipient."""
        return bech32_encode("age", self.public_key)

    def __repr__(self) -> str:  # never leak the secret into logs or tracebacks
        return f"X25519Identity(recipient={self.recipient!r})"


def parse_recipient(text: str) -> bytes:
    """The 32-byte X25519 public key of an `age1...` recipient; AgeError naming it otherwise."""
    decoded = bech32_decode(text.strip())
    if decoded is None or decoded[0] != "age" or len(decoded[1]) != 32:
        raise AgeError(
            f"{text!r} is not a valid age X25519 recipient (expected age1... as printed by "
            "`fastflow secrets keygen` or `age-keygen -y`)"
        )
    return decoded[1]


def parse_identities(text: str, origin: str) -> list[X25519Identity]:
    """Parse an identity file's text (one key a line, `#` comments, blank lines skipped)."""
    found = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            found.append(X25519Identity.parse(line))
        except AgeError:
            raise AgeError(
                f"{origin}: line {number} is not an age X25519 identity (expected "
                "AGE-SECRET-KEY-1...; SSH, plugin and passphrase-protected keys are not supported)"
            ) from None
    return found


# --- Header ----------------------------------------------------------------------------------

def _b64_encode(data: bytes) -> str:
    return base64.b64encode(data).decode().rstrip("=")


def _b64_decode(text: str) -> bytes:
    try:
        data = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise AgeError("invalid base64 in the age header") from None
    if _b64_encode(data) != text or "=" in text:
        raise AgeError("non-canonical base64 in the age header")
    return data


def _hkdf(ikm: bytes, salt: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(ikm)


def _wrap_body(body: bytes) -> bytes:
    text = _b64_encode(body)
    lines = [text[i:i + 64] for i in range(0, len(text), 64)]
    if len(text) % 64 == 0:
        lines.append("")  # the body always ends with a line shorter than 64 columns
    return ("\n".join(lines) + "\n").encode()


def _stanza_for(file_key: bytes, recipient: bytes) -> bytes:
    ephemeral = X25519PrivateKey.generate()
    share = ephemeral.public_key().public_bytes_raw()
    shared = ephemeral.exchange(X25519PublicKey.from_public_bytes(recipient))
    wrap_key = _hkdf(shared, share + recipient, X25519_LABEL)
    body = ChaCha20Poly1305(wrap_key).encrypt(b"\x00" * 12, file_key, None)
    return b"-> X25519 " + _b64_encode(share).encode() + b"\n" + _wrap_body(body)


@dataclass(frozen=True)
class _Stanza:
    kind: str
    args: tuple[str, ...]
    body: bytes


def _parse_header(data: bytes) -> tuple[list[_Stanza], bytes, bytes, int]:
    """(stanzas, header bytes up to `---`, mac, payload offset)."""
    pos = 0

    def next_line() -> bytes:
        nonlocal pos
        end = data.find(b"\n", pos)
        if end < 0:
            raise AgeError("truncated age header")
        line, pos = data[pos:end], end + 1
        return line

    if next_line() != INTRO:
        raise AgeError("not an age file (missing the age-encryption.org/v1 line)")
    stanzas: list[_Stanza] = []
    while True:
        start = pos
        line = next_line()
        if line.startswith(b"--- "):
            mac = _b64_decode(line[4:].decode("ascii", "replace"))
            return stanzas, data[:start + 3], mac, pos
        if not line.startswith(b"-> "):
            raise AgeError("malformed age header line")
        args = line[3:].decode("ascii", "replace").split(" ")
        if not args or any(not a for a in args):
            raise AgeError("malformed age stanza")
        body = b""
        while True:
            chunk = next_line().decode("ascii", "replace")
            body += _b64_decode(chunk) if chunk else b""
            if len(chunk) < 64:
                break
            if len(chunk) > 64:
                raise AgeError("age stanza body line longer than 64 columns")
        stanzas.append(_Stanza(args[0], tuple(args[1:]), body))


def _unwrap(stanzas: list[_Stanza], identities: Sequence[X25519Identity]) -> bytes | None:
    for identity in identities:
        private = X25519PrivateKey.from_private_bytes(identity.secret)
        for stanza in stanzas:
            if stanza.kind != "X25519":
                continue  # unknown stanza types (grease, other recipients' types) are skipped
            if len(stanza.args) != 1 or len(stanza.body) != 32:
                raise AgeError("malformed X25519 stanza in the age header")
            share = _b64_decode(stanza.args[0])
            if len(share) != 32:
                raise AgeError("malformed X25519 stanza in the age header")
            try:
                shared = private.exchange(X25519PublicKey.from_public_bytes(share))
            except ValueError:  # low-order point: an all-zero shared secret must abort
                raise AgeError("invalid X25519 share in the age header") from None
            wrap_key = _hkdf(shared, share + identity.public_key, X25519_LABEL)
            try:
                return ChaCha20Poly1305(wrap_key).decrypt(b"\x00" * 12, stanza.body, None)
            except InvalidTag:
                continue
    return None


# --- Payload and armor -----------------------------------------------------------------------

def _chunk_nonce(counter: int, last: bool) -> bytes:
    return counter.to_bytes(11, "big") + (b"\x01" if last else b"\x00")


def _seal_payload(file_key: bytes, plaintext: bytes) -> bytes:
    nonce = os.urandom(16)
    aead = ChaCha20Poly1305(_hkdf(file_key, nonce, b"payload"))
    chunks = [plaintext[i:i + CHUNK_SIZE] for i in range(0, len(plaintext), CHUNK_SIZE)] or [b""]
    out = [nonce]
    for counter, chunk in enumerate(chunks):
        out.append(aead.encrypt(_chunk_nonce(counter, counter == len(chunks) - 1), chunk, None))
    return b"".join(out)


def _open_payload(file_key: bytes, payload: bytes) -> bytes:
    if len(payload) < 16 + TAG_SIZE:
        raise AgeError("truncated age payload")
    aead = ChaCha20Poly1305(_hkdf(file_key, payload[:16], b"payload"))
    body, size = payload[16:], CHUNK_SIZE + TAG_SIZE
    pieces = [body[i:i + size] for i in range(0, len(body), size)]
    out = []
    for counter, piece in enumerate(pieces):
        last = counter == len(pieces) - 1
        try:
            plain = aead.decrypt(_chunk_nonce(counter, last), piece, None)
        except InvalidTag:
            raise AgeError("age payload failed authentication (truncated or tampered)") from None
        if last and not plain and counter > 0:
            raise AgeError("age payload ends with an empty chunk")
        out.append(plain)
    return b"".join(out)


def armor(data: bytes) -> bytes:
    """Wrap a binary age file in the PEM-style ASCII armor (64-column padded base64)."""
    text = base64.b64encode(data).decode()
    lines = [text[i:i + 64] for i in range(0, len(text), 64)]
    return ("\n".join([ARMOR_BEGIN, *lines, ARMOR_END]) + "\n").encode()


def dearmor(data: bytes) -> bytes:
    """The binary age file inside an armored one (surrounding whitespace allowed)."""
    lines = data.decode("ascii", "replace").strip().replace("\r\n", "\n").split("\n")
    if len(lines) < 2 or lines[0] != ARMOR_BEGIN or lines[-1] != ARMOR_END:
        raise AgeError("malformed age armor (expected -----BEGIN AGE ENCRYPTED FILE----- ...)")
    body = lines[1:-1]
    if any(len(line) > 64 for line in body) or any(len(line) != 64 for line in body[:-1]):
        raise AgeError("malformed age armor (base64 lines must be 64 columns)")
    try:
        return base64.b64decode("".join(body), validate=True)
    except (binascii.Error, ValueError):
        raise AgeError("malformed age armor (invalid base64)") from None


# --- Public API ------------------------------------------------------------------------------

def encrypt(plaintext: bytes, recipients: Sequence[str], *, armored: bool = False) -> bytes:
    """Encrypt `plaintext` to every `age1...` recipient; armored text when `armored`."""
    if not recipients:
        raise AgeError("no age recipients to encrypt to")
    keys = [parse_recipient(r) for r in recipients]
    file_key = os.urandom(16)
    header = INTRO + b"\n" + b"".join(_stanza_for(file_key, k) for k in keys) + b"---"
    mac = hmac.new(_hkdf(file_key, b"", b"header"), header, hashlib.sha256).digest()
    data = header + b" " + _b64_encode(mac).encode() + b"\n" + _seal_payload(file_key, plaintext)
    return armor(data) if armored else data


def decrypt(data: bytes, identities: Sequence[X25519Identity]) -> bytes:
    """Decrypt an age file (binary or armored); NoMatchingIdentity when no identity opens it."""
    if data.lstrip().startswith(b"-----BEGIN"):
        data = dearmor(data)
    stanzas, header, mac, offset = _parse_header(data)
    file_key = _unwrap(stanzas, identities)
    if file_key is None:
        raise NoMatchingIdentity("no identity matched any of the recipients")
    expected = hmac.new(_hkdf(file_key, b"", b"header"), header, hashlib.sha256).digest()
    if not hmac.compare_digest(expected, mac):
        raise AgeError("age header MAC mismatch (the file was tampered with)")
    return _open_payload(file_key, data[offset:])

