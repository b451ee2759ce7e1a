"""Record the histories that tests/replay/test_replay.py replays (test-only tool).

Runs real scenarios of PositionWorkflow (and one pass of ReconcileWorkflow) on the
real Temporal dev server, with an in-process worker, an embedded PostgreSQL (or
DATABASE_URL) and the paper exchange, and saves each workflow run's history as
JSON in tests/histories/.

    .venv/bin/python tests/replay/record_histories.py            # all scenarios
    .venv/bin/python tests/replay/record_histories.py adopt ...  # only these

Re-record only after an intentional change of the workflow, and keep the old
files of every shape still running in production (see tests/histories/README.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from pydantic import SecretStr  # noqa: E402
from temporalio.client import WorkflowHandle  # noqa: E402
from temporalio.testing import WorkflowEnvironment  # noqa: E402

from activities.store import alert_rows  # noqa: E402
from activities.store.repository import Store  # noqa: E402
from domain.alerts import AlertChannel, condition_key, condition_workflow_id  # noqa: E402
from domain.position import PositionState, position_workflow_id  # noqa: E402
from domain.protection import ProtectionPolicy  # noqa: E402
from domain.reconcile_io import ReconcileReport, reconcile_schedule_id  # noqa: E402
from domain.records import signal_record  # noqa: E402
from domain.signal_wire import Accepted  # noqa: E402
from domain.signals import Signal, SignalAction, wave_start  # noqa: E402
from domain.sizing import TakeProfitRule  # noqa: E402
from domain.trailing import TrailingRule  # noqa: E402
from domain.types import ExchangeId, Side  # noqa: E402
from domain.wave_io import ADD_SIGNALS, WaveResult, WaveSignals, wave_workflow_id  # noqa: E402
from simulator.alert_sink import AlertSink  # noqa: E402
from tests.workflows.harness import QUICK, Stack, live_stack, spec  # noqa: E402
from workers.embedded import find_binary, start_postgres  # noqa: E402
from workers.ingest import wave_input_of  # noqa: E402
from workers.schedules import reconcile_input  # noqa: E402
from workers.settings import AlertSettings, WaveSettings  # noqa: E402
from workers.temporal import DATA_CONVERTER  # noqa: E402
from workflows.position import UNPROTECTED, PositionWorkflow  # noqa: E402
from workflows.position_io import (  # noqa: E402
    CloseRequest,
    ExchangeUpdate,
    PriceTick,
)
from workflows.reconcile import ReconcileWorkflow  # noqa: E402
from workflows.search_attributes import ALL_KEYS  # noqa: E402
from workflows.wave import WaveWorkflow  # noqa: E402

HISTORIES = ROOT / "tests" / "histories"
PRICES = {
    "BTCUSDT": "60000",
    "ETHUSDT": "3000",
    "SOLUSDT": "150",
    "BNBUSDT": "600",
    "XRPUSDT": "0.6",
    "DOGEUSDT": "0.15",
    "ADAUSDT": "0.5",
    "LINKUSDT": "15",
}
Handle = WorkflowHandle[Any, Any]
Scenario = Callable[[Stack], Awaitable[list[tuple[str, Handle]]]]


async def _active(stack: Stack, handle: Handle) -> None:
    view = await stack.wait_state(handle, PositionState.ACTIVE)
    if view.snapshot.state is not PositionState.ACTIVE:
        raise RuntimeError(f"{handle.id}: not active but {view.snapshot.state}")


async def _settled(stack: Stack, handle: Handle, done: Callable[[Any], bool]) -> None:
    view = await stack.wait_for(handle, done)
    if not done(view):
        raise RuntimeError(f"{handle.id}: did not settle ({view.snapshot.state})")


async def _quiet(handle: Handle) -> None:
    """Wait until the workflow has no activity in flight (it is waiting for news)."""
    for _ in range(200):
        described = await handle.describe()
        if not described.raw_description.pending_activities:
            return
        await asyncio.sleep(0.05)
    raise RuntimeError(f"{handle.id}: activities still pending")


async def _look(stack: Stack, handle: Handle, detail: str) -> None:
    """Signal an exchange update and wait until the workflow has looked (history grew)."""
    view = await stack.view(handle)
    before, runs = view.history_length, view.runs
    await handle.signal(PositionWorkflow.exchange_update, ExchangeUpdate(detail=detail))
    # The look may end the run (continue-as-new): the new run's history starts over.
    await _settled(stack, handle, lambda v: v.history_length >= before + 8 or v.runs > runs)
    await asyncio.sleep(0.3)


async def happy_path_long(stack: Stack) -> list[tuple[str, Handle]]:
    """Entry, stop, price ticks, a look, a resize after quantity added by hand, operator close."""
    symbol = "BTCUSDT"
    handle = await stack.open(spec(symbol, Side.LONG))
    await _active(stack, handle)
    for price in ("60500", "61000", "59000"):
        await handle.execute_update(
            PositionWorkflow.price, PriceTick(price=Decimal(price), at=datetime.now(UTC))
        )
    await _look(stack, handle, "nothing changed")
    qty = (await stack.view(handle)).snapshot.qty
    stack.sim.open_position(symbol, "BUY", Decimal("0.005"))
    await handle.signal(PositionWorkflow.exchange_update, ExchangeUpdate(detail="qty added"))
    await _settled(
        stack,
        handle,
        lambda v: v.snapshot.stop is not None and v.snapshot.stop.qty == qty + Decimal("0.005"),
    )
    await asyncio.sleep(0.5)  # the old stop's cancel
    await handle.execute_update(PositionWorkflow.close, CloseRequest(requested_by="recorder"))
    await handle.result()
    return [("happy_path_long", handle)]


async def trailing_long(stack: Stack) -> list[tuple[str, Handle]]:
    """A trailing stop: activation, moves (new stop first, as a local activity, old
    cancelled), a parameter change, then the trailed stop closes the position."""
    symbol = "SOLUSDT"
    rule = TrailingRule(callback_pct=Decimal(1), activation_pct=Decimal("0.5"))
    handle = await stack.open(spec(symbol, Side.LONG, trailing=rule))
    await _active(stack, handle)
    entry = (await stack.view(handle)).snapshot.avg_entry_price
    assert entry is not None
    for step in range(1, 9):
        price = (entry * (1 + Decimal("0.004") * step)).quantize(Decimal("0.01"))
        stack.sim.set_price(symbol, price)
        await handle.execute_update(
            PositionWorkflow.price, PriceTick(price=price, at=datetime.now(UTC))
        )
    await handle.execute_update(
        PositionWorkflow.set_trailing,
        TrailingRule(callback_pct=Decimal("0.8"), activation_pct=Decimal("0.5")),
    )
    stop = (await stack.view(handle)).snapshot.stop_price
    assert stop is not None and stop > entry
    stack.sim.set_price(symbol, stop - 1)
    await handle.signal(PositionWorkflow.exchange_update, ExchangeUpdate(detail="stop filled"))
    await handle.result()
    stack.sim.set_price(symbol, PRICES[symbol])
    return [("trailing_long", handle)]


async def operator_close_ended_with_reason(stack: Stack) -> list[tuple[str, Handle]]:
    """`operator_close` after the patch `close-reason-attribute`: the ended run sets
    its CloseReason search attribute with its last state."""
    [(_, handle)] = await operator_close(stack)
    return [("operator_close_ended_with_reason", handle)]


async def trailing_long_bybit(stack: Stack) -> list[tuple[str, Handle]]:
    """`trailing_long` on Bybit: every move amends the one stop in place (the
    `exchange.amend_stop` local activity; no second stop, nothing cancelled)."""
    [(_, handle)] = await trailing_long(stack)
    return [("trailing_long_bybit", handle)]


async def fired_stop_taken_bybit(stack: Stack) -> list[tuple[str, Handle]]:
    """Bybit: the entry's answer is lost and the stop-loss it came with fires before the
    workflow finds the entry. The saga takes that fired stop-loss as its stop, and a
    look books it at once, with no take-profit tried (patch `fired-stop-booked-at-once`)."""
    symbol = "BNBUSDT"
    entries = len(stack.orders(symbol, algo=False))
    stack.sim.add_fault(
        "delay_response", endpoint="POST /v5/order/create", latency_ms=4000, count=1
    )
    try:
        handle = await stack.open(
            spec(symbol, Side.LONG, take_profit=TakeProfitRule(percent=Decimal(3))),
            exchange_attempts=1,
            exchange_call_timeout=timedelta(seconds=2),
            entry_call_timeout=timedelta(seconds=2),
        )
        for _ in range(200):  # the entry has filled: through its stop-loss
            placed = stack.orders(symbol, algo=False)
            if len(placed) > entries and placed[-1]["status"] == "FILLED":
                break
            await asyncio.sleep(0.02)
        stack.sim.set_price(symbol, "560")
        await handle.result()
    finally:
        stack.sim.clear_faults()
        stack.sim.set_price(symbol, PRICES[symbol])
    return [("fired_stop_taken_bybit", handle)]


async def stop_filled_short(stack: Stack) -> list[tuple[str, Handle]]:
    """A short whose stop fires on the exchange; the user stream says so; closed."""
    symbol = "ETHUSDT"
    handle = await stack.open(spec(symbol, Side.SHORT))
    await _active(stack, handle)
    view = await stack.view(handle)
    assert view.snapshot.stop_price is not None
    stack.sim.set_price(symbol, view.snapshot.stop_price * Decimal("1.01"))
    await handle.signal(PositionWorkflow.exchange_update, ExchangeUpdate(detail="stop filled"))
    await handle.result()
    stack.sim.set_price(symbol, PRICES[symbol])
    return [("stop_filled_short", handle)]


async def rollback_stop_beyond_mark(stack: Stack) -> list[tuple[str, Handle]]:
    """The first stop would trigger at once (-2021): closed at market, rolled back."""
    rule = stack.sim.add_fault(
        "error",
        endpoint="POST /fapi/v1/algoOrder",
        symbol="SOLUSDT",
        code=-2021,
        msg="Order would immediately trigger.",
    )
    try:
        handle = await stack.open(spec("SOLUSDT", Side.LONG))
        await handle.result()
    finally:
        stack.sim.faults.remove(rule.id)
    return [("rollback_stop_beyond_mark", handle)]


async def rollback_stop_unplaceable(stack: Stack) -> list[tuple[str, Handle]]:
    """Every stop attempt refused (InvalidOrder): closed at market, rolled back."""
    rule = stack.sim.add_fault(
        "error",
        endpoint="POST /fapi/v1/algoOrder",
        symbol="BNBUSDT",
        code=-4164,
        msg="Order's notional must be no smaller than 5.0",
    )
    try:
        handle = await stack.open(spec("BNBUSDT", Side.SHORT))
        await handle.result()
    finally:
        stack.sim.faults.remove(rule.id)
    return [("rollback_stop_unplaceable", handle)]


async def closed_by_hand(stack: Stack) -> list[tuple[str, Handle]]:
    """A long closed by hand on the exchange: the workflow reads what closed it and
    books that order's fill (patch `book-outside-exit`), then the funding while held
    (patch `book-funding`)."""
    symbol = "XRPUSDT"
    handle = await stack.open(spec(symbol, Side.LONG))
    await _active(stack, handle)
    stack.sim.close_position(symbol)
    await handle.signal(PositionWorkflow.exchange_update, ExchangeUpdate(detail="ACCOUNT_UPDATE"))
    await handle.result()
    return [("closed_by_hand", handle)]


async def cancel_found_filled(stack: Stack) -> list[tuple[str, Handle]]:
    """A stop of ours the workflow does not know (as a lost workflow task leaves one)
    is cancelled at a look, but fills while the cancel is held at the exchange: the
    cancel's answer is booked as that stop's fill and close (patch
    `cancel-fill-booked`)."""
    symbol = "LINKUSDT"
    handle = await stack.open(spec(symbol, Side.LONG))
    await _active(stack, handle)
    view = await stack.view(handle)
    stop = view.snapshot.stop
    assert stop is not None and stop.trigger_price is not None
    level = (stop.trigger_price * Decimal("1.01")).quantize(Decimal("0.001"))
    stack.place_lost_stop(view, level)
    held = stack.sim.add_fault(
        "latency", endpoint="DELETE /fapi/v1/algoOrder", latency_ms=2500, count=1
    )
    await handle.signal(PositionWorkflow.exchange_update, ExchangeUpdate(detail="test"))
    for _ in range(100):
        if held.hits:
            break
        await asyncio.sleep(0.05)
    stack.sim.set_price(symbol, ((level + stop.trigger_price) / 2).quantize(Decimal("0.001")))
    await handle.result()
    return [("cancel_found_filled", handle)]


async def stale_stop_filled(stack: Stack) -> list[tuple[str, Handle]]:
    """A trailing move's new stop is executed with its answer lost and cannot be looked
    up: it goes on the stale list; the look's cancel of it is held at the exchange
    while the price falls through it, so the cancel finds it executed and the close is
    booked as that stop's fill (patch `stale-exit-booked`)."""
    symbol = "SOLUSDT"
    stack.sim.set_price(symbol, "150")
    rule = TrailingRule(callback_pct=Decimal(1), activation_pct=Decimal("0.5"))
    handle = await stack.open(
        spec(symbol, Side.LONG, trailing=rule), check_interval=timedelta(hours=6)
    )
    await _active(stack, handle)
    view = await stack.view(handle)
    entry, first = view.snapshot.avg_entry_price, view.snapshot.stop_price
    assert entry is not None and first is not None
    stack.sim.add_fault("drop_response", endpoint="POST /fapi/v1/algoOrder", count=1)
    stack.sim.add_fault("http_status", endpoint="GET /fapi/v1/algoOrder", status=502, count=4)
    held = stack.sim.add_fault("latency", endpoint="DELETE /fapi/v1/algoOrder", latency_ms=3000)
    up = (entry * Decimal("1.02")).quantize(Decimal("0.01"))
    stack.sim.set_price(symbol, up)
    await handle.execute_update(PositionWorkflow.price, PriceTick(price=up, at=datetime.now(UTC)))
    mine = [a for a in stack.orders_of(view, algo=True) if a["algoStatus"] == "NEW"]
    new = max(mine, key=lambda a: Decimal(a["triggerPrice"]))
    for _ in range(200):
        if held.hits:
            break
        await asyncio.sleep(0.05)
    stack.sim.set_price(symbol, (Decimal(new["triggerPrice"]) + first) / 2)
    stack.sim.clear_faults()
    await handle.result()
    return [("stale_stop_filled", handle)]


