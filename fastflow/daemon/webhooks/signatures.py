"""Webhook signatures: check a signed request's HMAC, and make one (for `fastflow webhook send`).

Pure: the raw body, the request headers, the secrets and `now` go in; nothing is read or
written. Two schemes, told apart by their headers:

- GitHub: `X-Hub-Signature-256: sha256=<hex>`, HMAC-SHA256 of the raw body keyed with the
  secret's bytes (UTF-8) as it is written.
- Standard Webhooks (standardwebhooks.com): `webhook-id`,
  `webhook-timestamp` (Unix seconds) and `webhook-signature: v1,<base64> [v1,<base64> ...]`,
  HMAC-SHA256 of `<id>.<timestamp>.<body>`. A secret `whsec_<base64>` is keyed with the decoded
  bytes, any other secret with its UTF-8 bytes. A timestamp more than `TOLERANCE_S` off `now`,
  either way, is refused (a replayed or post-dated request).

Every check runs over the raw bytes before anything parses the body, compares with
`hmac.compare_digest`, and accepts a match of any of several secrets (rotation: old and new
both active). Reference: docs/webhooks.md "Signing".
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from typing import Iterable, Mapping

GITHUB_HEADER = "X-Hub-Signature-256"
ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"
STANDARD_SECRET_PREFIX = "whsec_"
TOLERANCE_S = 300  # Standard Webhooks: 5 minutes, before and after now
GITHUB = "github"
STANDARD = "standard"

_HEX_RE = re.compile(r"sha256=([0-9a-fA-F]{64})")
_TIMESTAMP_RE = re.compile(r"[0-9]{1,12}")
# The signature list is bounded: a header of thousands of entries must not cost thousands of HMACs.
MAX_SIGNATURES = 16


class BadSignature(Exception):
    """A signed request failed its check; the argument says why, for the daemon's log only
    (the client gets one answer for every failure: nothing to probe)."""


def header(headers: Mapping[str, str], name: str) -> str | None:
    """The value of header `name` in `headers`, whatever the case of the keys (HTTP header
    names are case-insensitive; WSGI's `HTTP_X_HUB_SIGNATURE_256` spelling is accepted too)."""
    wanted = name.lower()
    wsgi = "http_" + wanted.replace("-", "_")
    for key, value in headers.items():
        lowered = key.lower()
        if lowered == wanted or lowered == wsgi:
            return value
    return None


def scheme_of(headers: Mapping[str, str]) -> str | None:
    """Which signing scheme a request uses (`GITHUB` or `STANDARD`), by its headers; None when
    it carries no signature. A request with both is checked as GitHub's."""
    if header(headers, GITHUB_HEADER) is not None:
        return GITHUB
    if header(headers, SIGNATURE_HEADER) is not None:
        return STANDARD
    return None


def verify(body: bytes, headers: Mapping[str, str], secrets: Iterable[str], now: float) -> str:
    """Check the signature of a request with raw `body` and `headers` against every one of
    `secrets`; return the scheme that matched. `now` is Unix seconds (Standard Webhooks'
    timestamp window). `BadSignature` when no secret matches, the request carries no signature,
    or there is no secret at all."""
    scheme = scheme_of(headers)
    if scheme == GITHUB:
        verify_github(body, header(headers, GITHUB_HEADER) or "", secrets)
    elif scheme == STANDARD:
        verify_standard(body, header(headers, ID_HEADER), header(headers, TIMESTAMP_HEADER),
                        header(headers, SIGNATURE_HEADER) or "", secrets, now)
    else:
        raise BadSignature(f"no signature: neither {GITHUB_HEADER} nor {SIGNATURE_HEADER} is set")
    return scheme


def verify_github(body: bytes, signature: str, secrets: Iterable[str]) -> None:
    """GitHub's `X-Hub-Signature-256` value `signature` against each of `secrets`."""
    match = _HEX_RE.fullmatch(signature.strip())
    if match is None:
        raise BadSignature(f"{GITHUB_HEADER} is not sha256=<64 hex digits>")
    given = match.group(1).lower().encode("ascii")
    keys = [s.encode("utf-8") for s in secrets]
    if not keys:
        raise BadSignature("no webhook secret to check against")
    found = False
    for key in keys:  # every key is tried: the time taken does not tell which one matched
        expected = hmac.new(key, body, hashlib.sha256).hexdigest().encode("ascii")
        found |= hmac.compare_digest(expected, given)
    if not found:
        raise BadSignature(f"{GITHUB_HEADER} matches none of the {len(keys)} secret(s)")


def verify_standard(body: bytes, msg_id: str | None, timestamp: str | None, signatures: str,
                    secrets: Iterable[str], now: float) -> None:
    """Standard Webhooks' headers (`msg_id`, `timestamp`, the space-separated `signatures`)
    against each of `secrets`, with the timestamp within `TOLERANCE_S` of `now`."""
    if not msg_id:
        raise BadSignature(f"{ID_HEADER} is missing")
    if timestamp is None or not _TIMESTAMP_RE.fullmatch(timestamp.strip()):
        raise BadSignature(f"{TIMESTAMP_HEADER} is missing or not Unix seconds")
    sent = int(timestamp.strip())
    if abs(now - sent) > TOLERANCE_S:
        raise BadSignature(f"{TIMESTAMP_HEADER} is {now - sent:+.0f} s off now "
                           f"(more than {TOLERANCE_S} s)")
    given = _v1_signatures(signatures)
    if not given:
        raise BadSignature(f"{SIGNATURE_HEADER} holds no v1,<base64> signature")
    keys = [k for k in (_standard_key_or_none(s) for s in secrets) if k is not None]
    if not keys:
        raise BadSignature("no usable webhook secret to check against")
    content = _signed_content(msg_id, timestamp.strip(), body)
    found = False
    for key in keys:
        expected = hmac.new(key, content, hashlib.sha256).digest()
        for signature in given:
            found |= hmac.compare_digest(expected, signature)
    if not found:
        raise BadSignature(f"{SIGNATURE_HEADER} matches none of the {len(keys)} secret(s)")


def sign_github(body: bytes, secret: str) -> dict[str, str]:
    """The header GitHub would send for `body` signed with `secret`."""
    digest = hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()
    return {GITHUB_HEADER: f"sha256={digest}"}


def sign_standard(body: bytes, secret: str, msg_id: str, timestamp: int) -> dict[str, str]:
    """The three Standard Webhooks headers for `body` with id `msg_id` at Unix second
    `timestamp`, signed with `secret` (`whsec_<base64>` or raw). ValueError when a `whsec_`
    secret is not valid base64."""
    key = standard_key(secret)
    digest = hmac.new(key, _signed_content(msg_id, str(timestamp), body), hashlib.sha256).digest()
    return {
        ID_HEADER: msg_id,
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: "v1," + base64.b64encode(digest).decode("ascii"),
    }


def standard_key(secret: str) -> bytes:
    """The HMAC key of a Standard Webhooks secret: the base64-decoded part after `whsec_`, or
    the UTF-8 bytes of a raw secret. ValueError naming the fix when the base64 is invalid."""
    if not secret.startswith(STANDARD_SECRET_PREFIX):
        return secret.encode("utf-8")
    try:
        key = base64.b64decode(secret[len(STANDARD_SECRET_PREFIX):], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("a whsec_ secret must be whsec_ followed by base64 (as the sender shows "
                         "it); copy it again from the sender") from None
    if not key:
        raise ValueError("a whsec_ secret holds no key after whsec_; copy it again from the sender")
    return key


def _standard_key_or_none(secret: str) -> bytes | None:
    try:
        return standard_key(secret)
    except ValueError:
        return None  # a broken secret matches nothing; the others are still tried


def _v1_signatures(value: str) -> list[bytes]:
    """The decoded `v1,` entries of a `webhook-signature` value; other versions (`v1a`, an
    asymmetric scheme) and entries that are not valid base64 are skipped."""
    out: list[bytes] = []
    for entry in value.split()[:MAX_SIGNATURES]:
        version, _, encoded = entry.partition(",")
        if version != "v1" or not encoded:
            continue
        try:
            out.append(base64.b64decode(encoded, validate=True))
        except (binascii.Error, ValueError):
            continue
    return out


def _signed_content(msg_id: str, timestamp: str, body: bytes) -> bytes:
    return msg_id.encode("utf-8") + b"." + timestamp.encode("ascii") + b"." + body
