"""`fastflow status | history | logs | site | results`: the read side of the results branch.

Thin commands over `fastflow.results` (`read`, `build`, `retention`): open the repository, call
one function, print (a table on a terminal, tab-separated text otherwise, JSON with --json).
"""
from __future__ import annotations

import contextlib
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import click
from rich.text import Text

from fastflow.cli.common import FastflowGroup, echo_json, host_environment, repo_option
from fastflow.cli.render import console, print_table, status_cell
from fastflow.cli.watch import DEFAULT_WATCH_INTERVAL, key_reader, watch_status
from fastflow.daemon.alert_check import heartbeat_problem, notify_stale
from fastflow.daemon.statedir import default_state_dir
from fastflow.defaults import STATE_MIRROR
from fastflow.humanize import format_elapsed, visible_controls
from fastflow.model import RunStatus
from fastflow.results.build import build_site_from_branch, make_server
from fastflow.results.read import (
    compact_results,
    follow_log,
    open_results,
    read_log,
    run_history,
    status_report,
)
from fastflow.results.retention import prune_results


def utc_now() -> datetime:
    return datetime.now(timezone.utc)  # the CLI is where the real clock is read


def state_dir_option(func):
    """`--state-dir DIR`: where `fastflow serve` keeps its local state (live logs, status.json)."""
    return click.option(
        "--state-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
        help="The daemon's state dir [default: as `fastflow serve --repo`].")(func)


def _state_dir(repo: Path, state_dir: Path | None) -> Path:
    if state_dir is None and repo.name == STATE_MIRROR:
        return repo.parent  # --repo is the daemon's mirror of a URL, inside its state dir
    return state_dir or default_state_dir(str(repo), host_environment())


# --- formatting --------------------------------------------------------------------------------


def _status_word(status: str | None) -> Text | str:
    return status_cell(RunStatus(status)) if status else "never run"


def _rate(rate: float | None) -> str:
    return "-" if rate is None else f"{rate:.0%}"


def _next(entry: dict | None) -> str:
    return f"{entry['in']} ({_seconds(entry['local'])})" if entry else "-"


def _seconds(iso_time: str) -> str:
    """An ISO time as shown in tables: to the second (the JSON keeps the full precision)."""
    return datetime.fromisoformat(iso_time).isoformat(timespec="seconds")


def _daemon_line(daemon: dict | None) -> str:
    if daemon is None:
        return "daemon: no heartbeat recorded"
    if daemon.get("stopped_at"):
        return (f"daemon: stopped at {_seconds(daemon['stopped_at'])} (`fastflow serve` exited cleanly; "
                f"pid {daemon['pid']})")
    state = f"stale (older than {daemon['stale_after_s']:g}s; is fastflow serve running?)" \
        if daemon["stale"] else "alive"
    lease = daemon.get("lease") or {}
    if lease.get("role") == "standby" and not daemon["stale"]:
        holder = lease.get("holder")
        held = (f"held by pid {holder['pid']} on {holder['host']} (state dir "
                f"{holder['state_dir']}), renewed {lease['renewed']}, expires {lease['expires']}"
                if holder else "not held")
        return (f"daemon: standing by (executes nothing), heartbeat {daemon['ago']}, pid "
                f"{daemon['pid']}; the lease ({lease['ref']}) is {held}; this daemon takes over "
                "when it is released or expires")
    return (f"daemon: {state}, heartbeat {daemon['ago']} ({_seconds(daemon['heartbeat'])}), pid "
            f"{daemon['pid']}, {len(daemon['running'])} running, {len(daemon['queued'])} queued")


def print_status(report: dict) -> None:
    """The status report as a table of pipelines, then problems, the daemon and notes."""
    print_table(
        ("PIPELINE", "STATUS", "LAST RUN", "FINISHED", "DURATION", "SUCCESS", "NEXT RUN"),
        [(p["name"] + ("" if p["valid"] else " (invalid)"), _status_word(p["last_status"]),
          _last_run(p),
          f"{p['last_finished']['ago']} ({_seconds(p['last_finished']['at'])})"
          if p["last_finished"] else "-",
          format_elapsed(p["last_duration_s"]), _rate(p["success_rate"]), _next(p["next_run"]))
         for p in report["pipelines"]])
    for name, messages in report["invalid"].items():
        line = f"invalid pipeline {name}: " + "; ".join(messages)
        click.echo(visible_controls(line, lines=False))
    for message in report["errors"]:
        click.echo(visible_controls(f"configuration error: {message}", lines=False))
    for name, view in (report.get("supervision") or {}).items():
        click.echo(_supervision_line(name, view))
    if report.get("notifications"):
        click.echo(_notifications_line(report["notifications"]))
    click.echo(_daemon_line(report["daemon"]))
    if report["sync"]:
        click.echo(f"last sync: {report['sync']['commit']} at {_seconds(report['sync']['at'])}")
    for note in report["notes"]:
        click.echo(f"note: {note}", err=True)


