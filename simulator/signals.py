"""``SignalService``: a simulated signal service, WebSocket on 127.0.0.1.

The service posguard connects to is not ours; this one speaks its wire format
(`domain/signal_wire.py`, default field names) so the ingest client can be tested
against a real socket, faults included. Usage::

    async with SignalService(token="t", heartbeat_s=5) as svc:
        ...  # a client connects to svc.url with "Authorization: Bearer t"
        await svc.emit_wave(size=20)                     # one wave, one message
        await svc.emit_wave(size=5, spread_s=2)          # one message per signal
        await svc.emit_wave(size=10, disconnect_after=4) # drop everyone mid-wave
        await svc.malformed(50)                          # garbage of many kinds
        await svc.burst(10_000)                          # as fast as possible
        assert svc.sent == ["1", "2", ...]               # every signal, in order

Connection: ``ws://127.0.0.1:PORT/signals`` (also ``/``), token as
``Authorization: Bearer <token>`` or ``?token=<token>``; a wrong or missing token
gets HTTP 401 before the upgrade.

Messages sent (JSON text unless said otherwise):

- heartbeat every ``heartbeat_s``: ``{"type": "heartbeat", "at": ISO}``;
- a wave sent whole: ``{"type": "wave", "wave": k, "signals": [...]}``; spread over
  ``spread_s``: one signal object per message (or ``{"type": "wave", ...}`` chunks
  of ``per_message``);
- a resumed backlog: ``{"type": "resume", "signals": [...]}`` chunks;
- faults: duplicates (a signal sent again later in its wave), a shuffled wave,
  garbage (`malformed`, some as binary frames), disconnects (close frame, or a TCP
  abort with ``abort=True``).

Resume (``resume=True``): a client that connects with ``?after=<id>``, or sends
``{"type": "resume", "after": <id>}``, first gets every signal emitted after that
id (by emission order; an id never emitted but numeric means "ids greater than
it"; any other unknown id means everything kept) and before it connected, then the
live ones: nothing twice, nothing missing. With ``resume=False`` ``after`` is
ignored and a client gets only what is emitted while it is connected.

Signals emitted while nobody is connected (or cut off by ``disconnect_after``) are
still emitted: they are in ``sent`` and ``history`` and a resuming client gets them.
All methods must be called from the event loop the service runs in.

Run standalone (for ``make dev``)::

    python -m simulator.signals --port 8765 --token dev --period 180 --size 5
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import random
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiohttp import WSMsgType, web

from simulator.markets import DEFAULT_MARKETS

log = logging.getLogger(__name__)

DEFAULT_SYMBOLS: tuple[str, ...] = tuple(m.symbol for m in DEFAULT_MARKETS)
ACTIONS: tuple[str, ...] = ("BUY", "SELL")
MAX_PER_MESSAGE = 250
"""Signals per message for bursts and resumed backlogs: ~190 bytes each, so a
message stays under the 64 KB posguard's parser accepts by default."""
QUEUE_LIMIT = 100_000
"""Messages queued for one client; a client further behind is dropped."""


@dataclass(frozen=True, slots=True)
class _Close:
    """Writer sentinel: close the socket (after everything queued before it)."""

    abort: bool = False
    code: int = 1012  # service restart
    message: bytes = b"disconnect"


class _Client:
    """One connected socket: an outgoing queue drained by its own writer task."""

    def __init__(self, ws: web.WebSocketResponse, request: web.Request, joined_at: int) -> None:
        self.ws = ws
        self.transport = request.transport
        self.joined_at = joined_at  # len(history) when it connected
        self.queue: asyncio.Queue[str | bytes | _Close] = asyncio.Queue()
        self.writer: asyncio.Task[None] | None = None
        self.closing = False

    def send(self, data: str | bytes) -> None:
        if self.closing:
            return
        if self.queue.qsize() >= QUEUE_LIMIT:
            log.warning("signal client too slow: dropped")
            self.close(abort=True)
            return
        self.queue.put_nowait(data)

    def close(self, *, abort: bool = False) -> None:
        if not self.closing:
            self.closing = True
            self.queue.put_nowait(_Close(abort=abort))

    async def run_writer(self) -> None:
        while True:
            item = await self.queue.get()
            try:
                if isinstance(item, _Close):
                    if item.abort and self.transport is not None:
                        self.transport.abort()
                    else:
                        await self.ws.close(code=item.code, message=item.message)
                    return
                if self.ws.closed:
                    return
                if isinstance(item, bytes):
                    await self.ws.send_bytes(item)
                else:
                    await self.ws.send_str(item)
            except (ConnectionError, RuntimeError):
                return


