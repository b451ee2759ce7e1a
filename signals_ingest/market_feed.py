"""The market-data feed: ccxt.pro mark prices → `PriceGate.on_tick`.

One `MarketFeed` per exchange connection. It watches the mark prices of the symbols
the gate has positions for (restricted to this process's shard), resubscribes when
that set changes, and reconnects with exponential backoff when the stream fails.
Connection changes are recorded as WEBSOCKET_CONNECTED / DISCONNECTED / RECONNECTED
events when an event sink (`activities.store.repository.Store`) is given.

Sharding: with `--shard i/n` a process owns the symbols whose stable hash
(CRC-32 of the canonical name) mod n is i; it subscribes to and holds the bands of
those symbols only. Every process lists all running positions and keeps its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import zlib
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from domain.errors import scrub
from domain.events import EventType, WebsocketState
from domain.symbols import canonical_from_unified, unified_from_canonical
from signals_ingest.price_gate import PriceGate
from signals_ingest.stream_events import EventSink, StreamEvents

__all__ = ["EventSink", "MarketFeed", "Shard", "mark_price_of"]

log = logging.getLogger("posguard.market_feed")


@dataclass(frozen=True)
class Shard:
    """This process's part of the symbol space: symbols with crc32(symbol) % count == index."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ValueError(f"bad shard {self.index}/{self.count}")

    @classmethod
    def parse(cls, text: str) -> Shard:
        """`"i/n"` (e.g. `"0/3"`) → Shard(i, n)."""
        try:
            index, count = (int(p) for p in text.split("/"))
        except ValueError as exc:
            raise ValueError(f"shard must look like i/n, not {text!r}") from exc
        return cls(index, count)

    def owns(self, symbol: str) -> bool:
        """Stable across processes, runs and machines (not Python's salted hash)."""
        return self.count == 1 or zlib.crc32(symbol.encode()) % self.count == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def mark_price_of(ticker: dict[str, Any]) -> Decimal | None:
    """The mark price of a ccxt ticker as an exact Decimal.

    ccxt's unified fields are floats; the raw message keeps the exchange's decimal
    string (Binance markPriceUpdate: `p`; Bybit tickers: `markPrice`), which is used
    when present.
    """
    info = ticker.get("info")
    raw: Any = None
    if isinstance(info, dict):
        raw = info.get("p") if info.get("e") == "markPriceUpdate" else info.get("markPrice")
    if raw is None:
        raw = ticker.get("markPrice")
        if isinstance(raw, float):
            raw = repr(raw)  # float ok: ccxt gives floats; shortest repr round-trips
    if raw is None:
        return None
    try:
        price = Decimal(str(raw))
    except InvalidOperation:
        return None
    return price if price.is_finite() and price > 0 else None


def _tick_ms(ticker: dict[str, Any]) -> int | None:
    ts = ticker.get("timestamp")
    return int(ts) if isinstance(ts, int | float) else None  # float ok: ms timestamp


