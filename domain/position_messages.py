"""Messages between a position workflow and the processes that wake it.

The price gate and the user-data stream (`signals_ingest/`) send them, the
position workflow (`workflows/`) receives them and answers with its band; both
sides import them from here, so neither depends on the other for its contract.
All pydantic, all Decimal.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from pydantic import BaseModel, ConfigDict

from domain.order_updates import OrderChange

__all__ = [
    "BAND_QUERY",
    "EXCHANGE_UPDATE_SIGNAL",
    "LEGACY_BAND_QUERY",
    "PRICE_UPDATE",
    "BandView",
    "ExchangeUpdate",
    "PriceTick",
]

# The names of the position workflow's handlers for these messages. The workflow
# declares its handlers with them (`@workflow.update(name=PRICE_UPDATE)`), and the
# gate sends with them: one definition, so the two can never drift apart.
PRICE_UPDATE = "price"
"""Update: a `PriceTick` outside the band; answered with the new `BandView`."""
BAND_QUERY = "wake_band"
"""Query: the current `BandView`. Named so that it sorts after `state`: the Temporal
Web UI lists a workflow's queries by name and opens the first, which should be the
one an operator wants (the position's state)."""
LEGACY_BAND_QUERY = "band"
"""The query's name before it was `BAND_QUERY`: the gate asks it of a worker that
does not know the new name yet (a rolling upgrade)."""
EXCHANGE_UPDATE_SIGNAL = "exchange_update"
"""Signal: an `ExchangeUpdate` (something changed on the exchange)."""


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
