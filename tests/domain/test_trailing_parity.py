"""Parity with freqtrade's trailing stop on the same price paths.

freqtrade is not imported; its documented behaviour is re-derived here for
`stoploss` (initial, e.g. -0.10), `trailing_stop=True`, `trailing_stop_positive`
(e.g. 0.02), `trailing_stop_positive_offset` (e.g. 0.03) and
`trailing_only_offset_is_reached=True`, leverage 1 and no fees:

- the initial stop is `open * (1 + stoploss)` for a long, `open * (1 - stoploss)`
  for a short;
- `high` is the highest price seen, starting at the open rate (freqtrade's
  `max_rate`); mirrored with `low` for a short;
- once `high >= open * (1 + offset)`, the stop is
  `max(previous_stop, high * (1 - positive))` (short: `min(previous, low * (1 + positive))`);
  before that the initial stop stays.

One deliberate simplification, shared by the formula above and by posguard: freqtrade's
code picks the positive distance only when profit is strictly above the offset
(`high_profit > sl_offset`); at exactly the offset it trails at the initial `stoploss`
distance for that one tick. posguard activates at the offset itself.

posguard is configured accordingly: `callback_pct = 100 * positive`,
`activation_pct = 100 * offset` (offset 0 means trailing from the start:
`activation_pct=None`), no breakeven, `min_step_pct=0`, `min_interval=0`, and a
tick (1e-12) far finer than the prices' two decimals, so tick rounding is exact.
Every move is accepted at once, as an exchange would accept a protective stop.

Stops are compared at every tick the position lives. At the tick where freqtrade's
stop is hit, freqtrade raises its (bot-side) stop and exits on the same tick; posguard
never sends a stop at or beyond the mark (the exchange would reject it), so there its
new stop may be held as `pending` instead of live: the same level, not yet placed.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal, localcontext

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.trailing import (
    TrailingParams,
    TrailingState,
    initial_state,
    on_move_result,
    on_price,
)
from domain.types import Side
from tests.domain.test_trailing import T0

D = Decimal
TINY_TICK = D("1e-12")


def freqtrade_stops(
    side: Side,
    open_rate: Decimal,
    prices: list[Decimal],
    stoploss: Decimal,
    positive: Decimal,
    offset: Decimal,
) -> list[Decimal]:
    """freqtrade's stop after each price (formula above), in exact arithmetic."""
    with localcontext(prec=100):
        if side is Side.LONG:
            stop = open_rate * (1 + stoploss)
            high = open_rate
            out = []
            for price in prices:
                high = max(high, price)
                if high >= open_rate * (1 + offset):
                    stop = max(stop, high * (1 - positive))
                out.append(stop)
            return out
        stop = open_rate * (1 - stoploss)
        low = open_rate
        out = []
        for price in prices:
            low = min(low, price)
            if low <= open_rate * (1 - offset):
                stop = min(stop, low * (1 + positive))
            out.append(stop)
        return out


def posguard_states(
    side: Side,
    open_rate: Decimal,
    prices: list[Decimal],
    stoploss: Decimal,
    positive: Decimal,
    offset: Decimal,
) -> list[TrailingState]:
    """The state after each price, from the state machine configured like freqtrade."""
    p = TrailingParams(
        callback_pct=positive * 100,
        activation_pct=offset * 100 if offset > 0 else None,
        min_step_pct=D(0),
        min_interval=timedelta(0),
        tick_size=TINY_TICK,
    )
    initial = open_rate * (1 + stoploss) if side is Side.LONG else open_rate * (1 - stoploss)
    state = initial_state(side, open_rate, initial, T0)
    out = []
    for i, price in enumerate(prices):
        now = T0 + timedelta(seconds=i)
        d = on_price(state, p, price, now)
        state = d.state
        if d.move is not None:
            state = on_move_result(state, d.move, True, now)
        out.append(state)
    return out


def posguard_stops(
    side: Side,
    open_rate: Decimal,
    prices: list[Decimal],
    stoploss: Decimal,
    positive: Decimal,
    offset: Decimal,
) -> list[Decimal]:
    """The live stop after each price."""
    return [s.stop for s in posguard_states(side, open_rate, prices, stoploss, positive, offset)]


def until_stopped(side: Side, prices: list[Decimal], stops: list[Decimal]) -> int:
    """How many ticks the position lives: up to and including the one that hits the stop."""
    for i, (price, stop) in enumerate(zip(prices, stops, strict=True)):
        if _hits(side, price, stop):
            return i + 1
    return len(prices)


