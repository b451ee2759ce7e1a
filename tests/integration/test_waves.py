"""Waves of signals on the real stack: from the service's WebSocket to protected positions.

Real Temporal dev server, embedded PostgreSQL, a posguard worker, the paper exchange
through ccxt, the signal-service simulator over WebSocket, and the ingest
(`workers.ingest.run_ingest`) reading it, as `posguard ingest` does. Each test has
an account and a signal service of its own. What a trader checks: the positions on
the exchange (each with its stop), and one recorded decision for every signal.

The exchange's part (its refusal of the account's key pauses entries, a clean read
resumes them and the wave opens its positions, each with its stop) runs on both paper
venues; on Bybit each entry carries its stop. The other scenarios are the ingest's and
the wave's own (pauses, stoplist, duplicates, disconnects, late signals): Binance only
(the suite's time).
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import aiohttp
import pytest
from pydantic import SecretStr
from temporalio.testing import WorkflowEnvironment

from activities.store import operator_rows
from activities.store.repository import Store
from domain.signal_wire import parse_message
from domain.signals import Signal
from domain.types import ExchangeId
from domain.waves import AccountView, FilterReason, select_wave
from signals_ingest.signal_client import SignalClient
from simulator.client import VENUE_EXCHANGES
from simulator.signals import SignalService
from tests.integration.test_reconcile import close_everything
from tests.observability import metrics_page
from tests.waiting import poll, started, until
from tests.workflows.harness import PRICES, QUICK, Stack, live_stack
from workers.ingest import IngestEndpoint, run_ingest
from workers.settings import SignalServiceSettings, WaveSettings

WAVES = WaveSettings(
    window=timedelta(seconds=1),
    min_score_week=Decimal(20),
    min_score_month=Decimal(-100),
    max_open_positions=10,
    max_new_per_wave=4,
    max_exposure=Decimal(1_000_000),
    notional_per_position=Decimal(1200),
    cooldown=timedelta(0),
    min_free_balance=Decimal(0),
    sweep_every=None,
)


@dataclass
class Ingest:
    """A stack whose ingest reads its own signal service."""

    stack: Stack
    service: SignalService
    name: str
    clients: list[SignalClient]
    endpoints: list[IngestEndpoint]  # its /health and /metrics

    @property
    def account(self) -> str:
        return self.stack.settings.accounts[0].name

    @property
    def store(self) -> Store:
        return self.stack.store

    async def decisions(self) -> dict[str, dict[str, Any]]:
        """Signal row id → its decision for this account (row of `signal_decisions`)."""
        rows = await self.store.pool.fetch(
            """SELECT d.* FROM signal_decisions d JOIN signals s ON s.id = d.signal_row_id
               WHERE s.service = $1 AND d.account = $2""",
            self.name,
            self.account,
        )
        return {r["signal_row_id"]: dict(r) for r in rows}

    async def stored(self) -> list[dict[str, Any]]:
        rows = await self.store.pool.fetch(
            "SELECT * FROM signals WHERE service = $1 AND status <> 'rejected'", self.name
        )
        return [dict(r) for r in rows]


@asynccontextmanager
async def ingesting(
    env: WorkflowEnvironment,
    database_url: str,
    store: Store,
    name: str,
    *,
    waves: WaveSettings = WAVES,
    service: dict[str, Any] | None = None,
    resume: bool = True,
    wave_period: timedelta = timedelta(minutes=15),
    venue: str = "binance",
) -> AsyncIterator[Ingest]:
    """A live stack on a paper exchange of `venue`, a signal service, and the ingest
    reading it; at the end every position of the account is closed (nothing is left on
    the shared server)."""
    async with live_stack(
        env.client,
        database_url,
        store,
        name=name,
        check_interval=timedelta(seconds=30),
        config=QUICK,
        exchange={"venue": venue},
    ) as stack:
        if stack.venue == "bybit":
            stack.sim.configure(rate_limit_per_s=10_000)  # as the Bybit modules' `sim`
        options = {
            "heartbeat_s": 1.0,
            "symbols": list(PRICES),
            "seed": 7,
            "exchange": venue,  # the signals name the account's exchange
            **(service or {}),
        }
        async with SignalService(**options) as svc:
            service_name = f"{name}-{uuid.uuid4().hex[:6]}"
            settings = stack.settings.model_copy(
                update={
                    "signal_services": [
                        SignalServiceSettings(
                            name=service_name,
                            url=svc.url,
                            token=SecretStr(svc.token),
                            resume=resume,
                            idle_timeout=timedelta(seconds=5),
                            wave_period=wave_period,
                        )
                    ],
                    "waves": waves,
                }
            )
            stop, ready = asyncio.Event(), asyncio.Event()
            clients: list[SignalClient] = []
            endpoints: list[IngestEndpoint] = []
            task = asyncio.create_task(
                run_ingest(
                    stack.client,
                    settings,
                    stop,
                    position_config=lambda _: stack.config,
                    ready=ready,
                    clients=clients,
                    health_port=0,
                    endpoint_out=endpoints,
                )
            )
            try:
                await started(ready, task, "the ingest")
                await until(lambda: bool(clients) and clients[0].connected, "ingest connected")
                yield Ingest(stack, svc, service_name, clients, endpoints)
            finally:
                stop.set()
                await task
                await close_everything(stack)


def signals_of(ingest: Ingest, sent: list[dict[str, Any]]) -> list[Signal]:
    """The signals as posguard parsed them (to compute the expected selection)."""
    import json

    now = datetime.now(UTC)
    parsed = parse_message(
        json.dumps({"type": "wave", "signals": sent}), service=ingest.name, received_at=now
    )
    return [p.signal for p in parsed if hasattr(p, "signal")]


async def wave_settled(ingest: Ingest, expected: int) -> dict[str, dict[str, Any]]:
    """Every one of `expected` stored signals has its decision; the decisions."""

    decisions: dict[str, dict[str, Any]] = await poll(
        ingest.decisions, lambda d: len(d) >= expected, f"{expected} decisions"
    )
    assert len(decisions) == expected
    return decisions


def expected_selection(ingest: Ingest, sent: list[dict[str, Any]], **view: Any) -> set[str]:
    """The symbols `domain.waves.select_wave` selects from `sent` on a fresh account."""
    decisions = select_wave(
        signals_of(ingest, sent),
        AccountView(listed=frozenset(ingest.stack.sim.engine.markets), **view),
        WAVES.rules(),
        exchange=ExchangeId(ingest.stack.settings.accounts[0].exchange),
        now=datetime.now(UTC),
    )
    return {d.signal.symbol for d in decisions if d.selected}


async def protected(ingest: Ingest, symbols: set[str]) -> None:
    """Each of `symbols` holds a position on the exchange with its stop (ground truth);
    no other symbol of the account holds one."""

    def check() -> bool:
        sim = ingest.stack.sim
        holding = {s for s in PRICES if sim.engine.positions[s].amt != 0}
        return holding == symbols and all(len(ingest.stack.open_stops(s)) == 1 for s in symbols)

    await until(check, f"positions with their stops on {sorted(symbols)}")


# --- the tests --------------------------------------------------------------------------------


async def test_a_wave_of_20_signals_opens_the_selected_positions_each_with_its_stop(
    temporal_env: WorkflowEnvironment, database_url: str, store: Store
) -> None:
    async with ingesting(temporal_env, database_url, store, "wave20") as ingest:
        sent = await ingest.service.emit_wave(size=20)
        selected = expected_selection(ingest, sent)
        assert 1 <= len(selected) <= WAVES.max_new_per_wave
        decisions = await wave_settled(ingest, 20)
        opened = {d["position_workflow_id"] for d in decisions.values() if d["outcome"] == "opened"}
        assert {w.rsplit("/", 1)[-1] for w in opened} == selected
        assert all(
            d["reason"] in {r.value for r in FilterReason}
            for d in decisions.values()
            if d["outcome"] == "filtered"
        )
        await protected(ingest, selected)
        wave_id = next(iter(decisions.values()))["wave_id"]
        # The decisions are recorded before the wave's own row says it is processed.
        wave = await poll(
            lambda: operator_rows.wave(store, wave_id),
            lambda w: w is not None and w.status == "processed",
            f"{wave_id} recorded as processed",
        )
        assert wave is not None and wave.status == "processed"
        assert wave.signals_received == 20 and wave.positions_started == len(selected)
        assert sum(wave.outcomes.values()) == 20
        kinds = await _event_counts(store, ingest)
        assert kinds["signal_received"] == kinds["signal_validated"] == 20
        assert kinds["signal_filtered"] == 20 - len(selected)
        assert kinds["signal_selected"] == len(selected)
        assert kinds["wave_detected"] == kinds["wave_processed"] == 1


async def _event_counts(store: Store, ingest: Ingest) -> dict[str, int]:
    async def counted() -> dict[str, int]:
        rows = await store.pool.fetch(
            """SELECT type, count(*) AS n FROM events
               WHERE correlation_id LIKE $1 OR correlation_id LIKE $2 GROUP BY type""",
            f"signal/{ingest.name}/%",
            f"wave/{ingest.account}/%",
        )
        return {r["type"]: r["n"] for r in rows}

    counts: dict[str, int] = await poll(
        counted, lambda c: c.get("wave_processed") == 1, "the wave's events"
    )
    return counts


async def events_of(store: Store, ingest: Ingest, kind: str) -> list[Any]:
    return [
        e
        for e in await store.events(limit=5000)
        if e.type.value == kind
        and (
            e.account == ingest.account
            or (e.correlation_id or "").startswith(f"signal/{ingest.name}/")
        )
    ]


async def test_a_paused_account_opens_nothing_and_records_why_until_resumed(
    temporal_env: WorkflowEnvironment, database_url: str, store: Store
) -> None:
    async with ingesting(
        temporal_env, database_url, store, "paused", wave_period=timedelta(seconds=1)
    ) as ingest:
        await operator_rows.pause_entries(store, ingest.account, "news", "FOMC", "test")
        await ingest.service.emit_wave(size=8)
        decisions = await wave_settled(ingest, 8)
        assert {d["reason"] for d in decisions.values()} == {"account_paused"}
        assert all("operator: news" in d["detail"] for d in decisions.values())
        await protected(ingest, set())  # nothing opened
        await operator_rows.resume_entries(store, ingest.account, "test")
        sent = await ingest.service.emit_wave(size=8)
        decisions = await wave_settled(ingest, 16)
        await protected(ingest, expected_selection(ingest, sent))


async def test_a_stoplisted_symbol_is_filtered_with_its_reason(
    temporal_env: WorkflowEnvironment, database_url: str, store: Store
) -> None:
    async with ingesting(temporal_env, database_url, store, "stoplist") as ingest:
        from domain.records import StoplistEntry

        await operator_rows.add_to_stoplist(
            store, StoplistEntry(account=ingest.account, symbol="BTCUSDT", reason="delisting")
        )
        signals = [ingest.service.new_signal(symbols=["BTCUSDT"]) for _ in range(3)]
        for s in signals:
            s.update(score_week=90, score_month=90)
        await ingest.service.emit_wave(signals)
        decisions = await wave_settled(ingest, 3)
        assert {d["reason"] for d in decisions.values()} == {"stoplisted"}
        await protected(ingest, set())


# The venue refuses the account's key where a wave reads the account (its balance).
KEY_REFUSED: dict[str, dict[str, Any]] = {
    "binance": {
        "endpoint": "GET /fapi/v*/account",
        "code": -2015,
        "msg": "Invalid API-key, IP, or permissions for action.",
        "status": 401,
    },
    # Bybit: retCode 10003 (ccxt: AuthenticationError), in an HTTP 200 answer
    "bybit": {
        "endpoint": "GET /v5/account/wallet-balance",
        "code": 10003,
        "msg": "API key is invalid.",
    },
}


@pytest.mark.parametrize("venue", list(VENUE_EXCHANGES))
async def test_an_invalid_key_pauses_entries_once_and_a_clean_read_resumes_them(
    temporal_env: WorkflowEnvironment, database_url: str, store: Store, venue: str
) -> None:
    async with ingesting(
        temporal_env,
        database_url,
        store,
        "keypause",
        wave_period=timedelta(seconds=1),
        venue=venue,
    ) as ingest:
        sim = ingest.stack.sim
        sim.add_fault("error", **KEY_REFUSED[venue])
        for n in (1, 2):  # two waves while the key is refused: one pause, one alert
            await ingest.service.emit_wave(size=5)
            decisions = await wave_settled(ingest, 5 * n)
            assert {d["reason"] for d in decisions.values()} == {"account_paused"}
        pauses = await operator_rows.account_pauses(store, ingest.account)
        assert [(p.source, p.reason) for p in pauses] == [("exchange", "key_invalid")]
        alerts = await store.pool.fetch(
            "SELECT * FROM alerts WHERE title LIKE $1", f"{ingest.account}:%paused%"
        )
        assert len(alerts) == 1
        await protected(ingest, set())
        sim.clear_faults()
        sent = await ingest.service.emit_wave(size=6)
        await wave_settled(ingest, 16)
        assert await operator_rows.account_pauses(store, ingest.account) == []
        assert len(await events_of(store, ingest, "entries_resumed")) == 1
        selected = expected_selection(ingest, sent)
        assert selected  # the resumed wave opens positions
        await protected(ingest, selected)
        if venue == "bybit":  # each entry carried its stop: on its position, live first
            truth = sim.ground_truth()
            for symbol in selected:
                [stop] = ingest.stack.open_stops(symbol)
                assert stop["closePosition"], stop
                episodes = [e for e in truth["episodes"] if e["symbol"] == symbol]
                assert [e["unprotectedMs"] for e in episodes] == [0], episodes


async def test_duplicates_store_one_row_and_get_one_decision(
    temporal_env: WorkflowEnvironment, database_url: str, store: Store
) -> None:
    async with ingesting(temporal_env, database_url, store, "dups") as ingest:
        sent = await ingest.service.emit_wave(size=12, spread_s=0.5, duplicate_rate=1.0)
        decisions = await wave_settled(ingest, 12)
        assert len(await ingest.stored()) == 12
        assert ingest.clients[0].duplicates >= 12
        assert len(await events_of(store, ingest, "signal_received")) == 12
        await protected(ingest, expected_selection(ingest, sent))
        assert len(decisions) == 12
        # the ingest's own /metrics and /health say the same
        client, port = ingest.clients[0], ingest.endpoints[0].port
        counts = ("messages", "duplicates", "stored")
        before = {c: getattr(client, c) for c in counts}
        page = await metrics_page(port)
        for name, count in (
            ("posguard_signals_received_total", "messages"),
            ("posguard_signals_duplicate_total", "duplicates"),
            ("posguard_signals_stored_total", "stored"),
        ):
            # The service's heartbeats go on arriving: the page is read between two looks.
            found = re.search(rf'^{name}{{service="{ingest.name}"}} (\S+)$', page, re.M)
            assert found is not None, name
            assert before[count] <= float(found.group(1)) <= getattr(client, count), name
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{port}/health") as r,
        ):
            health = await r.json()
            assert r.status == 200, health
        assert [(p["name"], p["status"]) for p in health["parts"]] == [
            (f"signal-service:{ingest.name}", "ok")
        ]


async def test_a_disconnect_mid_wave_loses_nothing_when_the_service_resumes(
    temporal_env: WorkflowEnvironment, database_url: str, store: Store
) -> None:
    async with ingesting(temporal_env, database_url, store, "resume") as ingest:
        sent = await ingest.service.emit_wave(
            size=20, spread_s=0.5, per_message=2, disconnect_after=8, abort=True
        )
        await wave_settled(ingest, 20)
        assert {r["signal_id"] for r in await ingest.stored()} == {str(s["id"]) for s in sent}
        assert ingest.clients[0].reconnects >= 1
        await protected(ingest, expected_selection(ingest, sent))


async def test_a_disconnect_without_resume_is_recorded_as_a_gap(
    temporal_env: WorkflowEnvironment, database_url: str, store: Store
) -> None:
    async with ingesting(
        temporal_env, database_url, store, "gap", resume=False, service={"resume": False}
    ) as ingest:
        await ingest.service.emit_wave(size=10, spread_s=0.3, per_message=2, disconnect_after=4)
        await until(lambda: ingest.clients[0].reconnects >= 1, "the ingest reconnected")
        stored = await ingest.stored()
        assert 4 <= len(stored) < 10  # what was sent while it was away is lost...
        await wave_settled(ingest, len(stored))

        async def gap() -> list[Any]:
            return [
                e
                for e in await store.events(limit=5000)
                if e.type.value == "websocket_reconnected"
                and "gap" in (e.payload.get("reason") or "")
                and e.payload.get("downtime_ms") is not None
            ]

        await poll(gap, bool, "the gap recorded with its duration")  # ...and that is on record


async def test_a_signal_after_its_wave_is_recorded_late_and_never_traded(
    temporal_env: WorkflowEnvironment, database_url: str, store: Store
) -> None:
    async with ingesting(temporal_env, database_url, store, "late") as ingest:
        sent = await ingest.service.emit_wave(size=6)
        await wave_settled(ingest, 6)
        selected = expected_selection(ingest, sent)
        await protected(ingest, selected)
        late = ingest.service.new_signal(at=datetime.fromisoformat(sent[0]["timestamp"]))
        late.update(score_week=99, score_month=99, pair_symbol="DOGEUSDT")
        await ingest.service.emit_wave([late])
        decisions = await wave_settled(ingest, 7)
        assert decisions[f"{ingest.name}/{late['id']}"]["reason"] == "wave_closed"
        await protected(ingest, selected)
