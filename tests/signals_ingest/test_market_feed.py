"""The market-data feed against the paper exchange (no Temporal): ticks, resubscription,
reconnection with events, sharding, Decimal prices; and `run_gate` wired end to end."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from decimal import Decimal
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from pydantic import SecretStr
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from domain.events import Event, EventType
from domain.position_messages import BandView, PriceTick
from signals_ingest.gate_process import GateSource, HealthServer, run_gate
from signals_ingest.market_feed import MarketFeed, Shard, mark_price_of
from signals_ingest.price_gate import PriceGate
from simulator.client import binanceusdm_client
from simulator.server import PaperExchange
from tests import waiting
from tests.signals_ingest.probe_workflow import (
    PROBE_WORKFLOW_TYPE,
    GateProbeWorkflow,
    ProbeInput,
    probe_runner,
)
from workers.exchanges import make_market_data_client
from workers.settings import AccountSettings, Settings
from workflows.position_io import position_workflow_id

D = Decimal
T = waiting.PATIENCE_S  # float ok: seconds, a safety net for any single wait


class Sink:
    def __init__(self) -> None:
        self.events: list[Event] = []

    async def append_event(self, event: Event) -> bool:
        self.events.append(event)
        return True


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Decimal]] = []

    async def __call__(self, wid: str, tick: PriceTick) -> BandView:
        self.calls.append((wid, tick.price))
        return BandView(
            workflow_id=wid, symbol="", wake_below=tick.price - 1, wake_above=tick.price + 1
        )


async def until(cond: Any, what: str) -> None:
    await waiting.until(cond, what, interval=0.01)


@pytest_asyncio.fixture(loop_scope="session")
async def sim() -> AsyncIterator[PaperExchange]:
    async with PaperExchange(mark_interval_ms=3_600_000, admin_port=None) as s:
        yield s


def pro(sim: PaperExchange) -> Any:
    return binanceusdm_client(
        sim, api_key=sim.api_key, secret=sim.api_secret, pro=True, enableRateLimit=False
    )


def test_shard_is_stable_and_partitions() -> None:
    symbols = [f"S{i}USDT" for i in range(200)]
    shards = [Shard.parse(f"{i}/3") for i in range(3)]
    owners = [[s for s in symbols if sh.owns(s)] for sh in shards]
    assert sorted(s for o in owners for s in o) == sorted(symbols)
    assert all(len(o) > 40 for o in owners)
    assert Shard.parse("1/3").owns("BTCUSDT") == Shard(1, 3).owns("BTCUSDT")
    assert Shard().owns("ANYUSDT")
    for bad in ("3/3", "x", "1/0", "-1/2"):
        with pytest.raises(ValueError):
            Shard.parse(bad)


def test_mark_price_is_exact_decimal() -> None:
    binance = {
        "symbol": "BTC/USDT:USDT",
        "markPrice": 95000.1,
        "info": {"e": "markPriceUpdate", "p": "95000.10000000"},
    }
    assert mark_price_of(binance) == D("95000.10000000")
    assert mark_price_of({"markPrice": 0.1, "info": {}}) == D("0.1")
    assert mark_price_of({"info": {"markPrice": "3500.25"}}) == D("3500.25")
    assert mark_price_of({"markPrice": None, "info": {}}) is None
    assert mark_price_of({"markPrice": 0.0}) is None


async def test_feed_follows_positions_and_reconnects(sim: PaperExchange) -> None:
    rec = Recorder()
    gate = PriceGate(rec)
    sink = Sink()
    client = pro(sim)
    feed = MarketFeed(client, gate, events=sink, backoff_initial_s=0.05, backoff_max_s=0.2)
    stop = asyncio.Event()
    task = asyncio.create_task(feed.run(stop))
    try:
        await asyncio.sleep(0.1)
        assert feed.subscribed == frozenset() and not feed.connected
        gate.upsert("btc", "BTCUSDT", D(90000), D(100000))
        await until(lambda: feed.connected and gate.counters.ticks >= 1, "BTC snapshot")
        gate.upsert("eth", "ETHUSDT", D(3000), D(4000))
        await until(lambda: feed.subscribed == {"BTCUSDT", "ETHUSDT"}, "resubscribe")
        await until(lambda: gate.counters.ticks >= 2, "ETH snapshot")
        # Burst on several symbols at once: none is lost (ccxt cache catch-up).
        before = gate.counters.ticks
        sim.set_price("BTCUSDT", D("95001"))
        sim.set_price("ETHUSDT", D("3501"))
        await until(lambda: gate.counters.ticks >= before + 2, "both burst ticks")
        assert rec.calls == []
        # Drop the market-data socket: the feed reconnects and records both events.
        sim.drop_websockets("market")
        await until(
            lambda: any(e.type is EventType.WEBSOCKET_RECONNECTED for e in sink.events),
            "reconnected event",
        )
        before = gate.counters.ticks
        sim.set_price("BTCUSDT", D("100001"))  # crossing after the reconnect
        await until(lambda: rec.calls == [("btc", D("100001"))], "crossing after reconnect")
        kinds = [e.type for e in sink.events]
        assert kinds[0] is EventType.WEBSOCKET_CONNECTED
        assert EventType.WEBSOCKET_DISCONNECTED in kinds
        assert len({e.event_id for e in sink.events}) == len(sink.events)
        assert all(e.event_id.startswith("ws/") for e in sink.events)
        assert feed.reconnects >= 1
        # Sharding: a shard that does not own BTC never subscribes to it.
        other = next(s for s in (Shard(0, 2), Shard(1, 2)) if not s.owns("BTCUSDT"))
        assert "BTCUSDT" not in MarketFeed(client, gate, shard=other).wanted()
    finally:
        stop.set()
        await task
        await gate.close()
        await client.close()


async def test_run_gate_end_to_end(sim: PaperExchange, temporal_env: WorkflowEnvironment) -> None:
    client = temporal_env.client
    account = f"g{uuid.uuid4().hex[:8]}"
    tq = f"gate-run-{account}"
    settings = Settings(
        accounts=[
            AccountSettings(
                name=account,
                paper_url=sim.rest_url,
                api_key=SecretStr(sim.api_key),
                secret=SecretStr(sim.api_secret),
            )
        ],
        temporal_address="unused:0",
    )
    sim.set_price("BTCUSDT", D("95000"))
    sim.set_price("ETHUSDT", D("3500"))
    async with Worker(
        client, task_queue=tq, workflows=[GateProbeWorkflow], workflow_runner=probe_runner()
    ):

        async def start(symbol: str, best: str) -> Any:
            return await client.start_workflow(
                GateProbeWorkflow.run,
                ProbeInput(symbol=symbol, best=D(best), distance=D(1000), step=D(500)),
                id=position_workflow_id(account, "binanceusdm", symbol),
                task_queue=tq,
            )

        btc = await start("BTCUSDT", "95000")
        eth: Any = None
        sources: list[GateSource] = []
        healths: list[HealthServer] = []
        stop = asyncio.Event()
        task = asyncio.create_task(
            run_gate(
                settings,
                stop,
                client=client,
                health_port=0,
                sync_interval=timedelta(milliseconds=200),
                workflow_type=PROBE_WORKFLOW_TYPE,
                sources_out=sources,
                health_out=healths,
                market_data_client=make_market_data_client,
            )
        )
        try:
            await until(lambda: bool(sources) and sources[0].feed.connected, "connected")
            src = sources[0]

            async def got(h: Any) -> list[Decimal]:
                return list(await h.query(GateProbeWorkflow.received))

            async def received(h: Any) -> list[Decimal]:
                return await waiting.poll(lambda: got(h), bool, f"a price at {h.id}", interval=0.1)

            # Loaded at start and primed: the current price reaches it once.
            assert await received(btc) == [D(95000)]
            # A position opened later is picked up by the periodic sync, primed too.
            eth = await start("ETHUSDT", "3500")
            assert await received(eth) == [D(3500)]
            assert src.feed.subscribed == {"BTCUSDT", "ETHUSDT"}
            url = f"http://127.0.0.1:{healths[0].port}/health"
            async with aiohttp.ClientSession() as http, http.get(url) as resp:
                body = json.loads(await resp.text())
                assert resp.status == 200, body
            assert body["status"] == "ok" and body["down"] == []
            parts = {p["name"]: p for p in body["parts"]}
            feed = next(p for name, p in parts.items() if name.startswith("market-feed:"))
            assert feed["status"] == "ok"
            assert set(feed["detail"]["tick_age_s"]) == {"BTCUSDT", "ETHUSDT"}
            temporal = next(p for name, p in parts.items() if name.startswith("temporal:"))
            assert temporal["status"] == "ok" and temporal["age_s"] < 5
            (only,) = body["sources"]
            assert only["connected"] and only["subscribed"] == ["BTCUSDT", "ETHUSDT"]
            assert only["gate"]["positions"] == 2 and only["gate"]["wakeups_sent"] == 2
            assert only["gate"]["primed"] == 2
        finally:
            stop.set()
            await asyncio.wait_for(task, T)
            for h in (btc, eth):
                if h is not None:
                    await h.signal(GateProbeWorkflow.finish)
