"""`posguard dev`: the whole stack on the embedded defaults, in the foreground.

Starts the Temporal dev server (Web UI included) unless TEMPORAL_ADDRESS is set,
the embedded PostgreSQL unless DATABASE_URL is set, and the worker. Ctrl-C
stops everything; state stays under the state directory for the next run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from workers.embedded import TemporalDevServer
from workers.settings import Settings
from workers.temporal import connect
from workers.worker import run_worker

log = logging.getLogger("posguard.dev")


async def run_dev_stack(settings: Settings, stop: asyncio.Event) -> int:
    """Run until `stop` is set; returns the process exit code."""
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    server: TemporalDevServer | None = None
    address = settings.temporal_address
    if address is None:
        server = TemporalDevServer(
            settings.state_dir,
            port=settings.temporal_port,
            ui_port=settings.ui_port,
            namespace=settings.temporal_namespace,
        )
        await asyncio.to_thread(server.start)
        address = server.address
    try:
        client = await connect(
            address, settings.temporal_namespace, timeout_s=settings.connect_timeout_seconds
        )
        database = "DATABASE_URL" if settings.database_url else settings.state_dir / "pg"
        print(
            "posguard dev stack\n"
            f"  Temporal      {address} (namespace {settings.temporal_namespace})\n"
            f"  Web UI        http://127.0.0.1:{settings.ui_port}\n"
            f"  PostgreSQL    {database}\n"
            f"  task queue    {settings.task_queue}\n"
            "Ctrl-C stops everything.",
            flush=True,
        )
        await run_worker(client, settings, stop)
    finally:
        if server is not None:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(server.stop)
    return 0
