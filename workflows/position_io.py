"""What goes in and out of a PositionWorkflow: input, carried state, messages, views.

Shared by the workflow, the CLI and the ingest process; all pydantic, all Decimal.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field

from domain.market import MarketFilters
from domain.order_updates import OrderChange
from domain.orders import OrderRef
from domain.position import CloseReason, PositionSnapshot, PositionSpec, PositionState
from domain.protection import ProtectionPolicy
from domain.trailing import TrailingRule, TrailingState
from domain.types import ExchangeId

WORKFLOW_TYPE = "PositionWorkflow"


def position_workflow_id(account: str, exchange: ExchangeId | str, symbol: str) -> str:
    """The one workflow id per (account, exchange, symbol) in one-way mode.

    Starting a second open workflow with this id is refused by Temporal, so two
    live positions on the same key are impossible by construction.
    """
    return f"position/{account}/{ExchangeId(exchange).value}/{symbol}"


def exchange_task_queue(account: str) -> str:
    """Task queue of one account's exchange activities (its rate limit lives there)."""
    return f"posguard-exchange-{account}"


class PositionConfig(BaseModel):
    """Per-position tunables; defaults are production values, tests shorten them."""

    model_config = ConfigDict(frozen=True)

    exchange_task_queue: str
    protection: ProtectionPolicy = ProtectionPolicy()
    # Fallback for a lost user-stream message: how often the workflow reads its
    # stop and position itself.
    check_interval: timedelta = timedelta(seconds=60)
    # Continue-as-new well before Temporal's 4096-event suggestion.
    max_history_events: int = Field(default=3000, ge=100)
    exchange_call_timeout: timedelta = timedelta(seconds=10)
    exchange_attempts: int = Field(default=3, ge=1)


class CarriedState(BaseModel):
    """Everything carried across continue-as-new besides the fixed spec and config."""

    model_config = ConfigDict(frozen=True)

    snapshot: PositionSnapshot
    filters: MarketFilters
    stale_orders: list[OrderRef] = Field(default_factory=list)
    close_reason: CloseReason | None = None
    runs: int = 1
    # Store rows are written with strictly increasing revisions across runs.
    revision: int = 0
    trailing_rule: TrailingRule | None = None
    trailing: TrailingState | None = None
    # The callback measured from volatility (TrailingRule.volatility), and when.
    measured_callback_pct: Decimal | None = None
    measured_at: datetime | None = None


class PositionInput(BaseModel):
    """The workflow's input: what to open and how, plus carried state after CAN."""

    model_config = ConfigDict(frozen=True)

    spec: PositionSpec
    config: PositionConfig
    carried: CarriedState | None = None


class CloseRequest(BaseModel):
    """An operator's request to close the position at market."""

    model_config = ConfigDict(frozen=True)

    reason: CloseReason = CloseReason.OPERATOR
    requested_by: str | None = None


class CloseResult(BaseModel):
    """How the position ended."""

    model_config = ConfigDict(frozen=True)

    state: PositionState
    reason: CloseReason | None
    exit_price: Decimal | None
    realised_pnl: Decimal
    fees: Decimal


class ExchangeUpdate(BaseModel):
    """Something changed on the exchange (user stream or reconciler): look again.

    The workflow does not trust the message's content; it re-reads its stop and
    position through activities, so a late or duplicated message is harmless. The
    one use of `orders`: when every change listed only echoes what the workflow did
    itself (its new stop open, its old stop cancelled), the look is skipped
    (`domain.order_updates.needs_look`). No `orders` means "look".
    """

    model_config = ConfigDict(frozen=True)

    source: str = "user_stream"
    detail: str | None = None
    orders: tuple[OrderChange, ...] = ()


class PositionView(BaseModel):
    """The `state` query's answer: the whole state of the position."""

    model_config = ConfigDict(frozen=True)

    workflow_id: str
    position_id: str
    spec: PositionSpec
    snapshot: PositionSnapshot
    stale_orders: list[OrderRef]
    runs: int
    history_length: int
    trailing_rule: TrailingRule | None = None
    trailing: TrailingState | None = None
    measured_callback_pct: Decimal | None = None


class PriceTick(BaseModel):
    """A mark price the price gate sends when it leaves the position's band."""

    model_config = ConfigDict(frozen=True)

    price: Decimal
    at: datetime


class BandView(BaseModel):
    """The prices between which the position needs no message (see domain/band.py).

    A tick strictly inside `(wake_below, wake_above)` costs no Temporal call; a
    bound of None never wakes. `open` is False once the position is over, and the
    gate then forgets it.
    """

    model_config = ConfigDict(frozen=True)

    workflow_id: str
    symbol: str
    wake_below: Decimal | None = None
    wake_above: Decimal | None = None
    open: bool = True
