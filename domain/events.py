"""The event catalogue: every lifecycle event posguard records in PostgreSQL.

One `EventType` per event of the audit's section 2.2/2.3 matrix (and the few it
misses), each with its own payload model. An `Event` is immutable; its
`event_id` is chosen by the caller deterministically (workflow id + sequence, or
a signal id) so that appending it twice stores one row.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from domain.types import Severity


class EventType(StrEnum):
    """Every kind of event posguard records, grouped as in the audit's matrix."""

    # Signal processing
    SIGNAL_RECEIVED = "signal_received"
    SIGNAL_VALIDATED = "signal_validated"
    SIGNAL_REJECTED = "signal_rejected"
    SIGNAL_FILTERED = "signal_filtered"
    SIGNAL_BUFFER_FULL = "signal_buffer_full"
    # A selected signal whose PositionWorkflow was started (its workflow id).
    SIGNAL_SELECTED = "signal_selected"
    WAVE_DETECTED = "wave_detected"
    WAVE_PROCESSED = "wave_processed"
    # Position opening
    POSITION_CREATE_STARTED = "position_create_started"
    ENTRY_ORDER_PLACED = "entry_order_placed"
    ENTRY_ORDER_FILLED = "entry_order_filled"
    ENTRY_ORDER_FAILED = "entry_order_failed"
    SL_PLACEMENT_STARTED = "sl_placement_started"
    SL_PLACED = "sl_placed"
    SL_PLACEMENT_FAILED = "sl_placement_failed"
    SL_WOULD_TRIGGER_IMMEDIATELY = "sl_would_trigger_immediately"
    POSITION_ACTIVE = "position_active"
    POSITION_ROLLBACK_STARTED = "position_rollback_started"
    POSITION_ROLLED_BACK = "position_rolled_back"
    EMERGENCY_STOP_PLACED = "emergency_stop_placed"
    EMERGENCY_STOP_FAILED = "emergency_stop_failed"
    POSITION_ADOPTED = "position_adopted"
    # Trailing stop
    TRAILING_CREATED = "trailing_created"
    PRICE_BAND_CROSSED = "price_band_crossed"
    TRAILING_ACTIVATED = "trailing_activated"
    TRAILING_STOP_MOVED = "trailing_stop_moved"
    TRAILING_MOVE_FAILED = "trailing_move_failed"
    TRAILING_BREAKEVEN = "trailing_breakeven"
    TRAILING_PARAMS_CHANGED = "trailing_params_changed"
    TRAILING_REMOVED = "trailing_removed"
    # Position protection
    PROTECTION_CHECK_STARTED = "protection_check_started"
    STOP_MISSING_DETECTED = "stop_missing_detected"
    PROTECTION_STOP_SET = "protection_stop_set"
    PROTECTION_STOP_FAILED = "protection_stop_failed"
    # Orders in general
    ORDER_CANCELLED = "order_cancelled"
    ORDER_CANCEL_FAILED = "order_cancel_failed"
    # Position closure
    CLOSE_TRIGGERED = "close_triggered"
    CLOSE_ORDER_PLACED = "close_order_placed"
    CLOSE_ORDER_FILLED = "close_order_filled"
    STOP_TRIGGERED = "stop_triggered"
    TAKE_PROFIT_PLACED = "take_profit_placed"
    TAKE_PROFIT_FILLED = "take_profit_filled"
    POSITION_CLOSED = "position_closed"
    # What closed a position outside posguard: the exchange's liquidation, or an
    # order placed by hand (each execution of it, as the exchange booked it).
    POSITION_LIQUIDATED = "position_liquidated"
    OUTSIDE_CLOSE_FILLED = "outside_close_filled"
    # Synchronisation (reconciliation)
    SYNC_STARTED = "sync_started"
    PHANTOM_DETECTED = "phantom_detected"
    PHANTOM_CLOSED = "phantom_closed"
    UNTRACKED_DETECTED = "untracked_detected"
    QUANTITY_MISMATCH = "quantity_mismatch"
    SYNC_COMPLETED = "sync_completed"
    # Zombie orders
    ZOMBIE_DETECTED = "zombie_detected"
    ZOMBIE_CANCELLED = "zombie_cancelled"
    ZOMBIE_CANCEL_FAILED = "zombie_cancel_failed"
    # An order that is not posguard's and does no harm: reported, left alone.
    FOREIGN_ORDER_DETECTED = "foreign_order_detected"
    # System health
    PROCESS_STARTED = "process_started"
    PROCESS_STOPPED = "process_stopped"
    WEBSOCKET_CONNECTED = "websocket_connected"
    WEBSOCKET_DISCONNECTED = "websocket_disconnected"
    WEBSOCKET_RECONNECTED = "websocket_reconnected"
    DB_CONNECTION_LOST = "db_connection_lost"
    DB_CONNECTION_RECOVERED = "db_connection_recovered"
    RATE_LIMIT_HIT = "rate_limit_hit"
    CRITICAL_ERROR = "critical_error"
    ALERT_SENT = "alert_sent"
    # A message that could not be delivered to a channel (docs/alerts.md).
    ALERT_FAILED = "alert_failed"
    # A raiser ends its alert condition (the stop is placed again, ...).
    ALERT_RESOLVED = "alert_resolved"
    # Operator and exchange controls of new entries
    ENTRIES_PAUSED = "entries_paused"
    ENTRIES_RESUMED = "entries_resumed"
    STOPLIST_CHANGED = "stoplist_changed"


