"""Webhook signatures (fastflow.daemon.webhooks.signatures): GitHub and Standard Webhooks.

Every expected signature is computed here by hand with hashlib/hmac/base64, or taken from the
senders' published examples, never from the module under test.
"""
from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from fastflow.daemon.webhooks.signatures import (
    GITHUB,
    STANDARD,
    TOLERANCE_S,
    BadSignature,
    scheme_of,
    sign_github,
    sign_standard,
    standard_key,
    verify,
    verify_github,
    verify_standard,
)

# GitHub's published example (docs "Validating webhook deliveries").
GH_SECRET = "It's a Secret to Everybody"
GH_BODY = b"Hello, World!"
GH_SIGNATURE = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"

# Standard Webhooks' published example (the specification's and its libraries' test vector).
SW_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SW_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SW_TS = 1614265330
SW_BODY = b'{"test": 2432232314}'
SW_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def by_hand_github(secret: bytes, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def by_hand_standard(key: bytes, msg_id: str, ts: int, body: bytes) -> str:
    content = f"{msg_id}.{ts}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()


def sw_headers(signature: str, msg_id: str = SW_ID, ts: int = SW_TS) -> dict[str, str]:
    return {"webhook-id": msg_id, "webhook-timestamp": str(ts), "webhook-signature": signature}


# -- GitHub ------------------------------------------------------------------------------------

def test_the_published_github_example_is_what_hmac_gives():
    assert by_hand_github(GH_SECRET.encode(), GH_BODY) == GH_SIGNATURE
    assert sign_github(GH_BODY, GH_SECRET) == {"X-Hub-Signature-256": GH_SIGNATURE}


def test_the_published_github_example_verifies():
    headers = {"X-Hub-Signature-256": GH_SIGNATURE}
    assert verify(GH_BODY, headers, [GH_SECRET], now=0) == GITHUB
    # Header names are case-insensitive, and WSGI's spelling is understood.
    assert verify(GH_BODY, {"x-hub-signature-256": GH_SIGNATURE}, [GH_SECRET], now=0) == GITHUB
    assert verify(GH_BODY, {"HTTP_X_HUB_SIGNATURE_256": GH_SIGNATURE}, [GH_SECRET], 0) == GITHUB
    # GitHub writes lower-case hex; upper case is the same digest.
    verify_github(GH_BODY, GH_SIGNATURE.upper().replace("SHA256=", "sha256="), [GH_SECRET])


@pytest.mark.parametrize("body", [b"Hello, World!!", b"hello, World!", b"", b"Hello, World!\n"])
def test_a_github_signature_of_another_body_is_refused(body):
    with pytest.raises(BadSignature, match="matches none of the 1 secret"):
        verify_github(body, GH_SIGNATURE, [GH_SECRET])


@pytest.mark.parametrize("value", [
    "", "sha256=", "sha1=" + "0" * 40, GH_SIGNATURE[:-1], GH_SIGNATURE + "0",
    "sha256=" + "g" * 64, GH_SIGNATURE.removeprefix("sha256="),
])
def test_a_malformed_github_header_is_refused(value):
    with pytest.raises(BadSignature, match="is not sha256=<64 hex digits>"):
        verify_github(GH_BODY, value, [GH_SECRET])


def test_github_rotation_any_active_secret_verifies():
    new = "new-secret-2026"
    signed_new = by_hand_github(new.encode(), GH_BODY)
    assert verify(GH_BODY, {"X-Hub-Signature-256": signed_new}, [GH_SECRET, new], 0) == GITHUB
    assert verify(GH_BODY, {"X-Hub-Signature-256": GH_SIGNATURE}, [GH_SECRET, new], 0) == GITHUB
    with pytest.raises(BadSignature, match="none of the 2 secret"):
        verify(GH_BODY, {"X-Hub-Signature-256": signed_new}, [GH_SECRET, "other"], 0)
    with pytest.raises(BadSignature, match="no webhook secret"):
        verify(GH_BODY, {"X-Hub-Signature-256": signed_new}, [], 0)


def test_a_github_secret_is_used_as_written_even_with_the_whsec_prefix():
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    signed = by_hand_github(secret.encode(), b"{}")
    verify_github(b"{}", signed, [secret])


def test_a_non_ascii_github_secret_is_keyed_with_its_utf8_bytes():
    secret = "clé-secrète"
    verify_github(b"x", by_hand_github(secret.encode("utf-8"), b"x"), [secret])


# -- Standard Webhooks --------------------------------------------------------------------------

def test_the_published_standard_webhooks_example_is_what_hmac_gives():
    key = base64.b64decode(SW_SECRET.removeprefix("whsec_"))
    assert by_hand_standard(key, SW_ID, SW_TS, SW_BODY) == SW_SIGNATURE
    assert sign_standard(SW_BODY, SW_SECRET, SW_ID, SW_TS) == sw_headers(SW_SIGNATURE)


def test_the_published_standard_webhooks_example_verifies():
    assert verify(SW_BODY, sw_headers(SW_SIGNATURE), [SW_SECRET], now=SW_TS) == STANDARD
    upper = {k.title(): v for k, v in sw_headers(SW_SIGNATURE).items()}
    assert verify(SW_BODY, upper, [SW_SECRET], now=SW_TS) == STANDARD


def test_standard_several_signatures_in_one_header_any_one_matches():
    others = "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= v1a,c29tZXRoaW5n v2,abc"
    for value in (f"{others} {SW_SIGNATURE}", f"{SW_SIGNATURE} {others}",
                  f"  {SW_SIGNATURE}  ", f"v1,!!notbase64 {SW_SIGNATURE}"):
        verify_standard(SW_BODY, SW_ID, str(SW_TS), value, [SW_SECRET], now=SW_TS)
    with pytest.raises(BadSignature, match="matches none"):
        verify_standard(SW_BODY, SW_ID, str(SW_TS), others, [SW_SECRET], now=SW_TS)


def test_standard_timestamp_tolerance_is_five_minutes_both_ways():
    assert TOLERANCE_S == 300
    for now in (SW_TS - 300, SW_TS + 300, SW_TS + 299.5):
        verify_standard(SW_BODY, SW_ID, str(SW_TS), SW_SIGNATURE, [SW_SECRET], now=now)
    with pytest.raises(BadSignature, match=r"is \+301 s off now"):
        verify_standard(SW_BODY, SW_ID, str(SW_TS), SW_SIGNATURE, [SW_SECRET], now=SW_TS + 301)
    with pytest.raises(BadSignature, match=r"is -301 s off now"):
        verify_standard(SW_BODY, SW_ID, str(SW_TS), SW_SIGNATURE, [SW_SECRET], now=SW_TS - 301)


def test_standard_signature_covers_the_id_and_the_timestamp():
    for msg_id, ts in ((SW_ID + "x", SW_TS), (SW_ID, SW_TS + 1)):
        with pytest.raises(BadSignature, match="matches none"):
            verify_standard(SW_BODY, msg_id, str(ts), SW_SIGNATURE, [SW_SECRET], now=SW_TS)


@pytest.mark.parametrize("msg_id, ts, message", [
    (None, str(SW_TS), "webhook-id is missing"),
    ("", str(SW_TS), "webhook-id is missing"),
    (SW_ID, None, "webhook-timestamp is missing or not Unix seconds"),
    (SW_ID, "1614265330.5", "webhook-timestamp is missing or not Unix seconds"),
    (SW_ID, "-1614265330", "webhook-timestamp is missing or not Unix seconds"),
    (SW_ID, "16142653301614265330", "webhook-timestamp is missing or not Unix seconds"),
    (SW_ID, "Thu, 25 Feb 2021", "webhook-timestamp is missing or not Unix seconds"),
])
def test_standard_bad_id_or_timestamp_is_refused(msg_id, ts, message):
    with pytest.raises(BadSignature, match=message):
        verify_standard(SW_BODY, msg_id, ts, SW_SIGNATURE, [SW_SECRET], now=SW_TS)


@pytest.mark.parametrize("value", ["", "v1,", "v1", "v1a,g0hM9SsE", "v1,!!!!", "v1,g0hM9SsE+OTPJ"])
def test_standard_header_without_a_usable_v1_signature_is_refused(value):
    with pytest.raises(BadSignature, match="holds no v1,<base64> signature"):
        verify_standard(SW_BODY, SW_ID, str(SW_TS), value, [SW_SECRET], now=SW_TS)


def test_standard_raw_secret_is_keyed_with_its_bytes():
    signed = by_hand_standard(b"raw-secret", "evt_1", 1700000000, b"{}")
    verify_standard(b"{}", "evt_1", "1700000000", signed, ["raw-secret"], now=1700000000)
    assert standard_key("raw-secret") == b"raw-secret"


def test_standard_rotation_and_a_broken_whsec_secret_among_them():
    new_key = b"\x01\x02rotated-key-bytes"
    new = "whsec_" + base64.b64encode(new_key).decode()
    signed = by_hand_standard(new_key, SW_ID, SW_TS, SW_BODY)
    secrets = ["whsec_not*base64", SW_SECRET, new]
    verify_standard(SW_BODY, SW_ID, str(SW_TS), signed, secrets, now=SW_TS)
    verify_standard(SW_BODY, SW_ID, str(SW_TS), SW_SIGNATURE, secrets, now=SW_TS)
    with pytest.raises(BadSignature, match="no usable webhook secret"):
        verify_standard(SW_BODY, SW_ID, str(SW_TS), SW_SIGNATURE, ["whsec_***"], now=SW_TS)


@pytest.mark.parametrize("secret, message", [
    ("whsec_not*base64", "must be whsec_ followed by base64"),
    ("whsec_abc", "must be whsec_ followed by base64"),  # bad padding
    ("whsec_", "holds no key after whsec_"),
])
def test_a_bad_whsec_secret_names_the_fix(secret, message):
    with pytest.raises(ValueError, match=message):
        standard_key(secret)
    with pytest.raises(ValueError, match=message):
        sign_standard(b"{}", secret, "id", 1)


def test_sign_standard_round_trips_through_verify():
    headers = sign_standard(b"payload", "whsec_" + base64.b64encode(b"k" * 24).decode(), "d-1", 42)
    assert verify(b"payload", headers, ["whsec_" + base64.b64encode(b"k" * 24).decode()], 42) \
        == STANDARD


# -- either ----------------------------------------------------------------------------------

def test_a_request_without_a_signature_is_refused():
    assert scheme_of({"Content-Type": "application/json"}) is None
    with pytest.raises(BadSignature, match="no signature"):
        verify(GH_BODY, {"Content-Type": "application/json"}, [GH_SECRET], now=0)


def test_a_request_with_both_headers_is_checked_as_githubs():
    headers = {"X-Hub-Signature-256": GH_SIGNATURE, **sw_headers(SW_SIGNATURE)}
    assert scheme_of(headers) == GITHUB
    assert verify(GH_BODY, headers, [GH_SECRET], now=0) == GITHUB
