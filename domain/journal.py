"""The order journal: a record of every order posguard sends, written before it is sent.

One row per client order id (``order_journal`` table, migration 0003). It names
the position and workflow the order belongs to and the intent it was sent with,
so any order on the exchange with posguard's prefix can be traced to its
workflow, whatever a workflow replay decides later.

A client id is journaled once: the first intent recorded under it is the only
one that may ever be sent with it. A second, different intent under the same id
is refused (`ErrorType.CLIENT_ID_REUSED`) and the error's details are
`JournalEntry.details()` of the journaled order, so the workflow can find (and
cancel) the order that really owns that id: ``JournalEntry.model_validate(details)``.

A protective order sent while the journal could not be written gets its row from
the workflow's own record of it (``Store.apply`` journals any recorded order of ours
the journal lacks), so no order of ours stays unjournaled once the database is back.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from domain.orders import OrderIntent, OrderKind
from domain.types import OrderSide

PROTECTIVE_KINDS: frozenset[OrderKind] = frozenset(
    {OrderKind.STOP, OrderKind.EMERGENCY_STOP, OrderKind.CLOSE}
)
"""Kinds that are sent even when the journal cannot be written (protection first)."""

JOURNALED_KINDS: frozenset[str] = frozenset(k.value for k in OrderKind)
"""Kind names of the orders posguard sends, all journaled (an `orders` row may also
name an order posguard did not send: `outside`, `liquidation`)."""


class JournalEntry(BaseModel):
    """One journaled order: who placed it and with which intent."""

    model_config = ConfigDict(frozen=True)

    client_order_id: str = Field(min_length=1)
    position_id: str = Field(min_length=1)
    workflow_id: str = Field(min_length=1)
    account: str
    exchange: str
    symbol: str
    kind: OrderKind
    side: OrderSide
    quantity: Decimal
    trigger_price: Decimal | None = None
    reduce_only: bool
    recorded_at: AwareDatetime | None = None
    # Set by the journal on the row it returns when that row was there before the
    # call (the order may have been sent already); never stored.
    earlier: bool = Field(default=False, exclude=True)

    @property
    def is_conditional(self) -> bool:
        """True for a resting trigger order (stop, take-profit)."""
        return self.trigger_price is not None

    def same_intent(self, other: JournalEntry) -> bool:
        """True when `other` asks for the very same order (a retry), numbers by value."""
        return (
            self.client_order_id == other.client_order_id
            and self.symbol == other.symbol
            and self.kind is other.kind
            and self.side is other.side
            and self.quantity == other.quantity
            and self.trigger_price == other.trigger_price
        )

    def details(self) -> dict[str, str | None]:
        """The journaled intent as strings (an `ApplicationError` detail)."""
        return {
            "client_order_id": self.client_order_id,
            "position_id": self.position_id,
            "workflow_id": self.workflow_id,
            "account": self.account,
            "exchange": self.exchange,
            "symbol": self.symbol,
            "kind": self.kind.value,
            "side": self.side.value,
            "quantity": str(self.quantity),
            "trigger_price": None if self.trigger_price is None else str(self.trigger_price),
            "reduce_only": "true" if self.reduce_only else "false",
        }

    @classmethod
    def from_details(cls, details: Mapping[str, object]) -> JournalEntry:
        """The entry back from `details()` (e.g. a `ClientIdReused` error's first detail)."""
        return cls.model_validate(dict(details))


def journal_entry(
    intent: OrderIntent, *, position_id: str, workflow_id: str, account: str, exchange: str
) -> JournalEntry:
    """The journal row for sending `intent` on behalf of (position_id, workflow_id)."""
    return JournalEntry(
        client_order_id=intent.client_order_id,
        position_id=position_id,
        workflow_id=workflow_id,
        account=account,
        exchange=exchange,
        symbol=intent.symbol,
        kind=intent.kind,
        side=intent.side,
        quantity=intent.qty,
        trigger_price=intent.trigger_price,
        reduce_only=intent.reduce_only,
    )
