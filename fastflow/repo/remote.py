"""Talking to remotes with pygit2: mirror fetches, branch fetches and (never forced) pushes.

Credentials are values passed in (from the environment by the CLI, or an SSH key path) and
handed to pygit2 through callbacks. Remotes are *anonymous*: the URL is never written to the
repository's config, so neither is a token embedded in it.
"""
from __future__ import annotations

import enum
import logging
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Collection, Iterable, Mapping

import pygit2

from fastflow.errors import RepositoryError
from fastflow.repo.core import GitRepo, _ref_name, init_repo

log = logging.getLogger(__name__)

# Environment variables `credentials_from_env` reads (the CLI passes its environment in).
ENV_USERNAME = "FASTFLOW_GIT_USERNAME"
ENV_PASSWORD = "FASTFLOW_GIT_PASSWORD"  # a password or an access token
ENV_SSH_KEY = "FASTFLOW_GIT_SSH_KEY"  # path of a private key file
ENV_SSH_PASSPHRASE = "FASTFLOW_GIT_SSH_PASSPHRASE"

UPSTREAM_PREFIX = "refs/fastflow/upstream/"


@dataclass(frozen=True)
class Credentials:
    """What to answer a remote asking who we are: user + password/token, or an SSH key file."""

    username: str | None = None
    password: str | None = None
    ssh_key: Path | None = None
    ssh_passphrase: str = ""

    def __repr__(self) -> str:  # never print a secret
        return f"Credentials(username={self.username!r}, ssh_key={self.ssh_key!r})"


def credentials_from_env(env: Mapping[str, str]) -> Credentials:
    """Credentials from FASTFLOW_GIT_USERNAME / _PASSWORD / _SSH_KEY / _SSH_PASSPHRASE in `env`."""
    key = env.get(ENV_SSH_KEY)
    return Credentials(
        username=env.get(ENV_USERNAME) or None,
        password=env.get(ENV_PASSWORD) or None,
        ssh_key=Path(key) if key else None,
        ssh_passphrase=env.get(ENV_SSH_PASSPHRASE, ""),
    )


class _Callbacks(pygit2.RemoteCallbacks):
    def __init__(self, creds: Credentials | None) -> None:
        super().__init__()
        self._creds = creds or Credentials()
        self._asked = 0
        self.rejected: dict[str, str] = {}
        self.remote_lines: deque[str] = deque(maxlen=5)  # the remote's last `remote:` lines

    def credentials(self, url, username_from_url, allowed_types):
        self._asked += 1
        if self._asked > 3:  # libgit2 asks again after a refusal: stop instead of looping
            raise RepositoryError(f"{url}: authentication failed; check {ENV_USERNAME}/"
                                  f"{ENV_PASSWORD} or {ENV_SSH_KEY}")
        c = self._creds
        user = c.username or username_from_url or "git"
        if allowed_types & pygit2.enums.CredentialType.SSH_KEY and c.ssh_key:
            pub = Path(str(c.ssh_key) + ".pub")
            return pygit2.Keypair(user, str(pub) if pub.exists() else None, str(c.ssh_key),
                                  c.ssh_passphrase)
        if allowed_types & pygit2.enums.CredentialType.USERPASS_PLAINTEXT and c.password:
            return pygit2.UserPass(user, c.password)
        if allowed_types & pygit2.enums.CredentialType.USERNAME:
            return pygit2.Username(user)
        raise RepositoryError(
            f"{url}: the remote asks for credentials; set {ENV_USERNAME} and {ENV_PASSWORD} "
            f"(token) or {ENV_SSH_KEY} (key file)"
        )

    def push_update_reference(self, refname, message):
        if message:
            self.rejected[refname] = message

    def sideband_progress(self, string):
        self.remote_lines.extend(line.strip() for line in string.splitlines() if line.strip())


def _remote(repo: GitRepo, remote: str) -> pygit2.Remote:
    """A configured remote by name, else an anonymous remote for a URL or path."""
    if remote in repo._git.remotes.names():
        return repo._git.remotes[remote]
    return repo._git.remotes.create_anonymous(remote)


def mirror_fetch(
    url: str,
    mirror_path: Path,
    credentials: Credentials | None = None,
    protect: Collection[str] = (),
) -> dict[str, tuple[str | None, str | None]]:
    """Create or update a bare mirror of `url` at `mirror_path`; returns {ref: (old, new)} changed.

    Every remote ref is copied as is (`clone --mirror` semantics, refs gone upstream are
    pruned), except the branches in `protect` (e.g. the results branch, written locally):
    those are fetched to `refs/fastflow/upstream/<branch>` so unpushed local commits survive.
    """
    repo = init_repo(mirror_path, bare=True)
    protected = {_ref_name(b) for b in protect}
    before = {r: str(repo._git.references[r].resolve().target) for r in _local_refs(repo)}
    remote = repo._git.remotes.create_anonymous(url)
    cb = _Callbacks(credentials)
    try:
        heads = remote.list_heads(callbacks=cb)
        names = [h.name for h in heads if h.name.startswith("refs/") and not h.symref_target]
        specs = [
            f"+{n}:{UPSTREAM_PREFIX}{n[len('refs/heads/'):]}" if n in protected else f"+{n}:{n}"
            for n in names
            if not n.endswith("^{}")
        ]
        if specs:
            remote.fetch(specs, callbacks=cb)
    except pygit2.GitError as exc:
        raise RepositoryError(f"{url}: cannot fetch ({exc}); check the URL and credentials") from None
    mirrored = {n for n in names if n not in protected}
    for ref in before:
        if ref not in mirrored and not ref.startswith(UPSTREAM_PREFIX) and ref not in protected:
            repo._git.references.delete(ref)  # pruned upstream
    after = {r: str(repo._git.references[r].resolve().target) for r in _local_refs(repo)}
    return {
        r: (before.get(r), after.get(r))
        for r in set(before) | set(after)
        if before.get(r) != after.get(r)
    }


