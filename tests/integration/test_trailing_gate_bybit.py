"""The price gate and the user stream on Bybit: a stop trailed through the gate.

`test_trailing_gate`'s end-to-end trailing test, imported and run against the
Bybit paper venue: ticks come from ccxt.pro `bybit` (`tickers.{symbol}` on the
public stream), fills from its private `order` stream, every move and the close
through ccxt `bybit`. (The 50-position load test stays on Binance: the suite's
time budget.)
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest_asyncio
from temporalio.testing import WorkflowEnvironment

from activities.store.repository import Store
from tests.integration.test_trailing_gate import (  # noqa: F401  (the test itself)
    MANY_SYMBOLS,
    test_stop_trails_through_the_gate_and_closes_on_the_reversal,
)
from tests.workflows.harness import QUICK, Stack, live_stack


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def world(
    temporal_env: WorkflowEnvironment, database_url: str, store: Store
) -> AsyncIterator[Stack]:
    async with live_stack(
        temporal_env.client,
        database_url,
        store,
        name="tgb",
        exchange={
            "venue": "bybit",
            "mark_interval_ms": 3_600_000,
            "symbols": MANY_SYMBOLS,
            "weight_limit": 10**9,
        },
        check_interval=timedelta(minutes=10),
        config={**QUICK, "exchange_call_timeout": timedelta(seconds=10), "exchange_attempts": 3},
    ) as stack:
        stack.sim.configure(rate_limit_per_s=10_000)
        stack.sim.deposit("1000000")
        yield stack
