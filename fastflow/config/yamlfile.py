"""Reading YAML files of a repository: the one owner of PyYAML in `config`, one error style.

`load_yaml` parses with a safe loader that leaves timestamps as text (PyYAML's own conversion
crashes on 2026-13-01 and drops the difference between a date and midnight; the schedule checkers
read instants themselves). A syntax error raises `Invalid` with one message shape for every file:
`invalid YAML at line L, column C: <reason>; fix the syntax (...)`. The round-trip YAML of the
secrets file (comments kept, yaml.v3 typing) is `fastflow.secrets.yamltree`'s own.
"""
from __future__ import annotations

from typing import Any

import yaml

from fastflow.errors import Invalid

SYNTAX_FIX = "fix the syntax (indent with spaces, quote values containing ': ')"


class _Loader(yaml.SafeLoader):
    """Safe YAML with timestamps left as the text that was written."""


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
    where = "" if mark is None else f" at line {mark.line + 1}, column {mark.column + 1}"
    return f"invalid YAML{where}: {reason}; {SYNTAX_FIX}"
