"""The Fast-Flow secrets file: grants, resolve_for_pipeline, rotate, recipients, edit."""
from __future__ import annotations

import stat
from datetime import datetime, timezone
from pathlib import Path

import pytest

from fastflow.config import default_repo_config
from fastflow.errors import SecretsError
from fastflow.model import Pipeline, PipelineType
from fastflow.secrets import age, edit, store
from fastflow.secrets.runtime import secrets_loader
from fastflow.secrets.sopsfile import decrypt_file, parse_file

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


@pytest.fixture()
def owner() -> age.X25519Identity:
    return age.X25519Identity.generate()


@pytest.fixture()
def secrets_file(tmp_path: Path, owner) -> Path:
    path = tmp_path / ".fastflow" / "secrets.enc.yaml"
    store.init_secrets(path, [owner.recipient], NOW, tmp_path)
    store.set_secret(path, "DB_PASSWORD", "hunter2", [owner], NOW)
    store.set_secret(path, "API_TOKEN", "tok-123", [owner], NOW)
    store.grant_secret(path, "DB_PASSWORD", ["etl", "report"], [owner], NOW)
    return path


def test_init_writes_the_file_and_a_sops_rule(tmp_path, owner):
    path = tmp_path / ".fastflow" / "secrets.enc.yaml"
    config = store.init_secrets(path, [owner.recipient], NOW, tmp_path)
    assert config == tmp_path / ".sops.yaml"
    assert owner.recipient in config.read_text()
    assert store.list_secrets(path, [owner]) == []
    with pytest.raises(SecretsError) as err:
        store.init_secrets(path, [owner.recipient], NOW, tmp_path)
    assert str(err.value) == (f"{path}: the secrets file already exists; add recipients with "
                              "`fastflow secrets recipients add`")


def test_set_get_list(secrets_file, owner):
    assert store.get_secret(secrets_file, "DB_PASSWORD", [owner]) == "hunter2"
    assert store.list_secrets(secrets_file, [owner]) == [
        store.SecretInfo("DB_PASSWORD", ("etl", "report")), store.SecretInfo("API_TOKEN", ())]
    text = secrets_file.read_text()
    assert "hunter2" not in text and "access_unencrypted:" in text and "- etl" in text


def test_list_without_identity_reads_unverified(secrets_file):
    assert [i.name for i in store.list_secrets(secrets_file)] == ["DB_PASSWORD", "API_TOKEN"]


def test_set_keeps_other_ciphertexts(secrets_file, owner):
    before = secrets_file.read_text().splitlines()
    store.set_secret(secrets_file, "API_TOKEN", "tok-456", [owner], NOW)
    after = secrets_file.read_text().splitlines()
    assert before[0] == after[0] and before[1] != after[1]


def test_resolve_for_pipeline_gives_granted_secrets(secrets_file, owner):
    assert store.resolve_for_pipeline(secrets_file, "etl", ["DB_PASSWORD"], [owner]) == {
        "DB_PASSWORD": "hunter2"}
    assert store.resolve_for_pipeline(secrets_file, "etl", [], []) == {}


def test_resolve_refuses_missing_and_ungranted(secrets_file, owner):
    with pytest.raises(SecretsError) as err:
        store.resolve_for_pipeline(secrets_file, "etl", ["DB_PASSWORD", "API_TOKEN", "NOPE"], [owner])
    assert str(err.value) == (
        f"{secrets_file}: pipeline etl asks for secrets that do not exist: NOPE (create them with "
        "`fastflow secrets set NAME`); and is not granted API_TOKEN (the secret's owner grants it "
        "with `fastflow secrets grant NAME etl`)")


