"""The daemon's runs: queue, journal, execute from a snapshot, record, and reconcile after a crash.

Every run the daemon accepts is journalled first (`<state_dir>/active/<run_id>.json`), before it
is queued, and the journal entry is removed only after its record is journalled by the results
store. So no run is forgotten across a `kill -9`: on start, `reconcile` finds each entry and
- re-queues a run that never started (at the commit it was pinned to);
- asks the executor to re-attach a run whose container still exists, or collect its outcome
  (under a dispatcher permit, so a long run does not hold up the start; see `recovery`);
- records a run whose container vanished as `lost`.

A run executes its pipeline folder from the immutable snapshot of the folder's tree at the run's
commit (pinned while it runs, so snapshot GC leaves it alone); it waits for an in-progress
pre-heat of its pipeline, and fails fast with uv's message when the dependencies are broken.
"""
from __future__ import annotations

import json
import logging
import threading
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Callable, Mapping

from fastflow import repo as git
from fastflow.daemon.dispatcher import Dispatcher, Job, Permit
from fastflow.daemon.payloads import AcceptedRequests
from fastflow.daemon.statedir import webhook_payload_file
from fastflow.defaults import DEFAULT_LOG_CAP_BYTES, STATE_ACTIVE, STATE_LIVE
from fastflow.deploy.deployment import ActivePipeline
from fastflow.deploy.preheat import Preheater
from fastflow.errors import FastflowError, RepositoryError
from fastflow.executors.base import Executor, OutputLine, OutputSink
from fastflow.files import write_atomic
from fastflow.humanize import format_elapsed
from fastflow.model import Pipeline, RepoConfig, RunStatus
from fastflow.record import (
    Attempt,
    CommitRef,
    ErrorInfo,
    FlowTaskInput,
    LogInfo,
    RunRecord,
    Trigger,
    WebhookInput,
)
from fastflow.results.layout import log_path
from fastflow.results.store import ResultsStore
from fastflow.run.capture import LiveLog, Masker, format_line, read_log_text
from fastflow.run.recovery import (
    capped_log,
    ended_outcome,
    first_attempt_never_ran,
    recover_run,
)
from fastflow.run.runner import (
    RunOutcome,
    RunRequest,
    refuse_run,
    resolve_settings,
    run_pipeline,
)
from fastflow.secrets.runtime import requested_secrets, secrets_loader

logger = logging.getLogger(__name__)


class RunIdTaken(FastflowError):
    """A run id that is journalled or recorded already: the second run is not accepted."""


@dataclass(frozen=True)
class RunOrder:
    """A run the daemon accepted: what to run, at which commit and tree, and why."""

    run_id: str
    pipeline: str
    commit: str
    root_tree: str
    tree: str
    queued_at: datetime
    trigger: Trigger = Trigger()
    run_config_id: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    started_at: datetime | None = None
    webhook: WebhookInput | None = None  # what a webhook request gives the run
    flow: FlowTaskInput | None = None  # a flow's task: what its flow run gives it

    def to_json(self) -> dict:
        data = asdict(self)
        data.update(trigger=self.trigger.to_json(), queued_at=self.queued_at.isoformat(),
                    started_at=self.started_at.isoformat() if self.started_at else None,
                    env=dict(self.env),
                    webhook=self.webhook.to_json() if self.webhook else None,
                    flow=self.flow.to_json() if self.flow else None)
        return data

    @classmethod
    def from_json(cls, data: dict) -> "RunOrder":
        """An order as `to_json` wrote it; entries journalled before webhooks (no `webhook`,
        no `trigger.delivery_id`) read as orders without them."""
        return cls(**{
            **data,
            "trigger": Trigger.from_json(data["trigger"]),
            "queued_at": datetime.fromisoformat(data["queued_at"]),
            "started_at": datetime.fromisoformat(data["started_at"]) if data.get("started_at") else None,
            "webhook": WebhookInput.from_json(data["webhook"]) if data.get("webhook") else None,
            "flow": FlowTaskInput.from_json(data["flow"]) if data.get("flow") else None,
        })


