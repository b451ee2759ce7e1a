"""Rows the store keeps current: positions, orders, fills, signals, waves, alerts.

These are the store's contract with the workflows. A workflow is the single
writer of its position's rows; `revision` (its event sequence) makes every
write monotonic, so a retried or late activity never overwrites newer data.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from domain.events import Event
from domain.signal_wire import Accepted, Rejected
from domain.types import Severity

PositionStatus = Literal[
    "pending_entry",
    "entry_placed",
    "pending_sl",
    "active",
    "closing",
    "closed",
    "rolled_back",
    "failed",
]
OrderKindName = Literal[
    "entry", "stop", "emergency_stop", "close", "take_profit", "outside", "liquidation"
]
OrderStatusName = Literal[
    "pending", "open", "partially_filled", "filled", "canceled", "expired", "rejected", "unknown"
]


class Record(BaseModel):
    """Base of store rows: immutable values."""

    model_config = ConfigDict(frozen=True)


class PositionRecord(Record):
    """The current state of one position lifecycle (`positions` row)."""

    id: str
    workflow_id: str
    account: str
    exchange: str
    symbol: str
    side: Literal["long", "short"]
    status: PositionStatus
    revision: int = Field(ge=0)
    signal_id: str | None = None
    adopted: bool = False
    requested_qty: Decimal | None = None
    quantity: Decimal = Decimal(0)
    entry_price: Decimal | None = None
    stop_price: Decimal | None = None
    stop_order_id: str | None = None
    trailing_active: bool = False
    exit_price: Decimal | None = None
    realized_pnl: Decimal = Decimal(0)
    fees: Decimal = Decimal(0)
    funding: Decimal = Decimal(0)
    exit_reason: str | None = None
    opened_at: datetime | None = None
    closed_at: datetime | None = None


class OrderRecord(Record):
    """One order posguard placed (`orders` row), keyed by our client order id."""

    client_order_id: str
    position_id: str
    account: str
    exchange: str
    symbol: str
    kind: OrderKindName
    side: Literal["buy", "sell"]
    order_type: str
    status: OrderStatusName
    quantity: Decimal
    revision: int = Field(ge=0)
    exchange_order_id: str | None = None
    filled_quantity: Decimal = Decimal(0)
    trigger_price: Decimal | None = None
    average_price: Decimal | None = None
    reduce_only: bool = False

    def with_revision(self, revision: int) -> OrderRecord:
        """The same row stamped with the workflow's store-write `revision`."""
        return self.model_copy(update={"revision": revision})


class FillRecord(Record):
    """One execution of one of our orders (`fills` row), keyed by (client order id,
    exchange trade id): exchanges number trades per symbol, not per exchange."""

    exchange: str
    trade_id: str
    client_order_id: str
    position_id: str
    price: Decimal
    quantity: Decimal
    filled_at: datetime
    fee: Decimal = Decimal(0)
    fee_asset: str | None = None
    realized_pnl: Decimal = Decimal(0)


class WaveRecord(Record):
    """One wave of one account (`waves` row): the signals of one scoring period.

    `id` is the wave workflow's id, ``wave/{account}/{period start}``. Once
    processed, `outcomes` counts its decisions by outcome and filter reason
    (``{"opened": 3, "max_new_per_wave": 2, ...}``) and `duration_ms` is how long
    the selection took (deadline to the last position started).
    """

    id: str
    account: str | None = None
    period_start: datetime
    deadline: datetime
    status: Literal["collecting", "processing", "processed", "failed"] = "collecting"
    signals_received: int = 0
    signals_selected: int = 0
    signals_filtered: int = 0
    positions_started: int = 0
    outcomes: dict[str, int] = Field(default_factory=dict)
    workflow_id: str | None = None
    processed_at: datetime | None = None
    duration_ms: int | None = None


class DecisionRecord(Record):
    """The one decision of one account about one signal (`signal_decisions` row).

    `outcome` "opened": a PositionWorkflow was started (`position_workflow_id`,
    `rank`); "filtered": `reason` is a `domain.waves.FilterReason` value, or
    ``wave_closed`` for a signal that reached its wave after the selection.
    """

    signal_row_id: str
    account: str
    wave_id: str
    outcome: Literal["opened", "filtered"]
    reason: str | None = None
    detail: str
    rank: int | None = None
    position_workflow_id: str | None = None
    decided_at: datetime


