"""The SOPS format: real sops vectors (value layer, AAD, comments, MAC), typing, round trips,
bad input, and key discovery."""
from __future__ import annotations

import json
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import pytest

from fastflow.errors import SecretsError
from fastflow.secrets import age, keys
from fastflow.secrets.sops import decrypt_documents, decrypt_value, format_go_float
from fastflow.secrets.sopsfile import (
    decrypt_file,
    decrypt_file_text,
    encrypt_file_text,
    parse_file,
    plain_tree,
)
from fastflow.secrets.yamltree import Comment, load_documents

VECTORS = Path(__file__).parent / "fixtures" / "sops" / "pgp-current-format"
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


def _comments(node, out):
    for item in node:
        if isinstance(item, Comment):
            out.append(item.text)
        elif isinstance(item, tuple) and isinstance(item[1], list):
            _comments(item[1], out)
        elif isinstance(item, list):
            _comments(item, out)
    return out


@pytest.mark.parametrize("name", ["example.yaml", "format.enc.yaml", "comments.enc.yaml"])
def test_sops_vectors_decrypt_with_their_data_key(name):
    expected = json.loads((VECTORS / f"{name}.expected.json").read_text())
    sops_file = parse_file((VECTORS / name).read_text(), name)
    decrypted = decrypt_documents(sops_file, bytes.fromhex(expected["data_key_hex"]))  # MAC checked
    assert plain_tree(decrypted.documents[0]) == expected["plaintext"]
    comments = [c["comment"] for c in expected["encrypted_comments_in_file_order"]]
    assert _comments(decrypted.documents[0], []) == comments


def test_sops_vector_comment_aad_follows_sops():
    expected = json.loads((VECTORS / "example.yaml.expected.json").read_text())
    key = bytes.fromhex(expected["data_key_hex"])
    line = next(l for l in (VECTORS / "example.yaml").read_text().splitlines() if "#ENC" in l)
    assert decrypt_value(line.strip()[1:], key, "app2:db:") == " private key for secret operations in app2"


def test_tampered_plain_value_breaks_the_mac(tmp_path):
    expected = json.loads((VECTORS / "example.yaml.expected.json").read_text())
    text = (VECTORS / "example.yaml").read_text().replace("remain in clear text", "remain in CLEAR text")
    sops_file = parse_file(text, "example.yaml")
    with pytest.raises(SecretsError) as err:
        decrypt_documents(sops_file, bytes.fromhex(expected["data_key_hex"]))
    assert str(err.value) == (
        "example.yaml: MAC mismatch: the file was changed without its key (a value, grant or "
        "order differs from what was encrypted), so nothing from it is used; restore it from "
        "version control or re-create the changed entries with `fastflow secrets`")


def test_reordered_values_break_the_mac():
    expected = json.loads((VECTORS / "example.yaml.expected.json").read_text())
    lines = (VECTORS / "example.yaml").read_text().splitlines(keepends=True)
    user = next(i for i, l in enumerate(lines) if l.strip().startswith("user:"))
    lines[user], lines[user + 1] = lines[user + 1], lines[user]
    with pytest.raises(SecretsError, match="MAC mismatch"):
        decrypt_documents(parse_file("".join(lines), "x"), bytes.fromhex(expected["data_key_hex"]))


@pytest.mark.parametrize("value, text", [
    (1.0, "1"), (1234568000.0, "1234568000"), (1.5e-7, "0.00000015"), (-0.0, "-0"),
    (0.1, "0.1"), (float("inf"), "+Inf"), (float("-inf"), "-Inf"), (float("nan"), "NaN"),
])
def test_float_serialization_is_gos(value, text):
    assert format_go_float(value) == text


@pytest.mark.parametrize("plain, value", [
    ("yes", "yes"), ("on", "on"), ("1e3", 1000.0), ("0x10", 16), ("0777", 511), ("+5", 5),
    ("1_000", 1000), ("true", True), ("FALSE", False), ("~", None), ("null", None),
    ("1.50", 1.5), ("2024-01-01", datetime(2024, 1, 1, tzinfo=timezone.utc)), ("08", 8.0),
])
def test_plain_scalars_are_typed_like_yaml_v3(plain, value):
    [doc] = load_documents(f"k: {plain}\n", "t")
    assert doc.get("k") == value and type(doc.get("k")) is type(value)


def _identity_pair():
    identity = age.X25519Identity.generate()
    return identity, identity.recipient


PLAIN = """\
# top comment
name: Fast-Flow
port: 5432
ratio: 1.5
enabled: true
answer: yes
when: 2024-01-01T10:00:00Z
empty: ""
nothing: null
quoted: "0x10"
app:
    db:
        user: eve
        password: c4r1b0u
    # private key for app
    key: |-
        -----BEGIN KEY-----
        abc
        -----END KEY-----
items:
    - one
    - two: 2
      three: [a, b]
public_unencrypted:
    note: visible
"""


