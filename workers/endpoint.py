"""Serving a process's small HTTP app (`/health`, `/metrics`) on 127.0.0.1."""

from __future__ import annotations

import logging

from aiohttp import web

log = logging.getLogger("posguard.endpoint")


async def serve(app: web.Application, host: str, port: int, what: str) -> tuple[web.AppRunner, int]:
    """Start `app` on `host:port` (0: any free port); returns its runner and the port
    it listens on, or -1 when the port is taken: logged, never fatal for the process."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as exc:
        log.error("%s endpoint not started on port %d: %s", what, port, exc)
        return runner, -1
    server = site._server
    if server is not None and port == 0:
        port = int(server.sockets[0].getsockname()[1])  # type: ignore[attr-defined]
    log.info("%s health on http://%s:%d/health (and /metrics)", what, host, port)
    return runner, port
