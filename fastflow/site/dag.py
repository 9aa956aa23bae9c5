"""A flow run's DAG as inline SVG: a layered layout computed here, no JavaScript, no library.

Layout (Sugiyama style, small and deterministic): each task goes in the column of its depth
(one more than the deepest task it depends on, so every edge points right); inside a column the
tasks are ordered by the mean row of the tasks they depend on (fewer crossings), ties in file
order; columns are centred vertically. Edges are cubic curves from a node's right side to its
dependent's left side, ending in an arrow. Each node is a link to its task's run page (when the
task ran) and shows the task id, its status and its duration; its colour comes from the status
family (`ff-ok`, `ff-bad`, ...; the site stylesheet themes them), with the status also in words,
so colour is never the only carrier. Same input, same bytes.
"""
from __future__ import annotations

from dataclasses import dataclass
from html import escape
from typing import Mapping, Sequence

from fastflow.site.charts import SVG_NS

NODE_W, NODE_H = 168, 48
GAP_X, GAP_Y = 56, 18
PAD = 12

_FAMILY_CLASS = {"ok": "ff-ok", "bad": "ff-bad", "warn": "ff-warn", "muted": "ff-muted",
                 "info": "ff-info", "none": "ff-muted"}
_FALLBACK = {"ff-ok": "#1a7f4b", "ff-bad": "#c62f3a", "ff-warn": "#b35c00", "ff-muted": "#7b8391",
             "ff-info": "#2563eb"}


@dataclass(frozen=True)
class DagNode:
    """A task as drawn: id, dependencies, status words and family, duration text, link."""

    id: str
    depends_on: tuple[str, ...]
    status: str  # the status value (`succeeded`, `pending`, ...)
    label: str  # the status in words
    family: str  # ok, bad, warn, muted, info
    duration: str = ""
    href: str | None = None
    note: str = ""  # a skipped task's reason, shown as its tooltip


@dataclass(frozen=True)
class Placed:
    node: DagNode
    column: int
    row: float
    x: float
    y: float


def layout(nodes: Sequence[DagNode]) -> tuple[dict[str, Placed], int, int]:
    """Positions of `nodes` (in file order; every dependency is a node) and the drawing's size."""
    by_id = {n.id: n for n in nodes}
    order = {n.id: i for i, n in enumerate(nodes)}
    depth: dict[str, int] = {}
    pending = list(nodes)
    while pending:  # the tasks form no cycle (validated); a node whose deps are unknown is 0
        ready = [n for n in pending
                 if all(d in depth or d not in by_id for d in n.depends_on)]
        if not ready:
            ready = pending[:1]
        for node in ready:
            depth[node.id] = 1 + max((depth[d] for d in node.depends_on if d in depth), default=-1)
        pending = [n for n in pending if n.id not in depth]
    columns: dict[int, list[str]] = {}
    for node in nodes:
        columns.setdefault(depth[node.id], []).append(node.id)
    rows: dict[str, float] = {}
    for column in sorted(columns):
        ids = columns[column]

        def weight(task_id: str) -> tuple[float, int]:
            parents = [rows[d] for d in by_id[task_id].depends_on if d in rows]
            return (sum(parents) / len(parents) if parents else order[task_id], order[task_id])

        ids.sort(key=weight)
        for row, task_id in enumerate(ids):
            rows[task_id] = row
    tallest = max(len(ids) for ids in columns.values()) if columns else 0
    width = PAD * 2 + len(columns) * NODE_W + max(len(columns) - 1, 0) * GAP_X
    height = PAD * 2 + tallest * NODE_H + max(tallest - 1, 0) * GAP_Y
    placed = {}
    for column, ids in columns.items():
        offset = (tallest - len(ids)) * (NODE_H + GAP_Y) / 2
        for task_id in ids:
            x = PAD + column * (NODE_W + GAP_X)
            y = PAD + offset + rows[task_id] * (NODE_H + GAP_Y)
            placed[task_id] = Placed(by_id[task_id], column, rows[task_id], x, y)
    return placed, width, height


