"""Temporal activities over the exchange gateway.

Exchange errors leave as `ApplicationError`s whose `type` is the domain's
`ErrorType` value: transient ones are retried by Temporal with backoff,
permanent ones are non-retryable and handled by the workflow by name. One
wrapper (`_exchange_call`) does that translation for every activity; details
are ``{"code": <exchange code or None>, "ambiguous": <bool>}``.

Every placement after the first attempt looks its client id up before sending,
so a retry never places a second order. A placement that carries a
`position_id` is journaled first (domain.journal, table ``order_journal``): no
order leaves without a record naming its workflow, and a client id already
journaled for a different order is refused (`ClientIdReused`, non-retryable,
details ``[JournalEntry.details()]`` of the journaled order).

This module imports neither ccxt nor asyncpg: workflows reference its methods by
definition (``workflow.execute_activity_method(ExchangeActivities.place_order, ...)``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, Protocol, TypeVar

from temporalio import activity
from temporalio.exceptions import ApplicationError

from domain.errors import (
    BAN_WAIT_MAX,
    ErrorClass,
    ErrorType,
    ban_end_ms,
    classify_exception,
    rate_limit_wait,
    scrub,
    scrubbed,
)
from domain.events import Event, EventType, RateLimitHit, make_event
from domain.journal import PROTECTIVE_KINDS, JournalEntry, journal_entry
from domain.market import MarketFilters
from domain.orders import Fill, OrderIntent, OrderKind, OrderView, OutsideExit, stop_intent
from domain.requests import (
    AccountRequest,
    AccountSnapshot,
    AmendStopRequest,
    CandlesRequest,
    EntryWithStopRequest,
    EntryWithStopResult,
    ExchangeOrderRequest,
    ExchangePosition,
    FundingRequest,
    OrderRequest,
    OutsideExitRequest,
    PlaceOrderRequest,
    SymbolRequest,
)
from domain.sizing import InvalidStop, stop_level
from domain.types import OrderSide, Side
from domain.volatility import Candle
from domain.wave_io import EntryReadiness

if TYPE_CHECKING:  # ccxt stays out of importers (the workflow sandbox)
    from activities.exchange.gateway import ExchangeGateway

HEARTBEAT_EVERY_S = 0.3  # float ok: seconds
STOP_RETRY_FIRST_S = 0.2  # float ok: seconds
STOP_RETRY_MAX_S = 2.0  # float ok: seconds
# How long a stop sent with the entry is looked for once the entry has filled.
CARRIED_STOP_WAIT_S = 2.0  # float ok: seconds
# How far before the entry's own timestamp a stop that fired is still taken as its.
CARRIED_STOP_CLOCK_SLACK = timedelta(seconds=2)
FILL_POLL_FIRST_S = 0.05  # float ok: seconds
FILL_POLL_MAX_S = 0.5  # float ok: seconds


class EventSink(Protocol):
    """Where rate-limit events go (the worker's `Store`)."""

    def append_event(self, event: Event) -> Awaitable[bool]: ...


class OrderJournal(Protocol):
    """Where orders are recorded before they are sent (the worker's `Store`).

    `journal_order` inserts the entry unless its client id is journaled already
    and returns the row that is there (the new one, or the earlier one).
    """

    def journal_order(self, entry: JournalEntry) -> Awaitable[JournalEntry]: ...


# Spread over the retries that a ban's end releases at once, so they do not meet the
# exchange's limit again together.
BAN_RETRY_SPREAD_S = 0.5  # float ok: seconds


def ban_wait(exc: BaseException, kind: ErrorClass) -> timedelta | None:
    """How long to wait before trying `exc`'s request again: until the ban it reports
    ends (plus a random spread), at most `BAN_WAIT_MAX`; None for anything else."""
    if kind.type is not ErrorType.RATE_LIMITED:
        return None
    wait = rate_limit_wait(str(exc), int(time.time() * 1000))
    if wait is None:
        return None
    spread = timedelta(seconds=random.uniform(0, BAN_RETRY_SPREAD_S))  # float ok: seconds
    return min(wait + spread, BAN_WAIT_MAX)


# Kept between the end of a ban's wait and the attempt's start-to-close timeout: the
# stop's send and its answer (a ccxt timeout), and the activity's own reply.
ATTEMPT_END_MARGIN_S = 20.0  # float ok: seconds


def _attempt_end() -> float:  # float ok: event-loop time
    """When this activity attempt must have ended by (its start-to-close timeout less
    `ATTEMPT_END_MARGIN_S`), on the event loop's clock; infinity without a timeout.
    A wait beyond it would let Temporal start the next attempt beside this one."""
    info = activity.info()
    timeout = info.start_to_close_timeout
    loop_now = asyncio.get_running_loop().time()
    if timeout is None:
        return float("inf")  # float ok: no bound
    ends = info.started_time + timeout - timedelta(seconds=ATTEMPT_END_MARGIN_S)
    return loop_now + (ends - datetime.now(UTC)).total_seconds()


def to_application_error(exc: BaseException, *, placement: bool = False) -> ApplicationError:
    """The `ApplicationError` Temporal should see for an exchange exception.

    A ban with a known end sets `next_retry_delay`, so Temporal's next attempt (run
    by the server, with no workflow task between) comes once the ban has lifted, not
    within it; the retry policy's back-off applies otherwise.
    """
    kind = classify_exception(exc, placement=placement)
    return ApplicationError(
        scrubbed(exc)[:2000],
        {"code": kind.code, "ambiguous": kind.ambiguous},
        type=kind.type.value,
        non_retryable=not kind.retryable,
        next_retry_delay=ban_wait(exc, kind),
    )


def client_id_reused(journaled: JournalEntry, refused: OrderIntent) -> ApplicationError:
    """The error for an intent whose client id is journaled for a different order.

    Nothing was sent. The details' first item is the journaled order
    (`JournalEntry.details()`, all strings), so the workflow can find and cancel it.
    """
    trigger = f" @ {journaled.trigger_price}" if journaled.trigger_price is not None else ""
    asked = f" @ {refused.trigger_price}" if refused.trigger_price is not None else ""
    return ApplicationError(
        f"client order id {journaled.client_order_id} is journaled for "
        f"{journaled.kind.value} {journaled.side.value} {journaled.quantity} "
        f"{journaled.symbol}{trigger} (position {journaled.position_id}); refused "
        f"{refused.kind.value} {refused.side.value} {refused.qty} {refused.symbol}{asked}",
        journaled.details(),
        type=ErrorType.CLIENT_ID_REUSED.value,
        non_retryable=True,
    )


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _exchange_call(
    *, placement: bool = False
) -> Callable[
    [Callable[Concatenate[ExchangeActivities, _P], Coroutine[Any, Any, _R]]],
    Callable[Concatenate[ExchangeActivities, _P], Coroutine[Any, Any, _R]],
]:
    """Translate what an exchange activity raises into the `ApplicationError` Temporal sees.

    `placement` marks calls that create orders: a transient failure of those is
    ambiguous (the exchange may have accepted the order). An `ApplicationError`
    the method raises itself passes unchanged; a rate limit is also recorded.
    Goes under ``@activity.defn`` (which reads the signature through the wrapper).
    """

    def wrap(
        method: Callable[Concatenate[ExchangeActivities, _P], Coroutine[Any, Any, _R]],
    ) -> Callable[Concatenate[ExchangeActivities, _P], Coroutine[Any, Any, _R]]:
        @functools.wraps(method)
        async def translated(
            self: ExchangeActivities, /, *args: _P.args, **kwargs: _P.kwargs
        ) -> _R:
            try:
                return await method(self, *args, **kwargs)
            except ApplicationError:
                raise
            except Exception as exc:
                # Not `from exc`: Temporal would record the raw exception as the
                # cause, and ccxt's text quotes signed URLs (scrubbed above).
                raise await self._failed(exc, placement=placement) from None

        return translated

    return wrap


class ExchangeActivities:
    """Exchange activities for the accounts this worker holds keys for.

    `events` receives rate-limit events; `journal` records every order that
    carries a `position_id` before it is sent (both: the worker's `Store`).
    """

    def __init__(
        self,
        gateways: Mapping[str, ExchangeGateway],
        events: EventSink | None = None,
        journal: OrderJournal | None = None,
        *,
        journal_wait_s: float = 1.0,  # float ok: seconds
        journal_wait_entry_s: float = 5.0,  # float ok: seconds
        heartbeat_every_s: float = HEARTBEAT_EVERY_S,  # float ok: seconds
    ) -> None:
        self._gateways = dict(gateways)
        self._events = events
        self._journal = journal
        # How long a protective order (stop, emergency stop, close) waits for the
        # journal before it is sent unrecorded; other orders are refused (retryably)
        # after `journal_wait_entry_s`.
        self._journal_wait_s = journal_wait_s
        self._journal_wait_entry_s = journal_wait_entry_s
        self._heartbeat_every_s = heartbeat_every_s

    # --- shared plumbing ------------------------------------------------------------------

    async def _failed(self, exc: BaseException, *, placement: bool = False) -> ApplicationError:
        """The error to raise for `exc`; a rate limit is also recorded as an event."""
        await self._note(exc, classify_exception(exc, placement=placement))
        return to_application_error(exc, placement=placement)

    async def _note(self, exc: BaseException, kind: ErrorClass) -> None:
        """Record a rate limit as an event (best effort)."""
        if kind.type is not ErrorType.RATE_LIMITED or self._events is None:
            return
        info = activity.info()
        end = ban_end_ms(str(exc))
        event = make_event(
            EventType.RATE_LIMIT_HIT,
            RateLimitHit(
                exchange=info.activity_type,
                endpoint=None,
                retry_after_ms=None if end is None else max(end - int(time.time() * 1000), 0),
            ),
            event_id=f"rate-limit/{info.workflow_id}/{info.activity_id}/{info.attempt}",
            occurred_at=datetime.now(UTC),
            correlation_id=info.workflow_id,
            error_message=scrub(str(exc))[:500],
        )
        with contextlib.suppress(Exception):  # recording must not hide the real error
            await self._events.append_event(event)

    def _gateway(self, account: str) -> ExchangeGateway:
        try:
            return self._gateways[account]
        except KeyError:
            raise ApplicationError(
                f"this worker has no account {account!r}", type="UnknownAccount", non_retryable=True
            ) from None

    async def _journaled(
        self,
        intent: OrderIntent,
        position_id: str | None,
        gateway: ExchangeGateway,
        *,
        may_exist: bool,
    ) -> tuple[JournalEntry | None, bool]:
        """Journal `intent` before it is sent; the conflicting journaled order, if any,
        and whether the very same order was journaled before this call.

        The second is True when an earlier execution journaled this order and so may
        have sent it (a retry, or a workflow reset or replayed from before the
        order's outcome was recorded): the caller then looks the order up by its
        client id before sending it, whatever its own attempt number says.

        The conflict is None when the order may be sent: it is journaled now, or was
        journaled before with the same intent (a retry), or there is nothing to
        journal (no `position_id`, no journal), or - for a protective order only -
        the journal could not be written within `journal_wait_s` (the order is
        sent anyway, with a warning: a position is never left unprotected for
        want of a record). Returns the journaled entry when the client id belongs
        to a different order. Raises a retryable `JournalUnavailable` error when a
        non-protective order could not be journaled: it is not sent - unless
        (`may_exist`: a retry) the exchange has it already, so nothing is sent:
        a filled entry's stop never waits for the database.
        """
        if position_id is None or self._journal is None:
            return None, False
        info = activity.info()
        entry = journal_entry(
            intent,
            position_id=position_id,
            workflow_id=info.workflow_id or position_id.split("/", 1)[0],
            account=gateway.account,
            exchange=gateway.exchange_id,
        )
        protective = intent.kind in PROTECTIVE_KINDS
        short = protective or may_exist
        wait = self._journal_wait_s if short else self._journal_wait_entry_s
        try:
            stored = await self._record(entry, wait)
        except Exception as exc:
            if protective or (may_exist and await self._on_exchange(gateway, intent)):
                activity.logger.warning(
                    "order journal unavailable (%s); going on with %s %s unjournaled",
                    scrubbed(exc),
                    intent.kind.value,
                    intent.client_order_id,
                )
                return None, True  # unknown whether an earlier attempt sent it
            raise ApplicationError(
                f"order journal unavailable, {intent.client_order_id} not sent: {scrubbed(exc)}"[
                    :2000
                ],
                {"code": None, "ambiguous": False},
                type=ErrorType.JOURNAL_UNAVAILABLE.value,
                non_retryable=False,
            ) from None
        if not stored.same_intent(entry):
            return stored, True
        return None, stored.earlier

    @staticmethod
    async def _on_exchange(gateway: ExchangeGateway, intent: OrderIntent) -> bool:
        """True when the exchange has the order (False also when it cannot say)."""
        try:
            found = await gateway.find(intent.symbol, intent.client_order_id, intent.is_conditional)
        except Exception:
            return False
        return found is not None

    async def _record(self, entry: JournalEntry, wait_s: float) -> JournalEntry:  # float ok
        """`journal_order`, retried on failure until it succeeds or `wait_s` has passed."""
        assert self._journal is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        delay = 0.05  # float ok: seconds
        while True:
            remaining = deadline - loop.time()
            try:
                return await asyncio.wait_for(
                    self._journal.journal_order(entry), max(remaining, 0.001)
                )
            except Exception:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise
            await asyncio.sleep(min(delay, remaining))
            delay = min(delay * 2, 0.25)

    @contextlib.asynccontextmanager
    async def _heartbeating(self, phase: list[str]) -> AsyncIterator[None]:
        """Heartbeat every `heartbeat_every_s` until the block ends (details: `phase[0]`).

        From a task of its own, so a long exchange call never delays it: the
        server notices a dead worker within the activity's heartbeat timeout and
        gives the attempt to another one. Local activities do not heartbeat.
        """
        if activity.info().is_local:
            yield
            return

        async def beat() -> None:
            while True:
                activity.heartbeat(phase[0])
                await asyncio.sleep(self._heartbeat_every_s)

        task = asyncio.create_task(beat())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # --- placements -------------------------------------------------------------------------

    @activity.defn(name="exchange.place_order")
    @_exchange_call(placement=True)
    async def place_order(self, req: PlaceOrderRequest) -> OrderView:
        """Place one order idempotently (journaled first; look-up by client id on retries)."""
        gateway = self._gateway(req.account)
        gateway.check_position_spec(req.hedge_mode)
        look_up = req.look_up_first or activity.info().attempt > 1
        if req.take_position_stop and req.intent.kind is OrderKind.STOP:
            taken = await self._take_position_stop(gateway, req, look_up=look_up)
            if taken is not None:
                return taken
        conflict, earlier = await self._journaled(
            req.intent, req.position_id, gateway, may_exist=look_up
        )
        if conflict is not None:
            raise client_id_reused(conflict, req.intent)
        return await gateway.place(req.intent, look_up_first=look_up or earlier)

    async def _take_position_stop(
        self, gateway: ExchangeGateway, req: PlaceOrderRequest, *, look_up: bool
    ) -> OrderView | None:
        """The position's own stop-loss taken as `req.intent` (None: it has none).

        On a venue whose entries carry their stop, an entry whose answer was lost
        came with a stop-loss the workflow never learned of; its stop is then placed
        under the id the entry's stop was given. The stop under that id, if an
        earlier attempt placed it, is returned; else the position's own stop-loss,
        moved in place to the intent's level, is this stop (one stop on the
        position, the one its workflow moves), journaled under the intent's id.
        With `position_stop_fired_since`, a stop-loss of the position's that has
        fired since then (before anyone looked) is this stop too, returned filled
        as it is: it closed the position, and the workflow books it as its stop's
        fill (a second stop would be refused reduce-only on the flat position).
        """
        intent = req.intent
        assert intent.trigger_price is not None
        if look_up:
            own = await gateway.find(intent.symbol, intent.client_order_id, True)
            if own is not None:
                return own
        held = Side.LONG if intent.side is OrderSide.SELL else Side.SHORT
        since = req.position_stop_fired_since
        stop = await gateway.position_stop(
            intent.symbol,
            fired_since=None if since is None else since - CARRIED_STOP_CLOCK_SLACK,
            side=held,
        )
        if stop is None:
            return None
        # Recorded before the move, as any order of ours (a row there already, the
        # entry's carried stop under this id, is the same stop).
        await self._journaled(intent, req.position_id, gateway, may_exist=True)
        if stop.trigger_price != intent.trigger_price and not stop.is_final:
            stop = await gateway.amend_stop(
                intent.symbol,
                client_order_id=intent.client_order_id,
                exchange_order_id=stop.exchange_order_id,
                trigger_price=intent.trigger_price,
                position_stop=True,
                side=held,
            )
        activity.logger.info(
            "%s: the position's own stop-loss %s taken as %s @ %s (%s)",
            intent.symbol,
            stop.exchange_order_id,
            intent.client_order_id,
            stop.trigger_price,
            stop.status.value,
        )
        return stop.model_copy(update={"client_order_id": intent.client_order_id})

    @activity.defn(name="exchange.place_entry_with_stop")
    @_exchange_call(placement=True)
    async def place_entry_with_stop(self, req: EntryWithStopRequest) -> EntryWithStopResult:
        """Entry, then at once its stop for the filled quantity (no round trip between).

        Heartbeats all along (schedule it with a short heartbeat timeout): if this
        worker dies, another attempt starts elsewhere within that timeout, and
        every attempt after the first looks both client ids up before sending.
        Both orders are journaled before they are sent. An entry the exchange
        still reports unfilled is polled for its fill for `entry_fill_wait_s`.
        A transient failure of the stop is retried here (200 ms doubling to 2 s,
        for `stop_retry_for_s`, looking the stop up first after an ambiguous
        failure; a reduce-only refusal too, which right after the fill means the
        exchange does not show the position yet); what still fails is returned in
        `stop_error`, not raised, so the workflow's stop-loss saga continues from
        it. Only a failure of the entry fails the activity.

        A cancellation (the workflow's, or a worker shutting down) that arrives
        once the entry is on its way is not obeyed at once: the entry's outcome
        and its stop are seen through first, so a fill never stays without its
        stop for want of an answer; then the cancellation is reported, and the
        workflow (which waits for it) looks both orders up by client id.
        """
        gateway = self._gateway(req.account)
        gateway.check_position_spec(req.hedge_mode)
        phase = ["journal"]
        cancelled = False
        async with self._heartbeating(phase):
            work = asyncio.create_task(self._entry_with_stop(gateway, req, phase))
            while True:
                try:
                    result = await asyncio.shield(work)
                    if cancelled:
                        raise asyncio.CancelledError
                    return result
                except asyncio.CancelledError:
                    if work.done():
                        raise
                    cancelled = True
                    if phase[0] == "journal":  # nothing sent yet: obey
                        work.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await work
                        raise
                    current = asyncio.current_task()
                    if current is not None:
                        current.uncancel()
                    activity.logger.warning(
                        "cancellation requested during %s of entry %s: seeing it through first",
                        phase[0],
                        req.entry.client_order_id,
                    )

    async def _entry_with_stop(
        self, gateway: ExchangeGateway, req: EntryWithStopRequest, phase: list[str]
    ) -> EntryWithStopResult:
        retry = req.look_up_first or activity.info().attempt > 1
        conflict, earlier = await self._journaled(
            req.entry, req.position_id, gateway, may_exist=retry
        )
        if conflict is not None:
            raise client_id_reused(conflict, req.entry)
        retry = retry or earlier  # sent before, maybe: both orders are looked up first
        side = Side.LONG if req.entry.side is OrderSide.BUY else Side.SHORT
        attached = None
        if req.filters.entry_carries_stop:
            attached = await self._stop_to_attach(gateway, req, side, retry)
        phase[0] = "entry"
        entry = await gateway.place(req.entry, look_up_first=retry, attached_stop=attached)
        phase[0] = "fill"
        entry = await self._await_fill(gateway, req, entry)
        if entry.filled_qty <= 0 or entry.average_price is None:
            return EntryWithStopResult(entry=entry)
        try:
            price = stop_level(side, entry.average_price, req.stop, req.filters)
        except InvalidStop:
            if attached is None or attached.trigger_price is None:
                return EntryWithStopResult(entry=entry, stop_error=ErrorType.INVALID_ORDER.value)
            price = attached.trigger_price
        if attached is not None:
            phase[0] = "stop"
            carried = await self._carried_stop(gateway, req, entry, attached, price)
            if carried is not None:
                return carried
        # No stop came with the entry (none could be attached, or it has fired
        # already): it follows the fill; an attached one under its journaled intent.
        intent = attached or stop_intent(
            req.stop_client_order_id, req.entry.symbol, side, entry.filled_qty, price
        )
        price = intent.trigger_price or price
        phase[0] = "stop"
        conflict, earlier = await self._journaled(intent, req.position_id, gateway, may_exist=retry)
        retry = retry or earlier
        if conflict is not None:
            return EntryWithStopResult(
                entry=entry,
                stop_price=price,
                stop_error=ErrorType.CLIENT_ID_REUSED.value,
                stop_conflict=conflict,
            )
        activity.logger.info(
            "%s entry %s filled %s @ %s; placing stop %s @ %s",
            req.entry.symbol,
            req.entry.client_order_id,
            entry.filled_qty,
            entry.average_price,
            intent.client_order_id,
            price,
        )
        return await self._place_stop(gateway, req, entry, intent, look_up_first=retry)

    async def _stop_to_attach(
        self, gateway: ExchangeGateway, req: EntryWithStopRequest, side: Side, retry: bool
    ) -> OrderIntent | None:
        """The stop to send with the entry (a venue whose entries carry their stop),
        journaled first: at the stop rule's level from the mark price (the fill is not
        known yet). A retry sends the stop journaled by the first attempt, so both
        attempts ask for the very same orders. None: no stop can be attached (the rule
        gives no valid level, or the id names another order); the stop then follows
        the fill as on other venues.
        """
        try:
            mark = await gateway.mark_price(req.entry.symbol)
            price = stop_level(side, mark, req.stop, req.filters)
        except InvalidStop:
            return None
        intent = stop_intent(req.stop_client_order_id, req.entry.symbol, side, req.entry.qty, price)
        conflict, _ = await self._journaled(intent, req.position_id, gateway, may_exist=retry)
        if conflict is None:
            return intent
        same_order = (
            conflict.kind is intent.kind
            and conflict.symbol == intent.symbol
            and conflict.side is intent.side
            and conflict.trigger_price is not None
        )
        if not same_order:
            return None
        assert conflict.trigger_price is not None
        return stop_intent(
            intent.client_order_id, intent.symbol, side, conflict.quantity, conflict.trigger_price
        )

    async def _carried_stop(
        self,
        gateway: ExchangeGateway,
        req: EntryWithStopRequest,
        entry: OrderView,
        attached: OrderIntent,
        price: Decimal,
    ) -> EntryWithStopResult | None:
        """The stop that came with the filled entry, moved to the level the fill gives
        (`price`) in place; None if the position has none (then it is placed apart).

        The exchange creates it as the entry executes; it is looked for until
        `stop_retry_for_s`. A move that fails leaves it at the level it was sent
        with, which protects the position all the same.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(req.stop_retry_for_s, CARRIED_STOP_WAIT_S)
        delay = STOP_RETRY_FIRST_S
        # A stop that fired before it was looked for still belongs to this entry.
        filled_at = entry.updated_at or datetime.now(UTC)
        since = filled_at - CARRIED_STOP_CLOCK_SLACK
        # The position the entry opened (names it on a hedge-mode account).
        opened = Side.LONG if req.entry.side is OrderSide.BUY else Side.SHORT
        while True:
            try:
                stop = await gateway.position_stop(req.entry.symbol, fired_since=since, side=opened)
            except Exception as exc:
                await self._note(exc, classify_exception(exc))
                stop = None
            if stop is not None or loop.time() + delay > deadline:
                break
            await asyncio.sleep(delay)
            delay = min(delay * 2, STOP_RETRY_MAX_S)
        if stop is None:
            return None
        cid = attached.client_order_id
        stop = stop.model_copy(update={"client_order_id": cid})
        if stop.trigger_price != price and not stop.is_final:
            try:
                stop = await gateway.amend_stop(
                    req.entry.symbol,
                    client_order_id=cid,
                    exchange_order_id=stop.exchange_order_id,
                    trigger_price=price,
                    position_stop=True,
                    side=opened,
                )
            except Exception as exc:
                await self._note(exc, classify_exception(exc))
                activity.logger.warning(
                    "stop %s stays at %s (not moved to %s: %s)",
                    cid,
                    stop.trigger_price,
                    price,
                    scrubbed(exc),
                )
        activity.logger.info(
            "%s entry %s filled %s @ %s with its stop %s @ %s",
            req.entry.symbol,
            req.entry.client_order_id,
            entry.filled_qty,
            entry.average_price,
            cid,
            stop.trigger_price,
        )
        return EntryWithStopResult(entry=entry, stop=stop, stop_price=stop.trigger_price)

    async def _await_fill(
        self, gateway: ExchangeGateway, req: EntryWithStopRequest, entry: OrderView
    ) -> OrderView:
        """The entry once it has a fill (or is final), polled for `entry_fill_wait_s`.

        A read that fails only ends the wait early: the workflow looks again.
        """
        if entry.filled_qty > 0 or entry.is_final:
            return entry
        loop = asyncio.get_running_loop()
        deadline = loop.time() + req.entry_fill_wait_s
        delay = FILL_POLL_FIRST_S
        while loop.time() + delay < deadline:
            await asyncio.sleep(delay)
            delay = min(delay * 2, FILL_POLL_MAX_S)
            try:
                found = await gateway.find(req.entry.symbol, req.entry.client_order_id, False)
            except Exception as exc:
                kind = classify_exception(exc)
                await self._note(exc, kind)
                if not kind.retryable:
                    break
                continue
            if found is not None:
                entry = found
                if entry.filled_qty > 0 or entry.is_final:
                    break
        return entry

    async def _place_stop(
        self,
        gateway: ExchangeGateway,
        req: EntryWithStopRequest,
        entry: OrderView,
        intent: OrderIntent,
        *,
        look_up_first: bool,
    ) -> EntryWithStopResult:
        """Place the entry's stop, retrying transient failures for `stop_retry_for_s`.

        A ban with a known end is waited out here (up to `BAN_WAIT_MAX` beyond
        `stop_retry_for_s`): every order is refused until it ends, so giving the
        failure back to the workflow would only spend its saga's steps within the ban
        and make the next try wait for a workflow task.
        """
        price = intent.trigger_price
        loop = asyncio.get_running_loop()
        deadline = loop.time() + req.stop_retry_for_s
        ban_deadline = max(deadline, min(deadline + BAN_WAIT_MAX.total_seconds(), _attempt_end()))
        delay = STOP_RETRY_FIRST_S
        look_up = look_up_first
        ambiguous = False
        while True:
            try:
                stop = await gateway.place(intent, look_up_first=look_up)
            except Exception as exc:
                kind = classify_exception(exc, placement=True)
                await self._note(exc, kind)
                # Once any attempt was ambiguous the stop may exist, whatever
                # the later attempts (each of which looks it up first) say.
                ambiguous = ambiguous or kind.ambiguous
                # The entry has just filled: a reduce-only refusal now means the
                # exchange's position view lags our fill (Bybit's "no position"
                # for a stop sent right after the entry), not that there is none.
                lagging = kind.type is ErrorType.REDUCE_ONLY_REJECTED
                ban = ban_wait(exc, kind)
                wait = delay if ban is None else ban.total_seconds()
                if ban is not None and loop.time() + wait <= ban_deadline:
                    deadline = max(deadline, loop.time() + wait + STOP_RETRY_MAX_S)
                if not (kind.retryable or lagging) or loop.time() + wait > deadline:
                    return EntryWithStopResult(
                        entry=entry,
                        stop_price=price,
                        stop_error=kind.type.value,
                        stop_ambiguous=ambiguous,
                    )
                activity.logger.warning(
                    "stop %s failed (%s), retrying in %.1f s",
                    intent.client_order_id,
                    scrubbed(exc),
                    wait,
                )
                look_up = look_up or ambiguous
                await asyncio.sleep(wait)
                delay = min(delay * 2, STOP_RETRY_MAX_S)
                continue
            return EntryWithStopResult(entry=entry, stop=stop, stop_price=price)

    @activity.defn(name="exchange.amend_stop")
    @_exchange_call()
    async def amend_stop(self, req: AmendStopRequest) -> OrderView:
        """Move one of our resting stops in place (venues with `stop_moves_in_place`):
        one request, the same order before and after, never a second stop. A retry
        after a lost answer finds the price already set and succeeds."""
        return await self._gateway(req.account).amend_stop(
            req.symbol,
            client_order_id=req.client_order_id,
            exchange_order_id=req.exchange_order_id,
            trigger_price=req.trigger_price,
            position_stop=req.position_stop,
            side=req.side,
        )

    # --- reads and cancels ---------------------------------------------------------------------

    @activity.defn(name="exchange.find_order")
    @_exchange_call()
    async def find_order(self, req: OrderRequest) -> OrderView | None:
        """The order with this client id, open or done; None if the exchange has none."""
        return await self._gateway(req.account).find(
            req.symbol,
            req.client_order_id,
            req.conditional,
            exchange_order_id=req.exchange_order_id,
        )

    @activity.defn(name="exchange.cancel_order")
    @_exchange_call()
    async def cancel_order(self, req: OrderRequest) -> OrderView | None:
        """Cancel one order (a missing one counts as done); returns its final view."""
        return await self._gateway(req.account).cancel(
            req.symbol,
            client_order_id=req.client_order_id,
            exchange_order_id=req.exchange_order_id,
            conditional=req.conditional,
        )

    @activity.defn(name="exchange.cancel_by_exchange_id")
    @_exchange_call()
    async def cancel_by_exchange_id(self, req: ExchangeOrderRequest) -> OrderView | None:
        """Cancel an order by exchange id (one without our client id); a missing one is done."""
        return await self._gateway(req.account).cancel_by_exchange_id(
            req.symbol, req.exchange_order_id, conditional=req.conditional
        )

    @activity.defn(name="exchange.position")
    @_exchange_call()
    async def position(self, req: SymbolRequest) -> ExchangePosition:
        """The account's position in one symbol (qty 0 when flat)."""
        return await self._gateway(req.account).position(req.symbol, req.side)

    @activity.defn(name="exchange.open_orders")
    @_exchange_call()
    async def open_orders(self, req: SymbolRequest) -> list[OrderView]:
        """Every open order of one symbol, regular and conditional (`is_conditional` set)."""
        return await self._gateway(req.account).all_open_orders(req.symbol)

    @activity.defn(name="exchange.account_snapshot")
    @_exchange_call()
    async def account_snapshot(self, req: AccountRequest) -> AccountSnapshot:
        """The whole account: every non-flat position, then every open order.

        Contract: `positions` lists each symbol with a position once (a symbol
        absent is flat); `orders` is every open order of every symbol, regular
        and conditional (`is_conditional`, `reduce_only`, `close_position` and
        client ids set; a close-position order counts as reduce-only), each
        once, its symbol canonical. Positions are read before orders, so an
        order that fills in between is seen gone rather than resting on a
        position that looks flat. Read-only and idempotent: safe to retry. On
        Binance it costs `gateway.SNAPSHOT_WEIGHT` of request weight (the
        account-wide order lists are the expensive part).
        """
        return await self._gateway(req.account).account_snapshot()

    @activity.defn(name="exchange.entry_readiness")
    @_exchange_call()
    async def entry_readiness(self, req: AccountRequest) -> EntryReadiness:
        """The account's tradable symbols and free balance, read before a wave selects.

        An invalid key, insufficient funds or maintenance fail with their error
        type (domain.errors), which the wave turns into a pause of new entries.
        """
        return await self._gateway(req.account).entry_readiness()

    @activity.defn(name="exchange.mark_price")
    @_exchange_call()
    async def mark_price(self, req: SymbolRequest) -> Decimal:
        """Current mark price of one symbol."""
        return await self._gateway(req.account).mark_price(req.symbol)

    @activity.defn(name="exchange.candles")
    @_exchange_call()
    async def candles(self, req: CandlesRequest) -> list[Candle]:
        """The last `limit` candles of one symbol, oldest first (for the ATR)."""
        return await self._gateway(req.account).candles(req.symbol, req.timeframe, req.limit)

    @activity.defn(name="exchange.filters")
    @_exchange_call()
    async def filters(self, req: SymbolRequest) -> MarketFilters:
        """Trading filters (tick, step, minimums) of one symbol."""
        try:
            return await self._gateway(req.account).filters(req.symbol)
        except KeyError:
            raise ApplicationError(
                f"{req.symbol} is not listed", type="BadSymbol", non_retryable=True
            ) from None

    @activity.defn(name="exchange.clear_position_stop")
    @_exchange_call()
    async def clear_position_stop(self, req: SymbolRequest) -> OrderView | None:
        """Remove the position's own stop-loss (Bybit's, sent with an entry), if any:
        called by the position's own workflow once a stop of its own protects it (an
        adopter taking over from a workflow that is gone). Its view before it went, or
        None when the position had none."""
        return await self._gateway(req.account).clear_position_stop(req.symbol, req.side)

    @activity.defn(name="exchange.fills")
    @_exchange_call()
    async def fills(self, req: OrderRequest) -> list[Fill]:
        """Executions of one of our orders (for a triggered stop: of the order it became)."""
        return await self._gateway(req.account).order_fills(
            req.symbol,
            req.client_order_id,
            req.conditional,
            exchange_order_id=req.exchange_order_id,
        )

    @activity.defn(name="exchange.funding")
    @_exchange_call()
    async def funding(self, req: FundingRequest) -> Decimal:
        """Funding the account received (+) or paid (-) on the symbol since the
        position opened: booked into the position's PnL at its close. With the
        request's `position_side` (a hedge-mode position), that side's funding only."""
        return await self._gateway(req.account).funding(
            req.symbol, req.since, side=req.position_side
        )

    @activity.defn(name="exchange.outside_exit")
    @_exchange_call()
    async def outside_exit(self, req: OutsideExitRequest) -> OutsideExit:
        """The orders posguard did not place that closed the position (by hand, or the
        exchange's liquidation), with their executions: the workflow books them when
        its position is found flat without one of its own exit orders filling."""
        return await self._gateway(req.account).outside_exit(
            req.symbol, req.position_side, req.since
        )

    def all(self) -> list[Callable[..., Any]]:
        """Every activity method, for registration on a worker."""
        return [
            self.place_order,
            self.place_entry_with_stop,
            self.amend_stop,
            self.find_order,
            self.cancel_order,
            self.cancel_by_exchange_id,
            self.position,
            self.open_orders,
            self.account_snapshot,
            self.entry_readiness,
            self.mark_price,
            self.outside_exit,
            self.funding,
            self.candles,
            self.filters,
            self.fills,
            self.clear_position_stop,
        ]
