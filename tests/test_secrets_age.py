"""The age layer against the real `age` CLI (Debian package), both directions, and SOPS's vectors."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from fastflow.secrets import age

FIXTURES = Path(__file__).parent / "fixtures" / "sops" / "age-keysource-test"
SIZES = [0, 1, 1000, age.CHUNK_SIZE, age.CHUNK_SIZE + 1, 2 * age.CHUNK_SIZE + 17]



@pytest.fixture()
def keyfile(tmp_path: Path) -> tuple[Path, str]:
    path = tmp_path / "key.txt"
    subprocess.run(["age-keygen", "-o", str(path)], check=True, capture_output=True)
    recipient = subprocess.run(["age-keygen", "-y", str(path)], check=True, capture_output=True,
                               text=True).stdout.strip()
    return path, recipient


def _payload(size: int) -> bytes:
    return (bytes(range(256)) * (size // 256 + 1))[:size]


def test_identity_from_age_keygen_matches_its_recipient(keyfile):
    path, recipient = keyfile
    [identity] = age.parse_identities(path.read_text(), str(path))
    assert identity.recipient == recipient
    assert age.X25519Identity.parse(identity.to_string()) == identity


def test_identity_repr_never_shows_the_secret():
    identity = age.X25519Identity.generate()
    assert identity.to_string() not in repr(identity)
    assert identity.recipient in repr(identity)


@pytest.mark.parametrize("armored", [False, True])
@pytest.mark.parametrize("size", SIZES)
def test_our_encryption_decrypts_with_age_cli(tmp_path, keyfile, size, armored):
    key, recipient = keyfile
    data = _payload(size)
    (tmp_path / "ct").write_bytes(age.encrypt(data, [recipient], armored=armored))
    out = subprocess.run(["age", "-d", "-i", str(key), str(tmp_path / "ct")], capture_output=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout == data


@pytest.mark.parametrize("armored", [False, True])
@pytest.mark.parametrize("size", SIZES)
def test_age_cli_encryption_decrypts_with_our_code(tmp_path, keyfile, size, armored):
    key, recipient = keyfile
    data = _payload(size)
    args = ["age", "-e", "-r", recipient] + (["-a"] if armored else []) + ["-o", str(tmp_path / "ct")]
    subprocess.run(args, input=data, check=True)
    identities = age.parse_identities(key.read_text(), str(key))
    assert age.decrypt((tmp_path / "ct").read_bytes(), identities) == data


def test_several_recipients_each_decrypt(tmp_path, keyfile):
    key, recipient = keyfile
    other = age.X25519Identity.generate()
    sealed = age.encrypt(b"shared", [other.recipient, recipient], armored=True)
    (tmp_path / "ct").write_bytes(sealed)
    out = subprocess.run(["age", "-d", "-i", str(key), str(tmp_path / "ct")], capture_output=True)
    assert out.stdout == b"shared"
    assert age.decrypt(sealed, [other]) == b"shared"


def test_sops_mock_vectors():
    [identity] = age.parse_identities((FIXTURES / "mockIdentity.txt").read_text(), "mock")
    assert identity.recipient == (FIXTURES / "mockRecipient.txt").read_text().strip()
    sealed = (FIXTURES / "mockEncryptedKey.age").read_bytes()
    assert age.decrypt(sealed, [identity]) == b"data"
    other = age.parse_identities((FIXTURES / "mockOtherIdentity.txt").read_text(), "other")
    with pytest.raises(age.NoMatchingIdentity) as err:
        age.decrypt(sealed, other)
    assert str(err.value) == "no identity matched any of the recipients"


def test_tampered_header_is_refused():
    identity = age.X25519Identity.generate()
    sealed = bytearray(age.encrypt(b"x" * 10, [identity.recipient]))
    sealed = bytes(sealed).replace(b"--- ", b"--- A", 1)
    with pytest.raises(age.AgeError):
        age.decrypt(sealed, [identity])


def test_tampered_payload_is_refused():
    identity = age.X25519Identity.generate()
    sealed = bytearray(age.encrypt(b"x" * 100, [identity.recipient]))
    sealed[-1] ^= 1
    with pytest.raises(age.AgeError) as err:
        age.decrypt(bytes(sealed), [identity])
    assert str(err.value) == "age payload failed authentication (truncated or tampered)"


def test_truncated_payload_is_refused():
    identity = age.X25519Identity.generate()
    sealed = age.encrypt(b"y" * (age.CHUNK_SIZE + 5), [identity.recipient])
    with pytest.raises(age.AgeError) as err:
        age.decrypt(sealed[:-30], [identity])
    assert str(err.value) == "age payload failed authentication (truncated or tampered)"


def test_invalid_recipient_message():
    with pytest.raises(age.AgeError) as err:
        age.parse_recipient("age1nope")
    assert str(err.value) == ("'age1nope' is not a valid age X25519 recipient (expected age1... "
                              "as printed by `fastflow secrets keygen` or `age-keygen -y`)")


def test_invalid_identity_line_is_named_without_its_content():
    with pytest.raises(age.AgeError) as err:
        age.parse_identities("# comment\n\nAGE-SECRET-KEY-1NOTAKEY\n", "keys.txt")
    assert str(err.value) == ("keys.txt: line 3 is not an age X25519 identity (expected "
                              "AGE-SECRET-KEY-1...; SSH, plugin and passphrase-protected keys are "
                              "not supported)")


def test_armor_layout_matches_age():
    identity = age.X25519Identity.generate()
    text = age.encrypt(b"k" * 32, [identity.recipient], armored=True).decode()
    lines = text.splitlines()
    assert lines[0] == "-----BEGIN AGE ENCRYPTED FILE-----"
    assert lines[-1] == "-----END AGE ENCRYPTED FILE-----" and text.endswith("\n")
    assert all(len(line) == 64 for line in lines[1:-2])
