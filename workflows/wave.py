"""WaveWorkflow: one account's signals of one scoring period, selected together.

Id ``wave/{account}/{period start}``. The ingest stores every signal, then
signal-with-starts the wave of each account the service feeds (`add_signals`).
The wave collects for `window` after its first signal, then:

1. reads the account: the store (open rows, recent closes, stoplist, pauses),
   running position workflows (which know of one started a moment ago), and the
   exchange (symbols listed and trading, free balance);
2. decides with `domain.waves.select_wave`, one decision per signal;
3. starts one PositionWorkflow per selected signal, as a child it abandons (the
   position lives on after the wave). The child's id is the position's key and a
   running one is refused, so a position is never opened twice; the start is a
   command in this workflow's history, so a crash of any process resumes the
   wave without starting anything again;
4. records every decision (`signal_decisions`, SIGNAL_FILTERED or SIGNAL_SELECTED)
   and the wave's outcome (`waves` row, WAVE_PROCESSED).

A signal that arrives after the selection began is recorded as `wave_closed`,
never traded late; one that arrives after the wave ended is refused by Temporal
(id reuse: reject) and the ingest records it so. Every activity outcome is a
handled case: an account that cannot be read opens nothing this wave (each
signal says why), and the exchange's invalid key, insufficient balance or
maintenance pause new entries until a wave reads the account cleanly.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import (
    RetryPolicy,
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import ApplicationError, FailureError, WorkflowAlreadyStartedError

with workflow.unsafe.imports_passed_through():
    from activities.exchange.activities import ExchangeActivities
    from activities.reconcile import ReconcileActivities
    from activities.waves import WaveActivities
    from domain.errors import NON_RETRYABLE_ERROR_TYPES
    from domain.events import (
        Event,
        EventType,
        SignalFiltered,
        SignalSelected,
        WaveDetected,
        WaveProcessed,
        make_event,
    )
    from domain.position import (
        book_key,
        initial_state,
        parse_position_workflow_id,
        position_workflow_id,
    )
    from domain.reconcile_io import ListedResult, OwnersRequest
    from domain.records import DecisionRecord, WaveRecord
    from domain.requests import AccountRequest
    from domain.signals import Signal
    from domain.wave_io import (
        ADD_SIGNALS,
        AccountStateRequest,
        EntryReadiness,
        ExchangePauseRequest,
        PauseCause,
        StoredAccount,
        WaveResult,
        WaveSignals,
        WaveWrite,
        account_view,
        decision_event_id,
        insufficient,
        outcome_counts,
        pause_cause,
        signal_row_id,
    )
    from domain.waves import Decision, FilterReason, select_wave
    from workflows.position import PositionWorkflow
    from workflows.position_io import PositionInput
    from workflows.search_attributes import ACCOUNT, EXCHANGE, POSITION_STATE, SYMBOL
    from workflows.wave_io import WaveInput

_READ_ATTEMPTS = 3
_READS_TOGETHER = "wave-reads-together"
"""Patch id: the account, the running workflows and the exchange are read at once."""
_DECISIONS_PER_WRITE = 200


def _book_of(workflow_id: str, symbol: str) -> str:
    """The book (`domain.position.book_key`) a running position workflow holds."""
    key = parse_position_workflow_id(workflow_id)
    return book_key(symbol, key.hedge_side if key is not None else None)


class _Failed(Exception):
    """An activity gave up: why, and the error type the exchange answered with."""

    def __init__(self, message: str, error_type: str | None) -> None:
        super().__init__(message)
        self.message = message
        self.error_type = error_type


class _Outcome:
    """What became of one decision once the positions were started."""

    def __init__(
        self,
        decision: Decision,
        *,
        reason: str | None = None,
        detail: str | None = None,
        workflow_id: str | None = None,
    ) -> None:
        self.signal = decision.signal
        self.rank = decision.rank if workflow_id is not None else None
        self.workflow_id = workflow_id
        self.reason = (
            reason
            if reason is not None
            else (None if decision.reason is None else decision.reason.value)
        )
        self.detail = detail if detail is not None else decision.detail

    @property
    def label(self) -> str:
        return "opened" if self.workflow_id is not None else str(self.reason)


@workflow.defn(name="WaveWorkflow")
class WaveWorkflow:
    """One wave of one account; its result counts the decisions (see the module docstring)."""

    def __init__(self) -> None:
        self._signals: dict[str, Signal] = {}
        self._late: dict[str, Signal] = {}
        self._late_total = 0
        self._closed = False
        self._inp: WaveInput | None = None

    # --- messages ---------------------------------------------------------------------------

    @workflow.signal(name=ADD_SIGNALS)
    def add_signals(self, batch: WaveSignals) -> None:
        """More signals of this wave (already stored); a repeated one is ignored."""
        for signal in batch.signals:
            key = signal_row_id(signal)
            if key in self._signals or key in self._late:
                continue
            if self._closed:
                self._late[key] = signal
            else:
                self._signals[key] = signal

    @workflow.query(name="state")
    def state(self) -> dict[str, Any]:
        """How many signals the wave holds, and whether its selection began."""
        return {"signals": len(self._signals), "closed": self._closed, "late": self._late_total}

    # --- the wave ---------------------------------------------------------------------------

    @workflow.run
    async def run(self, inp: WaveInput) -> WaveResult:
        """Collect, select, start, record; never raises (see the module docstring)."""
        self._inp = inp
        wave_id = workflow.info().workflow_id
        deadline = workflow.now() + inp.window
        await self._write(
            WaveWrite(
                wave=self._row(deadline, "collecting"),
                events=[
                    self._event(
                        EventType.WAVE_DETECTED,
                        WaveDetected(wave_id=wave_id, deadline=deadline),
                        f"{wave_id}/detected",
                    )
                ],
            ),
            "wave detected",
        )
        if inp.window > timedelta(0):
            await workflow.sleep(inp.window)
        self._closed = True
        selecting = workflow.now()
        signals = sorted(self._signals.values(), key=signal_row_id)
        decisions = await self._decide(inp, signals)
        outcomes = await self._start_positions(inp, decisions)
        started_all = workflow.now()
        duration_ms = int((started_all - selecting).total_seconds() * 1000)
        counts = outcome_counts([o.label for o in outcomes])
        opened = [o.workflow_id for o in outcomes if o.workflow_id is not None]
        await self._record_outcomes(outcomes, "decision")
        row = self._row(deadline, "processed").model_copy(
            update={
                "signals_received": len(signals),
                "signals_selected": len(opened),
                "signals_filtered": len(signals) - len(opened),
                "positions_started": len(opened),
                "outcomes": counts,
                "processed_at": started_all,
                "duration_ms": duration_ms,
            }
        )
        processed = self._event(
            EventType.WAVE_PROCESSED,
            WaveProcessed(
                wave_id=wave_id,
                received=len(signals),
                filtered=len(signals) - len(opened),
                selected=len(opened),
                started_positions=opened,
                outcomes=counts,
                duration_ms=duration_ms,
            ),
            f"{wave_id}/processed",
        )
        await self._write(WaveWrite(wave=row, events=[processed]), "wave processed")
        await self._record_late()
        return WaveResult(
            wave_id=wave_id,
            received=len(signals),
            opened=opened,
            outcomes=counts,
            late=self._late_total,
            duration_ms=duration_ms,
        )

    # --- deciding ---------------------------------------------------------------------------

    async def _decide(self, inp: WaveInput, signals: Sequence[Signal]) -> list[Decision]:
        """One decision per signal, on the account as it stands now."""
        if not signals:
            return []
        wave_id = workflow.info().workflow_id
        account_read = self._read(
            WaveActivities.account,
            AccountStateRequest(
                account=inp.account, exchange=inp.exchange, cooldown=inp.rules.cooldown
            ),
            summary="read the account's positions, stoplist and pauses",
        )
        listed_read = self._read(
            ReconcileActivities.listed,
            OwnersRequest(account=inp.account, exchange=inp.exchange),
            summary="list the running position workflows",
        )
        exchange_read = self._read(
            ExchangeActivities.entry_readiness,
            AccountRequest(account=inp.account),
            summary="read the exchange: listed symbols, free balance",
            task_queue=inp.position_config.exchange_task_queue,
        )
        together = workflow.patched(_READS_TOGETHER)
        if together:
            # The three reads at once: one round trip from the deadline, not three.
            # The exchange is read even when the operator paused the account (a
            # read; its answer is then not used).
            stored_r, listed_r, ready_r = await asyncio.gather(
                account_read, listed_read, exchange_read
            )
        else:  # waves begun before the reads were made together: as they were
            exchange_read.close()  # created, never run: no command was issued
            stored_r = await account_read
            if isinstance(stored_r, _Failed):
                listed_read.close()
                listed_r = None
            else:
                listed_r = await listed_read
        for failed in (stored_r, listed_r):
            if isinstance(failed, _Failed):
                return self._all_filtered(
                    signals, FilterReason.ACCOUNT_UNREADABLE, f"store unreadable: {failed.message}"
                )
        stored: StoredAccount = stored_r
        listed: ListedResult = listed_r
        operator_paused = any(p.source == "operator" for p in stored.pauses)
        readiness: EntryReadiness | None = None
        cause: PauseCause | None = None
        detail = ""
        if not operator_paused:
            if not together:
                ready_r = await self._read(
                    ExchangeActivities.entry_readiness,
                    AccountRequest(account=inp.account),
                    summary="read the exchange: listed symbols, free balance",
                    task_queue=inp.position_config.exchange_task_queue,
                )
            if isinstance(ready_r, _Failed):
                cause, detail = pause_cause(ready_r.error_type), ready_r.message
                if cause is None:
                    return self._all_filtered(
                        signals,
                        FilterReason.ACCOUNT_UNREADABLE,
                        f"exchange unreadable: {ready_r.message}",
                    )
            else:
                readiness = ready_r
            if readiness is not None and insufficient(readiness, inp.min_free_balance):
                cause = PauseCause.INSUFFICIENT_BALANCE
                detail = (
                    f"free balance {readiness.free_balance} {readiness.quote} "
                    f"< {inp.min_free_balance} needed for a new entry"
                )
            try:
                await self._activity(
                    WaveActivities.exchange_pause,
                    ExchangePauseRequest(
                        account=inp.account,
                        wave_id=wave_id,
                        at=workflow.now(),
                        cause=cause,
                        detail=detail,
                    ),
                    summary=f"exchange pause: {cause or 'none'}",
                )
            except _Failed as failed:
                workflow.logger.error("could not record the exchange pause: %s", failed.message)
            # This read supersedes the exchange pause the store had from an earlier wave.
            fresh = [p for p in stored.pauses if p.source != "exchange"]
            stored = stored.model_copy(update={"pauses": fresh})
        view = account_view(
            readiness or EntryReadiness(listed=frozenset()),
            stored,
            (_book_of(w.workflow_id, w.symbol) for w in listed.workflows),
            inp.rules,
            hedge_mode=inp.hedge_mode,
        )
        if cause is not None:
            view = view.model_copy(update={"paused": f"exchange: {cause.value} ({detail})"})
        return select_wave(signals, view, inp.rules, exchange=inp.exchange, now=workflow.now())

    @staticmethod
    def _all_filtered(
        signals: Sequence[Signal], reason: FilterReason, detail: str
    ) -> list[Decision]:
        return [
            Decision(signal=s, selected=False, reason=reason, detail=detail[:1000]) for s in signals
        ]

    # --- starting positions -----------------------------------------------------------------

    async def _start_positions(
        self, inp: WaveInput, decisions: Sequence[Decision]
    ) -> list[_Outcome]:
        """Start every selected signal's PositionWorkflow (concurrently); each one's outcome."""

        async def start(decision: Decision) -> _Outcome:
            if not decision.selected:
                return _Outcome(decision)
            signal = decision.signal
            hedge_side = signal.side if inp.hedge_mode else None
            workflow_id = position_workflow_id(inp.account, inp.exchange, signal.symbol, hedge_side)
            try:
                spec = inp.template.spec(inp.account, inp.exchange, signal, inp.hedge_mode)
                await workflow.start_child_workflow(
                    PositionWorkflow.run,
                    PositionInput(spec=spec, config=inp.position_config),
                    id=workflow_id,
                    task_queue=inp.position_task_queue,
                    parent_close_policy=workflow.ParentClosePolicy.ABANDON,
                    id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
                    search_attributes=TypedSearchAttributes(
                        [
                            SearchAttributePair(ACCOUNT, inp.account),
                            SearchAttributePair(EXCHANGE, inp.exchange.value),
                            SearchAttributePair(SYMBOL, signal.symbol),
                            SearchAttributePair(POSITION_STATE, initial_state(False).value),
                        ]
                    ),
                    static_summary=f"{spec.side.value} {signal.symbol} ({inp.exchange.value}), "
                    f"wave rank {decision.rank}",
                )
            except WorkflowAlreadyStartedError:
                return _Outcome(
                    decision,
                    reason=FilterReason.POSITION_OPEN.value,
                    detail=f"a position on {signal.symbol} is already running ({workflow_id})",
                )
            except Exception as exc:  # rule 1: a start that fails is a recorded outcome
                workflow.logger.error("could not start %s: %r", workflow_id, exc)
                return _Outcome(
                    decision,
                    reason=FilterReason.NOT_STARTED.value,
                    detail=f"could not start {workflow_id}: {exc!r}"[:1000],
                )
            return _Outcome(decision, workflow_id=workflow_id)

        return list(await asyncio.gather(*(start(d) for d in decisions)))

    # --- recording --------------------------------------------------------------------------

    async def _record_outcomes(self, outcomes: Sequence[_Outcome], what: str) -> None:
        """Write the decisions and their events, `_DECISIONS_PER_WRITE` at a time."""
        now = workflow.now()
        for start in range(0, len(outcomes), _DECISIONS_PER_WRITE):
            chunk = outcomes[start : start + _DECISIONS_PER_WRITE]
            await self._write(
                WaveWrite(
                    decisions=[self._decision(o, now) for o in chunk],
                    events=[self._decision_event(o) for o in chunk],
                ),
                f"record {what}s {start + 1}-{start + len(chunk)} of {len(outcomes)}",
            )

    async def _record_late(self) -> None:
        """Record every signal that reached the wave after its selection began."""
        while self._late:
            late, self._late = list(self._late.values()), {}
            self._late_total += len(late)
            wave_id = workflow.info().workflow_id
            outcomes = [
                _Outcome(
                    Decision(
                        signal=s,
                        selected=False,
                        reason=FilterReason.WAVE_CLOSED,
                        detail=f"reached {wave_id} after its selection: not traded late",
                    )
                )
                for s in late
            ]
            await self._record_outcomes(outcomes, "late signal")

    def _decision(self, o: _Outcome, at: datetime) -> DecisionRecord:
        assert self._inp is not None
        return DecisionRecord(
            signal_row_id=signal_row_id(o.signal),
            account=self._inp.account,
            wave_id=workflow.info().workflow_id,
            outcome="opened" if o.workflow_id is not None else "filtered",
            reason=o.reason,
            detail=o.detail[:1000],
            rank=o.rank,
            position_workflow_id=o.workflow_id,
            decided_at=at,
        )

    def _decision_event(self, o: _Outcome) -> Event:
        assert self._inp is not None
        wave_id = workflow.info().workflow_id
        row = signal_row_id(o.signal)
        common: dict[str, Any] = {"symbol": o.signal.symbol, "exchange": o.signal.exchange.value}
        if o.workflow_id is not None:
            return self._event(
                EventType.SIGNAL_SELECTED,
                SignalSelected(
                    signal_id=row,
                    wave_id=wave_id,
                    rank=o.rank or 0,
                    position_workflow_id=o.workflow_id,
                ),
                decision_event_id(row, self._inp.account, "selected"),
                **common,
            )
        return self._event(
            EventType.SIGNAL_FILTERED,
            SignalFiltered(
                signal_id=row, wave_id=wave_id, filter=str(o.reason), reason=o.detail[:1000]
            ),
            decision_event_id(row, self._inp.account, "filtered"),
            **common,
        )

    def _row(self, deadline: datetime, status: str) -> WaveRecord:
        assert self._inp is not None
        info = workflow.info()
        return WaveRecord(
            id=info.workflow_id,
            account=self._inp.account,
            period_start=self._inp.period_start,
            deadline=deadline,
            status=status,
            signals_received=len(self._signals),
            workflow_id=info.workflow_id,
        )

    def _event(self, kind: EventType, payload: Any, event_id: str, **context: Any) -> Event:
        assert self._inp is not None
        return make_event(
            kind,
            payload,
            event_id=event_id,
            occurred_at=workflow.now(),
            correlation_id=workflow.info().workflow_id,
            account=self._inp.account,
            **context,
        )

    async def _write(self, write: WaveWrite, summary: str) -> None:
        """One idempotent write, retried until the store takes it (a wave's record
        matters more than its speed); a write refused for good is logged."""
        try:
            await self._activity(WaveActivities.write, write, summary=summary, attempts=0)
        except _Failed as failed:
            workflow.logger.error("could not record %s: %s", summary, failed.message)

    # --- plumbing ---------------------------------------------------------------------------

    async def _read(
        self,
        activity: Any,
        arg: Any,
        *,
        summary: str,
        task_queue: str | None = None,
    ) -> Any:
        """`_activity` for a read: its answer, or the `_Failed` it gave up with."""
        try:
            return await self._activity(activity, arg, summary=summary, task_queue=task_queue)
        except _Failed as failed:
            return failed

    async def _activity(
        self,
        activity: Any,
        arg: Any,
        *,
        summary: str,
        task_queue: str | None = None,
        attempts: int = _READ_ATTEMPTS,
    ) -> Any:
        """Run one activity; `_Failed` (with the error type) when it gives up."""
        assert self._inp is not None
        try:
            return await workflow.execute_activity_method(
                activity,
                arg,
                task_queue=task_queue,
                start_to_close_timeout=self._inp.call_timeout,
                retry_policy=RetryPolicy(
                    initial_interval=timedelta(milliseconds=500),
                    maximum_interval=timedelta(seconds=10),
                    maximum_attempts=attempts,
                    non_retryable_error_types=list(NON_RETRYABLE_ERROR_TYPES),
                ),
                summary=summary[:200],
            )
        except FailureError as err:
            cause = err.cause or err
            error_type = cause.type if isinstance(cause, ApplicationError) else None
            raise _Failed(f"{type(cause).__name__}: {cause}"[:1000], error_type) from err