class RunJournal:
    """`<state_dir>/active/`: one fsync'd file per accepted run until its record is stored."""

    def __init__(self, state_dir: Path) -> None:
        self.dir = Path(state_dir) / STATE_ACTIVE
        self.dir.mkdir(parents=True, exist_ok=True)

    def write(self, order: RunOrder) -> None:
        path = self.dir / f"{order.run_id}.json"
        write_atomic(path, json.dumps(order.to_json()), durable=True)

    def create(self, order: RunOrder) -> None:
        """Journal a new run; `FileExistsError` when its id is journalled already (never
        overwritten: that would forget the other run)."""
        path = self.dir / f"{order.run_id}.json"
        write_atomic(path, json.dumps(order.to_json()), durable=True, exclusive=True)

    def remove(self, run_id: str) -> None:
        (self.dir / f"{run_id}.json").unlink(missing_ok=True)

    def has(self, run_id: str) -> bool:
        return (self.dir / f"{run_id}.json").exists()

    def get(self, run_id: str) -> RunOrder | None:
        """The journalled order of `run_id`; None when there is none or it cannot be read
        (`orders` sets such an entry aside; this only looks)."""
        try:
            data = json.loads((self.dir / f"{run_id}.json").read_text(encoding="utf-8"))
            return RunOrder.from_json(data)
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None

    def orders(self) -> list[RunOrder]:
        """Every journalled run; an entry that cannot be read is set aside in `active/bad/`
        with a warning (kept for a person to look at, never read again at each start)."""
        found = []
        for path in sorted(self.dir.glob("*.json")):
            try:
                found.append(RunOrder.from_json(json.loads(path.read_text(encoding="utf-8"))))
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                bad = self.dir / "bad"
                bad.mkdir(exist_ok=True)
                path.replace(bad / path.name)
                logger.warning("run journal entry %s cannot be read (%s: %s); set aside in %s/",
                               path.name, type(exc).__name__, exc, bad)
            except FileNotFoundError:
                continue
        return found


class LiveLogs:
    """`<state_dir>/live/<run_id>.log`: the (masked) output of running runs, for `logs --follow`."""

    def __init__(self, state_dir: Path) -> None:
        self.dir = Path(state_dir) / STATE_LIVE
        self.dir.mkdir(parents=True, exist_ok=True)

    def sink(self, run_id: str, cap_bytes: int = DEFAULT_LOG_CAP_BYTES) -> LiveLog:
        """The live log of `run_id`, capped on disk at about twice `cap_bytes` (head and tail
        kept, see `run.capture.LiveLog`); a write that fails (a full disk) is logged once and
        costs only the live copy of the line."""
        def failed(exc: OSError) -> None:
            logger.warning("run %s: its live log (%s) misses lines: %s; the run and its "
                           "recorded log go on", run_id, self.dir, exc)

        return LiveLog(self.dir / f"{run_id}.log", cap_bytes, on_error=failed)

    def remove(self, run_id: str) -> None:
        (self.dir / f"{run_id}.log").unlink(missing_ok=True)


class _FinishFaults:
    """The faults met while finishing runs, each logged once per (run, step) with the run id
    and no traceback (that goes to the debug log): a full disk must not flood the log."""

    AFTER = {
        "ended": "its schedule may wait for it until the daemon restarts",
        "pages": "recorded without its site pages; the next run of the pipeline renders them",
        "cleanup": "recorded; its run journal entry is dropped at the next start",
        "payload": "recorded; its webhook payload is removed at the next start",
        "before_record": "recorded without its downstream runs: none of them starts",
        "after_record": "recorded; its downstream runs were not all started",
        "started": "it runs; its supervision does not know it is up",
        "event": "it runs; the event is told with its record instead",
    }

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._seen: set[tuple[str, str]] = set()

    def log(self, run_id: str, step: str, exc: BaseException, then: str) -> None:
        with self.lock:
            if (run_id, step) in self._seen:
                return
            self._seen.add((run_id, step))
        what = {"record": "cannot be recorded", "commit": "not committed to the results branch"
                }.get(step, f"failed at step {step!r}")
        logger.error("run %s: %s: %s: %s; %s", run_id, what, type(exc).__name__, exc, then)
        logger.debug("run %s: %s", run_id, step, exc_info=exc)

    def solved(self, run_id: str, step: str) -> None:
        with self.lock:
            if (run_id, step) not in self._seen:
                return
            self._seen.discard((run_id, step))
        logger.warning("run %s: %s now done", run_id,
                       "recording" if step == "record" else "committing")


