"""Run a Jupyter notebook (`main.ipynb`) as a script: `python notebook.py main.ipynb`.

Standalone on purpose: it runs inside the pipeline's own environment (`uv run`, on the host or
in a container), so it imports nothing from Fast-Flow and nothing outside the standard library.

- Code cells run in order, in one shared namespace (`__name__ == "__main__"`), like "Run All".
  Markdown and raw cells are skipped.
- Each cell starts with a header line on stdout, `[fastflow] cell 2 (tags: fetch)`; the cell's
  printed output follows, and, as in Jupyter, the value of a final bare expression is printed
  (its `repr`) unless it is None.
- IPython syntax (lines starting with `%` or `!`) is not Python: such lines are skipped with a
  warning on stderr.
- Cell retries: the env var `FASTFLOW_NOTEBOOK_CELLS` holds the `cells` field of pipeline.json as
  resolved JSON, `{"<key>": {"retry_attempts": n, "retry_delay": seconds}}`, where a key is a cell
  index (0-based position in the notebook's cell list, markdown cells included, as in nbformat),
  `code:<i>` (the i-th code cell, 0-based, markdown and raw cells not counted: Fast-Flow's list
  form), a cell `id`, or a tag of the cell. Index beats `code:<i>` beats id beats tag; with several
  tags, the first listed that has a policy applies. A cell's own `metadata.fastflow` object
  (Fast-Flow's override) then replaces `retries` and/or `delay_seconds` of that policy; with no
  policy from pipeline.json, the override starts from Fast-Flow's defaults, 0 retries, 1 s apart.
  An invalid override is reported, naming the cell, and the notebook exits 1 before any cell runs.
  A failing cell is run again up to that many more times, that many seconds apart, in the same
  namespace (whatever the failed try changed stays changed).
- A cell that still fails prints its traceback on stderr and a last line
  `[fastflow] cell 2 (tags: fetch) failed after 3 attempt(s): ConnectionError: ...`, and the
  process exits with code 1. `SystemExit` raised by a cell ends the notebook with that code.
"""
from __future__ import annotations

import ast
import json
import linecache
import os
import sys
import time
import traceback

CELLS_ENV = "FASTFLOW_NOTEBOOK_CELLS"


def load_cells(path: str) -> list[dict]:
    """The cells of the notebook at `path` (nbformat 4), or exit 1 with a clear message."""
    try:
        with open(path, encoding="utf-8") as handle:
            notebook = json.load(handle)
    except (OSError, ValueError) as exc:
        sys.exit(f"[fastflow] cannot read notebook {path}: {exc}")
    cells = notebook.get("cells") if isinstance(notebook, dict) else None
    if not isinstance(cells, list):
        sys.exit(f"[fastflow] {path} is not a Jupyter notebook (no 'cells' list)")
    return cells


def cell_source(cell: dict) -> str:
    """A cell's source as one string (nbformat allows a string or a list of lines)."""
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else str(source)


def cell_tags(cell: dict) -> list[str]:
    tags = (cell.get("metadata") or {}).get("tags") or []
    return [str(t) for t in tags] if isinstance(tags, list) else []


# Fast-Flow's defaults for a cell that its `cells` list does not cover (a metadata override
# that sets only `retries` waits this long between tries, as in Fast-Flow).
FASTFLOW_CELL_DEFAULT = (0, 1.0)
# The bounds pipeline.json gives the same values (docs/pipeline-json.md, "Bounds").
MAX_RETRIES = 1_000_000
MAX_SECONDS = 3_155_760_000


def cell_policy(index: int, code_index: int, cell: dict, config: dict) -> tuple[int, float] | None:
    """(retry_attempts, retry_delay) that pipeline.json gives a cell: by position index, then
    `code:<i>`, then id, then tag; None when no key matches."""
    keys = [str(index), f"code:{code_index}"]
    if cell.get("id"):
        keys.append(str(cell["id"]))
    keys += cell_tags(cell)
    for key in keys:
        policy = config.get(key)
        if isinstance(policy, dict):
            return int(policy.get("retry_attempts", 0)), float(policy.get("retry_delay", 0))
    return None


def _show(value: object) -> str:
    """A value as the notebook's JSON spells it, for messages."""
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        return repr(value)


def metadata_override(cell: dict) -> tuple[dict, list[str], list[str]]:
    """Fast-Flow's per-cell override `metadata.fastflow`: ({"retries"?, "delay_seconds"?},
    problems, warnings), each message `<field>: <text>` with the field after `metadata.fastflow`
    (empty for the object itself)."""
    metadata = cell.get("metadata")
    data = metadata.get("fastflow") if isinstance(metadata, dict) else None
    if data is None:
        return {}, [], []
    if not isinstance(data, dict):
        return {}, [f': {_show(data)} is not an object; write {{"retries": 2, "delay_seconds": 1}}'], []
    found: dict = {}
    problems: list[str] = []
    retries = data.get("retries")
    if "retries" in data:
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            problems.append(f".retries: {_show(retries)} is not a whole number >= 0; "
                            "use a number such as 2 (without quotes)")
        elif retries > MAX_RETRIES:
            problems.append(f".retries: {retries} is above the maximum of 1,000,000; "
                            "use a smaller number")
        else:
            found["retries"] = retries
    delay = data.get("delay_seconds")
    if "delay_seconds" in data:
        if (isinstance(delay, bool) or not isinstance(delay, (int, float)) or delay != delay
                or delay < 0):
            problems.append(f".delay_seconds: {_show(delay)} is not a number of seconds >= 0; "
                            "use a number such as 1 (without quotes)")
        elif delay > MAX_SECONDS:
            problems.append(f".delay_seconds: {_show(delay)} is above the maximum of 3155760000 "
                            "seconds (100 years); use a smaller number")
        else:
            found["delay_seconds"] = float(delay)
    warnings = [f".{key}: unknown key, ignored; only \"retries\" and \"delay_seconds\" are read"
                for key in data if key not in ("retries", "delay_seconds")]
    return found, problems, warnings


