"""The account at a glance: read from the positions' workflows and from the store.

A running position is described by its own workflow (the `state` query: the
workflow is the only one who knows its stop for sure); its store row is the fallback
when the workflow does not answer, and then the page says so. A row that is not
over but has no running workflow is shown with a warning: nothing manages that
position or its stop. Closed positions, alerts, waves, reconcile findings and a
position's events come from the store. Nothing here writes anything.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

from temporalio.client import Client, WorkflowQueryFailedError
from temporalio.service import RPCError

from activities.store.repository import Store
from domain.events import Event, EventType
from domain.position import PositionState, is_terminal, realised_pnl
from domain.position_details import stop_distance_pct, unrealised_pnl
from domain.records import PositionRecord
from domain.types import Side
from workers.dashboard import store_reads
from workers.dashboard.chart import build_chart
from workers.dashboard.marks import MARK_NOTE, MarkHistory, MarkSampler
from workers.dashboard.models import (
    AccountState,
    AlertRow,
    ClosedPosition,
    Finding,
    OpenPosition,
    PositionDetail,
    TimelineEvent,
    WaveRow,
)
from workers.position_text import dec, short_position_id, ui_url
from workers.settings import Settings
from workflows.position_io import PositionView

log = logging.getLogger("posguard.dashboard")

QUERY_TIMEOUT = timedelta(seconds=3)
JUST_OVER = timedelta(seconds=60)
"""A row not yet over whose workflow ended this recently is its store write still on
the way: it is left out, not shown as NOT RUNNING."""
CLOSED_LIMIT = 20
ALERTS_LIMIT = 20
WAVES_LIMIT = 10
FINDINGS_LIMIT = 20
EVENTS_LIMIT = 2000
"""Events of one position read for its chart and timeline (the latest ones)."""

_HOLDING = frozenset(
    {PositionState.PENDING_SL, PositionState.ACTIVE, PositionState.CLOSING, PositionState.FAILED}
)
_T = TypeVar("_T")


def _quoted(names: Sequence[str]) -> str:
    return ", ".join('"' + n.replace("\\", "\\\\").replace('"', '\\"') + '"' for n in names)


def _signed(value: Decimal | None) -> Decimal | None:
    """`value` with a zero's sign dropped: an operator reads "-0.0" as a loss."""
    return abs(value) if value is not None and value == 0 else value


def _age_s(since: datetime | None, now: datetime) -> int | None:
    return None if since is None else max(int((now - since).total_seconds()), 0)


def _trailing_text(view: PositionView) -> str | None:
    rule, trail = view.trailing_rule, view.trailing
    if rule is None:
        return None
    callback = view.measured_callback_pct or rule.callback_pct
    text = f"{dec(callback)}%"
    if trail is not None:
        text += f" · {trail.phase.value} · best {dec(trail.best_price)}"
    return text


def run_url(settings: Settings, workflow_id: str, position_id: str) -> str:
    """The Temporal Web UI page of the position's first run (its id's tail): the run
    that began this lifecycle, whose later runs (continue-as-new) follow from it."""
    run = position_id.rsplit("/", 1)[-1]
    return f"{ui_url(settings, workflow_id)}/{run}/history"


