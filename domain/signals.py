"""A trading signal, once validated: what the signal service recommends, and when.

The service is not ours (its wire format and the mapping of its field names are in
`domain/signal_wire.py`); this is the shape everything after validation works on.
Signals come in *waves*: the signals of one scoring period (e.g. every 15 minutes).
All Decimal, all immutable.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from domain.types import ExchangeId, Side


class SignalAction(StrEnum):
    """What the service recommends. Only BUY and SELL open positions."""

    BUY = "BUY"
    SELL = "SELL"
    HOLD = "HOLD"
    CLOSE = "CLOSE"

    @property
    def side(self) -> Side | None:
        """The side of the position it opens; None for an action that opens nothing."""
        if self is SignalAction.BUY:
            return Side.LONG
        if self is SignalAction.SELL:
            return Side.SHORT
        return None


class Signal(BaseModel):
    """One validated signal of one service.

    `signal_id` is unique per `service` (the store's key is both); `symbol` is
    canonical (e.g. BTCUSDT); `at` is the service's timestamp of the signal,
    `received_at` when posguard received it.
    """

    model_config = ConfigDict(frozen=True)

    service: str = Field(min_length=1, max_length=100)
    signal_id: str = Field(min_length=1, max_length=200)
    exchange: ExchangeId
    symbol: str = Field(min_length=1, max_length=40)
    action: SignalAction
    score_week: Decimal
    score_month: Decimal
    at: AwareDatetime
    received_at: AwareDatetime

    @property
    def side(self) -> Side | None:
        return self.action.side


def wave_start(at: datetime, period: timedelta) -> datetime:
    """The start of the scoring period (the wave) that `at` falls in.

    Periods are aligned on the epoch in UTC (15 minutes: :00, :15, :30, :45).
    """
    if period <= timedelta(0):
        raise ValueError("a wave period must be positive")
    epoch = datetime(1970, 1, 1, tzinfo=at.tzinfo)
    periods = (at - epoch) // period
    return epoch + periods * period