class StoplistEntry(Record):
    """A symbol never to open (`stoplist` row); account ``*`` means every account."""

    account: str = "*"
    symbol: str
    reason: str = ""
    added_by: str = ""
    added_at: datetime | None = None


class AccountPause(Record):
    """Why new entries of an account are paused (`account_pauses` row).

    `source` "operator" (`posguard pause`, cleared by `posguard resume`) or
    "exchange" (key invalid, balance insufficient, maintenance: set and cleared
    by the account's waves as the exchange answers).
    """

    account: str
    source: Literal["operator", "exchange"]
    reason: str
    detail: str = ""
    paused_by: str = ""
    since: datetime | None = None


class SignalRecord(Record):
    """One message of a signal service (`signals` row), stored before anything is done
    with it: an accepted signal, or a rejected one with its reason.

    `id` is the row's key: ``{service}/{signal_id}`` for a valid signal (so a duplicate
    is one row), ``{service}/rejected/{digest}`` for each rejected receipt.
    `raw` is the text received (truncated), which may not be JSON.
    """

    id: str
    service: str
    received_at: datetime
    raw: str
    signal_id: str | None = None
    exchange: str | None = None
    symbol: str | None = None
    side: Literal["long", "short"] | None = None
    action: str | None = None
    signal_at: datetime | None = None
    wave_id: str | None = None
    score_week: Decimal | None = None
    score_month: Decimal | None = None
    status: Literal[
        "received", "validated", "rejected", "filtered", "selected", "opened", "expired"
    ] = "received"
    reason: str | None = None


_SIGNAL_DEFAULTS: dict[str, Any] = {
    name: field.default
    for name, field in SignalRecord.model_fields.items()
    if not field.is_required()
}


def _signal_row(**fields: Any) -> SignalRecord:
    """A `SignalRecord` equal to `SignalRecord(**fields)`, for values typed already."""
    row = object.__new__(SignalRecord)
    values = dict(_SIGNAL_DEFAULTS)
    values.update(fields)
    object.__setattr__(row, "__dict__", values)
    object.__setattr__(row, "__pydantic_fields_set__", set(fields))
    object.__setattr__(row, "__pydantic_extra__", None)
    object.__setattr__(row, "__pydantic_private__", None)
    return row


def signal_record(parsed: Accepted | Rejected, received_at: datetime) -> SignalRecord:
    """The row of one parsed message item: validated, or rejected with its reason.

    Every value comes already typed from a validated `Accepted`/`Rejected` (the
    fields are those the row would validate to), so the row is built without
    validating it again: the ingest's hot path builds one per item.
    """
    if isinstance(parsed, Rejected):
        digest = hashlib.blake2b(
            f"{received_at.isoformat()}\n{parsed.raw}".encode(), digest_size=12
        ).hexdigest()
        # Every rejected receipt is a row of its own: it never stands in the way of a
        # valid signal with the same id sent again.
        return _signal_row(
            id=f"{parsed.service}/rejected/{digest}",
            service=parsed.service,
            signal_id=parsed.signal_id,
            received_at=received_at,
            raw=parsed.raw,
            status="rejected",
            reason=parsed.reason,
        )
    s = parsed.signal
    side = s.action.side
    return _signal_row(
        id=f"{s.service}/{s.signal_id}",
        service=s.service,
        signal_id=s.signal_id,
        received_at=s.received_at,
        raw=parsed.raw,
        exchange=s.exchange.value,
        symbol=s.symbol,
        side=side.value if side is not None else None,
        action=s.action.value,
        signal_at=s.at,
        score_week=s.score_week,
        score_month=s.score_month,
        status="validated",
    )


class AlertRecord(Record):
    """An alert raised to humans; unique per originating event."""

    event_id: str
    severity: Severity
    title: str
    body: str
    position_id: str | None = None
    channel: str = "log"
    # The grouping key (`domain.alerts.condition_key`; None: title about position_id).
    condition: str | None = None
    # The raiser will resolve the condition (docs/alerts.md); this row resolves it.
    resolvable: bool = False
    resolution: bool = False


class StoreBatch(Record):
    """Everything one workflow transition writes, applied in one transaction.

    Events are appended idempotently; rows are upserted only when their
    `revision` is not older than the stored one.
    """

    events: list[Event] = Field(default_factory=list)
    position: PositionRecord | None = None
    orders: list[OrderRecord] = Field(default_factory=list)
    fills: list[FillRecord] = Field(default_factory=list)
    alerts: list[AlertRecord] = Field(default_factory=list)
