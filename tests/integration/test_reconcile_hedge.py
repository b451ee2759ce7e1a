"""The reconciler on a hedge-mode account, on both venues, against the ground truth.

A long runs under its workflow (`.../BTCUSDT/long`); a short on the same symbol is
opened by hand. The reconcile Schedule adopts the short under `.../BTCUSDT/short`,
stop first, and leaves the long, its stop and its quantity alone; a reduce-only
order left by hand on a side that holds nothing is cancelled as a zombie while the
other side is held.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from temporalio.testing import WorkflowEnvironment

from activities.store.repository import Store
from domain.position import PositionState, position_workflow_id
from domain.types import Side
from tests.integration.test_reconcile import (
    account_events,
    account_of,
    reconciled,
    until_running,
)
from tests.waiting import until

pytestmark = pytest.mark.integration

SYMBOL = "BTCUSDT"


@pytest.mark.parametrize("venue", ["binance", "bybit"])
async def test_a_short_opened_by_hand_beside_a_managed_long_is_adopted_alone(
    temporal_env: WorkflowEnvironment, database_url: str, store: Store, venue: str
) -> None:
    async with reconciled(
        temporal_env,
        database_url,
        store,
        f"rh{venue[:3]}",
        exchange={"venue": venue, "hedge_mode": True},
        account_options={"hedge_mode": True},
    ) as stack:
        if venue == "bybit":
            stack.sim.configure(rate_limit_per_s=10_000)
        stack.sim.set_price(SYMBOL, "60000")
        account, exchange = account_of(stack), stack.settings.accounts[0].exchange
        long = await stack.open(stack.on(SYMBOL, Side.LONG, hedge_mode=True))
        managed = await stack.wait_state(long, PositionState.ACTIVE)
        [long_stop] = stack.side_stops(SYMBOL, Side.LONG)

        stack.sim.open_position(SYMBOL, "SELL", "0.05")  # the short, by hand
        short_id = position_workflow_id(account, exchange, SYMBOL, Side.SHORT)
        await until_running(stack, short_id)
        adopted = await stack.wait_state(
            stack.client.get_workflow_handle(short_id), PositionState.ACTIVE
        )
        assert adopted.spec.adopt and adopted.spec.side is Side.SHORT
        assert adopted.snapshot.qty == Decimal("0.05")
        [short_stop] = stack.side_stops(SYMBOL, Side.SHORT)
        assert short_stop["side"] == "BUY"
        assert Decimal(short_stop["triggerPrice"]) == adopted.snapshot.stop_price
        # The long: its workflow, its quantity, its one stop, untouched.
        assert stack.side_amt(SYMBOL, Side.LONG) == managed.snapshot.qty
        assert [a["algoId"] for a in stack.side_stops(SYMBOL, Side.LONG)] == [long_stop["algoId"]]
        assert (await stack.view(long)).snapshot.state is PositionState.ACTIVE
        # Nothing else was started for the symbol: one workflow per side.
        one_way = position_workflow_id(account, exchange, SYMBOL)
        query = f'WorkflowType="PositionWorkflow" AND Account="{account}"'
        ids = {wf.id async for wf in stack.client.list_workflows(query)}
        assert one_way not in ids and ids >= {long.id, short_id}

        # A stop of a person's own for the short, then the short closed by hand: its
        # adopter ends, and the person's stop, left on the now empty short side, is a
        # zombie, cancelled, while the long is held.
        manual = stack.sim.engine.place_algo(
            SYMBOL,
            "BUY",
            "STOP_MARKET",
            Decimal("0.05"),
            Decimal(70000),
            source="manual",
            position_side="SHORT",
        )
        short = stack.client.get_workflow_handle(short_id)
        stack.sim.close_position(SYMBOL, "SHORT")
        await short.result()
        await until(lambda: stack.side_stops(SYMBOL, Side.SHORT) == [], "the short's stops gone")
        [gone] = [a for a in stack.truth()["algoOrders"] if a["algoId"] == manual.algo_id]
        assert gone["algoStatus"] == "CANCELED", gone

        async def recorded() -> bool:  # the pass records its findings once it acted
            return bool(await account_events(stack, "zombie_cancelled", SYMBOL))

        await until(recorded, "the zombie's cancel in the records")
        assert stack.side_amt(SYMBOL, Side.LONG) == managed.snapshot.qty
        assert [a["algoId"] for a in stack.side_stops(SYMBOL, Side.LONG)] == [long_stop["algoId"]]