async def own_stop_filled(stack: Stack) -> list[tuple[str, Handle]]:
    """The entry's stop is executed with its answer lost and its look-ups failing; the
    saga retries it, fails, and closes at market, but the price went through the stop
    first: the flat position's trade history names the stop, booked as `stop_filled`
    (patch `own-exit-booked`)."""
    symbol = "BNBUSDT"
    stack.sim.set_price(symbol, "600")
    lost = stack.fault("drop_response", "stop", count=1)
    stack.sim.add_fault(
        "http_status", endpoint="GET /fapi/v1/algoOrder", status=502, duration_ms=6000
    )
    handle = await stack.open(spec(symbol, Side.LONG), check_interval=timedelta(hours=6))
    for _ in range(200):
        if lost.hits:
            break
        await asyncio.sleep(0.05)
    stack.sim.set_price(symbol, "540")
    await handle.result()
    stack.sim.set_price(symbol, "600")
    return [("own_stop_filled", handle)]


async def operator_close(stack: Stack) -> list[tuple[str, Handle]]:
    """Entry, stop, then the operator's `close` update at once."""
    handle = await stack.open(spec("XRPUSDT", Side.LONG))
    await _active(stack, handle)
    await handle.execute_update(PositionWorkflow.close, CloseRequest(requested_by="operator"))
    await handle.result()
    return [("operator_close", handle)]