class SignalService:
    """A signal service simulator; see the module's docstring.

    Options: ``token`` (generated if None), ``heartbeat_s`` (None or 0: none),
    ``resume``, ``symbols`` and ``exchange`` of generated signals, ``seed`` (the
    generator, duplicates and shuffles are reproducible), ``duplicate_rate`` and
    ``out_of_order`` (defaults of `emit_wave`, settable at any time),
    ``wave_period_s``/``wave_size`` (emit waves on a schedule once started).
    Records: ``sent`` (ids, as strings, of every distinct signal emitted, in
    emission order), ``history`` (those signals), ``duplicates`` (ids sent twice),
    ``malformed_sent`` (garbage messages sent), ``waves`` (waves emitted).
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str | None = None,
        heartbeat_s: float | None = 5.0,  # float ok: seconds
        resume: bool = True,
        symbols: Sequence[str] = DEFAULT_SYMBOLS,
        exchange: str = "binance",
        seed: int | None = None,
        duplicate_rate: float = 0.0,  # float ok: a probability
        out_of_order: bool = False,
        first_id: int = 1,
        wave_period_s: float | None = None,  # float ok: seconds
        wave_size: int = 5,
    ) -> None:
        self.host = host
        self._port = port
        self.token = token or secrets.token_urlsafe(24)
        self.heartbeat_s = heartbeat_s
        self.resume = resume
        self.symbols = list(symbols)
        self.exchange = exchange
        self.rng = random.Random(seed)
        self.duplicate_rate = duplicate_rate
        self.out_of_order = out_of_order
        self.wave_period_s = wave_period_s
        self.wave_size = wave_size
        self.sent: list[str] = []
        self.history: list[dict[str, Any]] = []
        self.duplicates: list[str] = []
        self.malformed_sent = 0
        self.waves = 0
        self.url = ""
        self._next_id = first_id
        self._positions: dict[str, int] = {}  # id -> index in history (first emission)
        self._clients: set[_Client] = set()
        self._runner: web.AppRunner | None = None
        self._tasks: list[asyncio.Task[None]] = []

    # ------------------------------------------------------------- lifecycle
    async def start(self) -> SignalService:
        app = web.Application()
        app.router.add_get("/signals", self._handle)
        app.router.add_get("/", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self._port, reuse_address=True)
        await site.start()
        server = site._server  # aiohttp keeps the asyncio Server here
        assert server is not None
        port = int(server.sockets[0].getsockname()[1])  # type: ignore[attr-defined]
        self.url = f"ws://{self.host}:{port}/signals"
        if self.heartbeat_s:
            self._tasks.append(asyncio.create_task(self._heartbeats(self.heartbeat_s)))
        if self.wave_period_s:
            self.start_schedule(self.wave_period_s, self.wave_size)
        return self

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        for client in list(self._clients):
            client.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> SignalService:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def connections(self) -> int:
        """Clients connected now (counted from before the upgrade's reply)."""
        return len(self._clients)

    # ------------------------------------------------------------- emitting
    def new_signal(
        self, *, symbols: Sequence[str] | None = None, at: datetime | None = None
    ) -> dict[str, Any]:
        """One generated signal (default field names), with the next id."""
        signal_id = self._next_id
        self._next_id += 1
        rng = self.rng
        return {
            "id": signal_id,
            "pair_symbol": rng.choice(list(symbols or self.symbols)),
            "exchange_name": self.exchange,
            "score_week": rng.randint(-10_000, 10_000) / 100,  # float ok: a JSON number
            "score_month": rng.randint(-10_000, 10_000) / 100,  # float ok: a JSON number
            "recommended_action": rng.choice(ACTIONS),
            "timestamp": (at or datetime.now(UTC)).isoformat(),
        }

    async def emit_wave(
        self,
        signals: list[dict[str, Any]] | None = None,
        *,
        size: int = 10,
        symbols: Sequence[str] | None = None,
        spread_s: float = 0.0,  # float ok: seconds
        per_message: int | None = None,
        duplicate_rate: float | None = None,  # float ok: a probability
        out_of_order: bool | None = None,
        disconnect_after: int | None = None,
        abort: bool = False,
    ) -> list[dict[str, Any]]:
        """Emit one wave; returns its signals (in emission order, without copies).

        ``signals`` are sent as given; None generates ``size`` of them (one
        timestamp for the wave). ``spread_s`` = 0 sends the wave as one message;
        > 0 sends it in messages of ``per_message`` (default 1: a bare signal
        object) evenly over ``spread_s``. ``duplicate_rate``: each signal is sent
        again, later in the wave, with that probability. ``out_of_order``: the
        wave is shuffled. ``disconnect_after=n``: every connection is closed
        (``abort``: TCP reset) right after the wave's n-th signal; the rest of the
        wave is still emitted (to new and resuming clients).
        """
        if signals is None:
            at = datetime.now(UTC)
            signals = [self.new_signal(symbols=symbols, at=at) for _ in range(size)]
        wave = list(signals)
        if self.out_of_order if out_of_order is None else out_of_order:
            self.rng.shuffle(wave)
        rate = self.duplicate_rate if duplicate_rate is None else duplicate_rate
        items: list[tuple[dict[str, Any], bool]] = [(s, False) for s in wave]
        for signal in wave:
            if rate > 0 and self.rng.random() < rate:  # a copy, somewhere after it
                origin = next(i for i, (s, c) in enumerate(items) if s is signal and not c)
                items.insert(self.rng.randint(origin + 1, len(items)), (signal, True))
        self.waves += 1
        wave_no = self.waves
        cut = len(items) if disconnect_after is None else max(0, disconnect_after)
        chunk = per_message or (1 if spread_s > 0 else max(1, len(items)))
        parts = [items[:cut], items[cut:]]
        messages = [
            (p[k : k + chunk], n) for n, p in enumerate(parts) for k in range(0, len(p), chunk)
        ]
        pause = spread_s / max(1, len(messages) - 1) if spread_s > 0 else 0.0  # float ok
        cut_done = disconnect_after is None
        for k, (batch, part) in enumerate(messages):
            if part == 1 and not cut_done:
                self.disconnect_all(abort=abort)
                cut_done = True
            if k and pause:
                await asyncio.sleep(pause)
            self._emit(batch, wave_no, bare=spread_s > 0 and len(batch) == 1)
        if not cut_done:
            self.disconnect_all(abort=abort)
        await asyncio.sleep(0)  # let writers start
        return wave

    async def burst(
        self,
        n: int = 10_000,
        *,
        per_message: int = MAX_PER_MESSAGE,
        symbols: Sequence[str] | None = None,
    ) -> list[dict[str, Any]]:
        """Emit ``n`` generated signals at once, in wave messages of ``per_message``."""
        at = datetime.now(UTC)
        signals = [self.new_signal(symbols=symbols, at=at) for _ in range(n)]
        self.waves += 1
        for k in range(0, n, per_message):
            self._emit([(s, False) for s in signals[k : k + per_message]], self.waves)
        await asyncio.sleep(0)
        return signals

    async def run_schedule(
        self,
        period_s: float,  # float ok: seconds
        size: int = 5,
        *,
        count: int | None = None,
        **wave_options: Any,
    ) -> None:
        """Emit a wave of ``size`` every ``period_s`` (``count`` waves, or for ever)."""
        done = 0
        while count is None or done < count:
            try:
                await self.emit_wave(size=size, **wave_options)
            except Exception:  # a schedule keeps going
                log.exception("scheduled wave failed")
            done += 1
            if count is None or done < count:
                await asyncio.sleep(period_s)

    def start_schedule(
        self,
        period_s: float,  # float ok: seconds
        size: int = 5,
        **wave_options: Any,
    ) -> asyncio.Task[None]:
        """`run_schedule` in the background; stopped with the service."""
        task = asyncio.create_task(self.run_schedule(period_s, size, **wave_options))
        self._tasks.append(task)
        return task

    # ---------------------------------------------------------------- faults
    def disconnect_all(self, *, abort: bool = False) -> int:
        """Close every connection after what is already queued for it (a close
        frame, code 1012), or ``abort`` the TCP connection (queued data may be
        lost). Returns how many. Nothing emitted afterwards reaches them."""
        clients = list(self._clients)
        for client in clients:
            self._clients.discard(client)
            client.close(abort=abort)
        return len(clients)

    def send_raw(self, data: str | bytes) -> None:
        """Send ``data`` as it is to every connected client: a ``str`` as a text
        frame, ``bytes`` as a binary frame (the only way to send bytes that are not
        UTF-8). Nothing is recorded (``sent``, ``history``, ``malformed_sent``).

        A text frame must be UTF-8, so a ``str`` holding a lone surrogate raises
        ValueError here instead of silently stopping the clients' writers.
        """
        if isinstance(data, str):
            try:
                data.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError("a text frame must be valid UTF-8: send bytes") from None
        self._broadcast(data)

    async def malformed(self, n: int = 1) -> int:
        """Send ``n`` garbage messages, cycling through many kinds (invalid JSON,
        non-UTF-8 binary frames, wrong types, NaN/Infinity, huge strings, deep
        nesting, unknown exchange/action, ...). Each parses to Rejected only."""
        for k in range(n):
            data = _garbage(k, self.malformed_sent + 1)
            self.malformed_sent += 1
            self._broadcast(data)
        await asyncio.sleep(0)
        return n

    # -------------------------------------------------------------- internals
    def _emit(
        self, batch: list[tuple[dict[str, Any], bool]], wave_no: int, bare: bool = False
    ) -> None:
        for signal, copy in batch:
            signal_id = signal.get("id")
            key = None if signal_id is None else str(signal_id)
            if copy:
                if key is not None:
                    self.duplicates.append(key)
                continue
            if key is not None:
                self._positions.setdefault(key, len(self.history))
                self.sent.append(key)
            self.history.append(signal)
        payload: Any
        if bare:
            payload = batch[0][0]
        else:
            payload = {"type": "wave", "wave": wave_no, "signals": [s for s, _ in batch]}
        self._broadcast(json.dumps(payload, separators=(",", ":")))

    def _broadcast(self, data: str | bytes) -> None:
        for client in list(self._clients):
            client.send(data)

    def _position_after(self, after: str) -> int:
        """Index in history of the first signal after id ``after``."""
        position = self._positions.get(after)
        if position is not None:
            return position + 1
        try:
            bound = int(after)
        except ValueError:
            return 0
        for i, signal in enumerate(self.history):
            with contextlib.suppress(TypeError, ValueError):
                if int(signal.get("id")) > bound:  # type: ignore[arg-type]
                    return i
        return len(self.history)

    def _send_backlog(self, client: _Client, after: str) -> None:
        backlog = self.history[self._position_after(after) : client.joined_at]
        for k in range(0, len(backlog), MAX_PER_MESSAGE):
            payload = {"type": "resume", "signals": backlog[k : k + MAX_PER_MESSAGE]}
            client.send(json.dumps(payload, separators=(",", ":")))

    def _authorized(self, request: web.Request) -> bool:
        given = request.query.get("token")
        header = request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            given = value.strip()
        return given is not None and secrets.compare_digest(
            given.encode("utf-8", "replace"), self.token.encode()
        )

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            return web.Response(
                status=401, text="unauthorized", headers={"WWW-Authenticate": "Bearer"}
            )
        ws = web.WebSocketResponse(heartbeat=None, autoping=True, max_msg_size=1 << 20)
        # Registered (and its backlog queued) before the upgrade's reply, so a
        # client that sees the upgrade misses nothing emitted afterwards.
        client = _Client(ws, request, joined_at=len(self.history))
        self._clients.add(client)
        after = request.query.get("after")
        if self.resume and after is not None:
            self._send_backlog(client, after)
        try:
            await ws.prepare(request)
            client.writer = asyncio.create_task(client.run_writer())
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    self._on_message(client, msg.data)
        finally:
            self._clients.discard(client)
            client.close()
            if client.writer is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await asyncio.wait_for(client.writer, 5)
        return ws

    def _on_message(self, client: _Client, data: str) -> None:
        try:
            message = json.loads(data)
        except ValueError:
            return
        if (
            self.resume
            and isinstance(message, dict)
            and message.get("type") == "resume"
            and message.get("after") is not None
        ):
            self._send_backlog(client, str(message["after"]))

    async def _heartbeats(self, period_s: float) -> None:  # float ok: seconds
        while True:
            await asyncio.sleep(period_s)
            beat = json.dumps({"type": "heartbeat", "at": datetime.now(UTC).isoformat()})
            self._broadcast(beat)


def _garbage(kind: int, k: int) -> str | bytes:
    """The ``kind``-th sort of malformed message (cycling); ``k`` numbers it."""
    good: dict[str, Any] = {
        "id": f"bad-{k}",
        "pair_symbol": "BTCUSDT",
        "exchange_name": "binance",
        "score_week": 1.5,
        "score_month": 2.5,
        "recommended_action": "BUY",
        "timestamp": datetime.now(UTC).isoformat(),
    }

    def signal(**changes: Any) -> str:
        return json.dumps({**good, **changes})

    makers: list[Any] = [
        lambda: signal()[:-7],  # truncated: invalid JSON
        lambda: b"\xff\xfe\x00\x80garbage\xc3\x28" + bytes([k % 256]),  # not UTF-8, binary
        lambda: json.dumps(
            {
                "id": {"nested": k},
                "pair_symbol": 42,
                "exchange_name": True,
                "score_week": "high",
                "score_month": [],
                "recommended_action": 7,
                "timestamp": "yesterday",
            }
        ),
        lambda: signal(score_week=float("nan")),  # NaN literal
        lambda: signal(score_month=float("inf")),  # Infinity literal
        lambda: signal(pair_symbol="X" * 50_000),  # huge string
        lambda: signal(pair_symbol="Y" * 100_000),  # larger than a message may be
        lambda: json.dumps(["not", "signals", k]),
        lambda: json.dumps({"type": "wave", "signals": "nope"}),
        lambda: json.dumps({"type": "wave", "signals": [None, 1, "x", [k]]}),
        lambda: "[" * 5_000 + "]" * 5_000,  # deeper than the decoder goes
        lambda: signal(exchange_name="mtgox"),
        lambda: signal(recommended_action="YOLO"),
        lambda: signal(timestamp=5),
        lambda: signal(id=f"bad\x00{k}"),
        lambda: json.dumps(None),
        lambda: "",
        lambda: b"\x00\x01\x02" * 10,  # binary, valid UTF-8 control bytes: invalid JSON
    ]
    return makers[kind % len(makers)]()  # type: ignore[no-any-return]


async def _serve(args: argparse.Namespace) -> None:
    service = SignalService(
        port=args.port,
        token=args.token,
        heartbeat_s=args.heartbeat,
        symbols=args.symbols.split(",") if args.symbols else DEFAULT_SYMBOLS,
        seed=args.seed,
        wave_period_s=args.period or None,
        wave_size=args.size,
    )
    async with service:
        print(f"signal service on {service.url} token {service.token}", flush=True)
        await asyncio.Event().wait()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Simulated signal service (WebSocket).")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--token", default=None)
    parser.add_argument("--heartbeat", type=float, default=5.0)
    parser.add_argument(
        "--period", type=float, default=180.0, help="seconds between waves (0: none)"
    )
    parser.add_argument("--size", type=int, default=5, help="signals per wave")
    parser.add_argument(
        "--symbols", default="", help="comma-separated (default: the paper exchange's)"
    )
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args))


if __name__ == "__main__":
    main()
