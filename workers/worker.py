"""The worker process: connects to Temporal and PostgreSQL, migrates, and runs.

It registers every workflow in `workflows.registry.ALL_WORKFLOWS` and the activities
that exist, on the task queue from settings. It exits non-zero with a clear
message when a server cannot be reached (see `workers.cli`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from temporalio.client import Client
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from activities.alerts.activities import AlertActivities
from activities.exchange.activities import ExchangeActivities
from activities.exchange.gateway import ExchangeGateway
from activities.reconcile import ReconcileActivities
from activities.store.activities import StoreActivities
from activities.store.repository import Store
from activities.waves import WaveActivities
from domain.alerts import AlertChannel, alert_task_queue
from domain.events import EventType, ProcessLifecycle, make_event
from workers.alert_dispatch import run_alert_dispatch
from workers.dependency_alerts import DatabaseAlerts, DependencyAlerts
from workers.embedded import start_postgres
from workers.exchanges import make_gateways
from workers.failing_activities import FailingActivityAlerts
from workers.frozen_workflows import FrozenWorkflows
from workers.health import DatabaseWatch, WorkerHealth
from workers.metrics import MetricsPage, RecordsCollector
from workers.position_directory import TemporalPositionDirectory
from workers.schedules import apply_schedules
from workers.settings import AccountSettings, Settings
from workers.stuck_workflows import StuckCollector, StuckWorkflowAlerts
from workers.temporal import UnreachableError
from workflows.position_io import PositionConfig, exchange_task_queue
from workflows.registry import ALL_WORKFLOWS

log = logging.getLogger("posguard.worker")
VERSION = "0.1.0"


# Deterministic, side-effect-free modules imported once per process, not once per
# workflow run: pydantic, the domain, and the workflows' message models. Building
# their pydantic classes again for every run cost ~65 ms of CPU each, which a wave
# starting 50 positions pays 50 times. The workflow modules themselves stay sandboxed.
PASSTHROUGH_MODULES = (
    "pydantic",
    "domain",
    "workflows.position_io",
    "workflows.position_records",
    "workflows.search_attributes",
    "workflows.wave_io",
)


def workflow_runner() -> SandboxedWorkflowRunner:
    """Sandbox that passes `PASSTHROUGH_MODULES` through (imported once per process)."""
    return SandboxedWorkflowRunner(
        restrictions=SandboxRestrictions.default.with_passthrough_modules(*PASSTHROUGH_MODULES)
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


def default_position_config(account: str) -> PositionConfig:
    """Production's PositionConfig for a position of `account` (what adoption uses)."""
    return PositionConfig(exchange_task_queue=exchange_task_queue(account))


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


def exchange_worker(
    client: Client, account: AccountSettings, activities: ExchangeActivities
) -> Worker:
    """The worker of one account's exchange activities; its rate limit is enforced
    by the server for the whole task queue, whatever the number of processes."""
    return Worker(
        client,
        task_queue=exchange_task_queue(account.name),
        activities=activities.all(),
        max_task_queue_activities_per_second=float(account.max_requests_per_second),
    )


def alert_channel_worker(
    client: Client, channel: AlertChannel, activities: AlertActivities
) -> Worker:
    """The worker of one alert channel's deliveries, rate-limited by the server to
    the channel's `per_minute` whatever the number of processes."""
    return Worker(
        client,
        task_queue=alert_task_queue(channel.name),
        activities=activities.deliveries(),
        max_task_queue_activities_per_second=channel.per_minute / 60,
    )


