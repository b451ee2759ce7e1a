"""The market-data process: Temporal + exchange mark prices + price gate + health endpoint.

`run_gate(settings, stop)` runs until `stop` is set. For every market-data source
(accounts grouped by exchange and endpoint) it keeps one ccxt.pro connection, one
`PriceGate` and one `MarketFeed`, and every `sync_interval` it lists the running
position workflows (visibility) to pick up new positions and forget closed ones.
For every account it also follows the private user-data stream (`UserStream`):
any order update of a symbol makes that symbol's position workflow look again.

The ccxt.pro clients come from `market_data_client(account)`. The default reaches
real exchanges only; a process that runs accounts on the paper exchange passes the
factory that knows it (`workers.exchanges.make_market_data_client`), so this package
never imports the simulator.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from activities.exchange.ccxt_logs import scrub_ccxt_logs
from activities.store.repository import Store
from domain.client_ids import belongs_to_workflow
from domain.errors import scrub
from domain.health import HealthReport, PartState, assess, stream_part
from domain.order_updates import OrderChange
from domain.position_messages import EXCHANGE_UPDATE_SIGNAL, ExchangeUpdate
from domain.types import Side
from signals_ingest.gate_metrics import GateCollector
from signals_ingest.market_feed import EventSink, MarketFeed, Shard
from signals_ingest.price_gate import PriceGate, tick_time
from signals_ingest.reconcile_trigger import ReconcileTrigger, schedule_trigger
from signals_ingest.temporal_waker import (
    TemporalWaker,
    parse_position_workflow_id,
    sync_gate,
)
from signals_ingest.user_stream import CatchUp, Notify, UserStream
from workers.dependency_alerts import DependencyAlerts, alert_on_reports
from workers.metrics import MetricsPage
from workers.settings import EMBEDDED_PAPER, AccountSettings, Settings
from workflows.position_io import WORKFLOW_TYPE, position_workflow_id

__all__ = [
    "GateSource",
    "HealthServer",
    "MarketDataClientFactory",
    "PaperAccountError",
    "exchange_market_data_client",
    "run_gate",
]

log = logging.getLogger("posguard.gate")


@dataclass
class GateSource:
    """One market-data connection and the positions it gates."""

    name: str
    exchange_id: str
    accounts: set[str]
    gate: PriceGate
    feed: MarketFeed
    exchange: Any
    shard: Shard
    last_sync_error: str | None = None
    syncs: int = 0
    last_sync_ok: datetime | None = None  # the last listing of positions from Temporal
    last_sync_failure: datetime | None = None

    def selects(self, workflow_id: str) -> bool:
        key = parse_position_workflow_id(workflow_id)
        return (
            key is not None
            and key.account in self.accounts
            and key.exchange == self.exchange_id
            and self.shard.owns(key.symbol)
        )

    def health(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "exchange": self.exchange_id,
            "shard": str(self.shard),
            "connected": self.feed.connected,
            "subscribed": sorted(self.feed.subscribed),
            "messages": self.feed.messages,
            "reconnects": self.feed.reconnects,
            "stream_failures": self.feed.failures,
            "syncs": self.syncs,
            "last_sync_error": self.last_sync_error,
            "gate": self.gate.stats(),
        }

    def parts(self, max_age: timedelta, now: datetime) -> list[PartState]:
        """Its market feed (the newest mark price's age; nothing subscribed is
        healthy) and its reads of Temporal (the position listings)."""
        ticks = {s: t for s, t in self.gate.last_ticks().items() if t is not None}
        newest = max(ticks.values(), default=None)
        feed_ok = None if newest is None else tick_time(newest)
        if not self.feed.subscribed:
            feed_ok = now
        down_for = self.feed.down_for()
        feed = PartState(
            name=f"market-feed:{self.name}",
            last_ok=feed_ok,
            last_failure=None if down_for is None else now - down_for,
            error=None if down_for is None else "stream disconnected",
            max_age=max_age,
            detail={
                "subscribed": len(self.feed.subscribed),
                "tick_age_s": {
                    s: round(max(0.0, (now - tick_time(t)).total_seconds()), 3)  # float ok
                    for s, t in sorted(ticks.items())
                },
            },
        )
        temporal = PartState(
            name=f"temporal:{self.name}",
            last_ok=self.last_sync_ok,
            last_failure=self.last_sync_failure,
            error=self.last_sync_error,
            max_age=max_age,
        )
        return [feed, temporal]


def _source_key(acct: AccountSettings) -> tuple[str, str | None, str | None, bool]:
    return (acct.exchange, acct.paper_url, acct.paper_ws_url, acct.testnet)


# Builds the ccxt.pro client of an account's market data and user-data stream.
MarketDataClientFactory = Callable[[AccountSettings], Any]


class PaperAccountError(ValueError):
    """A paper account was given to a factory that only reaches real exchanges."""


def exchange_market_data_client(acct: AccountSettings) -> Any:
    """A ccxt.pro client for public mark prices of `acct`'s real exchange.

    Refuses an account on a paper exchange: the process running one passes its own
    factory to `run_gate` (`workers.exchanges.make_market_data_client`).
    """
    if acct.paper_url is not None:
        raise PaperAccountError(
            f"account {acct.name!r} is on a paper exchange ({acct.paper_url}); run the gate "
            "with run_gate(market_data_client=workers.exchanges.make_market_data_client)"
        )
    import ccxt.pro as ccxt_pro

    options: dict[str, Any] = {}
    if acct.exchange == "bybit":
        options = {"fetchMarkets": {"types": ["linear"]}}
    client = getattr(ccxt_pro, acct.exchange)({"enableRateLimit": True, "options": options})
    if acct.testnet:
        client.enable_demo_trading(True)
    return client


class HealthServer:
    """`GET /health` (200 healthy / 503 not), `GET /stats` (JSON) and `GET /metrics`
    (Prometheus, docs/metrics.md) on `host` (`settings.health_host`, 127.0.0.1 by
    default)."""

    def __init__(
        self,
        sources: Callable[[], list[GateSource]],
        port: int,
        host: str = "127.0.0.1",
        streams: Callable[[], list[UserStream]] = list,
        max_age: timedelta = timedelta(seconds=30),
    ) -> None:
        self._sources = sources
        self._streams = streams
        self.max_age = max_age
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None
        self.metrics = MetricsPage([GateCollector(sources, streams)])

    def report(self) -> HealthReport:
        """The report (docs/health.md): each source's feed and Temporal reads, each
        account's user stream."""
        now = datetime.now(UTC)
        parts = [p for src in self._sources() for p in src.parts(self.max_age, now)]
        parts += [
            stream_part(f"user-stream:{st.account}", st.connected, st.down_for(), now, self.max_age)
            for st in self._streams()
        ]
        return assess("gate", parts, now)

    def body(self) -> dict[str, Any]:
        """The report, and each source's counters under "sources"."""
        sources = self._sources()
        return {**self.report().model_dump(mode="json"), "sources": [s.health() for s in sources]}

    async def _health(self, request: web.Request) -> web.Response:
        body = self.body()
        return web.json_response(body, status=200 if body["status"] == "ok" else 503)

    async def _stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.body())

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/health", self._health)
        app.router.add_get("/stats", self._stats)
        self.metrics.add_to(app)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        server = site._server
        if server is not None and self.port == 0:
            self.port = int(server.sockets[0].getsockname()[1])  # type: ignore[attr-defined]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


