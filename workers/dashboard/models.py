"""What the dashboard's JSON API answers.

Prices, quantities and money are Decimal here and strings on the wire (pydantic's JSON
mode writes a Decimal as its exact text): the page shows them as they are, never
through a float. Only the chart's points are numbers (`ChartPoint.value`), because the
chart library draws numbers; they are made from the Decimals at the last moment.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True)


class OpenPosition(_Model):
    """One position that is not over: from its workflow's `state` query, or from its
    store row when the workflow did not answer (`source` "store", with a `warning`)."""

    position_id: str
    short_id: str
    workflow_id: str
    account: str
    exchange: str
    symbol: str
    side: str
    state: str
    quantity: Decimal
    entry: Decimal | None = None
    mark: Decimal | None = None
    marked_at: datetime | None = None
    mark_error: str | None = None
    stop: Decimal | None = None
    emergency_stop: Decimal | None = None
    stop_distance_pct: Decimal | None = None
    unrealised_pnl: Decimal | None = None
    realised_pnl: Decimal = Decimal(0)
    fees: Decimal = Decimal(0)
    protected: bool = Field(
        description="a stop (or the emergency stop) rests on the exchange for what is held"
    )
    stop_confirmed_at: datetime | None = Field(
        default=None,
        description="when the exchange last acknowledged the stop where it stands (its "
        "placement or its last move)",
    )
    stop_confirmed_age_s: int | None = None
    trailing: str | None = None
    take_profit: Decimal | None = None
    opened_at: datetime | None = None
    source: Literal["workflow", "store"] = "workflow"
    warning: str | None = None
    ui_url: str


class ClosedPosition(_Model):
    """One position whose lifecycle is over (closed or rolled back), from the store."""

    position_id: str
    short_id: str
    workflow_id: str
    account: str
    exchange: str
    symbol: str
    side: str
    status: str
    quantity: Decimal
    entry: Decimal | None = None
    exit: Decimal | None = None
    realised_pnl: Decimal
    fees: Decimal
    funding: Decimal = Decimal(0)  # received (+) or paid (-) while held
    net_pnl: Decimal  # realised - fees + funding
    reason: str | None = None
    opened_at: datetime | None = None
    closed_at: datetime | None = None
    ui_url: str


class AlertRow(_Model):
    """An alert raised to people (the `alerts` table)."""

    created_at: datetime
    severity: str
    title: str
    body: str
    position_id: str | None = None
    resolution: bool = False


class WaveRow(_Model):
    """A wave of signals (the `waves` table)."""

    id: str
    account: str | None = None
    period_start: datetime
    status: str
    signals_received: int
    signals_selected: int
    positions_started: int
    duration_ms: int | None = None


class Finding(_Model):
    """A reconcile finding or action (a phantom, an untracked position, a quantity
    mismatch, a zombie or foreign order...), as recorded in the events table."""

    occurred_at: datetime
    type: str
    severity: str
    account: str | None = None
    symbol: str | None = None
    detail: dict[str, Any] = Field(default_factory=dict)


class AccountState(_Model):
    """The whole page: what `/api/state` answers."""

    generated_at: datetime
    accounts: list[str]
    refresh_ms: int
    actions: bool = Field(description="close and trail are offered (web_actions and web_token)")
    mark_note: str
    open: list[OpenPosition] = Field(default_factory=list)
    closed: list[ClosedPosition] = Field(default_factory=list)
    alerts: list[AlertRow] = Field(default_factory=list)
    waves: list[WaveRow] = Field(default_factory=list)
    findings: list[Finding] = Field(default_factory=list)
    errors: list[str] = Field(
        default_factory=list, description="what could not be read this time (shown on the page)"
    )


class TimelineEvent(_Model):
    """One recorded event of a position, for its timeline."""

    occurred_at: datetime
    type: str
    severity: str
    payload: dict[str, Any] = Field(default_factory=dict)
    error_message: str | None = None


class ChartPoint(_Model):
    """A point of a chart line: `time` in UTC seconds, `value` None for a gap (no stop).

    A float on purpose: the chart library draws numbers; the exact Decimals are
    everywhere else on the page."""

    time: int
    value: float | None = None


class Level(_Model):
    """A level over time, exact: the points' Decimal twins for the page's text."""

    time: int
    value: Decimal | None = None


class ChartData(_Model):
    """A position's mark, stop and entry over time (see `workers.dashboard.chart`)."""

    mark: list[ChartPoint] = Field(default_factory=list)
    stop: list[ChartPoint] = Field(default_factory=list)
    entry: list[ChartPoint] = Field(default_factory=list)
    stop_levels: list[Level] = Field(
        default_factory=list, description="every level the stop has stood at, in order"
    )


class PositionDetail(_Model):
    """What `/api/position?id=...` answers: the position, its chart and its timeline."""

    position_id: str
    open: OpenPosition | None = None
    closed: ClosedPosition | None = None
    chart: ChartData
    events: list[TimelineEvent]
    ui_url: str
    mark_note: str
