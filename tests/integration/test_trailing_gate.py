"""Trailing stops end to end: paper exchange → ccxt.pro feed → price gate → PositionWorkflow.

Everything is real: the Temporal dev server (`temporal_env`), PostgreSQL (the
module's `store`), the paper exchange reached through unmodified ccxt (REST for
the worker, WebSocket mark prices for the gate), a posguard worker (in-process
`run_worker`) and the market-data process itself (`run_gate`: PriceGate +
MarketFeed + TemporalWaker + the visibility sync). The test only moves the
simulator's mark price (`sim.set_price`); everything else happens by itself.

The judge is the exchange's ground truth: every stop the workflow moved is an
algo order with a create and an update time, and each position episode counts the
milliseconds it spent open without a reduce-only stop. A move places the new stop
before it cancels the old one, so the only unprotected time of a position is the
gap between its entry fill and its first stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import random
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
import pytest_asyncio
from pydantic import SecretStr
from temporalio.client import Client, WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from activities.store.repository import Store
from domain.client_ids import OrderStep, belongs_to, parse_client_id
from domain.events import EventType
from domain.position import CloseReason, PositionSpec, PositionState
from domain.protection import ProtectionPolicy
from domain.sizing import SizingMode, SizingRequest, StopRule
from domain.trailing import TrailingRule
from domain.types import ExchangeId, Side
from signals_ingest.gate_process import GateSource, run_gate
from simulator.server import PaperExchange
from workers.positions import start_position
from workers.settings import AccountSettings, Settings
from workers.worker import run_worker
from workflows.position_io import CloseResult, PositionConfig, PositionView, exchange_task_queue

pytestmark = pytest.mark.integration

T = 30.0  # float ok: wall-clock bound of any single wait, seconds
RULE = TrailingRule(
    callback_pct=Decimal(1), activation_pct=Decimal("0.5"), min_step_pct=Decimal("0.1")
)
MANY = 50  # positions of the load test, one symbol each
MANY_MOVES = 1000  # stop moves the load test drives through the whole system
MANY_SYMBOLS = [f"TG{chr(65 + i // 26)}{chr(65 + i % 26)}USDT" for i in range(MANY)]
MANY_BUDGET_S = 200.0  # float ok: cut of the walk (66 s alone, 121 s with a 2nd suite running)
SEED = 20240917


@dataclass
class World:
    client: Client
    sim: PaperExchange
    store: Store
    settings: Settings
    account: str

    def config(self) -> PositionConfig:
        return PositionConfig(
            exchange_task_queue=exchange_task_queue(self.account),
            # No periodic look during the test: only the gate (and the stop) wake it.
            check_interval=timedelta(minutes=10),
            protection=ProtectionPolicy(
                retry_delay=timedelta(milliseconds=100), round_delay=timedelta(seconds=5)
            ),
            exchange_call_timeout=timedelta(seconds=10),
            exchange_attempts=3,
        )

    def spec(self, symbol: str, side: Side, quote: str = "1000") -> PositionSpec:
        return PositionSpec(
            account=self.account,
            exchange=ExchangeId.BINANCE_USDM,
            symbol=symbol,
            side=side,
            sizing=SizingRequest(mode=SizingMode.QUOTE, amount=Decimal(quote)),
            stop=StopRule(percent=Decimal(2)),
            emergency_stop_percent=Decimal(5),
            trailing=RULE,
        )

    async def open(self, symbol: str, side: Side, quote: str = "1000") -> WorkflowHandle[Any, Any]:
        return await start_position(
            self.client,
            self.spec(symbol, side, quote),
            task_queue=self.settings.task_queue,
            config=self.config(),
        )

    async def view(self, handle: WorkflowHandle[Any, Any]) -> PositionView:
        view: PositionView = await handle.query("state", result_type=PositionView)
        return view


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def world(
    temporal_env: WorkflowEnvironment, database_url: str, store: Store
) -> AsyncIterator[World]:
    # No periodic mark pushes: only set_price (and the snapshot on subscribe) tick.
    async with PaperExchange(
        mark_interval_ms=3_600_000, admin_port=None, symbols=MANY_SYMBOLS, weight_limit=10**9
    ) as sim:
        sim.deposit("1000000")
        account = f"tg{uuid.uuid4().hex[:8]}"
        settings = Settings(
            task_queue=f"trailing-gate-{uuid.uuid4().hex[:8]}",
            database_url=SecretStr(database_url),
            accounts=[
                AccountSettings(
                    name=account,
                    api_key=SecretStr(sim.api_key),
                    secret=SecretStr(sim.api_secret),
                    paper_url=sim.rest_url,
                    paper_ws_url=sim.ws_url,
                    max_requests_per_second=Decimal(1000),
                )
            ],
        )
        stop = asyncio.Event()
        task = asyncio.create_task(run_worker(temporal_env.client, settings, stop))
        await asyncio.sleep(0.5)
        if task.done():
            task.result()
        try:
            yield World(temporal_env.client, sim, store, settings, account)
        finally:
            stop.set()
            await task


@contextlib.asynccontextmanager
async def gate_running(world: World) -> AsyncIterator[GateSource]:
    """The market-data process (`run_gate`) in this process; yields its one source."""
    stop = asyncio.Event()
    sources: list[GateSource] = []
    task = asyncio.create_task(
        run_gate(
            world.settings,
            stop,
            client=world.client,
            health_port=-1,
            sync_interval=timedelta(milliseconds=200),
            sources_out=sources,
        )
    )
    try:
        await until(lambda: bool(sources) or task.done(), "gate started")
        if task.done():
            task.result()
        yield sources[0]
    finally:
        stop.set()
        await asyncio.wait_for(task, T)


async def until(cond: Callable[[], bool], what: str, seconds: float = T) -> None:  # float ok
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not cond():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def wait_view(
    world: World, handle: WorkflowHandle[Any, Any], done: Callable[[PositionView], bool], what: str
) -> PositionView:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + T
    while True:
        view = await world.view(handle)
        if done(view):
            return view
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}: {view.snapshot.state}")
        await asyncio.sleep(0.05)


async def tick(src: GateSource, sim: PaperExchange, symbol: str, price: Decimal) -> None:
    """Move the mark price; wait until the gate saw it and every wake-up it caused is answered
    (the `price` update returns only once a stop move it caused is done)."""
    before = src.gate.counters.ticks
    sim.set_price(symbol, price)
    await until(lambda: src.gate.counters.ticks > before, f"tick {symbol} {price}")
    assert await src.gate.wait_idle(T), f"gate busy after {symbol} {price}"


def algos_of(truth: dict[str, Any], view: PositionView) -> list[dict[str, Any]]:
    """This position's algo orders (stops), oldest first, recognised by client id."""
    chain = view.position_id.rsplit("/", 1)[1]
    mine = [
        a
        for a in truth["algoOrders"]
        if a["symbol"] == view.spec.symbol
        and belongs_to(a["clientAlgoId"], view.workflow_id, chain)
    ]
    return sorted(mine, key=lambda a: (a["createTime"], a["algoId"]))


