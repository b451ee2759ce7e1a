"""`posguard ingest`: read the signal services, store every message, feed the waves.

One `SignalClient` per `[[signal_services]]` entry, each with its `WaveFeed`:
messages are stored first (signals_ingest/signal_client.py), then handed to the
waves of the accounts the service feeds (signals_ingest/wave_feed.py). At start,
and every `[waves] sweep_every`, stored signals without a decision are handed to
their waves again, so a crash between storing and handing on loses nothing.
`GET /health` and `GET /metrics` listen on `health_host`:`health_port + 2` (`IngestEndpoint`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from aiohttp import web
from temporalio.client import Client

from activities.store.repository import Store
from domain.health import HealthReport, assess, stream_part
from signals_ingest.signal_client import SignalClient
from signals_ingest.wave_feed import WaveFeed
from workers.dependency_alerts import DependencyAlerts, alert_on_reports
from workers.endpoint import serve
from workers.metrics import MetricsPage, SignalCollector
from workers.position_commands import exchange_of
from workers.settings import Settings, SignalServiceSettings
from workers.worker import default_position_config, open_store
from workflows.position_io import PositionConfig
from workflows.wave_io import WaveInput

log = logging.getLogger("posguard.ingest")

# How far back a sweep looks for undecided signals (older ones are expired anyway),
# and how long a live signal may take through the sink before a sweep takes it.
SWEEP_HORIZON = timedelta(days=1)
SWEEP_SETTLE = timedelta(seconds=60)


def wave_input_of(
    settings: Settings, position_config: Callable[[str], PositionConfig] | None = None
) -> Callable[[str, datetime], WaveInput]:
    """The WaveWorkflow input of a new wave of `account` for the period at `period_start`."""
    config_of = position_config or default_position_config
    waves = settings.waves
    rules = waves.rules()
    template = waves.template(settings.trailing)

    def make(account: str, period_start: datetime) -> WaveInput:
        return WaveInput(
            account=account,
            exchange=exchange_of(settings.account(account)),
            period_start=period_start,
            window=waves.window,
            rules=rules,
            template=template,
            min_free_balance=waves.min_free_balance,
            position_task_queue=settings.task_queue,
            position_config=config_of(account),
            call_timeout=waves.call_timeout,
            hedge_mode=settings.account(account).hedge_mode,
        )

    return make


def feed_of(
    client: Client,
    store: Store,
    settings: Settings,
    service: SignalServiceSettings,
    position_config: Callable[[str], PositionConfig] | None = None,
) -> WaveFeed:
    """The WaveFeed of one service: its accounts (all, unless it names some)."""
    accounts = service.accounts or [a.name for a in settings.accounts]
    for name in accounts:
        settings.account(name)  # KeyError now, not at the first signal
    return WaveFeed(
        client,
        store,
        service=service.name,
        accounts=accounts,
        wave_period=service.wave_period,
        task_queue=settings.task_queue,
        wave_input=wave_input_of(settings, position_config),
    )


class IngestEndpoint:
    """`GET /health` (each signal service's stream: 200 while all are up, 503 naming
    those down for longer than `max_age`) and `GET /metrics` of the ingest process,
    on `host` (`settings.health_host`, 127.0.0.1 by default; docs/health.md)."""

    def __init__(
        self,
        clients: list[SignalClient],
        port: int,
        host: str = "127.0.0.1",
        max_age: timedelta = timedelta(seconds=30),
    ) -> None:
        self.clients = clients
        self.port = port
        self.host = host
        self.max_age = max_age
        self.metrics = MetricsPage([SignalCollector(lambda: self.clients)])
        self._runner: web.AppRunner | None = None

    def report(self) -> HealthReport:
        now = datetime.now(UTC)
        parts = [
            stream_part(f"signal-service:{c.service}", c.connected, c.down_for(), now, self.max_age)
            for c in self.clients
        ]
        return assess("ingest", parts, now)

    def body(self) -> dict[str, object]:
        return self.report().model_dump(mode="json")

    async def _health(self, request: web.Request) -> web.Response:
        body = self.body()
        return web.json_response(body, status=200 if body["status"] == "ok" else 503)

    async def start(self) -> None:
        """Serve on `host:port` (0: any free port, then in `port`); a port in use is
        logged, never fatal."""
        app = web.Application()
        app.router.add_get("/health", self._health)
        self.metrics.add_to(app)
        self._runner, self.port = await serve(app, self.host, self.port, "ingest")

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


async def run_ingest(
    client: Client,
    settings: Settings,
    stop: asyncio.Event,
    *,
    position_config: Callable[[str], PositionConfig] | None = None,
    ready: asyncio.Event | None = None,
    clients: list[SignalClient] | None = None,
    health_port: int | None = None,
    endpoint_out: list[IngestEndpoint] | None = None,
) -> None:
    """Read every configured signal service until `stop` is set.

    `ready` is set once the store is open and the start-up sweep is done;
    `clients` (if given) receives the SignalClients, for health and tests.
    `/health` and `/metrics` listen on `settings.health_host`, port `health_port`
    (default `settings.health_port + 2`; 0: any free port; negative: none);
    `endpoint_out` receives the endpoint.
    """
    store = await open_store(settings)
    clients = [] if clients is None else clients
    if health_port is None:
        health_port = settings.health_port + 2 if settings.health_port >= 0 else -1
    endpoint = IngestEndpoint(
        clients, health_port, host=settings.health_host, max_age=settings.health.max_age
    )
    if health_port >= 0:
        await endpoint.start()
        if endpoint_out is not None:
            endpoint_out.append(endpoint)
    try:
        tasks: list[asyncio.Task[None]] = []
        for service in settings.signal_services:
            feed = feed_of(client, store, settings, service, position_config)
            # At start nothing is on its way through a sink: every undecided signal counts.
            await feed.sweep(horizon=SWEEP_HORIZON, settle=timedelta(0))
            signal_client = SignalClient(
                service=service.name,
                url=service.url,
                token=service.token,
                store=store,
                sink=feed,
                mapping=service.mapping,
                resume=service.resume,
                idle_timeout=service.idle_timeout,
            )
            # A crash between storing a batch and writing its events left them out.
            await signal_client.recover_events(SWEEP_HORIZON)
            clients.append(signal_client)
            tasks.append(
                asyncio.create_task(signal_client.run(stop), name=f"signals/{service.name}")
            )
            if settings.waves.sweep_every is not None:
                tasks.append(
                    asyncio.create_task(
                        _later_sweeps(feed, stop, settings.waves.sweep_every),
                        name=f"sweep/{service.name}",
                    )
                )
            log.info("reading signal service %s (%s)", service.name, service.url.split("?")[0])
        if tasks:  # a service down for longer than [health] max_age is alerted on
            alerts = DependencyAlerts(store, "ingest")
            every = settings.health.probe_every
            tasks.append(
                asyncio.create_task(alert_on_reports(endpoint.report, alerts, stop, every))
            )
        if ready is not None:
            ready.set()
        if not tasks:
            log.info("no signal service configured ([[signal_services]]): nothing to read")
            await stop.wait()
            return
        await stop.wait()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
    finally:
        await endpoint.stop()
        await store.close()


async def _later_sweeps(feed: WaveFeed, stop: asyncio.Event, every: timedelta) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), every.total_seconds())
    await feed.run_sweeps(stop, every=every, horizon=SWEEP_HORIZON, settle=SWEEP_SETTLE)
