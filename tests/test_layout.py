"""The package layout is a rule, not a wish: every import of every module is checked here.

docs/architecture.md draws the rows. A module imports only from rows below its own (inside its
own folder it may import its siblings); folders on one row (`run | deploy | flow`) never import
each other; each third-party library is imported only by its owner. Function-local imports are
checked like the others: a lazy import is still a dependency.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "fastflow"

# Top to bottom. Each entry is a unit: a folder of the package or a ground-floor module.
ROWS: tuple[tuple[str, ...], ...] = (
    ("__main__",),
    ("cli",),
    ("api",),
    ("daemon",),
    ("results",),
    ("run", "deploy", "flow"),
    ("site", "executors", "repo", "secrets", "notify"),
    ("config",),
    ("schedule",),
    ("record", "humanize", "files"),
    ("model", "errors", "defaults"),
)
ROW_OF = {unit: depth for depth, units in enumerate(ROWS) for unit in units}

# Third-party libraries with exactly one owner (a unit, or one module inside a unit).
OWNERS = {
    "pygit2": ("fastflow.repo",),
    "docker": ("fastflow.executors.docker", "fastflow.executors.swarm"),
    "croniter": ("fastflow.schedule.cron",),
    "yaml": ("fastflow.config.yamlfile", "fastflow.secrets.yamltree"),
    "cryptography": ("fastflow.secrets",),
    "watchdog": ("fastflow.daemon.watch",),
    "click": ("fastflow.cli",),
    "rich": ("fastflow.cli",),
    "jinja2": ("fastflow.site.render",),
    "waitress": ("fastflow.daemon.webhooks.server",),
    "apprise": ("fastflow.notify.delivery",),
}
# The pure time layer reads no files and talks to no library with side effects.
PURE_UNITS = {"schedule": {"yaml", "pygit2", "os", "io", "shutil", "tempfile", "pathlib", "subprocess"}}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def unit_of(module: str) -> str | None:
    """The layout unit of a fastflow module (`fastflow.deploy.changes` -> `deploy`); None for
    the package root itself (`fastflow`, which holds only the version)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def _is_module(name: str) -> bool:
    return (PACKAGE / name).is_dir() or (PACKAGE / f"{name}.py").is_file()


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, imported module) for every import in the file, function-local ones included.
    `from fastflow import repo` counts as importing `fastflow.repo`."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                raise AssertionError(f"{path.relative_to(ROOT)}:{node.lineno}: relative import; "
                                     "write the absolute module name")
            base = node.module or ""
            if base == "fastflow":  # a module of the package, or a name of its __init__
                found += [(node.lineno, f"fastflow.{alias.name}" if _is_module(alias.name)
                           else "fastflow") for alias in node.names]
            else:
                found.append((node.lineno, base))
    return found


def layout_violations() -> list[str]:
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = module_name(path)
        unit = unit_of(module)
        where = f"{path.relative_to(ROOT)}"
        if unit is not None and unit not in ROW_OF:
            problems.append(f"{where}: unit {unit!r} is not in a row of the layout "
                            "(add it to docs/architecture.md and ROWS)")
            continue
        for line, imported in imports_of(path):
            top = imported.split(".")[0]
            owners = OWNERS.get(top)
            if owners and not any(module == o or module.startswith(o + ".") for o in owners):
                problems.append(f"{where}:{line} imports {imported}: only {', '.join(owners)} "
                                f"may import {top}")
            if unit in PURE_UNITS and top in PURE_UNITS[unit]:
                problems.append(f"{where}:{line} imports {imported}: {unit}/ is pure "
                                f"(no {', '.join(sorted(PURE_UNITS[unit]))})")
            if top != "fastflow" or unit is None:
                continue
            target = unit_of(imported)
            if target is None or target == unit:
                continue
            if target not in ROW_OF:
                problems.append(f"{where}:{line} imports {imported}: no such unit {target!r}")
            elif ROW_OF[target] == ROW_OF[unit]:
                problems.append(f"{where}:{line} imports {imported}: {unit} and {target} are "
                                "on the same row and never import each other")
            elif ROW_OF[target] < ROW_OF[unit]:
                problems.append(f"{where}:{line} imports {imported}: {unit} (row "
                                f"{ROW_OF[unit]}) may import only from rows below it; {target} "
                                f"is on row {ROW_OF[target]}")
    return problems


def test_every_import_follows_the_layout():
    problems = layout_violations()
    assert not problems, "layout rule broken:\n" + "\n".join(problems)


def test_the_root_holds_only_the_ground_floor():
    loose = sorted(p.stem for p in PACKAGE.glob("*.py"))
    ground = {"__init__", "__main__"} | {u for row in ROWS[-2:] for u in row}
    assert set(loose) <= ground, f"modules at the package root that belong in a folder: {set(loose) - ground}"


def test_every_folder_is_a_unit_of_the_layout():
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert folders <= set(ROW_OF), f"folders not in docs/architecture.md: {folders - set(ROW_OF)}"


@pytest.mark.parametrize("source, message", [
    ("from fastflow.daemon.inbox import Inbox\n",
     "fastflow/deploy/zz_probe.py:1 imports fastflow.daemon.inbox: deploy (row 5) may import "
     "only from rows below it; daemon is on row 3"),
    ("from fastflow.run import runner\n",
     "fastflow/deploy/zz_probe.py:1 imports fastflow.run: deploy and run are on the same row "
     "and never import each other"),
    ("def later():\n    import yaml\n",
     "fastflow/deploy/zz_probe.py:2 imports yaml: only fastflow.config.yamlfile, "
     "fastflow.secrets.yamltree may import yaml"),
])
def test_a_violation_names_the_offending_import(source, message):
    probe = PACKAGE / "deploy" / "zz_probe.py"
    probe.write_text(source)
    try:
        problems = layout_violations()
    finally:
        probe.unlink()
    assert message in problems
