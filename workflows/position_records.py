"""Pure mapping from a position's workflow state to the store's rows."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

from domain.orders import Fill, OrderIntent, OrderStatus, OrderView, OutsideOrder
from domain.position import PositionSnapshot, PositionSpec, PositionState, average_price
from domain.records import OrderRecord, OrderStatusName, PositionRecord

_ORDER_STATUS: dict[OrderStatus, OrderStatusName] = {
    OrderStatus.OPEN: "open",
    OrderStatus.PARTIALLY_FILLED: "partially_filled",
    OrderStatus.FILLED: "filled",
    OrderStatus.CANCELED: "canceled",
    OrderStatus.EXPIRED: "expired",
    OrderStatus.REJECTED: "rejected",
    OrderStatus.UNKNOWN: "unknown",
}


def position_record(
    position_id: str, workflow_id: str, spec: PositionSpec, snap: PositionSnapshot, revision: int
) -> PositionRecord:
    """The `positions` row for the current snapshot at the workflow's write `revision`."""
    return PositionRecord(
        id=position_id,
        workflow_id=workflow_id,
        account=spec.account,
        exchange=spec.exchange.value,
        symbol=spec.symbol,
        side=spec.side.value,
        status=snap.state.value,
        revision=revision,
        signal_id=spec.signal_id,
        adopted=spec.adopt,
        requested_qty=None if snap.entry_order is None else snap.entry_order.qty,
        quantity=snap.qty,
        entry_price=snap.avg_entry_price,
        stop_price=snap.stop_price,
        stop_order_id=None if snap.stop is None else snap.stop.client_order_id,
        exit_price=snap.avg_exit_price,
        realized_pnl=snap.realised_pnl,
        fees=snap.fees,
        funding=snap.funding,
        exit_reason=None if snap.close_reason is None else snap.close_reason.value,
        opened_at=snap.opened_at,
        closed_at=snap.closed_at
        if snap.state in (PositionState.CLOSED, PositionState.ROLLED_BACK)
        else None,
    )


def order_record(
    position_id: str,
    spec: PositionSpec,
    intent: OrderIntent,
    view: OrderView | None,
    revision: int,
    *,
    status: OrderStatus | None = None,
) -> OrderRecord:
    """The `orders` row of one of our orders: the intent plus the exchange's view."""
    final = status or (view.status if view is not None else OrderStatus.UNKNOWN)
    return OrderRecord(
        client_order_id=intent.client_order_id,
        position_id=position_id,
        account=spec.account,
        exchange=spec.exchange.value,
        symbol=spec.symbol,
        kind=intent.kind.value,
        side=intent.side.value,
        order_type=intent.type.value,
        status=_ORDER_STATUS[final],
        quantity=intent.qty,
        revision=revision,
        exchange_order_id=None if view is None else view.exchange_order_id,
        filled_quantity=view.filled_qty if view is not None else 0,
        trigger_price=intent.trigger_price,
        average_price=None if view is None else view.average_price,
        reduce_only=intent.reduce_only,
    )


def executed_order_record(
    position_id: str,
    spec: PositionSpec,
    intent: OrderIntent,
    exchange_order_id: str | None,
    fills: Sequence[Fill],
    revision: int,
) -> OrderRecord:
    """The `orders` row of one of our orders booked from its executions (no view of
    the order at hand): filled, with the quantity and average price they add up to."""
    qty = sum((f.qty for f in fills), Decimal(0))
    return order_record(
        position_id, spec, intent, None, revision, status=OrderStatus.FILLED
    ).model_copy(
        update={
            "exchange_order_id": exchange_order_id,
            "filled_quantity": qty,
            "average_price": average_price(fills) if qty > 0 else None,
        }
    )


def outside_order_record(
    position_id: str, spec: PositionSpec, order: OutsideOrder, revision: int
) -> OrderRecord:
    """The `orders` row of an order posguard did not place that closed the position
    (kind `liquidation` or `outside`), filled by its executions."""
    qty = sum((f.qty for f in order.fills), Decimal(0))
    value = sum((f.qty * f.price for f in order.fills), Decimal(0))
    return OrderRecord(
        client_order_id=order.record_id,
        position_id=position_id,
        account=spec.account,
        exchange=spec.exchange.value,
        symbol=spec.symbol,
        kind="liquidation" if order.liquidation else "outside",
        side=order.side.value,
        order_type="market",
        status="filled",
        quantity=qty,
        revision=revision,
        exchange_order_id=order.exchange_order_id,
        filled_quantity=qty,
        average_price=value / qty if qty > 0 else None,
        reduce_only=True,
    )
