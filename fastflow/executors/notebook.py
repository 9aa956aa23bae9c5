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
  JSON, `{"<key>": {"retry_attempts": n, "retry_delay": seconds}}`, where a key is a cell index
  (0-based position in the notebook's cell list, markdown cells included, as in nbformat), a cell
  `id`, or a tag of the cell. Index beats id beats tag; with several tags, the first listed that
  has a policy applies. A failing cell is run again up to `retry_attempts` more times, `retry_delay`
  seconds apart, in the same namespace (whatever the failed try changed stays changed).
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


def cell_policy(index: int, cell: dict, config: dict) -> tuple[int, float]:
    """(retry_attempts, retry_delay) for a cell: by index, then id, then tag; (0, 0) if none."""
    keys = [str(index)]
    if cell.get("id"):
        keys.append(str(cell["id"]))
    keys += cell_tags(cell)
    for key in keys:
        policy = config.get(key)
        if isinstance(policy, dict):
            return int(policy.get("retry_attempts", 0)), float(policy.get("retry_delay", 0))
    return 0, 0.0


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


def run_cell(index: int, cell: dict, label: str, namespace: dict, config: dict) -> bool:
    """Run one code cell with its retry policy; True when it succeeded in the end."""
    retries, delay = cell_policy(index, cell, config)
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
    for index, cell in enumerate(load_cells(argv[1])):
        if cell.get("cell_type") != "code" or not cell_source(cell).strip():
            continue
        tags = cell_tags(cell)
        label = f"cell {index}" + (f" (tags: {', '.join(tags)})" if tags else "")
        print(f"[fastflow] {label}", flush=True)
        if not run_cell(index, cell, label, namespace, config):
            return 1
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
