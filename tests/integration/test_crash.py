"""Crash tests: the worker process is SIGKILLed in the middle of a step and replaced.

Everything is real and crosses process boundaries: the Temporal dev server, an
embedded PostgreSQL, the paper exchange (served from this test process) and
`python -m workers.cli worker` as a separate process, which is killed with
SIGKILL (no cleanup of any kind) and then started again. The simulator's ground
truth decides: no order placed twice, no moment without a stop.

The windows are widened with latency faults on the exchange, so the kill lands
where the scenario says (the fault's hit counter tells us the request is in
flight), not where a race happens to put it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from activities.store.repository import Store
from domain.client_ids import belongs_to
from domain.position import PositionSpec, PositionState
from domain.protection import ProtectionPolicy
from domain.sizing import SizingMode, SizingRequest, StopRule
from domain.types import ExchangeId, Side
from simulator.client import VENUE_EXCHANGES
from simulator.faults import FaultRule
from simulator.server import PaperExchange
from tests.waiting import PATIENCE_S
from tests.worker_process import WorkerProcess
from tests.workflows.harness import ORDER_ENDPOINTS
from workers.positions import start_position
from workflows.position_io import ExchangeUpdate, PositionConfig, PositionView, exchange_task_queue

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
LATENCY_MS = 3000
# Longer than the latency (a request that is merely slow succeeds), short enough
# that the dead worker's in-flight activity times out quickly and is retried.
CALL_TIMEOUT = timedelta(seconds=6)
STEP_S = PATIENCE_S  # float ok: wall-clock safety net of any single wait


@dataclass
class Crash:
    """One crash scenario's world: account, exchange, worker processes, Temporal client."""

    env: WorkflowEnvironment
    sim: PaperExchange
    store: Store
    account: str
    task_queue: str
    worker_env: dict[str, str]
    workers: list[WorkerProcess] = field(default_factory=list)
    handles: list[WorkflowHandle[Any, Any]] = field(default_factory=list)
    hedge_mode: bool = False

    async def start_worker(self) -> WorkerProcess:
        worker = WorkerProcess(self.worker_env, f"{self.task_queue}#{len(self.workers) + 1}")
        self.workers.append(worker)
        await worker.start()
        return worker

    def fault(self, kind: str, on: str, **rule: Any) -> FaultRule:
        """A fault on the venue's plain orders, stops or stop cancels (see harness)."""
        endpoint, param = ORDER_ENDPOINTS[self.sim.venue][on]
        return self.sim.add_fault(kind, endpoint=endpoint, param=param, **rule)

    def spec(self, symbol: str, quote: str = "1200", side: Side = Side.LONG) -> PositionSpec:
        return PositionSpec(
            account=self.account,
            exchange=EXCHANGES[self.sim.venue],
            symbol=symbol,
            side=side,
            hedge_mode=self.hedge_mode,
            sizing=SizingRequest(mode=SizingMode.QUOTE, amount=Decimal(quote)),
            stop=StopRule(percent=Decimal(2)),
            emergency_stop_percent=Decimal(5),
        )

    def config(self) -> PositionConfig:
        return PositionConfig(
            exchange_task_queue=exchange_task_queue(self.account),
            # No periodic look during the test: only what the scenario triggers.
            check_interval=timedelta(minutes=10),
            protection=ProtectionPolicy(
                retry_delay=timedelta(milliseconds=100), round_delay=timedelta(seconds=5)
            ),
            exchange_call_timeout=CALL_TIMEOUT,
            exchange_attempts=3,
        )

    async def open(self, symbol: str, side: Side = Side.LONG) -> WorkflowHandle[Any, Any]:
        handle = await start_position(
            self.env.client,
            self.spec(symbol, side=side),
            task_queue=self.task_queue,
            config=self.config(),
        )
        self.handles.append(handle)
        return handle

    async def view(self, handle: WorkflowHandle[Any, Any]) -> PositionView:
        view: PositionView = await handle.query("state", result_type=PositionView)
        return view

    def truth(self) -> dict[str, Any]:
        return self.sim.ground_truth()

    def entries(self, symbol: str) -> list[dict[str, Any]]:
        """Every non-reduce-only MARKET order in `symbol` (ours: nobody else trades it)."""
        return [
            o
            for o in self.truth()["orders"]
            if o["symbol"] == symbol
            and o["type"] == "MARKET"
            and not o["reduceOnly"]
            and o["source"] != "manual"
        ]

    def stops(self, symbol: str) -> list[dict[str, Any]]:
        return [a for a in self.truth()["algoOrders"] if a["symbol"] == symbol]

    def open_stops(self, symbol: str) -> list[dict[str, Any]]:
        return [a for a in self.stops(symbol) if a["algoStatus"] == "NEW"]

    def position_amt(self, symbol: str) -> Decimal:
        for p in self.truth()["positions"]:
            if p["symbol"] == symbol:
                return Decimal(p["positionAmt"])
        return Decimal(0)

    def open_episode(self, symbol: str) -> dict[str, Any]:
        episodes: list[dict[str, Any]] = self.truth()["episodes"]
        [episode] = [e for e in episodes if e["symbol"] == symbol and e["open"]]
        return episode

    async def event_types(self, position_id: str) -> list[str]:
        return [e.type.value for e in await self.store.events(position_id=position_id, limit=5000)]


