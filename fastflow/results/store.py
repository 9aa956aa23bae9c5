"""The results branch (`fastflow/results`): run records, logs, summary, badges and state in git.

Written with `fastflow.repo` (pygit2), never through a work tree. Layout: `layout` and
docs/results-branch.md. Durability: every run is first journalled (one fsync'd file per
run in `journal_dir`), then committed, then its journal file is removed; `recover()` commits
whatever is journalled and not yet on the branch, checking by path, so a crash at any point
neither loses nor duplicates a run. Cost: a commit rewrites only the trees on the paths it
touches, and `summary.json` is updated incrementally, so recording never scans all runs.
"""
from __future__ import annotations

import base64
import copy
import json
import logging
import re
import threading
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Callable, Iterable, Mapping

from fastflow import repo as git
from fastflow.defaults import (
    DEFAULT_AUTHOR_EMAIL,
    DEFAULT_AUTHOR_NAME,
    DEFAULT_RESULTS_BRANCH,
)
from fastflow.errors import FastflowError, RepositoryError
from fastflow.files import fsync_dir, is_temporary, write_atomic
from fastflow.humanize import format_seconds, without_surrogates
from fastflow.record import RunRecord, run_id_time
from fastflow.results.backoff import PushBackoff
from fastflow.results.layout import (
    SUMMARY_PATH,
    SUPERVISION_STATE,
    apply_run_to_summary,
    badge_json,
    commit_message,
    dump_json,
    dump_summary,
    flow_record_path,
    log_path,
    record_path,
    refresh_summary_entry,
    run_month,
)

log = logging.getLogger(__name__)

_STATE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_SET_ASIDE = "bad"  # journal entries that cannot be committed, kept for a person to look at
_CRASH_POINTS = ("after_journal", "after_tree", "after_commit", "after_ref", "after_cleanup")


class _InjectedCrash(BaseException):
    """Raised only in tests (`_fail_at`) to stop a write exactly where a kill would."""


