"""The price gate: forwards a mark price to a position workflow only when it leaves the band.

Pure-ish core: no Temporal import, no network. The only side effect is the injected
`wake(workflow_id, PriceTick) -> BandView | None` coroutine (Temporal's implementation
is `signals_ingest.temporal_waker.TemporalWaker`), run as asyncio tasks.

Per open position the gate keeps its symbol and band `(wake_below, wake_above)`
(see domain/band.py: quiet prices are strictly between the bounds; None = unbounded).
Per symbol it keeps two sorted arrays of the bounds of the positions that are idle
(no wake-up in flight), so a tick

- strictly inside every band is rejected by two Decimal comparisons against the
  symbol's highest `wake_below` and lowest `wake_above` (the fast path);
- otherwise visits only the positions whose bound it crossed (bisect).

A crossing schedules ONE wake-up for that position and takes it out of the index;
while it is in flight every tick of the symbol is only remembered as the symbol's
latest price (O(1) per tick). When the answer (the new band) arrives, the latest
price is checked against the new band and, if it is outside, sent at once;
otherwise the position goes back into the index.

Errors from `wake` (decided here, documented in docs/price_gate.md):
- `None`, or a band with `open=False`: the position is gone and is forgotten;
- any exception: the position stays, keeps its old band and stays "in flight"
  (its ticks keep coalescing) while the gate backs off exponentially
  (`backoff_initial_s` doubling up to `backoff_max_s`), then sends again: the
  latest price if it is outside the band, else the tick that failed (the workflow
  never saw that crossing, so it must not be lost). The waker turns "workflow
  closed / not found" into `None`, so only transient failures reach this path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from bisect import bisect_left, bisect_right
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from domain.position_messages import BandView, PriceTick
from signals_ingest.gate_metrics import WAKE_SECONDS

__all__ = ["GateCounters", "PriceGate", "Waker", "tick_time"]

log = logging.getLogger("posguard.price_gate")

Waker = Callable[[str, PriceTick], Awaitable[BandView | None]]
"""Sends one tick to a position workflow; returns its new band, None if it is gone."""

_NEG_INF = Decimal("-Infinity")
_POS_INF = Decimal("Infinity")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def tick_time(at_ms: int | None) -> datetime:
    """The datetime of an exchange timestamp in ms (now if unknown), without floats."""
    if at_ms is None:
        return datetime.now(UTC)
    return _EPOCH + timedelta(milliseconds=at_ms)


@dataclass(slots=True)
class GateCounters:
    """Monotonic counters (and two gauges) for the benchmark and the health endpoint."""

    ticks: int = 0  # every tick given to on_tick
    ticks_unwatched: int = 0  # ticks of a symbol with no position
    ticks_quiet: int = 0  # ticks rejected by the fast path (inside every band)
    crossings: int = 0  # positions found outside their band (each → one wake-up)
    wakeups_sent: int = 0  # calls to wake (including resends and retries)
    wakeups_answered: int = 0  # calls that returned a band
    wakeups_gone: int = 0  # calls that returned None or open=False
    wake_errors: int = 0  # calls that raised
    retries: int = 0  # sends after an error
    resends: int = 0  # sends of a coalesced price right after an answer
    coalesced: int = 0  # ticks of a symbol that arrived while a position's wake was in flight
    primed: int = 0  # positions woken by a prime regardless of their band


class _Pos:
    __slots__ = (
        "above",
        "answers",
        "below",
        "book",
        "failures",
        "in_flight",
        "removed",
        "sent_seq",
        "wid",
    )

    def __init__(self, wid: str, book: _Book, below: Decimal | None, above: Decimal | None) -> None:
        self.wid = wid
        self.book = book
        self.below = below
        self.above = above
        self.in_flight = False
        self.removed = False
        self.sent_seq = 0
        self.failures = 0
        self.answers = 0  # bands received from the workflow; orders them against reads

    def outside(self, price: Decimal) -> bool:
        return (self.below is not None and price <= self.below) or (
            self.above is not None and price >= self.above
        )


class _Book:
    """One symbol: its positions, the sorted bounds of the idle ones, its latest tick."""

    __slots__ = (
        "above_ids",
        "above_keys",
        "at_ms",
        "below_ids",
        "below_keys",
        "hi",
        "lo",
        "positions",
        "price",
        "seq",
        "symbol",
        "unprimed",
    )

    def __init__(self, symbol: str) -> None:
        self.symbol = symbol
        self.positions: dict[str, _Pos] = {}
        self.below_keys: list[Decimal] = []  # ascending wake_below of idle positions
        self.below_ids: list[str] = []
        self.above_keys: list[Decimal] = []  # ascending wake_above of idle positions
        self.above_ids: list[str] = []
        self.lo = _NEG_INF  # highest wake_below (a tick <= lo crosses someone's floor)
        self.hi = _POS_INF  # lowest wake_above (a tick >= hi crosses someone's ceiling)
        self.unprimed: set[str] = set()  # woken by the next tick regardless of band
        self.price: Decimal | None = None
        self.at_ms: int | None = None
        self.seq = 0

    def _refresh(self) -> None:
        self.lo = self.below_keys[-1] if self.below_keys else _NEG_INF
        self.hi = self.above_keys[0] if self.above_keys else _POS_INF

    def index(self, pos: _Pos) -> None:
        if pos.below is not None:
            i = bisect_right(self.below_keys, pos.below)
            self.below_keys.insert(i, pos.below)
            self.below_ids.insert(i, pos.wid)
        if pos.above is not None:
            i = bisect_right(self.above_keys, pos.above)
            self.above_keys.insert(i, pos.above)
            self.above_ids.insert(i, pos.wid)
        self._refresh()

    def unindex(self, pos: _Pos) -> None:
        if pos.below is not None:
            _remove(self.below_keys, self.below_ids, pos.below, pos.wid)
        if pos.above is not None:
            _remove(self.above_keys, self.above_ids, pos.above, pos.wid)
        self._refresh()

    def crossed(self, price: Decimal) -> list[str]:
        """Idle positions whose band `price` is not strictly inside."""
        out = self.below_ids[bisect_left(self.below_keys, price) :]
        hi = bisect_right(self.above_keys, price)
        if hi:
            seen = set(out)
            out.extend(w for w in self.above_ids[:hi] if w not in seen)
        return out


def _remove(keys: list[Decimal], ids: list[str], key: Decimal, wid: str) -> None:
    lo = bisect_left(keys, key)
    hi = bisect_right(keys, key, lo)
    for i in range(lo, hi):
        if ids[i] == wid:
            del keys[i]
            del ids[i]
            return


class PriceGate:
    """Keeps the bands of open positions and wakes a position's workflow on a crossing.

    Thread model: one asyncio loop; `on_tick` is synchronous and cheap, and schedules
    wake-ups as tasks on the running loop. At most one wake-up per position is in
    flight, and at most `max_concurrent` across all positions (the rest wait, still
    counted as in flight, their ticks coalescing).
    """

    def __init__(
        self,
        wake: Waker,
        *,
        max_concurrent: int = 64,
        backoff_initial_s: float = 0.5,  # float ok: seconds
        backoff_max_s: float = 30.0,  # float ok: seconds
        name: str = "gate",
    ) -> None:
        self._wake = wake
        self._sem = asyncio.Semaphore(max_concurrent)
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.name = name
        self.counters = GateCounters()
        self._wake_seconds = WAKE_SECONDS.labels(name)
        self._books: dict[str, _Book] = {}
        self._positions: dict[str, _Pos] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._listeners: list[Callable[[], None]] = []
        self.started_at = time.monotonic()  # float ok: timing

    # --- positions -----------------------------------------------------------------

    def upsert(
        self,
        workflow_id: str,
        symbol: str,
        wake_below: Decimal | None,
        wake_above: Decimal | None,
        *,
        prime: bool = False,
    ) -> None:
        """Add a position or replace its band. With `prime`, the next tick of its symbol
        wakes it regardless of the band (used after a (re)load, see `prime`).

        A position with a wake-up in flight keeps the band its answer will bring:
        that answer is newer than whatever the caller read.
        """
        pos = self._positions.get(workflow_id)
        if pos is not None and pos.book.symbol != symbol:
            self.remove(workflow_id)
            pos = None
        if pos is None:
            book = self._books.get(symbol)
            new_symbol = book is None
            if book is None:
                book = self._books[symbol] = _Book(symbol)
            pos = _Pos(workflow_id, book, wake_below, wake_above)
            self._positions[workflow_id] = pos
            book.positions[workflow_id] = pos
            book.index(pos)
            if new_symbol:
                self._notify()
        elif not pos.in_flight:
            pos.book.unindex(pos)
            pos.below, pos.above = wake_below, wake_above
            pos.book.index(pos)
        if prime:
            pos.book.unprimed.add(workflow_id)

    def apply(self, view: BandView, *, prime: bool = False) -> None:
        """`upsert` from a workflow's `BandView`; a closed view removes the position."""
        if not view.open:
            self.remove(view.workflow_id)
            return
        self.upsert(view.workflow_id, view.symbol, view.wake_below, view.wake_above, prime=prime)

    def remove(self, workflow_id: str) -> bool:
        """Forget a position (an in-flight wake-up's answer is then ignored)."""
        pos = self._positions.pop(workflow_id, None)
        if pos is None:
            return False
        pos.removed = True
        book = pos.book
        if not pos.in_flight:
            book.unindex(pos)
        book.unprimed.discard(workflow_id)
        del book.positions[workflow_id]
        if not book.positions:
            del self._books[book.symbol]
            self._notify()
        return True

    def prime(self, symbol: str | None = None) -> int:
        """Make the next tick of `symbol` (every symbol if None) wake each of its
        positions regardless of band, so a crossing that happened while nobody was
        watching is acted on. Returns how many positions were marked."""
        books = self._books.values() if symbol is None else [self._books.get(symbol)]
        n = 0
        for book in books:
            if book is not None:
                book.unprimed.update(book.positions)
                n += len(book.positions)
        return n

    # --- ticks ---------------------------------------------------------------------

    def on_tick(self, symbol: str, price: Decimal, at_ms: int | None = None) -> int:
        """One mark price. Returns how many wake-ups it scheduled (0 on the fast path).

        Must be called from the running event loop when it may schedule wake-ups.
        """
        c = self.counters
        c.ticks += 1
        book = self._books.get(symbol)
        if book is None:
            c.ticks_unwatched += 1
            return 0
        book.seq += 1
        book.price = price
        book.at_ms = at_ms
        if book.lo < price < book.hi and not book.unprimed:
            c.ticks_quiet += 1
            return 0
        return self._cross(book, price)

    def _cross(self, book: _Book, price: Decimal) -> int:
        wids = book.crossed(price)
        if book.unprimed:
            primed = [w for w in book.unprimed if w not in wids]
            self.counters.primed += len(book.unprimed)
            book.unprimed.clear()
            wids.extend(primed)
        if not wids:
            self.counters.ticks_quiet += 1
            return 0
        tick = PriceTick(price=price, at=tick_time(book.at_ms))
        n = 0
        for wid in wids:
            pos = book.positions[wid]
            if pos.in_flight:  # a primed position already being woken
                continue
            book.unindex(pos)
            pos.in_flight = True
            pos.sent_seq = book.seq
            self.counters.crossings += 1
            self._spawn(pos, tick)
            n += 1
        return n

    def _spawn(self, pos: _Pos, tick: PriceTick) -> None:
        task = asyncio.get_running_loop().create_task(self._run(pos, tick))
        self._tasks.add(task)
        self._idle.clear()
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not self._tasks:
            self._idle.set()
        if not task.cancelled() and task.exception() is not None:
            log.error("%s: wake-up task failed", self.name, exc_info=task.exception())

    async def _run(self, pos: _Pos, tick: PriceTick) -> None:
        c = self.counters
        book = pos.book
        crossed = time.perf_counter()  # float ok: timing
        while True:
            try:
                async with self._sem:
                    if pos.removed:
                        return
                    c.wakeups_sent += 1
                    view = await self._wake(pos.wid, tick)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                c.wake_errors += 1
                pos.failures += 1
                delay = min(self.backoff_max_s, self.backoff_initial_s * 2 ** (pos.failures - 1))
                log.warning(
                    "%s: wake %s failed (attempt %d, retry in %.1fs): %r",
                    self.name,
                    pos.wid,
                    pos.failures,
                    delay,
                    exc,
                )
                await asyncio.sleep(delay)
                if pos.removed:
                    return
                newer = book.seq - pos.sent_seq
                if newer > 0 and book.price is not None and pos.outside(book.price):
                    c.coalesced += newer
                    tick = PriceTick(price=book.price, at=tick_time(book.at_ms))
                    pos.sent_seq = book.seq
                c.retries += 1
                continue
            if pos.removed:
                return
            if view is None or not view.open:
                c.wakeups_gone += 1
                pos.in_flight = False
                self.remove(pos.wid)
                return
            c.wakeups_answered += 1
            if crossed:
                self._wake_seconds.observe(time.perf_counter() - crossed)  # float ok: timing
                crossed = 0
            pos.failures = 0
            pos.answers += 1
            pos.below, pos.above = view.wake_below, view.wake_above
            newer = book.seq - pos.sent_seq
            if newer > 0:
                c.coalesced += newer
                price = book.price
                assert price is not None
                if pos.outside(price):
                    c.resends += 1
                    tick = PriceTick(price=price, at=tick_time(book.at_ms))
                    pos.sent_seq = book.seq
                    continue
            pos.in_flight = False
            book.index(pos)
            return

    # --- reading -------------------------------------------------------------------

    def symbols(self) -> frozenset[str]:
        """Symbols with at least one open position."""
        return frozenset(self._books)

    def add_listener(self, callback: Callable[[], None]) -> None:
        """Call `callback()` whenever the symbol set changes."""
        self._listeners.append(callback)

    def _notify(self) -> None:
        for cb in self._listeners:
            cb()

    def workflow_ids(self, symbol: str | None = None) -> list[str]:
        if symbol is None:
            return list(self._positions)
        book = self._books.get(symbol)
        return [] if book is None else list(book.positions)

    def last_ticks(self) -> dict[str, int | None]:
        """Each watched symbol's latest tick time (exchange ms; None before its first)."""
        return {symbol: book.at_ms for symbol, book in self._books.items()}

    def band(self, workflow_id: str) -> tuple[Decimal | None, Decimal | None] | None:
        pos = self._positions.get(workflow_id)
        return None if pos is None else (pos.below, pos.above)

    def answers(self, workflow_id: str) -> int | None:
        """How many bands the position's wake-ups have brought back (None if unknown).

        A band read some other way (a `band` query) is newer than the gate's only if
        this count did not change while it was being read.
        """
        pos = self._positions.get(workflow_id)
        return None if pos is None else pos.answers

    def is_in_flight(self, workflow_id: str) -> bool:
        pos = self._positions.get(workflow_id)
        return pos is not None and pos.in_flight

    def __contains__(self, workflow_id: object) -> bool:
        return workflow_id in self._positions

    def __len__(self) -> int:
        return len(self._positions)

    @property
    def in_flight(self) -> int:
        """Positions with a wake-up in flight (sending, queued, or backing off)."""
        return len(self._tasks)

    def stats(self) -> dict[str, Any]:
        """Counters and gauges as one JSON-able dict."""
        out: dict[str, Any] = asdict(self.counters)
        out.update(
            in_flight=self.in_flight,
            positions=len(self._positions),
            symbols=len(self._books),
            uptime_s=round(time.monotonic() - self.started_at, 1),  # float ok: timing
        )
        return out

    # --- lifecycle -----------------------------------------------------------------

    async def wait_idle(self, timeout: float | None = None) -> bool:  # float ok: seconds
        """Wait until no wake-up is in flight; False on timeout."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def close(self) -> None:
        """Cancel every wake-up in flight."""
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t

    def load(self, views: Iterable[BandView], *, prime: bool = True) -> int:
        """Apply many `BandView`s (e.g. from `temporal_waker.load_bands`); returns how many
        positions are open among them."""
        n = 0
        for view in views:
            self.apply(view, prime=prime)
            n += view.open
        return n
