"""Random fault schedules: exchange faults and worker kills over a handful of positions.

Each schedule (seeded, so a failure can be replayed) opens a few positions, long and
short, some trailing, some with a take-profit, on two worker processes, while the
paper exchange answers with 429s, 5xx, latency and lost responses, and workers are
SIGKILLed and restarted at random moments. The positions then end the ways real ones
do: the stop fires, the take-profit fills, the operator closes. At the end the
exchange's ground truth is the judge:

- no workflow failed, none had a workflow task fail (a frozen position), all ended;
- no position and no order of ours is left on the exchange;
- every order of ours on the exchange has a record (the order journal) naming its
  position;
- the fills in PostgreSQL are the exchange's executions of our orders, and each
  position's close reason and realised PnL are what the exchange did.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType as HistoryEventType
from temporalio.client import WorkflowExecutionStatus, WorkflowHandle

from domain.client_ids import belongs_to, parse_client_id
from domain.position import CloseReason, PositionSpec, PositionState
from domain.sizing import TakeProfitRule
from domain.trailing import TrailingRule
from domain.types import Side
from tests.integration.test_crash import Crash
from tests.waiting import PATIENCE_S
from tests.worker_process import WorkerProcess
from workers.positions import start_position
from workflows.position import PositionWorkflow
from workflows.position_io import (
    CloseRequest,
    CloseResult,
    PositionConfig,
    PositionView,
    PriceTick,
)

pytestmark = pytest.mark.integration

# One seeded schedule in `make test` (each runs 20-70 s, and the suite has a 15-minute
# budget); more with POSGUARD_FAULT_SEEDS, e.g. POSGUARD_FAULT_SEEDS=11,23,37,41.
SCHEDULES = tuple(int(s) for s in os.environ.get("POSGUARD_FAULT_SEEDS", "23").split(","))
SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
PRICES = {"BTCUSDT": Decimal(60000), "ETHUSDT": Decimal(3000), "SOLUSDT": Decimal(150)}
RULE = TrailingRule(callback_pct=Decimal(1), activation_pct=Decimal("0.5"))
FAULT_ENDPOINTS = (
    "POST /fapi/v1/order",
    "POST /fapi/v1/algoOrder",
    "DELETE /fapi/v1/algoOrder",
    "GET /fapi/v1/algoOrder",
    "GET /fapi/v1/order",
    "GET /fapi/v2/positionRisk",
    "GET /fapi/v1/userTrades",
)


def say(*parts: object) -> None:
    """Progress of a schedule, shown by pytest when it fails (-s shows it live)."""
    print(*parts, flush=True)


def CONFIG(crash: Crash) -> PositionConfig:
    """The crash world's config with retries short enough for a test of minutes."""
    return crash.config().model_copy(
        update={
            "retry_delay": timedelta(milliseconds=500),
            "max_backoff": timedelta(seconds=4),
            "ambiguous_entry_window": timedelta(seconds=6),
            "entry_stop_retry": timedelta(seconds=3),
        }
    )


def live_workers(crash: Crash) -> list[WorkerProcess]:
    return [w for w in crash.workers if w.alive]


