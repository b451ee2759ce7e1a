"""What goes in and out of a PositionWorkflow: input, carried state, messages, views.

Shared by the workflow, the CLI and the ingest process; all pydantic, all Decimal.
The messages the price gate and the user stream send (`ExchangeUpdate`, `PriceTick`,
`BandView`) live in `domain.position_messages` and are re-exported here.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field

from domain.managed_position import ManagedPosition
from domain.orders import OrderRef
from domain.position import CloseReason, PositionSnapshot, PositionSpec, PositionState
from domain.position import position_workflow_id as position_workflow_id
from domain.position_messages import BandView as BandView
from domain.position_messages import ExchangeUpdate as ExchangeUpdate
from domain.position_messages import PriceTick as PriceTick
from domain.protection import ProtectionPolicy
from domain.trailing import TrailingRule, TrailingState

WORKFLOW_TYPE = "PositionWorkflow"


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
    # The entry activity heartbeats: a worker that dies while it holds a filled
    # entry is noticed after this long and another worker places the stop.
    entry_heartbeat_timeout: timedelta = timedelta(seconds=1)
    entry_call_timeout: timedelta = timedelta(seconds=120)
    # How long the entry activity itself retries a transient failure of the stop
    # after the fill, before the workflow's stop-loss saga takes over.
    entry_stop_retry: timedelta = timedelta(seconds=5)
    # An entry whose placement had an ambiguous outcome is looked up this long
    # before it is judged absent (an accepted order can show up late).
    ambiguous_entry_window: timedelta = timedelta(seconds=15)
    # Backoff of a read or step that keeps failing (doubling up to `max_backoff`).
    retry_delay: timedelta = timedelta(seconds=1)
    max_backoff: timedelta = timedelta(minutes=5)


class PositionInput(BaseModel):
    """The workflow's input: what to open and how, plus carried state after CAN."""

    model_config = ConfigDict(frozen=True)

    spec: PositionSpec
    config: PositionConfig
    # After continue-as-new: the whole state of the previous run, as it was.
    carried: ManagedPosition | None = None


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
    # received (+) or paid (-) while held; absent from results of runs before it
    funding: Decimal = Decimal(0)


class PositionView(BaseModel):
    """The `state` query's answer: the whole state of the position."""

    model_config = ConfigDict(frozen=True)

    workflow_id: str
    position_id: str
    spec: PositionSpec
    snapshot: PositionSnapshot
    stale_orders: list[OrderRef]
    fills_due: list[str] = Field(default_factory=list)
    last_error: str | None = None
    runs: int
    history_length: int
    trailing_rule: TrailingRule | None = None
    trailing: TrailingState | None = None
    measured_callback_pct: Decimal | None = None