def test_a_secrets_file_linked_outside_the_repository_is_never_read(secrets_file, tmp_path):
    """Issue 12: the daemon's snapshots keep symlinks as git has them; the loader refuses one."""
    repo = tmp_path / "repo"
    (repo / ".fastflow").mkdir(parents=True)
    (repo / ".fastflow/secrets.enc.yaml").symlink_to(secrets_file)
    pipeline = Pipeline(name="etl", path=repo, entry="main.py", type=PipelineType.SCRIPT,
                        metadata_file=None, requirements=None,
                        secrets={"DB_PASSWORD": "DB_PASSWORD"})
    load = secrets_loader(repo, default_repo_config(), pipeline, {})
    with pytest.raises(SecretsError) as err:
        load()
    assert str(err.value) == (
        f".fastflow/secrets.enc.yaml: is a symlink to {secrets_file}, outside the repository; "
        "copy the file into the repository instead")


def test_grant_edited_without_the_key_breaks_the_mac(secrets_file, owner):
    text = secrets_file.read_text().replace("- report", "- thief")
    secrets_file.write_text(text)
    with pytest.raises(SecretsError) as err:
        store.resolve_for_pipeline(secrets_file, "thief", ["DB_PASSWORD"], [owner])
    assert str(err.value).startswith(f"{secrets_file}: MAC mismatch: the file was changed "
                                     "without its key")


def test_added_plain_secret_is_refused(secrets_file, owner):
    text = secrets_file.read_text().replace("access_unencrypted:", "EXTRA: plain\naccess_unencrypted:")
    secrets_file.write_text(text)
    with pytest.raises(SecretsError) as err:
        store.get_secret(secrets_file, "DB_PASSWORD", [owner])
    assert str(err.value).startswith(
        f"{secrets_file}: EXTRA holds a plain value where an encrypted one is expected")


def test_revoke_and_rm(secrets_file, owner):
    assert store.revoke_secret(secrets_file, "DB_PASSWORD", ["report"], [owner], NOW) == ["report"]
    with pytest.raises(SecretsError) as err:
        store.revoke_secret(secrets_file, "DB_PASSWORD", ["report"], [owner], NOW)
    assert str(err.value) == (f"{secrets_file}: secret DB_PASSWORD is not granted to report "
                              "(granted to: etl)")
    store.remove_secret(secrets_file, "DB_PASSWORD", [owner], NOW)
    assert "DB_PASSWORD" not in secrets_file.read_text()
    with pytest.raises(SecretsError) as err:
        store.get_secret(secrets_file, "DB_PASSWORD", [owner])
    assert str(err.value) == f"{secrets_file}: no secret named DB_PASSWORD (secrets: API_TOKEN)"


def test_invalid_names(secrets_file, owner):
    with pytest.raises(SecretsError) as err:
        store.set_secret(secrets_file, "1BAD", "v", [owner], NOW)
    assert str(err.value) == (
        f"{secrets_file}: '1BAD' is not a valid secret name: use letters, digits and _, not "
        "starting with a digit, FASTFLOW_ or ending in _unencrypted (it becomes an environment "
        "variable)")
    with pytest.raises(SecretsError) as err:
        store.grant_secret(secrets_file, "API_TOKEN", ["../x"], [owner], NOW)
    assert str(err.value) == (f"{secrets_file}: '../x' is not a valid pipeline name "
                              "([A-Za-z0-9][A-Za-z0-9_.-]{0,62})")
    with pytest.raises(SecretsError) as err:
        store.set_secret(secrets_file, "EMPTY", "", [owner], NOW)
    assert str(err.value) == (f"{secrets_file}: the value for EMPTY is empty; SOPS stores empty "
                              "values unencrypted, so Fast-Flow refuses them")


def test_rotate_changes_data_key_and_every_ciphertext(secrets_file, owner):
    before = decrypt_file(parse_file(secrets_file.read_text(), "s"), [owner])
    old_lines = secrets_file.read_text().splitlines()
    store.rotate_data_key(secrets_file, [owner], NOW)
    after = decrypt_file(parse_file(secrets_file.read_text(), "s"), [owner])
    assert after.data_key != before.data_key
    assert secrets_file.read_text().splitlines()[0] != old_lines[0]
    assert store.get_secret(secrets_file, "DB_PASSWORD", [owner]) == "hunter2"