def _position_notifier(
    client: Client,
    acct: AccountSettings,
    shard: Shard | None,
    trigger: ReconcileTrigger | None = None,
) -> Notify:
    """`notify(symbol, detail, changes)`: signal that symbol's position workflow.

    What no workflow owns (no running workflow for the symbol, or an order whose
    client id is not that workflow's) asks `trigger` for a reconcile pass.
    """

    async def notify(symbol: str, detail: str, changes: list[OrderChange]) -> None:
        if shard is not None and not shard.owns(symbol):
            return  # another gate process owns this symbol
        # Hedge mode: the symbol's long and short are two workflows; each is told and
        # re-reads its own side (an update need not name its side: a position's own
        # stop has no client id).
        sides: list[Side | None] = [Side.LONG, Side.SHORT] if acct.hedge_mode else [None]
        workflow_ids = [position_workflow_id(acct.name, acct.exchange, symbol, s) for s in sides]
        if trigger is not None and any(
            not any(belongs_to_workflow(c.client_order_id, w) for w in workflow_ids)
            for c in changes
        ):
            trigger.request(f"{symbol}: {detail[:100]} (not {' or '.join(workflow_ids)}'s)")
        update = ExchangeUpdate(source="user_stream", detail=detail, orders=tuple(changes))
        told = [await _tell(client, update, workflow_id) for workflow_id in workflow_ids]
        if not any(told) and trigger is not None:
            # No running position for it: the reconciler's business.
            trigger.request(f"{symbol}: {detail[:100]} (no workflow)")

    return notify


