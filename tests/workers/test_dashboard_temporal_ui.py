"""The Temporal Web UI page of a running position, in a real browser (issue 15).

The session's dev server runs without its UI, so this module starts one of its own
with the UI on (as `posguard dev` does, `workers.embedded.TemporalDevServer`), a
worker and a paper exchange on it, opens a position, and reads the run's page in
headless Chromium: its current details (`workflow.set_current_details`, from
`domain.position_details`) show the state and the stop. Screenshot:
test-artifacts/test_dashboard_temporal_ui/.
"""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote

import aiohttp
import pytest_asyncio
from playwright.async_api import Error as PlaywrightError
from playwright.async_api import Page
from temporalio.client import Client

from activities.store.repository import Store
from domain.position import PositionState
from domain.types import Side
from tests.browser import artifacts, chromium
from tests.waiting import PATIENCE_S, until
from tests.workflows.harness import QUICK, Stack, live_stack
from workers.embedded import TemporalDevServer
from workers.temporal import connect

SHOTS = artifacts(__name__)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def ui_server(tmp_path_factory: object) -> AsyncIterator[TemporalDevServer]:
    """A dev server of this module's own, its Web UI on."""
    state = Path(tmp_path_factory.mktemp("temporal-ui"))  # type: ignore[attr-defined]
    server = TemporalDevServer(state, port=free_port(), ui_port=free_port())
    await asyncio.to_thread(server.start)
    try:
        yield server
    finally:
        await asyncio.to_thread(server.stop)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def client(ui_server: TemporalDevServer) -> Client:
    return await connect(ui_server.address, timeout_s=int(PATIENCE_S))


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def stack(client: Client, database_url: str, store: Store) -> AsyncIterator[Stack]:
    async with live_stack(
        client,
        database_url,
        store,
        name="webui",
        check_interval=timedelta(seconds=30),
        config=QUICK,
    ) as live:
        yield live


async def ui_up(url: str) -> bool:
    try:
        async with aiohttp.ClientSession() as http, http.get(url) as resp:
            return resp.status == 200
    except aiohttp.ClientError:
        return False


async def all_text(page: Page) -> str:
    """The text of the page and of every frame in it (the details are in a frame)."""
    texts = []
    for frame in page.frames:
        try:
            texts.append(await frame.evaluate("() => document.body ? document.body.innerText : ''"))
        except PlaywrightError:  # a frame that went away meanwhile
            continue
    return "\n".join(texts)


async def test_the_web_ui_shows_a_running_positions_state_and_stop(
    ui_server: TemporalDevServer, stack: Stack
) -> None:
    stack.sim.set_price("SOLUSDT", "150")
    handle = await stack.open(stack.on("SOLUSDT", Side.LONG, quote="600"))
    view = await stack.wait_state(handle, PositionState.ACTIVE)
    stop = view.snapshot.stop_price
    assert stop is not None
    base = f"http://127.0.0.1:{ui_server.ui_port}"
    await until(lambda: ui_up(base + "/"), "the Temporal Web UI")
    page_url = f"{base}/namespaces/default/workflows/{quote(handle.id, safe='')}"

    async with chromium() as browser:
        page = await browser.new_page(viewport={"width": 1500, "height": 1600})
        await page.goto(page_url)
        # The run's summary and current details are on its "User Metadata" tab.
        await page.get_by_text("User Metadata", exact=True).click(timeout=PATIENCE_S * 1000)
        # The UI renders the run's current details (Markdown, in a frame of their own)
        # once it has asked the workflow for them: wait for the state and the stop.
        wanted = re.compile(rf"active[\s\S]*stop {re.escape(str(stop))}")
        text = ""

        async def shown() -> bool:
            nonlocal text
            text = await all_text(page)
            return wanted.search(text) is not None

        try:
            await until(shown, "the state and the stop on the run's page", interval=0.25)
        finally:
            await page.screenshot(path=str(SHOTS / "position-run.png"), full_page=True)
            (SHOTS / "position-run.txt").write_text(text, encoding="utf-8")
    assert f"long {view.snapshot.qty} SOLUSDT" in text, text[:3000]
    assert f"protected: stop {stop}" in text, text[:3000]
    assert "RUNNING" in text  # the run's status badge
    await stack.close(handle)
