"""The worker's health endpoint and its watch over the database connection.

`GET /health` answers 200 when PostgreSQL and Temporal both answer, 503 otherwise,
with what was checked. A background probe pings the database every few seconds:
an outage is recorded as DB_CONNECTION_LOST (at the moment it began) and
DB_CONNECTION_RECOVERED (with its length) as soon as the database is back; an
event cannot be written during the outage itself, and Temporal retries every
store write until then, so no event of the positions is lost meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from temporalio.client import Client

from activities.exchange.gateway import ExchangeGateway
from activities.store.repository import Store
from domain.events import DbConnection, EventType, make_event
from workers.endpoint import serve
from workers.metrics import MetricsPage

log = logging.getLogger("posguard.health")


class DatabaseWatch:
    """Pings the database; records each outage once it is over."""

    def __init__(self, store: Store, *, interval_s: float = 5) -> None:  # float ok: seconds
        self.store = store
        self.interval_s = interval_s
        self.up = True
        self.down_since: datetime | None = None
        self.outages = 0

    async def probe(self) -> bool:
        """One ping; updates `up` and records a finished outage."""
        try:
            ok = await asyncio.wait_for(self.store.ping(), timeout=self.interval_s)
        except Exception as exc:  # any failure means "not reachable now"
            ok = False
            reason = repr(exc)[:300]
        else:
            reason = None
        if not ok and self.up:
            self.up, self.down_since = False, datetime.now(UTC)
            self.outages += 1
            log.error("database connection lost: %s", reason)
        elif ok and not self.up:
            self.up = True
            await self._record_outage(self.down_since or datetime.now(UTC))
            self.down_since = None
        return ok

    async def _record_outage(self, began: datetime) -> None:
        now = datetime.now(UTC)
        downtime = int((now - began).total_seconds() * 1000)  # float ok: timing
        log.warning("database connection recovered after %d ms", downtime)
        tag = f"db/{socket.gethostname()}/{os.getpid()}/{began.isoformat()}"
        with contextlib.suppress(Exception):  # the next outage may already have begun
            await self.store.append_events(
                [
                    make_event(
                        EventType.DB_CONNECTION_LOST,
                        DbConnection(reason="ping failed"),
                        event_id=f"{tag}/lost",
                        occurred_at=began,
                    ),
                    make_event(
                        EventType.DB_CONNECTION_RECOVERED,
                        DbConnection(downtime_ms=downtime),
                        event_id=f"{tag}/recovered",
                        occurred_at=now,
                    ),
                ]
            )

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.probe()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval_s)


class WorkerHealth:
    """`GET /health` and `GET /metrics` of one worker process."""

    def __init__(
        self,
        client: Client,
        database: DatabaseWatch,
        gateways: dict[str, ExchangeGateway],
        *,
        port: int,
        host: str = "127.0.0.1",
        metrics: MetricsPage | None = None,
    ) -> None:
        self.client = client
        self.database = database
        self.gateways = gateways
        self.port = port
        self.host = host
        self.metrics = metrics or MetricsPage()
        self.started = time.monotonic()  # float ok: timing
        self._runner: web.AppRunner | None = None

    async def body(self) -> dict[str, Any]:
        database = await self.database.probe()
        try:
            temporal = bool(await asyncio.wait_for(self.client.service_client.check_health(), 3))
        except Exception:
            temporal = False
        return {
            "status": "ok" if database and temporal else "unhealthy",
            "database": database,
            "database_outages": self.database.outages,
            "temporal": temporal,
            "accounts": sorted(self.gateways),
            "uptime_s": round(time.monotonic() - self.started),  # float ok
        }

    async def _health(self, request: web.Request) -> web.Response:
        body = await self.body()
        return web.json_response(body, status=200 if body["status"] == "ok" else 503)

    async def start(self) -> None:
        """Serve on `host:port` (0: any free port, then in `port`); a port in use is
        logged, never fatal for the worker."""
        app = web.Application()
        app.router.add_get("/health", self._health)
        self.metrics.add_to(app)
        self._runner, self.port = await serve(app, self.host, self.port, "worker")

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