def _account_catch_up(client: Client, acct: AccountSettings, shard: Shard | None) -> CatchUp:
    """Tell every running position workflow of `acct` (of this gate's shard) to look:
    the user stream was down (or not yet watched) and its messages are lost. What no
    workflow owns is left to the reconciler's schedule."""

    async def catch_up() -> int:
        # the Account search attribute a position workflow carries (workflows/)
        query = (
            f'WorkflowType="{WORKFLOW_TYPE}" AND ExecutionStatus="Running" '
            f'AND Account="{acct.name}"'
        )
        update = ExchangeUpdate(source="user_stream", detail="user stream (re)connected")
        told = 0
        async for wf in client.list_workflows(query):
            key = parse_position_workflow_id(wf.id)
            if shard is not None and key is not None and not shard.owns(key.symbol):
                continue
            told += await _tell(client, update, wf.id, wf.run_id)
        return told

    return catch_up


async def _tell(
    client: Client, update: ExchangeUpdate, workflow_id: str, run_id: str | None = None
) -> bool:
    """Signal one position workflow to look; False when it is not running (any other
    failure of the server is raised)."""
    try:
        await client.get_workflow_handle(workflow_id, run_id=run_id).signal(
            EXCHANGE_UPDATE_SIGNAL, update
        )
    except RPCError as err:
        if err.status is not RPCStatusCode.NOT_FOUND:
            raise
        return False
    return True


async def _sync_loop(
    source: GateSource,
    client: Client,
    stop: asyncio.Event,
    *,
    interval: timedelta,
    refresh_every: int,
    workflow_type: str,
) -> None:
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval.total_seconds())  # float ok: seconds
        if stop.is_set():
            return
        source.syncs += 1
        try:
            result = await sync_gate(
                source.gate,
                client,
                workflow_type=workflow_type,
                select=source.selects,
                refresh=refresh_every > 0 and source.syncs % refresh_every == 0,
            )
            source.last_sync_error = None
            source.last_sync_ok = datetime.now(UTC)
            if result.added or result.removed:
                log.info("%s: sync %s", source.name, result)
        except Exception as exc:
            source.last_sync_error = scrub(repr(exc))[:300]
            source.last_sync_failure = datetime.now(UTC)
            log.warning("%s: sync failed: %s", source.name, scrub(repr(exc)))


