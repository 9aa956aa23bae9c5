"""The read side of the results branch: status, history, logs and compaction.

The library twin of `fastflow status | history | logs | results` (and, in `build`, of
`fastflow site`). Functions return plain data (dicts, strings); they never print or exit.
`open_results` opens a repository (a work tree, its `.git`, a bare repository or the daemon's
`mirror.git`) with its results branch; the working tree, when there is one, adds its
configuration (which branch holds the results) and the pipelines that never ran.

State files written by `fastflow serve` (all optional, absent ones are reported as notes):
`state/daemon.json` (heartbeat, pid, running, queued), `state/sync.json` (last synced commit)
and `state/deployment.json` (invalid pipelines, configuration errors, next scheduled runs).
The daemon also rewrites `<state-dir>/status.json` every heartbeat; when it is newer than the
branch's copy (which is committed less often), it is preferred.
"""
from __future__ import annotations

import json
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Callable, Iterator
from zoneinfo import ZoneInfo

from fastflow import repo as git
from fastflow.config import CONFIG_FILE, default_repo_config
from fastflow.config.schedules import check_schedules, read_schedules_file
from fastflow.defaults import (
    HEARTBEAT_INTERVAL,
    HEARTBEAT_STALE_FACTOR,
    STATE_LIVE,
    STATE_STATUS,
)
from fastflow.deploy.workspace import Workspace, flow_names, open_workspace
from fastflow.errors import ConfigError, FastflowError, RepositoryError
from fastflow.humanize import format_ago, format_until
from fastflow.model import RepoConfig, Severity
from fastflow.record import RunRecord
from fastflow.results.layout import SUPERVISION_STATE, run_month
from fastflow.results.store import ResultsStore
from fastflow.schedule.planner import next_slots

RECORD_SETTLE_S = 60.0  # how long `logs --follow` waits for a record after the live file went


class NoResultsBranch(RepositoryError):
    """The repository has no results branch yet."""


class UnknownRun(RepositoryError):
    """No run of that id on the branch, running or queued."""


class UnknownPipeline(FastflowError):
    """No runs of that pipeline and no such pipeline in the working tree."""


@dataclass
class Results:
    """An open repository with its results branch (see `open_results`)."""

    root: Path
    store: ResultsStore
    config: RepoConfig
    workspace: Workspace | None
    notes: list[str]

    @property
    def branch(self) -> str:
        return self.store.branch

    def require_writable(self) -> str:
        """The head of the results branch, which this command may rewrite; an error when only a
        fetched copy (`origin/...`) is there."""
        if self.store.branch.startswith("refs/remotes/"):
            raise FastflowError(
                f"{self.root}: the results are read from {self.store.branch[len('refs/remotes/'):]}, "
                "a fetched copy; compact or prune where `fastflow serve` writes the branch"
            )
        return self.require_branch()

    def require_branch(self) -> str:
        """The head of the results branch; `NoResultsBranch` when there is none yet."""
        head = self.store.head()
        if head is None:
            raise NoResultsBranch(
                f"{self.root}: no results branch {self.branch!r} yet; it appears after the "
                "first run recorded by fastflow serve"
            )
        return head

    def pipelines_on_branch(self) -> list[str]:
        """The pipelines with a `runs/<pipeline>/` folder on the branch."""
        head = self.store.head()
        if head is None:
            return []
        return sorted(i.name for i in git.list_tree(self.store.repo, head, "runs") if i.kind == "tree")

    def known_pipelines(self) -> set[str]:
        """Pipelines of the working tree (valid or not) and of the branch."""
        names = set(self.pipelines_on_branch()) | set(self.store.read_summary().get("pipelines") or {})
        if self.workspace is not None:
            names |= set(self.workspace.discovery.names)
        return names