def dag_svg(nodes: Sequence[DagNode], *, label: str) -> str:
    """The SVG of a flow run's DAG (see the module doc); `label` says what it shows."""
    placed, width, height = layout(nodes)
    text = escape(label)
    out = [f'<svg xmlns="{SVG_NS}" class="ff-chart ff-dag" viewBox="0 0 {width} {height}" '
           f'width="{width}" height="{height}" role="img" aria-label="{text}">',
           f"<title>{text}</title>",
           '<defs><marker id="ff-arrow" viewBox="0 0 8 8" refX="8" refY="4" markerWidth="7" '
           'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L8,4 L0,8 z" '
           'class="ff-edge-head" fill="#7b8391"/></marker></defs>']
    for node in nodes:
        for dep in node.depends_on:
            if dep in placed:
                out.append(_edge(placed[dep], placed[node.id]))
    for node in nodes:
        out.append(_node(placed[node.id]))
    out.append("</svg>")
    return "\n".join(out)


def _n(x: float) -> str:
    text = f"{round(x, 1):.1f}"
    return text[:-2] if text.endswith(".0") else text


def _edge(source: Placed, target: Placed) -> str:
    x1, y1 = source.x + NODE_W, source.y + NODE_H / 2
    x2, y2 = target.x, target.y + NODE_H / 2
    bend = (x2 - x1) / 2
    path = (f"M{_n(x1)},{_n(y1)} C{_n(x1 + bend)},{_n(y1)} {_n(x2 - bend)},{_n(y2)} "
            f"{_n(x2)},{_n(y2)}")
    return (f'<path class="ff-edge" data-from="{escape(source.node.id)}" '
            f'data-to="{escape(target.node.id)}" d="{path}" fill="none" stroke="#7b8391" '
            'stroke-width="1.5" marker-end="url(#ff-arrow)"/>')


def _node(place: Placed) -> str:
    node = place.node
    cls = _FAMILY_CLASS.get(node.family, "ff-muted")
    tip = f"{node.id}: {node.label}" + (f", {node.duration}" if node.duration else "") + (
        f" ({node.note})" if node.note else "")
    words = node.label + (f" · {node.duration}" if node.duration else "")
    x, y = _n(place.x), _n(place.y)
    body = [
        f'<g class="ff-dag-node" data-task="{escape(node.id)}" data-status="{escape(node.status)}">',
        f"<title>{escape(tip)}</title>",
        f'<rect x="{x}" y="{y}" width="{NODE_W}" height="{NODE_H}" rx="8" class="ff-node-box" '
        'fill="#ffffff" stroke="#7b8391"/>',
        f'<rect x="{x}" y="{y}" width="6" height="{NODE_H}" rx="3" class="{cls}" '
        f'fill="{_FALLBACK[cls]}"/>',
        f'<text x="{_n(place.x + 16)}" y="{_n(place.y + 20)}" class="ff-node-id" '
        f'font-size="13" font-weight="600">{escape(_cut(node.id, 20))}</text>',
        f'<text x="{_n(place.x + 16)}" y="{_n(place.y + 38)}" class="ff-node-status {cls}" '
        f'font-size="11.5" fill="{_FALLBACK[cls]}">{escape(_cut(words, 24))}</text>',
        "</g>",
    ]
    inner = "".join(body)
    if node.href:
        return f'<a href="{escape(node.href)}" class="ff-dag-link">{inner}</a>'
    return inner


def _cut(text: str, length: int) -> str:
    return text if len(text) <= length else text[: length - 1] + "…"


def nodes_of(tasks: Sequence[Mapping], *, status_of, duration_of, href_of) -> list[DagNode]:
    """DagNodes from a flow record's `tasks` (their JSON), with the site's words and links."""
    nodes = []
    for task in tasks:
        view = status_of(task.get("status"))
        nodes.append(DagNode(
            id=str(task["id"]), depends_on=tuple(task.get("depends_on") or ()),
            status=str(task.get("status")), label=view.label, family=view.family,
            duration=duration_of(task.get("duration_s")), href=href_of(task),
            note=str(task.get("reason") or "")))
    return nodes
