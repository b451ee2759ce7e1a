"""Order intents, normalised order views and fills."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal as D
from typing import Any

import pytest
from pydantic import ValidationError

from domain.orders import (
    Fill,
    OrderIntent,
    OrderKind,
    OrderRef,
    OrderStatus,
    OrderType,
    OrderView,
    WorkingType,
    close_intent,
    entry_intent,
    status_from_ccxt,
    stop_intent,
    take_profit_intent,
)
from domain.types import OrderSide, Side

AT = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


@pytest.mark.parametrize("side", list(Side))
def test_entry_opens_on_the_entry_side(side: Side) -> None:
    intent = entry_intent("pgx-entry-0", "BTCUSDT", side, D("0.01"))
    assert intent.side is side.entry_order_side
    assert intent.type is OrderType.MARKET
    assert not intent.reduce_only
    assert intent.trigger_price is None
    assert not intent.is_conditional


@pytest.mark.parametrize("side", list(Side))
def test_close_is_reduce_only_on_the_exit_side(side: Side) -> None:
    intent = close_intent("pgx-close-1", "BTCUSDT", side, D("0.01"))
    assert intent.side is side.exit_order_side
    assert intent.reduce_only
    assert intent.kind is OrderKind.CLOSE


@pytest.mark.parametrize("side", list(Side))
@pytest.mark.parametrize("emergency", [False, True])
def test_stop_is_reduce_only_stop_market_on_mark(side: Side, emergency: bool) -> None:
    intent = stop_intent("pgx-sl-2", "BTCUSDT", side, D("0.01"), D("95000"), emergency=emergency)
    assert intent.side is side.exit_order_side
    assert intent.type is OrderType.STOP_MARKET
    assert intent.kind is (OrderKind.EMERGENCY_STOP if emergency else OrderKind.STOP)
    assert intent.reduce_only
    assert intent.working_type is WorkingType.MARK_PRICE
    assert intent.trigger_price == D("95000")
    assert intent.is_conditional


@pytest.mark.parametrize("side", list(Side))
def test_take_profit(side: Side) -> None:
    intent = take_profit_intent("pgx-tp-3", "BTCUSDT", side, D("0.01"), D("99000"))
    assert intent.side is side.exit_order_side
    assert intent.type is OrderType.TAKE_PROFIT_MARKET
    assert intent.reduce_only


VALID: dict[str, Any] = {
    "client_order_id": "pgx-sl-2",
    "kind": "stop",
    "symbol": "BTCUSDT",
    "side": "sell",
    "type": "stop_market",
    "qty": "0.01",
    "trigger_price": "95000",
    "reduce_only": True,
}


def test_valid_intent_round_trips() -> None:
    intent = OrderIntent.model_validate(VALID)
    assert OrderIntent.model_validate(intent.model_dump(mode="json")) == intent


@pytest.mark.parametrize(
    "update",
    [
        {"type": "market"},  # a stop must be stop_market
        {"trigger_price": None},  # conditional without trigger
        {"reduce_only": False},  # an exit must be reduce-only
        {"kind": "entry", "type": "market", "trigger_price": None},  # entry reduce-only
        {"kind": "close", "type": "market"},  # market order with trigger
        {"qty": "0"},
        {"qty": 0.01},  # float refused
        {"client_order_id": "x" * 37},
        {"client_order_id": ""},
    ],
)
def test_inconsistent_intents_are_refused(update: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        OrderIntent.model_validate(VALID | update)


@pytest.mark.parametrize(
    ("status", "filled", "expected"),
    [
        ("open", None, OrderStatus.OPEN),
        ("open", D("0"), OrderStatus.OPEN),
        ("open", D("0.5"), OrderStatus.PARTIALLY_FILLED),
        ("closed", D("1"), OrderStatus.FILLED),
        ("closed", None, OrderStatus.FILLED),  # binance algo: triggered
        ("canceled", D("0"), OrderStatus.CANCELED),
        ("cancelled", None, OrderStatus.CANCELED),
        ("expired", None, OrderStatus.EXPIRED),
        ("rejected", None, OrderStatus.REJECTED),
        (None, None, OrderStatus.UNKNOWN),  # bybit create answer
        ("weird", None, OrderStatus.UNKNOWN),
    ],
)
def test_status_from_ccxt(status: str | None, filled: D | None, expected: OrderStatus) -> None:
    assert status_from_ccxt(status, filled) is expected


@pytest.mark.parametrize("status", list(OrderStatus))
def test_final_statuses(status: OrderStatus) -> None:
    final = {OrderStatus.FILLED, OrderStatus.CANCELED, OrderStatus.EXPIRED, OrderStatus.REJECTED}
    assert status.is_final is (status in final)


def test_order_view_round_trips_exactly() -> None:
    view = OrderView(
        exchange_order_id="123",
        client_order_id="pgx-sl-2",
        symbol="BTCUSDT",
        side=OrderSide.SELL,
        status=OrderStatus.FILLED,
        qty=D("0.010"),
        filled_qty=D("0.010"),
        average_price=D("94999.90"),
        fee=D("0.00037999960"),
        trigger_price=D("95000.0"),
        reduce_only=True,
        is_conditional=True,
        updated_at=AT,
    )
    dumped = view.model_dump(mode="json")
    assert dumped["average_price"] == "94999.90"
    again = OrderView.model_validate(dumped)
    assert again == view
    assert str(again.fee) == "0.00037999960"
    assert again.is_final


def test_foreign_order_view_has_no_client_id() -> None:
    view = OrderView(exchange_order_id="9", symbol="BTCUSDT", status=OrderStatus.OPEN)
    assert view.client_order_id is None
    assert view.filled_qty == 0
    assert not view.is_final


def test_fill_and_ref_round_trip() -> None:
    fill = Fill(
        trade_id="t1", client_order_id="c", qty=D("0.5"), price=D("100.5"), fee=D("0.02"), at=AT
    )
    assert Fill.model_validate(fill.model_dump(mode="json")) == fill
    ref = OrderRef(client_order_id="c", exchange_order_id="1", qty=D("0.5"), trigger_price=D("99"))
    assert OrderRef.model_validate_json(ref.model_dump_json()) == ref


def test_naive_timestamps_are_refused() -> None:
    with pytest.raises(ValidationError):
        Fill(trade_id="t", qty=D("1"), price=D("1"), at=datetime(2025, 1, 1))