async def entry_never_found(stack: Stack) -> list[tuple[str, Handle]]:
    """The entry's request fails (502, nothing executed): the entry is looked up over
    the window of waits between look-ups (patch `entry-lookups-counted`), never
    found, and the position rolled back."""
    stack.sim.add_fault("http_status", endpoint="POST /fapi/v1/order", status=502, count=1)
    try:
        handle = await stack.open(spec("ADAUSDT", Side.LONG), exchange_attempts=1)
        await handle.result()
    finally:
        stack.sim.clear_faults()
    return [("entry_never_found", handle)]


async def operator_cancel(stack: Stack) -> list[tuple[str, Handle]]:
    """`temporal workflow cancel`: the position is closed, the workflow ends cancelled."""
    handle = await stack.open(spec("DOGEUSDT", Side.SHORT))
    await _active(stack, handle)
    # A cancel that lands while an exchange activity is in flight is swallowed
    # today (see the report on PositionWorkflow._call): record the settled case.
    await _quiet(handle)
    await handle.cancel()
    try:
        await handle.result()
    except Exception:  # WorkflowFailureError(CancelledError): expected
        pass
    return [("operator_cancel", handle)]


async def adopt(stack: Stack) -> list[tuple[str, Handle]]:
    """A position opened outside posguard is adopted, protected, then closed."""
    symbol = "ADAUSDT"
    stack.sim.open_position(symbol, "BUY", Decimal(2000))
    handle = await stack.open(spec(symbol, Side.LONG, adopt=True))
    await _active(stack, handle)
    await handle.execute_update(PositionWorkflow.close, CloseRequest(requested_by="operator"))
    await handle.result()
    return [("adopt", handle)]