async def until(
    what: str, check: Any, crash: Crash, *, seconds: float = PATIENCE_S
) -> None:  # float ok
    """Poll `check` until true; fail with every worker's log once patience runs out."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not await check():
        if loop.time() > deadline:
            logs = "\n".join(f"--- {w.name}\n{w.log()}" for w in crash.workers)
            raise AssertionError(f"timed out waiting for {what}\n{logs}")
        await asyncio.sleep(0.05)


def random_fault(rng: random.Random, crash: Crash) -> None:
    """One short-lived exchange fault of a random kind on a random endpoint."""
    endpoint = rng.choice(FAULT_ENDPOINTS)
    say("fault on", endpoint)
    kind = rng.choice(["rate_limit", "http_status", "latency", "drop_response", "delay_response"])
    # Short-lived, like real outages: a rule that nobody hits soon expires.
    extra: dict[str, Any] = {"count": rng.randint(1, 3), "duration_ms": rng.randint(500, 3000)}
    if kind == "http_status":
        extra["status"] = rng.choice([500, 502, 503])
    if kind in ("latency", "delay_response"):
        extra["latency_ms"] = rng.choice([300, 1500, 4000])
    crash.sim.add_fault(kind, endpoint=endpoint, **extra)


async def faults(rng: random.Random, crash: Crash, stop: asyncio.Event) -> None:
    """A short-lived exchange fault every fraction of a second until `stop`."""
    while not stop.is_set():
        await asyncio.sleep(rng.uniform(0.3, 1.0))
        if rng.random() < 0.75 and not stop.is_set():
            random_fault(rng, crash)


async def kills(rng: random.Random, crash: Crash, stop: asyncio.Event) -> int:
    """Every few seconds a worker is SIGKILLed (now and then both at once) and
    started again a moment later; returns the number of kills."""
    n = 0
    while not stop.is_set():
        await asyncio.sleep(rng.uniform(2.0, 6.0))
        if stop.is_set():
            break
        victims = list(crash.workers) if rng.random() < 0.15 else [rng.choice(crash.workers)]
        say("kill", [w.name for w in victims])
        for worker in victims:
            await worker.kill()
            n += 1
        await asyncio.sleep(rng.uniform(0.3, 2.5))
        for worker in victims:
            await worker.start()
    return n


def position_spec(crash: Crash, symbol: str, side: Side, flavour: int) -> PositionSpec:
    spec = crash.spec(symbol).model_copy(update={"side": side})
    if flavour == 1:
        spec = spec.model_copy(update={"trailing": RULE})
    elif flavour == 2:
        spec = spec.model_copy(update={"take_profit": TakeProfitRule(percent=Decimal(1))})
    return PositionSpec.model_validate(spec.model_dump())


async def view_of(crash: Crash, handle: WorkflowHandle[Any, Any]) -> PositionView | None:
    try:
        return await crash.view(handle)
    except Exception:  # no worker answers while they are being killed
        return None


async def end_it(
    rng: random.Random, crash: Crash, handle: WorkflowHandle[Any, Any], how: str
) -> None:
    """End one active position: its stop fires, its take-profit fills, or the operator."""
    view = await view_of(crash, handle)
    if view is None or view.snapshot.state is not PositionState.ACTIVE:
        how = "close"
    if how == "stop" and view is not None and view.snapshot.stop_price is not None:
        side = view.spec.side
        crash.sim.set_price(
            view.spec.symbol, view.snapshot.stop_price * (1 - Decimal(side.sign) / 100)
        )
        return
    if how == "tp" and view is not None and view.snapshot.take_profit is not None:
        price = view.snapshot.take_profit.trigger_price
        assert price is not None
        crash.sim.set_price(view.spec.symbol, price * (1 + Decimal(view.spec.side.sign) / 100))
        return
    if how == "trail" and view is not None:
        entry = view.snapshot.avg_entry_price
        assert entry is not None
        side = view.spec.side
        for pct in ("1", "2", "3"):
            price = entry * (1 + side.sign * Decimal(pct) / 100)
            crash.sim.set_price(view.spec.symbol, price)
            with contextlib.suppress(Exception):  # a kill may hold or abort one update; fine
                await asyncio.wait_for(
                    handle.execute_update(
                        PositionWorkflow.price, PriceTick(price=price, at=datetime.now(UTC))
                    ),
                    timeout=5,
                )
    # Asked, not awaited: the close goes on under the chaos; the end of the test waits.
    with contextlib.suppress(Exception):  # AlreadyClosing / a kill: the final close retries
        await asyncio.wait_for(
            handle.execute_update(
                PositionWorkflow.close,
                CloseRequest(requested_by="schedule"),
                result_type=CloseResult,
            ),
            timeout=3,
        )


async def finished(handle: WorkflowHandle[Any, Any]) -> bool:
    try:
        return (await handle.describe()).status is not WorkflowExecutionStatus.RUNNING
    except Exception:
        return False


@pytest.mark.parametrize("seed", SCHEDULES)
async def test_a_random_fault_schedule_leaves_exact_books_and_nothing_behind(
    crash: Crash, seed: int
) -> None:
    rng = random.Random(seed)
    for symbol, price in PRICES.items():
        crash.sim.set_price(symbol, price)
    await crash.start_worker()
    await crash.start_worker()
    stop_chaos = asyncio.Event()
    fault_task = asyncio.create_task(faults(rng, crash, stop_chaos))
    kill_task = asyncio.create_task(kills(rng, crash, stop_chaos))
    handles: list[WorkflowHandle[Any, Any]] = []
    endings = ["stop", "tp", "close", "trail"]
    try:
        for i, symbol in enumerate(SYMBOLS):
            side = Side.LONG if rng.random() < 0.5 else Side.SHORT
            flavour = i % 3
            spec = position_spec(crash, symbol, side, flavour)
            handle = await start_position(
                crash.env.client, spec, task_queue=crash.task_queue, config=CONFIG(crash)
            )
            crash.handles.append(handle)
            handles.append(handle)
        for handle in handles:

            async def settled(h: WorkflowHandle[Any, Any] = handle) -> bool:
                view = await view_of(crash, h)
                return view is not None and view.snapshot.state not in (
                    PositionState.PENDING_ENTRY,
                    PositionState.ENTRY_PLACED,
                    PositionState.PENDING_SL,
                )

            await until("the position settled", settled, crash, seconds=PATIENCE_S)
            say("settled", handle.id)
        await asyncio.sleep(rng.uniform(3, 6))  # the positions live through some chaos
        for i, handle in enumerate(handles):
            how = "tp" if i % 3 == 2 else ("trail" if i % 3 == 1 else rng.choice(endings))
            say("end", handle.id, how)
            await end_it(rng, crash, handle, how)
            say("ended", handle.id, how)
            await asyncio.sleep(rng.uniform(0.2, 1.0))
        await asyncio.sleep(rng.uniform(2, 4))  # and so do their closes
    finally:
        stop_chaos.set()
        await fault_task
        killed = await kill_task
    crash.sim.clear_faults()
    for worker in crash.workers:
        if worker not in live_workers(crash):
            await worker.start()
    say("chaos over:", killed, "kills")
    # Whatever is still open is closed by the operator now, with no fault any more.
    for handle in handles:
        if not await finished(handle):
            with contextlib.suppress(Exception):
                await handle.execute_update(
                    PositionWorkflow.close,
                    CloseRequest(requested_by="end"),
                    result_type=CloseResult,
                )
        await until("the workflow ended", lambda h=handle: finished(h), crash, seconds=PATIENCE_S)

    truth = crash.truth()
    for handle in handles:
        desc = await handle.describe()
        assert desc.status is WorkflowExecutionStatus.COMPLETED, (handle.id, desc.status)
        failed_tasks = [
            e
            async for e in handle.fetch_history_events()
            if e.event_type == HistoryEventType.EVENT_TYPE_WORKFLOW_TASK_FAILED
        ]
        assert failed_tasks == [], (handle.id, failed_tasks[:1])
        result: CloseResult = await handle.result()
        view = await crash.view(handle)
        symbol = view.spec.symbol
        chain = view.position_id.rsplit("/", 1)[1]
        assert crash.position_amt(symbol) == 0, symbol
        ours_open = [
            o
            for o in truth["orders"]
            if o["symbol"] == symbol and o["status"] in ("NEW", "PARTIALLY_FILLED")
        ] + [a for a in truth["algoOrders"] if a["symbol"] == symbol and a["algoStatus"] == "NEW"]
        assert ours_open == [], (symbol, ours_open)
        await assert_books_are_the_exchanges(crash, truth, view, result, chain)
    assert killed > 0


async def assert_books_are_the_exchanges(
    crash: Crash, truth: dict[str, Any], view: PositionView, result: CloseResult, chain: str
) -> None:
    symbol = view.spec.symbol
    # Our orders on the exchange, by client id (an algo stop's fills carry its order's id).
    cid_of_order: dict[Any, str] = {}
    algo_cid = {a["algoId"]: a["clientAlgoId"] for a in truth["algoOrders"]}
    for order in truth["orders"]:
        if order["symbol"] != symbol:
            continue
        cid = algo_cid.get(order.get("algoId")) or order.get("clientOrderId")
        if cid:
            cid_of_order[order["orderId"]] = cid
    our_cids = {c for c in cid_of_order.values() if belongs_to(c, view.workflow_id, chain)}
    exchange_fills = [
        f
        for f in truth["fills"]
        if f["symbol"] == symbol and cid_of_order.get(f["orderId"]) in our_cids
    ]

    async def all_fill_rows() -> bool:
        return len(await crash.store.fills(view.position_id)) >= len(exchange_fills)

    await until("every fill in PostgreSQL", all_fill_rows, crash, seconds=PATIENCE_S)
    rows = await crash.store.fills(view.position_id)
    by_cid: dict[str, Decimal] = {}
    for f in exchange_fills:
        cid = cid_of_order[f["orderId"]]
        by_cid[cid] = by_cid.get(cid, Decimal(0)) + Decimal(f["qty"])
    recorded: dict[str, Decimal] = {}
    for r in rows:
        recorded[r.client_order_id] = recorded.get(r.client_order_id, Decimal(0)) + r.quantity
    assert recorded == by_cid, (symbol, recorded, by_cid)
    fees = sum((Decimal(f["commission"]) for f in exchange_fills), Decimal(0))
    assert result.fees == fees, (symbol, result.fees, fees)
    pnl = sum((Decimal(f["realizedPnl"]) for f in exchange_fills), Decimal(0))
    assert abs(result.realised_pnl - pnl) <= Decimal("0.0001") * max(abs(pnl), Decimal(1)), (
        symbol,
        result.realised_pnl,
        pnl,
    )
    # The close reason is what the exchange did.
    steps = {
        parse_client_id(cid).step.value  # type: ignore[union-attr]
        for cid, qty in by_cid.items()
        if qty > 0 and parse_client_id(cid) is not None
    }
    if result.state is PositionState.CLOSED and result.reason is not None:
        expected = {
            CloseReason.STOP_FILLED: {"sl", "mv"},
            CloseReason.TAKE_PROFIT: {"tp"},
            CloseReason.OPERATOR: {"close"},
        }.get(result.reason)
        if expected is not None:
            assert steps & expected, (symbol, result.reason, steps)
    # Every order of ours the exchange ever saw is journaled under this position.
    for cid in our_cids | {
        a["clientAlgoId"]
        for a in truth["algoOrders"]
        if a["symbol"] == symbol and belongs_to(a["clientAlgoId"], view.workflow_id, chain)
    }:
        entry = await crash.store.journaled_order(cid)
        assert entry is not None and entry.position_id == view.position_id, cid