class MarketFeed:
    """Feeds a gate from an exchange's mark-price stream, reconnecting forever."""

    def __init__(
        self,
        exchange: Any,
        gate: PriceGate,
        *,
        shard: Shard | None = None,
        events: EventSink | None = None,
        url: str | None = None,
        backoff_initial_s: float = 0.5,  # float ok: seconds
        backoff_max_s: float = 30.0,  # float ok: seconds
        idle_poll_s: float = 1.0,  # float ok: seconds
    ) -> None:
        self.exchange = exchange
        self.gate = gate
        self.shard = shard or Shard()
        self.events = events
        self.url = url or _ws_url(exchange)
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.idle_poll_s = idle_poll_s
        self.connected = False
        self.messages = 0
        self.failures = 0
        self.reconnects = 0
        self.subscribed: frozenset[str] = frozenset()
        self._changed = asyncio.Event()
        self._events = StreamEvents(events, "ws", exchange=getattr(exchange, "id", None))
        self._ever_connected = False
        self._unified: list[str] = []
        self._last: dict[str, Any] = {}  # unified symbol -> last ticker object fed
        self._down_since: float | None = None  # float ok: timing
        gate.add_listener(self._changed.set)

    def wanted(self) -> frozenset[str]:
        """Canonical symbols to watch: the gate's, restricted to this shard."""
        return frozenset(s for s in self.gate.symbols() if self.shard.owns(s))

    async def run(self, stop: asyncio.Event) -> None:
        """Watch until `stop` is set."""
        stopper = asyncio.ensure_future(stop.wait())
        watch: asyncio.Task[Any] | None = None
        attempt = 0
        try:
            while not stop.is_set():
                wanted = self.wanted()
                if watch is None or wanted != self.subscribed:
                    if watch is not None:
                        watch.cancel()
                        with contextlib.suppress(BaseException):
                            await watch
                        watch = None
                    self.subscribed = wanted
                    self._changed.clear()
                    if wanted:
                        watch = asyncio.ensure_future(self._watch(sorted(wanted)))
                waiters: set[asyncio.Future[Any]] = {stopper}
                changed = asyncio.ensure_future(self._changed.wait())
                waiters.add(changed)
                if watch is not None:
                    waiters.add(watch)
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
                changed.cancel()
                if watch is None or not watch.done():
                    continue
                done, watch = watch, None
                try:
                    tickers = done.result()
                except asyncio.CancelledError:
                    continue
                except Exception as exc:
                    attempt += 1
                    self.failures += 1
                    await self._disconnected(exc, attempt)
                    delay = min(self.backoff_max_s, self.backoff_initial_s * 2 ** (attempt - 1))
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), delay)
                    continue
                if not self.connected:
                    await self._connected(attempt)
                attempt = 0
                self._feed(tickers)  # the next iteration re-arms `watch` for the same set
        finally:
            stopper.cancel()
            if watch is not None:
                watch.cancel()
                with contextlib.suppress(BaseException):
                    await watch
            self.connected = False

    async def _watch(self, symbols: list[str]) -> Any:
        unified = [unified_from_canonical(s) for s in symbols]
        self._unified = unified
        has = getattr(self.exchange, "has", {}) or {}
        if has.get("watchMarkPrices"):
            return await self.exchange.watch_mark_prices(unified)
        return await self.exchange.watch_tickers(unified)

    def _feed(self, tickers: Any) -> None:
        """Give the gate every mark price not given yet.

        A ccxt watch resolves for ONE message; messages that arrive while nobody
        awaits (other symbols of the same call, or the next message of the same
        symbol while this one is processed) only update ccxt's `tickers` cache. So
        after each resolution the cache entries of the watched symbols are checked
        too (ccxt makes a new dict per message: identity tells what is new).
        """
        items = list(tickers.values()) if isinstance(tickers, dict) else list(tickers)
        cache = getattr(self.exchange, "tickers", None)
        if isinstance(cache, dict):
            for unified in self._unified:
                cached = cache.get(unified)
                if cached is not None:
                    items.append(cached)
        last = self._last
        on_tick = self.gate.on_tick
        for ticker in items:
            sym = ticker.get("symbol")
            if not sym or last.get(sym) is ticker:
                continue
            last[sym] = ticker
            price = mark_price_of(ticker)
            if price is None:
                continue
            try:
                canonical = canonical_from_unified(sym)
            except ValueError:
                continue
            self.messages += 1
            on_tick(canonical, price, _tick_ms(ticker))

    def down_for(self) -> timedelta | None:
        """How long it has been down (None while up, or before its first failure)."""
        if self.connected or self._down_since is None:
            return None
        return timedelta(seconds=time.monotonic() - self._down_since)

    # --- connection events ------------------------------------------------------

    async def _connected(self, attempt: int) -> None:
        self.connected = True
        if not self._ever_connected:
            self._ever_connected = True
            log.info("market data connected: %s", self.url)
            await self._record(EventType.WEBSOCKET_CONNECTED, WebsocketState(url=self.url))
            return
        self.reconnects += 1
        downtime = None
        if self._down_since is not None:
            downtime = int((time.monotonic() - self._down_since) * 1000)  # float ok: timing
        self._down_since = None
        log.info("market data reconnected after %s ms: %s", downtime, self.url)
        await self._record(
            EventType.WEBSOCKET_RECONNECTED,
            WebsocketState(url=self.url, attempt=attempt, downtime_ms=downtime),
        )

    async def _disconnected(self, exc: BaseException, attempt: int) -> None:
        log.warning("market data stream failed (attempt %d): %s", attempt, scrub(repr(exc)))
        if not self.connected and attempt > 1:
            return  # one event per outage, not per failed reconnect attempt
        self.connected = False
        self._down_since = time.monotonic()  # float ok: timing
        await self._record(
            EventType.WEBSOCKET_DISCONNECTED,
            WebsocketState(url=self.url, attempt=attempt, reason=scrub(repr(exc))[:500]),
        )

    async def _record(self, kind: EventType, payload: WebsocketState) -> None:
        await self._events.record(kind, payload)


def _ws_url(exchange: Any) -> str:
    try:
        ws = exchange.urls["api"]["ws"]
        url = ws.get("linear") or ws.get("public", {}).get("linear")
        return str(url)
    except (AttributeError, KeyError, TypeError):
        return str(getattr(exchange, "id", "unknown"))
