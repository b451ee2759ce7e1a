"""The dashboard in a real browser during a live run (issue 15, "How it is checked").

Headless Chromium (the system's) opens the page while positions live on the paper
exchange: the open positions and their stops on the page are the exchange's; a stop
move reaches the chart's data and the timeline without a reload; a closed position
shows its PnL. Screenshots: test-artifacts/test_dashboard_browser/.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any
from urllib.parse import quote

import pytest_asyncio
from playwright.async_api import Page
from temporalio.testing import WorkflowEnvironment

from activities.store.repository import Store
from domain.position import PositionState
from domain.trailing import TrailingRule
from domain.types import Side
from tests.browser import artifacts, chromium
from tests.waiting import PATIENCE_S
from tests.workers.dashboard_stack import dashboard_stack, live_stop, running_dashboard, tick
from tests.workflows.harness import Stack
from workers.dashboard.server import Dashboard

TRAIL = TrailingRule(callback_pct=Decimal(1), activation_pct=Decimal("0.5"))
WAIT_MS = PATIENCE_S * 1000
SHOTS = artifacts(__name__)

# The open positions table as the page shows it: {symbol: {field: text}}.
OPEN_ROWS = """() => Object.fromEntries([...document.querySelectorAll('#open-table tbody tr')]
  .map(tr => [tr.dataset.symbol, Object.fromEntries([...tr.querySelectorAll('td')]
    .map(td => [td.dataset.field, td.textContent]))]))"""
CLOSED_ROWS = OPEN_ROWS.replace("#open-table", "#closed-table")
# What the chart library itself holds for the stop line, and the timeline's event types.
STOP_LINE = "() => posguard.series.stop ? posguard.series.stop.data().map(p => p.value) : []"
TIMELINE = "() => [...document.querySelectorAll('#timeline tbody tr')].map(tr => tr.dataset.type)"


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def stack(
    temporal_env: WorkflowEnvironment, database_url: str, store: Store
) -> AsyncIterator[Stack]:
    async with dashboard_stack(temporal_env.client, database_url, store, "dashweb") as live:
        yield live


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def web(stack: Stack) -> AsyncIterator[Dashboard]:
    async with running_dashboard(stack) as dashboard:
        yield dashboard


async def wait_for(page: Page, script: str, arg: Any = None) -> Any:
    """Wait until the page's `script` (a function of `arg`) is truthy; its value."""
    handle = await page.wait_for_function(script, arg=arg, timeout=WAIT_MS, polling=100)
    return await handle.json_value()


async def test_the_dashboard_shows_the_live_account(stack: Stack, web: Dashboard) -> None:
    stack.sim.set_price("BTCUSDT", "60000")
    stack.sim.set_price("ETHUSDT", "3000")
    long = await stack.open(stack.on("BTCUSDT", Side.LONG, trailing=TRAIL))
    short = await stack.open(stack.on("ETHUSDT", Side.SHORT, quote="900"))
    long_view = await stack.wait_state(long, PositionState.ACTIVE)
    await stack.wait_state(short, PositionState.ACTIVE)

    async with chromium() as browser:
        page = await browser.new_page(viewport={"width": 1500, "height": 1400})
        requests: list[str] = []
        page.on("request", lambda r: requests.append(r.url))
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        await page.goto(web.url)

        # The open positions and their stops are the exchange's.
        rows = await wait_for(
            page,
            """() => { const rows = ("""
            + OPEN_ROWS
            + """)();
                return ['BTCUSDT', 'ETHUSDT'].every(s => rows[s] && rows[s].stop !== '—'
                    && rows[s].mark !== '—') && rows; }""",
        )
        truth = {p["symbol"]: Decimal(p["positionAmt"]) for p in stack.truth()["positions"]}
        for symbol, side in (("BTCUSDT", Side.LONG), ("ETHUSDT", Side.SHORT)):
            row = rows[symbol]
            assert Decimal(row["stop"]) == live_stop(stack, symbol), row
            assert Decimal(row["quantity"]) == abs(truth[symbol]) and side.sign * truth[symbol] > 0
            assert (row["side"], row["state"]) == (side.value, "active"), row
            assert row["protection"].startswith("stop confirmed"), row
        assert await page.locator("#unprotected").is_hidden()
        await page.screenshot(path=str(SHOTS / "1-open-positions.png"), full_page=True)

        # The long's chart and timeline; then its stop moves, and the page follows.
        await page.click("#open-table tbody tr[data-symbol='BTCUSDT']")
        first = long_view.snapshot.stop_price
        assert first is not None
        await wait_for(page, f"() => ({STOP_LINE})().includes({float(first)})")
        assert "sl_placed" in await page.evaluate(TIMELINE)
        # read-only by default: no action is offered
        assert await page.locator("#detail").is_visible()
        assert await page.locator("#close-button").is_hidden()
        assert await page.locator("#trail-button").is_hidden()
        await page.evaluate("() => { window.notReloaded = true; }")
        entry = long_view.snapshot.avg_entry_price
        assert entry is not None
        await tick(stack, long, "BTCUSDT", (entry * Decimal("1.03")).quantize(Decimal("0.1")))
        moved = await stack.wait_for(long, lambda v: v.snapshot.stop_price != first)
        new_stop = moved.snapshot.stop_price
        assert new_stop is not None and new_stop > first
        line = await wait_for(
            page,
            f"() => {{ const l = ({STOP_LINE})(); return l.includes({float(new_stop)}) && l; }}",
        )
        assert float(first) in line  # the old level stays in the chart's history
        await wait_for(page, f"() => ({TIMELINE})().includes('trailing_stop_moved')")
        rows = await wait_for(
            page,
            f"""() => {{ const rows = ({OPEN_ROWS})();
                return rows.BTCUSDT && rows.BTCUSDT.stop === '{new_stop}' && rows; }}""",
        )
        assert Decimal(rows["BTCUSDT"]["stop"]) == live_stop(stack, "BTCUSDT")
        assert await page.evaluate("() => window.notReloaded === true"), "the page was reloaded"
        link = await page.locator("#detail-ui").get_attribute("href")
        assert link is not None and quote(long_view.workflow_id, safe="") in link, link
        await page.screenshot(path=str(SHOTS / "2-stop-moved.png"), full_page=True)

        # A closed position shows its PnL.
        stack.sim.set_price("ETHUSDT", "2970")
        result = await stack.close(short)
        closed = await wait_for(
            page,
            """() => { const rows = ("""
            + CLOSED_ROWS
            + """)();
                return rows.ETHUSDT && rows; }""",
        )
        row = closed["ETHUSDT"]
        assert Decimal(row["realised"]) == result.realised_pnl > 0, row
        assert Decimal(row["net"]) == result.realised_pnl - result.fees, row
        assert (row["status"], row["reason"]) == ("closed", "operator"), row
        await wait_for(page, f"() => !(({OPEN_ROWS})().ETHUSDT)")
        await page.screenshot(path=str(SHOTS / "3-closed.png"), full_page=True)

        assert await page.evaluate("() => window.notReloaded === true"), "the page was reloaded"
        assert not errors, errors
        foreign = [u for u in requests if not u.startswith(web.url)]
        assert not foreign, f"the page fetched from elsewhere: {foreign}"
    await stack.close(long)
