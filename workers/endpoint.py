"""Serving a process's small HTTP app (`/health`, `/metrics`) on `settings.health_host`
(127.0.0.1 by default; "0.0.0.0" in containers)."""

from __future__ import annotations

import logging

from aiohttp import web

log = logging.getLogger("posguard.endpoint")

_ANY = {"", "0.0.0.0", "::"}


def url_host(host: str) -> str:
    """How a client on this host reaches an endpoint listening on `host`, for a URL:
    127.0.0.1 (or [::1]) for every interface, the address itself (bracketed when IPv6)
    otherwise."""
    if host in _ANY:
        return "[::1]" if host == "::" else "127.0.0.1"
    return f"[{host}]" if ":" in host else host


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