@contextmanager
def open_results(repo_path: Path, clock: Callable[[], datetime]) -> Iterator[Results]:
    """Open the repository at `repo_path` for reading (and compacting/pruning) its results.

    The results branch name comes from `.fastflow/config.yaml` of the working tree; a bare
    repository (or an invalid config.yaml, noted) uses the default. The store gets an empty
    journal of its own in a temporary folder, so reading never touches the daemon's journal.
    """
    repo_path = Path(repo_path)
    repository = git.open_repo(repo_path)
    workspace, notes, config = None, [], default_repo_config()
    if not repository.bare:
        try:
            workspace = open_workspace(repo_path)
            config = workspace.config
        except ConfigError as exc:
            notes.append(f"{CONFIG_FILE} of the working tree is invalid, so the default results "
                         f"branch {config.results_branch!r} is read: {exc}")
    branch = config.results_branch
    tracking = f"refs/remotes/origin/{branch}"
    if git.branch_head(repository, branch) is None and \
            git.branch_head(repository, tracking) is not None:
        # a clone that fetched the results (`git fetch origin fastflow/results`) but never
        # checked the branch out: read the fetched copy
        notes.append(f"reading origin/{branch}, the fetched copy (no local branch {branch!r}); "
                     f"`git fetch origin {branch}` refreshes it")
        branch = tracking
    with tempfile.TemporaryDirectory(prefix="fastflow-results-") as journal:
        store = ResultsStore(repo_path, journal, clock, branch=branch,
                             author=(config.author_name, config.author_email))
        yield Results(repo_path, store, config, workspace, notes)


# --- status ------------------------------------------------------------------------------------


def _parse_time(value: object) -> datetime | None:
    try:
        return datetime.fromisoformat(str(value)) if value else None
    except ValueError:
        return None


def _when(moment: datetime | None, now: datetime) -> dict | None:
    if moment is None:
        return None
    return {"at": moment.isoformat(), "ago": format_ago(moment, now)}


def daemon_status(results: Results, now: datetime, state_dir: Path | None) -> dict | None:
    """The daemon's heartbeat and queue: `<state_dir>/status.json` when it is newer than
    `state/daemon.json` of the branch, else the branch's; None when neither exists."""
    candidates = []
    branch_state = results.store.read_state("daemon")
    if branch_state:
        candidates.append((branch_state, f"{results.branch}:state/daemon.json"))
    local = Path(state_dir) / STATE_STATUS if state_dir else None
    if local is not None and local.is_file():
        try:
            candidates.append((json.loads(local.read_text(encoding="utf-8")), str(local)))
        except (OSError, ValueError):
            pass  # being replaced right now or damaged: the branch's copy will do
    dated = [(_parse_time(d.get("heartbeat")), d, src) for d, src in candidates]
    dated = [c for c in dated if c[0] is not None]
    if not dated:
        return None
    heartbeat, data, source = max(dated, key=lambda c: c[0])
    if local is not None and dated[-1][2] == str(local) and \
            (dated[-1][1].get("lease") or {}).get("role") == "standby":
        # a standby never writes the branch's copy: that one is another daemon's, the lease
        # holder's; asked about this state dir, say what its daemon does
        heartbeat, data, source = dated[-1]
    age = (now - heartbeat).total_seconds()
    # the state dir's copy is rewritten every minute; the branch's only every few minutes when
    # no run finishes: each says its interval, so staleness is judged against the right one
    # (a heartbeat that does not say its interval is from a daemon that wrote one a minute)
    interval = float(data.get("heartbeat_interval_s") or HEARTBEAT_INTERVAL)
    return {
        "heartbeat": heartbeat.isoformat(), "age_s": round(age, 1), "ago": format_ago(heartbeat, now),
        "stale": age > HEARTBEAT_STALE_FACTOR * interval and not data.get("stopped_at"),
        "stopped_at": data.get("stopped_at"), "stale_after_s": HEARTBEAT_STALE_FACTOR * interval,
        "interval_s": interval, "pid": data.get("pid"), "source": data.get("source"),
        "branch": data.get("branch"), "running": list(data.get("running") or []),
        "queued": list(data.get("queued") or []), "sync_errors": list(data.get("sync_errors") or []),
        "lease": _lease_view(data.get("lease"), now), "read_from": source,
    }


RESTARTS_COUNTED_S = 86400.0  # "restarts in the last day"