async def continue_as_new(stack: Stack) -> list[tuple[str, Handle]]:
    """Looks until the history limit makes the workflow continue as new; both runs kept."""
    handle = await stack.open(spec("LINKUSDT", Side.LONG), max_history_events=100)
    await _active(stack, handle)
    for n in range(40):
        view = await stack.view(handle)
        if view.runs >= 2:
            break
        await _look(stack, handle, f"look {n}")
    else:
        raise RuntimeError("no continue-as-new after 40 looks")
    await handle.execute_update(PositionWorkflow.close, CloseRequest(requested_by="operator"))
    await handle.result()
    first = stack.client.get_workflow_handle(handle.id, run_id=view.position_id.rsplit("/")[-1])
    return [("continue_as_new_run1", first), ("continue_as_new_run2", handle)]


async def reconcile_pass(stack: Stack) -> list[tuple[str, Handle]]:
    """One ReconcileWorkflow pass that finds and acts: a position opened by hand is
    adopted; the stop a terminated workflow left on a position closed by hand is a
    zombie, cancelled, and its store row a phantom, closed; a limit order placed by
    hand is a foreign order, reported. The adopter is then closed."""
    account = stack.settings.accounts[0]
    # A workflow killed by hand; the trader then closes its position in the UI.
    killed = await stack.open(spec("ETHUSDT", Side.LONG))
    await _active(stack, killed)
    await killed.terminate("recorder: a workflow killed by hand")
    stack.sim.close_position("ETHUSDT")
    # A position opened by hand, and a limit order far from the market.
    stack.sim.open_position("DOGEUSDT", "SELL", Decimal(8000))
    order = stack.sim.engine.place_order(
        "XRPUSDT", "BUY", "LIMIT", Decimal(100), Decimal("0.3"), source="manual"
    )
    handle: Handle = await stack.client.start_workflow(
        ReconcileWorkflow.run,
        reconcile_input(stack.settings, account),
        id=f"{reconcile_schedule_id(account.name)}/now/recorder",
        task_queue=stack.settings.task_queue,
        execution_timeout=timedelta(minutes=2),
    )
    report: ReconcileReport = await handle.result()
    done = {(o.finding.kind.value, o.finding.symbol, o.outcome.value) for o in report.findings}
    wanted = {
        ("untracked", "DOGEUSDT", "done"),
        ("zombie", "ETHUSDT", "done"),
        ("phantom_row", "ETHUSDT", "done"),
        ("foreign_order", "XRPUSDT", "reported"),
    }
    if report.error or not wanted <= done:
        raise RuntimeError(f"{handle.id}: not the pass wanted: {report.error or sorted(done)}")
    adopter = stack.client.get_workflow_handle(
        position_workflow_id(account.name, account.exchange, "DOGEUSDT")
    )
    await _active(stack, adopter)
    await adopter.execute_update(PositionWorkflow.close, CloseRequest(requested_by="recorder"))
    await adopter.result()
    stack.sim.cancel_order(order.order_id)
    # Written beside `reconcile_pass`, the shape from before patch untracked-read-again.
    return [("reconcile_pass_read_again", handle)]