def _notifications_line(view: dict) -> str:
    """`notifications: the last 12: 11 delivered, 1 failed (the newest failed: ops at ...)`."""
    counts = ", ".join(f"{n} {outcome}" for outcome, n in sorted(view["outcomes"].items()))
    line = f"notifications: the last {view['recent']}: {counts}"
    failed = view.get("last_failed")
    if failed:
        line += (f" (the newest failed: {failed['target']}, queued {_seconds(failed['queued_at'])}"
                 + (f": {' '.join(str(failed['error']).split())}" if failed.get("error") else "")
                 + ")")
    return visible_controls(line, lines=False)


def _supervision_line(name: str, view: dict) -> str:
    """`supervised consumer: up since ..., 2 restarts in the last day, next restart ...`."""
    if view["given_up"]:
        return (f"supervised {name}: GIVEN UP {view['given_up_at']['ago']} "
                f"({_seconds(view['given_up_at']['at'])}) after {view['given_up_after']}; "
                f"restarts stopped until a push changes it or `fastflow supervise reset {name}`")
    up = view["up_since"]
    parts = [f"up since {_seconds(up['at'])} ({up['ago']})" if up else "down",
             f"{view['restarts_last_day']} restart{'s' if view['restarts_last_day'] != 1 else ''} "
             "in the last day"]
    planned = view["next_restart"]
    parts.append(f"next restart {planned['in']} ({_seconds(planned['at'])}, {planned['reason']})"
                 if planned else "no restart pending")
    return f"supervised {name}: " + ", ".join(parts)


def _last_run(row: dict) -> str:
    """The last run's id, with how it was started: `2026...-report-ab12 (webhook)`."""
    if not row["last_run_id"]:
        return "-"
    return row["last_run_id"] + (f" ({row['last_trigger']})" if row.get("last_trigger") else "")


def _trigger(trigger: dict) -> str:
    return " ".join(filter(None, (trigger["kind"], trigger["schedule_id"])))


def _error(error: dict | None) -> str:
    return f"{error['kind']}: {' '.join(error['message'].split())}" if error else "-"


# --- commands ----------------------------------------------------------------------------------


@click.command("status")
@repo_option
@state_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--watch", is_flag=True,
              help="A live view (running runs and flow tasks, queue, next runs, last results) "
                   "refreshed in place; q or Ctrl-C leaves.")
@click.option("--interval", type=click.FloatRange(min=0.2), default=DEFAULT_WATCH_INTERVAL,
              show_default=True, help="Seconds between the refreshes of --watch.")
@click.option("--check", is_flag=True,
              help="Exit 1 when the daemon's heartbeat is stale or missing, or it stopped (for "
                   "a cron job or a monitor); a stale one also sends scheduler_stale, once.")
def status(repo: Path, state_dir: Path | None, as_json: bool, check: bool,
           watch: bool, interval: float) -> None:
    """Every pipeline's last run, success rate and next run; problems; the daemon's heartbeat."""
    if watch:
        with key_reader() as read_key, contextlib.suppress(KeyboardInterrupt):
            watch_status(repo, _state_dir(repo, state_dir), clock=utc_now, console=console(),
                         read_key=read_key, interval=interval)
        return
    state = _state_dir(repo, state_dir)
    with open_results(repo, utc_now) as results:
        report = status_report(results, utc_now(), state)
    if as_json:
        echo_json(report)
    else:
        print_status(report)
    problem = heartbeat_problem(report["daemon"]) if check else None
    if problem is not None:
        for sent in notify_stale(repo, state, report["daemon"], host_environment(), utc_now()):
            click.echo(f"scheduler_stale sent to {sent.target} ({sent.to}): "
                       + ("delivered" if sent.delivered else f"failed: {sent.error}"), err=True)
        click.echo(f"check failed: {problem}", err=True)
        sys.exit(1)


@click.command("history")
@repo_option
@click.argument("name")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True,
              help="Show at most this many runs.")
