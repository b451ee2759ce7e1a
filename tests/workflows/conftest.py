"""Fixtures of the position workflow tests (see harness.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest_asyncio
from temporalio.testing import WorkflowEnvironment

from activities.store.repository import Store
from simulator.server import PaperExchange
from tests.workflows.harness import PRICES, QUICK, Stack, live_stack


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def sim() -> AsyncIterator[PaperExchange]:
    async with PaperExchange(mark_interval_ms=200, admin_port=None) as exchange:
        for symbol, price in PRICES.items():
            exchange.set_price(symbol, price)
        yield exchange


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def stack(
    time_skipping_env: WorkflowEnvironment, database_url: str, sim: PaperExchange, store: Store
) -> AsyncIterator[Stack]:
    """The live stack on the time-skipping server, account "paper" (as `spec` makes)."""
    async with live_stack(
        time_skipping_env.client,
        database_url,
        store,
        name="positions",
        account="paper",
        sim=sim,
        check_interval=timedelta(seconds=30),
        config=QUICK,
    ) as live:
        yield live
