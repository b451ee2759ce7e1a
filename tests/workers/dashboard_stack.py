"""The dashboard on a live stack, for the dashboard's tests (not a test module).

`running_dashboard` serves `posguard web` in this process (`run_dashboard`, the
function the command runs) on any free port, reading the stack's store and
Temporal, its marks from the stack's paper exchange.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import aiohttp
from temporalio.client import Client, WorkflowHandle

from activities.store.repository import Store
from tests.waiting import started
from tests.workflows.harness import QUICK, Stack, live_stack
from workers.dashboard.server import Dashboard, run_dashboard
from workflows.position import PositionWorkflow
from workflows.position_io import BandView, PriceTick

REFRESH = timedelta(milliseconds=250)


@contextlib.asynccontextmanager
async def dashboard_stack(
    client: Client, database_url: str, store: Store, name: str
) -> AsyncIterator[Stack]:
    """A live stack for a dashboard test module (its account's positions are the page's)."""
    async with live_stack(
        client,
        database_url,
        store,
        name=name,
        check_interval=timedelta(seconds=30),
        config=QUICK,
    ) as live:
        yield live


@contextlib.asynccontextmanager
async def running_dashboard(stack: Stack, **settings: Any) -> AsyncIterator[Dashboard]:
    """The dashboard over `stack` until the block ends; yields it once it serves (its
    `url`). `settings`: more Settings fields (e.g. `web_actions`)."""
    own = stack.settings.model_copy(
        update={"web_port": 0, "web_refresh": REFRESH, "web_host": "127.0.0.1", **settings}
    )
    stop, ready, out = asyncio.Event(), asyncio.Event(), []
    task = asyncio.create_task(
        run_dashboard(stack.client, own, stop, store=stack.store, ready=ready, out=out)
    )
    try:
        await started(ready, task, "the dashboard")
        yield out[0]
    finally:
        stop.set()
        await task


async def get_json(url: str) -> Any:
    """GET `url`'s JSON (raises on an HTTP error)."""
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        resp.raise_for_status()
        return await resp.json()


async def tick(
    stack: Stack, handle: WorkflowHandle[Any, Any], symbol: str, price: Decimal
) -> BandView:
    """A mark price, as the price gate hands it to the workflow (the `price` update),
    and the paper exchange's mark set to it first."""
    stack.sim.set_price(symbol, price)
    band: BandView = await handle.execute_update(
        PositionWorkflow.price, PriceTick(price=price, at=datetime.now(UTC))
    )
    return band


def live_stop(stack: Stack, symbol: str) -> Decimal:
    """The one stop resting on the paper exchange for `symbol` (its ground truth)."""
    [stop] = stack.open_stops(symbol)
    return Decimal(stop["triggerPrice"])
