"""Sizing by quote and by risk; stop and take-profit levels."""

from __future__ import annotations

from decimal import Decimal as D

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from domain.market import FilterViolation, MarketFilters, is_multiple
from domain.sizing import (
    CapReason,
    InvalidStop,
    NotSized,
    Sized,
    SizingMode,
    SizingOutcome,
    SizingRequest,
    StopRule,
    TakeProfitRule,
    notional_cap,
    size_by_quote,
    size_by_risk,
    size_position,
    stop_from_percent,
    stop_level,
    take_profit_level,
)
from domain.types import Side

F = MarketFilters(
    symbol="BTCUSDT",
    tick_size=D("0.1"),
    step_size=D("0.001"),
    min_qty=D("0.001"),
    max_qty=D("1000"),
    min_notional=D("5"),
)

prices = st.decimals(min_value=D("1000"), max_value=D("200000"), places=1)
amounts = st.decimals(min_value=D("10"), max_value=D("100000"), places=2)
percents = st.decimals(min_value=D("0.1"), max_value=D("50"), places=2)


def test_size_by_quote_floors_to_step() -> None:
    got = size_by_quote(D("100"), D("30000"), F)
    assert got == Sized(qty=D("0.003"), price=D("30000"), notional=D("90.000"))


@pytest.mark.parametrize(
    ("quote", "price", "reason"),
    [
        (D("20"), D("30000"), FilterViolation.BELOW_MIN_QTY),  # floors to 0
        (D("4.5"), D("3000"), FilterViolation.BELOW_MIN_NOTIONAL),
    ],
)
def test_size_by_quote_not_sized(quote: D, price: D, reason: FilterViolation) -> None:
    got = size_by_quote(quote, price, F)
    assert isinstance(got, NotSized)
    assert got.reason is reason


def test_below_min_qty() -> None:
    filters = F.model_copy(update={"min_qty": D("0.01")})
    got = size_by_quote(D("100"), D("30000"), filters)
    assert got == NotSized(reason=FilterViolation.BELOW_MIN_QTY, qty=D("0.003"))


def test_caps() -> None:
    capped = size_by_quote(D("1000"), D("100"), F, max_notional=D("500"))
    assert capped == Sized(
        qty=D("5.000"), price=D("100"), notional=D("500.000"), capped_by=CapReason.MAX_NOTIONAL
    )
    by_max_qty = size_by_quote(D("1000000"), D("100"), F)
    assert isinstance(by_max_qty, Sized)
    assert by_max_qty.qty == D("1000")
    assert by_max_qty.capped_by is CapReason.MAX_QTY


def test_leverage_cap() -> None:
    assert notional_cap(D("100"), D("5")) == D("500")
    with pytest.raises(ValueError):
        notional_cap(D("0"), D("5"))


@given(quote=amounts, price=prices)
def test_quote_sizing_never_exceeds_the_quote_and_is_maximal(quote: D, price: D) -> None:
    got = size_by_quote(quote, price, F)
    if isinstance(got, Sized):
        assert is_multiple(got.qty, F.step_size)
        assert got.notional <= quote
        # one more step would exceed the quote
        assert (got.qty + F.step_size) * price > quote


@pytest.mark.parametrize("side", list(Side))
def test_size_by_risk(side: Side) -> None:
    entry = D("100")
    stop = entry - side.sign * D("2")  # 2 away on the losing side
    got = size_by_risk(D("10"), entry, stop, F)
    assert got == Sized(qty=D("5.000"), price=entry, notional=D("500.000"))


def test_zero_stop_distance_is_not_sized() -> None:
    assert size_by_risk(D("10"), D("100"), D("100"), F) == NotSized(
        reason="zero_stop_distance", qty=D(0)
    )


@pytest.mark.parametrize("side", list(Side))
@given(risk=amounts, entry=prices, pct=percents)
def test_risk_sizing_never_loses_more_than_the_risk(side: Side, risk: D, entry: D, pct: D) -> None:
    stop = stop_level(side, entry, StopRule(percent=pct), F)
    got = size_by_risk(risk, entry, stop, F)
    if isinstance(got, Sized):
        loss_at_stop = abs(entry - stop) * got.qty
        assert loss_at_stop <= risk


@pytest.mark.parametrize("bad", [(D("0"), D("1")), (D("1"), D("0")), (D("-1"), D("1"))])
def test_invalid_inputs_raise(bad: tuple[D, D]) -> None:
    with pytest.raises(ValueError):
        size_by_quote(bad[0], bad[1], F)