def test_encrypt_decrypt_round_trip_keeps_types_comments_order():
    identity, recipient = _identity_pair()
    encrypted = encrypt_file_text(PLAIN, "plain.yaml", [recipient], NOW)
    assert "c4r1b0u" not in encrypted and "private key" not in encrypted
    assert "note: visible" in encrypted
    assert 'lastmodified: "2026-01-02T03:04:05Z"' in encrypted
    decrypted = decrypt_file_text(encrypted, "enc.yaml", [identity])
    again = load_documents(decrypted, "d")
    assert plain_tree(again[0]) == plain_tree(load_documents(PLAIN, "p")[0])
    assert decrypted.index("# top comment") < decrypted.index("name:")
    # the comment above app.key is attached to app.db, as sops does (AAD app:db:)
    assert "        # private key for app\n    key: |-" in decrypted


def test_types_in_encrypted_values():
    identity, recipient = _identity_pair()
    encrypted = encrypt_file_text(PLAIN, "plain.yaml", [recipient], NOW)
    for fragment in ["type:int", "type:float", "type:bool", "type:time", "type:comment"]:
        assert fragment in encrypted
    assert "empty: \"\"" in encrypted and "nothing: null" in encrypted


def test_unchanged_values_keep_their_ciphertext():
    from fastflow.secrets.sopsfile import reencrypt
    identity, recipient = _identity_pair()
    encrypted = encrypt_file_text("a: one\nb: two\n", "f", [recipient], NOW)
    decrypted = decrypt_file(parse_file(encrypted, "f"), [identity])
    decrypted.documents[0].set("b", "changed")
    again = reencrypt(decrypted, decrypted.documents, NOW)
    old_lines, new_lines = encrypted.splitlines(), again.splitlines()
    assert old_lines[0] == new_lines[0]  # a: unchanged ciphertext
    assert old_lines[1] != new_lines[1]


def test_data_key_is_a_real_age_file(tmp_path):
    identity, recipient = _identity_pair()
    encrypted = encrypt_file_text("a: b\n", "f", [recipient], NOW)
    sops_file = parse_file(encrypted, "f")
    (tmp_path / "enc.age").write_text(sops_file.metadata.age[0].enc)
    (tmp_path / "key.txt").write_text(identity.to_string() + "\n")
    out = subprocess.run(["age", "-d", "-i", str(tmp_path / "key.txt"), str(tmp_path / "enc.age")],
                         capture_output=True, check=True)
    assert out.stdout == decrypt_file(sops_file, [identity]).data_key


def test_no_identity_names_the_recipients():
    _, recipient = _identity_pair()
    encrypted = encrypt_file_text("a: b\n", "f", [recipient], NOW)
    with pytest.raises(SecretsError) as err:
        decrypt_file_text(encrypted, "secrets.enc.yaml", [])
    assert str(err.value) == (
        f"secrets.enc.yaml: no age identity found to decrypt it; it is encrypted for {recipient}. "
        "Provide the identity of one of them in SOPS_AGE_KEY_FILE, SOPS_AGE_KEY or "
        "SOPS_AGE_KEY_CMD, or in ~/.config/sops/age/keys.txt")


def test_wrong_key_names_both_sides():
    _, recipient = _identity_pair()
    wrong = age.X25519Identity.generate()
    encrypted = encrypt_file_text("a: b\n", "f", [recipient], NOW)
    with pytest.raises(SecretsError) as err:
        decrypt_file_text(encrypted, "s.yaml", [wrong])
    assert str(err.value) == (
        f"s.yaml: wrong key: none of your age identities ({wrong.recipient}) is a recipient of "
        f"this file ({recipient}); use the identity of one of them, or ask someone who has one "
        "to run `fastflow secrets recipients add <your age1...>`")


def test_malformed_enc_value_names_the_key_path():
    identity, recipient = _identity_pair()
    encrypted = encrypt_file_text("db:\n    pw: secret\n", "f", [recipient], NOW)
    broken = encrypted.replace("type:str]", "type:str", 1)
    with pytest.raises(SecretsError) as err:
        decrypt_file_text(broken, "s.yaml", [identity])
    assert str(err.value) == (
        "s.yaml: malformed encrypted value at db.pw: it is not of the form "
        "ENC[AES256_GCM,data:...,iv:...,tag:...,type:...]; restore the file from version control")


def test_value_moved_to_another_key_fails_authentication():
    identity, recipient = _identity_pair()
    encrypted = encrypt_file_text("a: x1\nb: x2\n", "f", [recipient], NOW)
    lines = encrypted.splitlines(keepends=True)
    lines[0], lines[1] = "a:" + lines[1][2:], "b:" + lines[0][2:]
    with pytest.raises(SecretsError) as err:
        decrypt_file_text("".join(lines), "s.yaml", [identity])
    assert str(err.value) == (
        "s.yaml: malformed encrypted value at a: it does not decrypt with the file's data key "
        "(tampered or moved); restore the file from version control")