def position_amt(sim: PaperExchange, symbol: str) -> Decimal:
    amt = sim.engine.positions[symbol].amt
    return Decimal(amt)


def is_move(algo: dict[str, Any]) -> bool:
    parsed = parse_client_id(algo["clientAlgoId"])
    return parsed is not None and parsed.step is OrderStep.MOVE


def episode_of(truth: dict[str, Any], symbol: str) -> dict[str, Any]:
    [episode] = [e for e in truth["episodes"] if e["symbol"] == symbol]  # one per symbol here
    return episode


def assert_never_unprotected_after_first_stop(truth: dict[str, Any], view: PositionView) -> None:
    """The episode's unprotected time is exactly entry fill → first stop: nothing after."""
    episode = episode_of(truth, view.spec.symbol)
    first = algos_of(truth, view)[0]
    gap = first["createTime"] - episode["openedMs"]
    assert gap >= 0
    assert episode["unprotectedMs"] == gap, (view.spec.symbol, episode, first["createTime"])


def assert_new_before_old(algos: list[dict[str, Any]]) -> None:
    """Each stop was created before the one it replaced left the book (cancel time)."""
    for older, newer in itertools.pairwise(algos):
        assert older["algoStatus"] == "CANCELED", older
        assert newer["createTime"] <= older["updateTime"], (older, newer)


