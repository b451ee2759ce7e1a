"""Reading exchange numbers and flags exactly, from ccxt's raw `info` dicts."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any


def to_decimal(value: object) -> Decimal | None:
    """Exact Decimal of an exchange number (str/int), or of a ccxt float via its repr."""
    if value is None or value == "":
        return None
    if isinstance(value, Decimal):
        return value
    if isinstance(value, bool):
        raise TypeError("bool is not a number here")
    if isinstance(value, int | str):
        return Decimal(value)
    # ccxt parsed floats: repr is the shortest string that round-trips.
    return Decimal(repr(value))


def first(info: Mapping[str, Any], *keys: str) -> Any:
    """The first of `keys` with a value in `info` (None and "" count as absent)."""
    for key in keys:
        value = info.get(key)
        if value not in (None, ""):
            return value
    return None


def flag(value: object) -> bool | None:
    """An exchange boolean: JSON true/false or the strings "true"/"false"; None if absent."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        return value.strip().lower() == "true"
    return bool(value)
