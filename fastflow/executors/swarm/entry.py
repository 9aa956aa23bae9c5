"""The entry step of a Swarm task: unpack the pipeline's code, verify it, drop root, run it.

This file is shipped to every task as a Swarm config and run by the image's own `python3 -I`
(it imports only the standard library, never fastflow: the node has no fastflow installed).
`SwarmExecutor` also imports `tree_hash` from here, so the hash the daemon expects and the
hash the node checks are computed by the same code.

Steps, in order, each failing the task clearly (exit `EXIT_ENTRY`, one `fastflow:` line on
stderr) before the pipeline starts:
1. unpack the code archive (a Swarm config) into the tmpfs at the pipeline's working dir,
   files root-owned and read-only (0444, 0555 when executable), folders 0555;
2. compute the git tree hash of what was unpacked and compare it with the expected one: a
   mismatch (wrong commit, corrupted transfer) stops here;
3. give up root for good: no-new-privileges, an empty capability bounding set, then uid/gid
   10001 (the task starts as root with only SETUID, SETGID, SETPCAP for exactly this, and
   KILL for the init to forward signals);
4. run the pipeline's command in its own session, follow the timeout (SIGTERM to the whole
   group, the grace period, SIGKILL), sample the cgroup's memory and CPU once a second;
5. print the outcome on one marked stderr line (`MARK` + nonce + JSON: exit code, OOM kills
   counted by the kernel for this cgroup, timed out, the route, the samples), which
   `SwarmExecutor` takes out of the log.
"""
from __future__ import annotations

import ctypes
import hashlib
import io
import json
import os
import signal
import stat
import subprocess
import sys
import tarfile
import threading
import time

MARK = "\x1efastflow-entry "
EXIT_ENTRY = 125  # the entry step failed before the pipeline started
RUNNER_UID = 10001
_PR_SET_NO_NEW_PRIVS, _PR_CAPBSET_DROP = 38, 24


def tree_hash(root: str) -> str:
    """The git tree id (SHA-1) of the folder `root`, as `git write-tree` would give it for
    these files: modes 100644 / 100755 / 120000 (symlink) / 40000, empty folders left out."""
    entries = []
    for name in os.listdir(root):
        path = os.path.join(root, name)
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode):
            entries.append((name, b"120000", _object(b"blob", os.readlink(path).encode())))
        elif stat.S_ISDIR(st.st_mode):
            sub = tree_hash(path)
            if sub != _EMPTY_TREE:
                entries.append((name + "/", b"40000", bytes.fromhex(sub)))
        elif stat.S_ISREG(st.st_mode):
            mode = b"100755" if st.st_mode & 0o100 else b"100644"
            with open(path, "rb") as f:
                entries.append((name, mode, _object(b"blob", f.read())))
    body = b"".join(mode + b" " + name.rstrip("/").encode() + b"\0" + oid
                    for name, mode, oid in sorted(entries, key=lambda e: e[0].encode()))
    return _object(b"tree", body).hex()


def _object(kind: bytes, data: bytes) -> bytes:
    return hashlib.sha1(kind + b" %d\0" % len(data) + data).digest()


_EMPTY_TREE = _object(b"tree", b"").hex()


def fail(message: str) -> None:
    sys.stderr.write(f"fastflow: {message}\n")
    sys.stderr.flush()
    sys.exit(EXIT_ENTRY)


def unpack(archive: str, target: str) -> None:
    """Unpack the code archive into `target`, root-owned and read-only for the runner user."""
    with open(archive, "rb") as f:
        data = f.read()
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for member in tar.getmembers():
            name = os.path.normpath(member.name)
            if name.startswith(("/", "..")) or not (member.isfile() or member.isdir()
                                                    or member.issym()):
                fail(f"the code archive holds {member.name!r}, which is refused")
            path = os.path.join(target, name)
            if member.isdir():
                os.makedirs(path, exist_ok=True)
            elif member.issym():
                os.makedirs(os.path.dirname(path), exist_ok=True)
                os.symlink(member.linkname, path)
            else:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path, "wb") as out:
                    out.write(tar.extractfile(member).read())
                os.chmod(path, 0o555 if member.mode & 0o100 else 0o444)
    for folder, _, _ in os.walk(target):
        os.chmod(folder, 0o555)


