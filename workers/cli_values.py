"""The values the command line takes, parsed exactly: amounts, stop and take-profit
levels, percentages, durations and symbols. Each parser raises ValueError with what
it expects (workers/cli_options.py makes them Click types).
"""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal, InvalidOperation
from typing import TypeVar

from pydantic import ValidationError

from domain.sizing import LevelRule, StopRule, TakeProfitRule
from domain.symbols import InvalidSymbol, canonical


def positive(text: str) -> Decimal:
    """A positive, finite number, exactly (`1_000` reads as 1000); ValueError if not."""
    try:
        value = Decimal(text.strip().replace("_", ""))
    except InvalidOperation:
        raise ValueError(f"not a number: {text!r}") from None
    if not value.is_finite() or value <= 0:
        raise ValueError(f"must be a positive number: {text!r}")
    return value


def amount(text: str) -> Decimal:
    """A positive amount of quote currency, e.g. `100`."""
    return positive(text)


_L = TypeVar("_L", bound=LevelRule)


def _level(cls: type[_L], text: str) -> _L:
    value = text.strip()
    try:
        if value.rstrip("%").replace(".", "", 1).replace("_", "").isdigit() is False:
            raise ValueError(f"not a level like 2% (from the entry) or 59000 (a price): {text!r}")
        if value.endswith("%"):
            return cls(percent=positive(value[:-1]))
        return cls(price=positive(value))
    except ValidationError as exc:
        raise ValueError(f"{text!r}: {exc.errors()[0]['msg']}") from None


def stop_rule(text: str) -> StopRule:
    """`2%` is 2 percent from the entry, `59000` is that price."""
    return _level(StopRule, text)


def take_profit_rule(text: str) -> TakeProfitRule:
    """`3%` is 3 percent from the entry, `63000` is that price."""
    return _level(TakeProfitRule, text)


def percent(text: str) -> Decimal:
    """A percentage below 100, written `5%` or `5`."""
    value = positive(text.strip().removesuffix("%"))
    if value >= 100:
        raise ValueError(f"a percentage must be below 100: {text!r}")
    return value


_DURATION_PART = re.compile(r"(\d+)([dhms])")
_UNIT = {"d": "days", "h": "hours", "m": "minutes", "s": "seconds"}


def duration(text: str) -> timedelta:
    """`4h`, `90m`, `1h30m`, `2d`, `45s`."""
    value = text.strip().lower()
    parts = _DURATION_PART.findall(value)
    if not parts or "".join(n + u for n, u in parts) != value:
        raise ValueError(f"not a duration like 4h, 90m or 1h30m: {text!r}")
    total = sum((timedelta(**{_UNIT[u]: int(n)}) for n, u in parts), timedelta())
    if total <= timedelta():
        raise ValueError(f"must be longer than zero: {text!r}")
    return total


def symbol(text: str) -> str:
    """`BTCUSDT`, `btcusdt` or `BTC/USDT:USDT`, as posguard's canonical `BTCUSDT`."""
    try:
        return canonical(text)
    except (InvalidSymbol, ValidationError) as exc:
        raise ValueError(str(exc)) from None


def default_emergency_percent(stop: StopRule) -> Decimal:
    """max(2 x stop %, stop % + 3) for a percent stop; 5 % for a stop at a price."""
    if stop.percent is None:
        return Decimal(5)
    return max(2 * stop.percent, stop.percent + 3)
