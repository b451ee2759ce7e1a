"""The worker's health endpoint and its watches over what it depends on (docs/health.md).

`GET /health` reports each dependency with the age of its last answer: PostgreSQL,
Temporal, and each exchange account. It answers 200 when all are up, and 503 naming
the parts that are down (`domain.health`). Watches run in the background:
- The database is pinged every `probe_every`. An outage is recorded as
  DB_CONNECTION_LOST (at the moment it began) and DB_CONNECTION_RECOVERED (with its
  length) as soon as the database is back. No event can be written during the outage
  itself, but Temporal retries every store write until then, so no event of the
  positions is lost meanwhile.
- Temporal is asked for its health as often.
- An account the worker has not reached for `probe_every` is asked the exchange's
  time. Every request of the process counts as an answer, or as a failure to answer
  (`activities.exchange.request_metrics.REACHABILITY`).
- Each report goes to `DependencyAlerts`: a part that goes down raises an alert,
  and its return resolves it; PostgreSQL's outage goes to `DatabaseAlerts`, which
  needs no database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web
from temporalio.client import Client

from activities.exchange.gateway import ExchangeGateway
from activities.exchange.request_metrics import REACHABILITY
from activities.store.repository import Store
from domain.events import DbConnection, EventType, make_event
from domain.health import HealthReport, PartState, assess
from workers.dependency_alerts import DatabaseAlerts, DependencyAlerts
from workers.endpoint import serve
from workers.metrics import MetricsPage
from workers.settings import HealthSettings

log = logging.getLogger("posguard.health")


async def _every(
    interval_s: float,  # float ok: seconds
    probe: Callable[[], Awaitable[object]],
    stop: asyncio.Event,
) -> None:
    """`probe()` now and every `interval_s` until `stop` is set."""
    while not stop.is_set():
        await probe()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)


class _Answers:
    """When a dependency last answered, and when and how it last failed to."""

    def __init__(self) -> None:
        self.last_ok: datetime | None = None
        self.last_failure: datetime | None = None
        self.error: str | None = None

    def _answered(self, ok: bool, error: str | None) -> None:
        if ok:
            self.last_ok = datetime.now(UTC)
        else:
            self.last_failure, self.error = datetime.now(UTC), error

    def _part(self, name: str, max_age: timedelta, **detail: object) -> PartState:
        return PartState(
            name=name,
            last_ok=self.last_ok,
            last_failure=self.last_failure,
            error=self.error,
            max_age=max_age,
            detail=detail,
        )


class DatabaseWatch(_Answers):
    """Pings the database; records each outage once it is over."""

    def __init__(self, store: Store, *, interval_s: float = 5) -> None:  # float ok: seconds
        super().__init__()
        self.store = store
        self.interval_s = interval_s
        self.up = True
        self.down_since: datetime | None = None
        self.outages = 0

    async def probe(self) -> bool:
        """One ping; updates `up` and records a finished outage."""
        reason: str | None = None
        try:
            ok = await asyncio.wait_for(self.store.ping(), timeout=self.interval_s)
        except Exception as exc:  # any failure means "not reachable now"
            ok = False
            reason = type(exc).__name__
        now = datetime.now(UTC)
        self._answered(ok, reason or "ping failed")
        if not ok and self.up:
            self.up, self.down_since = False, now
            self.outages += 1
            log.error("database connection lost: %s", reason)
        elif ok and not self.up:
            self.up = True
            await self._record_outage(self.down_since or now)
            self.down_since = None
        return ok

    def part(self, max_age: timedelta) -> PartState:
        return self._part("postgresql", max_age, outages=self.outages)

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


class TemporalWatch(_Answers):
    """Asks the Temporal frontend for its health."""

    def __init__(self, client: Client, *, timeout_s: float = 3) -> None:  # float ok: seconds
        super().__init__()
        self.client = client
        self.timeout_s = timeout_s

    async def probe(self) -> bool:
        try:
            ok = bool(
                await asyncio.wait_for(self.client.service_client.check_health(), self.timeout_s)
            )
            error = None if ok else "not serving"
        except Exception as exc:  # unreachable, refused, timed out
            ok, error = False, type(exc).__name__
        self._answered(ok, error)
        return ok

    def part(self, max_age: timedelta) -> PartState:
        return self._part("temporal", max_age)


class ExchangeWatch:
    """Keeps each account's exchange proved reachable: asks it the time when nothing
    else of the process has reached it for `probe_every`."""

    def __init__(self, gateways: dict[str, ExchangeGateway], *, probe_every: timedelta) -> None:
        self.gateways = gateways
        self.probe_every = probe_every

    async def probe_idle(self) -> None:
        now = datetime.now(UTC)
        idle = [
            g
            for name, g in self.gateways.items()
            if (r := REACHABILITY.get(name)) is None
            or r.last_ok is None
            or now - r.last_ok >= self.probe_every
        ]
        await asyncio.gather(*(self._probe(g) for g in idle))

    async def _probe(self, gateway: ExchangeGateway) -> None:
        with contextlib.suppress(Exception):  # the outcome is in REACHABILITY
            await asyncio.wait_for(gateway.probe(), self.probe_every.total_seconds())

    def parts(self, max_age: timedelta) -> list[PartState]:
        out = []
        for name, gateway in self.gateways.items():
            r = REACHABILITY.get(name)
            out.append(
                PartState(
                    name=f"exchange:{name}",
                    last_ok=None if r is None else r.last_ok,
                    last_failure=None if r is None else r.last_failure,
                    error=None if r is None else r.error,
                    max_age=max_age,
                    detail={"exchange": gateway.exchange_id},
                )
            )
        return out


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
        settings: HealthSettings | None = None,
        alerts: DependencyAlerts | None = None,
        database_alerts: DatabaseAlerts | None = None,
    ) -> None:
        self.settings = settings or HealthSettings()
        self.alerts = alerts
        self.database_alerts = database_alerts
        self.database = database
        self.temporal = TemporalWatch(client)
        self.exchanges = ExchangeWatch(gateways, probe_every=self.settings.probe_every)
        self.port = port
        self.host = host
        self.metrics = metrics or MetricsPage()
        self.started = time.monotonic()  # float ok: timing
        self._runner: web.AppRunner | None = None

    async def report(self) -> HealthReport:
        """PostgreSQL and Temporal asked now; the accounts as last reached."""
        await asyncio.gather(self.database.probe(), self.temporal.probe())
        max_age = self.settings.max_age
        parts = [
            self.database.part(max_age),
            self.temporal.part(max_age),
            *self.exchanges.parts(max_age),
        ]
        return assess("worker", parts, datetime.now(UTC))

    async def body(self) -> dict[str, Any]:
        report = await self.report()
        return {
            **report.model_dump(mode="json"),
            "uptime_s": round(time.monotonic() - self.started),  # float ok
        }

    async def _health(self, request: web.Request) -> web.Response:
        body = await self.body()
        return web.json_response(body, status=200 if body["status"] == "ok" else 503)

    async def run(self, stop: asyncio.Event) -> None:
        """Every `probe_every` until `stop` is set: idle accounts asked the time, the
        database and Temporal probed, and the report handed to the alerts."""
        await _every(self.settings.probe_every.total_seconds(), self._watch, stop)

    async def _watch(self) -> None:
        await self.exchanges.probe_idle()
        report = await self.report()
        if self.alerts is not None:
            await self.alerts.observe(report)
        if self.database_alerts is not None:
            await self.database_alerts.observe(report)

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
