"""Fixtures of the position workflow tests (see harness.py)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from decimal import Decimal

import pytest_asyncio
from pydantic import SecretStr
from temporalio.testing import WorkflowEnvironment

from activities.store.repository import Store
from domain.protection import ProtectionPolicy
from simulator.server import PaperExchange
from tests.workflows.harness import PRICES, Stack
from workers.settings import AccountSettings, Settings
from workers.worker import run_worker
from workflows.position_io import PositionConfig, exchange_task_queue


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
    account = AccountSettings(
        name="paper",
        api_key=SecretStr(sim.api_key),
        secret=SecretStr(sim.api_secret),
        paper_url=sim.rest_url,
        max_requests_per_second=Decimal(1000),
    )
    settings = Settings(
        task_queue=f"positions-{uuid.uuid4().hex[:8]}",
        database_url=SecretStr(database_url),
        accounts=[account],
    )
    config = PositionConfig(
        exchange_task_queue=exchange_task_queue("paper"),
        check_interval=timedelta(seconds=30),
        protection=ProtectionPolicy(
            retry_delay=timedelta(milliseconds=100), round_delay=timedelta(seconds=5)
        ),
        exchange_call_timeout=timedelta(seconds=5),
        exchange_attempts=2,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(run_worker(time_skipping_env.client, settings, stop))
    await asyncio.sleep(0.5)
    if task.done():
        task.result()
    try:
        yield Stack(time_skipping_env.client, sim, store, settings, config)
    finally:
        stop.set()
        await task
