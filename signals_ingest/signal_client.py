"""The front door: one WebSocket to a signal service, every message stored before anything else.

One `SignalClient` per configured service:

- It connects with its bearer token. On a failure it reconnects with exponential
  backoff and jitter. A connection that is silent for longer than `idle_timeout`
  (no signal and no heartbeat) counts as dead.
- Where the service supports it (`resume`), it asks for every signal after the last
  one stored (`?after=<id>`). Without resume, a reconnection is recorded as a gap with
  its duration: what the service sent meanwhile is lost, and the record says so.
- Each message is parsed (`domain.signal_wire`, which never raises). Each item is
  stored in PostgreSQL (`Store.store_signals`), valid or rejected, with its events
  (`domain.signal_events`: received and validated, or rejected) in the same
  transaction, before anything else is done with it. Only then are the new valid
  signals handed on (`sink`). Two batches are written side by side (each its own
  transaction, the later committed only after the earlier, and handed on after it)
  while the next is read and parsed.
- **Batches across messages:** once a message is read, the messages that follow it
  closely join it in one batch: every message arriving while the oldest batch in
  flight is still being stored, then every message already received and any
  arriving within `batch_linger`, up to `batch_max` items (and `batch_max`
  messages). A batch is one `store_signals` call and at most one `sink` call with
  all its new valid signals, in arrival order. A signal sent twice (within a batch,
  in the two batches in flight, or stored before) is stored once and handed on
  once. One message is its own batch when nothing follows it within the linger.
- **Backpressure instead of a buffer:** while two batches are stored and handed
  on, the next one is read (everything arriving meanwhile joins it), up to
  `batch_max` items; nothing is read beyond it until the older is handed on. When
  the store or Temporal is slow, the socket is simply read later (TCP flow control
  holds the service back): nothing is dropped.
- Every message gets its own receipt time, strictly increasing per client, so two
  identical rejected messages are always two receipts (two rows), even when read
  within the same microsecond.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Final, Protocol

import aiohttp
from pydantic import SecretStr

from domain.errors import scrub
from domain.events import Event, EventType, WebsocketState
from domain.records import SignalRecord, signal_record
from domain.signal_events import events_of_record
from domain.signal_wire import Accepted, FieldMapping, ParsedSignal, Rejected, parse_message
from domain.signals import Signal
from signals_ingest.stream_events import StreamEvents

__all__ = ["SignalClient", "SignalStore"]

log = logging.getLogger("posguard.signals")

Sink = Callable[[list[Signal]], Awaitable[None]]
"""`sink(signals)`: hand on the new valid signals of one batch of messages (already
stored), in arrival order, each once; never called with an empty list."""

_IN_FLIGHT: Final = 2
"""Batches stored side by side (each in its own transaction, committed in order)."""

_BUSY_POLL_S: Final = 0.005  # float ok: seconds
"""While the batch before is being stored, how often the reading of the next one
looks whether it is done when no message comes."""

_NO_WAIT_S: Final = 1e-6  # float ok: seconds
"""A receive timeout that takes only what is already received: aiohttp returns a
buffered message without suspending, so such a timeout can only end a wait."""


class SignalStore(Protocol):
    """What the client needs of `activities.store.repository.Store`."""

    async def store_signals(
        self, records: Sequence[SignalRecord], *, commit_after: Awaitable[object] | None = None
    ) -> set[str]:
        """Store rows and their events (`domain.signal_events`) in one transaction,
        committed once `commit_after` is done; the ids of the rows that were new."""
        ...

    async def append_signal_events(self, events: Sequence[Event]) -> int: ...

    async def append_event(self, event: Event) -> bool: ...

    async def last_signal_id(self, service: str) -> str | None: ...

    async def signals(
        self, service: str, *, limit: int = 100, received_after: datetime | None = None
    ) -> list[SignalRecord]: ...


def _data_waiting(ws: aiohttp.ClientWebSocketResponse) -> bool:
    """Whether aiohttp already holds a received text or binary frame, which a
    `receive()` then returns at once (without the timer a timeout costs). False
    when that cannot be told: aiohttp's internals are read, not relied on."""
    buffer = getattr(getattr(ws, "_reader", None), "_buffer", None)
    if not buffer:
        return False
    head = buffer[0]
    msg = head[0] if isinstance(head, tuple) else head
    return getattr(msg, "type", None) in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY)


async def _nowhere(signals: list[Signal]) -> None:
    return None