def supervision_view(data: dict, now: datetime) -> dict:
    """One pipeline's state of `state/supervision.json` (`daemon.supervision.Supervised`) as
    `fastflow status` and the site show it: up since, restarts in the last day, the next
    restart, given up (docs/supervision.md)."""
    pending = data.get("pending") or None
    restarts = [t for t in (_parse_time(r) for r in data.get("restarts") or ()) if t]
    next_at = _parse_time(pending.get("at")) if pending and not pending.get("queued") else None
    return {
        "up_since": _when(_parse_time(data.get("up_since")), now),
        "running": data.get("running"),
        "restarts_last_day": sum(1 for t in restarts if (now - t).total_seconds() < RESTARTS_COUNTED_S),
        "next_restart": {"at": next_at.isoformat(), "in": format_until(next_at, now),
                         "reason": pending.get("reason"), "run_id": pending.get("run_id")}
        if next_at else None,
        "given_up": bool(data.get("given_up_at")),
        "given_up_at": _when(_parse_time(data.get("given_up_at")), now),
        "given_up_after": data.get("given_up_after"),
        "crashes_in_a_row": int(data.get("consecutive") or 0),
    }


def supervision_views(data: dict | None, now: datetime) -> dict[str, dict]:
    """Every supervised pipeline's `supervision_view`, from `state/supervision.json`."""
    pipelines = (data or {}).get("pipelines") or {}
    return {name: supervision_view(entry, now) for name, entry in sorted(pipelines.items())
            if isinstance(entry, dict)}


def supervision_status(results: Results, now: datetime) -> dict[str, dict]:
    """The supervised pipelines of the results branch (`supervision_views`)."""
    return supervision_views(results.store.read_state(SUPERVISION_STATE), now)


def _lease_view(lease: dict | None, now: datetime) -> dict | None:
    """The lease as the daemon last saw it (see docs/serve.md, "Two daemons on one repository"),
    with its times in words."""
    if not lease:
        return None
    expires, renewed = _parse_time(lease.get("expires_at")), _parse_time(lease.get("renewed_at"))
    return {**lease, "renewed": format_ago(renewed, now) if renewed else None,
            "expires": (format_until(expires, now) if expires > now else
                        f"expired {format_ago(expires, now)}") if expires else None}


def _next_run_entry(schedule_id: str, at: datetime, zone: str, now: datetime) -> dict:
    return {"schedule_id": schedule_id, "at": at.isoformat(),
            "local": at.astimezone(ZoneInfo(zone)).isoformat(), "timezone": zone,
            "in": format_until(at, now)}


def _next_runs_from_deployment(deployment: dict, now: datetime) -> dict[str, dict]:
    found: dict[str, dict] = {}
    for item in deployment.get("schedules") or []:
        at = _parse_time(item.get("next_at"))
        name = item.get("pipeline")
        if at is None or not name:
            continue
        if name not in found or at < datetime.fromisoformat(found[name]["at"]):
            zone = item.get("timezone") or "UTC"
            entry = _next_run_entry(item.get("id") or name, at, zone, now)
            entry["local"] = item.get("next_local") or entry["local"]
            found[name] = entry
    return found


def _next_runs_from_workspace(workspace: Workspace, now: datetime) -> dict[str, dict]:
    discovery = workspace.discovery
    found_set = check_schedules(read_schedules_file(workspace.root), discovery.pipelines,
                                root=workspace.root, invalid_pipelines=tuple(discovery.invalid),
                                flows=flow_names(workspace))
    found: dict[str, dict] = {}
    for schedule in found_set.schedules:
        slots = next_slots(schedule, now, 1) if schedule.enabled else []
        if not slots:
            continue
        at = slots[0].at
        current = found.get(schedule.pipeline)
        if current is None or at < datetime.fromisoformat(current["at"]):
            found[schedule.pipeline] = _next_run_entry(schedule.id, at, schedule.timezone, now)
    return found


def configuration_view(results: Results, now: datetime) -> dict:
    """Invalid pipelines, configuration errors and next runs: from `state/deployment.json`
    (what the daemon deployed) when the branch has it, else from the working tree (`note`
    then says so)."""
    deployment = results.store.read_state("deployment")
    if deployment is not None:
        return {
            "from": "deployment", "commit": deployment.get("commit"), "at": deployment.get("at"),
            "invalid": {n: [str(m) for m in ms] for n, ms in
                        sorted((deployment.get("invalid") or {}).items())},
            "errors": [str(m) for m in deployment.get("errors") or []],
            "next_runs": _next_runs_from_deployment(deployment, now), "note": None,
        }
    workspace = results.workspace
    if workspace is None:
        return {"from": None, "commit": None, "at": None, "invalid": {}, "errors": [],
                "next_runs": {},
                "note": f"no state/deployment.json on {results.branch!r} yet and no working "
                        "tree: invalid pipelines, configuration errors and next runs are unknown"}
    discovery = workspace.discovery
    return {
        "from": "working tree", "commit": None, "at": None,
        "note": f"no state/deployment.json on {results.branch!r} yet (fastflow serve writes it "
                "after a sync): invalid pipelines, configuration errors and next runs are those "
                "of the working tree",
        "invalid": {n: [str(p) for p in i.problems if p.severity is Severity.ERROR]
                    for n, i in sorted(discovery.invalid.items())},
        "errors": [str(p) for p in discovery.problems if p.severity is Severity.ERROR],
        "next_runs": _next_runs_from_workspace(workspace, now),
    }


