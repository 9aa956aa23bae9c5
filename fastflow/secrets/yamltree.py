"""SOPS's view of a YAML file: ordered maps, lists, typed scalars and comment lines.

PyYAML drops comments and types scalars by YAML 1.1, but SOPS (Go yaml.v3) keeps comment lines
as items of the enclosing map or list and types plain scalars by YAML 1.2 core rules (`yes` is a
string, `1e3` a float, `2024-01-01` a timestamp). The MAC depends on both, so this module composes
the document with PyYAML (for structure and positions), retypes plain scalars the yaml.v3 way, and
re-attaches comment lines by position, the way yaml.v3 + SOPS do: a comment goes before the next
entry of its collection, except that comments following a nested collection become its last items
(SOPS's own output puts them there, e.g. its example.yaml). Same-line comments (`a: 1  # c`)
become a comment item after their entry. `dump_documents` writes SOPS's layout: 4-space indent,
lists indented under their key, multi-line strings as literal blocks, quotes where yaml.v3 would
otherwise retype a string.
"""
from __future__ import annotations

import base64
import math
import re
from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import Any, Iterator

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from fastflow.errors import SecretsError

_PLAIN = "tag:fastflow:plain"
_INT_RE = re.compile(r"^[-+]?(0[xX][0-9a-fA-F]+|0[oO][0-7]+|0[bB][01]+|0[0-7]*|[1-9][0-9]*)$")
_FLOAT_RE = re.compile(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$")
_INF_NAN = {".inf": math.inf, ".Inf": math.inf, ".INF": math.inf, "+.inf": math.inf,
            "+.Inf": math.inf, "+.INF": math.inf, "-.inf": -math.inf, "-.Inf": -math.inf,
            "-.INF": -math.inf, ".nan": math.nan, ".NaN": math.nan, ".NAN": math.nan}
_TIME_RE = re.compile(
    r"^(\d{4})-(\d{1,2})-(\d{1,2})(?:(?:[Tt]|( ))(\d{1,2}):(\d{1,2}):(\d{1,2})(\.\d+)?"
    r"(Z|[+-]\d{2}:\d{2})?)?$"
)


@dataclass(frozen=True)
class Comment:
    """A comment line; `text` is what follows `#` (leading space kept)."""

    text: str


class YMap(list):
    """An ordered mapping: a list of `(key, value)` pairs and `Comment` items."""

    def get(self, key: str, default: Any = None) -> Any:
        for item in self:
            if isinstance(item, tuple) and item[0] == key:
                return item[1]
        return default

    def set(self, key: str, value: Any) -> None:
        for i, item in enumerate(self):
            if isinstance(item, tuple) and item[0] == key:
                self[i] = (key, value)
                return
        self.append((key, value))

    def remove(self, key: str) -> bool:  # type: ignore[override]
        for i, item in enumerate(self):
            if isinstance(item, tuple) and item[0] == key:
                del self[i]
                return True
        return False

    def keys(self) -> list[str]:
        return [item[0] for item in self if isinstance(item, tuple)]


class YSeq(list):
    """An ordered sequence of values and `Comment` items."""


class _Loader(yaml.SafeLoader):
    """Marks every untagged plain scalar so we can type it the yaml.v3 way ourselves."""


_Loader.yaml_implicit_resolvers = {}
_Loader.add_implicit_resolver(_PLAIN, re.compile(r"(?s).*"), None)


def resolve_plain(text: str) -> Any:
    """Type a plain (unquoted, untagged) scalar like Go yaml.v3 does."""
    if text in ("", "~", "null", "Null", "NULL"):
        return None
    if text in ("true", "True", "TRUE"):
        return True
    if text in ("false", "False", "FALSE"):
        return False
    if text in _INF_NAN:
        return _INF_NAN[text]
    if text and text[0] in "+-.0123456789":
        plain = text.replace("_", "")
        if _INT_RE.match(plain):
            return _parse_go_int(plain)
        if _FLOAT_RE.match(plain):
            return float(plain)
    match = _TIME_RE.match(text)
    if match:
        parsed = _parse_time(match)
        if parsed is not None:
            return parsed
    return text


def _parse_go_int(plain: str) -> int:
    sign = -1 if plain.startswith("-") else 1
    digits = plain.lstrip("+-")
    if len(digits) > 1 and digits[0] == "0" and digits[1] not in "xXoObB":
        return sign * int(digits, 8)  # Go's ParseInt(s, 0, 64): a leading 0 means octal
    return sign * int(digits, 0)


def _parse_time(match: re.Match) -> datetime | None:
    year, month, day, _space, hour, minute, second, frac, zone = match.groups()
    try:
        if hour is None:
            return datetime(int(year), int(month), int(day), tzinfo=timezone.utc)
        micro = int((frac[1:] + "000000")[:6]) if frac else 0
        value = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second),
                         micro, tzinfo=timezone.utc)
        if zone and zone != "Z":
            value = datetime.fromisoformat(value.replace(tzinfo=None).isoformat() + zone)
        return value
    except ValueError:
        return None


