"""Fixtures of the position workflow tests (see harness.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
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


@pytest.fixture(scope="module")
def account_options() -> dict[str, Any]:
    """More `AccountSettings` fields of the stack's account (a module may override)."""
    return {}


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def stack(
    temporal_env: WorkflowEnvironment,
    database_url: str,
    sim: PaperExchange,
    store: Store,
    account_options: dict[str, Any],
) -> AsyncIterator[Stack]:
    """The live stack on the real dev server, account "paper" (as `spec` makes).

    Not on the time-skipping server: these paths wait on messages and short retries,
    not on long timers, and the test server now and then left a workflow task
    started and never timed out (a cancelled position hung its test for 10 minutes).
    A test that needs the periodic look gives its position a short `check_interval`.
    """
    async with live_stack(
        temporal_env.client,
        database_url,
        store,
        name="positions",
        account="paper",
        sim=sim,
        check_interval=timedelta(seconds=30),
        config=QUICK,
        account_options=account_options,
    ) as live:
        yield live