async def run_gate(
    settings: Settings,
    stop: asyncio.Event,
    *,
    client: Client | None = None,
    shard: Shard | None = None,
    health_port: int | None = None,
    events: EventSink | None = None,
    sync_interval: timedelta = timedelta(seconds=5),
    refresh_every: int = 12,
    workflow_type: str = WORKFLOW_TYPE,
    sources_out: list[GateSource] | None = None,
    health_out: list[HealthServer] | None = None,
    market_data_client: MarketDataClientFactory = exchange_market_data_client,
) -> None:
    """Run the market-data process until `stop` is set.

    - `client`: a Temporal client (default: connect to `settings.temporal_address`, else
      the embedded dev server's port) using posguard's data converter;
    - `shard`: this process's symbols (default all);
    - `health_port`: where `/health` listens (default `settings.health_port + 1`, since
      the worker owns `health_port`; 0 = any free port; negative = no endpoint), on
      `settings.health_host`;
    - `events`: where WEBSOCKET_* events go (e.g. the worker's `Store`); None = nowhere;
    - `sync_interval` / `refresh_every`: how often running positions are listed, and
      every how many listings the bands of all idle positions are re-read;
    - `sources_out` / `health_out`: filled with the live sources and the health server
      (for tests and embedding);
    - `market_data_client`: builds each ccxt.pro client (mark prices, user streams);
      the default reaches real exchanges only, see the module's docstring.
    """
    scrub_ccxt_logs()  # its clients' request log holds keys and signatures
    shard = shard or Shard()
    if client is None:
        from workers.temporal import connect

        address = settings.temporal_address or f"127.0.0.1:{settings.temporal_port}"
        client = await connect(
            address, settings.temporal_namespace, timeout_s=settings.connect_timeout_seconds
        )
    waker = TemporalWaker(client)
    groups: dict[tuple[str, str | None, str | None, bool], list[AccountSettings]] = {}
    for acct in settings.accounts:
        groups.setdefault(_source_key(acct), []).append(acct)
    sources: list[GateSource] = [] if sources_out is None else sources_out
    for accts in groups.values():
        first = accts[0]
        exchange = market_data_client(first)
        name = f"{first.exchange}:{','.join(a.name for a in accts)}"
        gate = PriceGate(waker, name=name)
        sources.append(
            GateSource(
                name=name,
                exchange_id=first.exchange,
                accounts={a.name for a in accts},
                gate=gate,
                feed=MarketFeed(exchange, gate, shard=shard, events=events),
                exchange=exchange,
                shard=shard,
            )
        )
    streams: list[tuple[UserStream, Any]] = []
    triggers: list[ReconcileTrigger] = []
    for acct in settings.accounts:
        if acct.paper_url == EMBEDDED_PAPER:
            continue
        private = market_data_client(acct)
        trigger = ReconcileTrigger(
            schedule_trigger(client, acct.name),
            account=acct.name,
            debounce=settings.reconcile.trigger_debounce,
        )
        triggers.append(trigger)
        notify = _position_notifier(client, acct, shard, trigger)
        catch_up = _account_catch_up(client, acct, shard)
        streams.append(
            (
                UserStream(
                    private, notify, account=acct.name, events=events, on_reconnect=catch_up
                ),
                private,
            )
        )
    port = settings.health_port + 1 if health_port is None else health_port
    health = (
        HealthServer(
            lambda: sources,
            port,
            host=settings.health_host,
            streams=lambda: [s for s, _ in streams],
            max_age=settings.health.max_age,
        )
        if port >= 0
        else None
    )
    tasks: list[asyncio.Task[None]] = []
    try:
        if health is not None:
            await health.start()
            if health_out is not None:
                health_out.append(health)
            log.info("gate health on http://%s:%d/health", health.host, health.port)
        for src in sources:
            # Initial load: every running position, primed, so the first tick of each
            # symbol sends the current price to all of them once.
            result = await sync_gate(
                src.gate, client, workflow_type=workflow_type, select=src.selects, prime=True
            )
            src.last_sync_ok = datetime.now(UTC)
            log.info("%s: loaded %d positions (shard %s)", src.name, result.added, shard)
            tasks.append(asyncio.create_task(src.feed.run(stop)))
            tasks.append(
                asyncio.create_task(
                    _sync_loop(
                        src,
                        client,
                        stop,
                        interval=sync_interval,
                        refresh_every=refresh_every,
                        workflow_type=workflow_type,
                    )
                )
            )
        for stream, _ in streams:
            tasks.append(asyncio.create_task(stream.run(stop)))
        if health is not None and isinstance(events, Store):  # alerts are rows of the store
            alerts = DependencyAlerts(events, "gate")
            every = settings.health.probe_every
            tasks.append(asyncio.create_task(alert_on_reports(health.report, alerts, stop, every)))
        await stop.wait()
    finally:
        stop.set()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(t, 10)
        for trigger in triggers:
            await trigger.close()
        for _, stream_client in streams:
            with contextlib.suppress(Exception):
                await stream_client.close()
        for src in sources:
            await src.gate.close()
            with contextlib.suppress(Exception):
                await src.exchange.close()
        if health is not None:
            await health.stop()
