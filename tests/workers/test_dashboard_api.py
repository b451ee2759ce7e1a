"""The dashboard's JSON API on a live stack, checked against the paper exchange.

Real Temporal dev server, PostgreSQL, worker and paper exchange; the dashboard is the
one `posguard web` runs, served on a free port and read over HTTP.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest_asyncio
from pydantic import SecretStr
from temporalio.testing import WorkflowEnvironment

from activities.store.repository import Store
from domain.position import PositionState
from domain.records import PositionRecord
from domain.trailing import TrailingRule
from domain.types import Side
from tests.waiting import poll
from tests.workers.dashboard_stack import (
    dashboard_stack,
    get_json,
    live_stop,
    running_dashboard,
    tick,
)
from tests.workflows.harness import Stack
from workers.dashboard.server import Dashboard

TRAIL = TrailingRule(callback_pct=Decimal(1), activation_pct=Decimal("0.5"))
TOKEN = "a-long-random-dashboard-token"


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def stack(
    temporal_env: WorkflowEnvironment, database_url: str, store: Store
) -> AsyncIterator[Stack]:
    async with dashboard_stack(temporal_env.client, database_url, store, "dashapi") as live:
        yield live


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def web(stack: Stack) -> AsyncIterator[Dashboard]:
    async with running_dashboard(stack) as dashboard:
        yield dashboard


def open_of(state: dict[str, Any], symbol: str) -> dict[str, Any] | None:
    return next((p for p in state["open"] if p["symbol"] == symbol), None)


async def test_open_positions_and_their_stops_are_the_exchanges(
    stack: Stack, web: Dashboard
) -> None:
    stack.sim.set_price("SOLUSDT", "150")
    stack.sim.set_price("XRPUSDT", "0.6")
    long = await stack.open(stack.on("SOLUSDT", Side.LONG, quote="600"))
    short = await stack.open(stack.on("XRPUSDT", Side.SHORT, quote="300"))
    for handle in (long, short):
        await stack.wait_state(handle, PositionState.ACTIVE)

    def shown(state: dict[str, Any]) -> bool:
        return all(
            (p := open_of(state, s)) is not None and p["stop"] is not None and p["mark"]
            for s in ("SOLUSDT", "XRPUSDT")
        )

    state = await poll(lambda: get_json(web.url + "api/state"), shown, "both positions shown")
    assert state["errors"] == [], state["errors"]
    truth = {p["symbol"]: Decimal(p["positionAmt"]) for p in stack.truth()["positions"]}
    for symbol, side in (("SOLUSDT", Side.LONG), ("XRPUSDT", Side.SHORT)):
        p = open_of(state, symbol)
        assert p is not None
        assert (p["side"], p["state"], p["account"]) == (
            side.value,
            "active",
            stack.settings.accounts[0].name,
        )
        # money and quantities travel as exact strings, never floats
        for field in ("quantity", "entry", "mark", "stop", "unrealised_pnl", "stop_distance_pct"):
            assert isinstance(p[field], str), (field, p[field])
        assert Decimal(p["quantity"]) == abs(truth[symbol])
        assert side.sign * truth[symbol] > 0
        assert Decimal(p["stop"]) == live_stop(stack, symbol)
        assert p["protected"] is True and p["stop_confirmed_age_s"] is not None
        assert p["source"] == "workflow" and p["warning"] is None
        mark, stop = Decimal(p["mark"]), Decimal(p["stop"])
        assert Decimal(p["stop_distance_pct"]) == (side.sign * (mark - stop) / mark * 100).quantize(
            Decimal("0.01")
        )
        assert Decimal(p["unrealised_pnl"]) == side.sign * (mark - Decimal(p["entry"])) * Decimal(
            p["quantity"]
        )
        assert "/namespaces/default/workflows/" in p["ui_url"]
    for handle in (long, short):
        await stack.close(handle)


async def test_a_moved_stop_shows_in_the_state_the_chart_and_the_timeline(
    stack: Stack, web: Dashboard
) -> None:
    symbol = "BNBUSDT"
    stack.sim.set_price(symbol, "600")
    handle = await stack.open(stack.on(symbol, Side.LONG, quote="600", trailing=TRAIL))
    view = await stack.wait_state(handle, PositionState.ACTIVE)
    first = view.snapshot.stop_price
    assert first is not None
    detail_url = web.url + "api/position?id=" + quote(view.position_id, safe="")
    await poll(
        lambda: get_json(detail_url),
        lambda d: [lv["value"] for lv in d["chart"]["stop_levels"]] == [str(first)],
        "the first stop in the chart",
    )
    entry = view.snapshot.avg_entry_price
    assert entry is not None
    await tick(stack, handle, symbol, (entry * Decimal("1.03")).quantize(Decimal("0.01")))
    moved = await stack.wait_for(handle, lambda v: v.snapshot.stop_price != first)
    new_stop = moved.snapshot.stop_price
    assert new_stop is not None and new_stop > first
    state = await poll(
        lambda: get_json(web.url + "api/state"),
        lambda s: (p := open_of(s, symbol)) is not None and p["stop"] == str(new_stop),
        "the moved stop in the state",
    )
    assert Decimal(open_of(state, symbol)["stop"]) == live_stop(stack, symbol)  # type: ignore[index]
    detail = await poll(
        lambda: get_json(detail_url),
        lambda d: "trailing_stop_moved" in [e["type"] for e in d["events"]],
        "the move in the timeline",
    )
    levels = [Decimal(lv["value"]) for lv in detail["chart"]["stop_levels"]]
    assert levels[0] == first and levels[-1] == new_stop
    stop_line = [p["value"] for p in detail["chart"]["stop"] if p["value"] is not None]
    assert float(first) in stop_line and float(new_stop) in stop_line
    assert detail["chart"]["mark"], "the sampled marks"
    assert detail["chart"]["entry"][0]["value"] == float(entry)
    times = [e["occurred_at"] for e in detail["events"]]
    assert times == sorted(times) and detail["events"][0]["type"] == "position_create_started"
    assert detail["open"]["position_id"] == view.position_id
    await stack.close(handle)


async def test_a_closed_position_shows_its_pnl_and_reason(stack: Stack, web: Dashboard) -> None:
    symbol = "DOGEUSDT"
    stack.sim.set_price(symbol, "0.15")
    handle = await stack.open(stack.on(symbol, Side.LONG, quote="300"))
    view = await stack.wait_state(handle, PositionState.ACTIVE)
    stack.sim.set_price(symbol, "0.153")
    result = await stack.close(handle)
    state = await poll(
        lambda: get_json(web.url + "api/state"),
        lambda s: (
            any(c["position_id"] == view.position_id for c in s["closed"])
            and open_of(s, symbol) is None
        ),
        "the closed position",
    )
    [closed] = [c for c in state["closed"] if c["position_id"] == view.position_id]
    assert Decimal(closed["realised_pnl"]) == result.realised_pnl > 0
    assert Decimal(closed["fees"]) == result.fees
    assert Decimal(closed["net_pnl"]) == result.realised_pnl - result.fees
    assert (closed["status"], closed["reason"]) == ("closed", "operator")
    assert closed["ui_url"].endswith(f"/{view.position_id.rsplit('/', 1)[1]}/history")
    detail = await get_json(web.url + "api/position?id=" + quote(view.position_id, safe=""))
    assert detail["open"] is None and detail["closed"]["realised_pnl"] == closed["realised_pnl"]
    assert detail["events"][-1]["type"] == "position_closed"
    assert detail["chart"]["stop"][-1]["value"] is not None  # the stop drawn up to the close


async def post(url: str, body: dict[str, Any], token: str | None = None) -> tuple[int, Any]:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession() as http, http.post(url, json=body, headers=headers) as r:
        return r.status, await r.json()


async def test_actions_need_the_setting_and_the_token(stack: Stack, web: Dashboard) -> None:
    symbol = "ETHUSDT"
    stack.sim.set_price(symbol, "3000")
    handle = await stack.open(stack.on(symbol, Side.SHORT, quote="600"))
    view = await stack.wait_state(handle, PositionState.ACTIVE)
    body = {"position_id": view.position_id}
    # read-only (the default): no buttons, and 403 even with a token
    state = await poll(
        lambda: get_json(web.url + "api/state"),
        lambda s: open_of(s, symbol) is not None,
        "the position",
    )
    assert state["actions"] is False
    assert (await post(web.url + "api/actions/close", body, TOKEN))[0] == 403
    settings = {"web_actions": True, "web_token": SecretStr(TOKEN)}
    async with running_dashboard(stack, **settings) as armed:
        await poll(
            lambda: get_json(armed.url + "api/state"),
            lambda s: s["actions"] is True and open_of(s, symbol) is not None,
            "the armed dashboard",
        )
        assert (await post(armed.url + "api/actions/close", body))[0] == 403
        assert (await post(armed.url + "api/actions/close", body, "wrong"))[0] == 403
        status, answer = await post(
            armed.url + "api/actions/trail", {**body, "callback_pct": "1.5"}, TOKEN
        )
        assert status == 200 and answer["rule"]["callback_pct"] == "1.5", answer
        status, answer = await post(armed.url + "api/actions/close", body, TOKEN)
        assert status == 200 and answer["state"] == "closed", answer
    result = await handle.result()
    assert result.state is PositionState.CLOSED and stack.position_amt(symbol) == 0
    events = await stack.event_types(view.position_id)
    assert "trailing_params_changed" in events and "close_triggered" in events


async def test_the_page_health_and_metrics_are_served(web: Dashboard) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(web.url) as resp:
            assert resp.status == 200 and "posguard" in await resp.text()
            assert "default-src 'self'" in resp.headers["Content-Security-Policy"]
        vendor = "static/vendor/lightweight-charts.standalone.production.js"
        async with http.get(web.url + vendor) as resp:
            assert resp.status == 200 and "Lightweight Charts" in (await resp.text())[:300]
        async with http.get(web.url + "health") as resp:
            health = await resp.json()
            assert resp.status == 200 and health["process"] == "web", health
            assert {p["name"] for p in health["parts"]} == {"postgresql", "temporal"}
        async with http.get(web.url + "metrics") as resp:
            assert resp.status == 200 and "process_" in await resp.text()
        async with http.get(web.url + "api/position?id=position/nope/x/y/z") as resp:
            assert resp.status == 404
        async with http.get(web.url + "static/../data.py") as resp:
            assert resp.status in (403, 404)


async def test_a_row_that_no_workflow_manages_is_shown_as_not_running(
    stack: Stack, web: Dashboard
) -> None:
    account = stack.settings.accounts[0].name
    workflow_id = f"position/{account}/binanceusdm/ADAUSDT"
    row = PositionRecord(
        id=f"{workflow_id}/no-such-run",
        workflow_id=workflow_id,
        account=account,
        exchange="binanceusdm",
        symbol="ADAUSDT",
        side="long",
        status="active",
        revision=1,
        quantity=Decimal(100),
        entry_price=Decimal("0.5"),
        stop_price=Decimal("0.49"),
        opened_at=datetime.now(UTC),
    )
    await stack.store.upsert_position(row)
    try:
        state = await poll(
            lambda: get_json(web.url + "api/state"),
            lambda s: open_of(s, "ADAUSDT") is not None,
            "the row without a workflow",
        )
        shown = open_of(state, "ADAUSDT")
        assert shown is not None and shown["source"] == "store", shown
        assert shown["warning"].startswith("NOT RUNNING"), shown
        assert shown["protected"] is False and shown["quantity"] == "100"
        assert shown["mark"] is None and shown["mark_error"], shown  # no such market
    finally:
        await stack.store.close_phantom(row.id, row.revision, "test", datetime.now(UTC))
    await poll(
        lambda: get_json(web.url + "api/state"),
        lambda s: open_of(s, "ADAUSDT") is None,
        "the row closed",
    )
