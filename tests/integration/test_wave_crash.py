"""Waves survive SIGKILL: of the ingest process, and of the worker, in the middle of a wave.

Everything is real and crosses process boundaries: the Temporal dev server, an
embedded PostgreSQL, the paper exchange and the signal-service simulator (both
served from this test process), and the process that is killed with SIGKILL (no
cleanup of any kind) and then started again: `python -m workers.cli ingest` in the
first test, `python -m workers.cli worker` in the second. The paper exchange's
ground truth decides: every selected symbol holds one position with one stop, and
one entry order was ever placed for it; every emitted signal is stored once and
has one decision.

As in tests/integration/test_crash.py, the windows are widened so the kill lands
where the scenario says, not where a race happens to put it: a table lock held
from the test (the store is slow, not broken), or the ingest's connection to
Temporal held by a proxy (Temporal is slow, not down), stops the killed process
right after the step the scenario names, and the test waits until it shows there.

Binance only, for the suite's time. The ingest's kill is the ingest's business (the
exchange only holds the outcome); the worker's costs what Temporal's recovery after a
SIGKILL takes (25-35 s, measured on Bybit too), whatever the wave's size, so it has no
smaller case. What is Bybit's in them runs on Bybit elsewhere: a kill with an entry and
the stop it carries in flight (test_crash.py, `venue_crash`), a wave on a Bybit account
opening its positions, each with its stop (test_waves.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from pydantic import SecretStr
from temporalio.client import WorkflowExecutionStatus
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from activities.store import operator_rows
from activities.store.repository import Store
from domain.position import position_workflow_id
from domain.signal_wire import Accepted, parse_message
from domain.signals import Signal
from domain.types import ExchangeId
from domain.waves import AccountView, select_wave
from simulator.server import PaperExchange
from simulator.signals import SignalService
from tests.integration.test_crash import Crash
from tests.integration.test_reconcile import close_everything
from tests.waiting import poll, started, until
from tests.worker_process import WorkerProcess
from tests.workflows.harness import PRICES, QUICK, Stack, live_stack
from workers.ingest import run_ingest
from workers.settings import AccountSettings, Settings, SignalServiceSettings, WaveSettings

pytestmark = pytest.mark.integration

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
    # A wave activity lost with a killed worker is retried after this long.
    call_timeout=timedelta(seconds=5),
    sweep_every=None,  # only the start-up sweep: the one a restarted ingest relies on
)
FAST_POLL_S = 0.01  # float ok: seconds between two looks where the moment matters
ENTRY_LATENCY_MS = 2000


# --- what the exchange and the store hold ---------------------------------------------------


def entries(sim: PaperExchange) -> list[dict[str, Any]]:
    """Every entry order ever placed (non-reduce-only MARKET orders, not placed by hand)."""
    return [
        o
        for o in sim.ground_truth()["orders"]
        if o["type"] == "MARKET" and not o["reduceOnly"] and o["source"] != "manual"
    ]


def open_stops(sim: PaperExchange, symbol: str) -> list[dict[str, Any]]:
    """The open (NEW) STOP_MARKET algo orders of `symbol` at the exchange."""
    return [
        a
        for a in sim.ground_truth()["algoOrders"]
        if a["symbol"] == symbol and a["algoStatus"] == "NEW" and a["orderType"] == "STOP_MARKET"
    ]


def holding(sim: PaperExchange) -> set[str]:
    """The symbols with a non-zero position at the exchange."""
    return {s for s, p in sim.engine.positions.items() if p.amt != 0}


async def protected_exactly(sim: PaperExchange, symbols: set[str]) -> None:
    """Wait until exactly `symbols` hold a position, each with exactly one open stop."""

    def check() -> bool:
        return holding(sim) == symbols and all(len(open_stops(sim, s)) == 1 for s in symbols)

    await until(check, f"positions with one stop each on exactly {sorted(symbols)}")


def assert_one_entry_each(sim: PaperExchange, symbols: set[str]) -> None:
    """Exactly one entry order was ever placed per symbol of `symbols`, none elsewhere."""
    placed = Counter(o["symbol"] for o in entries(sim))
    assert placed == Counter(symbols), placed


async def stored_rows(store: Store, service: str) -> list[dict[str, Any]]:
    """The service's valid signal rows."""
    rows = await store.pool.fetch(
        "SELECT * FROM signals WHERE service = $1 AND status <> 'rejected'", service
    )
    return [dict(r) for r in rows]


