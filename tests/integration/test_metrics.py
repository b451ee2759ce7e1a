"""`/metrics` of the worker and the price gate, scraped over HTTP during a live run,
against the ground truth: the records in PostgreSQL and the paper exchange's book.

One account trails a stop through the real gate (moves), a second position cannot
get its stop (unprotected for a while, then protected). What an operator's
Prometheus would read must match what the records say at that moment: positions
by state, stop moves, seconds without a stop; the gate's crossings and wake-ups;
the exchange requests; and the Temporal SDK's own metrics on the same page.

On both paper venues (the module's `stack` per venue). On Bybit the account's stop
follows the fill (`stop_with_entry = false`): an entry that carries its stop is
refused whole with it, never held unprotected, so the unprotected position needs a
stop placed apart; the trailing stop is then a conditional order, moved in place.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from decimal import Decimal

import pytest
import pytest_asyncio
from prometheus_client.parser import text_string_to_metric_families
from temporalio.testing import WorkflowEnvironment

from activities.store.repository import Store
from domain.position import PositionState
from domain.trailing import TrailingRule
from domain.types import Side
from signals_ingest.gate_process import GateSource, HealthServer
from simulator.client import VENUE_EXCHANGES
from tests.integration.test_trailing_gate import active, tick
from tests.observability import metrics_page
from tests.waiting import until
from tests.workflows.harness import PRICES, QUICK_ROUNDS, Stack, live_stack, running_gate
from tests.workflows.test_position_paths import entry_count, wait_entry_filled
from workers.metrics import sdk_metrics_runtime
from workers.temporal import connect

pytestmark = pytest.mark.integration

RULE = TrailingRule(
    callback_pct=Decimal(1), activation_pct=Decimal("0.5"), min_step_pct=Decimal("0.1")
)
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest_asyncio.fixture(scope="module", loop_scope="session", params=list(VENUE_EXCHANGES))
async def stack(
    temporal_env: WorkflowEnvironment,
    database_url: str,
    store: Store,
    request: pytest.FixtureRequest,
) -> AsyncIterator[Stack]:
    venue = request.param
    # A client of its own, on the runtime that exports the SDK's metrics.
    config = temporal_env.client.service_client.config
    client = await connect(
        config.target_host, temporal_env.client.namespace, runtime=sdk_metrics_runtime()
    )
    async with live_stack(
        client,
        database_url,
        store,
        name="metrics",
        exchange={"venue": venue, "mark_interval_ms": 3_600_000},  # only set_price ticks
        check_interval=timedelta(minutes=10),
        config=QUICK_ROUNDS,
        settings={"health_port": 0},
        # Bybit: the stop follows the fill, so it can be refused alone (module docstring)
        account_options={"stop_with_entry": False} if venue == "bybit" else None,
    ) as live:
        if live.venue == "bybit":
            live.sim.configure(rate_limit_per_s=10_000)  # as the Bybit modules' `sim`
        yield live


async def scrape(port: int) -> tuple[str, Samples]:
    """The page at `/metrics`, and its samples by (name, labels)."""
    text = await metrics_page(port)
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return text, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of `name`'s samples whose labels include `labels` (0 if none)."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


async def truth(stack: Stack, sql: str, *args: object) -> int:
    return int(await stack.store.pool.fetchval(sql, *args))


async def test_metrics_match_the_records_moves_and_an_unprotected_position(
    stack: Stack,
) -> None:
    account, exchange = stack.settings.accounts[0].name, stack.settings.accounts[0].exchange
    port = stack.endpoints[0].port
    gates: list[HealthServer] = []
    async with running_gate(
        stack, sync_interval=timedelta(milliseconds=200), health_port=0, health_out=gates
    ) as src:
        await trail_a_stop(stack, src, "ETHUSDT")
        _, before = await scrape(port)
        fills_to_stop = value(before, "posguard_entry_fill_to_stop_seconds_count")
        waited = value(before, "posguard_entry_fill_to_stop_seconds_sum")

        # A position whose stop the exchange refuses: it holds a quantity, unprotected.
        symbol = "XRPUSDT"
        entries = entry_count(stack, symbol)
        stop_refused = stack.refuse("stop", "server_error")
        handle = await stack.open(stack.on(symbol, Side.LONG), exchange_attempts=1)
        await wait_entry_filled(stack, symbol, entries)
        close_refused = stack.refuse("order", "server_error")
        position_id = (await stack.view(handle)).position_id
        try:
            await until(
                lambda: stack.store.pool.fetchval(
                    "SELECT opened_at IS NOT NULL AND quantity > 0 FROM positions WHERE id = $1",
                    position_id,
                ),
                "the unprotected position's fill in its records",
            )
            since = "SELECT extract(epoch FROM now() - opened_at) FROM positions WHERE id = $1"

            async def a_while() -> bool:  # unprotected long enough to tell from noise
                return float(await stack.store.pool.fetchval(since, position_id)) > 1.5

            await until(a_while, "1.5 s of the position without a stop")
            low = float(await stack.store.pool.fetchval(since, position_id))
            text, page = await scrape(port)
            high = float(await stack.store.pool.fetchval(since, position_id))
            unprotected = value(
                page, "posguard_position_unprotected_seconds", position_id=position_id
            )
            assert low <= unprotected <= high, (low, unprotected, high)
            assert value(page, "posguard_unprotected_seconds_max") >= unprotected
            await check_against_records(stack, page, account, exchange)
            assert "temporal_" in text  # the SDK's own metrics, on the same page

            async def emergency_refused() -> bool:
                # the workflow's round after the refused stop: its emergency stop, refused too
                emergencies = await truth(
                    stack,
                    """SELECT count(*) FROM events
                       WHERE position_id = $1 AND type = 'emergency_stop_failed'""",
                    position_id,
                )
                return emergencies >= 1

            await until(emergency_refused, "the refused emergency stop in the records")
        finally:
            stack.sim.faults.remove(stop_refused.id)
            stack.sim.faults.remove(close_refused.id)
        await stack.wait_for(handle, lambda v: v.snapshot.state is PositionState.ACTIVE)

        async def protected() -> bool:
            _, page = await scrape(port)
            seconds = ("posguard_position_unprotected_seconds", position_id)
            return value(page, seconds[0], position_id=seconds[1]) == 0

        await until(protected, "the position protected on /metrics once its stop is placed")
        # Its rounds went from the refused stop to an emergency stop, each under an id of
        # its own kind: the journal never had to refuse a reused one.
        refused_ids = await truth(
            stack,
            """SELECT count(*) FROM events WHERE position_id = $1 AND type = 'critical_error'
               AND payload->>'error_type' = 'ClientIdReused'""",
            position_id,
        )
        emergencies = await truth(
            stack,
            "SELECT count(*) FROM events WHERE position_id = $1 AND type = 'emergency_stop_failed'",
            position_id,
        )
        assert emergencies >= 1 and refused_ids == 0, (emergencies, refused_ids)

        async def measured() -> bool:
            # the late stop's fill-to-stop latency: at least as long as it was seen
            # unprotected (the lookup runs a moment after its record)
            _, page = await scrape(port)
            return value(page, "posguard_entry_fill_to_stop_seconds_sum") - waited >= high

        await until(measured, "the late stop's fill-to-stop latency")
        _, after = await scrape(port)
        assert value(after, "posguard_entry_fill_to_stop_seconds_count") > fills_to_stop
        await check_against_records(stack, after, account, exchange)
        await check_gate(gates[0], src, account)
        await stack.close(handle)


async def trail_a_stop(stack: Stack, src: GateSource, symbol: str) -> None:
    """A trailing long whose stop the gate moves twice."""
    handle = await stack.open(stack.on(symbol, Side.LONG, quote="1000", trailing=RULE))
    await active(stack, handle)
    price = Decimal(PRICES[symbol])
    for step in ("1.02", "1.04"):
        await tick(src, stack.sim, symbol, price * Decimal(step))

    async def moved() -> bool:
        return (
            await truth(
                stack,
                "SELECT count(*) FROM events WHERE type = 'trailing_stop_moved' AND account = $1",
                stack.settings.accounts[0].name,
            )
            >= 2
        )

    await until(moved, "two stop moves recorded")
    if stack.venue == "bybit":  # moved in place: one stop order from first to last
        [stop] = stack.orders(symbol, algo=True)
        assert stop["algoStatus"] == "NEW" and Decimal(stop["triggerPrice"]) > price


async def check_against_records(stack: Stack, page: Samples, account: str, exchange: str) -> None:
    """Positions by state, stops placed and moved: as the records say."""
    by_state = await stack.store.pool.fetch(
        "SELECT status, count(*) AS n FROM positions WHERE account = $1 GROUP BY status", account
    )
    assert by_state
    # the worker looked for runs whose task keeps failing, and found none
    assert any(n == "posguard_workflows_stuck" for n, _ in page), "no stuck-workflow gauge"
    assert value(page, "posguard_workflows_stuck") == 0
    for row in by_state:
        shown = value(page, "posguard_positions", account=account, state=row["status"])
        assert shown == row["n"], (row["status"], shown, row["n"])
    for metric, event_type, labels in (
        ("posguard_stop_moves_total", "trailing_stop_moved", {}),
        ("posguard_stops_placed_total", "sl_placed", {"kind": "first"}),
        ("posguard_stop_failures_total", "sl_placement_failed", {"kind": "placement"}),
    ):
        recorded = await truth(
            stack,
            "SELECT count(*) FROM events WHERE type = $1 AND account = $2",
            event_type,
            account,
        )
        shown = value(page, metric, account=account, exchange=exchange, **labels)
        assert shown == recorded, (metric, shown, recorded)
    assert value(page, "posguard_crossing_to_move_seconds_count", exchange=exchange) >= 2
    requests = value(page, "posguard_exchange_requests_total", account=account)
    assert requests > 0
    assert value(page, "posguard_exchange_requests_total", account=account, lane="protective") > 0
    assert value(page, "posguard_exchange_used_weight", account=account) > 0 or stack.venue != (
        "binance"
    )


async def check_gate(gate: HealthServer, src: GateSource, account: str) -> None:
    """The gate's page: its own counters, a wake-up's latency, the feed's lag."""
    _, page = await scrape(gate.port)
    counters = src.gate.counters
    assert value(page, "posguard_gate_ticks_total", gate=src.name) == counters.ticks
    assert value(page, "posguard_gate_crossings_total", gate=src.name) == counters.crossings >= 2
    answered = value(page, "posguard_gate_wakeups_total", gate=src.name, outcome="answered")
    assert answered == counters.wakeups_answered
    assert value(page, "posguard_gate_wake_seconds_count", gate=src.name) >= 2
    assert (
        "posguard_feed_lag_seconds",
        frozenset({("gate", src.name), ("symbol", "ETHUSDT")}),
    ) in (page)
    assert value(page, "posguard_user_stream_connected", account=account) == 1
