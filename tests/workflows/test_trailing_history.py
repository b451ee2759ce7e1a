"""A whole day of one trailing position: history stays bounded, the trail survives CAN.

The position workflow runs on the time-skipping server (tests/workflows harness:
real worker, real PostgreSQL, the paper exchange through ccxt). 86,400 one-second
mark prices of a seeded random walk go through a `PriceGate` in this process, whose
waker sends the `price` update, so only band crossings reach the workflow; Temporal
time is advanced along with the walk (`time_skipping_env.sleep` between batches of
one minute), so the workflow's periodic looks and its trailing timers (the end of
`min_interval`) fire as they would in a real day.

The paper exchange is only told the price on a crossing (the waker calls
`sim.set_price` just before the update). That is exact for what the exchange
decides: a stop can only fire at a price at or beyond the live stop, and the live
stop is a bound of the band, so every price that would fire it is a crossing and
reaches the exchange; a new stop is placed only after a crossing, with the
exchange's mark at that crossing price, so -2021 is judged as it would be live.
Pushing all 86,400 prices through the simulator's HTTP/WS layer would only add
minutes of ticks that change nothing.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from datetime import timedelta
from decimal import Decimal
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from domain.events import EventType as PosEventType
from domain.position import CloseReason, PositionState
from domain.trailing import TrailingRule
from domain.types import Side
from signals_ingest.price_gate import PriceGate
from signals_ingest.temporal_waker import TemporalWaker
from tests.workflows.harness import Stack, eventually, spec
from workflows.position_io import BandView, PositionView, PriceTick

SYMBOL = "BTCUSDT"
SECONDS = 86_400  # one tick per second for 24 hours
BATCH = 60  # seconds of ticks between two advances of Temporal time
SAMPLE_EVERY = 10  # batches between two checks of query vs exchange
SEED = 1
SIGMA = 0.0001  # float ok: 1 bp per second, about 2.9 % a day
DRIFT = 0.05 / SECONDS  # float ok: +5 % over the day
MAX_HISTORY_EVENTS = 300  # continue-as-new well inside the day
# 2.5 % behind the best price: the seeded walk's worst retrace is 1.7 %, so the
# position lives the whole day (checked below on the walk itself).
RULE = TrailingRule(
    callback_pct=Decimal("2.5"),
    activation_pct=Decimal("0.5"),
    min_step_pct=Decimal("0.05"),
    min_interval=timedelta(seconds=10),
)


def walk() -> list[float]:  # float ok: log-returns of the path
    rng = random.Random(SEED)
    x, out = 0.0, []
    for _ in range(SECONDS):
        x += DRIFT + SIGMA * rng.gauss(0.0, 1.0)
        out.append(x)
    return out


def runs_of_chain(histories: list[Any]) -> list[int]:
    return [len(h.events) for h in histories]


async def chain_histories(stack: Stack, handle: WorkflowHandle[Any, Any]) -> list[Any]:
    """Every run of the workflow id's chain, first to last, by following continue-as-new."""
    run_id = handle.first_execution_run_id or handle.run_id
    assert run_id is not None
    out = []
    while run_id:
        history = await stack.client.get_workflow_handle(handle.id, run_id=run_id).fetch_history()
        out.append(history)
        last = history.events[-1]
        if last.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW:
            run_id = last.workflow_execution_continued_as_new_event_attributes.new_execution_run_id
        else:
            run_id = ""
    return out