def test_recipients_add_and_rm_rewrap(secrets_file, owner):
    friend = age.X25519Identity.generate()
    with pytest.raises(SecretsError, match="wrong key"):
        store.get_secret(secrets_file, "API_TOKEN", [friend])
    assert store.add_recipients(secrets_file, [friend.recipient], [owner], NOW) == [friend.recipient]
    assert store.list_recipients(secrets_file) == [owner.recipient, friend.recipient]
    assert store.get_secret(secrets_file, "API_TOKEN", [friend]) == "tok-123"
    key_before = decrypt_file(parse_file(secrets_file.read_text(), "s"), [owner]).data_key
    store.remove_recipients(secrets_file, [owner.recipient], [friend], NOW)
    assert store.list_recipients(secrets_file) == [friend.recipient]
    assert decrypt_file(parse_file(secrets_file.read_text(), "s"), [friend]).data_key != key_before
    with pytest.raises(SecretsError, match="wrong key"):
        store.get_secret(secrets_file, "API_TOKEN", [owner])
    with pytest.raises(SecretsError) as err:
        store.remove_recipients(secrets_file, [friend.recipient], [friend], NOW)
    assert str(err.value) == (f"{secrets_file}: removing {friend.recipient} would leave no "
                              "recipient able to decrypt the file; add another recipient first")


def _editor(tmp_path: Path, body: str) -> list[str]:
    script = tmp_path / "editor.sh"
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(0o755)
    return [str(script)]


def test_edit_reencrypts_and_removes_the_temp_file(tmp_path, secrets_file, owner):
    shm = tmp_path / "shm"
    shm.mkdir()
    editor = _editor(tmp_path, f"ls -l \"$1\" > {tmp_path}/mode\n"
                               "sed -i 's/tok-123/tok-999/' \"$1\"\n")
    before = secrets_file.read_text().splitlines()
    assert edit.edit_secrets(secrets_file, [owner], editor, NOW, tmp_base=shm) is True
    assert store.get_secret(secrets_file, "API_TOKEN", [owner]) == "tok-999"
    assert secrets_file.read_text().splitlines()[0] == before[0]  # DB_PASSWORD untouched
    assert (tmp_path / "mode").read_text().startswith("-rw-------")
    assert list(shm.iterdir()) == []


def test_edit_failure_writes_nothing_and_still_removes(tmp_path, secrets_file, owner):
    shm = tmp_path / "shm"
    shm.mkdir()
    editor = _editor(tmp_path, "echo 'BROKEN: [' >> \"$1\"\nexit 4\n")
    before = secrets_file.read_text()
    with pytest.raises(SecretsError) as err:
        edit.edit_secrets(secrets_file, [owner], editor, NOW, tmp_base=shm)
    assert str(err.value) == f"the editor {editor[0]!r} exited with code 4; {secrets_file} was not changed"
    assert secrets_file.read_text() == before and list(shm.iterdir()) == []
    bad = _editor(tmp_path, "echo 'BROKEN: [' >> \"$1\"\n")
    with pytest.raises(SecretsError, match="the edited secrets: not valid YAML"):
        edit.edit_secrets(secrets_file, [owner], bad, NOW, tmp_base=shm)
    assert secrets_file.read_text() == before and list(shm.iterdir()) == []


def test_identity_file_is_private(tmp_path):
    identity = age.X25519Identity.generate()
    path = tmp_path / "keys.txt"
    edit.write_identity_file(path, identity, NOW)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert age.parse_identities(path.read_text(), "k") == [identity]
    with pytest.raises(SecretsError) as err:
        edit.write_identity_file(path, identity, NOW)
    assert str(err.value) == (f"{path} already exists; refusing to overwrite an identity file "
                              "(choose another path with -o)")