async def wave(stack: Stack) -> list[tuple[str, Handle]]:
    """One WaveWorkflow: six stored signals, fed by signal-with-start as the ingest
    does; two open positions (started as children), the others are filtered (scores,
    a duplicate symbol, an action that opens nothing). The positions are then closed."""
    now = datetime.now(UTC)
    rows = [
        ("1", "SOLUSDT", "BUY", 90),
        ("2", "BNBUSDT", "SELL", 80),
        ("3", "SOLUSDT", "SELL", 70),
        ("4", "XRPUSDT", "BUY", 10),
        ("5", "DOGEUSDT", "HOLD", 95),
        ("6", "NOPEUSDT", "BUY", 99),
    ]
    signals = [
        Signal(
            service="recorder",
            signal_id=f"{now:%H%M%S%f}-{sid}",
            exchange=ExchangeId.BINANCE_USDM,
            symbol=symbol,
            action=SignalAction(action),
            score_week=Decimal(score),
            score_month=Decimal(score),
            at=now,
            received_at=now,
        )
        for sid, symbol, action, score in rows
    ]
    await stack.store.store_signals([signal_record(Accepted(signal=s), now) for s in signals])
    settings = stack.settings.model_copy(
        update={
            "waves": WaveSettings(
                window=timedelta(seconds=1),
                min_score_week=Decimal(50),
                min_score_month=Decimal(50),
                notional_per_position=Decimal(1200),
                min_free_balance=Decimal(0),
            )
        }
    )
    account = stack.settings.accounts[0].name
    period = wave_start(now, timedelta(minutes=15))
    handle: Handle = await stack.client.start_workflow(
        WaveWorkflow.run,
        wave_input_of(settings, lambda _: stack.config)(account, period),
        id=wave_workflow_id(account, period) + f"/recorder-{now:%H%M%S}",
        task_queue=stack.settings.task_queue,
        start_signal=ADD_SIGNALS,
        start_signal_args=[WaveSignals(signals=signals)],
    )
    result: WaveResult = await handle.result()
    if sorted(result.opened) != sorted(
        position_workflow_id(account, ExchangeId.BINANCE_USDM, s) for s in ("SOLUSDT", "BNBUSDT")
    ):
        raise RuntimeError(f"{handle.id}: not the wave wanted: {result}")
    for workflow_id in result.opened:
        position = stack.client.get_workflow_handle(workflow_id)
        await _active(stack, position)
        await position.execute_update(PositionWorkflow.close, CloseRequest(requested_by="recorder"))
        await position.result()
    return [("wave", handle)]


