"""`sync_gate`'s refresh never replaces a newer band by an older read.

The race: the gate queries a position's band, and while the query is on its way
a crossing's wake-up is answered with the band after a stop move. The query's
answer (the band before the move) must then be dropped. Temporal's two reads are
replaced by fakes that let the test place the wake-up exactly inside the query.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import pytest

from domain.position_messages import BandView, PriceTick
from signals_ingest import temporal_waker
from signals_ingest.price_gate import PriceGate
from signals_ingest.temporal_waker import sync_gate

WID = "position/acct/binanceusdm/BTCUSDT"
D = Decimal


def band(below: str, above: str) -> BandView:
    return BandView(workflow_id=WID, symbol="BTCUSDT", wake_below=D(below), wake_above=D(above))


BEFORE_MOVE = band("98", "101")
AFTER_MOVE = band("99", "102")


@pytest.mark.parametrize("wake_during_query", [True, False])
async def test_refresh_keeps_the_band_a_wake_up_brought(
    monkeypatch: pytest.MonkeyPatch, wake_during_query: bool
) -> None:
    async def wake(wid: str, tick: PriceTick) -> BandView:
        return AFTER_MOVE

    gate = PriceGate(wake)
    gate.apply(BEFORE_MOVE)

    async def list_running(client: Any, **kwargs: Any) -> list[str]:
        return [WID]

    async def load_bands(client: Any, **kwargs: Any) -> list[BandView]:
        read = BEFORE_MOVE if wake_during_query else gate_band_now()
        if wake_during_query:  # the crossing is answered while the query is out
            assert gate.on_tick("BTCUSDT", D("101.5")) == 1
            assert await gate.wait_idle(5)
        return [read]

    def gate_band_now() -> BandView:
        below, above = gate.band(WID) or (None, None)
        return BandView(workflow_id=WID, symbol="BTCUSDT", wake_below=below, wake_above=above)

    monkeypatch.setattr(temporal_waker, "list_running", list_running)
    monkeypatch.setattr(temporal_waker, "load_bands", load_bands)
    result = await sync_gate(gate, object(), refresh=True)  # type: ignore[arg-type]
    expected = AFTER_MOVE if wake_during_query else BEFORE_MOVE
    assert gate.band(WID) == (expected.wake_below, expected.wake_above)
    assert result.refreshed == (0 if wake_during_query else 1)
    await gate.close()


async def test_refresh_applies_a_band_the_workflow_changed_on_its_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No wake-up in between: the query's band (e.g. after a timer) is taken."""

    async def wake(wid: str, tick: PriceTick) -> BandView:
        raise AssertionError("no tick in this test")

    gate = PriceGate(wake)
    gate.apply(BEFORE_MOVE)

    async def list_running(client: Any, **kwargs: Any) -> list[str]:
        return [WID]

    async def load_bands(client: Any, **kwargs: Any) -> list[BandView]:
        await asyncio.sleep(0)
        return [AFTER_MOVE]

    monkeypatch.setattr(temporal_waker, "list_running", list_running)
    monkeypatch.setattr(temporal_waker, "load_bands", load_bands)
    await sync_gate(gate, object(), refresh=True)  # type: ignore[arg-type]
    assert gate.band(WID) == (D(99), D(102))
    await gate.close()


async def test_a_position_added_during_the_listing_is_not_forgotten(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Adopted from its order stream while the listing ran (and not yet visible in
    it): the sync keeps it, and keeps the band it came with."""

    async def wake(wid: str, tick: PriceTick) -> BandView:
        raise AssertionError("no tick in this test")

    gate = PriceGate(wake)

    async def list_running(client: Any, **kwargs: Any) -> list[str]:
        gate.apply(AFTER_MOVE, prime=True)  # the order stream's adoption, meanwhile
        return []  # visibility lags the start

    async def load_bands(client: Any, **kwargs: Any) -> list[BandView]:
        return []

    monkeypatch.setattr(temporal_waker, "list_running", list_running)
    monkeypatch.setattr(temporal_waker, "load_bands", load_bands)
    result = await sync_gate(gate, object(), refresh=True)  # type: ignore[arg-type]
    assert WID in gate and result.removed == 0
    assert gate.band(WID) == (D(99), D(102))
    await gate.close()
