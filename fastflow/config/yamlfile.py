"""Reading YAML files of a repository: the one owner of PyYAML in `config`, one error style.

`load_yaml` parses with a safe loader that leaves timestamps as text (PyYAML's own conversion
crashes on 2026-13-01 and drops the difference between a date and midnight; the schedule checkers
read instants themselves). A syntax error raises `Invalid` with one message shape for every file:
`invalid YAML at line L, column C: <reason>; fix the syntax (...)`. The round-trip YAML of the
secrets file (comments kept, yaml.v3 typing) is `fastflow.secrets.yamltree`'s own.

Hostile files are refused while they are composed, before anything walks them: nesting deeper
than `MAX_DEPTH` levels (PyYAML's composer recurses: 20,000 levels were a RecursionError), an
alias that contains itself, and documents whose aliases expand to more than `MAX_NODES` nodes
(a "billion laughs" file parses in a millisecond into shared objects, then took 47 s to walk).
"""
from __future__ import annotations

from typing import Any

import yaml

from fastflow.errors import Invalid

SYNTAX_FIX = "fix the syntax (indent with spaces, quote values containing ': ')"
MAX_DEPTH = 100  # levels of nested lists and mappings; configuration files need a handful
MAX_NODES = 1_000_000  # values once aliases are expanded; 10,000 schedules are about 150,000


class _Loader(yaml.SafeLoader):
    """Safe YAML with timestamps left as the text that was written, depth and aliases bounded."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._expanded = 0  # nodes composed so far, each alias counted as the nodes it stands for
        self._sizes: dict[int, int] = {}  # id(node) -> its expanded size, once composed

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            node = super().compose_node(parent, index)
            size = self._sizes.get(id(node))
            if size is None:
                raise Invalid(f"invalid YAML{_where(mark)}: an alias refers to a value that "
                              "contains it; YAML for Fast-Flow cannot be recursive, write the "
                              "value out")
            self._grow(size, mark)
            return node
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise Invalid(f"invalid YAML{_where(self.peek_event().start_mark)}: nested deeper "
                          f"than {MAX_DEPTH} levels; flatten the lists and mappings")
        start = self._expanded
        node = super().compose_node(parent, index)
        self._depth -= 1
        self._grow(1, node.start_mark)
        self._sizes[id(node)] = self._expanded - start
        return node

    def _grow(self, count: int, mark: Any) -> None:
        self._expanded += count
        if self._expanded > MAX_NODES:
            raise Invalid(f"invalid YAML{_where(mark)}: more than {MAX_NODES:,} values once "
                          "aliases (*name) are expanded; write fewer values or fewer aliases")


_Loader.add_constructor("tag:yaml.org,2002:timestamp", lambda loader, node: loader.construct_scalar(node))


def load_yaml(text: str) -> Any:
    """The document in `text` (None for an empty one); raise `Invalid` naming line and column."""
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        raise Invalid(yaml_error_message(exc)) from None


def yaml_error_message(exc: yaml.YAMLError) -> str:
    """`invalid YAML at line 3, column 1: expected ... ; fix the syntax (...)`."""
    mark = getattr(exc, "problem_mark", None)
    reason = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return f"invalid YAML{_where(mark)}: {reason}; {SYNTAX_FIX}"


def _where(mark: Any) -> str:
    return "" if mark is None else f" at line {mark.line + 1}, column {mark.column + 1}"
