"""Bybit v5 WebSocket streams: ``/v5/private`` and ``/v5/public/linear``.

Private: ``{"op":"auth","args":[apiKey, expires, signature]}`` first, then
``{"op":"subscribe","args":["order","execution","position","wallet"]}``;
pushes ``{"id","topic","creationTime","data":[...]}``. Public: topics
``tickers.{symbol}`` (a snapshot on subscribe and on every price change).
Both answer ``{"op":"ping"}``. Connections reuse :class:`simulator.ws.Connection`
(bounded queue, own writer task).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

from simulator import bybit_formats as BF
from simulator.ws import Connection

if TYPE_CHECKING:
    from simulator.bybit_venue import BybitVenue
    from simulator.server import PaperExchange

PRIVATE_TOPICS = frozenset(
    {"order", "execution", "execution.fast", "position", "wallet", "greeks", "dcp"}
)


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


class BybitHub:
    """Tracks Bybit WS connections and routes venue events to subscribers."""

    def __init__(self, sim: PaperExchange, venue: BybitVenue) -> None:
        self.sim = sim
        self.venue = venue
        self.private: dict[Connection, bool] = {}  # connection -> authenticated
        self.public: set[Connection] = set()
        self.by_topic: dict[str, set[Connection]] = {}
        self._msg = 0
        self._cs = 0
        venue.publish = self.publish_private

    # ---- publishing
    def has_subscribers(self, topic: str) -> bool:
        return bool(self.by_topic.get(topic))

    def publish_private(self, topic: str, rows: list[dict[str, Any]]) -> None:
        conns = self.by_topic.get(topic)
        if not conns:
            return
        self._msg += 1
        text = _dumps(
            {
                "id": f"{self._msg:016x}{secrets.token_hex(4)}",
                "topic": topic,
                "creationTime": self.sim.clock.now_ms(),
                "data": rows,
            }
        )
        for c in list(conns):
            if c.kind == "private":
                c.send(text)

    def publish_ticker(self, symbol: str, conns: set[Connection] | None = None) -> None:
        topic = f"tickers.{symbol}"
        targets = conns if conns is not None else self.by_topic.get(topic)
        if not targets:
            return
        now = self.sim.clock.now_ms()
        self._cs += 1
        text = _dumps(
            {
                "topic": topic,
                "type": "snapshot",
                "data": BF.ticker(self.sim.engine, symbol, self.sim.stats, now),
                "cs": self._cs,
                "ts": now,
            }
        )
        for c in list(targets):
            c.send(text)

    def publish_all_tickers(self) -> None:
        for sym in self.sim.engine.markets:
            self.publish_ticker(sym)

    # ---- lifecycle
    def drop_all(self, kind: str = "all") -> int:
        conns: list[Connection] = []
        if kind in ("all", "market"):
            conns.extend(self.public)
        if kind in ("all", "user"):
            conns.extend(self.private)
        for c in conns:
            c.drop()
        return len(conns)

    async def close_all(self) -> None:
        for c in list(self.public) + list(self.private):
            with contextlib.suppress(Exception):
                await c.ws.close(code=1001, message=b"server shutdown")
            c.drop()

    def _forget(self, conn: Connection) -> None:
        for topic in list(conn.streams):
            subs = self.by_topic.get(topic)
            if subs is not None:
                subs.discard(conn)
        conn.streams.clear()
        self.private.pop(conn, None)
        self.public.discard(conn)

    # ---- handlers
    async def handle_private(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, "private")

    async def handle_public(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, "public")

    async def _serve(self, request: web.Request, kind: str) -> web.StreamResponse:
        if self.sim.ws_refusing():
            return web.Response(status=503, text="Service Unavailable")
        ws = web.WebSocketResponse(heartbeat=None, autoping=True, max_msg_size=1 << 20)
        await ws.prepare(request)
        conn = Connection(ws, kind, False, request.transport)
        conn.opened_ms = self.sim.clock.now_ms()
        conn.writer = asyncio.create_task(conn.run_writer())
        conn_id = secrets.token_hex(10)
        if kind == "private":
            self.private[conn] = False
        else:
            self.public.add(conn)
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    self._on_message(conn, conn_id, msg.data)
        finally:
            self._forget(conn)
            with contextlib.suppress(asyncio.QueueFull):
                conn.queue.put_nowait(None)
            if conn.writer is not None:
                conn.writer.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await conn.writer
        return ws

    def _on_message(self, conn: Connection, conn_id: str, data: str) -> None:
        try:
            req = json.loads(data)
            op = req.get("op")
            args = req.get("args")
            req_id = req.get("req_id")
        except (ValueError, AttributeError):
            conn.send(_dumps({"success": False, "ret_msg": "error:invalid op", "conn_id": conn_id}))
            return
        base: dict[str, Any] = {"conn_id": conn_id, "op": op}
        if req_id is not None:
            base["req_id"] = req_id
        private = conn.kind == "private"
        if op == "ping":
            if private:
                now = str(self.sim.clock.now_ms())
                conn.send(_dumps({**base, "op": "pong", "args": [now]}))
            else:
                conn.send(_dumps({**base, "success": True, "ret_msg": "pong"}))
        elif op == "auth" and private:
            error = self.sim.bybit_auth.check_ws(args, self.sim.auth_now_ms())
            if error is None:
                self.private[conn] = True
                conn.send(_dumps({**base, "success": True, "ret_msg": ""}))
            else:
                request = {"op": "auth", "args": args}
                conn.send(_dumps({**base, "success": False, "ret_msg": error, "request": request}))
        elif op in ("subscribe", "unsubscribe") and isinstance(args, list):
            self._subscription(conn, base, op, [str(a) for a in args])
        else:
            conn.send(_dumps({**base, "success": False, "ret_msg": "error:invalid op"}))

    def _subscription(
        self, conn: Connection, base: dict[str, Any], op: str, topics: list[str]
    ) -> None:
        private = conn.kind == "private"
        if private and not self.private.get(conn):
            conn.send(_dumps({**base, "success": False, "ret_msg": "Request not authorized"}))
            return
        for t in topics:
            ok = t in PRIVATE_TOPICS if private else self._public_topic_ok(t)
            if not ok:
                conn.send(
                    _dumps(
                        {**base, "success": False, "ret_msg": f"error:handler not found,topic:{t}"}
                    )
                )
                return
        if op == "unsubscribe":
            for t in topics:
                conn.streams.discard(t)
                self.by_topic.get(t, set()).discard(conn)
            conn.send(_dumps({**base, "success": True, "ret_msg": ""}))
            return
        for t in topics:
            conn.streams.add(t)
            self.by_topic.setdefault(t, set()).add(conn)
        conn.send(_dumps({**base, "success": True, "ret_msg": ""}))
        if not private:
            for t in topics:
                if t.startswith("tickers."):
                    self.publish_ticker(t.split(".", 1)[1], {conn})

    def _public_topic_ok(self, topic: str) -> bool:
        parts = topic.split(".")
        return len(parts) == 2 and parts[0] == "tickers" and parts[1] in self.sim.engine.markets


def add_routes(app: web.Application, hub: BybitHub) -> None:
    app.router.add_get("/v5/private", hub.handle_private)
    app.router.add_get("/v5/public/linear", hub.handle_public)
