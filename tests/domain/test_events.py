"""The event catalogue: complete, typed, exactly serialisable."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from domain.events import (
    PAYLOADS,
    Event,
    EventType,
    OrderFilled,
    SignalRejected,
    event_id,
    make_event,
)
from domain.types import Severity

T0 = datetime(2026, 11, 24, tzinfo=UTC)

# The audit's section 2.2 matrix, one line per row, mapped to our types.
AUDIT_MATRIX = {
    "signal received": EventType.SIGNAL_RECEIVED,
    "signal validated": EventType.SIGNAL_VALIDATED,
    "signal filtered (stoplist)": EventType.SIGNAL_FILTERED,
    "wave detected": EventType.WAVE_DETECTED,
    "wave processed": EventType.WAVE_PROCESSED,
    "position create started": EventType.POSITION_CREATE_STARTED,
    "entry order placed": EventType.ENTRY_ORDER_PLACED,
    "entry order filled": EventType.ENTRY_ORDER_FILLED,
    "sl placement started": EventType.SL_PLACEMENT_STARTED,
    "sl placed successfully": EventType.SL_PLACED,
    "sl placement failed": EventType.SL_PLACEMENT_FAILED,
    "position rollback": EventType.POSITION_ROLLED_BACK,
    "position opened": EventType.POSITION_ACTIVE,
    "ts instance created": EventType.TRAILING_CREATED,
    "price update received": EventType.PRICE_BAND_CROSSED,
    "ts activated": EventType.TRAILING_ACTIVATED,
    "sl updated (trailing)": EventType.TRAILING_STOP_MOVED,
    "sl update failed": EventType.TRAILING_MOVE_FAILED,
    "breakeven triggered": EventType.TRAILING_BREAKEVEN,
    "ts removed": EventType.TRAILING_REMOVED,
    "sl check started": EventType.PROTECTION_CHECK_STARTED,
    "missing sl detected": EventType.STOP_MISSING_DETECTED,
    "sl set (protection)": EventType.PROTECTION_STOP_SET,
    "sl set failed": EventType.PROTECTION_STOP_FAILED,
    "close triggered": EventType.CLOSE_TRIGGERED,
    "close order placed": EventType.CLOSE_ORDER_PLACED,
    "close order filled": EventType.CLOSE_ORDER_FILLED,
    "position closed": EventType.POSITION_CLOSED,
    "sync started": EventType.SYNC_STARTED,
    "phantom detected": EventType.PHANTOM_DETECTED,
    "phantom closed": EventType.PHANTOM_CLOSED,
    "missing position added": EventType.UNTRACKED_DETECTED,
    "quantity mismatch": EventType.QUANTITY_MISMATCH,
    "sync completed": EventType.SYNC_COMPLETED,
    "zombie detected": EventType.ZOMBIE_DETECTED,
    "zombie cancelled": EventType.ZOMBIE_CANCELLED,
    "zombie cancel failed": EventType.ZOMBIE_CANCEL_FAILED,
    "bot started": EventType.PROCESS_STARTED,
    "bot stopped": EventType.PROCESS_STOPPED,
    "websocket connected": EventType.WEBSOCKET_CONNECTED,
    "websocket disconnected": EventType.WEBSOCKET_DISCONNECTED,
    "websocket reconnection": EventType.WEBSOCKET_RECONNECTED,
    "database connection loss": EventType.DB_CONNECTION_LOST,
    "database recovery": EventType.DB_CONNECTION_RECOVERED,
    "api rate limit hit": EventType.RATE_LIMIT_HIT,
    "critical error": EventType.CRITICAL_ERROR,
    "alert sent": EventType.ALERT_SENT,
}


def test_catalogue_covers_the_audit_matrix_with_at_least_40_types() -> None:
    assert len(EventType) >= 40
    assert set(AUDIT_MATRIX.values()) <= set(EventType)


def test_every_event_type_has_a_payload_model() -> None:
    assert set(PAYLOADS) == set(EventType)


def test_make_event_refuses_the_wrong_payload_shape() -> None:
    with pytest.raises(TypeError):
        make_event(
            EventType.SL_PLACED,
            SignalRejected(signal_id=None, reason="x"),
            event_id="e",
            occurred_at=T0,
        )


def test_event_round_trips_through_json_exactly() -> None:
    qty = Decimal("0.000000000000000001")
    event = make_event(
        EventType.ENTRY_ORDER_FILLED,
        OrderFilled(
            client_order_id="c", exchange_order_id="9", filled_quantity=qty, average_price=qty
        ),
        event_id=event_id("wf/run", 3),
        occurred_at=T0,
        symbol="BTCUSDT",
    )
    again = Event.model_validate_json(event.model_dump_json())
    assert again == event
    assert Decimal(again.payload["filled_quantity"]) == qty


def test_failure_events_default_to_a_loud_severity() -> None:
    event = make_event(
        EventType.SIGNAL_REJECTED,
        SignalRejected(signal_id="s", reason="bad"),
        event_id="x",
        occurred_at=T0,
    )
    assert event.severity is Severity.WARNING


def test_event_ids_are_deterministic_and_ordered() -> None:
    assert event_id("wf/r", 2) == event_id("wf/r", 2)
    assert event_id("wf/r", 2) < event_id("wf/r", 10)
    with pytest.raises(ValueError):
        event_id("wf/r", -1)