@dataclass(frozen=True, slots=True)
class _InFlight:
    """A batch being stored: its row ids, whether its rows are committed, and whether
    it is done (stored and handed on)."""

    ids: frozenset[str]
    committed: asyncio.Future[None]
    done: asyncio.Future[None]


@dataclass(slots=True)
class _Batch:
    """Messages read together: every item, with its message's receipt time, in order."""

    items: list[ParsedSignal] = field(default_factory=list)
    received: list[datetime] = field(default_factory=list)
    messages: int = 0

    def add(self, received_at: datetime, parsed: list[ParsedSignal]) -> None:
        self.messages += 1
        self.items.extend(parsed)
        self.received.extend([received_at] * len(parsed))


class SignalClient:
    """One signal service's WebSocket, read until `stop` (see the module docstring).

    `batch_max` (items, and messages) and `batch_linger` bound a batch; see the
    module docstring. `batch_max=1` reads one message at a time, as before batching.
    Counters: `messages` read, `stored` rows new in the store, `rejected` items,
    `duplicates` (items already stored, or twice in one batch), `reconnects`.
    """

    def __init__(
        self,
        *,
        service: str,
        url: str,
        token: SecretStr,
        store: SignalStore,
        sink: Sink = _nowhere,
        mapping: FieldMapping | None = None,
        resume: bool = True,
        idle_timeout: timedelta = timedelta(seconds=30),
        backoff_initial: timedelta = timedelta(milliseconds=500),
        backoff_max: timedelta = timedelta(seconds=30),
        store_retry: timedelta = timedelta(seconds=1),
        batch_max: int = 10_000,
        batch_linger: timedelta = timedelta(milliseconds=2),
    ) -> None:
        if batch_max < 1:
            raise ValueError("batch_max must be at least 1")
        if batch_linger < timedelta(0):
            raise ValueError("batch_linger must not be negative")
        self.service = service
        self.url = url
        self._token = token
        self._store = store
        self._sink = sink
        self._mapping = mapping or FieldMapping()
        self.resume = resume
        self._idle_s = idle_timeout.total_seconds()  # float ok: seconds
        self._backoff_initial_s = backoff_initial.total_seconds()  # float ok: seconds
        self._backoff_max_s = backoff_max.total_seconds()  # float ok: seconds
        self._store_retry_s = store_retry.total_seconds()  # float ok: seconds
        self.batch_max = batch_max
        self._linger_s = batch_linger.total_seconds()  # float ok: seconds
        self._last_receipt: datetime | None = None
        self.connected = False
        self.messages = 0
        self.stored = 0
        self.rejected = 0
        self.duplicates = 0
        self.reconnects = 0
        self._down_since: float | None = None  # float ok: monotonic time
        self._event_seq = 0
        self._events = StreamEvents(store, f"signal-service/{service}")

    # --- the connection -------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Read the service until `stop` is set, reconnecting with backoff and jitter.

        Returns once everything read is stored (with its events) and handed on.
        """
        await self._run(stop)

    async def _run(self, stop: asyncio.Event) -> None:
        attempt = 0
        async with aiohttp.ClientSession() as session:
            while not stop.is_set():
                try:
                    await self._connection(session, stop)
                    attempt = 0
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    attempt += 1
                    await self._disconnected(exc, attempt)
                if stop.is_set():
                    break
                delay = min(self._backoff_max_s, self._backoff_initial_s * 2 ** max(attempt - 1, 0))
                delay *= random.uniform(0.5, 1.0)  # jitter: reconnects never stampede
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
        self.connected = False

    async def _connection(self, session: aiohttp.ClientSession, stop: asyncio.Event) -> None:
        params: dict[str, str] = {}
        after = await self._store.last_signal_id(self.service) if self.resume else None
        if after is not None:
            params["after"] = after
        headers = {"Authorization": f"Bearer {self._token.get_secret_value()}"}
        async with session.ws_connect(self.url, headers=headers, params=params) as ws:
            await self._connected()
            stopper = asyncio.ensure_future(stop.wait())
            # Two batches are written side by side while the next is read and parsed:
            # PostgreSQL (on both cores) and the parsing overlap, and the batch being
            # read takes whatever arrives meanwhile. Bounded: once two batches are in
            # flight, reading stops at `batch_max` until the older is stored and handed
            # on, so a slow store still slows the reading (backpressure). Order is
            # kept: each batch commits after the one before and is handed on after it.
            flight: deque[_InFlight] = deque()
            try:
                while not stop.is_set():
                    receive = asyncio.ensure_future(ws.receive())
                    done, _ = await asyncio.wait(
                        {receive, stopper},
                        timeout=self._idle_s,
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                    if receive not in done:
                        receive.cancel()
                        with contextlib.suppress(BaseException):
                            await receive
                        if stop.is_set():
                            break
                        raise TimeoutError(f"no message for {self._idle_s:g} s")
                    batch = _Batch()
                    ended = self._take(ws, receive.result(), batch)
                    if ended is None:
                        ended = await self._gather(ws, batch, flight[0].done if flight else None)
                    if len(flight) == _IN_FLIGHT:
                        await flight.popleft().done
                    # What was read is stored and handed on even when the connection
                    # ended right after it: nothing read is ever dropped.
                    flight.append(self._store_batch(batch, flight[-1] if flight else None))
                    if ended is not None:
                        raise ended
            except asyncio.CancelledError:
                for f in flight:
                    f.done.cancel()  # stopped by cancellation: nothing left retrying
                raise
            except BaseException:
                for f in flight:
                    await f.done  # the connection ended: what was read is stored first
                raise
            finally:
                stopper.cancel()
            for f in flight:
                await f.done

    async def _gather(
        self,
        ws: aiohttp.ClientWebSocketResponse,
        batch: _Batch,
        busy: asyncio.Future[None] | None,
    ) -> ConnectionError | None:
        """Add to `batch` the messages that follow its first, within the bounds.

        While the batch before (`busy`) is still being stored and handed on, every
        message that arrives joins this one: the socket is read while the store
        works, never left to fill. After that (or with none before), it waits for a
        further message until `batch_linger` from then; after that only a message
        already received joins. Returns the error ending the connection if one came
        (the batch so far is still to be stored).
        """
        loop = asyncio.get_running_loop()
        deadline: float | None = None  # float ok: loop time
        while len(batch.items) < self.batch_max and batch.messages < self.batch_max:
            if _data_waiting(ws):
                msg = await ws.receive()  # returned at once: no timer needed
            elif busy is not None and not busy.done():
                # Polled, not raced against `busy` with a task a message: a message
                # already received is returned at once, and the batch before is
                # looked at again every `_BUSY_POLL_S` while nothing arrives.
                try:
                    msg = await ws.receive(timeout=_BUSY_POLL_S)
                except TimeoutError:
                    continue
            else:
                if deadline is None:
                    deadline = loop.time() + self._linger_s
                try:
                    # A receive that times out leaves its message (if any) in aiohttp's
                    # queue: `WebSocketDataQueue.read` takes it only once awaited. Its
                    # one side effect, `close_code` 1006, is overwritten by a CLOSE frame.
                    msg = await ws.receive(timeout=max(deadline - loop.time(), _NO_WAIT_S))
                except TimeoutError:
                    return None
            ended = self._take(ws, msg, batch)
            if ended is not None:
                return ended
        return None

    def _take(
        self, ws: aiohttp.ClientWebSocketResponse, msg: aiohttp.WSMessage, batch: _Batch
    ) -> ConnectionError | None:
        """Parse one received frame into `batch`; the error if it ends the connection."""
        if msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
            received_at = self._receipt_time()
            self.messages += 1
            data: str | bytes = msg.data
            batch.add(
                received_at,
                parse_message(
                    data, service=self.service, received_at=received_at, mapping=self._mapping
                ),
            )
        elif msg.type in (
            aiohttp.WSMsgType.CLOSE,
            aiohttp.WSMsgType.CLOSING,
            aiohttp.WSMsgType.CLOSED,
        ):
            return ConnectionError(f"closed by the service ({ws.close_code})")
        elif msg.type is aiohttp.WSMsgType.ERROR:
            return ConnectionError(f"websocket error: {ws.exception()!r}")
        return None

    def _receipt_time(self) -> datetime:
        # A rejected row's key is a digest of its receipt time and its text: two
        # identical garbage messages read in the same microsecond (a batch drains a
        # backlog that fast) would otherwise be one row, and one receipt lost.
        now = datetime.now(UTC)
        if self._last_receipt is not None and now <= self._last_receipt:
            now = self._last_receipt + timedelta(microseconds=1)
        self._last_receipt = now
        return now

    # --- one batch ------------------------------------------------------------------------

    def _store_batch(self, batch: _Batch, before: _InFlight | None) -> _InFlight:
        """Start storing `batch` (beside `before`, the batch read just before it)."""
        records = [
            signal_record(item, at) for item, at in zip(batch.items, batch.received, strict=True)
        ]
        committed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        ids = frozenset(r.id for r in records)
        done = asyncio.ensure_future(self._batch(batch, records, committed, before))
        return _InFlight(ids=ids, committed=committed, done=done)

    async def _batch(
        self,
        batch: _Batch,
        records: list[SignalRecord],
        committed: asyncio.Future[None],
        before: _InFlight | None,
    ) -> None:
        """Store every item of a batch with its events, committed after `before`'s
        rows; then, once `before` is handed on, hand on what is new, in order.

        An item whose row `before` holds too (the same signal sent again) is left to
        `before`: the two transactions never write the same row, so neither ever
        waits for the other's.
        """
        try:
            keep = [
                (item, rec)
                for item, rec in zip(batch.items, records, strict=True)
                if before is None or rec.id not in before.ids
            ]
            self.duplicates += len(records) - len(keep)
            after = before.committed if before is not None else None
            if keep:
                new = await self._stored([rec for _, rec in keep], after)
            else:
                new = set()
                if after is not None:
                    await after
            committed.set_result(None)
        finally:
            if not committed.done():
                committed.cancel()  # the batch after never commits ahead of this one
        if before is not None:
            await before.done
        fresh: list[Signal] = []
        handled: set[str] = set()
        for item, rec in keep:
            if rec.id not in new or rec.id in handled:  # stored before, or twice in this batch
                self.duplicates += 1
                continue
            handled.add(rec.id)
            if isinstance(item, Accepted):
                fresh.append(item.signal)
        self.stored += len(new)
        self.rejected += sum(1 for item in batch.items if isinstance(item, Rejected))
        if fresh:
            await self._sink(fresh)

    async def _stored(
        self, records: list[SignalRecord], after: asyncio.Future[None] | None
    ) -> set[str]:
        """`store_signals` (committed after `after`), retried until it succeeds."""
        while True:
            try:
                return await self._store.store_signals(records, commit_after=after)
            except Exception as exc:
                log.warning(
                    "%s: cannot store %d signals (%r); retrying", self.service, len(records), exc
                )
                await asyncio.sleep(self._store_retry_s)

    async def recover_events(self, since: timedelta, *, limit: int = 100_000) -> int:
        """Record again the events of the signals stored within `since` (idempotent).

        Rows and their events are stored in one transaction, so only rows stored
        by an earlier posguard (which wrote the events after the rows) can lack
        theirs; the ingest calls this at start, so an upgrade after a crash leaves
        no stored signal without its signal_received / validated / rejected events.
        Returns how many events were missing.
        """
        after = datetime.now(UTC) - since
        rows = await self._store.signals(self.service, limit=limit, received_after=after)
        events = [e for rec in reversed(rows) for e in events_of_record(rec)]
        if not events:
            return 0
        new = await self._store.append_signal_events(events)
        if new:
            log.warning("%s: %d signal events were missing; recorded now", self.service, new)
        return new

    # --- connection events ----------------------------------------------------------------

    def down_for(self) -> timedelta | None:
        """How long it has been down (None while up, or before its first failure)."""
        if self.connected or self._down_since is None:
            return None
        return timedelta(seconds=time.monotonic() - self._down_since)

    async def _connected(self) -> None:
        first = self._down_since is None and self.reconnects == 0 and not self.connected
        downtime = None
        if self._down_since is not None:
            downtime = int((time.monotonic() - self._down_since) * 1000)  # float ok
            self.reconnects += 1
        self._down_since = None
        self.connected = True
        if first:
            await self._events.record(
                EventType.WEBSOCKET_CONNECTED, WebsocketState(url=self._safe_url())
            )
            return
        reason = (
            "resumed from the last stored signal"
            if self.resume
            else "gap: the service cannot resume; what it sent meanwhile is lost"
        )
        log.warning("%s: reconnected after %s ms (%s)", self.service, downtime, reason)
        await self._events.record(
            EventType.WEBSOCKET_RECONNECTED,
            WebsocketState(url=self._safe_url(), downtime_ms=downtime, reason=reason),
        )

    async def _disconnected(self, exc: BaseException, attempt: int) -> None:
        log.warning(
            "%s: signal service connection failed (attempt %d): %r", self.service, attempt, exc
        )
        was_connected = self.connected
        self.connected = False
        if self._down_since is None:
            self._down_since = time.monotonic()  # float ok: timing
        if was_connected or attempt == 1:
            await self._events.record(
                EventType.WEBSOCKET_DISCONNECTED,
                WebsocketState(
                    url=self._safe_url(), attempt=attempt, reason=scrub(repr(exc))[:500]
                ),
            )

    def _safe_url(self) -> str:
        return self.url.split("?", 1)[0]  # never a token in a record