class AccountReader:
    """Reads the configured accounts' positions and what the store holds about them."""

    def __init__(
        self,
        client: Client,
        store: Store,
        settings: Settings,
        *,
        sampler: MarkSampler | None = None,
        history: MarkHistory | None = None,
    ) -> None:
        self.client = client
        self.store = store
        self.settings = settings
        self.accounts = [a.name for a in settings.accounts]
        self.sampler = sampler or MarkSampler(settings)
        self.history = history or MarkHistory()
        # The last read, for the detail and action endpoints (no second query).
        self.views: dict[str, PositionView] = {}
        self.last: AccountState | None = None
        self._reported: set[str] = set()

    # --- the whole page ---------------------------------------------------------------

    async def read(self) -> AccountState:
        """The page now: open positions (with a fresh mark each), the latest closed
        ones, alerts, waves and reconcile findings. What could not be read is named in
        `errors`, and the rest is still shown."""
        errors: list[str] = []
        now = datetime.now(UTC)
        store, accounts = self.store, self.accounts
        running, live_rows, closed, alerts, waves, findings = await asyncio.gather(
            self._guard(self._running_ids(), [], "Temporal (running positions)", errors),
            self._guard(store_reads.live_rows(store, accounts), [], "store (positions)", errors),
            self._guard(
                store_reads.closed_rows(store, accounts, CLOSED_LIMIT), [], "store (closed)", errors
            ),
            self._guard(
                store_reads.latest_alerts(store, ALERTS_LIMIT), [], "store (alerts)", errors
            ),
            self._guard(
                store_reads.latest_waves(store, accounts, WAVES_LIMIT), [], "store (waves)", errors
            ),
            self._guard(
                store_reads.latest_findings(store, accounts, FINDINGS_LIMIT),
                [],
                "store (findings)",
                errors,
            ),
        )
        open_positions = await self._open_positions(running, live_rows, now, errors)
        state = AccountState(
            generated_at=now,
            accounts=self.accounts,
            refresh_ms=int(self.settings.web_refresh.total_seconds() * 1000),
            actions=self.settings.web_actions
            and self.settings.web_token is not None
            and bool(self.settings.web_token.get_secret_value()),
            mark_note=MARK_NOTE,
            open=open_positions,
            closed=[self._closed(r, q) for r, q in closed],
            alerts=[AlertRow.model_validate(a) for a in alerts],
            waves=[WaveRow.model_validate(w.model_dump()) for w in waves],
            findings=[self._finding(e) for e in findings],
            errors=sorted(set(errors)),
        )
        self.last = state
        # Logged once when a failure begins, not at every refresh while it lasts.
        for error in sorted(set(errors) - self._reported):
            log.warning("dashboard read failed: %s", error)
        self._reported = set(errors)
        return state

    async def _guard(self, read: Awaitable[_T], fallback: _T, what: str, errors: list[str]) -> _T:
        try:
            return await read
        except Exception as exc:  # shown on the page; the rest of the page still renders
            errors.append(f"{what}: {type(exc).__name__}: {str(exc)[:200]}")
            return fallback

    async def _running_ids(self) -> list[str]:
        query = (
            'WorkflowType="PositionWorkflow" AND ExecutionStatus="Running" '
            f"AND Account IN ({_quoted(self.accounts)})"
        )
        return [wf.id async for wf in self.client.list_workflows(query, limit=2000)]

    async def _view(self, workflow_id: str) -> PositionView | None:
        from workflows.position import PositionWorkflow

        handle = self.client.get_workflow_handle_for(PositionWorkflow.run, workflow_id)
        try:
            return await handle.query(PositionWorkflow.state, rpc_timeout=QUERY_TIMEOUT)
        except (RPCError, WorkflowQueryFailedError) as exc:
            log.debug("state of %s: %r", workflow_id, exc)
            return None

    async def _recently_over(self, workflow_id: str, now: datetime) -> bool | None:
        """Whether the workflow is not running and ended within `JUST_OVER`; None when it
        runs (it is then asked), False when it is gone or ended long ago. Describing
        costs the worker nothing, where a query of an ended workflow replays it."""
        from temporalio.client import WorkflowExecutionStatus

        try:
            desc = await self.client.get_workflow_handle(workflow_id).describe(
                rpc_timeout=QUERY_TIMEOUT
            )
        except RPCError:
            return False
        if desc.status is WorkflowExecutionStatus.RUNNING:
            return None
        return desc.close_time is not None and now - desc.close_time < JUST_OVER

    async def _open_positions(
        self,
        running: list[str],
        rows: list[PositionRecord],
        now: datetime,
        errors: list[str],
    ) -> list[OpenPosition]:
        # A row whose workflow the visibility list does not show may have just started
        # (the list lags), or just ended (its row follows), or be managed by nothing.
        listed = set(running)
        others = list(dict.fromkeys(r.workflow_id for r in rows if r.workflow_id not in listed))
        ended = await asyncio.gather(*(self._recently_over(w, now) for w in others))
        over = dict(zip(others, ended, strict=True))
        asked = [*running, *(w for w in others if over[w] is None)]
        answers = await asyncio.gather(*(self._view(w) for w in asked))
        answered = {v.position_id: v for v in answers if v is not None}
        views = {pid: v for pid, v in answered.items() if not is_terminal(v.snapshot.state)}
        silent = [w for w, v in zip(asked, answers, strict=True) if v is None]
        marks = await self.sampler.sample(
            [(v.spec.account, v.spec.symbol) for v in views.values()]
            + [(r.account, r.symbol) for r in rows if r.id not in answered]
        )
        out = [self._from_view(v, marks, now) for v in views.values()]
        for row in rows:
            if row.id in answered or over.get(row.workflow_id):
                continue  # shown from its workflow, or just over (its row follows)
            if row.workflow_id in silent:
                warning = "its workflow did not answer: is a worker running?"
            else:
                warning = (
                    "NOT RUNNING: no workflow manages this position or its stop; "
                    "check the exchange (the reconciler adopts what it finds)"
                )
            out.append(self._from_row(row, marks, now, warning))
        if silent:
            shown = ", ".join(silent[:5]) + (" ..." if len(silent) > 5 else "")
            errors.append(f"Temporal: no answer to the state query from {shown}")
        self.views = views
        out.sort(key=lambda p: (p.account, p.symbol, p.side, p.position_id))
        return out

    def _mark_of(
        self,
        position_id: str,
        key: tuple[str, str],
        marks: dict[tuple[str, str], Any],
        now: datetime,
    ) -> tuple[Decimal | None, datetime | None, str | None]:
        found = marks.get(key)
        if isinstance(found, Decimal):
            self.history.add(position_id, found, now)
            return found, now, None
        return None, None, found if isinstance(found, str) else "mark unavailable"

    def _from_view(
        self, view: PositionView, marks: dict[tuple[str, str], Any], now: datetime
    ) -> OpenPosition:
        spec, s = view.spec, view.snapshot
        mark, marked_at, mark_error = self._mark_of(
            view.position_id, (spec.account, spec.symbol), marks, now
        )
        if mark is None and view.trailing is not None and view.trailing.last_mark is not None:
            # The exchange could not be read: the last price the workflow evaluated.
            mark, marked_at = view.trailing.last_mark, view.trailing.updated_at
        holding = s.qty > 0 and s.state in _HOLDING
        emergency = None if s.emergency_stop is None else s.emergency_stop.trigger_price
        protected = not holding or s.stop is not None or s.emergency_stop is not None
        take_profit = None if s.take_profit is None else s.take_profit.trigger_price
        return OpenPosition(
            position_id=view.position_id,
            short_id=short_position_id(view.position_id),
            workflow_id=view.workflow_id,
            account=spec.account,
            exchange=spec.exchange.value,
            symbol=spec.symbol,
            side=spec.side.value,
            state=s.state.value,
            quantity=s.qty,
            entry=s.avg_entry_price,
            mark=mark,
            marked_at=marked_at,
            mark_error=mark_error,
            stop=s.stop_price,
            emergency_stop=emergency,
            stop_distance_pct=_signed(
                None
                if mark is None or s.stop_price is None
                else stop_distance_pct(spec.side, s.stop_price, mark)
            ),
            unrealised_pnl=_signed(None if mark is None else unrealised_pnl(spec.side, s, mark)),
            realised_pnl=s.realised_pnl,
            fees=s.fees,
            protected=protected,
            stop_confirmed_at=s.stop_moved_at if s.stop is not None else None,
            stop_confirmed_age_s=_age_s(s.stop_moved_at, now) if s.stop is not None else None,
            trailing=_trailing_text(view),
            take_profit=take_profit,
            opened_at=s.opened_at,
            source="workflow",
            warning=view.last_error,
            ui_url=ui_url(self.settings, view.workflow_id),
        )

    def _from_row(
        self,
        row: PositionRecord,
        marks: dict[tuple[str, str], Any],
        now: datetime,
        warning: str,
    ) -> OpenPosition:
        side = Side(row.side)
        mark, marked_at, mark_error = self._mark_of(row.id, (row.account, row.symbol), marks, now)
        holding = row.quantity > 0
        return OpenPosition(
            position_id=row.id,
            short_id=short_position_id(row.id),
            workflow_id=row.workflow_id,
            account=row.account,
            exchange=row.exchange,
            symbol=row.symbol,
            side=row.side,
            state=row.status,
            quantity=row.quantity,
            entry=row.entry_price,
            mark=mark,
            marked_at=marked_at,
            mark_error=mark_error,
            stop=row.stop_price,
            stop_distance_pct=_signed(
                None
                if mark is None or row.stop_price is None
                else stop_distance_pct(side, row.stop_price, mark)
            ),
            unrealised_pnl=_signed(
                None
                if mark is None or row.entry_price is None or not holding
                else realised_pnl(side, row.entry_price, mark, row.quantity)
            ),
            realised_pnl=row.realized_pnl,
            fees=row.fees,
            # Only its workflow knows whether the stop still stands: not proved here.
            protected=not holding,
            opened_at=row.opened_at,
            source="store",
            warning=warning,
            ui_url=ui_url(self.settings, row.workflow_id),
        )

    def _closed(self, row: PositionRecord, closed_qty: Decimal | None = None) -> ClosedPosition:
        """A row that is over; `closed_qty`: what its close booked (else what it held or
        asked for: a rolled-back entry books no close)."""
        quantity = closed_qty if closed_qty is not None else row.quantity or row.requested_qty
        return ClosedPosition(
            position_id=row.id,
            short_id=short_position_id(row.id),
            workflow_id=row.workflow_id,
            account=row.account,
            exchange=row.exchange,
            symbol=row.symbol,
            side=row.side,
            status=row.status,
            quantity=quantity if quantity is not None else row.quantity,
            entry=row.entry_price,
            exit=row.exit_price,
            realised_pnl=row.realized_pnl,
            fees=row.fees,
            funding=row.funding,
            net_pnl=row.realized_pnl - row.fees + row.funding,
            reason=row.exit_reason,
            opened_at=row.opened_at,
            closed_at=row.closed_at,
            ui_url=run_url(self.settings, row.workflow_id, row.id),
        )

    @staticmethod
    def _finding(event: Event) -> Finding:
        return Finding(
            occurred_at=event.occurred_at,
            type=event.type.value,
            severity=event.severity.value,
            account=event.account,
            symbol=event.symbol,
            detail=event.payload,
        )

    # --- one position -------------------------------------------------------------------

    async def detail(self, position_id: str) -> PositionDetail | None:
        """One position's chart, its events (oldest first) and its Web UI link; None
        when neither the last read nor the store knows it."""
        now = datetime.now(UTC)
        shown = None if self.last is None else self.last.open
        open_position = next((p for p in shown or [] if p.position_id == position_id), None)
        events = await store_reads.position_events(self.store, position_id, EVENTS_LIMIT)
        closed: ClosedPosition | None = None
        if open_position is None:
            row = (await store_reads.rows_by_id(self.store, [position_id])).get(position_id)
            account = (
                row.account
                if row is not None
                else next((e.account for e in events if e.account is not None), None)
            )
            if account not in self.accounts:
                return None  # unknown here, or another deployment's account
            if row is not None and is_terminal(PositionState(row.status)):
                booked = [
                    e.payload.get("quantity") for e in events if e.type is EventType.POSITION_CLOSED
                ]
                closed_qty = Decimal(str(booked[-1])) if booked and booked[-1] is not None else None
                closed = self._closed(row, closed_qty)
        chart = build_chart(
            events, self.history.of(position_id), now=now, is_open=open_position is not None
        )
        if open_position is not None:
            link = open_position.ui_url
        else:
            workflow_id = position_id.rsplit("/", 1)[0]
            link = run_url(self.settings, workflow_id, position_id)
        return PositionDetail(
            position_id=position_id,
            open=open_position,
            closed=closed,
            chart=chart,
            events=[
                TimelineEvent(
                    occurred_at=e.occurred_at,
                    type=e.type.value,
                    severity=e.severity.value,
                    payload=e.payload,
                    error_message=e.error_message,
                )
                for e in events
            ],
            ui_url=link,
            mark_note=MARK_NOTE,
        )
