"""The dashboard process: a refresh loop and the HTTP server (`posguard web`).

Every `web_refresh` the loop reads the account (`AccountReader.read`: one `state`
query per open position, a mark per symbol, a few bounded store reads) and keeps the
result; the page asks for it as often. It serves on `web_host`:`web_port`, with
`/health` (PostgreSQL and Temporal, each with the age of its last answer) and
`/metrics` beside the page.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from temporalio.client import Client

from activities.store.repository import Store
from domain.health import assess
from workers.dashboard.actions import Actions
from workers.dashboard.app import DashboardApp
from workers.dashboard.data import AccountReader
from workers.endpoint import serve, url_host
from workers.health import DatabaseWatch, TemporalWatch
from workers.metrics import MetricsPage
from workers.settings import Settings
from workers.temporal import UnreachableError

log = logging.getLogger("posguard.dashboard")

MIN_REFRESH_S = 0.2


class _ReadOnlyDatabaseWatch(DatabaseWatch):
    """The database's health, without recording its outages: the dashboard writes
    nothing (the worker records them)."""

    async def _record_outage(self, began: datetime) -> None:
        return None


async def connect_store(settings: Settings) -> Store:
    """A small pool on the store (DATABASE_URL, else the embedded PostgreSQL); nothing
    is migrated: the worker (or `posguard db migrate`) does that. `UnreachableError`
    when it cannot be reached."""
    from workers.worker import database_url

    try:
        return await asyncio.wait_for(
            Store.connect(database_url(settings), max_size=4), settings.connect_timeout_seconds
        )
    except (OSError, TimeoutError, ConnectionError) as exc:
        raise UnreachableError(f"cannot reach PostgreSQL: {exc}") from exc
    except Exception as exc:  # asyncpg's own errors (auth, missing database, ...)
        raise UnreachableError(f"cannot use PostgreSQL: {exc}") from exc


class Dashboard:
    """The dashboard on one Temporal client and one store: `start`, `run`, `stop`."""

    def __init__(self, client: Client, store: Store, settings: Settings) -> None:
        self.settings = settings
        self.reader = AccountReader(client, store, settings)
        self.database = _ReadOnlyDatabaseWatch(store)
        self.temporal = TemporalWatch(client)
        self.metrics = MetricsPage()
        self.started = time.monotonic()  # float ok: timing
        self.port = settings.web_port
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        """Where a browser on this host opens the dashboard."""
        return f"http://{url_host(self.settings.web_host)}:{self.port}/"

    async def _health(self, request: web.Request) -> web.Response:
        await asyncio.gather(self.database.probe(), self.temporal.probe())
        max_age = self.settings.health.max_age
        report = assess(
            "web", [self.database.part(max_age), self.temporal.part(max_age)], datetime.now(UTC)
        )
        body: dict[str, Any] = {
            **report.model_dump(mode="json"),
            "uptime_s": round(time.monotonic() - self.started),  # float ok
        }
        return web.json_response(body, status=200 if report.status == "ok" else 503)

    async def start(self) -> int:
        """Serve on `web_host`:`web_port` (0: any free port, then in `port`); the port,
        or -1 when it is taken (logged)."""
        app = DashboardApp(
            self.reader,
            Actions(self.reader.client, self.settings),
            health=self._health,
            metrics=self.metrics.handle,
        ).build()
        self._runner, self.port = await serve(
            app, self.settings.web_host, self.settings.web_port, "dashboard"
        )
        if self.port >= 0:
            log.info("dashboard on %s", self.url)
        return self.port

    async def refresh(self) -> None:
        """One read of the account, kept for the page; a failure is logged, never fatal."""
        try:
            await self.reader.read()
        except Exception:  # the next refresh tries again; the page shows the last read
            log.exception("dashboard refresh failed")

    async def run(self, stop: asyncio.Event) -> None:
        """Refresh every `web_refresh` until `stop` is set."""
        every = max(self.settings.web_refresh.total_seconds(), MIN_REFRESH_S)
        while not stop.is_set():
            began = time.monotonic()  # float ok: timing
            await self.refresh()
            pause = max(every - (time.monotonic() - began), 0.05)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), pause)

    async def stop(self) -> None:
        """Stop serving and close the exchange clients."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self.reader.sampler.close()


async def run_dashboard(
    client: Client,
    settings: Settings,
    stop: asyncio.Event,
    *,
    store: Store | None = None,
    ready: asyncio.Event | None = None,
    out: list[Dashboard] | None = None,
) -> None:
    """Serve the dashboard until `stop` is set. `store`: the store to read (default: a
    pool of its own, closed at the end); `ready` is set once it serves; `out` receives
    the `Dashboard` (its port and URL)."""
    own_store = store is None
    store = await connect_store(settings) if store is None else store
    dashboard = Dashboard(client, store, settings)
    try:
        if await dashboard.start() < 0:
            raise RuntimeError(f"the dashboard could not listen on port {settings.web_port}")
        if out is not None:
            out.append(dashboard)
        await dashboard.refresh()
        if ready is not None:
            ready.set()
        await dashboard.run(stop)
    finally:
        await dashboard.stop()
        if own_store:
            await store.close()
