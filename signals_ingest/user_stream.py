"""The exchange's user-data stream → `exchange_update` signals to position workflows.

One `UserStream` per account. Every order update the exchange pushes (a stop
that triggered, an entry filled, an order cancelled by hand, a position closed in
the exchange's UI, a liquidation) names a symbol; the position workflow of that
(account, exchange, symbol) is told to look again. The workflow re-reads its stop
and position itself, so the message's content is never trusted and a duplicated
or late message costs one look. A lost message costs nothing either: the
workflow's periodic look is the fallback.

Messages are lost while the stream is down (a cut, an expired listen key, a gate
restarted): at every (re)connection every running position of the account is told
to look (`on_reconnect`), so a fill made meanwhile is seen at once, not at the next
periodic look. An expired Binance listen key is asked for again at once (see
`forget_listen_key`).

ccxt.pro returns from `watch_orders` on the first message of a burst and keeps
the rest in its order cache, so after every wake-up the whole cache is compared
with what was seen before: no update is lost to a burst.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from domain.errors import scrub
from domain.events import EventType, WebsocketState
from domain.order_updates import OrderChange
from domain.symbols import canonical_from_unified
from signals_ingest.stream_events import EventSink, StreamEvents

__all__ = ["UserStream", "changed_symbols"]

log = logging.getLogger("posguard.user_stream")

Notify = Callable[[str, str, list[OrderChange]], Awaitable[None]]
"""`notify(symbol, detail, changes)`: tell the position of `symbol` what changed."""


def _order_key(order: dict[str, Any]) -> tuple[Any, ...]:
    info = order.get("info") or {}
    return (
        order.get("status"),
        order.get("filled"),
        info.get("X") or info.get("algoStatus") or info.get("st"),
        order.get("lastUpdateTimestamp") or info.get("T"),
    )


def _filled(order: dict[str, Any]) -> Decimal | None:
    info = order.get("info") or {}
    raw = info.get("z")  # Binance's cumulative filled quantity, as the exchange wrote it
    if raw is None:
        raw = order.get("filled")
    if raw is None:
        return None
    try:
        return Decimal(str(raw))
    except InvalidOperation:
        return None


def _change(order: dict[str, Any]) -> OrderChange:
    info = order.get("info") or {}
    return OrderChange(
        client_order_id=order.get("clientOrderId") or None,
        status=order.get("status") or info.get("X"),
        filled=_filled(order),
    )


def changed_symbols(
    orders: list[dict[str, Any]], seen: dict[str, tuple[Any, ...]]
) -> dict[str, list[OrderChange]]:
    """Symbols whose orders changed since `seen` (updated in place), with every change
    of each symbol in the order the stream reported them."""
    changed: dict[str, list[OrderChange]] = {}
    for order in orders:
        oid = str(order.get("id"))
        key = _order_key(order)
        if seen.get(oid) == key:
            continue
        seen[oid] = key
        unified = order.get("symbol")
        if not unified:
            continue
        try:
            symbol = canonical_from_unified(unified)
        except ValueError:
            continue
        changed.setdefault(symbol, []).append(_change(order))
    if len(seen) > 10_000:  # bounded memory: forget the oldest half
        for oid in list(seen)[: len(seen) // 2]:
            del seen[oid]
    return changed


OPEN_POLL_S = 0.1  # float ok: seconds
SUBSCRIBE_GRACE_S = 0.3  # float ok: seconds from the socket open to the subscription live

CatchUp = Callable[[], Awaitable[int]]
"""Tell every position of the account to look; how many were told."""


def forget_listen_key(exchange: Any) -> None:
    """Make ccxt.pro ask the exchange for a listen key again at its next connection.

    ccxt.pro re-uses its cached Binance listen key for up to 20 minutes; a key that
    expired (`listenKeyExpired`: no keepalive reached the exchange for an hour) would
    have every reconnection refused until then. Asking again costs one request (an
    existing key is returned and extended). Exchanges without listen keys: nothing.
    """
    for value in (getattr(exchange, "options", None) or {}).values():
        if isinstance(value, dict) and "lastAuthenticatedTime" in value:
            value["lastAuthenticatedTime"] = 0


class UserStream:
    """Watch one account's private order stream and notify the positions it concerns."""

    def __init__(
        self,
        exchange: Any,
        notify: Notify,
        *,
        account: str,
        events: EventSink | None = None,
        on_reconnect: CatchUp | None = None,
        backoff_initial_s: float = 0.5,  # float ok: seconds
        backoff_max_s: float = 30,  # float ok: seconds
    ) -> None:
        self.exchange = exchange
        self.notify = notify
        self.on_reconnect = on_reconnect
        self.account = account
        self.events = events
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.connected = False
        self.notifications = 0
        self.reconnects = 0
        self._seen: dict[str, tuple[Any, ...]] = {}
        self._down_since: float | None = None  # float ok: monotonic time
        self._events = StreamEvents(
            events,
            f"user-stream/{account}",
            account=account,
            exchange=getattr(exchange, "id", None),
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Watch until `stop` is set, reconnecting with exponential backoff."""
        attempt = 0
        stopper = asyncio.ensure_future(stop.wait())
        opened: asyncio.Task[None] | None = None
        try:
            while not stop.is_set():
                watch = asyncio.ensure_future(self.exchange.watch_orders())
                if not self.connected and (opened is None or opened.done()):
                    opened = asyncio.create_task(self._when_open(watch, attempt))
                await asyncio.wait({watch, stopper}, return_when=asyncio.FIRST_COMPLETED)
                if not watch.done():
                    watch.cancel()
                    with contextlib.suppress(BaseException):
                        await watch
                    break
                try:
                    fresh = watch.result()
                except Exception as exc:
                    attempt += 1
                    forget_listen_key(self.exchange)
                    await self._disconnected(exc, attempt)
                    delay = min(self.backoff_max_s, self.backoff_initial_s * 2 ** (attempt - 1))
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), delay)
                    continue
                if not self.connected:
                    await self._connected(attempt)
                attempt = 0
                await self._dispatch([*list(self.exchange.orders or []), *fresh])
        finally:
            stopper.cancel()
            if opened is not None:
                opened.cancel()
            self.connected = False

    async def _dispatch(self, orders: list[dict[str, Any]]) -> None:
        for symbol, changes in changed_symbols(orders, self._seen).items():
            detail = "; ".join(f"{c.client_order_id or '?'} {c.status}" for c in changes)
            try:
                await self.notify(symbol, detail[:500], changes)
                self.notifications += 1
            except Exception:  # a failed signal must not stop the stream
                log.exception("could not notify the position of %s", symbol)

    def _stream_open(self) -> bool:
        """Is a connection of this stream's ccxt client open? (ccxt.pro says nothing
        when it reconnects; its `watch_orders` returns only with a message.)"""
        for client in (getattr(self.exchange, "clients", None) or {}).values():
            connected = getattr(client, "connected", None)
            if connected is None or not connected.done() or connected.cancelled():
                continue
            if connected.exception() is None and not client.closed():
                return True
        return False

    async def _when_open(self, watch: asyncio.Future[Any], attempt: int) -> None:
        """Once the stream's connection is open again (or first opens), record it and
        tell every position to look (`_catch_up`): what happened while it was down
        reached no one. Gives up if this watch fails first."""
        while not watch.done():
            if self._stream_open():
                await asyncio.sleep(SUBSCRIBE_GRACE_S)  # Bybit: authenticated, subscribed
                if watch.done() and watch.exception() is not None:
                    return
                if not self.connected:
                    await self._connected(attempt)
                if self.on_reconnect is not None:
                    await self._catch_up()
                return
            await asyncio.sleep(OPEN_POLL_S)
        if not watch.cancelled() and watch.exception() is None and self.on_reconnect is not None:
            await self._catch_up()  # a message came before the poll saw the connection

    async def _catch_up(self) -> None:
        """What changed while the stream was down (or before this process watched it:
        a gate restarted) came in no message: every position of the account is told
        to look (`on_reconnect`)."""
        assert self.on_reconnect is not None
        try:
            told = await self.on_reconnect()
            log.info("user stream of %s back: %d position(s) told to look", self.account, told)
        except Exception:  # the periodic look and the reconciler still catch up
            log.exception("could not tell the positions of %s to look", self.account)

    def down_for(self) -> timedelta | None:
        """How long it has been down (None while up, or before its first failure)."""
        if self.connected or self._down_since is None:
            return None
        return timedelta(seconds=time.monotonic() - self._down_since)

    async def _connected(self, attempt: int) -> None:
        first = self._down_since is None and not self.reconnects and attempt == 0
        self.connected = True
        downtime = None
        if self._down_since is not None:
            downtime = int((time.monotonic() - self._down_since) * 1000)  # float ok
            self.reconnects += 1
        self._down_since = None
        kind = EventType.WEBSOCKET_CONNECTED if first else EventType.WEBSOCKET_RECONNECTED
        log.info("user stream of %s %s", self.account, "connected" if first else "reconnected")
        await self._record(
            kind, WebsocketState(url=f"user-stream/{self.account}", downtime_ms=downtime)
        )

    async def _disconnected(self, exc: BaseException, attempt: int) -> None:
        log.warning(
            "user stream of %s failed (attempt %d): %s", self.account, attempt, scrub(repr(exc))
        )
        if not self.connected and attempt > 1:
            return  # one event per outage
        self.connected = False
        self._down_since = time.monotonic()  # float ok: timing
        await self._record(
            EventType.WEBSOCKET_DISCONNECTED,
            WebsocketState(
                url=f"user-stream/{self.account}", attempt=attempt, reason=scrub(repr(exc))[:500]
            ),
        )

    async def _record(self, kind: EventType, payload: WebsocketState) -> None:
        await self._events.record(kind, payload)
