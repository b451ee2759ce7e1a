"""`GET /metrics` of every posguard process, in Prometheus' text format (docs/metrics.md).

One page holds, in order:
1. the process-wide registry: events counted as they are recorded
   (`activities.store.event_metrics`), exchange requests
   (`activities.exchange.request_metrics`), the gate's wake-up histogram, and
   prometheus-client's own process and Python metrics;
2. the process's collectors, read at scrape time: the worker's view of the
   records (`RecordsCollector`: positions by state, seconds without a stop), the
   gate's counters (`signals_ingest.gate_metrics.GateCollector`), the signal
   clients' (`SignalCollector`);
3. the Temporal SDK runtime's own metrics (`temporal_*`), when the process's
   client was connected with `sdk_metrics_runtime()`.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

from workers.settings import Settings

log = logging.getLogger("posguard.metrics")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_POSITIONS_SQL = "SELECT account, exchange, status, count(*) AS n FROM positions GROUP BY 1, 2, 3"
# A position holding a quantity (whatever its state: a failed one still holds it)
# is protected while one of its stops is open on the exchange per its records;
# otherwise it has been unprotected since its entry filled or since a stop of its
# last stopped resting (cancelled, triggered, expired), whichever is later. A stop
# refused or of unknown fate never protected it: it moves nothing.
_UNPROTECTED_SQL = """
SELECT p.id, p.account, p.exchange, p.symbol,
       CASE WHEN coalesce(s.live, false) THEN 0
            ELSE greatest(0, extract(epoch FROM now() - greatest(p.opened_at, s.ended)))
       END AS seconds
