"""Messages between workflows and exchange activities (pure data).

They live in `domain/` so a workflow can build them without importing the
activity code (and so without ccxt in the workflow sandbox).
"""

from __future__ import annotations

from decimal import Decimal

from pydantic import BaseModel, ConfigDict

from domain.orders import OrderIntent
from domain.types import Side


class _Request(BaseModel):
    model_config = ConfigDict(frozen=True)

    account: str


class PlaceOrderRequest(_Request):
    """Place `intent`; `look_up_first` when a previous attempt's outcome is unknown."""

    intent: OrderIntent
    look_up_first: bool = False


class OrderRequest(_Request):
    """Find, cancel or read fills of one of our orders, by client id (and exchange id)."""

    symbol: str
    client_order_id: str
    exchange_order_id: str | None = None
    conditional: bool = False


class SymbolRequest(_Request):
    """Anything about one symbol of the account."""

    symbol: str


class ExchangePosition(BaseModel):
    """A position as the exchange reports it (one-way mode); qty 0 means flat."""

    model_config = ConfigDict(frozen=True)

    symbol: str
    side: Side | None
    qty: Decimal
    entry_price: Decimal | None = None
    mark_price: Decimal | None = None
    unrealized_pnl: Decimal | None = None

    @property
    def is_flat(self) -> bool:
        return self.qty == 0