async def unprotected_alerted(stack: Stack) -> list[tuple[str, Handle]]:
    """Stop and close refused round after round ("position unprotected" raised, and
    its condition's AlertWorkflow sends it and a reminder); the exchange recovers,
    the stop is placed and the condition resolved (patch `alert-resolution`)."""
    symbol = "ADAUSDT"
    stop = stack.sim.add_fault(
        "error", endpoint="POST /fapi/v1/algoOrder", symbol=symbol, code=-1001, msg="busy"
    )
    handle = await stack.open(spec(symbol, Side.LONG), exchange_attempts=1)
    position_id = (await stack.view(handle)).position_id
    for _ in range(200):  # the entry fills; from then on the close is refused too
        if any(o["status"] == "FILLED" for o in stack.orders(symbol, algo=False)):
            break
        await asyncio.sleep(0.02)
    close = stack.sim.add_fault(
        "error", endpoint="POST /fapi/v1/order", symbol=symbol, code=-1001, msg="busy"
    )
    condition = condition_key(UNPROTECTED, position_id)

    async def reminded() -> bool:
        rows = await alert_rows.deliveries(stack.store, condition)
        return any(r["kind"] == "reminder" and r["status"] == "sent" for r in rows)

    try:
        for _ in range(600):
            if await reminded():
                break
            await asyncio.sleep(0.1)
        else:
            raise RuntimeError("no reminder of the unprotected position")
    finally:
        stack.sim.faults.remove(stop.id)
        stack.sim.faults.remove(close.id)
    await _active(stack, handle)
    alert = stack.client.get_workflow_handle(condition_workflow_id(condition))
    await alert.result()
    await handle.execute_update(PositionWorkflow.close, CloseRequest(requested_by="operator"))
    await handle.result()
    return [("unprotected_alerted", handle), ("alert_condition", alert)]