async def stored_count(store: Store, service: str) -> int:
    n: int = await store.pool.fetchval(
        "SELECT count(*) FROM signals WHERE service = $1 AND status <> 'rejected'", service
    )
    return n


async def decisions_of(store: Store, service: str, account: str) -> list[dict[str, Any]]:
    """Every decision of `account` about a signal of `service` (duplicates would show)."""
    rows = await store.pool.fetch(
        """SELECT d.* FROM signal_decisions d JOIN signals s ON s.id = d.signal_row_id
           WHERE s.service = $1 AND d.account = $2""",
        service,
        account,
    )
    return [dict(r) for r in rows]


async def wave_rows(store: Store, account: str) -> list[dict[str, Any]]:
    rows = await store.pool.fetch("SELECT * FROM waves WHERE account = $1", account)
    return [dict(r) for r in rows]


def parsed(service: str, sent: list[dict[str, Any]]) -> dict[str, Signal]:
    """Signal row id → the signal as posguard parses it, for each of `sent`."""
    items = parse_message(
        json.dumps({"type": "wave", "signals": sent}),
        service=service,
        received_at=datetime.now(UTC),
    )
    signals = [i.signal for i in items if isinstance(i, Accepted)]
    assert len(signals) == len(sent)
    return {f"{service}/{s.signal_id}": s for s in signals}


def selection(sim: PaperExchange, signals: list[Signal]) -> set[str]:
    """The symbols `domain.waves.select_wave` selects from `signals` on a fresh account."""
    decisions = select_wave(
        signals,
        AccountView(listed=frozenset(sim.engine.markets)),
        WAVES.rules(),
        exchange=ExchangeId.BINANCE_USDM,
        now=datetime.now(UTC),
    )
    return {d.signal.symbol for d in decisions if d.selected}


async def settled(
    store: Store, service: str, account: str, sent: list[dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """Wait until every sent signal is stored and decided and the account's wave is
    processed; check that each is stored once with one decision. The decisions."""
    await until(lambda: _all_decided(store, service, account, len(sent)), f"{len(sent)} decisions")
    rows = await stored_rows(store, service)
    ids = Counter(r["signal_id"] for r in rows)
    assert ids == Counter(str(s["id"]) for s in sent), "each emitted signal stored exactly once"
    decisions = await decisions_of(store, service, account)
    assert Counter(d["signal_row_id"] for d in decisions) == Counter(r["id"] for r in rows)
    waves: list[dict[str, Any]] = await poll(
        lambda: wave_rows(store, account),
        lambda w: bool(w) and all(r["status"] == "processed" for r in w),
        "the wave processed",
    )
    assert len(waves) == 1, waves
    return {d["signal_row_id"]: d for d in decisions}


async def _all_decided(store: Store, service: str, account: str, n: int) -> bool:
    return len(await decisions_of(store, service, account)) >= n


def opened_symbols(decisions: dict[str, dict[str, Any]]) -> set[str]:
    """The symbols whose position a decision says was opened (from its workflow id)."""
    opened = [d["position_workflow_id"] for d in decisions.values() if d["outcome"] == "opened"]
    symbols = {w.rsplit("/", 1)[-1] for w in opened}
    assert len(symbols) == len(opened), f"a symbol opened twice: {opened}"
    return symbols


class HeldProxy:
    """A TCP proxy on 127.0.0.1 to `target` whose requests can be held: while held,
    nothing is forwarded to `target` (answers to what it already had still come
    back). `cut` drops every connection with what it holds; new ones flow."""

    def __init__(self, target: str) -> None:
        host, port = target.rsplit(":", 1)
        self._target = (host, int(port))
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._pumps: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self.address = ""

    async def __aenter__(self) -> HeldProxy:
        self._server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        self.address = f"127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._flowing.set()
        assert self._server is not None
        self._server.close()
        for pump in self._pumps:
            pump.cancel()
        await asyncio.gather(*self._pumps, return_exceptions=True)

    def hold(self) -> None:
        self._flowing.clear()

    async def cut(self) -> None:
        """Drop every connection and what it holds (its client is gone), then flow."""
        for pump in self._pumps:
            pump.cancel()
        await asyncio.gather(*self._pumps, return_exceptions=True)
        self._flowing.set()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.close()
            return
        for src, dst, held in ((reader, up_writer, True), (up_reader, writer, False)):
            pump = asyncio.create_task(self._pump(src, dst, held))
            self._pumps.add(pump)
            pump.add_done_callback(self._pumps.discard)

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, held: bool) -> None:
        try:
            while data := await src.read(65536):
                if held:
                    await self._flowing.wait()
                dst.write(data)
                await dst.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            dst.close()


@asynccontextmanager
async def table_held(database_url: str, table: str) -> AsyncIterator[asyncpg.Connection]:
    """`table` locked in SHARE mode (reads pass, writes wait) until the block ends."""
    conn = await asyncpg.connect(database_url)
    try:
        transaction = conn.transaction()
        await transaction.start()
        try:
            await conn.execute(f"LOCK TABLE {table} IN SHARE MODE")
            yield conn
        finally:
            await transaction.rollback()  # the lock goes with it
    finally:
        await conn.close()


async def someone_waits_on(conn: asyncpg.Connection) -> bool:
    """Whether a session is blocked by a lock `conn` holds."""
    n: int = await conn.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))",
        conn.get_server_pid(),
    )
    return n > 0