def _local_refs(repo: GitRepo) -> list[str]:
    return [r for r in repo._git.references if r.startswith("refs/")]


def fetch_branch(
    repo: GitRepo, remote: str, branch: str, credentials: Credentials | None = None
) -> str | None:
    """Fetch `branch` of `remote` into `refs/fastflow/upstream/<branch>`; its sha or None if absent.

    Raises `RepositoryError` when the remote cannot be reached.
    """
    r = _remote(repo, remote)
    cb = _Callbacks(credentials)
    target = UPSTREAM_PREFIX + branch
    try:
        heads = {h.name for h in r.list_heads(callbacks=cb)}
        if _ref_name(branch) not in heads:
            return None
        r.fetch([f"+{_ref_name(branch)}:{target}"], callbacks=cb)
    except pygit2.GitError as exc:
        raise RepositoryError(f"{remote}: cannot fetch {branch!r} ({exc})") from None
    return str(repo._git.references[target].target)


# libgit2's wording when the remote branch moved (local transports decide this client-side;
# servers report it through `push_update_reference`, handled below).
_REJECTED_MARKERS = ("non-fastforward", "non-fast-forward", "fetch first",
                     "not present locally")


class PushResult(str, enum.Enum):
    """How a push ended: pushed; rejected (the remote moved: fetch and merge); refused (the
    remote's policy declined it, e.g. a pre-receive hook or a protected ref: merging cannot
    help, retry later); unreachable."""

    PUSHED = "pushed"
    REJECTED = "rejected"
    REFUSED = "refused"
    UNREACHABLE = "unreachable"


def _declined(message: str, remote_lines: Iterable[str]) -> tuple[PushResult, str]:
    """A server's refusal of a ref: a conflict when its words say the ref moved, else policy;
    the detail carries what the remote printed (a hook's reason)."""
    if any(marker in message for marker in _REJECTED_MARKERS):
        return PushResult.REJECTED, message
    said = "; ".join(f"remote: {line}" for line in remote_lines)
    return PushResult.REFUSED, f"{message}; {said}" if said else message


def push_branch(
    repo: GitRepo,
    remote: str,
    branch: str,
    credentials: Credentials | None = None,
    force: bool = False,
) -> tuple[PushResult, str]:
    """Push `branch` to the same branch of `remote` (a name, URL or path); never forced unless
    `force` (only `compact`, an explicit opt-in, uses it). Returns the result and a detail.
    """
    ref = _ref_name(branch)
    spec = f"{'+' if force else ''}{ref}:{ref}"
    cb = _Callbacks(credentials)
    try:
        _remote(repo, remote).push([spec], callbacks=cb)
    except pygit2.GitError as exc:
        text = str(exc)
        if any(marker in text for marker in _REJECTED_MARKERS):
            return PushResult.REJECTED, text
        log.info("push of %s to %s failed: %s", branch, remote, text)
        return PushResult.UNREACHABLE, text
    if ref in cb.rejected:
        return _declined(cb.rejected[ref], cb.remote_lines)
    return PushResult.PUSHED, ""


def fetch_ref(repo: GitRepo, remote: str, ref: str, credentials: Credentials | None = None) -> str | None:
    """Fetch `ref` (a full `refs/...` name) of `remote` to the same name in `repo`; its sha, or
    None when the remote has no such ref (the local copy is then deleted). Raises
    `RepositoryError` when the remote cannot be reached."""
    r = _remote(repo, remote)
    cb = _Callbacks(credentials)
    try:
        heads = {h.name: str(h.oid) for h in r.list_heads(callbacks=cb)}
        if ref not in heads:
            if repo._git.references.get(ref) is not None:
                repo._git.references.delete(ref)
            return None
        r.fetch([f"+{ref}:{ref}"], callbacks=cb)
    except pygit2.GitError as exc:
        raise RepositoryError(f"{remote}: cannot fetch {ref} ({exc})") from None
    return str(repo._git.references[ref].target)


_DIRECTION_PUSH = 1  # libgit2's GIT_DIRECTION_PUSH (pygit2 names no constant for it)


def push_ref_if(repo: GitRepo, remote: str, ref: str, expected: str | None,
                credentials: Credentials | None = None) -> tuple[PushResult, str]:
    """Push the local `ref` (a full `refs/...` name, any history) to `remote` only if the remote's
    `ref` is at `expected` (None: absent): a compare-and-swap push.

    One connection both reads the remote's value and pushes: libgit2 sends the value it read
    as the old one, and a git server updates the ref only if it is still that one (the check
    `--force-with-lease` relies on). A `file://` remote is written by libgit2 itself, so there
    the check and the write are only milliseconds apart, not atomic.
    """
    r = _remote(repo, remote)
    cb = _Callbacks(credentials)
    try:
        r.connect(callbacks=cb, direction=_DIRECTION_PUSH)
        heads = {h.name: str(h.oid) for h in r.list_heads(callbacks=cb, connect=False)}
        current = heads.get(ref)
        if current != expected:
            return PushResult.REJECTED, f"{ref} is at {current}, expected {expected}"
        r.push([f"+{ref}:{ref}"], callbacks=cb)
    except pygit2.GitError as exc:
        log.info("push of %s to %s failed: %s", ref, remote, exc)
        return PushResult.UNREACHABLE, str(exc)
    if ref in cb.rejected:
        return PushResult.REJECTED, cb.rejected[ref]
    return PushResult.PUSHED, ""
