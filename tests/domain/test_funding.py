"""Whose funding a payment was: the sign of the payment against the sign of the rate.

Property: for any position size, mark and non-zero rate, what the exchange books for
a long (−qty·mark·rate) and for a short (+qty·mark·rate) is given back to that side.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.funding import funding_side
from domain.types import Side

amounts = st.decimals(min_value=Decimal("0.001"), max_value=Decimal(1000), places=3)
rates = st.decimals(min_value=Decimal("-0.03"), max_value=Decimal("0.03"), places=8).filter(
    lambda r: r != 0
)


@given(qty=amounts, mark=amounts, rate=rates)
def test_each_side_gets_back_what_it_was_charged(
    qty: Decimal, mark: Decimal, rate: Decimal
) -> None:
    charge = qty * mark * rate  # what a long pays at a positive rate
    assert funding_side(-charge, rate) is Side.LONG
    assert funding_side(charge, rate) is Side.SHORT


@pytest.mark.parametrize(
    ("received", "rate", "side"),
    [
        (Decimal("-0.95"), Decimal("0.0001"), Side.LONG),  # positive rate: longs pay
        (Decimal("0.95"), Decimal("0.0001"), Side.SHORT),  # ... shorts receive
        (Decimal("0.95"), Decimal("-0.0001"), Side.LONG),  # negative rate: longs receive
        (Decimal("-0.95"), Decimal("-0.0001"), Side.SHORT),  # ... shorts pay
        (Decimal(0), Decimal("0.0001"), None),  # nothing changed hands
        (Decimal("0.95"), Decimal(0), None),  # a zero rate tells no direction
    ],
)
def test_the_rule(received: Decimal, rate: Decimal, side: Side | None) -> None:
    assert funding_side(received, rate) is side