def _pipeline_row(name: str, entry: dict | None, invalid: bool, next_run: dict | None,
                  now: datetime) -> dict:
    entry = entry or {}
    finished = _parse_time(entry.get("last_finished_at"))
    return {
        "name": name, "valid": not invalid,
        "last_status": entry.get("last_status"), "last_run_id": entry.get("last_run_id"),
        "last_trigger": entry.get("last_trigger"),
        "last_finished": _when(finished, now), "last_duration_s": entry.get("last_duration_s"),
        "success_rate": entry.get("success_rate"), "runs_recorded": entry.get("runs_recorded", 0),
        "next_run": next_run,
    }


def status_report(results: Results, now: datetime, state_dir: Path | None = None) -> dict:
    """Everything `fastflow status` shows, as JSON-ready data (see docs/results-cli.md)."""
    head = results.require_branch()
    summary = results.store.read_summary().get("pipelines") or {}
    config = configuration_view(results, now)
    names = set(summary) | set(config["invalid"]) | set(config["next_runs"])
    if results.workspace is not None:
        names |= set(results.workspace.discovery.names)
    daemon = daemon_status(results, now, state_dir)
    notes = list(results.notes) + ([config["note"]] if config["note"] else [])
    if daemon is None:
        notes.append(f"no daemon heartbeat on {results.branch!r} (state/daemon.json)"
                     + (f" or in {state_dir}" if state_dir else "") + "; is fastflow serve running?")
    sync = results.store.read_state("sync")
    supervision = supervision_status(results, now)
    return {
        "repository": str(results.root), "branch": results.branch, "head": head,
        "now": now.isoformat(),
        "pipelines": [_pipeline_row(n, summary.get(n), n in config["invalid"],
                                    config["next_runs"].get(n), now) for n in sorted(names)],
        "invalid": config["invalid"], "errors": config["errors"],
        "configuration_from": config["from"],
        "deployment": {"commit": config["commit"], "at": config["at"]} if config["from"] ==
        "deployment" else None,
        "daemon": daemon,
        "sync": {"commit": sync.get("commit"), "at": sync.get("at")} if sync else None,
        "supervision": supervision,
        "notifications": notifications_status(results),
        "notes": notes,
    }


def notifications_status(results: Results) -> dict | None:
    """The last deliveries of notifications (`recent` of state/notifications.json) counted by
    outcome, with the newest that failed; None when none was ever sent."""
    recent = (results.store.read_state("notifications") or {}).get("recent") or []
    if not recent:
        return None
    outcomes: dict[str, int] = {}
    for entry in recent:
        outcomes[str(entry.get("outcome"))] = outcomes.get(str(entry.get("outcome")), 0) + 1
    failed = next((e for e in recent if e.get("outcome") in ("failed", "dropped")), None)
    errors = [a.get("error") for a in (failed or {}).get("attempts") or [] if a.get("error")]
    return {"recent": len(recent), "outcomes": outcomes,
            "last_failed": None if failed is None else {
                "id": failed.get("id"), "target": failed.get("target"),
                "queued_at": failed.get("queued_at"), "error": errors[-1] if errors else None}}


def flow_runs_view(results: Results) -> list[dict]:
    """The newest run of each flow on the branch, newest first: flow, flow run id, status,
    start, and each task's id, status and run id (what `fastflow status --watch` shows of
    flows). One record read per flow, whatever the number of runs."""
    found = []
    for flow in results.store.flows_on_branch():
        recent = results.store.recent_flow_runs(flow, limit=1)
        if not recent:
            continue
        record = recent[0]
        found.append({
            "flow": flow, "flow_run_id": record["flow_run_id"], "status": record.get("status"),
            "started_at": record.get("started_at"), "duration_s": record.get("duration_s"),
            "tasks": [{"id": t["id"], "status": t.get("status"), "run_id": t.get("run_id")}
                      for t in record.get("tasks") or ()],
        })
    return sorted(found, key=lambda f: f["flow_run_id"][:16], reverse=True)