# --- Loading ---------------------------------------------------------------------------------

@dataclass
class _Entry:
    """Where an entry of a collection starts, for attaching comments."""

    line: int
    collection: list
    index: int


def load_documents(text: str, source: str) -> list[YMap]:
    """Parse YAML `text` into documents (each a YMap with comments); SecretsError naming source."""
    try:
        nodes = list(yaml.compose_all(text, Loader=_Loader))
    except yaml.YAMLError as exc:
        raise SecretsError(f"{source}: not valid YAML: {exc}") from None
    documents, lines = [], text.split("\n")
    separators = [i for i, line in enumerate(lines) if re.match(r"^---(\s|$)", line)]
    for index, node in enumerate(nodes):
        if node is None:
            continue
        if not isinstance(node, MappingNode):
            raise SecretsError(f"{source}: the top level of a document must be a mapping "
                               "(SOPS does not support sequences or scalars there)")
        entries: list[_Entry] = []
        spans: list[tuple[int, int]] = []
        root = _convert(node, source, [], entries, spans)
        documents.append((root, entries, spans, node))
    result = []
    for i, (root, entries, spans, node) in enumerate(documents):
        low = max([s for s in separators if s <= node.start_mark.line], default=-1)
        nxt = [s for s in separators if s > node.start_mark.line]
        high = nxt[0] if nxt else len(lines)
        _attach_comments(root, entries, spans, lines, low + 1, high)
        result.append(root)
    return result


def _convert(node: Node, source: str, path: list[str], entries: list[_Entry],
             spans: list[tuple[int, int]]) -> Any:
    if isinstance(node, ScalarNode):
        if node.end_mark.line > node.start_mark.line:
            spans.append((node.start_mark.line, node.end_mark.line - (node.end_mark.column == 0)))
        return _scalar(node)
    if isinstance(node, SequenceNode):
        seq = YSeq()
        for item in node.value:
            entries.append(_Entry(item.start_mark.line, seq, len(seq)))
            seq.append(_convert(item, source, path, entries, spans))
        _flow_span(node, spans)
        return seq
    mapping = YMap()
    for key_node, value_node in node.value:
        if not isinstance(key_node, ScalarNode) or key_node.tag not in (_PLAIN, yaml.resolver.BaseResolver.DEFAULT_SCALAR_TAG) \
                or not isinstance(_scalar(key_node), str):
            raise SecretsError(f"{source}: line {key_node.start_mark.line + 1}: only string keys "
                               "are supported (SOPS: tree contains a non-string key)")
        key = key_node.value
        if key in mapping.keys():
            where = ".".join(path + [key])
            raise SecretsError(f"{source}: line {key_node.start_mark.line + 1}: duplicate key {where}")
        entries.append(_Entry(key_node.start_mark.line, mapping, len(mapping)))
        mapping.append((key, _convert(value_node, source, path + [key], entries, spans)))
    _flow_span(node, spans)
    return mapping


