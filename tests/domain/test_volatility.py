"""The volatility callback: Wilder's ATR and the clamped callback (domain.volatility)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from domain.trailing import TrailingRule
from domain.volatility import (
    Candle,
    VolatilityCallback,
    average_true_range,
    volatility_callback_pct,
)

D = Decimal
MIN = 60_000


def candle(i: int, o: str, h: str, low: str, c: str) -> Candle:
    return Candle(open_time_ms=i * MIN, open=D(o), high=D(h), low=D(low), close=D(c))


# Worked by hand: true ranges 2, 4 (gap up: high 106 - previous close 102), 3, 5.
CANDLES = [
    candle(0, "100", "101", "99", "100"),
    candle(1, "100", "102", "100", "102"),
    candle(2, "104", "106", "103", "105"),
    candle(3, "105", "106", "103", "104"),
    candle(4, "104", "104", "99", "100"),
]


def test_atr_is_wilders_average_of_true_ranges() -> None:
    # period 2: first ATR = (2 + 4) / 2 = 3; then (3*1 + 3) / 2 = 3; then (3*1 + 5) / 2 = 4
    assert average_true_range(CANDLES, 2) == D(4)
    # period 4: the mean of all four true ranges
    assert average_true_range(CANDLES, 4) == D("3.5")
    assert average_true_range(CANDLES, 5) is None  # five candles give four ranges


def test_candles_out_of_order_are_refused() -> None:
    with pytest.raises(ValueError, match="time order"):
        average_true_range([CANDLES[1], CANDLES[0], *CANDLES[2:]], 2)


def rule(multiple: str, low: str = "0.1", high: str = "20", period: int = 2) -> VolatilityCallback:
    return VolatilityCallback(
        multiple=D(multiple), min_pct=D(low), max_pct=D(high), period=period, timeframe="1m"
    )


@pytest.mark.parametrize(
    ("r", "expected"),
    [
        (rule("1"), D(4)),  # ATR 4 on a close of 100: 4 %
        (rule("0.5"), D(2)),
        (rule("3", high="10"), D(10)),  # clamped to the ceiling
        (rule("0.01", low="0.5"), D("0.5")),  # clamped to the floor
        (rule("1", period=4), D("3.5")),
    ],
)
def test_callback_is_a_multiple_of_atr_percent_clamped(
    r: VolatilityCallback, expected: Decimal
) -> None:
    assert volatility_callback_pct(r, CANDLES) == expected


def test_callback_rounds_up_to_a_ten_thousandth_of_a_percent() -> None:
    candles = [*CANDLES[:-1], candle(4, "3", "104", "3", "3")]  # a close of 3: no exact %
    measured = volatility_callback_pct(rule("0.01"), candles)
    atr = average_true_range(candles, 2)
    assert atr is not None and measured is not None
    assert measured == (atr * D("0.01") * 100 / D(3)).quantize(
        D("0.0001"), rounding="ROUND_CEILING"
    )
    assert measured >= atr * D("0.01") * 100 / D(3)


def test_too_few_candles_give_no_measurement() -> None:
    assert volatility_callback_pct(rule("1", period=14), CANDLES) is None


@given(
    closes=st.lists(
        st.decimals(min_value=D("0.01"), max_value=D(100000), places=2), min_size=3, max_size=40
    ),
    multiple=st.decimals(min_value=D("0.1"), max_value=D(10), places=1),
)
def test_callback_always_within_floor_and_ceiling(closes: list[Decimal], multiple: Decimal) -> None:
    candles = [
        Candle(open_time_ms=i * MIN, open=c, high=c * D("1.01"), low=c * D("0.99"), close=c)
        for i, c in enumerate(closes)
    ]
    r = rule(str(multiple), low="0.3", high="7")
    measured = volatility_callback_pct(r, candles)
    assert measured is not None and D("0.3") <= measured <= D(7)


@pytest.mark.parametrize(
    "bad",
    [
        {"min_pct": D(5), "max_pct": D(1)},
        {"timeframe": "7m"},
        {"refresh": timedelta(seconds=10)},
        {"multiple": D(0)},
        {"period": 0},
    ],
)
def test_invalid_rules_are_refused(bad: dict[str, object]) -> None:
    fields: dict[str, object] = {"multiple": D(2), "min_pct": D("0.5"), "max_pct": D(5), **bad}
    with pytest.raises(ValidationError):
        VolatilityCallback.model_validate(fields)


def test_trailing_rule_takes_the_measured_callback_only_with_volatility() -> None:
    fixed = TrailingRule(callback_pct=D(1))
    assert fixed.params(D("0.01"), D("2.5")).callback_pct == D(1)
    follows = TrailingRule(callback_pct=D(1), volatility=rule("2"))
    assert follows.params(D("0.01")).callback_pct == D(1)  # not measured yet: the fallback
    assert follows.params(D("0.01"), D("2.5")).callback_pct == D("2.5")
    again = TrailingRule.model_validate_json(follows.model_dump_json())
    assert again == follows
