"""Harness for position workflow tests: real workers, real store, real paper exchange.

The workflows run on the time-skipping server (timers pass at once); their
activities reach the paper exchange over HTTP through ccxt and PostgreSQL through
asyncpg, exactly as in production.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any

from pydantic import SecretStr
from temporalio.client import Client, WorkflowHandle

from activities.store.repository import Store
from domain.client_ids import belongs_to
from domain.position import PositionSpec, PositionState
from domain.sizing import SizingMode, SizingRequest, StopRule
from domain.types import ExchangeId, Side
from signals_ingest.gate_process import run_gate
from simulator.server import PaperExchange
from workers.positions import start_position
from workers.settings import AccountSettings, Settings
from workers.worker import run_worker
from workflows.position_io import (
    CloseRequest,
    CloseResult,
    PositionConfig,
    PositionView,
    exchange_task_queue,
)

PRICES = {
    "BTCUSDT": "60000",
    "ETHUSDT": "3000",
    "SOLUSDT": "150",
    "BNBUSDT": "600",
    "XRPUSDT": "0.6",
    "DOGEUSDT": "0.15",
}


def spec(
    symbol: str = "BTCUSDT",
    side: Side = Side.LONG,
    *,
    quote: str = "1200",
    stop_pct: str = "2",
    emergency_pct: str = "5",
    **extra: Any,
) -> PositionSpec:
    """A position to open on the paper account (adopt=True: no sizing)."""
    sizing = (
        None if extra.get("adopt") else SizingRequest(mode=SizingMode.QUOTE, amount=Decimal(quote))
    )
    return PositionSpec(
        account="paper",
        exchange=ExchangeId.BINANCE_USDM,
        symbol=symbol,
        side=side,
        sizing=sizing,
        stop=StopRule(percent=Decimal(stop_pct)),
        emergency_stop_percent=Decimal(emergency_pct),
        **extra,
    )


@dataclass
class Stack:
    """Everything a position test talks to."""

    client: Client
    sim: PaperExchange
    store: Store
    settings: Settings
    config: PositionConfig

    def on(self, symbol: str, side: Side, **extra: Any) -> PositionSpec:
        """`spec(...)` on this stack's account."""
        return spec(symbol, side, **extra).model_copy(
            update={"account": self.settings.accounts[0].name}
        )

    async def open(self, position: PositionSpec, **config: Any) -> WorkflowHandle[Any, Any]:
        cfg = self.config.model_copy(update=config) if config else self.config
        return await start_position(
            self.client, position, task_queue=self.settings.task_queue, config=cfg
        )

    async def close(self, handle: WorkflowHandle[Any, Any]) -> CloseResult:
        """Close through the operator update and wait until the workflow has ended."""
        result = await handle.execute_update("close", CloseRequest(), result_type=CloseResult)
        await handle.result()
        return result

    async def view(self, handle: WorkflowHandle[Any, Any]) -> PositionView:
        return await handle.query("state", result_type=PositionView)

    async def wait_for(
        self,
        handle: WorkflowHandle[Any, Any],
        done: Callable[[PositionView], bool],
        *,
        seconds: float = 30,  # float ok: wall-clock seconds
    ) -> PositionView:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while True:
            view = await self.view(handle)
            if done(view) or loop.time() > deadline:
                return view
            await asyncio.sleep(0.05)

    async def wait_state(
        self, handle: WorkflowHandle[Any, Any], *states: PositionState
    ) -> PositionView:
        return await self.wait_for(handle, lambda v: v.snapshot.state in states)

    def truth(self) -> dict[str, Any]:
        return self.sim.ground_truth()

    def position_amt(self, symbol: str) -> Decimal:
        for p in self.truth()["positions"]:
            if p["symbol"] == symbol:
                return Decimal(p["positionAmt"])
        return Decimal(0)

    def orders(self, symbol: str, *, algo: bool) -> list[dict[str, Any]]:
        key = "algoOrders" if algo else "orders"
        return [o for o in self.truth()[key] if o["symbol"] == symbol]

    def orders_of(self, view: PositionView, *, algo: bool) -> list[dict[str, Any]]:
        """Orders (or algo orders) this position placed, recognised by client id."""
        chain = view.position_id.rsplit("/", 1)[1]
        key = "clientAlgoId" if algo else "clientOrderId"
        return [
            o
            for o in self.orders(view.spec.symbol, algo=algo)
            if belongs_to(o.get(key), view.workflow_id, chain)
        ]

    def open_stops(self, symbol: str) -> list[dict[str, Any]]:
        return [
            a
            for a in self.orders(symbol, algo=True)
            if a["algoStatus"] == "NEW" and a["orderType"] == "STOP_MARKET"
        ]

    async def event_types(self, position_id: str) -> list[str]:
        # Store writes are asynchronous to the workflow; the result waits for them.
        return [e.type.value for e in await self.store.events(position_id=position_id, limit=5000)]


async def eventually(check: Callable[[], Awaitable[bool]], seconds: float = 20) -> bool:  # float ok
    """Poll `check` until it is true or `seconds` pass."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while loop.time() < deadline:
        if await check():
            return True
        await asyncio.sleep(0.05)
    return await check()


@asynccontextmanager
async def live_stack(
    client: Client,
    database_url: str,
    store: Store,
    *,
    name: str,
    check_interval: timedelta,
    with_gate: bool = False,
) -> AsyncIterator[Stack]:
    """A paper exchange, a worker (and, `with_gate`, the price gate with its user
    streams) on `client`'s server, with an account of its own named `name`-…"""
    async with PaperExchange(mark_interval_ms=200, admin_port=None) as sim:
        for symbol, price in PRICES.items():
            sim.set_price(symbol, price)
        account = AccountSettings(
            name=f"{name}{uuid.uuid4().hex[:6]}",
            api_key=SecretStr(sim.api_key),
            secret=SecretStr(sim.api_secret),
            paper_url=sim.rest_url,
            max_requests_per_second=Decimal(1000),
        )
        settings = Settings(
            task_queue=f"{name}-{uuid.uuid4().hex[:8]}",
            database_url=SecretStr(database_url),
            accounts=[account],
            health_port=-1,
        )
        config = PositionConfig(
            exchange_task_queue=exchange_task_queue(account.name),
            check_interval=check_interval,
        )
        stop = asyncio.Event()
        tasks = [asyncio.create_task(run_worker(client, settings, stop))]
        if with_gate:
            gate = run_gate(settings, stop, client=client, health_port=-1, events=store)
            tasks.append(asyncio.create_task(gate))
        await asyncio.sleep(1)
        try:
            yield Stack(client, sim, store, settings, config)
        finally:
            stop.set()
            await asyncio.gather(*tasks)