def _flow_span(node: Node, spans: list[tuple[int, int]]) -> None:
    if node.flow_style and node.end_mark.line > node.start_mark.line:
        spans.append((node.start_mark.line, node.end_mark.line))


def _scalar(node: ScalarNode) -> Any:
    tag, value = node.tag, node.value
    if tag == _PLAIN and node.style is None:
        return resolve_plain(value)
    if tag.endswith(":int"):
        return _parse_go_int(value.replace("_", ""))
    if tag.endswith(":float"):
        return _INF_NAN.get(value, None) or float(value)
    if tag.endswith(":bool"):
        return value in ("true", "True", "TRUE")
    if tag.endswith(":null"):
        return None
    if tag.endswith(":binary"):
        return base64.b64decode(value).decode("utf-8", "replace")
    return value


def _comment_lines(lines: list[str], spans: list[tuple[int, int]], low: int,
                   high: int) -> Iterator[tuple[int, str, bool]]:
    """(line, text, inline) for each comment outside multi-line scalars."""
    inside = {n for start, end in spans for n in range(start + 1, end + 1)}
    for number in range(low, high):
        if number in inside:
            continue
        line = lines[number]
        stripped = line.lstrip()
        if stripped.startswith("#"):
            yield number, stripped[1:], False
        else:
            position = _inline_comment_start(line)
            if position is not None:
                yield number, line[position + 1:], True


def _inline_comment_start(line: str) -> int | None:
    """Index of a ` #` comment on a content line, outside quotes; None when there is none."""
    quote = None
    for i, char in enumerate(line):
        if quote:
            if char == quote:
                quote = None
            continue
        if char in "'\"" and (i == 0 or line[i - 1] in " :-[{,"):
            quote = char
        elif char == "#" and i > 0 and line[i - 1] in " \t":
            return i
    return None


def _attach_comments(root: YMap, entries: list[_Entry], spans: list[tuple[int, int]],
                     lines: list[str], low: int, high: int) -> None:
    inserts: dict[int, list[tuple[int, Comment]]] = {}
    owners: dict[int, list] = {}
    for number, text, inline in _comment_lines(lines, spans, low, high):
        collection, index = _comment_target(root, entries, number, inline)
        owners[id(collection)] = collection
        inserts.setdefault(id(collection), []).append((index, Comment(text)))
    for key, pending in inserts.items():
        collection = owners[key]
        merged: list = []
        slots: dict[int, list[Comment]] = {}
        for index, comment in pending:
            slots.setdefault(index, []).append(comment)
        for i, item in enumerate(list(collection)):
            merged.extend(slots.get(i, []))
            merged.append(item)
        merged.extend(slots.get(len(collection), []))
        collection[:] = merged


def _comment_target(root: YMap, entries: list[_Entry], number: int, inline: bool) -> tuple[list, int]:
    if inline:
        on_line = [e for e in entries if e.line == number]
        if on_line:
            first = on_line[0]  # the outermost entry: `g: [1, 2]  # c` comments on `g`
            return first.collection, first.index + 1
    following = [e for e in entries if e.line > number]
    if not following:
        return _deepest_last(root), len(_deepest_last(root))
    entry = following[0]  # outermost entry starting on that line comes first
    if entry.index > 0:
        previous = _value(entry.collection[entry.index - 1])
        if isinstance(previous, (YMap, YSeq)) and previous:
            target = _deepest_last(previous)
            return target, len(target)
    return entry.collection, entry.index


def _value(item: Any) -> Any:
    return item[1] if isinstance(item, tuple) else item


def _deepest_last(collection: list) -> list:
    while collection:
        last = _value(collection[-1])
        if not isinstance(last, (YMap, YSeq)) or not last:
            break
        collection = last
    return collection


# --- Dumping ---------------------------------------------------------------------------------

def dump_documents(documents: list[YMap], indent: int = 4) -> str:
    """Serialize documents in SOPS's layout (`---` between documents)."""
    return "---\n".join("".join(_dump_map(doc, 0, indent)) or "{}\n" for doc in documents)