async def moved_events(world: World, position_id: str) -> list[dict[str, Any]]:
    events = await world.store.events(
        position_id=position_id, event_type=EventType.TRAILING_STOP_MOVED.value, limit=100_000
    )
    return [e.payload for e in sorted(events, key=lambda e: e.event_id)]


def tighter(side: Side, a: Decimal, b: Decimal) -> bool:
    return a > b if side is Side.LONG else a < b


@pytest.mark.parametrize(("side", "symbol"), [(Side.LONG, "BTCUSDT"), (Side.SHORT, "ETHUSDT")])
async def test_stop_trails_through_the_gate_and_closes_on_the_reversal(
    world: World, side: Side, symbol: str
) -> None:
    sim = world.sim
    start = Decimal("60000") if symbol == "BTCUSDT" else Decimal("3000")
    sim.set_price(symbol, start)
    async with gate_running(world) as src:
        handle = await world.open(symbol, side)
        view = await wait_view(
            world, handle, lambda v: v.snapshot.state is PositionState.ACTIVE, "active"
        )
        entry = view.snapshot.avg_entry_price
        first_stop = view.snapshot.stop_price
        assert entry is not None and first_stop is not None
        await until(lambda: handle.id in src.gate, "the gate picks the position up")
        await tick(src, sim, symbol, entry)  # the prime: the workflow answers its band
        ticks_before = src.gate.counters.ticks

        # In the position's favour, +0.05 % a tick, 4 % in all, then back against it
        # until the trailed stop fires.
        price = entry
        path = 0
        for _ in range(80):
            price = price * (1 + side.sign * Decimal("0.0005"))
            await tick(src, sim, symbol, price)
            await asyncio.sleep(0.02)
            path += 1
        best = price
        while True:
            price = price * (1 - side.sign * Decimal("0.0005"))
            await tick(src, sim, symbol, price)
            await asyncio.sleep(0.02)
            path += 1
            if position_amt(sim, symbol) == 0:  # the exchange fired the stop
                break
            assert side.sign * (best - price) < best * Decimal("0.03"), "the stop never fired"
        result: CloseResult = await asyncio.wait_for(handle.result(), T)
        gate_stats = src.gate.stats()

    assert result.state is PositionState.CLOSED
    assert result.reason is CloseReason.STOP_FILLED
    assert result.realised_pnl > 0  # the trail locked the profit in

    # PostgreSQL: several moves, each one tighter than the one before, chained.
    view = await world.view(handle)
    moves = await moved_events(world, view.position_id)
    assert len(moves) >= 5, moves
    previous = first_stop
    for move in moves:
        old, new = Decimal(move["old_stop"]), Decimal(move["new_stop"])
        assert old == previous and tighter(side, new, old), (previous, move)
        previous = new
    assert tighter(side, previous, entry)  # the last stop is in profit

    # The exchange: the stops follow each other, new first; nothing left open; the
    # only unprotected time is entry fill -> first stop.
    truth = sim.ground_truth()
    algos = algos_of(truth, view)
    assert len(algos) == len(moves) + 1
    assert [Decimal(a["triggerPrice"]) for a in algos] == [first_stop] + [
        Decimal(m["new_stop"]) for m in moves
    ]
    assert all(is_move(a) for a in algos[1:])
    assert_new_before_old(algos)
    assert algos[-1]["algoStatus"] in ("FINISHED", "TRIGGERED")
    assert not [
        a for a in truth["algoOrders"] if a["symbol"] == symbol and a["algoStatus"] == "NEW"
    ]
    episode = episode_of(truth, symbol)
    assert episode["closedMs"] is not None
    assert_never_unprotected_after_first_stop(truth, view)

    # The gate: far fewer wake-ups than ticks.
    assert gate_stats["ticks"] - ticks_before == path
    assert 0 < gate_stats["wakeups_sent"] < path
    assert gate_stats["wake_errors"] == 0


