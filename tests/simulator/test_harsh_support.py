"""Shared helpers of the harsh-market tests (this module holds no tests).

``exchange(venue, harsh)`` starts a PaperExchange of that venue with those harsh
switches and yields it with a real ccxt client (binanceusdm or bybit), async REST
or ccxt.pro. Stop placement, listing and status reads go through ccxt the way a
trader's bot does on each venue.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

import pytest

from simulator.client import binanceusdm_client, bybit_client
from simulator.harsh import HarshConfig
from simulator.server import PaperExchange

BTC = "BTC/USDT:USDT"
ETH = "ETH/USDT:USDT"
VENUES = pytest.mark.parametrize("venue", ["binance", "bybit"])

# Binance workingType <-> Bybit triggerBy
TRIGGER = {
    ("binance", "mark"): {"workingType": "MARK_PRICE"},
    ("binance", "last"): {"workingType": "CONTRACT_PRICE"},
    ("bybit", "mark"): {"triggerBy": "MarkPrice"},
    ("bybit", "last"): {"triggerBy": "LastPrice"},
    ("bybit", "index"): {"triggerBy": "IndexPrice"},
}


@asynccontextmanager
async def exchange(
    venue: str, harsh: HarshConfig | str | None = None, *, pro: bool = False, **kw: Any
) -> AsyncIterator[tuple[PaperExchange, Any]]:
    """A fresh PaperExchange (ephemeral ports, no admin server) and a ccxt client."""
    async with PaperExchange(
        venue=venue, mark_interval_ms=100, admin_port=None, harsh=harsh, **kw
    ) as sim:
        factory = bybit_client if venue == "bybit" else binanceusdm_client
        ex = factory(
            sim, api_key=sim.api_key, secret=sim.api_secret, pro=pro, enableRateLimit=False
        )
        await ex.load_markets()
        try:
            yield sim, ex
        finally:
            await ex.close()


def pro_client(sim: PaperExchange) -> Any:
    factory = bybit_client if sim.venue == "bybit" else binanceusdm_client
    return factory(sim, api_key=sim.api_key, secret=sim.api_secret, pro=True, enableRateLimit=False)


async def place_stop(
    ex: Any,
    venue: str,
    side: str,
    amount: float,  # float ok: ccxt's amount argument
    trigger: float,  # float ok: ccxt's price argument
    by: str = "mark",
    **extra: Any,
) -> dict[str, Any]:
    """A reduce-only stop-market order, placed as a bot does it on ``venue``."""
    params = {"stopLossPrice": trigger, "reduceOnly": True, **TRIGGER[(venue, by)], **extra}
    return await ex.create_order(BTC, "market", side, amount, None, params)  # type: ignore[no-any-return]


async def open_stop_ids(ex: Any) -> set[str]:
    """Ids of the open conditional orders (Binance: algo orders; Bybit: StopOrder)."""
    orders = await ex.fetch_open_orders(BTC, None, None, {"trigger": True})
    return {o["id"] for o in orders}


async def position_size(ex: Any) -> Decimal:
    """Signed size of the BTC position as ccxt reports it (0 when flat)."""
    for p in await ex.fetch_positions([BTC]):
        if p["contracts"]:
            size = Decimal(str(p["contracts"]))
            return size if p["side"] == "long" else -size
    return Decimal(0)


async def user_stream_ready(sim: PaperExchange, topic: str = "order") -> None:
    """Wait until a ccxt.pro watcher's private stream is connected (Binance: a listen
    key stream; Bybit: authenticated and subscribed to ``topic``)."""

    def ready() -> bool:
        if sim.bybit_hub is not None:
            return sim.bybit_hub.has_subscribers(topic)
        return bool(sim.hub.user_conns)

    async with asyncio.timeout(5):
        while not ready():
            await asyncio.sleep(0.02)  # float ok: seconds