def _dump_map(mapping: YMap, level: int, indent: int) -> list[str]:
    pad, out = " " * level, []
    for item in mapping:
        if isinstance(item, Comment):
            out.append(f"{pad}#{item.text}\n")
            continue
        key, value = item
        head = f"{pad}{format_key(key)}:"
        out.extend(_dump_value(head, value, level, indent, level + indent))
    return out


def _dump_value(head: str, value: Any, level: int, indent: int, child: int) -> list[str]:
    if isinstance(value, YMap) and value:
        return [head + "\n", *_dump_map(value, child, indent)]
    if isinstance(value, YSeq) and value:
        return [head + "\n", *_dump_seq(value, child, indent)]
    if isinstance(value, str) and "\n" in value and _literal_ok(value):
        return [head + " " + _literal(value, child)]
    return [head + " " + format_scalar(value) + "\n"]


def _dump_seq(seq: YSeq, level: int, indent: int) -> list[str]:
    pad, out = " " * level, []
    for item in seq:
        if isinstance(item, Comment):
            out.append(f"{pad}#{item.text}\n")
        elif isinstance(item, (YMap, YSeq)) and item:
            inner = _dump_map(item, level + 2, indent) if isinstance(item, YMap) \
                else _dump_seq(item, level + 2, indent)
            if inner[0].lstrip().startswith("#"):
                out.append(f"{pad}-\n")
                out.extend(inner)
            else:
                out.append(f"{pad}- " + inner[0][level + 2:])
                out.extend(inner[1:])
        else:
            out.extend(_dump_value(f"{pad}-", item, level, indent, level + 2))
    return out


def _literal_ok(value: str) -> bool:
    return (not value.startswith((" ", "\n")) and "\r" not in value
            and all(c == "\n" or c == "\t" or c.isprintable() for c in value)
            and not any(line.endswith((" ", "\t")) for line in value.split("\n")))


def _literal(value: str, level: int) -> str:
    body = value.rstrip("\n")
    trailing = len(value) - len(body)
    chomp = "-" if trailing == 0 else ("" if trailing == 1 else "+")
    pad = " " * level
    lines = [(pad + line) if line else "" for line in body.split("\n")]
    lines += [""] * (trailing - 1) if trailing > 1 else []
    return f"|{chomp}\n" + "\n".join(lines) + "\n"


_PLAIN_OK = re.compile(r"^[^\s\-?:,\[\]{}#&*!|>'\"%@`][^\n]*$")


def format_key(key: str) -> str:
    """A mapping key, quoted when needed."""
    return _format_str(key)


def format_scalar(value: Any) -> str:
    """One scalar value as yaml.v3 would read it back with the same type."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return ".nan"
        if math.isinf(value):
            return ".inf" if value > 0 else "-.inf"
        return repr(value)
    if isinstance(value, datetime):
        return format_time(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, YMap):
        return "{}"
    if isinstance(value, YSeq):
        return "[]"
    if isinstance(value, bytes):
        return "!!binary " + base64.b64encode(value).decode()
    return _format_str(str(value))


def _format_str(value: str) -> str:
    plain = (_PLAIN_OK.match(value) is not None and value == value.strip()
             and ": " not in value and " #" not in value and not value.endswith(":")
             and all(c.isprintable() for c in value) and resolve_plain(value) == value
             and type(resolve_plain(value)) is str)
    if plain:
        return value
    return yaml.dump(value, Dumper=yaml.SafeDumper, default_style='"', allow_unicode=True,
                     width=2 ** 31).rstrip("\n").removesuffix("\n...")


def format_time(value: datetime) -> str:
    """Go's RFC3339Nano: `2024-01-01T00:00:00Z`, `...+07:00`, fractional seconds trimmed."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    text = value.strftime("%Y-%m-%dT%H:%M:%S")
    if value.microsecond:
        text += ("." + f"{value.microsecond:06d}").rstrip("0")
    offset = value.utcoffset()
    if not offset:
        return text + "Z"
    minutes = int(offset.total_seconds() // 60)
    sign = "+" if minutes >= 0 else "-"
    return f"{text}{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"
