"""A worker SIGKILLed in the middle of a reconcile pass: the pass completes, nothing twice.

The world of tests/integration/test_crash.py (`crash`): worker processes of their
own, a fresh paper exchange and account. The pass is caught while it reads the
exchange (the open algo orders answer slowly), the worker is killed, a new one
starts; the interrupted pass is resumed by Temporal and finishes: the untracked
position is adopted once, the zombie stop cancelled once.

On both paper venues (`venue_crash`). The zombie is what a workflow leaves on each:
on Binance an algo order, on Bybit a conditional order under its `orderLinkId`, and
the pass is caught reading the account's conditional orders (Binance's
`openAlgoOrders`, Bybit's one order list, `/v5/order/realtime`).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from activities.store.repository import Store
from domain.client_ids import OrderStep, client_order_id
from domain.position import PositionState, position_workflow_id
from domain.reconcile_io import ReconcileReport
from tests.integration.test_crash import EXCHANGES, Crash, until
from workers.positions import position_handle
from workers.schedules import delete_schedule
from workflows.position_io import CloseRequest, CloseResult, PositionView


async def _events(store: Store, account: str, kind: str) -> list[Any]:
    return [e for e in await store.events(event_type=kind, limit=5000) if e.account == account]


# Where the pass reads the account's open conditional orders: held there for the kill.
OPEN_CONDITIONAL_ORDERS = {
    "binance": "GET /fapi/v1/openAlgoOrders",
    "bybit": "GET /v5/order/realtime",
}


def place_dead_stop(crash: Crash, symbol: str, client_id: str) -> None:
    """A stop a workflow placed and left behind on a flat `symbol`, as the venue has it.

    Bybit refuses a reduce-only order with no position: the stop was placed while
    the position was open, and stays when it is closed by hand."""
    if crash.sim.bybit is None:
        crash.sim.engine.place_algo(
            symbol,
            "SELL",
            "STOP_MARKET",
            None,
            Decimal(2500),
            close_position=True,
            client_algo_id=client_id,
        )
        return
    crash.sim.open_position(symbol, "BUY", "0.4")
    crash.sim.bybit.create_order(
        {
            "category": "linear",
            "symbol": symbol,
            "side": "Sell",
            "orderType": "Market",
            "qty": "0.4",
            "triggerPrice": "2500",
            "triggerDirection": "2",
            "triggerBy": "MarkPrice",
            "reduceOnly": True,
            "orderLinkId": client_id,
        }
    )
    crash.sim.close_position(symbol)


async def test_a_pass_killed_midway_completes_and_does_nothing_twice(venue_crash: Crash) -> None:
    crash = venue_crash
    sim, account = crash.sim, crash.account
    exchange = EXCHANGES[sim.venue].value
    crash.worker_env.update(
        POSGUARD_RECONCILE__EVERY="1s",
        POSGUARD_RECONCILE__CALL_TIMEOUT="3s",
        POSGUARD_RECONCILE__TRIGGER_DEBOUNCE="100ms",
    )
    # What the pass will find: a position opened by hand, and a stop left by a
    # position of ETHUSDT's workflow that ended long ago (the symbol is flat).
    sim.open_position("SOLUSDT", "BUY", "5")
    dead = client_order_id(
        position_workflow_id(account, exchange, "ETHUSDT"), "ended-run", OrderStep.STOP, 1
    )
    place_dead_stop(crash, "ETHUSDT", dead)
    slow = sim.add_fault("latency", endpoint=OPEN_CONDITIONAL_ORDERS[sim.venue], latency_ms=2000)

    first = await crash.start_worker()  # creates the Schedule; its first pass starts in 1 s

    async def reading() -> bool:
        return slow.hits >= 1

    await until("a pass reading the exchange", reading, crash)
    [killed] = await _passes(crash)  # the pass the kill interrupts
    await first.kill()
    sim.clear_faults()

    await crash.start_worker()
    adopter = position_handle(crash.env.client, account, exchange, "SOLUSDT")
    crash.handles.append(adopter)

    async def done() -> bool:
        adopted = await _events(crash.store, account, "position_adopted")
        cancelled = await _events(crash.store, account, "zombie_cancelled")
        stops = [
            a
            for a in sim.ground_truth()["algoOrders"]
            if a["symbol"] == "SOLUSDT" and a["algoStatus"] == "NEW"
        ]
        return bool(adopted) and bool(cancelled) and len(stops) == 1

    await until("the adoption and the zombie's cancel", done, crash)
    # The killed pass itself completed (Temporal resumed it on the new worker).
    report = await crash.env.client.get_workflow_handle(
        killed, result_type=ReconcileReport
    ).result()
    assert report.error is None
    completed = await _events(crash.store, account, "sync_completed")
    assert killed in {e.correlation_id for e in completed}
    # Done once: one adopting workflow, one adoption, one cancel, one stop.
    runs = [
        wf
        async for wf in crash.env.client.list_workflows(
            f'WorkflowId="{position_workflow_id(account, exchange, "SOLUSDT")}"'
        )
    ]
    assert len(runs) == 1
    assert len(await _events(crash.store, account, "position_adopted")) == 1
    assert len(await _events(crash.store, account, "zombie_cancelled")) == 1
    assert len(await _events(crash.store, account, "untracked_detected")) == 1
    [eth_stop] = [a for a in sim.ground_truth()["algoOrders"] if a["symbol"] == "ETHUSDT"]
    assert eth_stop["algoStatus"] == "CANCELED"
    view = await adopter.query("state", result_type=PositionView)
    assert view.snapshot.state is PositionState.ACTIVE and view.snapshot.qty == Decimal(5)

    await delete_schedule(crash.env.client, account)
    await adopter.execute_update("close", CloseRequest(), result_type=CloseResult)
    await adopter.result()


async def _passes(crash: Crash) -> list[str]:
    """Ids of the passes of the account's Schedule so far."""
    query = (
        'WorkflowType="ReconcileWorkflow" AND '
        f'WorkflowId STARTS_WITH "reconcile/{crash.account}/pass"'
    )
    return [wf.id async for wf in crash.env.client.list_workflows(query)]