def watch_report(results: Results, now: datetime, state_dir: Path | None = None) -> dict:
    """What `fastflow status --watch` shows at `now`: the status report (pipelines, the
    daemon's running runs and queue, next runs, last results) and the newest run of each flow."""
    return {**status_report(results, now, state_dir), "flows": flow_runs_view(results)}


# --- history -----------------------------------------------------------------------------------


def history_row(record: RunRecord) -> dict:
    """One run as `fastflow history` shows it."""
    return {
        "run_id": record.run_id, "status": record.status.value,
        "trigger": {"kind": record.trigger.kind, "schedule_id": record.trigger.schedule_id,
                    "parent_run_id": record.trigger.parent_run_id,
                    "delivery_id": record.trigger.delivery_id},
        "started_at": record.started_at.isoformat() if record.started_at else None,
        "finished_at": record.finished_at.isoformat() if record.finished_at else None,
        "duration_s": record.duration_s, "attempts": len(record.attempts),
        "exit_code": record.exit_code,
        "error": {"kind": record.error.kind, "message": record.error.message}
        if record.error else None,
        "downstream": [dict(fired) for fired in record.downstream],
    }


def run_history(results: Results, pipeline: str, limit: int = 20,
                before: str | None = None) -> dict:
    """The runs of `pipeline`, newest first, at most `limit`, older than `before` when given.
    `older` is the id to pass as `before` for the next page (None when there is none)."""
    results.require_branch()
    if before is not None:
        run_month(before)  # a malformed id is an error naming the expected form
    ids = results.store.list_run_ids(pipeline, limit + 1, before)
    if not ids and before is None and pipeline not in results.known_pipelines():
        known = ", ".join(sorted(results.known_pipelines())) or "none"
        raise UnknownPipeline(
            f"no pipeline {pipeline!r}: it has no runs on {results.branch!r} and is not in the "
            f"working tree; known pipelines: {known}"
        )
    runs = [history_row(results.store.read_run(i, pipeline)) for i in ids[:limit]]
    return {"pipeline": pipeline, "runs": runs,
            "older": ids[limit - 1] if len(ids) > limit else None}


def flow_history(results: Results, flow: str, limit: int = 20) -> dict:
    """The flow runs of `flow`, newest first, at most `limit`: each run's id, status, trigger,
    times, params and its tasks' statuses (`flow.record` fields), from the results branch."""
    results.require_branch()
    runs = [flow_history_row(results.store.read_flow(flow_run_id, flow))
            for flow_run_id in results.store.list_flow_run_ids(flow, limit)]
    return {"flow": flow, "runs": runs}


def flow_history_row(data: dict) -> dict:
    """One flow run as `fastflow flow history --json` lists it, from its record's JSON."""
    return {
        "flow_run_id": data.get("flow_run_id"), "status": data.get("status"),
        "trigger": (data.get("trigger") or {}).get("kind"),
        "started_at": data.get("started_at"), "finished_at": data.get("finished_at"),
        "duration_s": data.get("duration_s"), "generation": data.get("generation", 0),
        "params": data.get("params") or {},
        "tasks": {t["id"]: t["status"] for t in data.get("tasks") or ()},
    }


# --- logs --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LogView:
    """A run's log: the stored one (`running` False) or the live output so far."""

    run_id: str
    text: str
    running: bool


def _stored_log(results: Results, run_id: str) -> tuple[RunRecord, str] | None:
    if results.store.head() is None:
        return None
    try:
        return results.store.read_run(run_id), results.store.read_log(run_id)
    except RepositoryError:
        return None


def live_log_path(state_dir: Path, run_id: str) -> Path:
    """`<state_dir>/live/<run_id>.log`, appended to by the daemon while the run is active."""
    return Path(state_dir) / STATE_LIVE / f"{run_id}.log"


def pending_runs(state_dir: Path | None) -> set[str]:
    """Run ids the daemon of `state_dir` reports as queued or running (status.json)."""
    path = Path(state_dir) / STATE_STATUS if state_dir else None
    if path is None or not path.is_file():
        return set()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return set()
    return set(data.get("running") or []) | set(data.get("queued") or [])