def path_from(open_rate: Decimal, bps: list[int]) -> list[Decimal]:
    """Prices with two decimals from relative steps (basis points), never below 0.01."""
    prices, price = [], open_rate
    with localcontext(prec=60):
        for b in bps:
            price = max((price * (10_000 + b) / 10_000).quantize(D("0.01")), D("0.01"))
            prices.append(price)
    return prices


def assert_parity(
    side: Side,
    open_rate: Decimal,
    prices: list[Decimal],
    stoploss: Decimal,
    positive: Decimal,
    offset: Decimal,
) -> None:
    ref = freqtrade_stops(side, open_rate, prices, stoploss, positive, offset)
    ours = posguard_states(side, open_rate, prices, stoploss, positive, offset)
    n = until_stopped(side, prices, ref)
    hit = n - 1 if _hits(side, prices[n - 1], ref[n - 1]) else None
    for i in range(n):
        if i == hit and ours[i].stop != ref[i]:
            # The exit tick: the same level, held because it is at/through the mark.
            assert ours[i].pending == ref[i], f"exit tick {i}: {ours[i]} vs {ref[i]}"
            continue
        assert ours[i].stop == ref[i], f"tick {i} {prices[i]}: posguard {ours[i].stop} != {ref[i]}"


def _hits(side: Side, price: Decimal, stop: Decimal) -> bool:
    return price <= stop if side is Side.LONG else price >= stop


CONFIGS = [
    # (stoploss, trailing_stop_positive, trailing_stop_positive_offset)
    (D("-0.10"), D("0.02"), D("0.03")),
    (D("-0.05"), D("0.01"), D("0.015")),
    (D("-0.03"), D("0.005"), D("0.01")),
    (D("-0.20"), D("0.05"), D("0")),  # offset 0: trails from the start
]


@pytest.mark.parametrize("side", list(Side))
@pytest.mark.parametrize(("stoploss", "positive", "offset"), CONFIGS)
@settings(max_examples=60, deadline=None)
@given(
    open_rate=st.decimals(D(10), D(100_000), places=2),
    drift=st.integers(-30, 30),
    bps=st.lists(st.integers(-120, 120), min_size=1, max_size=120),
)
def test_same_stops_as_freqtrade_on_random_paths(
    side: Side,
    stoploss: Decimal,
    positive: Decimal,
    offset: Decimal,
    open_rate: Decimal,
    drift: int,
    bps: list[int],
) -> None:
    prices = path_from(open_rate, [b + drift for b in bps])
    assert_parity(side, open_rate, prices, stoploss, positive, offset)


@pytest.mark.parametrize("side", list(Side))
@settings(max_examples=150, deadline=None)
@given(
    stoploss=st.decimals(D("-0.30"), D("-0.005"), places=3),
    positive=st.decimals(D("0.001"), D("0.09"), places=3),
    offset=st.decimals(D("0"), D("0.10"), places=3),
    open_rate=st.decimals(D(10), D(100_000), places=2),
    bps=st.lists(st.integers(-100, 140), min_size=1, max_size=80),
)
def test_same_stops_as_freqtrade_for_random_settings(
    side: Side,
    stoploss: Decimal,
    positive: Decimal,
    offset: Decimal,
    open_rate: Decimal,
    bps: list[int],
) -> None:
    if side is Side.SHORT:
        bps = [-b for b in bps]
    assert_parity(side, open_rate, path_from(open_rate, bps), stoploss, positive, offset)


def test_worked_example_long() -> None:
    # open 100, stoploss -10 %, positive 2 %, offset 3 %.
    prices = [D(x) for x in ["102", "102.99", "103", "105", "104", "106.50", "104.37"]]
    expected = [D(x) for x in ["90", "90", "100.94", "102.90", "102.90", "104.37", "104.37"]]
    ref = freqtrade_stops(Side.LONG, D(100), prices, D("-0.10"), D("0.02"), D("0.03"))
    assert ref == expected
    ours = posguard_stops(Side.LONG, D(100), prices, D("-0.10"), D("0.02"), D("0.03"))
    assert ours == expected


def test_worked_example_short() -> None:
    prices = [D(x) for x in ["98", "97.01", "97", "95", "96", "93.50"]]
    expected = [D(x) for x in ["110", "110", "98.94", "96.90", "96.90", "95.37"]]
    ref = freqtrade_stops(Side.SHORT, D(100), prices, D("-0.10"), D("0.02"), D("0.03"))
    assert ref == expected
    ours = posguard_stops(Side.SHORT, D(100), prices, D("-0.10"), D("0.02"), D("0.03"))
    assert ours == expected