async def emergency_stop_replaced(stack: Stack) -> list[tuple[str, Handle]]:
    """The stop is refused and so is the close: an emergency stop protects. The
    exchange recovers, the real stop is placed, and the emergency stop is cancelled at
    once (patch `emergency-stop-goes-at-once`); operator close."""
    symbol = "SOLUSDT"
    stack.fault("latency", "stop", latency_ms=1500, count=1)
    stack.refuse("stop", "invalid_order", count=1)
    handle = await stack.open(
        spec(symbol, Side.LONG), exchange_attempts=1, check_interval=timedelta(hours=6)
    )
    for _ in range(200):  # the entry filled: now the close is refused too
        if any(o["status"] == "FILLED" for o in stack.orders(symbol, algo=False)):
            break
        await asyncio.sleep(0.02)
    close = stack.refuse("order", "server_error")
    try:
        await _settled(stack, handle, lambda v: v.snapshot.emergency_stop is not None)
    finally:
        stack.sim.faults.remove(close.id)
    await handle.signal(PositionWorkflow.exchange_update, ExchangeUpdate(detail="test"))
    await _active(stack, handle)
    for _ in range(200):
        if len(stack.open_stops(symbol)) == 1:
            break
        await asyncio.sleep(0.05)
    else:
        raise RuntimeError("the emergency stop was not cancelled")
    await _quiet(handle)
    await handle.execute_update(PositionWorkflow.close, CloseRequest(requested_by="operator"))
    await handle.result()
    return [("emergency_stop_replaced", handle)]


SCENARIOS: dict[str, Scenario] = {
    f.__name__: f
    for f in (
        happy_path_long,
        trailing_long,
        stop_filled_short,
        rollback_stop_beyond_mark,
        rollback_stop_unplaceable,
        operator_close,
        operator_cancel,
        adopt,
        continue_as_new,
        reconcile_pass,
        wave,
        unprotected_alerted,
        trailing_long_bybit,
        operator_close_ended_with_reason,
        closed_by_hand,
        cancel_found_filled,
        emergency_stop_replaced,
        stale_stop_filled,
        own_stop_filled,
        entry_never_found,
        fired_stop_taken_bybit,
    )
}
BYBIT = frozenset({"trailing_long_bybit", "fired_stop_taken_bybit"})
"""Scenarios recorded against the paper exchange's Bybit venue."""


async def record(names: list[str]) -> None:
    pg_url = os.environ.get("DATABASE_URL")
    if not pg_url:
        parent = Path(tempfile.mkdtemp(prefix="posguard-record-pg-"))
        parent.chmod(0o755)
        pg_url = start_postgres(parent / "data", delete_on_exit=True)
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=find_binary("temporal"),
        data_converter=DATA_CONVERTER,
        search_attributes=list(ALL_KEYS),
        dev_server_log_level="error",
    )
    try:
        store = await Store.connect(pg_url)
    except BaseException:
        await env.shutdown()
        raise
    sink = await AlertSink().start()
    alerts = {
        "alert_channels": [
            AlertChannel(name="record", kind="webhook", url=SecretStr(sink.webhook_url))
        ],
        "alerts": AlertSettings(remind_every=timedelta(seconds=2)),
    }
    try:
        for venue in ("binance", "bybit"):
            chosen = [n for n in names if (n in BYBIT) == (venue == "bybit")]
            if chosen:
                await _record_on(venue, chosen, env, pg_url, store, alerts)
    finally:
        await sink.stop()
        await store.close()
        await env.shutdown()


async def _record_on(
    venue: str,
    names: list[str],
    env: WorkflowEnvironment,
    pg_url: str,
    store: Store,
    alerts: dict[str, Any],
) -> None:
    """Run `names` on one stack whose paper exchange serves `venue`; write each history."""
    async with live_stack(
        env.client,
        pg_url,
        store,
        settings=alerts,
        name=f"record-{venue}",
        account="paper",
        exchange={"venue": venue, "symbols": list(PRICES)},
        check_interval=timedelta(minutes=10),
        config={
            **QUICK,
            "protection": ProtectionPolicy(
                retry_delay=timedelta(milliseconds=100), round_delay=timedelta(seconds=2)
            ),
        },
    ) as stack:
        for symbol, price in PRICES.items():
            stack.sim.set_price(symbol, price)
        HISTORIES.mkdir(parents=True, exist_ok=True)
        for name in names:
            for file, handle in await asyncio.wait_for(SCENARIOS[name](stack), 120):
                history = await handle.fetch_history()
                text = json.dumps(json.loads(history.to_json()), indent=1) + "\n"
                path = HISTORIES / f"{file}.json"
                path.write_text(text)
                print(f"{path.relative_to(ROOT)}: {len(history.events)} events")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("scenarios", nargs="*", choices=[[], *SCENARIOS], default=[])
    args = parser.parse_args()
    asyncio.run(record(args.scenarios or list(SCENARIOS)))


if __name__ == "__main__":
    main()
