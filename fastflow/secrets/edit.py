"""Editing the secrets file in `$EDITOR`, and writing new age identity files.

The decrypted text only ever exists in a private temporary file: a fresh 0700 directory (in
/dev/shm, which is memory, when it exists) holding one 0600 file, overwritten with zeros and
removed when the edit ends, whatever happens (editor failure, invalid YAML, Ctrl-C).
"""
from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Iterator, Sequence

from fastflow.errors import SecretsError
from fastflow.secrets.age import X25519Identity
from fastflow.secrets.sopsfile import reencrypt
from fastflow.secrets.store import open_secrets, validate, write_atomic
from fastflow.secrets.yamltree import dump_documents, format_time, load_documents

SHM = Path("/dev/shm")


def secure_remove(path: Path) -> None:
    """Overwrite a file with zeros, flush it to disk and delete it (missing files are fine)."""
    try:
        size = path.stat().st_size
        with open(path, "r+b") as handle:
            handle.write(b"\0" * size)
            handle.flush()
            os.fsync(handle.fileno())
        path.unlink()
    except FileNotFoundError:
        pass


@contextlib.contextmanager
def private_tempfile(content: str, suffix: str = ".yaml", base: Path | None = None) -> Iterator[Path]:
    """A 0600 file holding `content` in a new 0700 directory; securely removed on exit."""
    if base is None and SHM.is_dir() and os.access(SHM, os.W_OK):
        base = SHM
    directory = Path(tempfile.mkdtemp(prefix="fastflow-secrets-", dir=base))
    path = directory / f"secrets{suffix}"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(content)
        yield path
    finally:
        for leftover in directory.iterdir():  # editors may leave swap or backup files behind
            secure_remove(leftover) if leftover.is_file() else None
        with contextlib.suppress(OSError):
            directory.rmdir()


def edit_secrets(path: Path, identities: Sequence[X25519Identity], editor: Sequence[str],
                 now: datetime, tmp_base: Path | None = None) -> bool:
    """Open the decrypted file in `editor`, then re-encrypt what was saved (unchanged values
    keep their ciphertext). True when something changed; nothing is written on any error."""
    decrypted = open_secrets(path, identities)
    before = dump_documents(decrypted.documents)
    with private_tempfile(before, base=tmp_base) as temp:
        try:
            done = subprocess.run([*editor, str(temp)], check=False)
        except OSError as exc:
            raise SecretsError(f"cannot start the editor {' '.join(editor)!r}: {exc.strerror}; "
                               "set EDITOR to an editor command") from None
        if done.returncode != 0:
            raise SecretsError(f"the editor {' '.join(editor)!r} exited with code "
                               f"{done.returncode}; {path} was not changed")
        after = temp.read_text(encoding="utf-8")
    if after == before:
        return False
    documents = load_documents(after, "the edited secrets")
    validate(documents, "the edited secrets", decrypted.metadata.rule.encrypts)
    write_atomic(path, reencrypt(decrypted, documents, now))
    return True


def identity_file_text(identity: X25519Identity, now: datetime) -> str:
    """An identity file in age-keygen's layout (created time, public key, secret key)."""
    return (f"# created: {format_time(now.replace(microsecond=0))}\n"
            f"# public key: {identity.recipient}\n{identity.to_string()}\n")


def write_identity_file(path: Path, identity: X25519Identity, now: datetime) -> None:
    """Write a new identity file with mode 0600; refuses to overwrite an existing file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise SecretsError(f"{path} already exists; refusing to overwrite an identity file "
                           "(choose another path with -o)") from None
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(identity_file_text(identity, now))
