"""ReconcileWorkflow: one pass over one exchange account (run by a Temporal Schedule).

Reads, through activities, the exchange's positions and open orders, the store's
open rows and the running position workflows (each asked directly); decides with
`domain.reconcile.reconcile`; acts; records every finding and action as an event.

What it does itself is limited to what no workflow owns (docs/reconcile.md):
- an untracked position: a PositionWorkflow is started in adopt mode (its id is
  the position's key and the conflict policy is "fail": never two owners);
- a zombie order: cancelled (with retries);
- a store row nobody will close: closed as phantom.
A finding about a managed position (phantom, quantity mismatch, stop missing) is
only *signalled* to its workflow, the single writer of its orders (rule 4).

Every outcome is a handled case (rule 1): a read that fails ends the pass with
an error in its report (the next pass reads again), an action that fails is
recorded and retried by the next pass. Everything it does is idempotent, so a
pass that a crash interrupts and Temporal resumes does nothing twice. Its memory
of findings (for alerting once, not every pass) is the previous pass's result,
which a Schedule hands to the next run.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import FailureError

with workflow.unsafe.imports_passed_through():
    from activities.exchange.activities import ExchangeActivities
    from activities.reconcile import ReconcileActivities
    from activities.store.activities import StoreActivities
    from domain.errors import NON_RETRYABLE_ERROR_TYPES
    from domain.events import (
        AlertSent,
        CriticalError,
        Event,
        EventType,
        Payload,
        ProtectionCheckStarted,
        SyncCompleted,
        SyncStarted,
        event_id,
        make_event,
    )
    from domain.orders import OrderView
    from domain.position import PositionSpec, spec_workflow_id
    from domain.reconcile import (
        HOLDING_STATES,
        AccountState,
        Action,
        Finding,
        FindingKind,
        FindingMemo,
        StoredPosition,
        judged_on_flat,
        may_stop_a_position,
        owners_on_record,
        reconcile,
        remember,
        slots_to_read_again,
        to_confirm,
        with_exchange,
        with_owners,
    )
    from domain.reconcile_events import cancel_event, detection_event, phantom_closed_event
    from domain.reconcile_io import (
        AdoptRequest,
        AdoptResult,
        ClosePhantomRequest,
        FindingOutcome,
        ListedResult,
        Outcome,
        OwnersRequest,
        OwnersResult,
        ReconcileInput,
        ReconcileReport,
        SignalOwnerRequest,
        StoredRequest,
    )
    from domain.records import AlertRecord, StoreBatch
    from domain.requests import (
        AccountRequest,
        AccountSnapshot,
        ExchangeOrderRequest,
        ExchangePosition,
        OrderRequest,
        SymbolRequest,
    )
    from domain.types import Severity

_ATTEMPTS = 3
_EVENTS_PER_WRITE = 200
# Patch id: an untracked position is read again after the owners, and adopted only
# if still held (a pass recorded before read it once).
UNTRACKED_READ_AGAIN = "untracked-read-again"
_READ_FAILED = "pass:read_failed"  # memory key: consecutive passes that could not read
# A report lists at most this many findings (the others are counted): a pass's
# result stays far below Temporal's payload limit on an account full of orders.
_REPORTED_FINDINGS = 300


class _Failed(Exception):
    """An activity gave up; `message` says why (kept in the report and the events)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _listing(
    report: ReconcileReport, outcomes: list[FindingOutcome], finished: datetime
) -> ReconcileReport:
    """The report with its findings: foreign orders' reports last, at most
    `_REPORTED_FINDINGS` listed, the rest counted in `findings_omitted`."""
    ordered = sorted(outcomes, key=lambda o: o.finding.kind is FindingKind.FOREIGN_ORDER)
    return report.model_copy(
        update={
            "findings": ordered[:_REPORTED_FINDINGS],
            "findings_omitted": max(len(ordered) - _REPORTED_FINDINGS, 0),
            "finished_at": finished,
        }
    )


