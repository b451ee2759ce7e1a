"""WebSocket streams: market data and the user-data stream, Binance USD-M format.

Paths served (ccxt.pro 4.5.90 opens ``<ws>/market/ws/<n>``, ``<ws>/public/ws/<n>``
and ``<ws>/private/ws?listenKey=...``):

* raw streams: ``/ws``, ``/market/ws``, ``/public/ws`` (optionally ``/<stream>`` or a
  numeric connection index appended) with ``{"method":"SUBSCRIBE",...}`` frames;
* combined streams: ``/stream``, ``/market/stream``, ``/public/stream`` with
  ``?streams=a/b`` - payloads wrapped as ``{"stream": name, "data": ...}``;
* user data: ``/private/ws?listenKey=K``, ``/private/ws/K`` and ``/ws/K``.

Each connection has a bounded outgoing queue drained by its own task, so
engine callbacks (synchronous) can publish without awaiting; a consumer that
falls too far behind is disconnected, as Binance does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

if TYPE_CHECKING:
    from simulator.server import PaperExchange

log = logging.getLogger(__name__)

QUEUE_LIMIT = 10_000
CLOSE = "\x00close"  # queue marker: close the socket once what was queued before is sent


class Connection:
    """One client socket: its subscriptions and a writer task."""

    def __init__(
        self,
        ws: web.WebSocketResponse,
        kind: str,
        combined: bool,
        transport: asyncio.Transport | None = None,
    ) -> None:
        self.ws = ws
        self.transport = transport
        self.kind = kind  # "market" | "user"
        self.combined = combined
        self.streams: set[str] = set()
        self.queue: asyncio.Queue[str | None] = asyncio.Queue(QUEUE_LIMIT)
        self.writer: asyncio.Task[None] | None = None
        # simulated time the connection opened (harsh stream_cut_ms); None: not cut
        self.opened_ms: int | None = None

    def send(self, text: str) -> None:
        try:
            self.queue.put_nowait(text)
        except asyncio.QueueFull:
            self.drop()

    def send_stream(self, stream: str, payload: Any) -> None:
        if self.combined:
            self.send(json.dumps({"stream": stream, "data": payload}, separators=(",", ":")))
        else:
            self.send(json.dumps(payload, separators=(",", ":")))

    def close_after_sent(self) -> None:
        """Close the socket (a close frame) once everything queued so far is sent."""
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait(CLOSE)

    def drop(self) -> None:
        """Abort the TCP connection without a close frame (a network drop)."""
        if self.transport is not None:
            self.transport.abort()
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait(None)

    async def run_writer(self) -> None:
        while True:
            text = await self.queue.get()
            if text is None or self.ws.closed:
                return
            if text is CLOSE:
                with contextlib.suppress(Exception):
                    await self.ws.close()
                return
            try:
                await self.ws.send_str(text)
            except (ConnectionError, RuntimeError):
                return


def normalize_stream(name: str) -> str:
    """Binance stream names are case-insensitive apart from the event part."""
    return name.strip().lower()


class StreamHub:
    """Tracks connections and routes published events to subscribers."""

    def __init__(self, sim: PaperExchange) -> None:
        self.sim = sim
        self.market_conns: set[Connection] = set()
        self.user_conns: dict[Connection, str] = {}
        self.by_stream: dict[str, set[Connection]] = {}

    # ---- publishing
    def has_subscribers(self, stream: str) -> bool:
        return bool(self.by_stream.get(stream))

    def publish(self, stream: str, payload: Any) -> None:
        conns = self.by_stream.get(stream)
        if not conns:
            return
        for c in list(conns):
            c.send_stream(stream, payload)

    def publish_user(self, payload: dict[str, Any]) -> None:
        if not self.user_conns:
            return
        text = json.dumps(payload, separators=(",", ":"))
        for c in list(self.user_conns):
            c.send(text)

    def subscribed_streams(self) -> list[str]:
        return [s for s, c in self.by_stream.items() if c]

    # ---- lifecycle
    def _subscribe(self, conn: Connection, streams: list[str]) -> None:
        for s in streams:
            s = normalize_stream(s)
            conn.streams.add(s)
            self.by_stream.setdefault(s, set()).add(conn)
            self.sim.on_subscribe(conn, s)

    def _unsubscribe(self, conn: Connection, streams: list[str]) -> None:
        for s in streams:
            s = normalize_stream(s)
            conn.streams.discard(s)
            subs = self.by_stream.get(s)
            if subs is not None:
                subs.discard(conn)

    def _forget(self, conn: Connection) -> None:
        self._unsubscribe(conn, list(conn.streams))
        self.market_conns.discard(conn)
        self.user_conns.pop(conn, None)

    def drop_all(self, kind: str = "all") -> int:
        """Abort every connection of ``kind`` ("all", "market" or "user")."""
        conns: list[Connection] = []
        if kind in ("all", "market"):
            conns.extend(self.market_conns)
        if kind in ("all", "user"):
            conns.extend(self.user_conns)
        for c in conns:
            c.drop()
        return len(conns)

    def drop_listen_key(self, key: str, graceful: bool = False) -> None:
        """Cut the streams of ``key``: abort them, or (``graceful``) close them once
        what is queued (e.g. ``listenKeyExpired``) has been sent."""
        for c, k in list(self.user_conns.items()):
            if k == key:
                if graceful:
                    c.close_after_sent()
                else:
                    c.drop()

    async def close_all(self) -> None:
        conns = list(self.market_conns) + list(self.user_conns)
        for c in conns:
            with contextlib.suppress(Exception):
                await c.ws.close(code=1001, message=b"server shutdown")
            c.drop()

    # ---- handlers
    async def handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path.rstrip("/")
        parts = [p for p in path.split("/") if p]
        # parts: [prefix?, "ws"|"stream", tail?]
        head = parts[0] if parts else ""
        if head in ("market", "public", "private"):
            parts = parts[1:]
        endpoint = parts[0] if parts else ""
        tail = "/".join(parts[1:])
        listen_key = request.query.get("listenKey")
        if head == "private" and not listen_key and tail:
            listen_key = tail
        if endpoint == "ws" and tail and self.sim.has_listen_key(tail):
            listen_key = tail
        if listen_key is not None or head == "private":
            return await self._user(request, listen_key or "")
        combined = endpoint == "stream"
        initial: list[str] = []
        if combined and request.query.get("streams"):
            initial = request.query["streams"].split("/")
        elif tail and not tail.isdigit():
            initial = tail.split("/")
        return await self._market(request, combined, initial)

    async def _prepare(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=None, autoping=True, max_msg_size=1 << 20)
        await ws.prepare(request)
        return ws

    async def _market(
        self, request: web.Request, combined: bool, initial: list[str]
    ) -> web.StreamResponse:
        if self.sim.ws_refusing():
            return web.Response(status=503, text="Service Unavailable")
        ws = await self._prepare(request)
        conn = Connection(ws, "market", combined, request.transport)
        conn.opened_ms = self.sim.clock.now_ms()
        conn.writer = asyncio.create_task(conn.run_writer())
        self.market_conns.add(conn)
        try:
            if initial:
                self._subscribe(conn, initial)
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                self._on_market_message(conn, msg.data)
        finally:
            self._forget(conn)
            await self._stop_writer(conn)
        return ws

    def _on_market_message(self, conn: Connection, data: str) -> None:
        try:
            req = json.loads(data)
            method = req.get("method")
            req_id = req.get("id")
            params = req.get("params", [])
        except (ValueError, AttributeError):
            conn.send(json.dumps({"error": {"code": 3, "msg": "Invalid JSON"}}))
            return
        if method == "SUBSCRIBE" and isinstance(params, list):
            conn.send(json.dumps({"result": None, "id": req_id}))
            self._subscribe(conn, [str(p) for p in params])
        elif method == "UNSUBSCRIBE" and isinstance(params, list):
            self._unsubscribe(conn, [str(p) for p in params])
            conn.send(json.dumps({"result": None, "id": req_id}))
        elif method == "LIST_SUBSCRIPTIONS":
            conn.send(json.dumps({"result": sorted(conn.streams), "id": req_id}))
        else:
            conn.send(json.dumps({"error": {"code": 2, "msg": "Invalid request"}, "id": req_id}))

    async def _user(self, request: web.Request, listen_key: str) -> web.StreamResponse:
        if not self.sim.has_listen_key(listen_key) or self.sim.ws_refusing():
            # Binance accepts the upgrade and closes immediately on a bad key
            ws = await self._prepare(request)
            await ws.close(code=1008, message=b"invalid listenKey")
            return ws
        ws = await self._prepare(request)
        conn = Connection(ws, "user", False, request.transport)
        conn.opened_ms = self.sim.clock.now_ms()
        conn.writer = asyncio.create_task(conn.run_writer())
        self.user_conns[conn] = listen_key
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    # the user stream takes no requests; answer like a raw stream would
                    with contextlib.suppress(ValueError, AttributeError):
                        req = json.loads(msg.data)
                        conn.send(json.dumps({"result": None, "id": req.get("id")}))
        finally:
            self._forget(conn)
            await self._stop_writer(conn)
        return ws

    @staticmethod
    async def _stop_writer(conn: Connection) -> None:
        with contextlib.suppress(asyncio.QueueFull):
            conn.queue.put_nowait(None)
        if conn.writer is not None:
            conn.writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await conn.writer


def add_routes(app: web.Application, hub: StreamHub) -> None:
    for prefix in ("", "/market", "/public", "/private"):
        for ep in ("ws", "stream"):
            app.router.add_get(f"{prefix}/{ep}", hub.handle)
            app.router.add_get(f"{prefix}/{ep}/{{tail:.*}}", hub.handle)