async def test_fifty_positions_a_thousand_moves_never_unprotected(world: World) -> None:
    """50 trailing positions on 50 symbols, a seeded random walk with drift in each
    position's favour, until 1,000 stops have moved through gate, Temporal and ccxt."""
    sim = world.sim
    rng = random.Random(SEED)
    sides = [Side.LONG if i % 2 == 0 else Side.SHORT for i in range(MANY)]
    prices = [10.0 + i for i in range(MANY)]  # float ok: the walk; sent as Decimal
    for symbol, p in zip(MANY_SYMBOLS, prices, strict=True):
        sim.set_price(symbol, Decimal(f"{p:.4f}"))
    t0 = time.monotonic()  # float ok: timing
    async with gate_running(world) as src:
        handles = await asyncio.gather(
            *(world.open(s, side, quote="100") for s, side in zip(MANY_SYMBOLS, sides, strict=True))
        )
        views = await asyncio.gather(
            *(
                wait_view(world, h, lambda v: v.snapshot.state is PositionState.ACTIVE, "active")
                for h in handles
            )
        )
        await until(lambda: all(h.id in src.gate for h in handles), "the gate has all 50")
        opened_s = time.monotonic() - t0  # float ok: timing

        def moves_so_far() -> int:
            return sum(
                1
                for a in sim.engine.algos.values()
                if a.symbol in views_by_symbol and is_move({"clientAlgoId": a.client_algo_id})
            )

        views_by_symbol = {v.spec.symbol: v for v in views}
        # Drift +0.02 % per round in each position's favour, noise 0.02 % (a reversal
        # of 1 %, the callback, is ~50 sigma away: nobody is stopped out).
        drift, sigma = 0.0002, 0.0002  # float ok: the walk
        rounds = 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + MANY_BUDGET_S
        walk_t0 = time.monotonic()  # float ok: timing
        while moves_so_far() < MANY_MOVES:
            assert loop.time() < deadline, f"only {moves_so_far()} moves in {MANY_BUDGET_S} s"
            for i, symbol in enumerate(MANY_SYMBOLS):
                prices[i] *= math.exp(sides[i].sign * drift + sigma * rng.gauss(0.0, 1.0))
                sim.set_price(symbol, Decimal(f"{prices[i]:.4f}"))
            rounds += 1
            await asyncio.sleep(0.03)
        walk_s = time.monotonic() - walk_t0  # float ok: timing
        # Quiet: every wake-up answered means every move it caused is done.
        assert await src.gate.wait_idle(T)
        gate_stats = src.gate.stats()
    truth = sim.ground_truth()
    finals = await asyncio.gather(*(world.view(h) for h in handles))

    total_moves = 0
    for view in finals:
        symbol = view.spec.symbol
        assert view.snapshot.state is PositionState.ACTIVE, (symbol, view.snapshot.state)
        algos = algos_of(truth, view)
        open_ = [a for a in algos if a["algoStatus"] == "NEW"]
        assert len(open_) == 1, (symbol, open_)  # never two stops left behind
        assert Decimal(open_[0]["triggerPrice"]) == view.snapshot.stop_price, symbol
        assert algos[-1] is open_[0]
        assert_new_before_old(algos)
        assert_never_unprotected_after_first_stop(truth, view)
        assert not [a for a in algos if a["algoStatus"] not in ("NEW", "CANCELED")]
        total_moves += sum(1 for a in algos if is_move(a))
    assert total_moves >= MANY_MOVES
    assert gate_stats["wake_errors"] == 0
    print(
        f"\n{MANY} positions: opened in {opened_s:.1f} s; {total_moves} moves in {walk_s:.1f} s "
        f"({total_moves / walk_s:.1f}/s), {rounds} rounds = {rounds * MANY} ticks, "
        f"{gate_stats['wakeups_sent']} wake-ups, {gate_stats['coalesced']} coalesced"
    )
    # The events in PostgreSQL tell the same story (their writes trail the workflow).
    for view in finals[:5]:
        n = sum(1 for a in algos_of(truth, view) if is_move(a))

        async def recorded(view: PositionView = view, n: int = n) -> bool:
            return len(await moved_events(world, view.position_id)) == n

        await until_async(recorded, f"{n} moves of {view.spec.symbol} recorded")
    await asyncio.gather(*(h.terminate("test over") for h in handles))


async def until_async(check: Callable[[], Any], what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + T
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)
