"""Fixtures of the activity tests: a gateway over the module's paper exchange (`sim`)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

from activities.exchange.gateway import ExchangeGateway
from simulator.client import venue_client
from simulator.server import PaperExchange

ACCOUNT = "paper"


@pytest_asyncio.fixture
async def gateway(sim: PaperExchange) -> AsyncIterator[ExchangeGateway]:
    """A gateway of account `ACCOUNT` over real ccxt to the test module's `sim`
    (its venue's ccxt class: `binanceusdm` or `bybit`)."""
    client = venue_client(
        sim.venue, sim, api_key=sim.api_key, secret=sim.api_secret, enableRateLimit=False
    )
    gw = ExchangeGateway(client, account=ACCOUNT)
    try:
        yield gw
    finally:
        await gw.close()
