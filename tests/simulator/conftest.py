"""Fixtures: a fresh PaperExchange on ephemeral 127.0.0.1 ports and ccxt clients for it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from simulator.client import binanceusdm_client, bybit_client
from simulator.server import PaperExchange

BTC = "BTC/USDT:USDT"
ETH = "ETH/USDT:USDT"


@pytest.fixture
async def sim() -> AsyncIterator[PaperExchange]:
    async with PaperExchange(mark_interval_ms=100) as s:
        yield s


@pytest.fixture
async def ex(sim: PaperExchange) -> AsyncIterator[Any]:
    client = binanceusdm_client(
        sim, api_key=sim.api_key, secret=sim.api_secret, enableRateLimit=False
    )
    await client.load_markets()
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
async def pro(sim: PaperExchange) -> AsyncIterator[Any]:
    client = binanceusdm_client(
        sim, api_key=sim.api_key, secret=sim.api_secret, pro=True, enableRateLimit=False
    )
    await client.load_markets()
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
async def bsim() -> AsyncIterator[PaperExchange]:
    """A Bybit-venue paper exchange."""
    async with PaperExchange(venue="bybit", mark_interval_ms=100) as s:
        yield s


@pytest.fixture
async def bex(bsim: PaperExchange) -> AsyncIterator[Any]:
    """ccxt async ``bybit`` against ``bsim``."""
    client = bybit_client(bsim, api_key=bsim.api_key, secret=bsim.api_secret, enableRateLimit=False)
    await client.load_markets()
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
async def bpro(bsim: PaperExchange) -> AsyncIterator[Any]:
    """ccxt.pro ``bybit`` against ``bsim``."""
    client = bybit_client(
        bsim, api_key=bsim.api_key, secret=bsim.api_secret, pro=True, enableRateLimit=False
    )
    await client.load_markets()
    try:
        yield client
    finally:
        await client.close()
