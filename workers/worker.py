"""The worker process: connects to Temporal and PostgreSQL, migrates, and runs.

It registers every workflow in `workflows.ALL_WORKFLOWS` and the activities
that exist, on the task queue from settings. It exits non-zero with a clear
message when a server cannot be reached (see `workers.cli`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from temporalio.client import Client
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from activities.store.activities import StoreActivities
from activities.store.repository import Store
from domain.events import EventType, ProcessLifecycle, make_event
from workers.embedded import start_postgres
from workers.settings import Settings
from workers.temporal import UnreachableError
from workflows import ALL_WORKFLOWS

log = logging.getLogger("posguard.worker")
VERSION = "0.1.0"


def workflow_runner() -> SandboxedWorkflowRunner:
    """Sandbox that passes our pure domain code and pydantic through (imported once)."""
    return SandboxedWorkflowRunner(
        restrictions=SandboxRestrictions.default.with_passthrough_modules("pydantic", "domain")
    )


def database_url(settings: Settings) -> str:
    """DATABASE_URL when set, else the embedded PostgreSQL under the state directory."""
    if settings.database_url is not None:
        return settings.database_url.get_secret_value()
    return start_postgres(settings.state_dir / "pg")


async def open_store(settings: Settings) -> Store:
    """Connect to PostgreSQL, apply migrations and partition upkeep; `UnreachableError` if down."""
    url = database_url(settings)
    try:
        store = await asyncio.wait_for(Store.connect(url), settings.connect_timeout_seconds)
    except (OSError, TimeoutError, ConnectionError) as exc:
        raise UnreachableError(f"cannot reach PostgreSQL: {exc}") from exc
    except Exception as exc:  # asyncpg's own errors (auth, missing database, ...)
        raise UnreachableError(f"cannot use PostgreSQL: {exc}") from exc
    applied = await store.migrate()
    if applied:
        log.info("applied migrations %s", applied)
    now = datetime.now(UTC)
    await store.ensure_event_partitions(now, settings.event_partition_months_ahead)
    await store.apply_retention(timedelta(days=settings.event_retention_days))
    return store


def build_worker(
    client: Client,
    settings: Settings,
    activities: Sequence[Any],
    *,
    workflows: Sequence[type[Any]] | None = None,
) -> Worker:
    """The posguard worker on `settings.task_queue` with our sandbox configuration."""
    return Worker(
        client,
        task_queue=settings.task_queue,
        workflows=list(ALL_WORKFLOWS if workflows is None else workflows),
        activities=list(activities),
        workflow_runner=workflow_runner(),
    )


def _lifecycle(kind: EventType, detail: str | None = None) -> Any:
    host = socket.gethostname()
    now = datetime.now(UTC)
    return make_event(
        kind,
        ProcessLifecycle(
            process="worker", version=VERSION, host=host, pid=os.getpid(), detail=detail
        ),
        event_id=f"process/worker/{host}/{os.getpid()}/{kind.value}/{now.isoformat()}",
        occurred_at=now,
    )


async def run_worker(client: Client, settings: Settings, stop: asyncio.Event) -> None:
    """Run the worker until `stop` is set; records process started/stopped events."""
    store = await open_store(settings)
    try:
        activities: list[Any] = [*_activities(StoreActivities(store))]
        worker = build_worker(client, settings, activities)
        await store.append_event(_lifecycle(EventType.PROCESS_STARTED, settings.task_queue))
        async with worker:
            log.info("worker polling task queue %r", settings.task_queue)
            await stop.wait()
        await store.append_event(_lifecycle(EventType.PROCESS_STOPPED))
    finally:
        await store.close()


def _activities(store_activities: StoreActivities) -> list[Any]:
    return [store_activities.apply, store_activities.append_event]
