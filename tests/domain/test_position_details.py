"""The run details the Temporal Web UI shows for a position (`domain.position_details`)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal as D

import pytest

from domain.orders import OrderRef
from domain.position import CloseReason, PositionSnapshot, PositionState
from domain.position_details import details_markdown
from domain.types import Side

AT = datetime(2026, 12, 3, 4, 0, tzinfo=UTC)


def active(side: Side, stop: D | None) -> PositionSnapshot:
    ref = None if stop is None else OrderRef(client_order_id="s", qty=D(2), trigger_price=stop)
    return PositionSnapshot(
        state=PositionState.ACTIVE,
        qty=D(2),
        avg_entry_price=D(100),
        stop=ref,
        stop_moved_at=AT,
        fees=D("0.1"),
    )


@pytest.mark.parametrize(
    ("side", "stop", "mark", "pnl", "pct"),
    [
        (Side.LONG, D(98), D(101), "2", "2.97"),
        (Side.SHORT, D(102), D(99), "2", "3.03"),
    ],
)
def test_an_active_position_shows_its_stop_distance_and_pnl(
    side: Side, stop: D, mark: D, pnl: str, pct: str
) -> None:
    text = details_markdown(side, "BTCUSDT", active(side, stop), mark, AT)
    assert text.startswith(f"**{side.value} 2 BTCUSDT** — active")
    assert f"unrealised {pnl}" in text and f"mark {mark}" in text
    assert f"protected: stop {stop} ({pct} % from the mark)" in text
    assert "2026-12-03 04:00:00 UTC" in text


def test_a_position_without_a_stop_says_so_in_bold() -> None:
    text = details_markdown(Side.LONG, "BTCUSDT", active(Side.LONG, None))
    assert "**no stop on the exchange**" in text and "mark" not in text


def test_an_ended_run_shows_how_it_ended() -> None:
    s = active(Side.LONG, D(98)).model_copy(
        update={
            "state": PositionState.ROLLED_BACK,
            "close_reason": CloseReason.STOP_BEYOND_MARK,
            "closed_at": AT,
            "realised_pnl": D(-3),
        }
    )
    text = details_markdown(Side.LONG, "BTCUSDT", s, D(97), AT)
    assert "ended: **stop_beyond_mark**" in text and "net -3.1" in text
    assert "protected" not in text