# --- the ingest in a process of its own -----------------------------------------------------


def ingest_env(
    temporal_env: WorkflowEnvironment,
    database_url: str,
    settings: Settings,
    service: SignalServiceSettings,
    waves: WaveSettings,
    config_dir: Path,
    temporal_address: str | None = None,
) -> dict[str, str]:
    """The environment of `python -m workers.cli ingest`: the servers as environment
    variables, the rest (account, signal service with its token, waves) in a TOML file
    named by POSGUARD_CONFIG, as a deployment would give it."""
    account = settings.accounts[0]

    def q(value: object) -> str:
        return json.dumps(str(value))  # a TOML basic string

    def secret(value: SecretStr) -> str:
        return q(value.get_secret_value())

    lines = [
        f"task_queue = {q(settings.task_queue)}",
        "health_port = -1",
        "",
        "[[accounts]]",
        f"name = {q(account.name)}",
        f"exchange = {q(account.exchange)}",
        f"api_key = {secret(account.api_key)}",
        f"secret = {secret(account.secret)}",
        f"paper_url = {q(account.paper_url)}",
        "",
        "[[signal_services]]",
        f"name = {q(service.name)}",
        f"url = {q(service.url)}",
        f"token = {secret(service.token)}",
        f"resume = {'true' if service.resume else 'false'}",
        f"idle_timeout = {q(f'{service.idle_timeout.total_seconds():g}s')}",
        f"wave_period = {q(f'{service.wave_period.total_seconds():g}s')}",
        "",
        "[waves]",
    ]
    for key, value in waves.model_dump().items():
        if value is None:
            if WaveSettings.model_fields[key].default is not None:
                lines.append(f"{key} = {q('off')}")  # a duration turned off
        elif isinstance(value, timedelta):
            lines.append(f"{key} = {q(f'{value.total_seconds():g}s')}")
        elif isinstance(value, int):
            lines.append(f"{key} = {value}")
        else:
            lines.append(f"{key} = {q(value)}")
    path = config_dir / "posguard.toml"
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)  # it holds secrets
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("POSGUARD_") and k not in ("DATABASE_URL", "TEMPORAL_ADDRESS")
    }
    env.update(
        TEMPORAL_ADDRESS=temporal_address or temporal_env.client.service_client.config.target_host,
        DATABASE_URL=database_url,
        POSGUARD_CONFIG=str(path),
        PYTHONUNBUFFERED="1",
    )
    return env


def ingest_process(env: dict[str, str], name: str) -> WorkerProcess:
    """`python -m workers.cli ingest`, ready once it reads its signal service."""
    return WorkerProcess(env, name, command="ingest", ready_line="reading signal service")


# --- the tests ------------------------------------------------------------------------------