def retry_plans(path: str, cells: list[dict], config: dict) -> dict[int, tuple[int, float]] | None:
    """(retries, delay) of every code cell by position index, pipeline.json's policy with the
    cell's `metadata.fastflow` over it; None (after printing every problem) when an override is
    invalid, so that nothing runs."""
    plans: dict[int, tuple[int, float]] = {}
    problems: list[str] = []
    code_index = -1
    for index, cell in enumerate(cells):
        if not isinstance(cell, dict) or cell.get("cell_type") != "code":
            continue
        code_index += 1  # every code cell counts, as in Fast-Flow, even an empty one
        base = cell_policy(index, code_index, cell, config)
        override, found, warnings = metadata_override(cell)
        where = f"{path}: cells[{index}] (code cell {code_index}).metadata.fastflow"
        problems += [where + problem for problem in found]
        for warning in warnings:
            print(f"[fastflow] warning: {where}{warning}", file=sys.stderr)
        if not override:
            plans[index] = base or (0, 0.0)
            continue
        retries, delay = base or FASTFLOW_CELL_DEFAULT
        plans[index] = (override.get("retries", retries), override.get("delay_seconds", delay))
    for problem in problems:
        print(f"[fastflow] {problem}", file=sys.stderr)
    if problems:
        print(f"[fastflow] {path}: no cell was run; fix the cell metadata (in Jupyter: "
              "the cell's metadata editor) and run again", file=sys.stderr)
        return None
    return plans


def strip_magics(source: str, label: str) -> str:
    """`source` without IPython-only lines (`%magic`, `!shell`), warning for each one."""
    kept = []
    for line in source.splitlines():
        if line.lstrip().startswith(("%", "!")):
            print(f"[fastflow] {label}: skipping IPython-only line: {line.strip()}", file=sys.stderr)
            kept.append("")  # keep line numbers of tracebacks right
        else:
            kept.append(line)
    return "\n".join(kept)


def run_source(source: str, filename: str, namespace: dict) -> None:
    """Execute a cell; print the repr of a final bare expression, as Jupyter displays it."""
    tree = ast.parse(source, filename=filename)
    last = tree.body[-1] if tree.body and isinstance(tree.body[-1], ast.Expr) else None
    if last is not None:
        tree.body = tree.body[:-1]
    exec(compile(tree, filename, "exec"), namespace)
    if last is not None:
        value = eval(compile(ast.Expression(last.value), filename, "eval"), namespace)
        if value is not None:
            print(repr(value))


def print_traceback(exc: BaseException) -> None:
    """The traceback of a cell's exception, without this runner's own frames."""
    tb = exc.__traceback__
    here = os.path.abspath(__file__)
    while tb is not None and os.path.abspath(tb.tb_frame.f_code.co_filename) == here:
        tb = tb.tb_next
    sys.stdout.flush()
    traceback.print_exception(type(exc), exc, tb)
    sys.stderr.flush()


def run_cell(index: int, cell: dict, label: str, namespace: dict, plan: tuple[int, float]) -> bool:
    """Run one code cell with its retry plan (retries, delay); True when it succeeded in the end."""
    retries, delay = plan
    source = strip_magics(cell_source(cell), label)
    filename = f"<cell {index}>"
    # Lets tracebacks show the cell's source lines.
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    for attempt in range(1, retries + 2):
        try:
            run_source(source, filename, namespace)
            return True
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:  # noqa: BLE001 - a cell may raise anything
            print_traceback(exc)
            if attempt > retries:
                summary = f"{type(exc).__name__}: {exc}"
                print(
                    f"[fastflow] {label} failed after {attempt} attempt(s): {summary}",
                    file=sys.stderr,
                )
                return False
            print(
                f"[fastflow] {label} failed (attempt {attempt} of {retries + 1}); "
                f"retrying in {delay:g}s",
                file=sys.stderr,
            )
            time.sleep(delay)
    return False


def main(argv: list[str]) -> int:
    """Run the notebook named by `argv[1]`; the process exit code."""
    if len(argv) != 2:
        print("usage: notebook.py NOTEBOOK.ipynb", file=sys.stderr)
        return 2
    try:
        config = json.loads(os.environ.get(CELLS_ENV) or "{}")
    except ValueError as exc:
        print(f"[fastflow] {CELLS_ENV} is not valid JSON: {exc}", file=sys.stderr)
        return 2
    config = config if isinstance(config, dict) else {}
    namespace: dict = {"__name__": "__main__", "__file__": os.path.abspath(argv[1])}
    # Imports resolve next to the notebook, as in Jupyter, never in this runner's own folder.
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
    sys.path.insert(0, os.path.dirname(os.path.abspath(argv[1])))
    cells = load_cells(argv[1])
    plans = retry_plans(argv[1], cells, config)
    if plans is None:
        return 1
    for index, cell in enumerate(cells):
        if index not in plans or not cell_source(cell).strip():
            continue
        tags = cell_tags(cell)
        label = f"cell {index}" + (f" (tags: {', '.join(tags)})" if tags else "")
        print(f"[fastflow] {label}", flush=True)
        if not run_cell(index, cell, label, namespace, plans[index]):
            return 1
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
