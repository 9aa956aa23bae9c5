"""What lives where on the results branch, and the shape of `summary.json`: pure functions.

Paths (docs/results-branch.md): `runs/<pipeline>/<YYYY>/<MM>/<run_id>.json`,
`logs/<pipeline>/<YYYY>/<MM>/<run_id>.log`, `summary.json`, `badges/<pipeline>.json` (a
shields.io endpoint badge). The summary is updated one run at a time (`apply_run_to_summary`),
so recording never scans all runs; it is written one line per pipeline (`dump_summary`), so a
run's commit changes one line of the diff. `ResultsStore` (`store`) is their one writer.
"""
from __future__ import annotations

import json

from fastflow.errors import RepositoryError
from fastflow.record import RUN_ID_FORM, run_id_month

SUMMARY_PATH = "summary.json"
RECENT_MAX = 30  # runs kept per pipeline in summary.json (success rate, sparkline)
# state/supervision.json (daemon.supervision): also copied into summary.json as `supervision`
SUPERVISION_STATE = "supervision"
_COLORS = {
    "succeeded": "brightgreen", "failed": "red", "timed_out": "orange", "oom_killed": "red",
    "cancelled": "lightgrey", "lost": "yellow", "skipped": "lightgrey", "running": "blue",
    "queued": "blue",
}


def run_month(run_id: str) -> tuple[str, str, str]:
    """(YYYY, MM, rest after the timestamp) of a run id like `20261122T143000Z-report-7f3a`."""
    parts = run_id_month(run_id)
    if parts is None:
        raise RepositoryError(
            f"run id {run_id!r} does not start with a UTC timestamp like 20261122T143000Z-; "
            f"run ids must be `{RUN_ID_FORM}`"
        )
    return parts


def record_path(pipeline: str, run_id: str) -> str:
    """`runs/<pipeline>/<YYYY>/<MM>/<run_id>.json` on the results branch."""
    year, month, _ = run_month(run_id)
    return f"runs/{pipeline}/{year}/{month}/{run_id}.json"


def log_path(pipeline: str, run_id: str) -> str:
    """`logs/<pipeline>/<YYYY>/<MM>/<run_id>.log` on the results branch."""
    year, month, _ = run_month(run_id)
    return f"logs/{pipeline}/{year}/{month}/{run_id}.log"


def flow_record_path(flow: str, flow_run_id: str) -> str:
    """`flows/<flow>/<YYYY>/<MM>/<flow_run_id>.json` on the results branch."""
    year, month, _ = run_month(flow_run_id)
    return f"flows/{flow}/{year}/{month}/{flow_run_id}.json"


def badge_json(pipeline: str, status: str) -> dict:
    """A shields.io endpoint badge for a pipeline's last status."""
    return {"schemaVersion": 1, "label": pipeline, "message": status.replace("_", " "),
            "color": _COLORS.get(status, "lightgrey")}


def apply_run_to_summary(summary: dict, record: dict) -> dict:
    """Fold one run record (JSON) into `summary` in place; bounded per pipeline, order-safe."""
    pipelines = summary.setdefault("pipelines", {})
    entry = pipelines.setdefault(record["pipeline"], {"runs_recorded": 0, "recent": []})
    entry["runs_recorded"] = entry.get("runs_recorded", 0) + 1
    recent = [r for r in entry.get("recent", []) if r["run_id"] != record["run_id"]]
    recent.append({"run_id": record["run_id"], "status": record["status"],
                   "finished_at": record.get("finished_at"), "duration_s": record.get("duration_s"),
                   "trigger": (record.get("trigger") or {}).get("kind")})
    recent.sort(key=lambda r: r["run_id"])
    entry["recent"] = recent[-RECENT_MAX:]
    refresh_summary_entry(entry)
    return summary


def refresh_summary_entry(entry: dict) -> None:
    """Recompute a pipeline's last-run fields and success rate from its `recent` runs."""
    last = entry["recent"][-1] if entry["recent"] else {}
    entry.update(last_run_id=last.get("run_id"), last_status=last.get("status"),
                 last_finished_at=last.get("finished_at"), last_duration_s=last.get("duration_s"),
                 last_trigger=last.get("trigger"))  # None in summaries written before it
    counted = [r for r in entry["recent"] if r["status"] not in ("skipped", "cancelled")]
    ok = sum(r["status"] == "succeeded" for r in counted)
    entry["success_rate"] = round(ok / len(counted), 4) if counted else None


def commit_message(runs: list[dict], states: list[str]) -> str:
    """`report 2026...-report-ab12: succeeded in 12.3s`; several runs: a summary line + one each."""
    def line(r: dict) -> str:
        took = f" in {r['duration_s']:.1f}s" if r.get("duration_s") is not None else ""
        return f"{r['pipeline']} {r['run_id']}: {r['status']}{took}"

    if len(runs) == 1:
        head = line(runs[0])
        return head + (f"\n\nstate: {', '.join(states)}\n" if states else "\n")
    if not runs:
        return f"state: {', '.join(states)}\n"
    counts: dict[str, int] = {}
    for r in runs:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    parts = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    body = "\n".join(line(r) for r in runs)
    tail = f"\nstate: {', '.join(states)}" if states else ""
    return f"record {len(runs)} runs: {parts}\n\n{body}{tail}\n"


def dump_json(data: object) -> bytes:
    """Indented JSON, UTF-8, with a final newline: how records and state files are stored."""
    return (json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def dump_summary(summary: dict) -> bytes:
    """summary.json with one line per pipeline: a run's commit changes one line of the diff,
    and json's C encoder does the work (indent=2 takes the pure-Python one, ~4x slower)."""
    head = "".join(f"  {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)},\n"
                   for k, v in summary.items() if k != "pipelines")
    rows = ",\n".join(f"    {json.dumps(name, ensure_ascii=False)}: "
                      f"{json.dumps(entry, ensure_ascii=False)}"
                      for name, entry in sorted((summary.get("pipelines") or {}).items()))
    return ("{\n" + head + '  "pipelines": {\n' + rows + ("\n" if rows else "") + "  }\n}\n").encode("utf-8")