def test_plain_value_where_encrypted_expected_names_the_key_path():
    identity, recipient = _identity_pair()
    encrypted = encrypt_file_text("list:\n    - x\n    - y\n", "f", [recipient], NOW)
    lines = encrypted.splitlines(keepends=True)
    lines[2] = "    - plain\n"
    with pytest.raises(SecretsError) as err:
        decrypt_file_text("".join(lines), "s.yaml", [identity])
    assert str(err.value) == (
        "s.yaml: list[1] holds a plain value where an encrypted one is expected; set it with "
        "`fastflow secrets set`/`edit`, or name the key with the '_unencrypted' suffix if it is "
        "meant to stay plain")


def test_not_encrypted_file_is_refused():
    with pytest.raises(SecretsError) as err:
        decrypt_file_text("a: b\n", "plain.yaml", [])
    assert str(err.value) == (
        "plain.yaml: sops metadata not found (no `sops:` key at the top level); this file is not "
        "encrypted; encrypt it with `fastflow secrets encrypt`")


def test_encrypted_regex_rule_and_mac_only():
    from fastflow.secrets.sops import CryptRule
    identity, recipient = _identity_pair()
    text = "kind: Secret\ndata:\n    pw: s3cret\n"
    encrypted = encrypt_file_text(text, "k.yaml", [recipient], NOW,
                                  CryptRule("encrypted_regex", "^(data|stringData)$"), True)
    assert "kind: Secret" in encrypted and "s3cret" not in encrypted
    assert "encrypted_regex: ^(data|stringData)$" in encrypted and "mac_only_encrypted: true" in encrypted
    edited = encrypted.replace("kind: Secret", "kind: Other")  # plain values outside the MAC
    assert "kind: Other" in decrypt_file_text(edited, "k.yaml", [identity])


# --- key discovery -------------------------------------------------------------------------

def test_identities_from_every_sops_source(tmp_path):
    ids = [age.X25519Identity.generate() for _ in range(4)]
    (tmp_path / "file.txt").write_text(f"# mine\n{ids[1].to_string()}\n")
    script = tmp_path / "keycmd.sh"
    script.write_text(f"#!/bin/sh\necho \"# for $SOPS_AGE_RECIPIENT\"\necho {ids[2].to_string()}\n")
    script.chmod(0o755)
    default = tmp_path / "xdg" / "sops" / "age" / "keys.txt"
    default.parent.mkdir(parents=True)
    default.write_text(ids[3].to_string() + "\n")
    environ = {"SOPS_AGE_KEY": f"  {ids[0].to_string()}  ", "SOPS_AGE_KEY_FILE": str(tmp_path / "file.txt"),
               "SOPS_AGE_KEY_CMD": str(script), "XDG_CONFIG_HOME": str(tmp_path / "xdg"),
               "HOME": str(tmp_path / "home")}
    assert keys.load_identities(environ, [ids[0].recipient]) == ids


def test_default_key_file_uses_home_without_xdg(tmp_path):
    assert keys.default_key_file({"HOME": "/h"}) == Path("/h/.config/sops/age/keys.txt")
    assert keys.load_identities({"HOME": str(tmp_path)}) == []


def test_missing_key_file_is_an_error(tmp_path):
    with pytest.raises(SecretsError) as err:
        keys.load_identities({"SOPS_AGE_KEY_FILE": str(tmp_path / "nope.txt")})
    assert str(err.value) == (f"SOPS_AGE_KEY_FILE: the identity file {tmp_path / 'nope.txt'} does "
                              "not exist; fix the variable or create the file with "
                              "`fastflow secrets keygen`")


def test_failing_key_command_is_an_error(tmp_path):
    with pytest.raises(SecretsError) as err:
        keys.load_identities({"SOPS_AGE_KEY_CMD": "sh -c 'echo nope >&2; exit 3'"})
    assert str(err.value) == "SOPS_AGE_KEY_CMD: \"sh -c 'echo nope >&2; exit 3'\" exited with code 3: nope"


def test_creation_rules_from_sops_yaml(tmp_path):
    r1, r2 = age.X25519Identity.generate().recipient, age.X25519Identity.generate().recipient
    (tmp_path / ".sops.yaml").write_text(
        "creation_rules:\n"
        f"  - path_regex: \\.dev\\.yaml$\n    age: {r2}\n"
        f"  - path_regex: secrets/.*\\.yaml$\n    age: '{r1}, {r2}'\n    encrypted_regex: ^data$\n")
    (tmp_path / "secrets").mkdir()
    config = keys.find_sops_config(tmp_path / "secrets", {})
    assert config == tmp_path / ".sops.yaml"
    rule = keys.creation_rule_for(config, tmp_path / "secrets" / "a.yaml")
    assert rule.recipients == (r1, r2) and rule.rule.kind == "encrypted_regex"
    with pytest.raises(SecretsError) as err:
        keys.creation_rule_for(config, tmp_path / "other.yaml")
    assert str(err.value) == (f"{config}: no creation rule matches other.yaml; add a rule with a "
                              "path_regex for it and age recipients")