def drop_root() -> None:
    """No new privileges, an empty bounding set, then the runner user: nothing the pipeline
    runs can become root again (Swarm cannot set no-new-privileges itself)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        fail("cannot set no-new-privileges")
    for cap in range(64):
        libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0)  # EINVAL past the last capability
    os.setgroups([])
    os.setgid(RUNNER_UID)
    os.setuid(RUNNER_UID)
    if os.getuid() != RUNNER_UID or os.geteuid() != RUNNER_UID:
        fail("could not drop root")


class Cgroup:
    """The task's memory and CPU from its cgroup (v1 or v2), and the kernel's OOM kill count."""

    def __init__(self, base: str = "/sys/fs/cgroup") -> None:
        self.v2 = os.path.exists(os.path.join(base, "cgroup.controllers"))
        self.base = base

    def _read(self, *parts: str) -> str | None:
        try:
            with open(os.path.join(self.base, *parts)) as f:
                return f.read()
        except OSError:
            return None

    def _stat(self, text: str | None, key: str) -> int | None:
        for line in (text or "").splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
        return None

    def memory(self) -> int | None:
        if self.v2:
            usage, detail, inactive = self._read("memory.current"), self._read("memory.stat"), "inactive_file"
        else:
            usage = self._read("memory", "memory.usage_in_bytes")
            detail, inactive = self._read("memory", "memory.stat"), "total_inactive_file"
        if not usage:
            return None
        return max(int(usage) - (self._stat(detail, inactive) or 0), 0)

    def cpu_seconds(self) -> float | None:
        if self.v2:
            usec = self._stat(self._read("cpu.stat"), "usage_usec")
            return None if usec is None else usec / 1e6
        ns = self._read("cpuacct", "cpuacct.usage") or self._read("cpu,cpuacct", "cpuacct.usage")
        return None if not ns else int(ns) / 1e9

    def oom_kills(self) -> int:
        if self.v2:
            return self._stat(self._read("memory.events"), "oom_kill") or 0
        return self._stat(self._read("memory", "memory.oom_control"), "oom_kill") or 0


def sample(cgroup: Cgroup, begin: float, done: threading.Event, out: list, every: float) -> None:
    last = None
    while True:
        now, cpu = time.monotonic(), cgroup.cpu_seconds()
        cores = None
        if last is not None and cpu is not None and now > last[0]:
            cores = round((cpu - last[1]) / (now - last[0]), 3)
        if cpu is not None:
            last = (now, cpu)
        out.append([round(now - begin, 3), cgroup.memory(), cores])
        if done.wait(every):
            return


def run(order: dict) -> dict:
    """Run the command to its end under the timeout; the outcome for the marked line."""
    begin = time.monotonic()
    cgroup, samples, done = Cgroup(), [], threading.Event()
    oom_before = cgroup.oom_kills()
    threading.Thread(target=sample, args=(cgroup, begin, done, samples, order["sample_every"]),
                     daemon=True).start()
    child = subprocess.Popen(order["command"], cwd=order["workdir"], start_new_session=True)

    def stop(*_):
        stopping.set()

    stopping, timed_out = threading.Event(), False
    signal.signal(signal.SIGTERM, stop)
    deadline = begin + order["timeout"] if order["timeout"] > 0 else None
    while child.poll() is None:
        if stopping.is_set() or (deadline is not None and time.monotonic() >= deadline):
            timed_out = not stopping.is_set()
            _stop(child, order["grace_period"])
            break
        time.sleep(0.05)
    code = child.wait()
    done.set()
    route = None
    try:
        with open(order["route_file"], encoding="utf-8", errors="replace") as f:
            text = f.read().strip()
        route = text.splitlines()[-1].strip() if text else None
    except OSError:
        pass
    return {"exit": 128 - code if code < 0 else code, "signal": -code if code < 0 else None,
            "oom_kills": cgroup.oom_kills() - oom_before, "timed_out": timed_out,
            "stopped": stopping.is_set(),
            "route": route, "samples": samples}


def _stop(child: subprocess.Popen, grace: float) -> None:
    """SIGTERM to the pipeline's whole process group, `grace` seconds, then SIGKILL."""
    try:
        os.killpg(child.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        child.wait(timeout=max(grace, 0))
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def main() -> None:
    order = json.loads(sys.argv[1])
    workdir = order["workdir"]
    if os.getuid() == 0:
        unpack(order["archive"], workdir)
        os.chmod(os.path.dirname(order["route_file"]), 0o1777)  # a tmpfs of its own
        drop_root()
    found = tree_hash(workdir)
    if found != order["tree"]:
        fail(f"the code of pipeline {order['pipeline']!r} on this node has tree {found}, "
             f"not {order['tree']} as sent: refusing to run it")
    outcome = run(order)
    sys.stdout.flush()
    sys.stderr.write(MARK + order["nonce"] + " " + json.dumps(outcome) + "\n")
    sys.stderr.flush()
    sys.exit(outcome["exit"] if outcome["exit"] < 256 else 1)


if __name__ == "__main__":
    main()
