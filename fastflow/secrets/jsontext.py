"""Edits of JSON text that keep everything else as written: the members of an object and the
elements of an array with their positions, deletions that take their commas along, and splices
checked to leave valid JSON. The text given is valid JSON already (`json.loads` accepted it).
Used to rewrite pipeline.json (`secrets.fernet`) without reformatting the file.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from json.decoder import scanstring

from fastflow.errors import SecretsError

_WS = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()

Edit = tuple[int, int, str]  # replace text[start:end] with the string


@dataclass
class Member:
    """One member of an object: its key and where the key and the value are."""

    key: str
    key_start: int
    value_start: int
    value_end: int


def removals(text: str, start: int, members: list[Member], keys: set[str]) -> list[Edit]:
    """Splices deleting the members named `keys` from the object at `start`, commas included."""
    gone = [m.key in keys for m in members]
    if all(gone):
        close = _WS.match(text, members[-1].value_end).end() if members else start + 1
        return [(start + 1, close, "")]
    edits, i = [], 0
    while i < len(members):
        if not gone[i]:
            i += 1
            continue
        j = i
        while j < len(members) and gone[j]:
            j += 1
        if j < len(members):  # a run followed by a kept member: up to that member's key
            edits.append((members[i].key_start, members[j].key_start, ""))
        else:  # a run at the end: from the end of the last kept value
            edits.append((members[i - 1].value_end, members[j - 1].value_end, ""))
        i = j
    return edits


def splice(text: str, edits: list[Edit], file: str, fix: str) -> str:
    """`text` with `edits` applied; SecretsError naming `file` and `fix` when edits overlap or
    the result would not be valid JSON (the file is then left as it is)."""
    edits = sorted(edits, key=lambda e: (e[0], e[1]))
    for (_, end, _), (start, _, _) in zip(edits, edits[1:]):
        if start < end:
            raise SecretsError(f"{file}: cannot rewrite the file (overlapping changes); {fix}")
    for start, end, new in reversed(edits):
        text = text[:start] + new + text[end:]
    try:
        json.loads(text)
    except ValueError as exc:
        raise SecretsError(f"{file}: the rewritten file would not be valid JSON ({exc}); "
                           f"{fix}") from None
    return text


def line_indent(text: str, position: int) -> str:
    """The whitespace before `position` on its line ('' when something else precedes it)."""
    line_start = text.rfind("\n", 0, position) + 1
    before = text[line_start:position]
    return before if before.strip() == "" else ""


def object_members(text: str, start: int) -> list[Member]:
    """The members of the JSON object whose `{` is at `start` (text already valid JSON)."""
    i = _WS.match(text, start + 1).end()
    members: list[Member] = []
    if text[i] == "}":
        return members
    while True:
        key, j = scanstring(text, i + 1)
        value_start = _WS.match(text, _WS.match(text, j).end() + 1).end()
        _, value_end = _DECODER.raw_decode(text, value_start)
        members.append(Member(key, i, value_start, value_end))
        i = _WS.match(text, value_end).end()
        if text[i] == "}":
            return members
        i = _WS.match(text, i + 1).end()


def array_starts(text: str, start: int) -> list[int]:
    """Where each element of the JSON array whose `[` is at `start` begins."""
    i = _WS.match(text, start + 1).end()
    starts: list[int] = []
    if text[i] == "]":
        return starts
    while True:
        starts.append(i)
        _, end = _DECODER.raw_decode(text, i)
        i = _WS.match(text, end).end()
        if text[i] == "]":
            return starts
        i = _WS.match(text, i + 1).end()


def skip_space(text: str, position: int = 0) -> int:
    """The first position at or after `position` that is not JSON whitespace."""
    return _WS.match(text, position).end()
