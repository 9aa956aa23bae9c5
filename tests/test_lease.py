"""The lease of daemons following one repository (fastflow.daemon.lease): the pure policy
`decide`, then `Lease` on a real bare repository and on a `file://` URL (the remote's ref)."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from helpers import Clock, git

from fastflow import repo as gitrepo
from fastflow.daemon.lease import (
    LEASE_FILE,
    LEASE_REF,
    RENEW,
    TAKE,
    WAIT,
    Holder,
    Lease,
    LeaseRecord,
    decide,
)

NOW = datetime(2026, 11, 22, 14, 30, tzinfo=timezone.utc)
ME = Holder("host-a", 100, "/var/lib/fastflow", "token-me")
OTHER = Holder("host-b", 200, "/var/lib/fastflow", "token-other")


def held_by(holder: Holder, *, renewed: datetime = NOW, timeout: float = 60.0,
            released: datetime | None = None) -> LeaseRecord:
    return LeaseRecord(holder, renewed - timedelta(hours=1), renewed,
                       renewed + timedelta(seconds=timeout), timeout, released)


# --- decide (pure) ------------------------------------------------------------------------------

def test_a_free_lease_is_taken():
    assert decide(None, ME, NOW).action == TAKE


def test_a_valid_lease_of_another_daemon_is_waited_for_until_it_expires():
    lease = held_by(OTHER)
    verdict = decide(lease, ME, NOW + timedelta(seconds=59))
    assert verdict.action == WAIT
    assert verdict.reason == ("the lease is held by pid 200 on host-b (state dir "
                              "/var/lib/fastflow) until 2026-11-22T14:31:00+00:00")
    late = decide(lease, ME, NOW + timedelta(seconds=60))
    assert late.action == TAKE
    assert late.reason == ("the lease of pid 200 on host-b (state dir /var/lib/fastflow) expired "
                           "at 2026-11-22T14:31:00+00:00 (not renewed for 60s)")


def test_a_released_lease_is_taken_at_once():
    verdict = decide(held_by(OTHER, released=NOW), ME, NOW)
    assert verdict.action == TAKE
    assert "released the lease" in verdict.reason


def test_our_own_lease_is_renewed_even_past_its_expiry():
    assert decide(held_by(ME), ME, NOW + timedelta(hours=1)).action == RENEW


def test_the_lease_of_an_earlier_process_of_this_state_dir_is_taken_at_once():
    earlier = Holder(ME.host, 99, ME.state_dir, "token-dead")
    verdict = decide(held_by(earlier), ME, NOW)
    assert verdict.action == TAKE
    assert "an earlier daemon of this state dir" in verdict.reason
    # the same path on another host is another daemon
    assert decide(held_by(OTHER), ME, NOW).action == WAIT


def test_the_record_round_trips_through_json():
    lease = held_by(OTHER, released=NOW)
    assert LeaseRecord.from_json(lease.to_json()) == lease


# --- Lease on real repositories -------------------------------------------------------------------

@pytest.fixture(params=["path", "url"])
def source(request, tmp_path):
    """A bare repository, followed as a path (both daemons open it) or as a `file://` URL (each
    daemon has its own mirror; the lease ref lives on the remote)."""
    bare = tmp_path / "origin.git"
    git("init", "-q", "--bare", str(bare), cwd=tmp_path)
    if request.param == "path":
        return lambda name: (gitrepo.open_repo(bare), None), bare
    url = f"file://{bare}"
    return lambda name: (gitrepo.init_repo(tmp_path / f"{name}.git", bare=True), url), bare


def make_lease(source, name: str, timeout: float = 6.0) -> Lease:
    opener, _ = source
    repository, remote = opener(name)
    return Lease(repository, remote=remote, credentials=None,
                 me=Holder(name, 1, f"/state/{name}", f"token-{name}"), timeout=timeout)


def lease_on(bare) -> LeaseRecord | None:
    _, data = gitrepo.ref_file(gitrepo.open_repo(bare), LEASE_REF, LEASE_FILE)
    return LeaseRecord.from_json(json.loads(data)) if data else None


def test_one_of_two_daemons_holds_the_lease_and_the_other_takes_over_when_it_expires(source):
    clock = Clock(NOW)
    a, b = make_lease(source, "a"), make_lease(source, "b")
    assert a.check(clock()) is True
    assert b.check(clock()) is False
    assert b.status()["holder"]["host"] == "a" and b.status()["role"] == "standby"
    # a renews every third of the timeout: b keeps waiting
    assert b.next_check_at == NOW + timedelta(seconds=2)
    clock.advance(seconds=2)
    assert a.due(clock()) and a.check(clock()) is True
    assert b.check(clock()) is False
    assert b.next_check_at == NOW + timedelta(seconds=4)
    # a dies (renews no more): b waits until its lease expires, not a moment less
    clock.advance(seconds=5.9)
    assert b.check(clock()) is False
    assert b.next_check_at == NOW + timedelta(seconds=8)  # the expiry of a's last renewal
    clock.advance(seconds=0.1)
    assert b.due(clock()) and b.check(clock()) is True
    assert lease_on(source[1]).holder.host == "b"
    # a comes back from a pause: it finds it lost the lease and says so
    assert a.check(clock()) is False
    assert a.lost is True


def test_a_clean_stop_releases_the_lease_for_the_standby_at_once(source):
    clock = Clock(NOW)
    a, b = make_lease(source, "a"), make_lease(source, "b")
    assert a.check(clock()) and not b.check(clock())
    a.release(clock())
    assert lease_on(source[1]).released_at == NOW
    assert b.check(clock()) is True
    assert a.lost is False


def test_a_lease_written_meanwhile_is_not_overwritten(source):
    """Compare-and-swap: a daemon that read a free lease cannot take it once another wrote it."""
    clock = Clock(NOW)
    a, b = make_lease(source, "a"), make_lease(source, "b")
    original = b._read
    b._read = lambda: (original(), a.check(clock()))[0]  # a takes it between b's read and write
    assert b.check(clock()) is False
    assert "another daemon wrote the lease" in b.reason
    assert lease_on(source[1]).holder.host == "a"