async def test_sigkill_of_the_ingest_mid_wave_loses_no_signal_and_opens_nothing_twice(
    temporal_env: WorkflowEnvironment, database_url: str, store: Store, tmp_path: Path
) -> None:
    """The ingest process is SIGKILLed while a 24-signal wave streams in (2 s, two
    signals a message), with signals stored that it had not yet handed to the wave,
    and started again once the rest of the wave has been emitted.

    Checks: the kill landed mid-wave (some signals not stored yet) and after a store
    before its hand-on (the restart's sweep must deliver those); the restarted ingest
    resumes from the last stored signal (the rest of the wave reaches it only that
    way), so every emitted signal is stored exactly once, with its events, and has
    exactly one decision for the account; the selection is the one
    `select_wave` makes of the signals the wave received in time; each selected symbol
    holds exactly one position with one stop on the paper exchange and exactly one
    entry order was ever placed for it; nothing else is held.
    """
    size = 24
    waves = WAVES.model_copy(update={"window": timedelta(seconds=8)})  # spans the restart
    async with (
        live_stack(
            temporal_env.client,
            database_url,
            store,
            name="ingestkill",
            check_interval=timedelta(seconds=30),
            config=QUICK,
        ) as stack,
        SignalService(heartbeat_s=1.0, symbols=list(PRICES), seed=11) as svc,
        HeldProxy(temporal_env.client.service_client.config.target_host) as temporal,
    ):
        account = stack.settings.accounts[0].name
        service = SignalServiceSettings(
            name=f"ingestkill-{uuid.uuid4().hex[:6]}",
            url=svc.url,
            token=SecretStr(svc.token),
            resume=True,
            idle_timeout=timedelta(seconds=5),
        )
        env = ingest_env(
            temporal_env,
            database_url,
            stack.settings,
            service,
            waves,
            tmp_path,
            temporal_address=temporal.address,
        )
        processes: list[WorkerProcess] = []
        emitting: asyncio.Task[list[dict[str, Any]]] | None = None
        try:
            first = ingest_process(env, "ingest#1")
            processes.append(first)
            await first.start()
            await until(lambda: svc.connections == 1, "the ingest connected to the service")
            emitting = asyncio.create_task(svc.emit_wave(size=size, spread_s=2.0, per_message=2))

            # Part of the wave stored and handed on (the wave is running) ...
            await until(
                lambda: _stored_and_wave(store, service.name, account, 6),
                "6 signals stored and the wave started",
                interval=FAST_POLL_S,
            )
            [wave] = await wave_rows(store, account)
            handle = stack.client.get_workflow_handle(wave["id"])

            # ... then the next batch is stored, but its hand-on to the wave waits for
            # Temporal: that is where the kill lands.
            async def stored_not_handed_on() -> bool:
                state = await handle.query("state")
                return bool(await stored_count(store, service.name) > state["signals"])

            temporal.hold()
            try:
                await until(
                    stored_not_handed_on,
                    "a batch stored and waiting for its hand-on",
                    interval=FAST_POLL_S,
                )
                await first.kill()
            finally:
                await temporal.cut()  # what the dead process had sent never arrives
            stored_at_kill = await stored_count(store, service.name)
            state = await handle.query("state")
            assert stored_at_kill < size, "the kill landed after the whole wave was stored"
            assert state["signals"] < stored_at_kill, "no stored signal was waiting for its wave"

            sent = await emitting  # the rest of the wave is emitted while nobody reads
            second = ingest_process(env, "ingest#2")
            processes.append(second)
            await second.start()
            decisions = await settled(store, service.name, account, sent)
            await second.stop()

            signals = parsed(service.name, sent)
            in_time = [signals[r] for r, d in decisions.items() if d["reason"] != "wave_closed"]
            selected = opened_symbols(decisions)
            assert selected == selection(stack.sim, in_time)
            assert 1 <= len(selected) <= waves.max_new_per_wave
            await protected_exactly(stack.sim, selected)
            assert_one_entry_each(stack.sim, selected)
            # Every signal was stored with its events, those of the kill's batch too.
            received = await store.pool.fetchval(
                "SELECT count(*) FROM events WHERE type = 'signal_received' "
                "AND correlation_id LIKE $1",
                f"signal/{service.name}/%",
            )
            assert received == len(sent)
        except BaseException:
            for p in processes:
                print(f"--- {p.name}\n{p.log()}")
            raise
        finally:
            if emitting is not None and not emitting.done():
                emitting.cancel()
            for p in processes:
                await p.stop()
            await close_everything(stack)


async def _stored_and_wave(store: Store, service: str, account: str, n: int) -> bool:
    return await stored_count(store, service) >= n and bool(await wave_rows(store, account))