def _unknown_run(results: Results, run_id: str, state_dir: Path | None) -> UnknownRun:
    where = f" and none running in {state_dir}" if state_dir else ""
    return UnknownRun(f"no run {run_id!r} on the results branch {results.branch!r} of "
                      f"{results.root}{where}; list run ids with `fastflow history NAME`")


def read_log(results: Results, run_id: str, state_dir: Path | None = None) -> LogView:
    """The stored log of `run_id`, else (still running) its live output so far."""
    run_month(run_id)
    stored = _stored_log(results, run_id)
    if stored is not None:
        return LogView(run_id, stored[1], False)
    live = live_log_path(state_dir, run_id) if state_dir else None
    if live is not None and live.is_file():
        return LogView(run_id, live.read_text(encoding="utf-8", errors="replace"), True)
    if results.store.head() is None:
        results.require_branch()
    raise _unknown_run(results, run_id, state_dir)


def _read_lines(path: Path, offset: int) -> tuple[bytes, int] | None:
    """Complete lines of `path` from byte `offset` (a half-written last line waits); None
    when the file does not exist."""
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            data = fh.read()
    except FileNotFoundError:
        return None
    end = data.rfind(b"\n") + 1
    return data[:end], offset + end


def _remainder(record: RunRecord, stored: str, printed: bytes, offset: int) -> str:
    """The part of the stored log not yet printed from the live file (`printed` holds the last
    bytes shown, ending at byte `offset` of the live file)."""
    data = stored.encode("utf-8")
    tail = printed[-4096:]
    if not record.log.truncated and data.startswith(tail, offset - len(tail)):
        return data[offset:].decode("utf-8", errors="replace")
    last = printed.rstrip(b"\n").rsplit(b"\n", 1)[-1] + b"\n" if printed else b""
    at = data.rfind(last) if last else -1
    if at >= 0:  # the cap dropped lines in the middle: resume after the last line shown
        return data[at + len(last):].decode("utf-8", errors="replace")
    return data.decode("utf-8", errors="replace")


def follow_log(results: Results, run_id: str, state_dir: Path, *,
               clock: Callable[[], datetime], sleep: Callable[[float], None] = time.sleep,
               poll_s: float = 0.25, settle_s: float = RECORD_SETTLE_S) -> Iterator[str]:
    """Yield the output of `run_id` as it comes: the live file while the run is active, then,
    once its record is on the branch, whatever the live file had not shown yet. A finished run
    yields its stored log at once. `UnknownRun` when it is neither recorded, live nor queued."""
    run_month(run_id)
    live = live_log_path(state_dir, run_id)
    printed, offset, seen_head, gone_at, seen_live = b"", 0, None, None, False
    while True:
        head = results.store.head()
        stored = _stored_log(results, run_id) if head != seen_head else None
        seen_head = head
        if stored is not None:
            # The record is committed before the live file is deleted, so a live file that is
            # still there is complete; once it is gone, the stored log has the rest.
            rest = _read_lines(live, offset)
            text = rest[0].decode("utf-8", errors="replace") if rest is not None else \
                _remainder(stored[0], stored[1], printed, offset)
            if text:
                yield text
            return
        chunk = _read_lines(live, offset)
        if chunk is not None:
            gone_at, seen_live = None, True
            if chunk[0]:
                printed = (printed + chunk[0])[-65536:]
                offset = chunk[1]
                yield chunk[0].decode("utf-8", errors="replace")
        elif not seen_live and run_id in pending_runs(state_dir):
            pass  # queued: the live file appears when the run starts
        elif seen_live:
            gone_at = gone_at or clock()
            if (clock() - gone_at).total_seconds() > settle_s:
                raise FastflowError(
                    f"the live output of {run_id} ended but its record did not reach the results "
                    f"branch {results.branch!r} within {settle_s:g}s; see `fastflow status`"
                )
        else:
            if head is None:
                results.require_branch()
            raise _unknown_run(results, run_id, state_dir)
        sleep(poll_s)


# --- growth ------------------------------------------------------------------------------------


def compact_results(results: Results) -> dict:
    """Rewrite the results branch to one commit holding its current tree (`ResultsStore.compact`)."""
    before = results.require_writable()
    after = results.store.compact()
    return {"branch": results.branch, "before": before, "after": after}