@workflow.defn(name="ReconcileWorkflow")
class ReconcileWorkflow:
    """One reconcile pass over one account; its result is the pass's `ReconcileReport`."""

    def __init__(self) -> None:
        self._events: list[Event] = []
        self._alerts: list[AlertRecord] = []
        self._inp: ReconcileInput | None = None

    @property
    def _call_timeout(self) -> timedelta:
        assert self._inp is not None
        return self._inp.call_timeout

    @workflow.run
    async def run(self, inp: ReconcileInput) -> ReconcileReport:
        """Read, decide, act, record; never raises (a failed read is in the report)."""
        self._inp = inp
        started = workflow.now()
        memory = inp.memory or self._previous_memory()
        report = ReconcileReport(
            account=inp.account,
            exchange=inp.exchange,
            started_at=started,
            finished_at=started,
            dry_run=inp.dry_run,
            memory=memory,
        )
        try:
            state, findings = await self._read(inp)
        except _Failed as failed:
            if inp.dry_run:
                return report.model_copy(
                    update={"finished_at": workflow.now(), "error": failed.message}
                )
            return await self._read_failed(inp, report, failed.message)
        remembered = remember(memory, findings, workflow.now(), inp.policy)
        report = report.model_copy(
            update={
                "positions": len(state.positions),
                "orders": len(state.orders),
                "owners": len(state.owners),
                "memory": remembered.memory,
            }
        )
        if inp.dry_run:
            outcomes = [
                FindingOutcome(
                    finding=f,
                    outcome=Outcome.REPORTED if f.action is Action.REPORT else Outcome.DRY_RUN,
                    passes=remembered.memory[f.key].passes,
                )
                for f in findings
            ]
            return _listing(report, outcomes, workflow.now())
        holding = sum(1 for o in state.owners if o.answered and o.state in HOLDING_STATES)
        self._emit(
            EventType.SYNC_STARTED,
            SyncStarted(
                exchange=inp.exchange.value, account=inp.account, positions_known=len(state.owners)
            ),
        )
        self._emit(EventType.PROTECTION_CHECK_STARTED, ProtectionCheckStarted(positions=holding))
        new = set(remembered.new)
        for f in findings:
            detected = detection_event(f) if f.key in new else None
            if detected is not None:
                self._emit(detected[0], detected[1], finding=f)
        outcomes = await self._act(inp, state, findings)
        for key in remembered.alert:
            f = next(f for f in findings if f.key == key)
            if f.kind is not FindingKind.FOREIGN_ORDER:  # a trader's own order: no alarm
                self._alert(f, remembered.memory[key])
        counts = {kind: sum(1 for f in findings if f.kind is kind) for kind in FindingKind}
        finished = workflow.now()
        self._emit(
            EventType.SYNC_COMPLETED,
            SyncCompleted(
                exchange=inp.exchange.value,
                account=inp.account,
                checked=len(state.positions) + len(state.owners),
                phantoms=counts[FindingKind.PHANTOM] + counts[FindingKind.PHANTOM_ROW],
                untracked=counts[FindingKind.UNTRACKED],
                mismatches=counts[FindingKind.QUANTITY_MISMATCH],
                zombies=counts[FindingKind.ZOMBIE],
                duration_ms=int((finished - started).total_seconds() * 1000),
            ),
        )
        if not await self._record(inp):
            # Not recorded: the next pass sees every finding as new, and alerts again.
            report = report.model_copy(update={"memory": memory})
        counted = [
            o.model_copy(update={"passes": remembered.memory[o.finding.key].passes})
            for o in outcomes
        ]
        return _listing(report, counted, workflow.now())

    async def _read_failed(
        self, inp: ReconcileInput, report: ReconcileReport, message: str
    ) -> ReconcileReport:
        """A pass that could not read the account: recorded, and after
        `alert_after_passes` such passes in a row, one critical alert (a reconciler
        that silently does nothing all night is the worst outcome)."""
        self._emit(
            EventType.CRITICAL_ERROR,
            CriticalError(error_type="ReconcileReadFailed", message=message),
            severity=Severity.WARNING,
        )
        memory = dict(report.memory)
        before = memory.get(_READ_FAILED)
        memo = (
            FindingMemo(kind=FindingKind.READ_FAILED, first_seen=workflow.now())
            if before is None
            else before.model_copy(update={"passes": before.passes + 1})
        )
        if memo.passes >= inp.policy.alert_after_passes and not memo.alerted:
            memo = memo.model_copy(update={"alerted": True})
            self._alert_text(
                Severity.CRITICAL,
                f"reconcile: {inp.account} unreadable for {memo.passes} passes",
                f"{message} (since {memo.first_seen.isoformat()}); nothing is reconciled "
                "until it reads again",
            )
        memory[_READ_FAILED] = memo
        if not await self._record(inp):
            memory = dict(report.memory)
        return report.model_copy(
            update={"finished_at": workflow.now(), "error": message, "memory": memory}
        )

    # --- reading --------------------------------------------------------------------------

    @staticmethod
    def _previous_memory() -> dict[str, FindingMemo]:
        """The memory the previous pass of this Schedule left (none for a pass run by hand)."""
        previous = workflow.get_last_completion_result(ReconcileReport)
        return dict(previous.memory) if isinstance(previous, ReconcileReport) else {}

    async def _read(self, inp: ReconcileInput) -> tuple[AccountState, list[Finding]]:
        """The account as it is, and the findings about it.

        Exchange first, then the store, then the workflows: an order or a row read
        before is judged against owners at least as recent as it (a workflow that
        placed an order before the read is found running, or has ended). The owners
        are first taken from visibility and the store (cheap; may lag); the symbols
        where that shows anything wrong (`domain.reconcile.to_confirm`) have their
        workflows asked directly, and are judged again on what those answer. So
        nothing is done, or recorded as wrong, on data that may lag, and a
        consistent account costs no query at all.
        """
        snapshot: AccountSnapshot = await self._activity(
            ExchangeActivities.account_snapshot,
            AccountRequest(account=inp.account),
            summary=f"read {inp.account}'s positions and open orders",
            task_queue=inp.exchange_task_queue,
        )
        stored: list[StoredPosition] = await self._activity(
            StoreActivities.open_positions,
            StoredRequest(account=inp.account, exchange=inp.exchange),
            summary="read the store's open positions",
        )
        listed: ListedResult = await self._activity(
            ReconcileActivities.listed,
            OwnersRequest(account=inp.account, exchange=inp.exchange),
            summary="list the running position workflows",
        )
        state = AccountState(
            account=inp.account,
            exchange=inp.exchange,
            positions=snapshot.positions,
            orders=snapshot.orders,
            owners=owners_on_record(listed.workflows, stored),
            stored=stored,
            hedge_mode=inp.hedge_mode,
        )
        findings = reconcile(state, inp.policy)
        confirm = sorted(to_confirm(state, findings))
        if not confirm:
            return state, findings
        asked: OwnersResult = await self._activity(
            ReconcileActivities.owners,
            OwnersRequest(
                account=inp.account,
                exchange=inp.exchange,
                symbols=confirm,
                hedge_mode=inp.hedge_mode,
            ),
            summary=f"ask the position workflows of {len(confirm)} symbols",
        )
        state = with_owners(state, confirm, asked.owners)
        findings = reconcile(state, inp.policy)
        # The owners were asked after the exchange was read: where a finding compares
        # the two (a position opened or resized in between would look like a phantom
        # or a mismatch; one its workflow closed before ending, like an untracked
        # one, which would be adopted), the exchange is read again, after the owners.
        # In hedge mode a slot is one side of a symbol: read with its side.
        untracked = any(f.kind is FindingKind.UNTRACKED for f in findings)
        recheck = slots_to_read_again(
            state, findings, untracked=untracked and workflow.patched(UNTRACKED_READ_AGAIN)
        )
        if not recheck:
            return state, findings
        for symbol, side in recheck:
            request = SymbolRequest(account=inp.account, symbol=symbol, side=side)
            slot = symbol if side is None else f"{symbol} {side.value}"
            position: ExchangePosition = await self._activity(
                ExchangeActivities.position,
                request,
                summary=f"read {slot}'s position again",
                task_queue=inp.exchange_task_queue,
            )
            orders: list[OrderView] = await self._activity(
                ExchangeActivities.open_orders,
                request,
                summary=f"read {symbol}'s open orders again",
                task_queue=inp.exchange_task_queue,
            )
            state = with_exchange(state, symbol, position, orders, side)
        return state, reconcile(state, inp.policy)

    # --- acting ---------------------------------------------------------------------------

    async def _act(
        self, inp: ReconcileInput, state: AccountState, findings: Sequence[Finding]
    ) -> list[FindingOutcome]:
        """Do each finding's action: adoptions first (protection), then signals, cancels, rows."""
        outcomes: dict[str, FindingOutcome] = {}
        for f in findings:
            if f.action is Action.REPORT:
                outcomes[f.key] = FindingOutcome(finding=f, outcome=Outcome.REPORTED)
        for f in findings:
            if f.action is Action.ADOPT:
                outcomes[f.key] = await self._adopt(inp, f)
        signalled: dict[str, FindingOutcome] = {}
        for f in findings:
            if f.action is not Action.SIGNAL_OWNER or f.workflow_id is None:
                continue
            if f.workflow_id not in signalled:
                kinds = sorted({g.kind.value for g in findings if g.workflow_id == f.workflow_id})
                signalled[f.workflow_id] = await self._signal(f, ", ".join(kinds))
            outcomes[f.key] = signalled[f.workflow_id].model_copy(update={"finding": f})
        flat = judged_on_flat(state, findings)
        for f in findings:
            if f.action is Action.CANCEL_ORDER:
                outcomes[f.key] = await self._cancel(inp, f, judged_flat=f.key in flat)
        for f in findings:
            if f.action is Action.CLOSE_ROW:
                outcomes[f.key] = await self._close_row(f)
        return [outcomes[f.key] for f in findings if f.key in outcomes]

    async def _adopt(self, inp: ReconcileInput, f: Finding) -> FindingOutcome:
        assert f.side is not None
        spec = PositionSpec(
            account=inp.account,
            exchange=inp.exchange,
            symbol=f.symbol,
            side=f.side,
            stop=inp.adoption.stop,
            emergency_stop_percent=inp.adoption.emergency_stop_percent,
            trailing=inp.adoption.trailing,
            adopt=True,
            hedge_mode=inp.hedge_mode,
        )
        if spec_workflow_id(spec) != f.workflow_id:
            # Never an adopter under another id than the finding's (one owner per slot).
            return FindingOutcome(
                finding=f,
                outcome=Outcome.FAILED,
                detail=f"would start {spec_workflow_id(spec)}, not {f.workflow_id}: not adopted",
            )
        try:
            result: AdoptResult = await self._activity(
                ReconcileActivities.adopt,
                AdoptRequest(spec=spec),
                summary=f"adopt {f.side.value} {f.exchange_qty} {f.symbol}",
            )
        except _Failed as failed:
            return FindingOutcome(finding=f, outcome=Outcome.FAILED, detail=failed.message)
        if not result.started:
            return FindingOutcome(
                finding=f, outcome=Outcome.ALREADY, detail=f"{result.workflow_id} already runs"
            )
        return FindingOutcome(finding=f, outcome=Outcome.DONE, detail=result.workflow_id)

    async def _signal(self, f: Finding, kinds: str) -> FindingOutcome:
        assert f.workflow_id is not None
        try:
            running: bool = await self._activity(
                ReconcileActivities.signal_owner,
                SignalOwnerRequest(workflow_id=f.workflow_id, detail=f"reconciler: {kinds}"),
                summary=f"tell {f.workflow_id} to look ({kinds})",
            )
        except _Failed as failed:
            return FindingOutcome(finding=f, outcome=Outcome.FAILED, detail=failed.message)
        if not running:
            return FindingOutcome(finding=f, outcome=Outcome.ALREADY, detail="it has ended")
        return FindingOutcome(finding=f, outcome=Outcome.DONE, detail="signalled")

    async def _cancel(
        self, inp: ReconcileInput, f: Finding, *, judged_flat: bool
    ) -> FindingOutcome:
        """Cancel a zombie. One that could stop a position, judged on a symbol that was
        flat when read, is cancelled only if the symbol is still flat now: a position
        opened in between (a trader's, with its stop) keeps its stop. In hedge mode it is
        the order's side of the symbol that must still be flat (an order whose side is
        unknown is never cancelled)."""
        order = f.order
        assert order is not None
        side = order.position_side if inp.hedge_mode else None
        if inp.hedge_mode and side is None:
            return FindingOutcome(
                finding=f, outcome=Outcome.ALREADY, detail="its side is unknown: kept"
            )
        if judged_flat and may_stop_a_position(order, inp.hedge_mode):
            slot = order.symbol if side is None else f"{order.symbol} {side.value}"
            try:
                now: ExchangePosition = await self._activity(
                    ExchangeActivities.position,
                    SymbolRequest(account=inp.account, symbol=order.symbol, side=side),
                    summary=f"is {slot} still flat?",
                    task_queue=inp.exchange_task_queue,
                )
            except _Failed as failed:
                return FindingOutcome(finding=f, outcome=Outcome.FAILED, detail=failed.message)
            if not now.is_flat:
                return FindingOutcome(
                    finding=f,
                    outcome=Outcome.ALREADY,
                    detail=f"{slot} has a position now: kept (next pass decides)",
                )
        if order.client_order_id is not None:
            activity: Any = ExchangeActivities.cancel_order
            request: Any = OrderRequest(
                account=inp.account,
                symbol=order.symbol,
                client_order_id=order.client_order_id,
                exchange_order_id=order.exchange_order_id,
                conditional=order.is_conditional,
            )
        else:
            activity = ExchangeActivities.cancel_by_exchange_id
            request = ExchangeOrderRequest(
                account=inp.account,
                symbol=order.symbol,
                exchange_order_id=order.exchange_order_id,
                conditional=order.is_conditional,
            )
        try:
            await self._activity(
                activity,
                request,
                summary=f"cancel zombie {order.client_order_id or order.exchange_order_id}",
                task_queue=inp.exchange_task_queue,
            )
        except _Failed as failed:
            kind, payload = cancel_event(f, failed.message)
            self._emit(kind, payload, finding=f)
            return FindingOutcome(finding=f, outcome=Outcome.FAILED, detail=failed.message)
        kind, payload = cancel_event(f, None)
        self._emit(kind, payload, finding=f)
        return FindingOutcome(finding=f, outcome=Outcome.DONE, detail="cancelled")

    async def _close_row(self, f: Finding) -> FindingOutcome:
        assert f.position_id is not None and f.stored_revision is not None
        try:
            closed: bool = await self._activity(
                StoreActivities.close_phantom,
                ClosePhantomRequest(
                    position_id=f.position_id,
                    revision=f.stored_revision,
                    reason=f"phantom: {f.reason}"[:500],
                    at=workflow.now(),
                ),
                summary=f"close phantom row {f.position_id}",
            )
        except _Failed as failed:
            return FindingOutcome(finding=f, outcome=Outcome.FAILED, detail=failed.message)
        if not closed:
            return FindingOutcome(finding=f, outcome=Outcome.ALREADY, detail="row changed")
        kind, payload = phantom_closed_event(f)
        self._emit(kind, payload, finding=f)
        return FindingOutcome(finding=f, outcome=Outcome.DONE, detail="closed")

    # --- recording ------------------------------------------------------------------------

    def _emit(
        self,
        kind: EventType,
        payload: Payload,
        *,
        finding: Finding | None = None,
        severity: Severity | None = None,
    ) -> Event:
        """Queue one event of this pass (ids: this run's id and a sequence number)."""
        assert self._inp is not None
        info = workflow.info()
        order = finding.order if finding is not None else None
        event = make_event(
            kind,
            payload,
            event_id=event_id(f"{info.workflow_id}/{info.run_id}", len(self._events)),
            occurred_at=workflow.now(),
            severity=severity,
            correlation_id=info.workflow_id,
            position_id=finding.position_id if finding is not None else None,
            account=self._inp.account,
            exchange=self._inp.exchange.value,
            symbol=finding.symbol if finding is not None else None,
            order_id=(order.client_order_id or order.exchange_order_id) if order else None,
        )
        self._events.append(event)
        return event

    def _alert(self, f: Finding, memo: FindingMemo) -> None:
        """One alert for a finding that persisted `memo.passes` passes."""
        critical = (FindingKind.STOP_MISSING, FindingKind.UNTRACKED, FindingKind.OWNER_SILENT)
        assert self._inp is not None
        # Hedge mode: the long's and the short's alerts say which.
        on = f"{f.symbol} {f.side.value}" if self._inp.hedge_mode and f.side else f.symbol
        self._alert_text(
            Severity.CRITICAL if f.kind in critical else Severity.WARNING,
            f"reconcile: {f.kind.value} on {on} for {memo.passes} passes",
            f"{f.reason} (since {memo.first_seen.isoformat()}; action {f.action.value})",
            finding=f,
        )

    def _alert_text(
        self, severity: Severity, title: str, body: str, *, finding: Finding | None = None
    ) -> None:
        """An alert: its event (critical_error or alert_sent) and its `alerts` row."""
        payload: Payload = (
            CriticalError(error_type=title, message=body)
            if severity is Severity.CRITICAL
            else AlertSent(channel="log", title=title, body=body)
        )
        kind = EventType.CRITICAL_ERROR if severity is Severity.CRITICAL else EventType.ALERT_SENT
        event = self._emit(kind, payload, finding=finding, severity=severity)
        self._alerts.append(
            AlertRecord(
                event_id=event.event_id,
                severity=severity,
                title=title,
                body=body,
                position_id=finding.position_id if finding is not None else None,
            )
        )
        workflow.logger.warning("%s: %s", title, body)

    async def _record(self, inp: ReconcileInput) -> bool:
        """Write the pass's events and alerts, `_EVENTS_PER_WRITE` at a time.

        Each write is idempotent (event ids are this run's) and retried a while; the
        payload of one write stays far below Temporal's limits however many orders
        the account has. False when the events could not all be written.
        """
        events = self._events
        for start in range(0, len(events), _EVENTS_PER_WRITE):
            chunk = events[start : start + _EVENTS_PER_WRITE]
            last = start + _EVENTS_PER_WRITE >= len(events)
            batch = StoreBatch(events=chunk, alerts=self._alerts if last else [])
            try:
                await self._activity(
                    StoreActivities.apply,
                    batch,
                    summary=f"record events {start + 1}-{start + len(chunk)} of {len(events)}",
                    attempts=10,
                )
            except _Failed as failed:
                workflow.logger.error("could not record the pass's events: %s", failed.message)
                return False
        return True

    # --- plumbing -------------------------------------------------------------------------

    async def _activity(
        self,
        activity: Any,
        arg: Any,
        *,
        summary: str,
        task_queue: str | None = None,
        timeout: timedelta | None = None,
        attempts: int = _ATTEMPTS,
    ) -> Any:
        """Run one activity; `_Failed` when it gives up (every failure, one type)."""
        try:
            return await workflow.execute_activity_method(
                activity,
                arg,
                task_queue=task_queue,
                start_to_close_timeout=timeout or self._call_timeout,
                retry_policy=RetryPolicy(
                    initial_interval=timedelta(milliseconds=500),
                    maximum_interval=timedelta(seconds=5),
                    maximum_attempts=attempts,
                    non_retryable_error_types=list(NON_RETRYABLE_ERROR_TYPES),
                ),
                summary=summary[:200],
            )
        except FailureError as err:
            cause = err.cause or err
            raise _Failed(f"{type(cause).__name__}: {cause}"[:1000]) from err
