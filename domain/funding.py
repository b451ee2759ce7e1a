"""Whose funding a settlement was, on a hedge-mode account (pure).

A hedge-mode account holds a long and a short of one symbol as two positions, and
each pays or receives funding at every settlement. Binance's income rows
(`/fapi/v1/income` FUNDING_FEE) do not say which position a payment was for, and
Bybit documents no position side on its funding executions either. The market's
funding rate of the settlement tells it: a positive rate makes longs pay and shorts
receive, a negative one the reverse. So a payment whose sign is opposite to the
rate's is the long's, one of the rate's own sign is the short's.
"""

from __future__ import annotations

from decimal import Decimal

from domain.types import Side


def funding_side(received: Decimal, rate: Decimal) -> Side | None:
    """The position side that received `received` (+ received, − paid) at a settlement
    whose market funding rate was `rate`; None when either is zero (nothing changed
    hands, or a zero rate, which moves nothing, cannot have moved `received`)."""
    if received == 0 or rate == 0:
        return None
    return Side.LONG if (received > 0) != (rate > 0) else Side.SHORT
