"""Directional rounding and exchange filters."""

from __future__ import annotations

from decimal import Decimal as D

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from domain.market import (
    FilterViolation,
    MarketFilters,
    check_order,
    is_multiple,
    round_price_down,
    round_price_up,
    round_qty_down,
    stop_price_for,
)
from domain.types import Side

FILTERS = MarketFilters(
    symbol="BTCUSDT",
    tick_size=D("0.1"),
    step_size=D("0.001"),
    min_qty=D("0.001"),
    max_qty=D("100"),
    min_notional=D("5"),
)

ticks = st.sampled_from([D("0.1"), D("0.01"), D("0.5"), D("0.0001"), D("1"), D("5"), D("0.00001")])
prices = st.decimals(min_value=D("0.00001"), max_value=D("1000000"), places=8)


@pytest.mark.parametrize(
    ("price", "tick", "down", "up"),
    [
        (D("100.17"), D("0.1"), D("100.1"), D("100.2")),
        (D("100.1"), D("0.1"), D("100.1"), D("100.1")),
        (D("100.7"), D("0.5"), D("100.5"), D("101.0")),
        (D("0.123456"), D("0.0001"), D("0.1234"), D("0.1235")),
        (D("94123.456"), D("0.1"), D("94123.4"), D("94123.5")),
        (D("7"), D("5"), D("5"), D("10")),
    ],
)
def test_round_price_table(price: D, tick: D, down: D, up: D) -> None:
    assert round_price_down(price, tick) == down
    assert round_price_up(price, tick) == up


def test_round_qty_down_never_rounds_up() -> None:
    assert round_qty_down(D("0.0019"), D("0.001")) == D("0.001")
    assert round_qty_down(D("0.0009"), D("0.001")) == D("0")


@pytest.mark.parametrize("bad_tick", [D("0"), D("-0.1")])
def test_rounding_rejects_non_positive_increment(bad_tick: D) -> None:
    with pytest.raises(ValueError, match="increment"):
        round_price_down(D("1"), bad_tick)


@given(price=prices, tick=ticks)
def test_round_down_is_the_largest_multiple_below(price: D, tick: D) -> None:
    down = round_price_down(price, tick)
    assert is_multiple(down, tick)
    assert down <= price < down + tick


@given(price=prices, tick=ticks)
def test_round_up_is_the_smallest_multiple_above(price: D, tick: D) -> None:
    up = round_price_up(price, tick)
    assert is_multiple(up, tick)
    assert up - tick < price <= up


@pytest.mark.parametrize("side", list(Side))
@given(raw=prices)
def test_stop_never_rounds_towards_the_market(side: Side, raw: D) -> None:
    stop = stop_price_for(side, raw, FILTERS)
    assert is_multiple(stop, FILTERS.tick_size)
    # a long's stop sells below the market: rounding may only lower it; a short's raise it
    assert side.sign * (raw - stop) >= 0
    assert abs(raw - stop) < FILTERS.tick_size


@pytest.mark.parametrize(
    ("side", "raw", "expected"),
    [
        (Side.LONG, D("95123.45"), D("95123.4")),
        (Side.SHORT, D("95123.45"), D("95123.5")),
        (Side.LONG, D("95123.4"), D("95123.4")),
        (Side.SHORT, D("95123.4"), D("95123.4")),
    ],
)
def test_stop_price_for_table(side: Side, raw: D, expected: D) -> None:
    assert stop_price_for(side, raw, FILTERS) == expected


@pytest.mark.parametrize(
    ("qty", "price", "reduce_only", "expected"),
    [
        (D("0.01"), D("100000"), False, None),
        (D("0"), D("100000"), False, FilterViolation.QTY_NOT_POSITIVE),
        (D("-0.01"), D("100000"), False, FilterViolation.QTY_NOT_POSITIVE),
        (D("0.01"), D("0"), False, FilterViolation.PRICE_NOT_POSITIVE),
        (D("0.0105"), D("100000"), False, FilterViolation.QTY_OFF_STEP),
        (D("101"), D("1"), False, FilterViolation.ABOVE_MAX_QTY),
        (D("0.001"), D("1000"), False, FilterViolation.BELOW_MIN_NOTIONAL),
        # reduce-only orders are exempt from min notional (Binance -4164)
        (D("0.001"), D("1000"), True, None),
        # a market order's reference price (mark) need not be on the tick
        (D("0.01"), D("100000.123"), False, None),
    ],
)
def test_check_order_table(
    qty: D, price: D, reduce_only: bool, expected: FilterViolation | None
) -> None:
    assert check_order(qty, price, FILTERS, reduce_only=reduce_only) == expected


def test_check_order_below_min_qty() -> None:
    filters = FILTERS.model_copy(update={"min_qty": D("0.01")})
    assert check_order(D("0.005"), D("100000"), filters) is FilterViolation.BELOW_MIN_QTY


def test_notional_uses_contract_size() -> None:
    filters = FILTERS.model_copy(update={"contract_size": D("10")})
    assert filters.notional(D("2"), D("3")) == D("60")


def test_filters_round_trip_through_json_exactly() -> None:
    dumped = FILTERS.model_dump(mode="json")
    assert dumped["tick_size"] == "0.1"
    assert MarketFilters.model_validate(dumped) == FILTERS
    assert MarketFilters.model_validate_json(FILTERS.model_dump_json()) == FILTERS


@pytest.mark.parametrize(
    "update",
    [
        {"tick_size": 0.1},  # float: refused
        {"tick_size": "0"},
        {"step_size": "-1"},
        {"min_qty": "NaN"},
        {"tick_size": "Infinity"},
        {"max_qty": "0.0001", "min_qty": "0.001"},
    ],
)
def test_filters_validation(update: dict[str, object]) -> None:
    data = FILTERS.model_dump(mode="json") | update
    with pytest.raises(ValidationError):
        MarketFilters.model_validate(data)


def test_filters_are_frozen() -> None:
    with pytest.raises(ValidationError):
        FILTERS.tick_size = D("1")  # type: ignore[misc]
