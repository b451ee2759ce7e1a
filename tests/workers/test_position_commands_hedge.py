"""`posguard open/close/position` on a hedge-mode account, as an operator runs them.

The account says `hedge_mode = true` and the paper exchange holds its symbols in
hedge mode: `open BTCUSDT long` and `open BTCUSDT short` are two positions; a
command that names only the symbol acts on the one that is open, and asks for
`--side` when both are.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest_asyncio
from temporalio.testing import WorkflowEnvironment

from activities.store.repository import Store
from domain.types import Side
from simulator.server import PaperExchange
from tests.workers.test_position_commands import Live, cli_env
from tests.workflows.harness import PRICES, live_stack
from workflows.position_io import position_workflow_id

ACCOUNT = f"hedge{uuid.uuid4().hex[:6]}"


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def live(
    temporal_env: WorkflowEnvironment, database_url: str, store: Store
) -> AsyncIterator[Live]:
    async with PaperExchange(hedge_mode=True, mark_interval_ms=200, admin_port=None) as sim:
        for symbol, price in PRICES.items():
            sim.set_price(symbol, price)
        async with live_stack(
            temporal_env.client,
            database_url,
            store,
            name="cli-hedge",
            account=ACCOUNT,
            sim=sim,
            account_options={"hedge_mode": True},
        ) as stack:
            address = temporal_env.client.service_client.config.target_host
            queue = stack.settings.task_queue
            env = cli_env(address, database_url, queue, sim, ACCOUNT, hedge_mode=True)
            yield Live(temporal_env.client, sim, store, env, address)


def wid(side: Side) -> str:
    return position_workflow_id(ACCOUNT, "binanceusdm", "BTCUSDT", side)


def side_amt(live: Live, side: Side) -> str:
    for p in live.sim.ground_truth()["positions"]:
        if p["symbol"] == "BTCUSDT" and p.get("positionSide") == side.name:
            return str(p["positionAmt"])
    return "0"


async def test_a_long_and_a_short_opened_and_closed_side_by_side(live: Live) -> None:
    for side in Side:
        opened = (
            await live.posguard("open", "BTCUSDT", side.value, "--quote", "1200", "--stop", "2%")
        ).ok()
        assert f"started {wid(side)}: {side.value} BTCUSDT" in opened.stdout
    assert side_amt(live, Side.LONG) == "0.02" and side_amt(live, Side.SHORT) == "-0.02"

    both = await live.posguard("close", "BTCUSDT")
    assert both.returncode == 1
    assert "both a long and a short are open on BTCUSDT" in both.stderr
    assert "--side long or --side short" in both.stderr
    assert side_amt(live, Side.LONG) == "0.02"  # nothing was closed

    closed = (await live.posguard("close", "BTCUSDT", "--side", "long")).ok()
    assert f"{wid(Side.LONG)}  closed" in closed.stdout
    assert side_amt(live, Side.LONG) == "0" and side_amt(live, Side.SHORT) == "-0.02"

    # Only the short is open now: the symbol alone names it.
    shown = (await live.posguard("position", "BTCUSDT")).ok().stdout
    assert f"{wid(Side.SHORT)}  active" in shown
    listed = (await live.posguard("positions")).ok().stdout
    assert wid(Side.SHORT) in listed and wid(Side.LONG) not in listed
    closed = (await live.posguard("close", "BTCUSDT")).ok()
    assert f"{wid(Side.SHORT)}  closed" in closed.stdout
    assert side_amt(live, Side.SHORT) == "0"
    assert [a for a in live.sim.ground_truth()["algoOrders"] if a["algoStatus"] == "NEW"] == []
