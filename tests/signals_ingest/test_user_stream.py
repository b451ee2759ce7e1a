"""The user-data stream makes positions notice exchange changes at once.

The workflows' periodic look is set to an hour here, so a position that reacts in
seconds can only have heard it from the user stream.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
import pytest_asyncio
from pydantic import SecretStr
from temporalio.testing import WorkflowEnvironment

from domain.position import CloseReason, PositionState
from domain.types import Side
from signals_ingest.gate_process import run_gate
from signals_ingest.user_stream import changed_symbols
from simulator.server import PaperExchange
from tests.workflows.harness import PRICES, Stack, spec
from workers.settings import AccountSettings, Settings
from workers.worker import run_worker
from workflows.position_io import PositionConfig, exchange_task_queue


def order(oid: str, symbol: str, status: str, filled: str) -> dict[str, Any]:
    return {"id": oid, "symbol": symbol, "status": status, "filled": filled, "info": {}}


def test_only_changed_orders_name_their_symbol() -> None:
    seen: dict[str, tuple[Any, ...]] = {}
    first = [order("1", "BTC/USDT:USDT", "open", "0"), order("2", "ETH/USDT:USDT", "open", "0")]
    assert set(changed_symbols(first, seen)) == {"BTCUSDT", "ETHUSDT"}
    assert changed_symbols(first, seen) == {}  # nothing new: nobody is bothered
    later = [order("1", "BTC/USDT:USDT", "closed", "1"), order("2", "ETH/USDT:USDT", "open", "0")]
    assert set(changed_symbols(later, seen)) == {"BTCUSDT"}


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def live(
    temporal_env: WorkflowEnvironment, database_url: str, store: Any
) -> AsyncIterator[Stack]:
    async with PaperExchange(mark_interval_ms=200, admin_port=None) as sim:
        for symbol, price in PRICES.items():
            sim.set_price(symbol, price)
        account = AccountSettings(
            name=f"us{uuid.uuid4().hex[:6]}",
            api_key=SecretStr(sim.api_key),
            secret=SecretStr(sim.api_secret),
            paper_url=sim.rest_url,
            max_requests_per_second=Decimal(1000),
        )
        settings = Settings(
            task_queue=f"user-stream-{uuid.uuid4().hex[:8]}",
            database_url=SecretStr(database_url),
            accounts=[account],
        )
        config = PositionConfig(
            exchange_task_queue=exchange_task_queue(account.name),
            check_interval=timedelta(hours=1),  # the fallback look never comes in time
        )
        stop = asyncio.Event()
        tasks = [
            asyncio.create_task(run_worker(temporal_env.client, settings, stop)),
            asyncio.create_task(
                run_gate(settings, stop, client=temporal_env.client, health_port=-1, events=store)
            ),
        ]
        await asyncio.sleep(1)
        try:
            yield Stack(temporal_env.client, sim, store, settings, config)
        finally:
            stop.set()
            await asyncio.gather(*tasks)


def on(stack: Stack, symbol: str, side: Side, **extra: Any) -> Any:
    return spec(symbol, side, **extra).model_copy(
        update={"account": stack.settings.accounts[0].name}
    )


async def test_a_close_by_hand_is_seen_at_once(live: Stack) -> None:
    handle = await live.open(on(live, "SOLUSDT", Side.LONG))
    view = await live.wait_state(handle, PositionState.ACTIVE)
    live.sim.close_position("SOLUSDT")  # a person, in the exchange's UI
    result = await asyncio.wait_for(handle.result(), 20)
    assert result.state is PositionState.CLOSED and result.reason is CloseReason.EXTERNAL
    assert live.open_stops("SOLUSDT") == []  # its stop was cancelled
    events = await live.event_types(view.position_id)
    assert "position_closed" in events


@pytest.mark.parametrize("side", list(Side))
async def test_a_stop_fill_is_seen_at_once(live: Stack, side: Side) -> None:
    symbol = "ETHUSDT"
    live.sim.set_price(symbol, "3000")
    handle = await live.open(on(live, symbol, side))
    view = await live.wait_state(handle, PositionState.ACTIVE)
    stop = view.snapshot.stop_price
    assert stop is not None
    live.sim.set_price(symbol, stop - side.sign * 10)
    result = await asyncio.wait_for(handle.result(), 20)
    live.sim.set_price(symbol, "3000")
    assert result.state is PositionState.CLOSED and result.reason is CloseReason.STOP_FILLED
    assert result.realised_pnl < 0
