"""Which user-stream reports make a position look again (domain.order_updates)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from domain.order_updates import OrderChange, needs_look

STOP, NEW_STOP, OLD_STOP = "pg-sl-1", "pg-mv-2", "pg-sl-0"
OPEN = {STOP, NEW_STOP}
CANCELLED = {OLD_STOP}


def change(cid: str | None, status: str | None, filled: str | None = "0") -> OrderChange:
    return OrderChange(
        client_order_id=cid, status=status, filled=None if filled is None else Decimal(filled)
    )


@pytest.mark.parametrize(
    "changes",
    [
        [change(NEW_STOP, "open")],
        [change(NEW_STOP, "open", None)],
        [change(OLD_STOP, "canceled")],
        [change(OLD_STOP, "cancelled")],
        [change(NEW_STOP, "open"), change(OLD_STOP, "canceled")],
        [change(STOP, "NEW")],
    ],
)
def test_echoes_of_our_own_moves_need_no_look(changes: list[OrderChange]) -> None:
    assert not needs_look(changes, expected_open=OPEN, expected_cancelled=CANCELLED)


@pytest.mark.parametrize(
    ("changes", "why"),
    [
        ([], "a report without content"),
        ([change(STOP, "closed", "1")], "our stop filled"),
        ([change(STOP, "open", "0.5")], "our stop partly filled"),
        ([change(STOP, "canceled")], "our live stop cancelled by someone else"),
        ([change(OLD_STOP, "open")], "an order we cancelled is open"),
        ([change("foreign-1", "open")], "an order we do not know"),
        ([change(None, "open")], "no client id"),
        ([change(STOP, "expired")], "expired"),
        ([change(STOP, "rejected")], "rejected"),
        ([change(STOP, "TRIGGERED")], "triggered"),
        ([change(STOP, None)], "no status"),
        ([change(NEW_STOP, "open"), change(STOP, "closed", "1")], "one unexplained among echoes"),
    ],
)
def test_anything_else_calls_for_a_look(changes: list[OrderChange], why: str) -> None:
    assert needs_look(changes, expected_open=OPEN, expected_cancelled=CANCELLED), why
