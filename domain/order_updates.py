"""Which order updates from the exchange's user stream call for a look.

A position workflow re-reads its stop and position (a "look": several exchange
calls in a row) when the exchange reports a change. Most reports after a trailing
move only echo what the workflow itself just did: its new stop is open, its old
stop is cancelled. Looking again for those costs a round of calls during which a
crossing's stop move has to wait, so they are recognised and skipped. Anything
else (a fill, a trigger, an order cancelled by someone else, an order we do not
know, a report without content) still calls for a look.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from decimal import Decimal

from pydantic import BaseModel, ConfigDict

__all__ = ["OrderChange", "needs_look"]

# ccxt's unified statuses; "cancelled" is accepted too (Bybit's raw spelling).
_OPEN = frozenset({"open", "new"})
_CANCELLED = frozenset({"canceled", "cancelled"})


class OrderChange(BaseModel):
    """One order as the user stream reported it (ccxt's unified fields)."""

    model_config = ConfigDict(frozen=True)

    client_order_id: str | None = None
    status: str | None = None
    filled: Decimal | None = None


def _explained(
    change: OrderChange, expected_open: Collection[str], expected_cancelled: Collection[str]
) -> bool:
    cid, status = change.client_order_id, (change.status or "").lower()
    if not cid or (change.filled is not None and change.filled != 0):
        return False
    if status in _OPEN:
        return cid in expected_open
    if status in _CANCELLED:
        return cid in expected_cancelled
    return False


def needs_look(
    changes: Iterable[OrderChange],
    *,
    expected_open: Collection[str],
    expected_cancelled: Collection[str],
) -> bool:
    """True unless every change is one the workflow caused and already knows.

    Contract: an empty report is unexplained (True). A change is explained only if it
    names a client id, has nothing filled, and is either open while the workflow has
    that order live or is being placed (`expected_open`), or cancelled while the
    workflow cancelled it or wants it cancelled (`expected_cancelled`). Any other
    status (filled, triggered, expired, rejected, unknown) is unexplained.
    """
    listed = list(changes)
    if not listed:
        return True
    return not all(_explained(c, expected_open, expected_cancelled) for c in listed)