async def until(what: str, check: Callable[[], Awaitable[bool]], crash: Crash) -> None:
    """Poll `check` until true; fail with every worker's log after STEP_S seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + STEP_S
    while not await check():
        if loop.time() > deadline:
            logs = "\n".join(f"--- {w.name}\n{w.log()}" for w in crash.workers)
            raise AssertionError(f"timed out waiting for {what}\n{logs}")
        await asyncio.sleep(0.02)


def is_state(crash: Crash, handle: WorkflowHandle[Any, Any], state: PositionState) -> Any:
    async def check() -> bool:
        try:
            return (await crash.view(handle)).snapshot.state is state
        except Exception:  # no worker answers queries yet (e.g. right after a kill)
            return False

    return check


EXCHANGES = {venue: ExchangeId(exchange) for venue, exchange in VENUE_EXCHANGES.items()}


@asynccontextmanager
async def crash_world(
    temporal_env: WorkflowEnvironment,
    database_url: str,
    store: Store,
    venue: str,
    hedge_mode: bool = False,
) -> AsyncIterator[Crash]:
    """A fresh paper exchange of `venue`, a unique account and task queue; workers
    cleaned up after. `hedge_mode`: the exchange and the account in hedge mode."""
    async with PaperExchange(
        venue=venue, hedge_mode=hedge_mode, mark_interval_ms=200, admin_port=None
    ) as sim:
        if sim.venue == "bybit":
            sim.configure(rate_limit_per_s=10_000)
        for symbol, price in {"BTCUSDT": "60000", "ETHUSDT": "3000", "SOLUSDT": "150"}.items():
            sim.set_price(symbol, price)
        tag = uuid.uuid4().hex[:8]
        account = f"crash{tag}"
        task_queue = f"crash-{tag}"
        accounts = [
            {
                "name": account,
                "exchange": EXCHANGES[sim.venue].value,
                "api_key": sim.api_key,
                "secret": sim.api_secret,
                "paper_url": sim.rest_url,
                "max_requests_per_second": "1000",
                "hedge_mode": hedge_mode,
            }
        ]
        worker_env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("POSGUARD_") and k not in ("DATABASE_URL", "TEMPORAL_ADDRESS")
        }
        worker_env.update(
            TEMPORAL_ADDRESS=temporal_env.client.service_client.config.target_host,
            DATABASE_URL=database_url,
            POSGUARD_TASK_QUEUE=task_queue,
            POSGUARD_RECONCILE__EVERY="off",  # no reconcile passes in this run
            POSGUARD_CONFIG="/nonexistent.toml",
            POSGUARD_ACCOUNTS=json.dumps(accounts),
            PYTHONUNBUFFERED="1",
        )
        world = Crash(
            temporal_env, sim, store, account, task_queue, worker_env, hedge_mode=hedge_mode
        )
        try:
            yield world
        finally:
            # Leave nothing running: the workflows first (while a worker may still
            # be alive to see it), then the processes.
            for handle in world.handles:
                with contextlib.suppress(Exception):  # already over
                    await handle.terminate("test over")
            for worker in world.workers:
                await worker.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def crash(
    temporal_env: WorkflowEnvironment, database_url: str, store: Store
) -> AsyncIterator[Crash]:
    """A crash world on Binance (the other crash modules' scenarios)."""
    async with crash_world(temporal_env, database_url, store, "binance") as world:
        yield world


@pytest_asyncio.fixture(loop_scope="session", params=list(EXCHANGES))
async def venue_crash(
    temporal_env: WorkflowEnvironment,
    database_url: str,
    store: Store,
    request: pytest.FixtureRequest,
) -> AsyncIterator[Crash]:
    """A crash world on each exchange (this module's two scenarios)."""
    async with crash_world(temporal_env, database_url, store, request.param) as world:
        yield world


async def test_kill_after_entry_fill_before_stop_places_neither_twice(venue_crash: Crash) -> None:
    crash = venue_crash
    symbol = "BTCUSDT"
    # Binance: the stop follows the fill, and the kill lands while it is on its way.
    # Bybit: the stop rides on the entry, and the kill lands while both are on their way.
    attached = crash.sim.venue == "bybit"
    first = await crash.start_worker()
    slow: FaultRule = crash.fault("latency", "order" if attached else "stop", latency_ms=LATENCY_MS)
    handle = await crash.open(symbol)

    async def entry_filled_stop_in_flight() -> bool:
        filled = [o for o in crash.entries(symbol) if o["status"] == "FILLED"]
        return (attached or bool(filled)) and slow.hits >= 1

    await until("the entry fill and the stop request in flight", entry_filled_stop_in_flight, crash)
    assert crash.stops(symbol) == []  # the stop is not placed yet: the kill lands in the window
    await first.kill()
    crash.sim.clear_faults()
    await crash.start_worker()

    await until("state active", is_state(crash, handle, PositionState.ACTIVE), crash)
    view = await crash.view(handle)

    entries = crash.entries(symbol)
    assert len(entries) == 1, entries  # exactly one entry ever placed
    assert entries[0]["status"] == "FILLED"
    amt = crash.position_amt(symbol)
    assert amt == view.snapshot.qty > 0
    [stop] = crash.open_stops(symbol)
    assert stop["side"] == "SELL" and view.snapshot.stop is not None
    if attached:  # the stop on the position: closes all of it, found by its exchange id
        assert stop["closePosition"] is True and view.snapshot.stop.position_stop
        assert crash.open_episode(symbol)["unprotectedMs"] == 0
    else:
        assert stop["reduceOnly"] is True and Decimal(stop["quantity"]) == amt
        assert stop["clientAlgoId"] == view.snapshot.stop.client_order_id
        chain = view.position_id.rsplit("/", 1)[1]
        assert all(
            belongs_to(a["clientAlgoId"], view.workflow_id, chain) for a in crash.stops(symbol)
        )
    assert len(crash.stops(symbol)) == 1  # the in-flight stop was found, not placed again
    episode = crash.open_episode(symbol)
    unprotected = episode["unprotectedMs"]
    await asyncio.sleep(0.3)  # a while later (any while: a busy machine only makes it longer)
    assert crash.open_episode(symbol)["unprotectedMs"] == unprotected  # protected now

    async def events_recorded() -> bool:
        return "sl_placed" in await crash.event_types(view.position_id)

    await until("sl_placed in PostgreSQL", events_recorded, crash)
    events = Counter(await crash.event_types(view.position_id))
    assert events["entry_order_filled"] == 1, events
    assert events["entry_order_placed"] == 1, events
    assert events["sl_placed"] == 1, events


async def test_kill_between_new_stop_and_old_cancel_keeps_one_stop(venue_crash: Crash) -> None:
    crash = venue_crash
    symbol = "ETHUSDT"
    first = await crash.start_worker()
    handle = await crash.open(symbol)
    await until("state active", is_state(crash, handle, PositionState.ACTIVE), crash)
    before = await crash.view(handle)
    [old_stop] = crash.open_stops(symbol)
    assert before.snapshot.stop is not None
    if crash.sim.venue == "bybit":
        await _bybit_stop_covers_added_quantity(crash, handle, first, old_stop)
        return
    assert old_stop["clientAlgoId"] == before.snapshot.stop.client_order_id

    # Quantity added by hand: the workflow must resize its stop, new one first.
    extra = Decimal("0.1")
    crash.sim.open_position(symbol, "BUY", extra)
    new_qty = before.snapshot.qty + extra
    assert crash.position_amt(symbol) == new_qty
    slow_cancel = crash.fault("latency", "stop_cancel", latency_ms=LATENCY_MS)
    await handle.signal("exchange_update", ExchangeUpdate(source="test", detail="qty added"))

    async def two_stops_cancel_in_flight() -> bool:
        return len(crash.open_stops(symbol)) == 2 and slow_cancel.hits >= 1

    await until("two open stops and the cancel in flight", two_stops_cancel_in_flight, crash)
    unprotected_before = crash.open_episode(symbol)["unprotectedMs"]
    await first.kill()
    crash.sim.clear_faults()
    await crash.start_worker()

    async def resized() -> bool:
        try:
            view = await crash.view(handle)
        except Exception:
            return False
        stop = view.snapshot.stop
        return (
            view.snapshot.state is PositionState.ACTIVE
            and stop is not None
            and stop.qty == new_qty
            and len(crash.open_stops(symbol)) == 1
            and not view.stale_orders
        )

    await until("one stop for the new quantity", resized, crash)
    view = await crash.view(handle)
    [stop] = crash.open_stops(symbol)
    assert view.snapshot.stop is not None
    assert stop["clientAlgoId"] == view.snapshot.stop.client_order_id != old_stop["clientAlgoId"]
    assert Decimal(stop["quantity"]) == new_qty == crash.position_amt(symbol)
    assert stop["reduceOnly"] is True and stop["side"] == "SELL"
    # No moment without a stop: the unprotected time did not grow through the crash.
    assert crash.open_episode(symbol)["unprotectedMs"] == unprotected_before
    # Every stop placed once: two stops in all (old and new), no client id twice.
    placed = Counter(a["clientAlgoId"] for a in crash.stops(symbol))
    assert len(placed) == 2 and set(placed.values()) == {1}, placed
    assert len(crash.entries(symbol)) == 1


async def _bybit_stop_covers_added_quantity(
    crash: Crash, handle: Any, first: Any, old_stop: dict[str, Any]
) -> None:
    """Bybit: the stop that came with the entry lives on the position and closes all
    of it, so quantity added by hand needs no new stop (never two), killed or not."""
    symbol = old_stop["symbol"]
    before = await crash.view(handle)
    new_qty = before.snapshot.qty + Decimal("0.1")
    crash.sim.open_position(symbol, "BUY", Decimal("0.1"))
    unprotected_before = crash.open_episode(symbol)["unprotectedMs"]
    await handle.signal("exchange_update", ExchangeUpdate(source="test", detail="qty added"))

    async def covered() -> bool:
        try:
            view = await crash.view(handle)
        except Exception:
            return False
        return view.snapshot.stop is not None and view.snapshot.stop.qty == new_qty

    await until("the stop covering the new quantity", covered, crash)
    await first.kill()
    await crash.start_worker()
    await until("state active", is_state(crash, handle, PositionState.ACTIVE), crash)
    [stop] = crash.open_stops(symbol)
    assert stop["algoId"] == old_stop["algoId"] and stop["closePosition"] is True
    assert len(crash.stops(symbol)) == 1 and crash.position_amt(symbol) == new_qty
    assert crash.open_episode(symbol)["unprotectedMs"] == unprotected_before
    assert len(crash.entries(symbol)) == 1
