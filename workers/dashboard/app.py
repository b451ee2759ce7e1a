"""The dashboard's HTTP routes.

- `GET /`: the page; `GET /static/...`: its script, style and the vendored chart
  library. The page loads nothing else (its Content-Security-Policy says so too).
- `GET /api/state`: the account at a glance (`models.AccountState`), as last read by
  the refresh loop: any number of open pages cost the workflows nothing more.
- `GET /api/position?id=...`: one position's chart and timeline (`models.PositionDetail`).
- `POST /api/actions/close`, `POST /api/actions/trail`: 403 unless `web_actions` and
  `web_token` are set and the request carries the token (`actions`).
- `GET /health`, `GET /metrics`: as every posguard process.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from aiohttp import web
from pydantic import BaseModel

from workers.dashboard.actions import ActionRefused, Actions
from workers.dashboard.data import AccountReader

STATIC = Path(__file__).parent / "static"

# Only this origin's own files, scripts and connections; styles inline too (the chart
# library sets some on the elements it draws).
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; connect-src 'self'; img-src 'self' data:; "
        "style-src 'self' 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'; "
        "form-action 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def _headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    response = await handler(request)
    response.headers.update(SECURITY_HEADERS)
    if request.path.startswith("/api/"):
        response.headers["Cache-Control"] = "no-store"
    return response


def _json(model: BaseModel | dict[str, Any], status: int = 200) -> web.Response:
    body = model.model_dump_json() if isinstance(model, BaseModel) else json.dumps(model)
    return web.Response(text=body, status=status, content_type="application/json")


def _error(status: int, message: str) -> web.Response:
    return _json({"error": message}, status)


class DashboardApp:
    """The routes over one `AccountReader` (and its last read)."""

    def __init__(
        self,
        reader: AccountReader,
        actions: Actions,
        *,
        health: Handler | None = None,
        metrics: Handler | None = None,
    ) -> None:
        self.reader = reader
        self.actions = actions
        self._health = health
        self._metrics = metrics

    def build(self) -> web.Application:
        """The aiohttp application with every route."""
        app = web.Application(middlewares=[_headers], client_max_size=64 * 1024)
        app.router.add_get("/", self.index)
        app.router.add_static("/static/", STATIC, show_index=False, follow_symlinks=False)
        app.router.add_get("/api/state", self.state)
        app.router.add_get("/api/position", self.position)
        app.router.add_post("/api/actions/close", self.close)
        app.router.add_post("/api/actions/trail", self.trail)
        if self._health is not None:
            app.router.add_get("/health", self._health)
        if self._metrics is not None:
            app.router.add_get("/metrics", self._metrics)
        return app

    async def index(self, request: web.Request) -> web.StreamResponse:
        """`GET /`: the page (revalidated at every load, so an upgrade shows at once)."""
        return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    async def state(self, request: web.Request) -> web.Response:
        """`GET /api/state`: the last read of the account (a read now if none yet)."""
        state = self.reader.last or await self.reader.read()
        return _json(state)

    async def position(self, request: web.Request) -> web.Response:
        """`GET /api/position?id=`: one position's detail; 400 without an id, 404 for a
        position the configured accounts do not have."""
        position_id = request.query.get("id", "")
        if not position_id:
            return _error(400, "give the position id: /api/position?id=...")
        detail = await self.reader.detail(position_id)
        if detail is None:
            return _error(404, f"no position {position_id} on the configured accounts")
        return _json(detail)

    async def _action_target(self, request: web.Request) -> tuple[Any, dict[str, Any]]:
        """The open position an action names (as last read), after the token check."""
        self.actions.check(request.headers.get("Authorization"))
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            raise ActionRefused(400, "the body must be JSON") from None
        if not isinstance(body, dict):
            raise ActionRefused(400, "the body must be a JSON object")
        view = self.reader.views.get(str(body.get("position_id", "")))
        if view is None:
            raise ActionRefused(404, "no such open position (as last read)")
        return view, body

    async def close(self, request: web.Request) -> web.Response:
        """`POST /api/actions/close` `{"position_id": ...}`: the close's result, or the
        refusal's status (403 without the setting or the token) and why."""
        try:
            view, _ = await self._action_target(request)
            by = f"posguard web ({request.remote or 'unknown'})"
            return _json(await self.actions.close(view, by))
        except ActionRefused as exc:
            return _error(exc.status, str(exc))

    async def trail(self, request: web.Request) -> web.Response:
        """`POST /api/actions/trail` `{"position_id": ..., "callback_pct": "1.5"}`: the
        previous and new trailing rules, or the refusal's status and why."""
        try:
            view, body = await self._action_target(request)
            try:
                callback = Decimal(str(body.get("callback_pct", "")))
            except InvalidOperation:
                raise ActionRefused(400, 'callback_pct must be a number, e.g. "1.5"') from None
            return _json(await self.actions.trail(view, callback))
        except ActionRefused as exc:
            return _error(exc.status, str(exc))
