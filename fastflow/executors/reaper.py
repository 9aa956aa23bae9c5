"""The process a `--local` attempt runs under: it keeps every descendant of the attempt findable.

A process that calls setsid() and double-forks leaves the attempt's session and process group,
and its parent's exit would hand it to the host's init, out of reach. Run as
`python reaper.py PROGRAM ARGS...`, this script becomes a child subreaper
(prctl(PR_SET_CHILD_SUBREAPER), Linux): such orphans are re-parented to it instead, so every
process of the attempt, whatever session it is in, is a descendant of the reaper
(`descendant_pids`), which the executor signals on timeout and cancel. When the program ends,
the reaper kills what it left behind, reaps it, and exits as the program did (same code, or
the same signal).

The script uses the standard library only: it runs with the attempt's environment, by path,
where the fastflow package need not be importable.
"""
from __future__ import annotations

import ctypes
import os
import signal
import sys
import time

PR_SET_CHILD_SUBREAPER = 36
_FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def descendant_pids(root: int) -> list[int]:
    """Pids of the live (non-zombie) descendants of process `root`, seen through /proc."""
    children: dict[int, list[int]] = {}
    try:
        entries = [e for e in os.listdir("/proc") if e.isdigit()]
    except OSError:
        return []
    for entry in entries:
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                raw = handle.read()
        except OSError:
            continue  # ended while we looked
        fields = raw[raw.rfind(b")") + 2:].split()  # after the command name (may hold spaces)
        if len(fields) < 2 or fields[0] in (b"Z", b"X"):
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = [], list(children.get(root, []))
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def _reap_all(block: bool) -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, 0 if block else os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _end_leftovers() -> None:
    """SIGKILL every descendant (repeated: one may fork meanwhile), then reap them."""
    for _ in range(200):
        left = descendant_pids(os.getpid())
        if not left:
            break
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        _reap_all(block=False)
        time.sleep(0.01)
    _reap_all(block=True)


def main(argv: list[str]) -> None:
    """Run `argv` as the attempt's program under this subreaper; exit as it did."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    for sig in _FORWARDED:  # the executor signals every process itself; the reaper stays
        signal.signal(sig, lambda *_: None)
    program = os.fork()
    if program == 0:
        for sig in _FORWARDED:
            signal.signal(sig, signal.SIG_DFL)
        try:
            os.execv(argv[0], argv)
        except OSError as exc:
            os.write(2, f"cannot start {argv[0]!r}: {exc.strerror}\n".encode())
        os._exit(127)
    while True:
        pid, status = os.waitpid(-1, 0)  # adopted orphans are reaped on the way
        if pid == program:
            break
    _end_leftovers()
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        if sig in _FORWARDED:  # SIGKILL has no handler to reset (and needs none)
            signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
        os._exit(128 + sig)  # a signal whose default is not to end the process
    os._exit(os.waitstatus_to_exitcode(status))


if __name__ == "__main__":
    main(sys.argv[1:])