async def test_sigkill_of_the_worker_mid_wave_starts_each_position_once_and_decides_each_signal(
    crash: Crash, database_url: str
) -> None:
    """The worker process is SIGKILLed right after the wave's deadline, once it has
    started the selected positions and before it has recorded a single decision,
    with an entry order in flight at the exchange; a new worker is started.

    Checks: at the kill the positions run and no decision is stored; afterwards every
    signal has exactly one decision, the opened ones are `select_wave`'s selection;
    each selected symbol holds exactly one position with one stop on the paper
    exchange and exactly one entry order was ever placed for it (the in-flight one was
    found, not placed again); the wave's row ends `processed` with the right counts.
    """
    size = 16
    crash.worker_env["POSGUARD_HEALTH_PORT"] = "-1"
    await crash.start_worker()
    first = crash.workers[-1]
    config = crash.config()
    settings = Settings(
        task_queue=crash.task_queue,
        database_url=SecretStr(database_url),
        accounts=[
            AccountSettings(
                name=crash.account,
                api_key=SecretStr(crash.sim.api_key),
                secret=SecretStr(crash.sim.api_secret),
                paper_url=crash.sim.rest_url,
                max_requests_per_second=Decimal(1000),
            )
        ],
        health_port=-1,
        waves=WAVES,
    )
    stack = Stack(crash.env.client, crash.sim, crash.store, settings, config)
    async with SignalService(heartbeat_s=1.0, symbols=list(PRICES), seed=5) as svc:
        service = SignalServiceSettings(
            name=f"workerkill-{uuid.uuid4().hex[:6]}",
            url=svc.url,
            token=SecretStr(svc.token),
            idle_timeout=timedelta(seconds=5),
        )
        stop, ready = asyncio.Event(), asyncio.Event()
        ingest = asyncio.create_task(
            run_ingest(
                crash.env.client,
                settings.model_copy(update={"signal_services": [service]}),
                stop,
                position_config=lambda _account: config,
                ready=ready,
            )
        )
        try:
            await started(ready, ingest, "the ingest")
            await until(lambda: svc.connections == 1, "the ingest connected to the service")
            held_entry = crash.sim.add_fault(
                "latency", endpoint="POST /fapi/v1/order", latency_ms=ENTRY_LATENCY_MS
            )
            async with table_held(database_url, "signal_decisions") as holder:
                sent = await svc.emit_wave(size=size)
                expected = selection(crash.sim, list(parsed(service.name, sent).values()))
                assert 1 <= len(expected) <= WAVES.max_new_per_wave

                async def killing_time() -> bool:
                    return held_entry.hits >= 1 and await someone_waits_on(holder)

                await until(
                    killing_time,
                    "an entry in flight and the wave's decisions waiting",
                    interval=FAST_POLL_S,
                )
                await first.kill()
                assert await decisions_of(crash.store, service.name, crash.account) == []
                running = {s for s in expected if await _running(stack, s)}
                assert running == expected, "the wave started its positions before the kill"
            crash.sim.clear_faults()
            await crash.start_worker()

            decisions = await settled(crash.store, service.name, crash.account, sent)
            selected = opened_symbols(decisions)
            assert selected == expected
            await protected_exactly(crash.sim, selected)
            assert_one_entry_each(crash.sim, selected)
            [row] = await wave_rows(crash.store, crash.account)
            # The decisions are recorded before the wave's own row says it is processed.
            wave = await poll(
                lambda: operator_rows.wave(crash.store, row["id"]),
                lambda w: w is not None and w.status == "processed",
                f"{row['id']} recorded as processed",
            )
            assert wave is not None and wave.status == "processed"
            assert wave.signals_received == size and wave.positions_started == len(selected)
            assert sum(wave.outcomes.values()) == size
        except BaseException:
            for w in crash.workers:
                print(f"--- {w.name}\n{w.log()}")
            raise
        finally:
            crash.sim.clear_faults()
            stop.set()
            await ingest
            if not any(w.alive for w in crash.workers):
                await crash.start_worker()  # the positions are closed by a live worker
            await close_everything(stack)
            await _terminate_waves(stack)


async def _running(stack: Stack, symbol: str) -> bool:
    workflow_id = position_workflow_id(stack.settings.accounts[0].name, "binanceusdm", symbol)
    try:
        desc = await stack.client.get_workflow_handle(workflow_id).describe()
    except RPCError:
        return False
    return desc.status is WorkflowExecutionStatus.RUNNING


async def _terminate_waves(stack: Stack) -> None:
    """A wave a failed test left running is ended (nothing stays on the shared server)."""
    account = stack.settings.accounts[0].name
    query = f'WorkflowType="WaveWorkflow" AND ExecutionStatus="Running" AND Account="{account}"'
    async for wf in stack.client.list_workflows(query):
        with contextlib.suppress(RPCError):
            await stack.client.get_workflow_handle(wf.id).terminate("test over")