@pytest.mark.parametrize("side", list(Side))
@pytest.mark.parametrize("mode", list(SizingMode))
def test_size_position_dispatches(side: Side, mode: SizingMode) -> None:
    entry = D("100")
    stop = entry - side.sign * D("4")
    got = size_position(SizingRequest(mode=mode, amount=D("40")), entry, stop, F)
    expected = D("0.400") if mode is SizingMode.QUOTE else D("10.000")
    assert isinstance(got, Sized)
    assert got.qty == expected


@pytest.mark.parametrize(
    ("side", "pct", "expected"),
    [
        (Side.LONG, D("2"), D("98")),
        (Side.SHORT, D("2"), D("102")),
        (Side.LONG, D("0.5"), D("99.5")),
    ],
)
def test_stop_from_percent(side: Side, pct: D, expected: D) -> None:
    assert stop_from_percent(side, D("100"), pct) == expected


@pytest.mark.parametrize("pct", [D("0"), D("100"), D("-1")])
def test_stop_percent_bounds(pct: D) -> None:
    with pytest.raises(InvalidStop):
        stop_from_percent(Side.LONG, D("100"), pct)


@pytest.mark.parametrize(
    ("side", "rule", "expected"),
    [
        (
            Side.LONG,
            StopRule(percent=D("1.5")),
            D("30394.6"),
        ),  # 30857.5 * 0.985 = 30394.6375 → down
        (Side.SHORT, StopRule(percent=D("1.5")), D("31320.4")),  # 31320.3625 → up
        (Side.LONG, StopRule(price=D("30000.05")), D("30000.0")),
        (Side.SHORT, StopRule(price=D("32000.01")), D("32000.1")),
    ],
)
def test_stop_level_snaps_away_from_the_market(side: Side, rule: StopRule, expected: D) -> None:
    assert stop_level(side, D("30857.5"), rule, F) == expected


@pytest.mark.parametrize("side", list(Side))
def test_stop_on_the_wrong_side_is_refused(side: Side) -> None:
    wrong = D("100") + side.sign * D("1")
    with pytest.raises(InvalidStop):
        stop_level(side, D("100"), StopRule(price=wrong), F)
    with pytest.raises(InvalidStop):
        stop_level(side, D("100"), StopRule(price=D("100")), F)


@pytest.mark.parametrize("side", list(Side))
@given(entry=prices, pct=percents)
def test_stop_level_is_always_protective(side: Side, entry: D, pct: D) -> None:
    stop = stop_level(side, entry, StopRule(percent=pct), F)
    assert side.sign * (entry - stop) > 0
    # at least as far as asked: snapping never brings it closer
    assert abs(entry - stop) >= entry * pct / 100


@pytest.mark.parametrize(
    ("side", "rule", "expected"),
    [
        (Side.LONG, TakeProfitRule(percent=D("3")), D("103.0")),
        (Side.SHORT, TakeProfitRule(percent=D("3")), D("97.0")),
        (Side.LONG, TakeProfitRule(price=D("110.01")), D("110.1")),
        (Side.SHORT, TakeProfitRule(price=D("90.09")), D("90.0")),
    ],
)
def test_take_profit_level(side: Side, rule: TakeProfitRule, expected: D) -> None:
    assert take_profit_level(side, D("100"), rule, F) == expected


@pytest.mark.parametrize("side", list(Side))
def test_take_profit_on_the_losing_side_is_refused(side: Side) -> None:
    with pytest.raises(InvalidStop):
        take_profit_level(side, D("100"), TakeProfitRule(price=D("100") - side.sign), F)


@pytest.mark.parametrize(
    "data",
    [{}, {"percent": "1", "price": "90"}, {"percent": "100"}, {"percent": 1.5}, {"price": "-1"}],
)
def test_stop_rule_validation(data: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        StopRule.model_validate(data)


@pytest.mark.parametrize(
    "outcome",
    [
        Sized(qty=D("0.003"), price=D("30000"), notional=D("90.000"), capped_by=CapReason.MAX_QTY),
        NotSized(reason=FilterViolation.BELOW_MIN_NOTIONAL, qty=D("0.001")),
        NotSized(reason="zero_stop_distance", qty=D("0")),
    ],
)
def test_outcomes_round_trip_through_json(outcome: Sized | NotSized) -> None:
    adapter: TypeAdapter[Sized | NotSized] = TypeAdapter(SizingOutcome)
    assert adapter.validate_python(adapter.dump_python(outcome, mode="json")) == outcome
    assert adapter.validate_json(adapter.dump_json(outcome)) == outcome


def test_request_round_trips() -> None:
    request = SizingRequest(mode=SizingMode.RISK, amount=D("12.50"), max_notional=D("1000"))
    assert SizingRequest.model_validate(request.model_dump(mode="json")) == request
