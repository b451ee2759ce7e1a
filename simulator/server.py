"""``PaperExchange``: the engine served over HTTP/WebSocket plus an admin API.

Usage::

    async with PaperExchange(symbols=["ADAUSDT"]) as sim:
        ex = binanceusdm_client(sim, api_key=sim.api_key, secret=sim.api_secret)
        await sim.set_price("BTCUSDT", Decimal("95000"))
        ...
        truth = sim.ground_truth()

Everything binds 127.0.0.1; ports default to 0 (ephemeral). The REST API and
the WebSocket streams share one port (``rest_url`` / ``ws_url``); the admin API
has its own (``admin_url``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from decimal import Decimal
from typing import Any

from aiohttp import web

from simulator import formats as F
from simulator.auth import Authenticator
from simulator.bybit_auth import BybitAuthenticator
from simulator.bybit_rest import BybitLimiter
from simulator.bybit_rest import build_app as build_bybit_app
from simulator.bybit_venue import BybitConfig, BybitVenue
from simulator.bybit_ws import BybitHub
from simulator.clock import RealClock, wall_ms
from simulator.engine import AccountEvent, AlgoEvent, Engine, EngineConfig, Event, OrderEvent
from simulator.faults import FaultInjector, FaultRule
from simulator.harsh import HarshConfig, preset
from simulator.markets import Market, build_markets
from simulator.model import ZERO, AlgoOrder, Order
from simulator.prices import PriceSource, rebase
from simulator.ratelimit import WeightLimiter
from simulator.rest import build_app
from simulator.ws import Connection, StreamHub, add_routes

log = logging.getLogger(__name__)

LISTEN_KEY_TTL_MS = 60 * 60 * 1000
VENUES = ("binance", "bybit")


@dataclass(slots=True)
class _SymbolStats:
    open: Decimal
    high: Decimal
    low: Decimal
    volume: Decimal = ZERO
    quote_volume: Decimal = ZERO
    count: int = 0
    last_qty: Decimal = ZERO


@dataclass(slots=True)
class Stats:
    """Counters and rolling 24h-ticker figures (since start, not a true 24h window)."""

    requests: int = 0
    errors: int = 0
    started_ms: int = field(default_factory=wall_ms)
    symbols: dict[str, _SymbolStats] = field(default_factory=dict)
    agg_id: int = 0
    book_id: int = 0

    def reset_symbols(self, engine: Engine) -> None:
        self.symbols = {s: _SymbolStats(p, p, p) for s, p in engine.mark.items()}

    def on_price(self, symbol: str, price: Decimal) -> None:
        st = self.symbols[symbol]
        if price > st.high:
            st.high = price
        if price < st.low:
            st.low = price

    def on_fill(self, symbol: str, price: Decimal, qty: Decimal) -> None:
        st = self.symbols[symbol]
        st.volume += qty
        st.quote_volume += price * qty
        st.count += 1
        st.last_qty = qty

    def ticker(self, engine: Engine, symbol: str, now: int) -> dict[str, Any]:
        st = self.symbols[symbol]
        last = engine.last[symbol]
        change = last - st.open
        pct = (change / st.open * 100).quantize(Decimal("0.001")) if st.open else ZERO
        vwap = st.quote_volume / st.volume if st.volume else last
        return {
            "symbol": symbol,
            "priceChange": F.fmt(change),
            "priceChangePercent": F.fmt(pct),
            "weightedAvgPrice": F.fmt8(vwap),
            "lastPrice": F.fmt(last),
            "lastQty": F.fmt(st.last_qty),
            "openPrice": F.fmt(st.open),
            "highPrice": F.fmt(st.high),
            "lowPrice": F.fmt(st.low),
            "volume": F.fmt(st.volume),
            "quoteVolume": F.fmt8(st.quote_volume),
            "openTime": max(self.started_ms, now - 86_400_000),
            "closeTime": now,
            "firstId": 1,
            "lastId": st.count,
            "count": st.count,
        }


class PaperExchange:
    """A Binance USD-M futures simulator reachable by unmodified ccxt.

    Contract: after ``await start()`` (or entering ``async with``) the REST/WS
    server listens on ``rest_url``/``ws_url`` and the admin API on
    ``admin_url``; ``stop()`` closes every socket and background task. All
    admin operations are also available as methods here. The engine runs in
    the event loop's thread; methods must be called from that loop.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        admin_port: int | None = 0,
        symbols: list[str] | None = None,
        markets: dict[str, Market] | None = None,
        seed: int = 0,
        price_source: PriceSource | None = None,
        tick_interval_ms: int = 1000,
        mark_interval_ms: int = 1000,
        api_key: str | None = None,
        api_secret: str | None = None,
        engine_config: EngineConfig | None = None,
        weight_limit: int = 2400,
        ban_after: int = 5,
        ban_ms: int = 120_000,
        auth_skew_ms: int = 0,
        venue: str = "binance",
        bybit_config: BybitConfig | None = None,
        hedge_mode: bool = False,
        harsh: HarshConfig | str | None = None,
    ) -> None:
        if venue not in VENUES:
            raise ValueError(f"venue must be one of {VENUES}, got {venue!r}")
        self.venue = venue
        self.host = host
        self._port = port
        self._admin_port = admin_port
        self.seed = seed
        self.markets = markets or build_markets(symbols)
        self.clock = RealClock()
        self.engine_config = engine_config or EngineConfig()
        # The harsh market's switches (all off by default; "harsh" turns all on). One
        # object, shared with every engine this exchange makes (reset keeps it).
        if isinstance(harsh, str):
            harsh = preset(harsh)
        self.harsh: HarshConfig = harsh or HarshConfig()
        self.api_key = api_key or "sim-" + secrets.token_hex(16)
        self.api_secret = api_secret or secrets.token_hex(32)
        self.auth = Authenticator({self.api_key: self.api_secret})
        self.limiter = WeightLimiter(weight_limit, ban_after, ban_ms)
        self.faults = FaultInjector(seed)
        self.hub = StreamHub(self)
        self.stats = Stats()
        self.price_source = price_source
        # Symbols whose price the admin set and holds: the price source leaves them
        # alone until released (`pin_price`, `release_price`); `walk_paused` holds all.
        self.pinned: set[str] = set()
        self.walk_paused = False
        self.tick_interval_ms = tick_interval_ms
        self.mark_interval_ms = mark_interval_ms
        self.auth_skew_ms = auth_skew_ms
        # Start (and reset) the account in hedge mode: every symbol LONG/SHORT
        self.hedge_mode = hedge_mode
        # Bybit venue (None on Binance): records/traps, signing, streams, limiter
        self.bybit: BybitVenue | None = None
        self.bybit_auth = BybitAuthenticator({self.api_key: self.api_secret})
        self.bybit_hub: BybitHub | None = None
        self.bybit_limiter: BybitLimiter | None = None
        if venue == "bybit":
            self.bybit = BybitVenue(self, bybit_config)
            self.bybit_hub = BybitHub(self, self.bybit)
        self.engine = self._new_engine()
        self._listen_keys: dict[str, int] = {}
        self._listen_keys_sim: dict[str, int] = {}  # simulated time of the last keepalive
        self._ws_refuse_until = 0
        self._runner: web.AppRunner | None = None
        self._admin_runner: web.AppRunner | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.rest_url = ""
        self.ws_url = ""
        self.admin_url = ""

    # ------------------------------------------------------------- lifecycle
    def _new_engine(self) -> Engine:
        engine = Engine(self.markets, self.clock, self.engine_config, self.harsh)
        if self.hedge_mode:
            engine.hedge_symbols = set(self.markets)
        engine.subscribe(self._on_event)
        self.stats.reset_symbols(engine)
        return engine

    async def start(self) -> PaperExchange:
        if self.bybit is not None:
            app = build_bybit_app(self, self.bybit)
        else:
            app = build_app(self)
            add_routes(app, self.hub)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self._port, reuse_address=True)
        await site.start()
        port = self._bound_port(site)
        self.rest_url = f"http://{self.host}:{port}"
        self.ws_url = f"ws://{self.host}:{port}"
        if self._admin_port is not None:
            from simulator.admin import build_admin_app

            self._admin_runner = web.AppRunner(
                build_admin_app(self), access_log=None, handle_signals=False
            )
            await self._admin_runner.setup()
            asite = web.TCPSite(self._admin_runner, self.host, self._admin_port, reuse_address=True)
            await asite.start()
            self.admin_url = f"http://{self.host}:{self._bound_port(asite)}"
        self._tasks.append(asyncio.create_task(self._housekeeping()))
        self._tasks.append(asyncio.create_task(self._mark_publisher()))
        if self.price_source is not None:
            self._tasks.append(asyncio.create_task(self._price_feed()))
        return self

    @staticmethod
    def _bound_port(site: web.TCPSite) -> int:
        server = site._server  # aiohttp keeps the asyncio Server here
        assert server is not None
        return int(server.sockets[0].getsockname()[1])  # type: ignore[attr-defined]

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks.clear()
        await self.hub.close_all()
        if self.bybit_hub is not None:
            await self.bybit_hub.close_all()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._admin_runner is not None:
            await self._admin_runner.cleanup()
            self._admin_runner = None

    async def __aenter__(self) -> PaperExchange:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ----------------------------------------------------------- background
    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(0.01)  # float ok: seconds
            try:
                self.engine.poll()
                self.expire_listen_keys()
                if self.harsh.stream_cut_ms > 0:
                    self.cut_streams()
            except Exception:  # keep the loop alive; an engine bug is logged
                log.exception("housekeeping failed")

    async def _mark_publisher(self) -> None:
        while True:
            await asyncio.sleep(self.mark_interval_ms / 1000)  # float ok: seconds
            try:
                self.publish_marks()
            except Exception:
                log.exception("mark publisher failed")

    async def _price_feed(self) -> None:
        assert self.price_source is not None
        start = self.clock.now_ms()
        while True:
            await asyncio.sleep(self.tick_interval_ms / 1000)  # float ok: seconds
            try:
                for sym, price in self.price_source.updates_until(self.clock.now_ms() - start):
                    if not self.walk_paused and sym not in self.pinned:
                        self.set_price(sym, price)
            except Exception:
                log.exception("price feed failed")

    # ------------------------------------------------------------ publishing
    def publish_marks(self, symbols: list[str] | None = None) -> None:
        if self.bybit_hub is not None:
            for s in symbols or list(self.markets):
                self.bybit_hub.publish_ticker(s)
        now = self.clock.now_ms()
        hub = self.hub
        arr: list[dict[str, Any]] | None = None
        for stream in ("!markprice@arr@1s", "!markprice@arr"):
            if hub.has_subscribers(stream):
                if arr is None:
                    arr = [F.ws_mark_price(self.engine, s, now) for s in self.markets]
                hub.publish(stream, arr)
        for s in symbols or list(self.markets):
            low = s.lower()
            for stream in (f"{low}@markprice@1s", f"{low}@markprice"):
                if hub.has_subscribers(stream):
                    hub.publish(stream, F.ws_mark_price(self.engine, s, now))

    def on_subscribe(self, conn: Connection, stream: str) -> None:
        """Send a snapshot right after SUBSCRIBE so watchers need not wait a period."""
        now = self.clock.now_ms()
        sym = stream.split("@", 1)[0].upper()
        if stream.startswith("!markprice@arr"):
            conn.send_stream(stream, [F.ws_mark_price(self.engine, s, now) for s in self.markets])
        elif sym in self.markets and "@markprice" in stream:
            conn.send_stream(stream, F.ws_mark_price(self.engine, sym, now))
        elif sym in self.markets and stream.endswith("@bookticker"):
            self.stats.book_id += 1
            conn.send_stream(stream, F.ws_book_ticker(self.engine, sym, self.stats.book_id, now))

    def _on_event(self, event: Event) -> None:
        if self.bybit is not None:
            self.bybit.on_event(event)
        hub = self.hub
        if isinstance(event, OrderEvent):
            fill = event.fill
            if fill is not None:
                self.stats.on_fill(fill.symbol, fill.price, fill.qty)
                stream = f"{fill.symbol.lower()}@aggtrade"
                if hub.has_subscribers(stream):
                    self.stats.agg_id += 1
                    hub.publish(
                        stream,
                        F.ws_agg_trade(
                            fill.symbol,
                            self.stats.agg_id,
                            fill.price,
                            fill.qty,
                            fill.side == "SELL",
                            event.time,
                        ),
                    )
            if hub.user_conns:
                hub.publish_user(F.ws_order_update(event.order, event.exec_type, fill, event.time))
        elif isinstance(event, AlgoEvent):
            if hub.user_conns:
                hub.publish_user(F.ws_algo_update(event.algo, self.engine, event.time))
        elif isinstance(event, AccountEvent) and hub.user_conns:
            hub.publish_user(
                F.ws_account_update(
                    self.engine,
                    event.reason,
                    event.symbols,
                    event.time,
                    event.sides,
                    event.balance_change,
                )
            )

    # ------------------------------------------------------------ listen keys
    def new_listen_key(self) -> str:
        # Binance hands out the same key while one is valid for the account.
        if self._listen_keys:
            key = next(iter(self._listen_keys))
        else:
            key = secrets.token_urlsafe(48)[:64]
        self._listen_keys[key] = wall_ms()
        self._listen_keys_sim[key] = self.clock.now_ms()
        return key

    def expire_listen_keys(self) -> list[str]:
        """Expire listen keys not kept alive for an hour: of host time (calm), or
        ``listen_key_ttl_ms`` of simulated time (harsh ``listen_key_expiry``, so
        ``advance`` expires them). Each user stream of an expired key gets the
        ``listenKeyExpired`` event, then is cut. Returns the keys expired."""
        if self.harsh.listen_key_expiry:
            now, ttl, seen_at = (
                self.clock.now_ms(),
                self.harsh.listen_key_ttl_ms,
                self._listen_keys_sim,
            )
        else:
            now, ttl, seen_at = wall_ms(), LISTEN_KEY_TTL_MS, self._listen_keys
        expired = [k for k, seen in list(seen_at.items()) if now - seen > ttl]
        for key in expired:
            self.close_listen_key(key, expired=True)
        return expired

    def cut_streams(self) -> int:
        """Harsh ``stream_cut_ms``: cut every WS connection (market and user, both
        venues) that has been open that long in simulated time, as Binance and
        Bybit do at 24 hours. Returns how many were cut."""
        limit = self.harsh.stream_cut_ms
        if limit <= 0:
            return 0
        now = self.clock.now_ms()
        conns: list[Connection] = [*self.hub.market_conns, *self.hub.user_conns]
        if self.bybit_hub is not None:
            conns += [*self.bybit_hub.public, *self.bybit_hub.private]
        cut = 0
        for c in conns:
            if c.opened_ms is not None and now - c.opened_ms >= limit:
                c.opened_ms = None  # once
                c.drop()
                cut += 1
        return cut

    def current_listen_key(self) -> str | None:
        return next(iter(self._listen_keys), None)

    def has_listen_key(self, key: str) -> bool:
        return key in self._listen_keys

    def touch_listen_key(self, key: str) -> bool:
        if key not in self._listen_keys:
            return False
        self._listen_keys[key] = wall_ms()
        self._listen_keys_sim[key] = self.clock.now_ms()
        return True

    def close_listen_key(self, key: str, expired: bool = False) -> None:
        self._listen_keys.pop(key, None)
        self._listen_keys_sim.pop(key, None)
        if expired:
            now = self.clock.now_ms()
            for c, k in list(self.hub.user_conns.items()):
                if k == key:
                    c.send(json.dumps({"e": "listenKeyExpired", "E": now, "listenKey": key}))
        self.hub.drop_listen_key(key, graceful=expired)

    def auth_now_ms(self) -> int:
        """Server time for signatures/recvWindow: host clock + ``auth_skew_ms``.

        Deliberately not the simulated clock, so tests can advance simulated
        time without every signed request failing with -1021.
        """
        return wall_ms() + self.auth_skew_ms

    def ws_refusing(self) -> bool:
        return wall_ms() < self._ws_refuse_until

    def user_streams(self) -> int:
        """How many private (user-data) streams are connected: Binance listen-key
        streams, or Bybit `/v5/private` connections that have authenticated and
        subscribed to `order` (before that, an order's update reaches nobody)."""
        if self.bybit_hub is not None:
            private = self.bybit_hub.private.items()
            return sum(1 for conn, authed in private if authed and "order" in conn.streams)
        return len(self.hub.user_conns)

    # ---------------------------------------------------- admin operations
    def set_price(self, symbol: str, price: Decimal | str) -> None:
        """Set the mark (and last) price; fires crossed stops and pushes WS updates."""
        symbol = symbol.upper()
        p = price if isinstance(price, Decimal) else Decimal(price)
        m = self.engine.market(symbol)
        p = m.round_price(p)
        self.engine.set_price(symbol, p)
        self.stats.on_price(symbol, p)
        self._push_price(symbol)

    def _push_price(self, symbol: str) -> None:
        hub = self.hub
        low = symbol.lower()
        now = self.clock.now_ms()
        for stream in (f"{low}@markprice@1s", f"{low}@markprice"):
            if hub.has_subscribers(stream):
                hub.publish(stream, F.ws_mark_price(self.engine, symbol, now))
        if hub.has_subscribers(f"{low}@bookticker"):
            self.stats.book_id += 1
            hub.publish(
                f"{low}@bookticker", F.ws_book_ticker(self.engine, symbol, self.stats.book_id, now)
            )
        if self.bybit_hub is not None:
            self.bybit_hub.publish_ticker(symbol)

    def set_prices(
        self,
        symbol: str,
        *,
        last: Decimal | str | None = None,
        mark: Decimal | str | None = None,
        index: Decimal | str | None = None,
    ) -> None:
        """Set last, mark and/or index exactly (harsh market; the others keep their
        values), fire what crossed and push the streams. Works in the calm market
        too, where it makes the three differ until the next ``set_price``."""
        symbol = symbol.upper()
        m = self.engine.market(symbol)

        def dec(v: Decimal | str | None) -> Decimal | None:
            if v is None:
                return None
            return m.round_price(v if isinstance(v, Decimal) else Decimal(v))

        p_last = dec(last)
        self.engine.set_prices(symbol, last=p_last, mark=dec(mark), index=dec(index))
        if p_last is not None:
            self.stats.on_price(symbol, p_last)
        self._push_price(symbol)

    def wick(self, symbol: str, extreme: Decimal | str) -> None:
        """A wick: last trades at ``extreme`` for one update, then returns to where it
        was. With ``price_series`` the index (and mark) barely follow it, so a
        CONTRACT_PRICE stop fires where a MARK_PRICE one survives."""
        symbol = symbol.upper()
        back = self.engine.last[symbol]
        self.set_price(symbol, extreme)
        self.set_price(symbol, back)

    def harden(self, name: str | None = None, **fields_: Any) -> dict[str, Any]:
        """Switch harsh-market behaviours at run time: ``name`` "harsh" (all on) or
        "calm" (all off) first, then single fields (``liquidation=True``...).
        Returns the switches (see :class:`simulator.harsh.HarshConfig`)."""
        if name is not None:
            fresh = preset(name)
            for f in fields(fresh):
                setattr(self.harsh, f.name, getattr(fresh, f.name))
        was_funding = self.harsh.funding
        self.harsh.update(**fields_)
        if self.harsh.funding and not was_funding:
            self.engine._funding_last = self.clock.now_ms()  # no back pay
        return self.harsh.to_dict()

    def pin_price(self, symbol: str, price: Decimal | str) -> None:
        """`set_price`, then hold it: the price source no longer moves ``symbol``
        until :meth:`release_price` (the admin API's ``POST /price``)."""
        self.set_price(symbol, price)
        self.pinned.add(symbol.upper())

    def release_price(self, symbol: str | None = None) -> list[str]:
        """Let the price source move ``symbol`` again (every pinned symbol when None),
        on from its current price. Returns the symbols released."""
        released = sorted(self.pinned if symbol is None else self.pinned & {symbol.upper()})
        if symbol is not None:
            self.engine.market(symbol.upper())  # an unknown symbol is an error
        for sym in released:
            self.pinned.discard(sym)
            if not self.walk_paused:
                rebase(self.price_source, sym, self.engine.last[sym])
        return released

    def pause_walk(self, paused: bool = True) -> None:
        """Hold every price (True) or let the price source move the unpinned ones
        again (False), on from their current prices."""
        if self.walk_paused and not paused:
            for sym in self.markets:
                if sym not in self.pinned:
                    rebase(self.price_source, sym, self.engine.last[sym])
        self.walk_paused = paused

    def price_holds(self) -> dict[str, Any]:
        """What holds prices: the pinned symbols with their marks, and the walk."""
        return {
            "pinned": {s: F.fmt(self.engine.mark[s]) for s in sorted(self.pinned)},
            "walk": "none"
            if self.price_source is None
            else ("paused" if self.walk_paused else "running"),
        }

    def load_history(self, symbol: str, points: Sequence[tuple[int, Decimal | str]]) -> int:
        """Give ``symbol`` a past mark-price history for klines, without waiting.

        ``points`` are ``(time_ms, price)`` with every time before the clock's
        now; they are merged into the recorded marks in time order. Prices are
        rounded to the tick as :meth:`set_price` does. The current mark, stops
        and WS streams are untouched. Returns the number of points now held.
        Raises ValueError for a point in the present/future or a price <= 0.
        """
        symbol = symbol.upper()
        m = self.engine.market(symbol)
        clean: list[tuple[int, Decimal]] = []
        for t, price in points:
            if isinstance(t, bool) or not isinstance(t, int):
                raise ValueError(f"time must be int epoch ms, got {t!r}")
            p = price if isinstance(price, Decimal) else Decimal(price)
            if not p.is_finite() or p <= 0:
                raise ValueError(f"price must be positive, got {price!r}")
            clean.append((t, m.round_price(p)))
        return self.engine.history.load(symbol, clean, self.clock.now_ms())

    def advance(self, ms: int) -> int:
        """Advance simulated time by ``ms``; runs due delayed fills. Returns now."""
        now = self.clock.advance(ms)
        self.engine.poll()
        return now

    def open_position(self, symbol: str, side: str, quantity: Decimal | str) -> Order:
        """Open/extend a position by hand (market order, source ``manual``); in
        hedge mode buy/long opens the LONG side, sell/short the SHORT side."""
        qty = quantity if isinstance(quantity, Decimal) else Decimal(quantity)
        return self.engine.manual_open(symbol.upper(), _order_side(side), qty)

    def close_position(self, symbol: str, position_side: str | None = None) -> Order | None:
        """Close the whole position by hand; None when flat. In hedge mode both
        sides, or only ``position_side`` (LONG/SHORT)."""
        ps = position_side.upper() if position_side else None
        return self.engine.manual_close(symbol.upper(), ps)

    def set_position_mode(self, hedge: bool, symbol: str | None = None) -> None:
        """Switch the account (or one symbol) to hedge or one-way mode, as a person
        would in the UI: refused (ApiError -4059/-4067/-4068) when unchanged or
        while a position or open order exists."""
        self.engine.set_position_mode(hedge, [symbol.upper()] if symbol else None)

    def cancel_order(self, order_id: int) -> Order | AlgoOrder:
        """Cancel an order or algo order by hand (by orderId or algoId)."""
        return self.engine.manual_cancel(order_id)

    def add_fault(self, kind: str, **kwargs: Any) -> FaultRule:
        """Add a fault rule (see :mod:`simulator.faults`), e.g.
        ``add_fault("drop_response", endpoint="POST /fapi/v1/order", count=1)``."""
        return self.faults.add(FaultRule(kind=kind, **kwargs))

    def clear_faults(self) -> None:
        self.faults.clear()

    def drop_websockets(self, kind: str = "all", refuse_ms: int = 0) -> int:
        """Abort WS connections of ``kind``; refuse new ones for ``refuse_ms``."""
        self._ws_refuse_until = wall_ms() + refuse_ms if refuse_ms > 0 else 0
        dropped = self.hub.drop_all(kind)
        if self.bybit_hub is not None:
            dropped += self.bybit_hub.drop_all(kind)
        return dropped

    def configure(self, **changes: Any) -> dict[str, Any]:
        """Change engine config fields (e.g. ``slippage_bps``, ``fill_parts``,
        ``market_fill_delay_ms``, ``taker_fee``); returns the new config."""
        cfg = self.engine.config
        names = {f.name: f for f in fields(cfg)}
        harsh_names = {f.name for f in fields(self.harsh)}
        harsh_changes = {k: changes.pop(k) for k in [k for k in changes if k in harsh_names]}
        if harsh_changes:
            self.harden(**harsh_changes)
        if self.bybit is not None:
            # Bybit switches (traps, retCode as string, rate limit) share this call
            bcfg = self.bybit.config
            bnames = {f.name for f in fields(bcfg)}
            for k in [k for k in changes if k in bnames]:
                v = changes.pop(k)
                setattr(bcfg, k, bool(v) if isinstance(getattr(bcfg, k), bool) else int(v))
        for k, v in changes.items():
            if k not in names or k == "per_symbol_slippage_bps":
                raise ValueError(f"unknown config field {k!r}")
            current = getattr(cfg, k)
            if isinstance(current, bool):
                setattr(cfg, k, bool(v))
            elif isinstance(current, int):
                setattr(cfg, k, int(v))
            else:
                setattr(cfg, k, Decimal(str(v)))
        return self.config_dict()

    def config_dict(self) -> dict[str, Any]:
        cfg = self.engine.config
        out = {
            f.name: (
                str(getattr(cfg, f.name))
                if isinstance(getattr(cfg, f.name), Decimal)
                else getattr(cfg, f.name)
            )
            for f in fields(cfg)
            if f.name != "per_symbol_slippage_bps"
        }
        if self.bybit is not None:
            bcfg = self.bybit.config
            out.update({f.name: getattr(bcfg, f.name) for f in fields(bcfg)})
        return out

    def reset(self) -> None:
        """Fresh engine (orders, positions, wallet), no faults, no rate-limit state, no
        pinned price, the price source running again (from the initial prices)."""
        self.engine.unsubscribe(self._on_event)
        self.engine = self._new_engine()
        self.pinned.clear()
        self.walk_paused = False
        for sym in self.markets:
            rebase(self.price_source, sym, self.engine.last[sym])
        self.faults.clear()
        self.limiter.reset()
        if self.bybit is not None:
            self.bybit.reset()
        if self.bybit_limiter is not None:
            self.bybit_limiter.reset()

    def deposit(self, amount: Decimal | str) -> None:
        self.engine.deposit(amount if isinstance(amount, Decimal) else Decimal(amount))

    def ground_truth(self) -> dict[str, Any]:
        """Everything that happened, JSON-ready (money as strings)."""
        e = self.engine
        now = self.clock.now_ms()
        orders = []
        for o in e.orders.values():
            d = F.order_json(o)
            d["source"] = o.source
            d["algoId"] = o.algo_id
            orders.append(d)
        algos = []
        for a in e.algos.values():
            d = F.algo_json(a, e)
            d["source"] = a.source
            algos.append(d)
        positions = []
        for p in e.all_positions():
            s = p.symbol
            if p.amt != 0 or p.realized_pnl != 0:
                row: dict[str, Any] = {
                    "symbol": s,
                    "positionAmt": F.fmt(p.amt),
                    "entryPrice": F.fmt8(p.entry_price),
                    "markPrice": F.fmt(e.mark[s]),
                    "unrealizedPnl": F.fmt8(e.unrealized_pnl(s, p.position_side)),
                    "realizedPnl": F.fmt8(p.realized_pnl),
                    "leverage": p.leverage,
                    "marginType": p.margin_type,
                }
                if p.position_side != "BOTH":  # one-way rows keep their old shape
                    row["positionSide"] = p.position_side
                positions.append(row)
        episodes = []
        unprotected: dict[str, int] = {}
        by_side: dict[str, int] = {}
        for ep in e.episodes:
            ms = ep.unprotected_at(now)
            d = {
                "episodeId": ep.episode_id,
                "symbol": ep.symbol,
                "side": ep.side,
                "openedMs": ep.opened_ms,
                "closedMs": ep.closed_ms,
                "open": ep.closed_ms is None,
                "maxQty": F.fmt(ep.max_abs_qty),
                "unprotectedMs": ms,
                "maxStops": ep.max_stops,
            }
            if ep.position_side != "BOTH":
                d["positionSide"] = ep.position_side
                key = f"{ep.symbol}:{ep.position_side}"
                by_side[key] = by_side.get(key, 0) + ms
            episodes.append(d)
            unprotected[ep.symbol] = unprotected.get(ep.symbol, 0) + ms
        truth: dict[str, Any] = {
            "timeMs": now,
            "walletBalance": F.fmt8(e.wallet_balance),
            "unrealizedPnl": F.fmt8(e.total_unrealized()),
            "marks": {s: F.fmt(p) for s, p in e.mark.items()},
            "orders": orders,
            "algoOrders": algos,
            "fills": [F.trade_json(f) for f in e.fills],
            "positions": positions,
            "episodes": episodes,
            "unprotectedMs": unprotected,
            "faults": [r.to_dict() for r in self.faults.rules],
            "requests": self.stats.requests,
            "errors": self.stats.errors,
            "config": self.config_dict(),
        }
        if e.hedge_symbols or by_side:
            # hedge mode only, so one-way ground truth keeps its shape
            truth["hedgeSymbols"] = sorted(e.hedge_symbols)
            truth["unprotectedMsBySide"] = by_side
        if self.harsh.any_on or e.incomes:
            # harsh market only, so calm ground truth keeps its shape
            truth["harsh"] = {
                "config": self.harsh.to_dict(),
                "prices": {
                    s: {
                        "last": F.fmt(e.last[s]),
                        "mark": F.fmt(e.mark[s]),
                        "index": F.fmt(e.index[s]),
                    }
                    for s in e.markets
                },
                "incomes": [F.income_json(i) for i in e.incomes],
                "liquidations": [
                    {
                        "clientOrderId": o.client_order_id,
                        "orderId": o.order_id,
                        "symbol": o.symbol,
                        "positionSide": o.position_side,
                        "side": o.side,
                        "qty": F.fmt(o.executed_qty),
                        "price": F.fmt8(o.avg_price),
                        "time": o.time,
                    }
                    for o in e.orders.values()
                    if o.source == "liquidation"
                ],
            }
        if self.bybit is not None:
            truth["venue"] = "bybit"
            truth["bybit"] = self.bybit.truth()
        return truth


def _order_side(side: str) -> str:
    s = side.strip().upper()
    mapping = {"BUY": "BUY", "LONG": "BUY", "SELL": "SELL", "SHORT": "SELL"}
    if s not in mapping:
        raise ValueError(f"side must be buy/sell/long/short, got {side!r}")
    return mapping[s]