class Payload(BaseModel):
    """Base of every event payload: immutable, no unknown fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")


# --- signal processing -------------------------------------------------------


class SignalReceived(Payload):
    signal_id: str
    symbol: str
    exchange: str
    raw: dict[str, Any] = Field(description="the message exactly as received")


class SignalValidated(Payload):
    signal_id: str
    wave_id: str | None = None


class SignalRejected(Payload):
    signal_id: str | None
    reason: str
    errors: list[str] = Field(default_factory=list)


class SignalFiltered(Payload):
    signal_id: str
    wave_id: str | None
    filter: str = Field(description="stoplist, exchange_unavailable, open_position, score, ...")
    reason: str


class SignalSelected(Payload):
    signal_id: str
    wave_id: str
    rank: int
    position_workflow_id: str


class SignalBufferFull(Payload):
    signal_id: str | None
    capacity: int


class WaveDetected(Payload):
    wave_id: str
    deadline: datetime


class WaveProcessed(Payload):
    wave_id: str
    received: int
    filtered: int
    selected: int
    started_positions: list[str]
    outcomes: dict[str, int] = Field(
        default_factory=dict, description="decisions counted by outcome / filter reason"
    )
    duration_ms: int = Field(default=0, description="from the deadline to the last start")


# --- position opening ---------------------------------------------------------


class PositionCreateStarted(Payload):
    side: str
    quantity: Decimal | None = None
    quote_amount: Decimal | None = None
    stop_price: Decimal | None = None
    signal_id: str | None = None


class OrderPlaced(Payload):
    """Entry, close and stop placements share this shape."""

    client_order_id: str
    exchange_order_id: str | None
    side: str
    quantity: Decimal
    trigger_price: Decimal | None = None
    reduce_only: bool = False


class OrderFilled(Payload):
    client_order_id: str
    exchange_order_id: str | None
    filled_quantity: Decimal
    average_price: Decimal
    fee: Decimal = Decimal(0)
    partial: bool = False


class OrderFailed(Payload):
    client_order_id: str | None
    error_type: str
    message: str
    attempt: int | None = None


class StopPlacementStarted(Payload):
    client_order_id: str
    stop_price: Decimal
    quantity: Decimal


class StopWouldTriggerImmediately(Payload):
    stop_price: Decimal
    mark_price: Decimal | None
    action: str = Field(description="close_at_market or keep_old_stop")


class PositionActive(Payload):
    quantity: Decimal
    entry_price: Decimal
    stop_price: Decimal


class RollbackStarted(Payload):
    reason: str
    quantity: Decimal


class RolledBack(Payload):
    reason: str
    close_price: Decimal | None
    realized_pnl: Decimal


class EmergencyStop(Payload):
    client_order_id: str | None
    stop_price: Decimal
    quantity: Decimal
    error: str | None = None


class PositionAdopted(Payload):
    quantity: Decimal
    entry_price: Decimal
    side: str
    had_stop: bool


# --- trailing -------------------------------------------------------------------


class TrailingCreated(Payload):
    activation_price: Decimal | None
    callback_pct: Decimal
    breakeven_trigger_pct: Decimal | None = None
    params: dict[str, Any] = Field(default_factory=dict)


class PriceBandCrossed(Payload):
    price: Decimal
    wake_below: Decimal | None
    wake_above: Decimal | None


class StopMoved(Payload):
    """Trailing activation, breakeven and every move share this shape."""

    old_stop: Decimal | None
    new_stop: Decimal
    reason: str
    best_price: Decimal | None = None
    client_order_id: str | None = None


class StopMoveFailed(Payload):
    old_stop: Decimal | None
    new_stop: Decimal
    error_type: str
    message: str


class TrailingParamsChanged(Payload):
    old: dict[str, Any]
    new: dict[str, Any]


class TrailingRemoved(Payload):
    reason: str


# --- protection ------------------------------------------------------------------


class ProtectionCheckStarted(Payload):
    positions: int


class StopMissing(Payload):
    expected_client_order_id: str | None
    quantity: Decimal


class ProtectionStopSet(Payload):
    client_order_id: str
    stop_price: Decimal
    quantity: Decimal


class ProtectionStopFailed(Payload):
    error_type: str
    message: str
    attempt: int | None = None


class OrderCancelled(Payload):
    client_order_id: str | None
    exchange_order_id: str | None
    reason: str


class OrderCancelFailed(Payload):
    client_order_id: str | None
    exchange_order_id: str | None
    error_type: str
    message: str


# --- closure -----------------------------------------------------------------------


class CloseTriggered(Payload):
    reason: str = Field(description="stop, take_profit, operator, external, liquidation, age, ...")
    requested_by: str | None = None


class PositionClosed(Payload):
    reason: str
    exit_price: Decimal | None
    quantity: Decimal
    realized_pnl: Decimal
    fees: Decimal
    funding: Decimal = Decimal(0)  # received (+) or paid (-) while held


class OutsideFill(Payload):
    """One execution of an order posguard did not place that reduced its position
    (`position_liquidated`: the exchange's liquidation; `outside_close_filled`: an
    order placed by hand)."""

    exchange_order_id: str
    client_order_id: str | None
    trade_id: str
    price: Decimal
    quantity: Decimal
    fee: Decimal


# --- synchronisation and zombies ----------------------------------------------------


class SyncStarted(Payload):
    exchange: str
    account: str
    positions_known: int


class PhantomDetected(Payload):
    position_id: str
    db_state: str
    exchange_quantity: Decimal


class PhantomClosed(Payload):
    position_id: str


class UntrackedDetected(Payload):
    symbol: str
    side: str
    quantity: Decimal
    entry_price: Decimal
    adopted_by: str | None = None


class QuantityMismatch(Payload):
    expected: Decimal
    on_exchange: Decimal


class SyncCompleted(Payload):
    exchange: str
    account: str
    checked: int
    phantoms: int
    untracked: int
    mismatches: int
    zombies: int
    duration_ms: int


class ZombieDetected(Payload):
    exchange_order_id: str
    client_order_id: str | None
    symbol: str
    reason: str


class ZombieCancelled(Payload):
    exchange_order_id: str
    client_order_id: str | None


class ZombieCancelFailed(Payload):
    exchange_order_id: str
    error_type: str
    message: str


class ForeignOrderDetected(Payload):
    exchange_order_id: str
    client_order_id: str | None
    symbol: str
    side: str | None
    quantity: Decimal | None
    reason: str


# --- system health ------------------------------------------------------------------


class ProcessLifecycle(Payload):
    process: str = Field(description="worker, ingest, market-data, ...")
    version: str
    host: str
    pid: int
    detail: str | None = None


class WebsocketState(Payload):
    url: str
    attempt: int | None = None
    reason: str | None = None
    downtime_ms: int | None = None


class DbConnection(Payload):
    reason: str | None = None
    downtime_ms: int | None = None


class RateLimitHit(Payload):
    exchange: str
    endpoint: str | None
    retry_after_ms: int | None


class CriticalError(Payload):
    error_type: str
    message: str
    context: dict[str, Any] = Field(default_factory=dict)


class AlertSent(Payload):
    """An alert raised (`channel` "log": written to the outbox), or one message of it
    delivered to `channel` (with `message_id` and `kind`)."""

    channel: str
    title: str
    body: str
    message_id: str | None = None
    kind: str | None = None


class AlertFailed(Payload):
    """A message that `channel` did not take after `attempts` tries."""

    channel: str
    message_id: str
    kind: str
    title: str
    error: str
    attempts: int


class AlertResolved(Payload):
    """The raiser ended its condition; `body` says how."""

    condition: str
    title: str
    body: str


# --- entry controls -------------------------------------------------------------------


class EntriesPaused(Payload):
    """New entries of `account` paused; open positions stay managed."""

    account: str
    source: Literal["operator", "exchange"]
    reason: str
    detail: str = ""
    by: str = Field(default="", description="who: the operator's command, or the wave")


class EntriesResumed(Payload):
    """The pauses of `account` cleared: `sources` names the rows removed."""

    account: str
    sources: list[str]
    by: str = ""


class StoplistChanged(Payload):
    """A symbol put on (or its reason changed) or taken off a stoplist; account `*`: all."""

    account: str
    symbol: str
    change: Literal["added", "removed"]
    reason: str = ""
    by: str = ""


PAYLOADS: dict[EventType, type[Payload]] = {
    EventType.SIGNAL_RECEIVED: SignalReceived,
    EventType.SIGNAL_VALIDATED: SignalValidated,
    EventType.SIGNAL_REJECTED: SignalRejected,
    EventType.SIGNAL_FILTERED: SignalFiltered,
    EventType.SIGNAL_BUFFER_FULL: SignalBufferFull,
    EventType.SIGNAL_SELECTED: SignalSelected,
    EventType.WAVE_DETECTED: WaveDetected,
    EventType.WAVE_PROCESSED: WaveProcessed,
    EventType.POSITION_CREATE_STARTED: PositionCreateStarted,
    EventType.ENTRY_ORDER_PLACED: OrderPlaced,
    EventType.ENTRY_ORDER_FILLED: OrderFilled,
    EventType.ENTRY_ORDER_FAILED: OrderFailed,
    EventType.SL_PLACEMENT_STARTED: StopPlacementStarted,
    EventType.SL_PLACED: OrderPlaced,
    EventType.SL_PLACEMENT_FAILED: OrderFailed,
    EventType.SL_WOULD_TRIGGER_IMMEDIATELY: StopWouldTriggerImmediately,
    EventType.POSITION_ACTIVE: PositionActive,
    EventType.POSITION_ROLLBACK_STARTED: RollbackStarted,
    EventType.POSITION_ROLLED_BACK: RolledBack,
    EventType.EMERGENCY_STOP_PLACED: EmergencyStop,
    EventType.EMERGENCY_STOP_FAILED: EmergencyStop,
    EventType.POSITION_ADOPTED: PositionAdopted,
    EventType.TRAILING_CREATED: TrailingCreated,
    EventType.PRICE_BAND_CROSSED: PriceBandCrossed,
    EventType.TRAILING_ACTIVATED: StopMoved,
    EventType.TRAILING_STOP_MOVED: StopMoved,
    EventType.TRAILING_MOVE_FAILED: StopMoveFailed,
    EventType.TRAILING_BREAKEVEN: StopMoved,
    EventType.TRAILING_PARAMS_CHANGED: TrailingParamsChanged,
    EventType.TRAILING_REMOVED: TrailingRemoved,
    EventType.PROTECTION_CHECK_STARTED: ProtectionCheckStarted,
    EventType.STOP_MISSING_DETECTED: StopMissing,
    EventType.PROTECTION_STOP_SET: ProtectionStopSet,
    EventType.PROTECTION_STOP_FAILED: ProtectionStopFailed,
    EventType.ORDER_CANCELLED: OrderCancelled,
    EventType.ORDER_CANCEL_FAILED: OrderCancelFailed,
    EventType.CLOSE_TRIGGERED: CloseTriggered,
    EventType.CLOSE_ORDER_PLACED: OrderPlaced,
    EventType.CLOSE_ORDER_FILLED: OrderFilled,
    EventType.STOP_TRIGGERED: OrderFilled,
    EventType.TAKE_PROFIT_PLACED: OrderPlaced,
    EventType.TAKE_PROFIT_FILLED: OrderFilled,
    EventType.POSITION_CLOSED: PositionClosed,
    EventType.POSITION_LIQUIDATED: OutsideFill,
    EventType.OUTSIDE_CLOSE_FILLED: OutsideFill,
    EventType.SYNC_STARTED: SyncStarted,
    EventType.PHANTOM_DETECTED: PhantomDetected,
    EventType.PHANTOM_CLOSED: PhantomClosed,
    EventType.UNTRACKED_DETECTED: UntrackedDetected,
    EventType.QUANTITY_MISMATCH: QuantityMismatch,
    EventType.SYNC_COMPLETED: SyncCompleted,
    EventType.ZOMBIE_DETECTED: ZombieDetected,
    EventType.ZOMBIE_CANCELLED: ZombieCancelled,
    EventType.ZOMBIE_CANCEL_FAILED: ZombieCancelFailed,
    EventType.FOREIGN_ORDER_DETECTED: ForeignOrderDetected,
    EventType.PROCESS_STARTED: ProcessLifecycle,
    EventType.PROCESS_STOPPED: ProcessLifecycle,
    EventType.WEBSOCKET_CONNECTED: WebsocketState,
    EventType.WEBSOCKET_DISCONNECTED: WebsocketState,
    EventType.WEBSOCKET_RECONNECTED: WebsocketState,
    EventType.DB_CONNECTION_LOST: DbConnection,
    EventType.DB_CONNECTION_RECOVERED: DbConnection,
    EventType.RATE_LIMIT_HIT: RateLimitHit,
    EventType.CRITICAL_ERROR: CriticalError,
    EventType.ALERT_SENT: AlertSent,
    EventType.ALERT_FAILED: AlertFailed,
    EventType.ALERT_RESOLVED: AlertResolved,
    EventType.ENTRIES_PAUSED: EntriesPaused,
    EventType.ENTRIES_RESUMED: EntriesResumed,
    EventType.STOPLIST_CHANGED: StoplistChanged,
}

# Severity an event gets when its producer does not say otherwise.
DEFAULT_SEVERITY: dict[EventType, Severity] = {
    EventType.SIGNAL_REJECTED: Severity.WARNING,
    EventType.SIGNAL_BUFFER_FULL: Severity.ERROR,
    EventType.ENTRY_ORDER_FAILED: Severity.ERROR,
    EventType.SL_PLACEMENT_FAILED: Severity.ERROR,
    EventType.SL_WOULD_TRIGGER_IMMEDIATELY: Severity.WARNING,
    EventType.POSITION_ROLLBACK_STARTED: Severity.WARNING,
    EventType.POSITION_ROLLED_BACK: Severity.WARNING,
    EventType.EMERGENCY_STOP_PLACED: Severity.ERROR,
    EventType.EMERGENCY_STOP_FAILED: Severity.CRITICAL,
    EventType.POSITION_ADOPTED: Severity.WARNING,
    EventType.TRAILING_MOVE_FAILED: Severity.WARNING,
    EventType.STOP_MISSING_DETECTED: Severity.ERROR,
    EventType.PROTECTION_STOP_FAILED: Severity.CRITICAL,
    EventType.ORDER_CANCEL_FAILED: Severity.WARNING,
    EventType.POSITION_LIQUIDATED: Severity.CRITICAL,
    EventType.OUTSIDE_CLOSE_FILLED: Severity.WARNING,
    EventType.PHANTOM_DETECTED: Severity.WARNING,
    EventType.UNTRACKED_DETECTED: Severity.WARNING,
    EventType.QUANTITY_MISMATCH: Severity.WARNING,
    EventType.ZOMBIE_DETECTED: Severity.WARNING,
    EventType.ZOMBIE_CANCEL_FAILED: Severity.ERROR,
    EventType.WEBSOCKET_DISCONNECTED: Severity.WARNING,
    EventType.DB_CONNECTION_LOST: Severity.ERROR,
    EventType.RATE_LIMIT_HIT: Severity.WARNING,
    EventType.CRITICAL_ERROR: Severity.CRITICAL,
    EventType.ALERT_FAILED: Severity.ERROR,
    EventType.ENTRIES_PAUSED: Severity.WARNING,
}


class Event(BaseModel):
    """One recorded event, as stored in the `events` table.

    `event_id` must be deterministic for the fact it records (for a workflow:
    `event_id(correlation_id, seq)`), so a retried append is a no-op.
    `occurred_at` is supplied by the caller (a workflow passes `workflow.now()`),
    never taken from the database clock, for the same reason.
    """

    model_config = ConfigDict(frozen=True)

    event_id: str = Field(min_length=1, max_length=200)
    type: EventType
    occurred_at: datetime
    severity: Severity = Severity.INFO
    correlation_id: str | None = None
    position_id: str | None = None
    account: str | None = None
    exchange: str | None = None
    symbol: str | None = None
    order_id: str | None = None
    payload: dict[str, Any] = Field(default_factory=dict)
    error_message: str | None = None


_EVENT_DEFAULTS: dict[str, Any] = {
    name: field.default for name, field in Event.model_fields.items() if not field.is_required()
}


def unchecked_event(**fields: Any) -> Event:
    """An `Event` built without validation, for hot paths whose values are typed already.

    The caller guarantees every value is what validation would yield (an `EventType`,
    an aware `datetime`, a JSON-ready `payload` dict, an `event_id` of at most 200
    characters, ...): the signal ingest builds two events a signal, and validating
    them again costs more than the rest of building them. Equal to `Event(**fields)`.
    """
    event = object.__new__(Event)
    values = dict(_EVENT_DEFAULTS)
    if "payload" not in fields:
        values["payload"] = {}
    values.update(fields)
    object.__setattr__(event, "__dict__", values)
    object.__setattr__(event, "__pydantic_fields_set__", set(fields))
    object.__setattr__(event, "__pydantic_extra__", None)
    object.__setattr__(event, "__pydantic_private__", None)
    return event


def make_event(
    event_type: EventType,
    payload: Payload,
    *,
    event_id: str,
    occurred_at: datetime,
    severity: Severity | None = None,
    **context: Any,
) -> Event:
    """Build an `Event`, checking that the payload is the catalogue's type for it.

    Raises `TypeError` when `payload` is not the model `PAYLOADS[event_type]`,
    so an event can never be recorded with the wrong shape.
    """
    expected = PAYLOADS[event_type]
    if type(payload) is not expected:
        raise TypeError(f"{event_type} takes {expected.__name__}, not {type(payload).__name__}")
    return Event(
        event_id=event_id,
        type=event_type,
        occurred_at=occurred_at,
        severity=severity or DEFAULT_SEVERITY.get(event_type, Severity.INFO),
        payload=payload.model_dump(mode="json"),
        **context,
    )


def event_id(correlation_id: str, seq: int) -> str:
    """Deterministic id of the `seq`-th event of one correlation (workflow chain).

    The correlation id must be unique per position lifecycle (workflow id plus
    the first run id of the continue-as-new chain), so a reopened symbol never
    reuses an old id.
    """
    if seq < 0:
        raise ValueError("seq must be >= 0")
    return f"{correlation_id}/{seq:06d}"