class ResultsStore:
    """The results branch of one repository, with its local journal and optional remote.

    `author` is (name, email); `clock()` returns an aware datetime (commit times, summary);
    `remote` is a remote name, URL or path to push to, None for a local-only branch.
    One process writes a store at a time (the daemon's state-dir lock guarantees it);
    threads of that process may share it.
    """

    def __init__(
        self,
        repo_path: Path | str,
        journal_dir: Path | str,
        clock: Callable[[], datetime],
        branch: str = DEFAULT_RESULTS_BRANCH,
        author: tuple[str, str] = (DEFAULT_AUTHOR_NAME, DEFAULT_AUTHOR_EMAIL),
        remote: str | None = None,
        credentials: git.Credentials | None = None,
        _fail_at: str | None = None,
    ) -> None:
        if _fail_at is not None and _fail_at not in _CRASH_POINTS:
            raise ValueError(f"unknown crash point {_fail_at!r}; one of {_CRASH_POINTS}")
        self.repo = git.open_repo(repo_path)
        self.journal_dir = Path(journal_dir)
        self.journal_dir.mkdir(parents=True, exist_ok=True)
        self.clock = clock
        self.branch = branch
        self.author = author
        self.remote = remote
        self.credentials = credentials
        self._fail_at = _fail_at
        self._lock = threading.RLock()
        self._backoff = PushBackoff()  # pushes that did not land: when to try again

    # ---------------------------------------------------------------- writing
    def record_run(
        self,
        record: RunRecord,
        log_text: str,
        extra_files: Mapping[str, bytes | None] | None = None,
        commit: bool = True,
    ) -> str | None:
        """Journal a finished run (record, log, extra files such as site pages), then commit it
        unless `commit` is False (then a later `flush()` commits it with others). Returns the
        commit sha when committed."""
        rest = run_month(record.run_id)[2] if record.run_id[:1].isdigit() else ""
        if rest != record.pipeline and not rest.startswith(record.pipeline + "-"):
            raise RepositoryError(
                f"run id {record.run_id!r} does not name its pipeline {record.pipeline!r}; run "
                "ids must be `<YYYYMMDDTHHMMSSZ>-<pipeline>[-<suffix>]`"
            )
        extra = {p: (None if b is None else base64.b64encode(b).decode()) for p, b in
                 (extra_files or {}).items()}
        self._journal({"kind": "run", "record": record.to_json(), "log": log_text,
                       "extra": extra})
        self._crash("after_journal")
        return self.flush() if commit else None

    def record_flow(self, record: dict, commit: bool = True,
                    extra_files: Mapping[str, bytes | None] | None = None) -> str | None:
        """Journal a flow run record (`flow.record.FlowRunRecord.to_json()`) at
        `flows/<flow>/<YYYY>/<MM>/<flow_run_id>.json` with `extra_files` (its site pages), then
        commit it unless `commit` is False. A flow run is recorded when it starts and again as
        it goes on: each write replaces the file (the last one journalled wins)."""
        flow_record_path(record["flow"], record["flow_run_id"])  # a bad id fails here, at once
        extra = {p: (None if b is None else base64.b64encode(b).decode()) for p, b in
                 (extra_files or {}).items()}
        self._journal({"kind": "flow", "record": record, "extra": extra})
        return self.flush() if commit else None

    def write_state(self, name: str, data: dict, commit: bool = False) -> str | None:
        """Journal `state/<name>.json` (watermarks, last synced commit, heartbeat); it goes into
        the next commit, or one of its own when `commit` is True."""
        if not _STATE_NAME.match(name):
            raise RepositoryError(
                f"state name {name!r} is invalid; use letters, digits, '_', '.', '-'"
            )
        self._journal({"kind": "state", "name": name, "data": data})
        return self.flush() if commit else None

    def write_files(self, files: Mapping[str, bytes | None], label: str,
                    commit: bool = False) -> str | None:
        """Journal arbitrary files (e.g. site pages after a sync; None deletes a path); they go
        into the next commit, or one of their own when `commit` is True. `label` names them in
        the commit message."""
        encoded = {p: (None if b is None else base64.b64encode(b).decode()) for p, b in files.items()}
        self._journal({"kind": "files", "name": label, "files": encoded})
        return self.flush() if commit else None

    def flush(self) -> str | None:
        """Commit everything journalled in one commit (runs not yet on the branch, state), then
        drop the journal files and push when a remote is set. Returns the new commit or None."""
        with self._lock:
            entries = self._journal_entries()
            if not entries:
                return None
            sha = self._commit_loop(lambda head: self._changes_from(entries, head))
            self._crash("after_ref")
            for path, _ in entries:
                path.unlink(missing_ok=True)
            fsync_dir(self.journal_dir)
            self._crash("after_cleanup")
        if self.remote:
            self.push_pending()
        return sha

    def recover(self) -> str | None:
        """On start: commit what the journal holds and the branch lacks (by path, so nothing is
        written twice), then push what is pending. Returns the new commit, if any."""
        for stray in self.journal_dir.glob(".*"):
            if is_temporary(stray.name):
                stray.unlink(missing_ok=True)  # a journal write interrupted before its rename
        sha = self.flush()
        if sha is None and self.remote:
            self.push_pending()
        return sha

    def _changes_from(self, entries, head: str | None):
        changes: dict[str, bytes | None] = {}
        runs, states = [], []
        summary = self._summary_at(head)
        for path, entry in entries:
            try:
                made = self._entry_changes(entry, head)
                if made is not None and entry["kind"] == "run":  # a trial on a copy
                    apply_run_to_summary(_summary_copy(summary, entry["record"]), entry["record"])
            except (ValueError, TypeError, KeyError, AttributeError) as exc:
                # UnicodeError and a bad base64 are ValueErrors: the entry's own fault, never
                # the disk's (an OSError stops the flush and leaves every entry journalled)
                self._set_aside(path, _entry_fault(exc))
                continue
            if made is None:
                continue  # committed before a crash: never write it twice
            changes.update(made)
            if entry["kind"] == "run":
                apply_run_to_summary(summary, entry["record"])
                runs.append(entry["record"])
            elif entry["kind"] == "flow":
                states.append(f"flow {entry['record']['flow_run_id']} {entry['record']['status']}")
            else:
                states.append(entry["name"])
        if not changes:
            return None
        supervision = next((e["data"] for _, e in reversed(entries) if e["kind"] == "state"
                            and e.get("name") == SUPERVISION_STATE), None)
        self._add_summary(changes, summary, {r["pipeline"] for r in runs}, supervision)
        return changes, commit_message(runs, list(dict.fromkeys(states)))

    def _entry_changes(self, entry: dict, head: str | None) -> dict[str, bytes | None] | None:
        """The files one journal entry writes (None: its run is on the branch already); raises
        ValueError (and the like) when the entry cannot be committed."""
        if entry["kind"] == "state":
            made = {f"state/{_text(entry['name'])}.json": dump_json(entry["data"])}
        elif entry["kind"] == "files":
            _text(entry["name"])
            made = {_text(p): None if data is None else base64.b64decode(data, validate=True)
                    for p, data in entry["files"].items()}
        elif entry["kind"] == "flow":
            rec = entry["record"]
            made = {_text(flow_record_path(rec["flow"], rec["flow_run_id"])): dump_json(rec)}
            for extra, data in (entry.get("extra") or {}).items():
                made[_text(extra)] = None if data is None else base64.b64decode(data, validate=True)
        elif entry["kind"] == "run":
            rec = entry["record"]
            path = _text(record_path(rec["pipeline"], rec["run_id"]))
            if head is not None and git.read_blob(self.repo, head, path) is not None:
                return None
            made = {path: dump_json(rec),
                    _text(log_path(rec["pipeline"], rec["run_id"])): entry["log"].encode()}
            for extra, data in entry["extra"].items():
                made[_text(extra)] = None if data is None else base64.b64decode(data, validate=True)
        else:
            raise ValueError(f"unknown kind {entry['kind']!r}")
        return made

    def _set_aside(self, path: Path, reason: str) -> None:
        """Move a journal entry that cannot be committed to `<journal>/bad/`, with a warning:
        the others are committed, the daemon goes on, and nothing is deleted."""
        bad = self.journal_dir / _SET_ASIDE
        bad.mkdir(exist_ok=True)
        path.replace(bad / path.name)
        fsync_dir(self.journal_dir)
        log.warning("journal entry %s cannot be committed (%s); set aside in %s/",
                    path.name, reason, bad)

    def _add_summary(self, changes: dict, summary: dict, pipelines: Iterable[str],
                     supervision: dict | None = None) -> None:
        pipelines = sorted(set(pipelines))
        if supervision is not None:  # state/supervision.json, for readers of summary.json only
            summary["supervision"] = dict(supervision.get("pipelines") or {})
        elif not pipelines:
            return
        summary["schema"] = 1
        summary["updated_at"] = self.clock().isoformat()
        changes[SUMMARY_PATH] = dump_summary(summary)
        for name in pipelines:
            status = summary["pipelines"][name]["last_status"]
            changes[f"badges/{name}.json"] = dump_json(badge_json(name, status))

    def _commit_loop(self, make_changes, parents_extra=()) -> str | None:
        """Build a commit from `make_changes(head)` on the branch head, CAS the ref, retry."""
        for _ in range(5):
            head = git.branch_head(self.repo, self.branch)
            made = make_changes(head)
            if made is None:
                return head
            changes, message = made
            tree = git.build_tree(self.repo, head, changes)
            self._crash("after_tree")
            parents = ([head] if head else []) + list(parents_extra)
            sha = git.make_commit(self.repo, tree, parents, message, self.author, self.clock())
            self._crash("after_commit")
            try:
                git.update_ref(self.repo, self.branch, sha, head, message.splitlines()[0])
                return sha
            except git.RefConflict:
                log.info("results branch moved while committing; rebuilding on the new head")
        raise RepositoryError(f"{self.repo.path}: branch {self.branch!r} keeps moving; retry")

    def _journal(self, entry: dict) -> None:
        name = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.json"
        text = json.dumps(entry, ensure_ascii=False)
        try:
            raw = text.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate (a name that is not UTF-8) cannot be
            # committed: journalled with escapes instead, so the entry never poisons a flush
            log.warning("journal entry %s (%s) holds text that is not UTF-8; stored with "
                        "\\x escapes", name, entry.get("kind"))
            raw = json.dumps(_escaped(entry), ensure_ascii=False).encode("utf-8")
        write_atomic(self.journal_dir / name, raw, durable=True)

    def _journal_entries(self) -> list[tuple[Path, dict]]:
        out = []
        for path in sorted(self.journal_dir.glob("[0-9]*.json")):
            try:
                entry = json.loads(path.read_text(encoding="utf-8"))
                if not isinstance(entry, dict) or "kind" not in entry:
                    raise ValueError("not a journal entry")
            except ValueError as exc:  # UnicodeDecodeError too: written by no store
                self._set_aside(path, f"unreadable: {exc}")
                continue
            except FileNotFoundError:
                continue  # flushed by another thread meanwhile
            out.append((path, entry))
        return out

    def _crash(self, point: str) -> None:
        if self._fail_at == point:
            raise _InjectedCrash(point)

    # ---------------------------------------------------------------- reading
    def head(self) -> str | None:
        """The commit the results branch points to, None before the first record."""
        return git.branch_head(self.repo, self.branch)

    def _summary_at(self, head: str | None) -> dict:
        data = git.read_blob(self.repo, head, SUMMARY_PATH) if head else None
        return json.loads(data) if data else {"schema": 1, "pipelines": {}}

    def read_summary(self) -> dict:
        """`summary.json` of the branch: per pipeline the last run and the last 30 runs."""
        return self._summary_at(self.head())

    def read_state(self, name: str) -> dict | None:
        """`state/<name>.json`: the newest journalled value if one is pending, else the branch's."""
        for _, entry in reversed(self._journal_entries()):
            if entry["kind"] == "state" and entry["name"] == name:
                return entry["data"]
        head = self.head()
        data = git.read_blob(self.repo, head, f"state/{name}.json") if head else None
        return json.loads(data) if data else None

    def list_run_ids(self, pipeline: str, limit: int = 50, before: str | None = None) -> list[str]:
        """Run ids of `pipeline`, newest first, older than `before` when given; reads only the
        year/month folders needed to find `limit` of them."""
        return self._list_ids(f"runs/{pipeline}", limit, before)

    def list_flow_run_ids(self, flow: str, limit: int = 50, before: str | None = None) -> list[str]:
        """Flow run ids of `flow`, newest first (like `list_run_ids`)."""
        return self._list_ids(f"flows/{flow}", limit, before)

    def flows_on_branch(self) -> list[str]:
        """The flows with a `flows/<flow>/` folder on the branch (a pending write's too)."""
        head = self.head()
        names = {i.name for i in git.list_tree(self.repo, head, "flows") if i.kind == "tree"} \
            if head else set()
        names |= {e["record"]["flow"] for _, e in self._journal_entries() if e["kind"] == "flow"}
        return sorted(names)

    def recent_flow_runs(self, flow: str, limit: int = 50) -> list[dict]:
        """The newest `limit` flow run records of `flow` (JSON), newest first, pending writes
        included."""
        ids = set(self.list_flow_run_ids(flow, limit))
        ids |= {e["record"]["flow_run_id"] for _, e in self._journal_entries()
                if e["kind"] == "flow" and e["record"]["flow"] == flow}
        return [self.read_flow(i, flow) for i in sorted(ids, reverse=True)[:limit]]

    def read_flow(self, flow_run_id: str, flow: str | None = None) -> dict:
        """The flow run record (JSON) of `flow_run_id`, the newest journalled one when a write
        is pending; `flow` None: found from the id like a run's pipeline."""
        for _, entry in reversed(self._journal_entries()):
            if entry["kind"] == "flow" and entry["record"]["flow_run_id"] == flow_run_id:
                return entry["record"]
        head = self.head()
        _, _, rest = run_month(flow_run_id)
        if flow is not None:
            candidates = [flow]
        else:
            names = [i.name for i in git.list_tree(self.repo, head, "flows")] if head else []
            candidates = sorted((n for n in names if rest == n or rest.startswith(n + "-")),
                                key=len, reverse=True)
        for name in candidates:
            data = git.read_blob(self.repo, head, flow_record_path(name, flow_run_id))
            if data is not None:
                return json.loads(data)
        raise RepositoryError(
            f"no flow run {flow_run_id!r} on the results branch {self.branch!r} of "
            f"{self.repo.path}; list flow runs with `fastflow flow history FLOW`")

    def _list_ids(self, base: str, limit: int, before: str | None) -> list[str]:
        head = self.head()
        if head is None:
            return []
        ids: list[str] = []
        cut = run_month(before)[:2] if before else None
        for year in sorted((i.name for i in git.list_tree(self.repo, head, base)), reverse=True):
            if cut and year > cut[0]:
                continue
            for month in sorted((i.name for i in git.list_tree(self.repo, head, f"{base}/{year}")),
                                reverse=True):
                if cut and (year, month) > cut:
                    continue
                names = git.list_tree(self.repo, head, f"{base}/{year}/{month}")
                for name in sorted((i.name[:-5] for i in names if i.name.endswith(".json")),
                                   reverse=True):
                    if before is None or name < before:
                        ids.append(name)
                        if len(ids) >= limit:
                            return ids
        return ids

    def list_runs(self, pipeline: str, limit: int = 50, before: str | None = None) -> list[RunRecord]:
        """The records of `pipeline`, newest first (see `list_run_ids`)."""
        return [self.read_run(i, pipeline) for i in self.list_run_ids(pipeline, limit, before)]

    def _find(self, run_id: str, pipeline: str | None, kind: str) -> str:
        head = self.head()
        _, _, rest = run_month(run_id)
        if pipeline is not None:
            candidates = [pipeline]
        else:  # names may contain '-': try every pipeline folder the id can start with
            names = [i.name for i in git.list_tree(self.repo, head, "runs")] if head else []
            candidates = sorted((n for n in names if rest == n or rest.startswith(n + "-")),
                                key=len, reverse=True)
        for name in candidates:
            path = (record_path if kind == "record" else log_path)(name, run_id)
            data = git.read_blob(self.repo, head, path) if head else None
            if data is not None:
                return data.decode("utf-8")
        raise RepositoryError(
            f"no run {run_id!r} on the results branch {self.branch!r} of {self.repo.path}; "
            "list runs with `fastflow history PIPELINE`"
        )

    def read_run(self, run_id: str, pipeline: str | None = None) -> RunRecord:
        """The record of `run_id` (its pipeline derived from the id when not given)."""
        return RunRecord.from_json(json.loads(self._find(run_id, pipeline, "record")))

    def read_log(self, run_id: str, pipeline: str | None = None) -> str:
        """The stored log of `run_id`."""
        return self._find(run_id, pipeline, "log")

    # ---------------------------------------------------------------- growth
    def remove_expired_runs(
        self,
        pipeline: str,
        now: datetime,
        keep_runs: int | None = None,
        keep_days: int | None = None,
        extra_paths: Callable[[str], Iterable[str]] | None = None,
    ) -> list[str]:
        """Remove records and logs of `pipeline` beyond the newest `keep_runs` or older than
        `keep_days` (by run id time), plus `extra_paths(run_id)` (site pages), in one commit.
        Returns the removed run ids, oldest first."""
        if keep_runs is None and keep_days is None:
            return []
        with self._lock:
            ids = self.list_run_ids(pipeline, limit=10**9)
            doomed = set(ids[keep_runs:]) if keep_runs is not None else set()
            if keep_days is not None:
                cutoff = now - timedelta(days=keep_days)
                doomed.update(i for i in ids if run_id_time(i) < cutoff)
            if not doomed:
                return []
            removed = sorted(doomed)
            changes: dict[str, bytes | None] = {}
            for run_id in removed:
                changes[record_path(pipeline, run_id)] = None
                changes[log_path(pipeline, run_id)] = None
                for extra in extra_paths(run_id) if extra_paths else ():
                    changes[extra] = None
            message = f"retention {pipeline}: removed {len(removed)} runs\n"

            def make(head: str | None):
                # runs_recorded counts what is on the branch (the site pages history by it)
                summary = self._summary_at(head)
                entry = (summary.get("pipelines") or {}).get(pipeline)
                if entry is not None:
                    entry["runs_recorded"] = len(ids) - len(removed)
                    entry["recent"] = [r for r in entry.get("recent", []) if r["run_id"] not in doomed]
                    refresh_summary_entry(entry)
                    changes[SUMMARY_PATH] = dump_summary(summary)
                return changes, message

            self._commit_loop(make)
        if self.remote:
            self.push_pending()
        return removed

    def compact(self) -> str | None:
        """Rewrite the branch to one commit holding the current tree (opt-in, see the docs).

        With a remote, everything must be pushed first; the compacted branch is then pushed
        with force — the only forced push Fast-Flow ever makes, and only on this request.
        """
        with self._lock:
            self.flush()
            if self.remote and self.push_pending() is not git.PushResult.PUSHED:
                raise RepositoryError(
                    f"{self.remote}: cannot push {self.branch!r} before compacting; compact "
                    "when the remote is reachable"
                )
            head = self.head()
            if head is None:
                return None
            info = git.commit_info(self.repo, head)
            message = f"compact: history of {self.branch} squashed\n"
            sha = git.make_commit(self.repo, info.tree, [], message, self.author, self.clock())
            git.update_ref(self.repo, self.branch, sha, head, "compact")
            if self.remote:
                result, detail = git.push_branch(self.repo, self.remote, self.branch,
                                                 self.credentials, force=True)
                if result is not git.PushResult.PUSHED:
                    raise RepositoryError(f"{self.remote}: compacted branch not pushed ({detail})")
            return sha

    # ---------------------------------------------------------------- remote
    @property
    def push_retry_at(self) -> datetime | None:
        """When a push that did not land is tried again (None: nothing waits for a retry)."""
        return self._backoff.retry_at

    def push_pending(self, now: datetime | None = None, *,
                     force: bool = False) -> git.PushResult | None:
        """Push the branch; None when there is no remote or nothing to push, or when an
        earlier push failed and its retry is not due at `now` (default: the store's clock)
        unless `force`.

        Rejected because the remote moved: fetch the remote's branch, merge (re-apply our
        files on top of it) and push again. Refused by the remote's policy (a hook, a protected
        ref), or unreachable: keep the commits, warn once, and back off (`backoff`); the
        daemon's tick calls again at `push_retry_at`. A refusal never makes a merge commit.
        """
        if not self.remote or self.head() is None:
            return None
        now = self.clock() if now is None else now
        with self._lock:
            if not force and not self._backoff.due(now):
                return None
            result, detail = self._push_merging()
            if result is git.PushResult.PUSHED:
                failed = self._backoff.succeeded()
                if failed:
                    log.warning("results pushed to %s after %d attempts", self.remote, failed + 1)
                return result
            news = self._backoff.failed(now, result.value)
            (log.warning if news else log.info)(
                "results not pushed to %s: %s; kept locally, retrying in %s", self.remote,
                detail, format_seconds(self._backoff.delay_s))
            return result

    def _push_merging(self) -> tuple[git.PushResult, str]:
        """One push, and while it is rejected because the remote moved, fetch + merge + push
        (five rounds at most). Returns the result and what to tell the operator."""
        ref = f"refs/heads/{self.branch}"
        for _ in range(5):
            try:
                result, detail = git.push_branch(self.repo, self.remote, self.branch,
                                                 self.credentials)
            except FastflowError as exc:
                result, detail = git.PushResult.UNREACHABLE, str(exc)
            if result is git.PushResult.PUSHED:
                return result, ""
            if result is git.PushResult.REFUSED:
                return result, f"the remote refused {ref} ({detail})"
            if result is git.PushResult.UNREACHABLE:
                return result, f"the remote is unreachable ({detail})"
            try:
                upstream = git.fetch_branch(self.repo, self.remote, self.branch,
                                            self.credentials)
            except FastflowError as exc:
                return git.PushResult.UNREACHABLE, f"the remote is unreachable ({exc})"
            local = self.head()
            if upstream is None or git.merge_base(self.repo, local, upstream) == upstream:
                # Nothing of the remote's is missing here: the push was a fast-forward, so
                # the rejection was the remote's policy, whatever its words.
                return git.PushResult.REFUSED, f"the remote refused {ref} ({detail})"
            self._merge(upstream)
        return git.PushResult.REJECTED, f"{ref} keeps moving on the remote ({detail})"

    def _merge(self, upstream: str) -> str | None:
        """Re-apply our changes since the common ancestor on top of `upstream` (merge commit)."""
        local = self.head()
        base = git.merge_base(self.repo, local, upstream)
        if base == local:  # nothing of ours is missing upstream: fast-forward
            git.update_ref(self.repo, self.branch, upstream, local, "fast-forward")
            return upstream
        if base == upstream:  # nothing of theirs is missing here: never an empty merge
            return local
        ours = git.diff_blobs(self.repo, base and git.commit_info(self.repo, base).tree, local)
        changes = {p: v for p, v in ours.items()
                   if p != SUMMARY_PATH and not p.startswith("badges/")}
        summary, pipelines = self._summary_at(upstream), set()
        for path, value in changes.items():
            if path.startswith("runs/") and isinstance(value, git.BlobRef) and \
                    git.read_blob(self.repo, upstream, path) is None:
                rec = json.loads(git.read_blob(self.repo, local, path))
                apply_run_to_summary(summary, rec)
                pipelines.add(rec["pipeline"])
        self._add_summary(changes, summary, pipelines)
        tree = git.build_tree(self.repo, upstream, changes)
        message = f"merge {self.branch} from {self.remote}: re-apply local results\n"
        sha = git.make_commit(self.repo, tree, [upstream, local], message, self.author,
                              self.clock())
        git.update_ref(self.repo, self.branch, sha, local, "merge")
        return sha


def _text(value: str) -> str:
    """`value` when it can be stored in git (a str without lone surrogates); else ValueError."""
    if not isinstance(value, str):
        raise TypeError(f"{value!r} is not text")
    value.encode("utf-8")  # UnicodeEncodeError (a ValueError) for a lone surrogate
    return value


def _escaped(value: object) -> object:
    """A JSON value with `without_surrogates` applied to every string and key."""
    if isinstance(value, str):
        return without_surrogates(value)
    if isinstance(value, dict):
        return {_escaped(k): _escaped(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_escaped(v) for v in value]
    return value


def _summary_copy(summary: dict, record: dict) -> dict:
    """The part of `summary` a run record changes, copied (to try the record on it first)."""
    entry = (summary.get("pipelines") or {}).get(record["pipeline"])
    return {"pipelines": {} if entry is None else {record["pipeline"]: copy.deepcopy(entry)}}


def _entry_fault(exc: Exception) -> str:
    if isinstance(exc, UnicodeError):
        return "it holds text that is not UTF-8 (a lone surrogate)"
    if isinstance(exc, KeyError):
        return f"the field {exc} is missing"
    return str(exc)
