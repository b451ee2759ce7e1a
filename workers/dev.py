"""`posguard dev`: the whole stack on the embedded defaults, in the foreground.

Starts the Temporal dev server (Web UI included) unless TEMPORAL_ADDRESS is set,
the embedded PostgreSQL unless DATABASE_URL is set, and the worker. Ctrl-C
stops everything; state stays under the state directory for the next run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from datetime import timedelta

from pydantic import SecretStr
from temporalio.client import Client

from domain.alerts import AlertChannel
from domain.types import Severity
from signals_ingest.gate_process import run_gate
from simulator.alert_sink import AlertSink
from simulator.client import VENUE_EXCHANGES, venue_of
from simulator.markets import build_markets
from simulator.prices import make_source
from simulator.server import PaperExchange
from simulator.signals import SignalService
from workers.embedded import TemporalDevServer
from workers.exchanges import make_market_data_client
from workers.ingest import run_ingest
from workers.metrics import sdk_metrics_runtime
from workers.settings import EMBEDDED_PAPER, Settings, SignalServiceSettings
from workers.temporal import connect
from workers.tracing import tracing_interceptors
from workers.worker import run_worker

log = logging.getLogger("posguard.dev")


async def start_paper_exchange(settings: Settings) -> tuple[Settings, PaperExchange | None]:
    """Start the embedded paper exchange if an account asks for it; settings pointing at it."""
    wanted = [a for a in settings.accounts if a.paper_url == EMBEDDED_PAPER]
    if not wanted:
        return settings, None
    exchanges = sorted({a.exchange for a in wanted})
    if len(exchanges) > 1 or exchanges[0] not in VENUE_EXCHANGES.values():
        raise ValueError(
            "the embedded paper exchange serves one venue, binanceusdm or bybit; the "
            f"embedded accounts name {exchanges} (run `posguard sim --venue ...` for another "
            "and point an account's paper_url at it)"
        )
    markets = build_markets(None)
    sim = PaperExchange(
        venue=venue_of(exchanges[0]),
        port=settings.sim_port,
        admin_port=settings.sim_admin_port,
        markets=markets,
        price_source=make_source(settings.sim_price_path, markets, 1, 1000),
        api_key=wanted[0].api_key.get_secret_value(),
        api_secret=wanted[0].secret.get_secret_value(),
    )
    await sim.start()
    accounts = [
        a.model_copy(update={"paper_url": sim.rest_url, "paper_ws_url": sim.ws_url})
        if a.paper_url == EMBEDDED_PAPER
        else a
        for a in settings.accounts
    ]
    return settings.model_copy(update={"accounts": accounts}), sim


async def start_signal_simulator(settings: Settings) -> tuple[Settings, SignalService | None]:
    """Start the signal-service simulator if no signal service is configured (and
    `dev_signals` is on): a small wave every `dev_signals_every`, read by the ingest."""
    if settings.signal_services or not settings.dev_signals:
        return settings, None
    svc = SignalService(
        port=settings.dev_signals_port,
        token=secrets.token_urlsafe(24),
        wave_period_s=settings.dev_signals_every.total_seconds(),  # float ok: seconds
        wave_size=10,
    )
    await svc.start()
    service = SignalServiceSettings(
        name="dev-signals",
        url=svc.url,
        token=SecretStr(svc.token),
        wave_period=timedelta(minutes=1),
    )
    return settings.model_copy(update={"signal_services": [service]}), svc


async def start_alert_sink(settings: Settings) -> tuple[Settings, AlertSink | None]:
    """Start a local webhook sink that prints every alert, and send alerts to it,
    if no alert channel is configured (and `dev_alert_sink_port` is not -1)."""
    if settings.alert_channels or settings.dev_alert_sink_port < 0:
        return settings, None
    sink = AlertSink(port=settings.dev_alert_sink_port, printing=True)
    await sink.start()
    channel = AlertChannel(
        name="dev-sink",
        kind="webhook",
        url=SecretStr(sink.webhook_url),
        min_severity=Severity.WARNING,
    )
    return settings.model_copy(update={"alert_channels": [channel]}), sink


async def _dashboard(
    client: Client, settings: Settings, stop: asyncio.Event, worker_ready: asyncio.Event
) -> None:
    """The dashboard beside the stack, once the worker has migrated the store (its
    first reads would otherwise find no tables); its failure (a port in use) is
    logged and leaves the rest of the stack running."""
    from workers.dashboard.server import run_dashboard

    waits = [asyncio.ensure_future(worker_ready.wait()), asyncio.ensure_future(stop.wait())]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()
    if stop.is_set():
        return
    try:
        await run_dashboard(client, settings, stop)
    except Exception:
        log.exception("the dashboard stopped; the rest of the stack runs on")


async def run_dev_stack(settings: Settings, stop: asyncio.Event) -> int:
    """Run until `stop` is set; returns the process exit code."""
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    sim: PaperExchange | None = None
    signals: SignalService | None = None
    alert_sink: AlertSink | None = None
    server: TemporalDevServer | None = None
    address = settings.temporal_address
    if address is None:
        server = TemporalDevServer(
            settings.state_dir,
            port=settings.temporal_port,
            ui_port=settings.ui_port,
            namespace=settings.temporal_namespace,
        )
        await asyncio.to_thread(server.start)
        address = server.address
    try:
        settings, sim = await start_paper_exchange(settings)
        settings, signals = await start_signal_simulator(settings)
        settings, alert_sink = await start_alert_sink(settings)
        client = await connect(
            address,
            settings.temporal_namespace,
            timeout_s=settings.connect_timeout_seconds,
            runtime=sdk_metrics_runtime(settings),
            interceptors=tracing_interceptors("dev"),
        )
        database = "DATABASE_URL" if settings.database_url else settings.state_dir / "pg"
        print(
            "posguard dev stack\n"
            f"  Temporal      {address} (namespace {settings.temporal_namespace})\n"
            f"  Web UI        http://127.0.0.1:{settings.ui_port}\n"
            f"  PostgreSQL    {database}\n"
            f"  task queue    {settings.task_queue}\n"
            + (
                f"  paper exchange {sim.rest_url} (admin {sim.admin_url})\n"
                if sim is not None
                else ""
            )
            + (
                f"  dashboard     http://127.0.0.1:{settings.web_port}/\n"
                if settings.web_port >= 0
                else ""
            )
            + f"  worker        http://127.0.0.1:{settings.health_port}/health and /metrics\n"
            + f"  price gate    http://127.0.0.1:{settings.health_port + 1}/health and /metrics\n"
            + f"  ingest        http://127.0.0.1:{settings.health_port + 2}/health and /metrics\n"
            + (
                f"  signals       {signals.url} (simulator: a wave of 10 every "
                f"{settings.dev_signals_every})\n"
                if signals is not None
                else "".join(f"  signals       {s.name}\n" for s in settings.signal_services)
            )
            + (
                f"  alerts        printed here (webhook sink {alert_sink.webhook_url})\n"
                if alert_sink is not None
                else "".join(
                    f"  alerts        {c.name} ({c.kind}, {c.min_severity} and worse)\n"
                    for c in settings.alert_channels
                )
            )
            + "Ctrl-C stops everything.",
            flush=True,
        )
        # Worker and price gate side by side; either failing stops both.
        worker_ready = asyncio.Event()
        tasks = [
            asyncio.create_task(
                run_worker(client, settings, stop, ready=worker_ready), name="worker"
            ),
            asyncio.create_task(
                run_gate(settings, stop, client=client, market_data_client=make_market_data_client),
                name="price-gate",
            ),
            asyncio.create_task(run_ingest(client, settings, stop), name="ingest"),
        ]
        if settings.web_port >= 0:
            tasks.append(
                asyncio.create_task(_dashboard(client, settings, stop, worker_ready), name="web")
            )
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        stop.set()
        await asyncio.gather(*tasks)
    finally:
        if signals is not None:
            await signals.stop()
        if alert_sink is not None:
            await alert_sink.stop()
        if sim is not None:
            await sim.stop()
        if server is not None:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(server.stop)
    return 0
