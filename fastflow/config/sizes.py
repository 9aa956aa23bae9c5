"""Sizes written by people: parse "512m", "1.5g", "2Gi", "100MB" into bytes, and back.

The unit table follows Docker (`docker run --memory`), where a single letter is binary, and adds
the explicit SI and IEC spellings so nobody has to guess:

    no unit, b   bytes                   k  m  g  t       1024-based (Docker's convention)
    kb mb gb tb  1000-based (decimal)    ki mi gi ti      1024-based (IEC)
                                         kib mib gib tib  1024-based (IEC)

Units are case-insensitive. Decimals are allowed ("1.5g"); the result is rounded down to whole
bytes. `docs/pipeline-json.md` carries the same table.
"""
from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

KIB = 1024

UNITS: dict[str, int] = {"": 1, "b": 1}
for _power, _letter in enumerate("kmgt", start=1):
    UNITS[_letter] = KIB**_power
    UNITS[_letter + "i"] = KIB**_power
    UNITS[_letter + "ib"] = KIB**_power
    UNITS[_letter + "b"] = 1000**_power

_SIZE = re.compile(r"^\s*(?P<number>\d+(?:\.\d*)?|\.\d+)\s*(?P<unit>[A-Za-z]*)\s*$")


def parse_size(text: str | int) -> int:
    """Bytes for a size such as "512m", "1.5g", "2Gi", "100MB" or a plain int of bytes.

    Raises `ValueError` (without a message meant for users: callers word their own) when the text
    is not a size. Booleans and floats given as numbers are refused: a bare number means bytes,
    and fractional bytes mean a typo.
    """
    if isinstance(text, bool):
        raise ValueError("not a size")
    if isinstance(text, int):
        if text < 0:
            raise ValueError("negative size")
        return text
    if not isinstance(text, str):
        raise ValueError("not a size")
    match = _SIZE.match(text)
    if not match:
        raise ValueError("not a size")
    unit = match["unit"].lower()
    if unit not in UNITS:
        raise ValueError("unknown unit")
    try:
        number = Decimal(match["number"])
    except InvalidOperation as exc:  # pragma: no cover - the regex admits only decimals
        raise ValueError("not a size") from exc
    if UNITS[unit] == 1 and number != number.to_integral_value():
        raise ValueError("fractional bytes")
    return int(number * UNITS[unit])


def spell_size(size: int) -> str:
    """A short exact Docker-style spelling of `size` bytes: 268435456 -> "256m", 1.5 GiB -> "1.5g".

    The largest binary unit that spells the size exactly with at most two decimals; plain bytes
    when there is none, so `parse_size(spell_size(n)) == n` always.
    """
    for letter, factor in (("t", KIB**4), ("g", KIB**3), ("m", KIB**2), ("k", KIB)):
        scaled = Decimal(size) / factor
        if scaled >= 1 and scaled == scaled.quantize(Decimal("0.01")):
            return f"{scaled.normalize():f}{letter}"
    return str(size)
