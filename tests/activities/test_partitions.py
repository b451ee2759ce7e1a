"""Event partition upkeep by many processes at once (issue 10, item 8).

Every worker creates the coming months' event partitions and applies retention when
it starts. Workers started together (scale-out, or all restarted after a crash) must
all start: none may die on a partition another one is creating or dropping.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest_asyncio
from pydantic import SecretStr
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from activities.store.repository import Store
from tests.conftest import url_for_database
from tests.waiting import poll
from workers.settings import Settings
from workers.temporal import DATA_CONVERTER
from workers.worker import run_worker

WORKERS = 8


async def partitions(store: Store) -> list[str]:
    rows = await store.pool.fetch(
        """SELECT c.relname FROM pg_inherits i
           JOIN pg_class c ON c.oid = i.inhrelid
           JOIN pg_class p ON p.oid = i.inhparent
           WHERE p.relname = 'events' ORDER BY c.relname"""
    )
    return [r["relname"] for r in rows]


@pytest_asyncio.fixture(loop_scope="session")
async def stores(store: Store, database_url: str) -> AsyncIterator[list[Store]]:
    """One store (its own pool, its own connection) per would-be worker."""
    opened = [await Store.connect(database_url, min_size=1, max_size=1) for _ in range(WORKERS)]
    try:
        yield opened
    finally:
        for s in opened:
            await s.close()


async def test_workers_creating_the_same_new_partitions_together_all_succeed(
    store: Store, stores: list[Store]
) -> None:
    # Months no partition exists for yet: every caller races to create the same four.
    start = datetime(2091, 1, 15, tzinfo=UTC)
    expected = [f"events_2091_{m:02d}" for m in range(1, 5)]
    assert not set(expected) & set(await partitions(store))
    results = await asyncio.gather(
        *(s.ensure_event_partitions(start, months_ahead=3) for s in stores),
        return_exceptions=True,
    )
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, errors
    # Each partition was created exactly once, by one of the callers.
    assert sum(r for r in results if isinstance(r, int)) == len(expected)
    names = await partitions(store)
    for name in expected:
        assert names.count(name) == 1
    # Calling again creates nothing.
    assert await store.ensure_event_partitions(start, months_ahead=3) == 0


async def test_workers_applying_retention_together_all_succeed(
    store: Store, stores: list[Store]
) -> None:
    # Old partitions that every caller's retention wants to drop at once.
    old = datetime.now(UTC) - timedelta(days=3 * 365)
    await store.ensure_event_partitions(old, months_ahead=2)
    before = await partitions(store)
    doomed = [f"events_{(old + timedelta(days=31 * i)):%Y_%m}" for i in range(3)]
    assert set(doomed) <= set(before)
    results = await asyncio.gather(
        *(s.apply_retention(timedelta(days=365)) for s in stores),
        return_exceptions=True,
    )
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, errors
    after = await partitions(store)
    assert not set(doomed) & set(after)
    assert sum(r for r in results if isinstance(r, int)) == len(set(before) - set(after))


async def test_workers_doing_startup_upkeep_together_all_succeed(
    store: Store, stores: list[Store]
) -> None:
    # What a worker does at start: partitions ahead, then retention; all at once.
    start = datetime(2093, 6, 1, tzinfo=UTC)

    async def upkeep(s: Store) -> None:
        await s.ensure_event_partitions(start, months_ahead=2)
        await s.apply_retention(timedelta(days=365))

    results = await asyncio.gather(*(upkeep(s) for s in stores), return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, errors
    names = await partitions(store)
    for month in (6, 7, 8):
        assert names.count(f"events_2093_{month:02d}") == 1


async def test_workers_started_together_on_a_fresh_database_all_start(
    temporal_env: WorkflowEnvironment, pg_url: str
) -> None:
    # A database never migrated, no partition yet: every worker migrates, creates the
    # current months' partitions and applies retention at once. All of them must run.
    import asyncpg

    name = f"t_workers_together_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(pg_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = url_for_database(pg_url, name)
    queue = f"together-{uuid.uuid4().hex[:8]}"
    stop = asyncio.Event()
    try:
        settings = Settings(task_queue=queue, database_url=SecretStr(url), health_port=-1)
        # One client each, as separate processes have (the SDK refuses two workers of
        # one task queue on one client).
        address = temporal_env.client.service_client.config.target_host
        clients = [await Client.connect(address, data_converter=DATA_CONVERTER) for _ in range(4)]
        tasks = [asyncio.create_task(run_worker(c, settings, stop)) for c in clients]
        s = await Store.connect(url)
        try:
            # Every worker records its start once it has migrated and done the upkeep;
            # a worker that died on the way never does.
            async def started() -> int:
                done = [t for t in tasks if t.done()]
                assert not done, [t.exception() for t in done]
                if not await s.pool.fetchval("SELECT to_regclass('events') IS NOT NULL"):
                    return 0
                count: int = await s.pool.fetchval(
                    "SELECT count(*) FROM events WHERE type = 'process_started'"
                )
                return count

            await poll(started, lambda n: n == len(tasks), "every worker started", interval=0.1)
            names = await partitions(s)
            now = datetime.now(UTC)
            assert names.count(f"events_{now:%Y_%m}") == 1
        finally:
            await s.close()
        stop.set()
        await asyncio.gather(*tasks)
    finally:
        stop.set()
        admin = await asyncpg.connect(pg_url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()
