"""Callback distance as a function of volatility: a multiple of the average true range.

A fixed callback is either too tight for a wild market (the stop is hit by noise)
or too loose for a calm one (profit given back). Traders size it from the ATR,
Wilder's average true range, as a percent of the price: callback = k * ATR% of the
last close, clamped to a floor and a ceiling. The candles come from the exchange
(an activity); everything here is pure and Decimal only, so the workflow computes
the same callback on replay.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from datetime import timedelta
from decimal import ROUND_CEILING, Context, Decimal
from typing import Annotated, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "TIMEFRAMES",
    "Candle",
    "VolatilityCallback",
    "average_true_range",
    "volatility_callback_pct",
]

# Exchange intervals accepted (Binance and Bybit both have these).
TIMEFRAMES = ("1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "12h", "1d")

_Pct = Annotated[Decimal, Field(gt=0, lt=100, allow_inf_nan=False)]
_CTX = Context(prec=50)
# The callback is kept to 1/10,000 of a percent: exact enough, and short in events.
_PCT_QUANTUM = Decimal("0.0001")


class Candle(BaseModel):
    """One closed or forming candle, prices exactly as the exchange wrote them."""

    model_config = ConfigDict(frozen=True)

    open_time_ms: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal

    @model_validator(mode="after")
    def _check(self) -> Self:
        if not (self.low <= min(self.open, self.close) and self.high >= max(self.open, self.close)):
            raise ValueError("candle high/low do not enclose its open and close")
        if self.low <= 0:
            raise ValueError("candle prices must be positive")
        return self


class VolatilityCallback(BaseModel):
    """How the callback follows volatility: `multiple` x ATR(`period`) on `timeframe`
    candles, as a percent of the last close, clamped to [`min_pct`, `max_pct`],
    measured again every `refresh`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    multiple: Annotated[Decimal, Field(gt=0, le=100, allow_inf_nan=False)]
    min_pct: _Pct
    max_pct: _Pct
    timeframe: str = "5m"
    period: Annotated[int, Field(ge=1, le=500)] = 14
    refresh: timedelta = timedelta(minutes=15)

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.min_pct > self.max_pct:
            raise ValueError("min_pct must not exceed max_pct")
        if self.timeframe not in TIMEFRAMES:
            raise ValueError(f"timeframe must be one of {', '.join(TIMEFRAMES)}")
        if self.refresh < timedelta(minutes=1):
            raise ValueError("refresh must be at least one minute")
        return self

    @property
    def candles_needed(self) -> int:
        """Candles to fetch: `period` true ranges need one more candle before them."""
        return self.period + 1


def _true_range(candle: Candle, prev_close: Decimal) -> Decimal:
    return max(
        candle.high - candle.low, abs(candle.high - prev_close), abs(candle.low - prev_close)
    )


def average_true_range(candles: Sequence[Candle], period: int) -> Decimal | None:
    """Wilder's ATR over `candles` (oldest first): the first ATR is the mean of the
    first `period` true ranges, each later one (atr * (period - 1) + tr) / period.
    The first candle only provides a previous close. None with fewer than
    `period + 1` candles. Raises ValueError if the candles are not in time order."""
    if period < 1:
        raise ValueError("period must be at least 1")
    if any(b.open_time_ms <= a.open_time_ms for a, b in itertools.pairwise(candles)):
        raise ValueError("candles must be strictly in time order")
    if len(candles) < period + 1:
        return None
    ranges = [_true_range(c, p.close) for p, c in itertools.pairwise(candles)]
    n = Decimal(period)
    atr = _CTX.divide(sum(ranges[:period], Decimal(0)), n)
    for tr in ranges[period:]:
        atr = _CTX.divide(_CTX.add(_CTX.multiply(atr, n - 1), tr), n)
    return atr


def volatility_callback_pct(rule: VolatilityCallback, candles: Sequence[Candle]) -> Decimal | None:
    """The callback in percent for `candles` (oldest first; the last one may be forming):
    `multiple` x ATR / last close x 100, rounded up to 0.0001 % and clamped to
    [`min_pct`, `max_pct`]. None when there are too few candles to measure, so the
    caller keeps its fixed callback."""
    atr = average_true_range(candles, rule.period)
    if atr is None:
        return None
    pct = _CTX.divide(
        _CTX.multiply(_CTX.multiply(atr, rule.multiple), Decimal(100)), candles[-1].close
    )
    pct = pct.quantize(_PCT_QUANTUM, rounding=ROUND_CEILING)
    return min(max(pct, rule.min_pct), rule.max_pct)