def _log_cap(context: LaunchContext | None) -> int:
    """The log cap of a run's configuration (the default when it is no longer known)."""
    return context.config.log_cap_bytes if context else DEFAULT_LOG_CAP_BYTES


@dataclass
class LaunchContext:
    """What a run needs from the daemon at the moment it is queued."""

    active: ActivePipeline
    config: RepoConfig


class RunLauncher:
    """Accepts run orders, executes them through the dispatcher, records their outcomes."""

    def __init__(self, *, state_dir: Path, repository: git.GitRepo, snapshots: Path,
                 store: ResultsStore, executor: Executor, preheater: Preheater,
                 dispatcher: Dispatcher, clock: Callable[[], datetime],
                 environ: Mapping[str, str],
                 on_finished: Callable[[RunRecord, str], Mapping[str, bytes | None]] | None = None,
                 after_record: Callable[[RunRecord], None] | None = None,
                 on_ended: Callable[[str], None] | None = None,
                 before_record: Callable[[RunRecord], RunRecord] | None = None,
                 on_started: Callable[[RunOrder], None] | None = None,
                 on_event: Callable[[RunOrder, Mapping], None] | None = None,
                 requests: AcceptedRequests | None = None) -> None:
        self.repository = repository
        self.requests = requests  # the webhook requests' bodies (`daemon.payloads`)
        self.snapshots = snapshots
        self.store = store
        self.executor = executor
        self.preheater = preheater
        self.dispatcher = dispatcher
        self.clock = clock
        self.environ = dict(environ)
        self.state_dir = Path(state_dir)
        self.journal = RunJournal(state_dir)
        self.live = LiveLogs(state_dir)
        self.on_finished = on_finished  # returns extra files (site pages) for the record commit
        self.before_record = before_record  # e.g. deciding downstream runs (idempotent)
        self.after_record = after_record  # e.g. downstream triggers
        self.on_ended = on_ended  # a run ended (recorded or not yet): overlap, waiting runs
        self.on_started = on_started  # a run started (its start journalled): supervision
        self.on_event = on_event  # a running run's event (a soft-limit excess): notifications
        self._faults = _FinishFaults()
        self._unrecorded: dict[str, tuple[RunRecord, str, str | None]] = {}
        self._flush_due: str | None = None  # the run whose commit failed, retried each round
        self._contexts: dict[str, LaunchContext] = {}
        self._held: dict[str, tuple[RunOrder, LaunchContext]] = {}

    def submit(self, order: RunOrder, context: LaunchContext,
               renew: Callable[[], str] | None = None, *, hold: bool = False) -> RunOrder:
        """Journal `order`, then queue it; it runs when the dispatcher allows. Returns the order
        as journalled. With `hold`, it is only journalled: `release(run_id)` queues it (a
        downstream run, once its parent's record is stored); a daemon that stops or dies
        before then finds it in the journal at its next start and queues it there.

        A run id is never reused: when `order.run_id` is journalled or recorded already, a
        random id is replaced by `renew()` (drawn again until free); a deterministic one (a
        schedule slot, a remote request: `renew` is None) raises `RunIdTaken`.
        """
        for _ in range(100):
            try:
                if self.store_has(order.run_id, order.pipeline):
                    raise FileExistsError(order.run_id)
                self.journal.create(order)
                break
            except FileExistsError:
                if renew is None:
                    raise RunIdTaken(f"run {order.run_id} is journalled or recorded already; "
                                     "a run id is never used twice") from None
                logger.info("run id %s is taken; drawing another", order.run_id)
                order = replace(order, run_id=renew())
        else:
            raise RunIdTaken(f"no free run id for {order.pipeline!r} after 100 draws")
        if hold:
            self._held[order.run_id] = (order, context)
        else:
            self._queue(order, context)
        logger.info("run %s: queued (%s, %s)", order.run_id, order.pipeline, order.trigger.kind)
        return order

    def release(self, run_id: str) -> bool:
        """Queue the run `submit(..., hold=True)` journalled; False when it is not held here
        (e.g. the start after a crash queued it already)."""
        held = self._held.pop(run_id, None)
        if held is not None:
            self._queue(*held)
        return held is not None

    def _queue(self, order: RunOrder, context: LaunchContext) -> None:
        self._contexts[order.run_id] = context
        job = Job(run_id=order.run_id, pipeline=order.pipeline,
                  max_instances=context.active.pipeline.daemon.max_instances,
                  execute=lambda permit, o=order: self._execute(o, permit))
        self.dispatcher.submit(job)

    # --- one run ------------------------------------------------------------------------

    def _execute(self, order: RunOrder, permit: Permit) -> None:
        context = self._contexts.pop(order.run_id)
        order = replace(order, started_at=self.clock())
        try:
            self.journal.write(order)
        except OSError as exc:  # a full state dir: run all the same (the entry says queued)
            logger.warning("run %s: its start is not journalled (%s); it runs all the same",
                           order.run_id, exc)
        logger.info("run %s: started", order.run_id)
        if self.on_started is not None:
            self._guard(order.run_id, "started", lambda: self.on_started(order))
        try:
            if order.webhook is not None and self.requests is not None:  # its body
                self.requests.materialize(order.run_id, order.webhook)
            outcome = self._run(order, context, permit, permit.cancel)
        except Exception as exc:  # noqa: BLE001 - e.g. no room for its snapshot: record why
            logger.error("run %s: could not run: %s: %s", order.run_id, type(exc).__name__, exc)
            logger.debug("run %s", order.run_id, exc_info=exc)
            outcome = self._not_run(order, exc)
        self.finish(order, outcome)

    def _not_run(self, order: RunOrder, exc: Exception) -> RunOutcome:
        """The `failed` outcome of a run the daemon could not execute (a full state dir, a
        snapshot that cannot be written): its record says why, instead of nothing at all."""
        now = self.clock()
        message = f"the daemon could not run it: {exc}"
        record = RunRecord(
            run_id=order.run_id, pipeline=order.pipeline, status=RunStatus.FAILED,
            run_config=order.run_config_id, trigger=order.trigger,
            commit=CommitRef(order.commit, order.tree), error=ErrorInfo("daemon", message),
            queued_at=order.queued_at, started_at=order.started_at, finished_at=now,
            duration_s=round((now - order.started_at).total_seconds(), 3) if order.started_at
            else None, log=LogInfo(log_path(order.pipeline, order.run_id)),
        )
        text = format_line(OutputLine("runner", message, now)) + "\n"
        return RunOutcome(replace(record, log=replace(record.log, bytes=len(text.encode()))), text)

    def _run(self, order: RunOrder, context: LaunchContext, permit: Permit,
             cancel: threading.Event) -> RunOutcome:
        pipeline = context.active.pipeline
        sink = self._telling(order, self.live.sink(order.run_id, context.config.log_cap_bytes))
        with git.pin_snapshot(self.snapshots, order.tree):
            workdir = git.snapshot_tree(self.repository, order.tree, "", self.snapshots)
            request = self._request(order, context, pipeline, workdir)
            broken = self.preheater.wait_ready(pipeline.name, cancel) if pipeline.requirements else None
            if broken is not None:
                return refuse_run(request, ErrorInfo("dependencies", broken), clock=self.clock,
                                  sink=sink, run_id=order.run_id)

            def wait(seconds: float, event: threading.Event) -> bool:
                with permit.released():  # a retry wait gives the permit back
                    return event.wait(seconds)

            return run_pipeline(request, self.executor, clock=self.clock, wait=wait, sink=sink,
                                cancel=cancel, run_id=order.run_id)

    def _telling(self, order: RunOrder, sink: OutputSink) -> OutputSink:
        """`sink`, also handing each line's event (`OutputLine.event`) to `on_event`."""
        if self.on_event is None:
            return sink

        def telling(line: OutputLine) -> None:
            sink(line)
            if line.event is not None:
                self._guard(order.run_id, "event", lambda: self.on_event(order, line.event))
        return telling

    def _request(self, order: RunOrder, context: LaunchContext, pipeline: Pipeline,
                 workdir: Path) -> RunRequest:
        loader = self._secrets_loader(order, context.config, pipeline)
        return RunRequest(
            pipeline=pipeline,
            run_config_id=order.run_config_id,
            trigger=order.trigger,
            trigger_env=dict(order.env),
            commit=CommitRef(order.commit, order.tree),
            log_cap_bytes=context.config.log_cap_bytes,
            grace_period=context.config.grace_period,
            queued_at=order.queued_at,
            workdir=workdir,
            log_path=log_path(pipeline.name, order.run_id),
            secrets_loader=loader,
            webhook=order.webhook,
            flow=order.flow,
        )

    def finish(self, order: RunOrder, outcome: RunOutcome) -> None:
        """Store the run's record and log (with the pages it changes), then drop its journal."""
        self.store_record(outcome.record, outcome.log_text, order.run_id)

    def store_record(self, record: RunRecord, log_text: str, journalled: str | None = None) -> None:
        """Commit `record` with its log and the site pages it changes; drop the journal entry
        `journalled` (the run's id) when there is one; then the `after_record` hook. The
        `before_record` hook comes first and may complete the record (downstream decisions); it
        must be idempotent, as a record kept for a full disk passes here again.

        Never raises, never wedges (see `_FinishFaults`): pages that fail to render are left
        out (the next run of the pipeline renders them again); a record that cannot be
        journalled (a full disk) stays in memory, its run journal entry kept, and is retried
        every round (`retry_unrecorded`); a commit that fails is retried from the store's
        journal. The run counts as ended at once (`on_ended`: overlap, waiting runs) and the
        dispatcher's permit and instance are freed when this returns. Each fault is logged once,
        with the run id.
        """
        if self.before_record is not None:
            decided = self._guard(record.run_id, "before_record", lambda: self.before_record(record))
            record = decided if isinstance(decided, RunRecord) else record
        if self.on_ended is not None:
            self._guard(record.run_id, "ended", lambda: self.on_ended(record.run_id))
        pages = self._guard(record.run_id, "pages", lambda: self.on_finished(record, log_text)
                            if self.on_finished else {})
        try:
            self.store.record_run(record, log_text, extra_files=pages or {}, commit=False)
        except Exception as exc:  # noqa: BLE001 - a full disk, a broken store: keep it, retry
            with self._faults.lock:
                first = record.run_id not in self._unrecorded
                self._unrecorded[record.run_id] = (record, log_text, journalled)
            if first:
                self._faults.log(record.run_id, "record", exc,
                                 "kept in memory and in the run journal; retried every round")
            return
        self._faults.solved(record.run_id, "record")
        if record.trigger.kind == "webhook":  # refused requests too: they have no journal entry
            self._guard(record.run_id, "payload", lambda: self._drop_payload(record.run_id))
        if journalled is not None:  # after the payload: until then it reads as not recorded
            self._guard(record.run_id, "cleanup", lambda: self._forget(journalled))
        self._flush(record.run_id)
        logger.info("run %s: %s in %s", record.run_id, record.status.value,
                    format_elapsed(record.duration_s))
        if self.after_record is not None:
            self._guard(record.run_id, "after_record", lambda: self.after_record(record))

    def _drop_payload(self, run_id: str) -> None:
        """A recorded webhook run's body goes: its payload file, and it is settled in the
        accepted requests."""
        webhook_payload_file(self.state_dir, run_id).unlink(missing_ok=True)
        if self.requests is not None:
            self.requests.settle(run_id)

    def _forget(self, run_id: str) -> None:
        self.journal.remove(run_id)
        self.live.remove(run_id)

    def _flush(self, run_id: str) -> None:
        """Commit what the store journalled; on failure it stays journalled for the next round."""
        try:
            self.store.flush()
        except Exception as exc:  # noqa: BLE001 - the record is journalled: nothing is lost
            self._flush_due = run_id
            self._faults.log(run_id, "commit", exc, "journalled; committed at a later round")
            return
        self._flush_due = None
        self._faults.solved(run_id, "commit")

    def _guard(self, run_id: str, step: str, action: Callable[[], object]) -> object:
        try:
            result = action()
        except Exception as exc:  # noqa: BLE001 - one step's fault never stops the others
            self._faults.log(run_id, step, exc, _FinishFaults.AFTER[step])
            return None
        return result

    def retry_unrecorded(self) -> int:
        """Try again to store the records that could not be stored (and to commit what the
        store journalled, after a failed commit); returns how many records are still waiting.
        Called by the daemon every round."""
        with self._faults.lock:
            waiting = list(self._unrecorded.values())
            self._unrecorded.clear()
        for record, log_text, journalled in waiting:
            self.store_record(record, log_text, journalled)
        if self._flush_due is not None and not waiting:
            self._flush(self._flush_due)
        with self._faults.lock:
            return len(self._unrecorded)

    @property
    def unrecorded(self) -> list[str]:
        """Run ids whose records wait in memory to be stored (e.g. the state dir is full)."""
        with self._faults.lock:
            return sorted(self._unrecorded)

    def recover_webhooks(self, journalled: list[RunOrder]) -> list[dict]:
        """At start, given the run journal as read (`journalled`): the accepted webhook
        requests (`AcceptedRequests.recover`) whose runs are recorded are settled, payload
        files of runs recorded are removed, and the requests to hand to the daemon again
        (neither journalled nor recorded) are returned."""
        if self.requests is None:
            return []
        started = {o.run_id: o.started_at is not None for o in journalled}
        return self.requests.recover(started, lambda run_id: self.store_has(run_id, None))

    def running_runs(self) -> list[tuple[str, str, datetime]]:
        """(run id, pipeline, started at) of the runs executing now."""
        found = []
        for job in self.dispatcher.running():
            order = self.journal.get(job.run_id)
            if order is not None and order.started_at is not None:
                found.append((order.run_id, order.pipeline, order.started_at))
        return found

    def slot_started(self, run_id: str, pipeline: str) -> bool:
        """Whether the run `run_id` (a schedule slot's) started: recorded, or journalled and
        started."""
        order = self.journal.get(run_id)
        if order is not None:
            return order.started_at is not None
        return self.store_has(run_id, pipeline)

    def knows(self, run_id: str, pipeline: str) -> bool:
        """True when a run with this id is journalled (queued or running) or already recorded:
        a deterministic id (a schedule slot, a remote request) must never run twice."""
        return self.journal.has(run_id) or self.store_has(run_id, pipeline)

    # --- after a crash --------------------------------------------------------------------

    def reconcile(self, context_for: Callable[[RunOrder], LaunchContext | None],
                  left: list[RunOrder] | None = None) -> list[str]:
        """Handle the runs a previous daemon left in the journal (see the module doc).

        `context_for(order)` gives the pipeline as of the order's commit (None when it cannot
        run any more). `left`: the journal as read before this daemon queued anything (its
        first sync's run_on_change runs are its own, never reconciled); default the journal
        now. Returns a line per run saying what became of it.
        """
        notes = []
        for order in self.journal.orders() if left is None else left:
            if self.store_has(order.run_id, order.pipeline):
                if order.webhook is not None:  # the daemon died between record and cleanup
                    self._drop_payload(order.run_id)
                self.journal.remove(order.run_id)
                notes.append(f"{order.run_id}: already recorded")
                continue
            context = context_for(order)
            if order.started_at is None and context is not None:
                self._queue(order, context)
                notes.append(f"{order.run_id}: queued again (never started)")
                continue
            if getattr(self.executor, "can_reattach", False):
                self._queue_reattach(order, context)
                notes.append(f"{order.run_id}: re-attaching to its container")
                continue
            outcome = self._ended(order, context) or self._lost(order, _log_cap(context))
            self.finish(order, outcome)
            notes.append(f"{order.run_id}: {outcome.record.status.value}")
        return notes

    def _queue_reattach(self, order: RunOrder, context: LaunchContext | None) -> None:
        """Follow a run a dead daemon left under a permit of its own, at the head of the queue:
        its container runs already, and following it may take as long as the run."""
        max_instances = context.active.pipeline.daemon.max_instances if context else 1

        def execute(permit: Permit) -> None:
            outcome = self._recover(order, context, permit.cancel)
            live = self.live.dir / f"{order.run_id}.log"
            if outcome is None and context is not None \
                    and first_attempt_never_ran(read_log_text(live)):
                logger.info("run %s: attempt 1 never ran (the daemon stopped before its "
                            "container started); it starts now", order.run_id)
                self._contexts[order.run_id] = context
                self._execute(replace(order, started_at=None), permit)
                return
            self.finish(order, outcome or self._lost(order, _log_cap(context)))

        self.dispatcher.submit(Job(run_id=order.run_id, pipeline=order.pipeline,
                                   max_instances=max_instances, execute=execute), first=True)

    def _base(self, order: RunOrder, context: LaunchContext | None):
        """What the journal knows of a run a dead daemon left: its record so far, its
        pipeline and settings (None when no longer known)."""
        pipeline = context.active.pipeline if context else None
        try:
            settings = resolve_settings(pipeline, order.run_config_id) if pipeline else None
        except FastflowError:
            settings = None
        base = RunRecord(
            run_id=order.run_id, pipeline=order.pipeline, status=RunStatus.RUNNING,
            run_config=order.run_config_id, trigger=order.trigger,
            commit=CommitRef(order.commit, order.tree), queued_at=order.queued_at,
            started_at=order.started_at, log=LogInfo(log_path(order.pipeline, order.run_id)),
        )
        return base, pipeline, settings

    def _ended(self, order: RunOrder, context: LaunchContext | None) -> RunOutcome | None:
        """A run without a re-attachable attempt whose last attempt the live log shows ended
        (the daemon died before recording it, or waiting to retry): that outcome."""
        base, pipeline, settings = self._base(order, context)
        live = self.live.dir / f"{order.run_id}.log"
        return ended_outcome(
            base, read_log_text(live), live_sink=self.live.sink(order.run_id), pipeline=pipeline,
            settings=settings, clock=self.clock, live_path=live,
            cap_bytes=context.config.log_cap_bytes if context else DEFAULT_LOG_CAP_BYTES)

    def _recover(self, order: RunOrder, context: LaunchContext | None,
                 cancel: threading.Event) -> RunOutcome | None:
        base, pipeline, settings = self._base(order, context)
        cap = context.config.log_cap_bytes if context else DEFAULT_LOG_CAP_BYTES
        return recover_run(
            self.executor, base, live_path=self.live.dir / f"{order.run_id}.log",
            live_sink=self._telling(order, self.live.sink(order.run_id, cap)),  # its events too
            masker=self._masker(order, context),
            pipeline=pipeline, settings=settings, clock=self.clock, cancel=cancel, cap_bytes=cap,
        )

    def _secrets_loader(self, order: RunOrder, config: RepoConfig, pipeline: Pipeline):
        """What decrypts the secrets of run `order` (its pipeline's and its run
        configuration's) from the snapshot of its commit; None when it asks for none."""
        if not requested_secrets(pipeline, order.run_config_id):
            return None
        root = git.snapshot_tree(self.repository, order.root_tree, "", self.snapshots)
        return secrets_loader(root, config, pipeline, self.environ, order.run_config_id)

    def _masker(self, order: RunOrder, context: LaunchContext | None) -> Masker | None:
        """The masker of a re-attached run's output: the secrets of its pipeline and run
        configuration, loaded again; None (withhold the output) when they cannot be, or the
        pipeline is unknown."""
        if context is None:
            return None
        try:
            loader = self._secrets_loader(order, context.config, context.active.pipeline)
            return Masker(loader().values() if loader else ())
        except FastflowError as exc:
            logger.warning("run %s: its secrets cannot be loaded to mask its output: %s",
                           order.run_id, exc)
            return None

    def store_has(self, run_id: str, pipeline: str | None) -> bool:
        """Whether `run_id` is recorded (`pipeline` None: derived from the id)."""
        try:
            self.store.read_run(run_id, pipeline=pipeline)
        except RepositoryError:  # the store's "no such run"
            return False
        return True

    def _lost(self, order: RunOrder, cap_bytes: int = DEFAULT_LOG_CAP_BYTES) -> RunOutcome:
        now = self.clock()
        started = order.started_at
        message = ("the daemon stopped while the run was active, and its process or container "
                   "is gone; its outcome is unknown")
        attempts = (Attempt(1, started, None, None, RunStatus.LOST),) if started else ()
        record = RunRecord(
            run_id=order.run_id, pipeline=order.pipeline, status=RunStatus.LOST,
            run_config=order.run_config_id, trigger=order.trigger,
            commit=CommitRef(order.commit, order.tree), error=ErrorInfo("lost", message),
            queued_at=order.queued_at, started_at=started, finished_at=now,
            duration_s=round((now - started).total_seconds(), 3) if started else None,
            attempts=attempts,
        )
        capture = capped_log(self.live.dir / f"{order.run_id}.log", cap_bytes)  # streamed
        capture.emit(message, now)
        text = capture.text()
        record = replace(record, log=LogInfo(log_path(order.pipeline, order.run_id),
                                             len(text.encode("utf-8")), capture.truncated))
        return RunOutcome(record, text)