@click.option("--before", metavar="RUN_ID", help="Show only runs older than RUN_ID (paging).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def history(repo: Path, name: str, limit: int, before: str | None, as_json: bool) -> None:
    """The runs of pipeline NAME, newest first, from the results branch."""
    with open_results(repo, utc_now) as results:
        found = run_history(results, name, limit, before)
    if as_json:
        echo_json(found)
        return
    print_table(("RUN ID", "STATUS", "TRIGGER", "STARTED", "DURATION", "ATTEMPTS", "EXIT", "ERROR"),
                [(r["run_id"], status_cell(RunStatus(r["status"])), _trigger(r["trigger"]),
                  _seconds(r["started_at"]) if r["started_at"] else "-",
                  format_elapsed(r["duration_s"]), r["attempts"],
                  "-" if r["exit_code"] is None else r["exit_code"], _error(r["error"]))
                 for r in found["runs"]])
    if found["older"]:
        click.echo(f"older runs: fastflow history {name} --before {found['older']}", err=True)


@click.command("logs")
@repo_option
@click.argument("run_id")
@click.option("--follow", "-f", is_flag=True,
              help="While the run is active, follow its live output until it is recorded.")
@click.option("--raw", is_flag=True,
              help="Print control characters as stored, not as visible escapes (\\x1b).")
@state_dir_option
def logs(repo: Path, run_id: str, follow: bool, raw: bool, state_dir: Path | None) -> None:
    """Print the log of RUN_ID (from the results branch, or live while it runs)."""
    state = _state_dir(repo, state_dir)

    def show(text: str) -> None:
        # A run's output must not drive the reader's terminal (clear it, set its title);
        # --raw asks for the bytes, and then click must not strip them either (color=True).
        click.echo(text if raw else visible_controls(text), nl=False, color=raw or None)

    with open_results(repo, utc_now) as results:
        if not follow:
            view = read_log(results, run_id, state)
            show(view.text)
            if view.running:
                click.echo(f"fastflow: {run_id} is still running; this is its output so far "
                           "(--follow to keep following)", err=True)
            return
        try:
            for chunk in follow_log(results, run_id, state, clock=utc_now):
                show(chunk)
        except KeyboardInterrupt:
            raise SystemExit(130) from None


@click.group("site", cls=FastflowGroup)
def site_group() -> None:
    """The static status site rendered from the results branch: build, serve."""


@site_group.command("build")
@repo_option
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="The folder to write the site into (created if needed).")
def site_build(repo: Path, out: Path) -> None:
    """Render the whole status site from the results branch into a folder."""
    with open_results(repo, utc_now) as results:
        written = build_site_from_branch(results, out, utc_now())
    click.echo(f"wrote {len(written)} files to {out} (open {out / 'index.html'})")


@site_group.command("serve")
@repo_option
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True,
              help="The port to listen on (0: any free port).")
@click.option("--host", default="127.0.0.1", show_default=True, help="The address to listen on.")
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Build into this folder instead of a temporary one.")
def site_serve(repo: Path, port: int, host: str, out: Path | None) -> None:
    """Build the status site and serve it over HTTP until Ctrl-C."""
    with tempfile.TemporaryDirectory(prefix="fastflow-site-") as scratch:
        folder = out or Path(scratch)
        with open_results(repo, utc_now) as results:
            build_site_from_branch(results, folder, utc_now())
        server = make_server(folder, host, port)
        click.echo(f"serving {folder} at http://{host}:{server.server_address[1]}/ (Ctrl-C to stop)")
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()


@click.group("results", cls=FastflowGroup)
def results_group() -> None:
    """Maintain the results branch: compact its history, prune old runs."""


@results_group.command("compact")
@repo_option
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def compact(repo: Path, yes: bool) -> None:
    """Rewrite the results branch to a single commit (its files stay; its history goes)."""
    with open_results(repo, utc_now) as results:
        results.require_branch()
        if not yes:
            click.confirm(f"Rewrite {results.branch!r} of {repo} to a single commit, dropping "
                          "its history?", abort=True)
        done = compact_results(results)
    click.echo(f"compacted {done['branch']!r}: {done['before'][:10]} -> {done['after'][:10]} "
               "(one commit; `git gc` reclaims the space)")


@results_group.command("prune")
@repo_option
@click.option("--keep-runs", type=click.IntRange(min=1), default=None,
              help="Keep this many runs per pipeline [default: retention.keep_runs].")
@click.option("--keep-days", type=click.IntRange(min=1), default=None,
              help="Keep runs of this many days [default: retention.keep_days].")
def prune(repo: Path, keep_runs: int | None, keep_days: int | None) -> None:
    """Remove runs beyond the retention of config.yaml (records, logs and run pages)."""
    with open_results(repo, utc_now) as results:
        removed = prune_results(results, utc_now(), keep_runs, keep_days)
    for name, ids in removed.items():
        click.echo(f"{name}: removed {len(ids)} run{'s' if len(ids) != 1 else ''} "
                   f"({ids[0]} .. {ids[-1]})")
    if not removed:
        click.echo("nothing to remove")


__all__ = ["history", "logs", "results_group", "site_group", "status"]
