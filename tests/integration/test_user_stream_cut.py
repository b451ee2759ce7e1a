"""A user stream cut while the position is closed by hand: the close is seen when the
stream is back, not at the next periodic look (an hour away here), on each exchange;
and an expired Binance listen key is asked for again at once (ccxt.pro would re-use
the dead one for 20 min).

The real gate (`run_gate`), worker, Temporal dev server and PostgreSQL; the paper
exchange cuts its user streams and refuses new ones for a while, or lets the listen
key expire on its clock.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from activities.store.repository import Store
from domain.events import EventType
from domain.position import CloseReason, PositionState
from domain.types import Side
from simulator.harsh import HOUR_MS
from tests.workflows.harness import QUICK, Stack, eventually, live_stack, running_gate


async def _quiet(stack: Stack, handle: WorkflowHandle[Any, Any]) -> None:
    """Until the workflow has read every message so far: nothing in flight and its
    history unchanged for a second."""

    async def settled() -> bool:
        before = (await stack.view(handle)).history_length
        await asyncio.sleep(1)
        described = await handle.describe()
        idle = not described.raw_description.pending_activities
        return idle and (await stack.view(handle)).history_length == before

    assert await eventually(settled)


async def _closed_while_the_stream_is_down(
    stack: Stack, symbol: str, cut: Callable[[], None]
) -> None:
    """Open a long, cut the stream (`cut()`), close the position by hand while no
    message can arrive and the price stays put (the gate has no reason to wake it):
    the workflow must book the close once the stream is back, told by the gate's
    catch-up, not an hour later by its periodic look."""
    async with running_gate(stack, events=stack.store):
        handle = await stack.open(stack.on(symbol, Side.LONG))
        await stack.wait_state(handle, PositionState.ACTIVE)
        await _quiet(stack, handle)  # the entry's own messages are looked at and done
        cut()
        assert stack.sim.close_position(symbol) is not None
        result = await handle.result()
        assert result.state is PositionState.CLOSED
        assert result.reason is CloseReason.EXTERNAL and result.exit_price is not None
        assert stack.open_stops(symbol) == []

        async def reconnected() -> bool:
            found = await stack.store.events(
                event_type=EventType.WEBSOCKET_RECONNECTED.value, limit=50, newest_first=True
            )
            return any(e.account == stack.settings.accounts[0].name for e in found)

        assert await eventually(reconnected)


@pytest.mark.parametrize("venue", ["binance", "bybit"])
async def test_a_close_during_a_stream_cut_is_seen_when_it_is_back(
    temporal_env: WorkflowEnvironment, database_url: str, store: Store, venue: str
) -> None:
    async with live_stack(
        temporal_env.client,
        database_url,
        store,
        name=f"cut-{venue}",
        exchange={"venue": venue},
        check_interval=timedelta(hours=1),  # only a message can tell it in time
        config=QUICK,
    ) as stack:
        if venue == "bybit":
            stack.sim.configure(rate_limit_per_s=10_000)

        def cut() -> None:
            assert stack.sim.drop_websockets("user", refuse_ms=2000) >= 1

        await _closed_while_the_stream_is_down(stack, "ETHUSDT", cut)


async def test_an_expired_listen_key_is_replaced_at_once(
    temporal_env: WorkflowEnvironment, database_url: str, store: Store
) -> None:
    async with live_stack(
        temporal_env.client,
        database_url,
        store,
        name="expiry",
        exchange={"harsh": "calm"},
        check_interval=timedelta(hours=1),
        config=QUICK,
    ) as stack:
        stack.sim.harden(listen_key_expiry=True)

        def expire() -> None:
            stack.sim.advance(HOUR_MS + 1)  # an hour without a keepalive reaching it

        await _closed_while_the_stream_is_down(stack, "BTCUSDT", expire)