FROM positions p
LEFT JOIN LATERAL (
    SELECT bool_or(o.status IN ('open', 'partially_filled')) AS live,
           max(o.updated_at) FILTER (
               WHERE o.status IN ('canceled', 'expired', 'filled')) AS ended
    FROM orders o
    WHERE o.position_id = p.id AND o.kind IN ('stop', 'emergency_stop')
) s ON true
WHERE p.status NOT IN ('closed', 'rolled_back') AND p.quantity > 0 AND p.opened_at IS NOT NULL
"""


@dataclass
class _Records:
    positions: list[tuple[str, str, str, int]] = field(default_factory=list)
    unprotected: list[tuple[str, str, str, str, float]] = field(default_factory=list)
    ok: bool = False


class RecordsCollector(Collector):
    """What the records say about the account, read by `refresh()` before each scrape.

    These are account-wide (every worker reports the same values): aggregate them
    with `max`, never `sum`.
    """

    def __init__(self, pool: Any, *, timeout: timedelta = timedelta(seconds=3)) -> None:
        self._pool = pool
        self._timeout_s = timeout.total_seconds()  # float ok: seconds
        self._last = _Records()

    async def refresh(self) -> None:
        """Read the records now; on failure the previous values stay, marked stale."""
        try:
            async with asyncio.timeout(self._timeout_s):
                positions = await self._pool.fetch(_POSITIONS_SQL)
                unprotected = await self._pool.fetch(_UNPROTECTED_SQL)
        except Exception as exc:  # a scrape must answer even with the database down
            log.warning("records not read for /metrics: %r", exc)
            self._last.ok = False
            return
        self._last = _Records(
            positions=[(r["account"], r["exchange"], r["status"], r["n"]) for r in positions],
            unprotected=[
                (r["id"], r["account"], r["exchange"], r["symbol"], float(r["seconds"]))
                for r in unprotected
            ],
            ok=True,
        )

    def collect(self) -> Iterator[Metric]:
        rec = self._last
        up = GaugeMetricFamily(
            "posguard_records_up", "1 when the last read of the records for /metrics worked"
        )
        up.add_metric([], 1 if rec.ok else 0)
        yield up
        positions = GaugeMetricFamily(
            "posguard_positions",
            "Positions by state, per the records",
            labels=["account", "exchange", "state"],
        )
        for account, exchange, state, n in rec.positions:
            positions.add_metric([account, exchange, state], n)
        yield positions
        unprotected = GaugeMetricFamily(
            "posguard_position_unprotected_seconds",
            "Seconds a position holding a quantity has had no open stop (0: protected)",
            labels=["account", "exchange", "symbol", "position_id"],
        )
        for position_id, account, exchange, symbol, seconds in rec.unprotected:
            unprotected.add_metric([account, exchange, symbol, position_id], seconds)
        yield unprotected
        worst = GaugeMetricFamily(
            "posguard_unprotected_seconds_max",
            "The longest time any position currently holding a quantity has had no stop",
        )
        worst.add_metric([], max((u[4] for u in rec.unprotected), default=0.0))
        yield worst


class SignalCollector(Collector):
    """The signal clients of an ingest process, read at scrape time."""

    def __init__(self, clients: Callable[[], Sequence[Any]]) -> None:
        self._clients = clients

    def collect(self) -> Iterator[Metric]:
        clients = list(self._clients())
        counters = {
            "messages": ("posguard_signals_received", "Signal messages read from the service"),
            "stored": ("posguard_signals_stored", "Valid signals stored (new ones only)"),
            "rejected": ("posguard_signals_rejected", "Invalid signals stored as rejected"),
            "duplicates": ("posguard_signals_duplicate", "Signals the store already had"),
            "reconnects": ("posguard_signal_reconnects", "Reconnections to the service"),
        }
        for attr, (name, doc) in counters.items():
            family = CounterMetricFamily(name, doc, labels=["service"])
            for c in clients:
                family.add_metric([c.service], getattr(c, attr))
            yield family
        up = GaugeMetricFamily(
            "posguard_signal_connected", "1 while connected to the service", labels=["service"]
        )
        for c in clients:
            up.add_metric([c.service], 1 if c.connected else 0)
        yield up


# --- the Temporal SDK runtime's metrics ---------------------------------------------

_sdk_runtime: Runtime | None = None
_sdk_address: str | None = None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sdk_metrics_runtime(settings: Settings | None = None) -> Runtime | None:
    """The process's Temporal runtime, exporting the SDK's metrics on a local port
    that `/metrics` reads and appends; made once per process. None (the default
    runtime, no SDK metrics) when `settings.sdk_metrics` is off."""
    global _sdk_runtime, _sdk_address
    if settings is not None and not settings.sdk_metrics:
        return None
    if _sdk_runtime is None:
        address = f"127.0.0.1:{_free_port()}"
        _sdk_runtime = Runtime(
            telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=address))
        )
        _sdk_address = address
    return _sdk_runtime


async def _sdk_metrics() -> str:
    if _sdk_address is None:
        return ""
    try:
        timeout = aiohttp.ClientTimeout(total=2)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.get(f"http://{_sdk_address}/metrics") as response,
        ):
            return await response.text()
    except Exception as exc:  # the SDK's page is a bonus; ours must still answer
        log.debug("Temporal SDK metrics not read: %r", exc)
        return ""


# --- the endpoint -------------------------------------------------------------------


class MetricsPage:
    """The `/metrics` handler of one process: the shared registry, this process's
    collectors (each `refresh()`ed first when it has one) and the SDK's metrics."""

    def __init__(self, collectors: Sequence[Collector] = ()) -> None:
        self._registry = CollectorRegistry(auto_describe=False)
        self._refreshers: list[Callable[[], Awaitable[None]]] = []
        for collector in collectors:
            self._registry.register(collector)
            refresh = getattr(collector, "refresh", None)
            if refresh is not None:
                self._refreshers.append(refresh)

    async def text(self) -> str:
        """The page, as Prometheus reads it."""
        for refresh in self._refreshers:
            await refresh()
        own = generate_latest(REGISTRY) + generate_latest(self._registry)
        return own.decode() + await _sdk_metrics()

    async def handle(self, request: web.Request) -> web.Response:
        return web.Response(
            body=(await self.text()).encode(), headers={"Content-Type": CONTENT_TYPE}
        )

    def add_to(self, app: web.Application) -> None:
        """Serve `GET /metrics` on `app`."""
        app.router.add_get("/metrics", self.handle)
