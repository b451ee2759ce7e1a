"""Candle building from recorded marks, without HTTP (``simulator.candles``)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator.candles import (
    INTERVALS,
    WEEK_MS,
    Candle,
    PriceHistory,
    add_fills,
    align,
    build_candles,
)
from simulator.clock import ManualClock
from simulator.engine import Engine
from simulator.markets import build_markets
from simulator.model import Fill

MIN = 60_000
B = 1_700_000_040_000  # a minute boundary (not an hour one)
D = Decimal


def ohlc(c: Candle) -> tuple[int, int, str, str, str, str]:
    return (c.open_time, c.close_time, str(c.open), str(c.high), str(c.low), str(c.close))


def naive(
    points: list[tuple[int, Decimal]], iv: int, lo: int, hi: int
) -> list[tuple[int, int, str, str, str, str]]:
    """The definition, literally: one scan of all points per candle."""
    out = []
    for o in range(lo, hi + 1, iv):
        before = [p for t, p in points if t <= o]
        inside = [p for t, p in points if o <= t < o + iv]
        if before:
            first = before[-1]
        elif inside:
            first = inside[0]
        else:
            continue
        every = [first, *inside]
        close = inside[-1] if inside else first
        out.append((o, o + iv - 1, str(first), str(max(every)), str(min(every)), str(close)))
    return out


def row(k: int, o: str, h: str, lo: str, c: str) -> tuple[int, int, str, str, str, str]:
    """Expected 1m candle ``k`` (counted from B)."""
    return (B + k * MIN, B + (k + 1) * MIN - 1, o, h, lo, c)


def test_align_minutes_and_monday_weeks() -> None:
    assert align(B, MIN) == B and align(B + 59_999, MIN) == B and align(B - 1, MIN) == B - MIN
    for iv in INTERVALS.values():
        o = align(B + 12_345, iv)
        assert o <= B + 12_345 < o + iv
    week = align(B, WEEK_MS)
    monday = datetime.fromtimestamp(week / 1000, tz=UTC)
    assert (monday.weekday(), monday.hour, monday.minute) == (0, 0, 0)
    assert datetime.fromtimestamp(align(0, WEEK_MS) / 1000, tz=UTC).weekday() == 0


def test_build_candles_by_hand() -> None:
    pts = [
        (B - 30_000, D("10")),  # first mark inside candle -1: it opens there
        (B, D("11")),  # exactly at candle 0's open: the price in force at its start
        (B + 10_000, D("13")),
        (B + 20_000, D("9")),
        (B + 59_999, D("12")),
        (B + 90_000, D("14")),  # candle 1 opens at the carried 12
        (B + 4 * MIN + 1, D("8")),  # candles 2, 3 flat at 14
    ]
    times, prices = [t for t, _ in pts], [p for _, p in pts]
    got = [ohlc(c) for c in build_candles(times, prices, MIN, B - 3 * MIN, B + 5 * MIN)]
    assert got == [
        row(-1, "10", "10", "10", "10"),
        row(0, "11", "13", "9", "12"),
        row(1, "12", "14", "12", "14"),
        row(2, "14", "14", "14", "14"),
        row(3, "14", "14", "14", "14"),
        row(4, "14", "14", "8", "8"),
        row(5, "8", "8", "8", "8"),
    ]
    # 5m candles: B is 4 min past a 5m boundary, so the second one spans candles 1..5
    first5 = align(B, 5 * MIN)
    five = build_candles(times, prices, 5 * MIN, first5, first5 + 5 * MIN)
    assert [ohlc(c)[2:] for c in five] == [("10", "13", "9", "12"), ("12", "14", "8", "8")]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 20 * MIN), st.integers(1, 50)),
        min_size=1,
        max_size=40,
    ),
    st.sampled_from([MIN, 3 * MIN, 5 * MIN, 15 * MIN]),
    st.integers(0, 20 * MIN),
    st.integers(0, 12),
)
def test_build_candles_matches_definition(
    raw: list[tuple[int, int]], iv: int, lo_t: int, span: int
) -> None:
    pts = sorted(((B + t, Decimal(p)) for t, p in raw), key=lambda x: x[0])
    lo = align(B + lo_t, iv)
    hi = lo + span * iv
    times, prices = [t for t, _ in pts], [p for _, p in pts]
    assert [ohlc(c) for c in build_candles(times, prices, iv, lo, hi)] == naive(pts, iv, lo, hi)


def test_history_selection_like_binance() -> None:
    h = PriceHistory()
    h.load("BTCUSDT", [(B, D("1")), (B + 2 * MIN + 5, D("2"))], now_ms=B + 10 * MIN + 30_000)
    now = B + 10 * MIN + 30_000

    def opens(**kw: int) -> list[int]:
        return [(c.open_time - B) // MIN for c in h.candles("BTCUSDT", MIN, now, **kw)]

    assert opens() == list(range(11))  # first price's candle .. the forming one
    assert opens(limit=3) == [8, 9, 10]
    assert opens(start_ms=B + 1, limit=2) == [1, 2]  # open times >= startTime
    assert opens(start_ms=B - 3600_000, limit=2) == [0, 1]  # never before the first price
    assert opens(end_ms=B + 4 * MIN, limit=2) == [3, 4]  # open times <= endTime
    assert opens(start_ms=B + MIN, end_ms=B + 3 * MIN + 59_999) == [1, 2, 3]
    assert opens(end_ms=B - 1) == []
    assert opens(start_ms=now + MIN) == []
    assert h.candles("ETHUSDT", MIN, now) == []


def test_history_is_bounded_and_merges_in_time_order() -> None:
    h = PriceHistory(max_points=8)
    for k in range(20):
        h.record("X", B + k, D(k + 1))
    pts = h.points("X")
    assert 8 <= len(pts) <= 9 and pts[-1] == (B + 19, D(20))
    assert [t for t, _ in pts] == sorted(t for t, _ in pts)
    h2 = PriceHistory()
    h2.record("X", B + 100, D("5"))
    assert h2.load("X", [(B + 150, D("6")), (B + 50, D("4")), (B + 100, D("7"))], B + 200) == 4
    assert h2.points("X") == [
        (B + 50, D("4")),
        (B + 100, D("5")),
        (B + 100, D("7")),
        (B + 150, D("6")),
    ]
    with pytest.raises(ValueError):
        h2.load("X", [(B, D("1")), (B + 200, D("1"))], now_ms=B + 200)
    assert len(h2.points("X")) == 4  # a rejected load changes nothing


def test_engine_records_marks_with_clock_time() -> None:
    clock = ManualClock(B)
    engine = Engine(build_markets(), clock)
    assert engine.history.points("BTCUSDT") == []  # initial marks are not points
    engine.set_price("BTCUSDT", D("94000.5"))
    clock.advance(1500)
    engine.set_price("BTCUSDT", D("94001"))
    assert engine.history.points("BTCUSDT") == [(B, D("94000.5")), (B + 1500, D("94001"))]


def test_fills_add_volume_to_their_candle() -> None:
    candles = [Candle(B + k * MIN, B + (k + 1) * MIN - 1, D(1), D(1), D(1), D(1)) for k in range(3)]

    def fill(t: int, side: str, maker: bool, sym: str = "BTCUSDT") -> Fill:
        q = D("0.5")
        return Fill(1, 1, sym, side, D(10), q, q * 10, D(0), D(0), maker, t)

    fills = [
        fill(B - 1, "BUY", False),  # before the first candle
        fill(B + MIN, "BUY", False),  # taker buy
        fill(B + MIN + 5, "SELL", True),  # maker sell: the taker bought
        fill(B + MIN + 6, "SELL", False, "ETHUSDT"),  # other symbol
        fill(B + 2 * MIN + 7, "SELL", False),  # taker sell
    ]
    add_fills(candles, fills, "BTCUSDT")
    got = [(c.trades, str(c.volume), str(c.quote_volume), str(c.taker_buy_volume)) for c in candles]
    assert got == [(0, "0", "0", "0"), (2, "1.0", "10.0", "1.0"), (1, "0.5", "5.0", "0")]