async def run_worker(
    client: Client,
    settings: Settings,
    stop: asyncio.Event,
    *,
    gateways: dict[str, ExchangeGateway] | None = None,
    ready: asyncio.Event | None = None,
    position_config: Callable[[str], PositionConfig] | None = None,
    health_out: list[WorkerHealth] | None = None,
) -> None:
    """Run the workers until `stop` is set; records process started/stopped events.

    One worker for workflows and store activities on `settings.task_queue`, and
    one per account for that account's exchange activities. `ready` (if given) is
    set once the store is migrated and every worker is started (they poll from
    then on); a start that fails raises instead, so a caller waits on `ready` or on
    this coroutine, never on the clock. `position_config(account)` is the
    PositionConfig of positions the reconciler adopts (default: production's).
    Each account's reconcile Schedule is created or updated once the workers run
    (unless `settings.reconcile.every` is unset). Each alert channel gets a worker
    of its deliveries, and the alert dispatcher runs alongside (docs/alerts.md).
    `/health` and `/metrics` listen on `settings.health_host`:`settings.health_port`
    (0: any free port; `health_out`, if given, receives the endpoint, for its port).
    """
    store = await open_store(settings)
    own_gateways = gateways is None
    gateways = make_gateways(settings.accounts) if gateways is None else gateways
    try:
        store_activities = StoreActivities(store)
        exchange_activities = ExchangeActivities(gateways, events=store, journal=store)
        directory = TemporalPositionDirectory(
            client,
            task_queue=settings.task_queue,
            config_of=position_config or default_position_config,
        )
        reconcile_activities = ReconcileActivities(directory)
        wave_activities = WaveActivities(store)
        alert_activities = AlertActivities(store, settings.alert_channels)
        # The workflow worker also holds the exchange activities, which workflows run
        # as local activities where latency matters (a stop move).
        workers = [
            build_worker(
                client,
                settings,
                [
                    *store_activities.all(),
                    *reconcile_activities.all(),
                    *wave_activities.all(),
                    *exchange_activities.all(),
                    *alert_activities.all(),
                ],
            )
        ]
        for account in settings.accounts:
            if account.name in gateways:
                workers.append(exchange_worker(client, account, exchange_activities))
        for channel in settings.alert_channels:
            workers.append(alert_channel_worker(client, channel, alert_activities))
        await store.append_event(_lifecycle(EventType.PROCESS_STARTED, settings.task_queue))
        database = DatabaseWatch(store, interval_s=settings.health.probe_every.total_seconds())
        stuck = StuckWorkflowAlerts(client, store, settings.task_queue)
        frozen = FrozenWorkflows(
            client,
            store,
            settings.task_queue,
            frozen_after=settings.health.frozen_after,
            reset=settings.health.reset_frozen,
            failing=FailingActivityAlerts(store),
        )
        metrics = MetricsPage([RecordsCollector(store.pool), StuckCollector(stuck)])
        health = WorkerHealth(
            client,
            database,
            gateways,
            port=settings.health_port,
            host=settings.health_host,
            metrics=metrics,
            settings=settings.health,
            alerts=DependencyAlerts(store, "worker"),
            database_alerts=DatabaseAlerts(client, settings) if settings.alert_channels else None,
        )
        if settings.health_port >= 0:
            await health.start()
            if health_out is not None:
                health_out.append(health)
        watch = asyncio.create_task(health.run(stop))
        watch_stuck = asyncio.create_task(stuck.run(stop, settings.health.probe_every))
        watch_frozen = asyncio.create_task(frozen.run(stop))
        async with contextlib.AsyncExitStack() as running:
            for worker in workers:
                await running.enter_async_context(worker)
            log.info("worker polling task queue %r", settings.task_queue)
            for schedule_id in await apply_schedules(client, settings):
                log.info("schedule %s applied (every %s)", schedule_id, settings.reconcile.every)
            dispatch = asyncio.create_task(run_alert_dispatch(client, store, settings, stop))
            if ready is not None:
                ready.set()
            await stop.wait()
            await dispatch
        await watch
        await watch_stuck
        await watch_frozen
        await alert_activities.close()
        await health.stop()
        await store.append_event(_lifecycle(EventType.PROCESS_STOPPED))
    finally:
        if own_gateways:
            for gateway in gateways.values():
                with contextlib.suppress(Exception):
                    await gateway.close()
        await store.close()
