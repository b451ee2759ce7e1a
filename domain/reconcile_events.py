"""The events a reconcile pass records for its findings and actions (pure)."""

from __future__ import annotations

from decimal import Decimal

from domain.events import (
    EventType,
    ForeignOrderDetected,
    Payload,
    PhantomClosed,
    PhantomDetected,
    QuantityMismatch,
    StopMissing,
    UntrackedDetected,
    ZombieCancelFailed,
    ZombieCancelled,
    ZombieDetected,
)
from domain.reconcile import Action, Finding, FindingKind


def detection_event(f: Finding) -> tuple[EventType, Payload] | None:
    """The event that records a finding the first pass it is seen.

    None for a silent workflow: a worker restart silences every workflow for a
    moment, so only one that stays silent is told (the pass's alert).
    """
    if f.kind in (FindingKind.OWNER_SILENT, FindingKind.READ_FAILED):
        return None
    if f.kind in (FindingKind.PHANTOM, FindingKind.PHANTOM_ROW):
        return EventType.PHANTOM_DETECTED, PhantomDetected(
            position_id=f.position_id or "",
            db_state=f.state or "",
            exchange_quantity=f.exchange_qty or Decimal(0),
        )
    if f.kind is FindingKind.UNTRACKED:
        return EventType.UNTRACKED_DETECTED, UntrackedDetected(
            symbol=f.symbol,
            side=f.side.value if f.side is not None else "",
            quantity=f.exchange_qty or Decimal(0),
            entry_price=f.entry_price or Decimal(0),
            adopted_by=f.workflow_id if f.action is Action.ADOPT else None,
        )
    if f.kind is FindingKind.QUANTITY_MISMATCH:
        return EventType.QUANTITY_MISMATCH, QuantityMismatch(
            expected=f.expected_qty or Decimal(0), on_exchange=f.exchange_qty or Decimal(0)
        )
    if f.kind is FindingKind.STOP_MISSING:
        return EventType.STOP_MISSING_DETECTED, StopMissing(
            expected_client_order_id=None, quantity=f.exchange_qty or Decimal(0)
        )
    order = f.order
    assert order is not None, f"{f.kind} finding without its order"
    if f.kind is FindingKind.ZOMBIE:
        return EventType.ZOMBIE_DETECTED, ZombieDetected(
            exchange_order_id=order.exchange_order_id,
            client_order_id=order.client_order_id,
            symbol=f.symbol,
            reason=f.reason,
        )
    return EventType.FOREIGN_ORDER_DETECTED, ForeignOrderDetected(
        exchange_order_id=order.exchange_order_id,
        client_order_id=order.client_order_id,
        symbol=f.symbol,
        side=order.side.value if order.side is not None else None,
        quantity=order.qty,
        reason=f.reason,
    )


def cancel_event(f: Finding, error: str | None) -> tuple[EventType, Payload]:
    """The event of a zombie's cancel: done, or failed with `error`."""
    order = f.order
    assert order is not None
    if error is None:
        return EventType.ZOMBIE_CANCELLED, ZombieCancelled(
            exchange_order_id=order.exchange_order_id, client_order_id=order.client_order_id
        )
    error_type, _, message = error.partition(": ")
    return EventType.ZOMBIE_CANCEL_FAILED, ZombieCancelFailed(
        exchange_order_id=order.exchange_order_id,
        error_type=error_type or "Error",
        message=message or error,
    )


def phantom_closed_event(f: Finding) -> tuple[EventType, Payload]:
    """The event of a store row closed as phantom."""
    return EventType.PHANTOM_CLOSED, PhantomClosed(position_id=f.position_id or "")
