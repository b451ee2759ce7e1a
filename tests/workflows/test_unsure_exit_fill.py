"""Regression test (found by the chaos suite, bench/chaos.py --harsh): a stop of the
position whose placement's outcome the workflow never learned, and that then closed
the position, is booked as the stop fill it was.

The entry fills; its stop is executed by the exchange but the answer is lost, and
every look-up of it fails for a while: the stop-loss saga retries it under the same
id, fails, and goes on to close at market. Meanwhile the price falls through the
stop and the exchange closes the position with it. The close finds the position flat
and no exit order it knew of filled. Before the fix it booked a close outside
posguard ("external"), with the stop's fill, fee and PnL missing and no event naming
the stop. Now the exchange's trade history names the stop (one of this position's
own client ids): it is booked as `stop_filled`, with its placement and its fill.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.enums.v1 import EventType as HistoryEventType
from temporalio.api.enums.v1 import ResetReapplyType
from temporalio.api.workflowservice.v1 import ResetWorkflowExecutionRequest

from domain.events import event_id
from domain.position import CloseReason, PositionState
from domain.position_messages import ExchangeUpdate
from domain.trailing import TrailingRule
from domain.types import Side
from tests.workflows.harness import Stack, eventually, spec
from workflows.position import PositionWorkflow
from workflows.position_io import CloseResult, PriceTick

QUIET = {"check_interval": timedelta(hours=6)}  # only what the test does reaches it


@pytest.mark.parametrize("side", list(Side))
async def test_a_stop_never_known_placed_that_closed_the_position_is_booked(
    stack: Stack, side: Side
) -> None:
    symbol = "BNBUSDT"
    stack.sim.set_price(symbol, "600")
    lost = stack.fault("drop_response", "stop", count=1)
    stack.sim.add_fault(
        "http_status", endpoint="GET /fapi/v1/algoOrder", status=502, duration_ms=6000
    )
    handle = await stack.open(stack.on(symbol, side), **QUIET)
    assert await eventually(lambda: _true(lost.hits >= 1))
    # The stop is on the exchange; the workflow does not know it. The price goes
    # through it before the saga's close at market.
    stack.sim.set_price(symbol, "540" if side is Side.LONG else "660")
    assert await eventually(lambda: _true(stack.position_amt(symbol) == 0))

    result = await handle.result()
    view = await stack.view(handle)
    assert result.state is PositionState.CLOSED
    assert result.reason is CloseReason.STOP_FILLED, result
    await stack.books_match(view, result)
    [stop] = [a for a in stack.orders_of(view, algo=True) if a["orderType"] == "STOP_MARKET"]
    events = await stack.store.events(position_id=view.position_id, limit=1000)
    named = {
        (e.type.value, e.payload.get("client_order_id"))
        for e in events
        if e.type.value in ("sl_placed", "stop_triggered")
    }
    assert ("sl_placed", stop["clientAlgoId"]) in named
    assert ("stop_triggered", stop["clientAlgoId"]) in named
    assert [o for o in stack.orders_of(view, algo=True) if o["algoStatus"] == "NEW"] == []


async def _true(value: bool) -> bool:
    return value


RULE = TrailingRule(callback_pct=Decimal(1), activation_pct=Decimal("0.5"))


@pytest.mark.parametrize("written", [True, False], ids=["move-recorded", "task-frozen"])
async def test_a_trailing_moves_stop_a_reset_forgot_that_closed_the_position_is_booked(
    stack: Stack, written: bool
) -> None:
    """The same for a trailing move's new stop (its id's step `mv`), as a reset of the
    run leaves it (found by the harsh chaos suite: two positions never closed). A move
    placed its new stop and cancelled the old one; the run is then reset to before the
    move (as the frozen-workflow watch resets one; here without the price tick again),
    so the workflow holds the cancelled old stop as its own and knows nothing of the
    new one. The price falls through the new stop, which closes the position. The
    workflow's look finds it flat; the trade history names the move's stop, which gets
    its orders row (its level read back from the exchange) with its fill, which
    references the row: before the fix that write failed for ever and the workflow
    never ended. `task-frozen`: the move's task never completed (as a frozen one), so
    nothing it would have written reached the store: the placement, the move's events
    and its orders row; only the journal row its activity wrote before sending."""
    symbol = "SOLUSDT"
    stack.sim.set_price(symbol, "150")
    handle = await stack.open(spec(symbol, Side.LONG, trailing=RULE), **QUIET)
    view = await stack.wait_state(handle, PositionState.ACTIVE)
    entry, first = view.snapshot.avg_entry_price, view.snapshot.stop_price
    assert entry is not None and first is not None and view.snapshot.stop is not None
    old_cid = view.snapshot.stop.client_order_id
    history = await handle.fetch_history()
    before_move = max(
        e.event_id
        for e in history.events
        if e.event_type == HistoryEventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED
    )
    up = (entry * Decimal("1.02")).quantize(Decimal("0.01"))
    stack.sim.set_price(symbol, up)
    await handle.execute_update(PositionWorkflow.price, PriceTick(price=up, at=datetime.now(UTC)))
    [moved] = [a for a in stack.orders_of(view, algo=True) if a["algoStatus"] == "NEW"]
    assert "-mv-" in moved["clientAlgoId"] and Decimal(moved["triggerPrice"]) > first

    if not written:
        await _forget_writes_after(stack, view.position_id, before_seq=7, order=moved)
    described = await handle.describe()
    await stack.client.workflow_service.reset_workflow_execution(
        ResetWorkflowExecutionRequest(
            namespace=stack.client.namespace,
            workflow_execution=WorkflowExecution(workflow_id=handle.id, run_id=described.run_id),
            reason="test: back to before the trailing move",
            workflow_task_finish_event_id=before_move,
            request_id=str(uuid.uuid4()),
            reset_reapply_type=ResetReapplyType.RESET_REAPPLY_TYPE_NONE,
        )
    )
    latest = stack.client.get_workflow_handle(handle.id, result_type=CloseResult)
    forgot = await stack.view(latest)
    assert forgot.snapshot.stop is not None
    assert forgot.snapshot.stop.client_order_id == old_cid  # cancelled on the exchange
    # The price falls between the two levels: the move's stop closes the position.
    stack.sim.set_price(symbol, (Decimal(moved["triggerPrice"]) + first) / 2)
    assert stack.position_amt(symbol) == 0
    await latest.signal(PositionWorkflow.exchange_update, ExchangeUpdate(source="test"))

    result = await latest.result()
    assert result.state is PositionState.CLOSED
    assert result.reason is CloseReason.STOP_FILLED, result
    await stack.books_match(view, result)
    row = await stack.store.journaled_order(moved["clientAlgoId"])
    assert row is not None and row.position_id == view.position_id
    [order] = [
        o
        for o in await stack.store.orders(view.position_id)
        if o.client_order_id == moved["clientAlgoId"]
    ]
    assert order.trigger_price == Decimal(moved["triggerPrice"])
    cid = moved["clientAlgoId"]
    events = await stack.store.events(position_id=view.position_id, limit=1000)
    named = {(e.type.value, e.payload.get("client_order_id")) for e in events}
    assert ("stop_triggered", moved["clientAlgoId"]) in named, "\n".join(
        f"{e.event_id} {e.type.value} {e.payload}" for e in events
    )
    assert [o for o in stack.orders_of(view, algo=True) if o["algoStatus"] == "NEW"] == []
    if written:
        # The reset branch numbered its events again from the reset point: the facts
        # the dropped branch recorded under those numbers stay (the move's placement),
        # and the new branch's (its fill, what followed) are kept too, marked.
        assert ("trailing_stop_moved", moved["clientAlgoId"]) in named
        assert any("~" in e.event_id and e.type.value == "stop_triggered" for e in events)
    else:  # found in the trade history, nothing of it stored before: its fill, once
        kinds = [e.type.value for e in events if e.payload.get("client_order_id") == cid]
        assert kinds == ["stop_triggered"], kinds
    stored = await stack.store.get_position(view.position_id)
    assert stored is not None and stored.status == "closed"
    assert stored.exit_reason == CloseReason.STOP_FILLED.value


async def _forget_writes_after(
    stack: Stack, position_id: str, *, before_seq: int, order: dict[str, Any]
) -> None:
    """Take out of the store what the position wrote from its event `before_seq` on,
    and `order`'s row: what a task that froze before completing never wrote."""
    cid = order["clientAlgoId"]
    async with stack.store.pool.acquire() as conn:
        await conn.execute("DELETE FROM orders WHERE client_order_id = $1", cid)
        ids = [
            r["event_id"]
            for r in await conn.fetch(
                "SELECT event_id FROM events WHERE position_id = $1 AND event_id >= $2",
                position_id,
                event_id(position_id, before_seq),
            )
        ]
        await conn.execute("DELETE FROM events WHERE event_id = ANY($1)", ids)
        await conn.execute("DELETE FROM event_ids WHERE event_id = ANY($1)", ids)
    assert await stack.store.journaled_order(cid) is not None  # written before the send
