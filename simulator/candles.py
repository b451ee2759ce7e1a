"""Mark-price history per symbol and the Binance klines built from it.

:class:`PriceHistory` keeps ``(time ms, mark)`` points per symbol, oldest first,
bounded in memory. :meth:`PriceHistory.candles` turns them into candles aligned
to interval boundaries, selected by ``startTime``/``endTime``/``limit`` the way
Binance's ``GET /fapi/v1/klines`` does. Pure: no I/O, no clock, all Decimal.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal

from simulator.model import ZERO, Fill

MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS
WEEK_MS = 7 * DAY_MS
# 1970-01-01 was a Thursday; Binance weekly candles open on Monday 00:00 UTC.
WEEK_OFFSET_MS = 4 * DAY_MS

INTERVALS: dict[str, int] = {
    "1m": MINUTE_MS,
    "3m": 3 * MINUTE_MS,
    "5m": 5 * MINUTE_MS,
    "15m": 15 * MINUTE_MS,
    "30m": 30 * MINUTE_MS,
    "1h": HOUR_MS,
    "2h": 2 * HOUR_MS,
    "4h": 4 * HOUR_MS,
    "6h": 6 * HOUR_MS,
    "8h": 8 * HOUR_MS,
    "12h": 12 * HOUR_MS,
    "1d": DAY_MS,
    "3d": 3 * DAY_MS,
    "1w": WEEK_MS,
}

DEFAULT_MAX_POINTS = 200_000


@dataclass(slots=True)
class Candle:
    """One kline. Volumes stay zero unless :func:`add_fills` counted trades into it."""

    open_time: int
    close_time: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal = ZERO
    quote_volume: Decimal = ZERO
    trades: int = 0
    taker_buy_volume: Decimal = ZERO
    taker_buy_quote_volume: Decimal = ZERO


def align(time_ms: int, interval_ms: int) -> int:
    """Open time of the ``interval_ms`` candle containing ``time_ms``."""
    offset = WEEK_OFFSET_MS if interval_ms == WEEK_MS else 0
    return time_ms - (time_ms - offset) % interval_ms


def build_candles(
    times: Sequence[int],
    prices: Sequence[Decimal],
    interval_ms: int,
    first_open: int,
    last_open: int,
) -> list[Candle]:
    """Candles with open times ``first_open..last_open`` (aligned) from sorted points.

    A candle opens at the price in force at its start (the last point at or
    before its open time, else its first point), takes high/low over that and
    the points inside, and closes at its last point (or the carried price).
    Candles before the first point are omitted; later empty ones are flat.
    """
    n = len(times)
    i = bisect_left(times, first_open)  # first point not before the first candle
    carried: Decimal | None = prices[i - 1] if i > 0 else None
    out: list[Candle] = []
    o = first_open
    while o <= last_open:
        end = o + interval_ms
        while i < n and times[i] < o:
            carried = prices[i]
            i += 1
        # The price in force at the open: a point exactly at it wins over the carry.
        j = bisect_right(times, o, i) if i < n and times[i] == o else i
        if j > i:
            open_ = prices[j - 1]
        elif carried is not None:
            open_ = carried
        elif i < n and times[i] < end:
            open_ = prices[i]
        else:
            o = end  # before the first point: no candle
            continue
        high = low = close = open_
        while i < n and times[i] < end:
            p = prices[i]
            if p > high:
                high = p
            elif p < low:
                low = p
            close = p
            i += 1
        out.append(Candle(o, end - 1, open_, high, low, close))
        carried = close
        o = end
    return out


def add_fills(candles: list[Candle], fills: Sequence[Fill], symbol: str) -> None:
    """Count ``symbol``'s fills into the volume fields of contiguous ``candles``.

    ``fills`` must be in time order (the engine appends them as the clock runs).
    """
    if not candles or not fills:
        return
    first, last = candles[0].open_time, candles[-1].close_time
    k = 0
    for j in range(bisect_left(fills, first, key=lambda f: f.time), len(fills)):
        f = fills[j]
        if f.time > last:
            break
        if f.symbol != symbol:
            continue
        while candles[k].close_time < f.time:
            k += 1
        c = candles[k]
        c.volume += f.qty
        c.quote_volume += f.quote_qty
        c.trades += 1
        # The aggressor bought when we bought as taker or sold as maker.
        if (f.side == "BUY") != f.maker:
            c.taker_buy_volume += f.qty
            c.taker_buy_quote_volume += f.quote_qty


class _Series:
    __slots__ = ("prices", "times")

    def __init__(self) -> None:
        self.times: list[int] = []
        self.prices: list[Decimal] = []


class PriceHistory:
    """Mark-price points per symbol, oldest first.

    Contract: keeps at least the last ``max_points`` points of every symbol and
    at most an eighth more (trimming in batches keeps :meth:`record` O(1)
    amortised). Points are ordered by time; equal times keep insertion order.
    """

    def __init__(self, max_points: int = DEFAULT_MAX_POINTS) -> None:
        if max_points < 1:
            raise ValueError("max_points must be positive")
        self.max_points = max_points
        self._trim_at = max_points + max(1, max_points // 8)
        self._series: dict[str, _Series] = {}

    def record(self, symbol: str, time_ms: int, price: Decimal) -> None:
        """Append a live point (hot path: called on every mark change)."""
        s = self._series.get(symbol)
        if s is None:
            s = self._series[symbol] = _Series()
        s.times.append(time_ms)
        s.prices.append(price)
        if len(s.times) >= self._trim_at:
            self._trim(s)

    def _trim(self, s: _Series) -> None:
        drop = len(s.times) - self.max_points
        if drop > 0:
            del s.times[:drop]
            del s.prices[:drop]

    def load(self, symbol: str, points: Iterable[tuple[int, Decimal]], now_ms: int) -> int:
        """Merge past points (each strictly before ``now_ms``) in time order.

        Returns the number of points now held for ``symbol``. Raises ValueError
        (and changes nothing) when a point is not in the past.
        """
        new = sorted(points, key=lambda pt: pt[0])
        if new and new[-1][0] >= now_ms:
            raise ValueError(f"history point at {new[-1][0]} is not before now ({now_ms})")
        s = self._series.get(symbol)
        if s is None:
            s = self._series[symbol] = _Series()
        # Stable sort of two sorted runs: a live point keeps its place before
        # a loaded point with the same time.
        merged = sorted([*zip(s.times, s.prices, strict=True), *new], key=lambda pt: pt[0])
        s.times = [t for t, _ in merged]
        s.prices = [p for _, p in merged]
        self._trim(s)
        return len(s.times)

    def points(self, symbol: str) -> list[tuple[int, Decimal]]:
        """A copy of ``symbol``'s points, oldest first."""
        s = self._series.get(symbol)
        return [] if s is None else list(zip(s.times, s.prices, strict=True))

    def candles(
        self,
        symbol: str,
        interval_ms: int,
        now_ms: int,
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int = 500,
    ) -> list[Candle]:
        """Binance's selection: open times >= ``start_ms`` and <= ``end_ms``.

        With ``start_ms`` the first ``limit`` candles from it; otherwise the
        ``limit`` candles up to ``end_ms`` (or up to the current, still-forming
        candle at ``now_ms``). Never a candle before the first point.
        """
        s = self._series.get(symbol)
        if s is None or not s.times or limit < 1:
            return []
        iv = interval_ms
        current = align(now_ms, iv)
        first = align(s.times[0], iv)
        if start_ms is not None:
            start_open = align(start_ms, iv)
            if start_open < start_ms:
                start_open += iv
            lo = max(start_open, first)
            hi = min(current, lo + (limit - 1) * iv)
            if end_ms is not None:
                hi = min(hi, align(end_ms, iv))
        else:
            hi = current if end_ms is None else min(current, align(end_ms, iv))
            lo = max(first, hi - (limit - 1) * iv)
        if lo > hi:
            return []
        return build_candles(s.times, s.prices, iv, lo, hi)