async def test_a_day_of_ticks_bounded_history_and_trail_intact_across_runs(
    stack: Stack, time_skipping_env: WorkflowEnvironment
) -> None:
    xs = walk()
    # The scenario's premise, on the data itself: in profit at the end, never
    # retracing the callback from a best price, never touching the first stop.
    worst = max(best - x for best, x in zip(_running_max(xs), xs, strict=True))
    assert worst < 0.02 and min(xs) > -0.019 and xs[-1] > 0.03  # float ok

    sim = stack.sim
    sim.set_price(SYMBOL, "60000")
    handle = await stack.open(
        spec(SYMBOL, Side.LONG, trailing=RULE),
        max_history_events=MAX_HISTORY_EVENTS,
        check_interval=timedelta(minutes=5),
    )
    view = await stack.wait_state(handle, PositionState.ACTIVE)
    assert view.snapshot.state is PositionState.ACTIVE
    entry = view.snapshot.avg_entry_price
    assert entry is not None

    temporal = TemporalWaker(stack.client)
    waker_calls = 0

    async def wake(workflow_id: str, tick: PriceTick) -> BandView | None:
        nonlocal waker_calls
        waker_calls += 1
        sim.set_price(SYMBOL, tick.price)  # the exchange learns the crossing price
        return await temporal(workflow_id, tick)

    gate = PriceGate(wake)
    gate.apply(await handle.query("band", result_type=BandView))
    start_ms = int((await time_skipping_env.get_current_time()).timestamp() * 1000)

    samples: list[PositionView] = [view]
    exchange_checks = 0
    t0 = time.monotonic()  # float ok: timing
    for batch in range(SECONDS // BATCH):
        for s in range(batch * BATCH, (batch + 1) * BATCH):
            price = Decimal(f"{float(entry) * math.exp(xs[s]):.1f}")  # float ok: the walk
            if gate.on_tick(SYMBOL, price, start_ms + 1000 * s):
                assert await gate.wait_idle(30), f"wake-up at second {s} not answered"
        assert await gate.wait_idle(30)
        ts = time.monotonic()
        try:
            await time_skipping_env.sleep(timedelta(seconds=BATCH))
        except Exception:
            desc = await handle.describe()
            print(
                "DEBUG batch",
                batch,
                time.monotonic() - ts,
                desc.raw_description.pending_activities,
                desc.raw_description.pending_workflow_task,
            )
            raise
        v = await stack.view(handle)
        print("batch", batch, round(time.monotonic() - t0, 2), waker_calls, v.runs, v.history_length, v.snapshot.stop_price)
        if (batch + 1) % SAMPLE_EVERY == 0:
            samples.append(await stack.view(handle))
            if (batch + 1) % (SAMPLE_EVERY * 6) == 0:  # every hour: the exchange agrees
                await _assert_exchange_stop_is_query_stop(stack, handle)
                exchange_checks += 1
    elapsed = time.monotonic() - t0  # float ok: timing
    assert handle.id in gate  # still open after 24 hours
    final = await stack.view(handle)
    samples.append(final)
    await _assert_exchange_stop_is_query_stop(stack, handle)

    # The trail is monotonic across every continue-as-new: the stop only tightens,
    # the best price only rises, and the state keeps its counters.
    assert final.runs > 1, "no continue-as-new in 24 hours"
    for before, after in zip(samples, samples[1:], strict=False):
        b, a = before.snapshot, after.snapshot
        assert a.state is PositionState.ACTIVE
        assert b.stop_price is not None and a.stop_price is not None
        assert a.stop_price >= b.stop_price, (before.runs, after.runs)
        assert (a.highest_price or 0) >= (b.highest_price or 0)
        assert a.order_seq >= b.order_seq and a.event_seq >= b.event_seq
        assert after.runs >= before.runs
        assert after.position_id == before.position_id  # one chain, one position
    assert final.snapshot.stop_price is not None and final.snapshot.stop_price > entry

    # The stored events chain across runs too: each move starts from the stop the
    # previous one (in whatever run) left, and the trailing best price never falls.
    async def all_recorded() -> bool:
        moves = await stack.store.events(
            position_id=final.position_id,
            event_type=PosEventType.TRAILING_STOP_MOVED.value,
            limit=100_000,
        )
        return bool(moves) and Decimal(moves[-1].payload["new_stop"]) == final.snapshot.stop_price

    assert await eventually(all_recorded)
    moves = sorted(
        await stack.store.events(
            position_id=final.position_id,
            event_type=PosEventType.TRAILING_STOP_MOVED.value,
            limit=100_000,
        ),
        key=lambda e: e.event_id,
    )
    assert len(moves) >= 20
    previous_stop, previous_best = view.snapshot.stop_price, Decimal(0)
    for event in moves:
        p = event.payload
        assert Decimal(p["old_stop"]) == previous_stop and Decimal(p["new_stop"]) > previous_stop
        assert Decimal(p["best_price"]) >= previous_best
        previous_stop, previous_best = Decimal(p["new_stop"]), Decimal(p["best_price"])

    result = await stack.close(handle)
    assert result.state is PositionState.CLOSED and result.reason is CloseReason.OPERATOR
    assert result.realised_pnl > 0

    # Every run of the chain stayed far below Temporal's 4,096-event limit.
    histories = await chain_histories(stack, handle)
    lengths = runs_of_chain(histories)
    assert len(histories) == final.runs or len(histories) == final.runs + 1, lengths
    assert len(histories) >= 2
    assert max(lengths) < 4096, lengths
    print(
        f"\n24 h: {SECONDS:,} ticks, {waker_calls} updates, {len(moves)} moves, "
        f"{len(histories)} runs (events per run: max {max(lengths)}, "
        f"mean {sum(lengths) // len(lengths)}), {exchange_checks} exchange checks, "
        f"{elapsed:.0f} s wall"
    )


def _running_max(xs: list[float]) -> list[float]:  # float ok
    out, best = [], 0.0
    for x in xs:
        best = max(best, x)
        out.append(best)
    return out


async def _assert_exchange_stop_is_query_stop(
    stack: Stack, handle: WorkflowHandle[Any, Any]
) -> None:
    """Once no move is half done, exactly one stop rests on the exchange: the query's."""
    last: tuple[Any, ...] = ()

    async def agree() -> bool:
        nonlocal last
        view = await stack.view(handle)
        open_ = [a for a in stack.orders_of(view, algo=True) if a["algoStatus"] == "NEW"]
        last = (view.snapshot.stop_price, [a["triggerPrice"] for a in open_])
        return len(open_) == 1 and Decimal(open_[0]["triggerPrice"]) == view.snapshot.stop_price

    assert await eventually(agree, seconds=10), last
