"""Recording: events, store rows and search attributes of a position workflow."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.store.activities import StoreActivities
    from domain.alerts import condition_key
    from domain.events import (
        AlertResolved,
        AlertSent,
        CriticalError,
        EventType,
        Payload,
        event_id,
        make_event,
    )
    from domain.orders import (
        Fill,
        OrderIntent,
        OrderStatus,
        OrderView,
    )
    from domain.position import (
        CloseReason,
        PositionState,
        is_terminal,
    )
    from domain.position_details import details_markdown
    from domain.records import AlertRecord, FillRecord, StoreBatch
    from domain.types import Severity
    from workflows.position_records import executed_order_record, order_record, position_record
    from workflows.search_attributes import CLOSE_REASON, POSITION_STATE

from workflows.position_base import PositionBase

# Patch: an ended run sets its CloseReason search attribute (runs before it did not).
CLOSE_REASON_SA = "close-reason-attribute"

# Store writes must never be lost: retry until the database is back.
_STORE_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=200),
    backoff_coefficient=2,
    maximum_interval=timedelta(seconds=30),
)


class Recording(PositionBase):
    """Everything a transition writes: one idempotent store write per step."""

    # --- recording -----------------------------------------------------------------------------

    def _transition(self, to: PositionState, reason: CloseReason | None = None) -> None:
        if reason is not None:
            self._snap(self.s.with_close_reason(reason))
        self._snap(self.s.advance(to, workflow.now()))
        self._set_search_state()

    def _set_search_state(self) -> None:
        updates = [POSITION_STATE.value_set(self.s.state.value)]
        reason = self.s.close_reason
        if is_terminal(self.s.state) and reason is not None and workflow.patched(CLOSE_REASON_SA):
            updates.append(CLOSE_REASON.value_set(reason.value))
        workflow.upsert_search_attributes(updates)
        self._show_details()

    def _show_details(self) -> None:
        """The run's current details on its Web UI page (no command: replay-free).

        Display only: it runs inside transitions and the `price` update, so a failure
        here is logged and never fails the workflow task.
        """
        mark, at = self.last_mark if self.last_mark is not None else (None, None)
        try:
            text = details_markdown(self.spec.side, self.spec.symbol, self.s, mark, at)
        except Exception as exc:  # a display must not stop a position
            workflow.logger.warning("run details not updated: %s", exc)
            return
        workflow.set_current_details(text)

    def _emit(
        self,
        kind: EventType,
        payload: Payload,
        *,
        severity: Severity | None = None,
        order_id: str | None = None,
        flush: bool = True,
    ) -> None:
        """Record an event (deterministic id); `flush=False` batches it with the next write."""
        seq, snapshot = self.s.allocate_event_seq()
        self._snap(snapshot)
        self.outbox.append(
            make_event(
                kind,
                payload,
                event_id=event_id(self.position_id, seq),
                occurred_at=workflow.now(),
                severity=severity,
                correlation_id=self.position_id,
                position_id=self.position_id,
                account=self.spec.account,
                exchange=self.spec.exchange.value,
                symbol=self.spec.symbol,
                order_id=order_id,
            )
        )

    def _alert(
        self, severity: Severity, title: str, body: str, *, resolvable: bool = False
    ) -> None:
        """Raise an alert to humans: an event plus an `alerts` row, in the same write.

        `resolvable`: this workflow will end the condition with `_resolve_alert`,
        and people are reminded of it until then (docs/alerts.md).
        """
        self.alerts.append(
            AlertRecord(
                event_id=event_id(self.position_id, self.s.event_seq),  # the event emitted next
                severity=severity,
                title=title,
                body=body,
                position_id=self.position_id,
                condition=condition_key(title, self.position_id),
                resolvable=resolvable,
            )
        )
        self._emit(
            EventType.CRITICAL_ERROR if severity is Severity.CRITICAL else EventType.ALERT_SENT,
            CriticalError(error_type=title, message=body)
            if severity is Severity.CRITICAL
            else AlertSent(channel="log", title=title, body=body),
            severity=severity,
        )
        workflow.logger.warning("%s: %s", title, body)

    def _resolve_alert(self, title: str, body: str) -> None:
        """End the alert condition `title` of this position: ALERT_RESOLVED and its
        `alerts` row, which the condition's workflow sends on as "resolved"."""
        condition = condition_key(title, self.position_id)
        self.alerts.append(
            AlertRecord(
                event_id=event_id(self.position_id, self.s.event_seq),  # the event emitted next
                severity=Severity.INFO,
                title=title,
                body=body,
                position_id=self.position_id,
                condition=condition,
                resolution=True,
            )
        )
        self._emit(
            EventType.ALERT_RESOLVED,
            AlertResolved(condition=condition, title=title, body=body),
            severity=Severity.INFO,
        )

    def _record_fills(self, client_order_id: str, fills: list[Fill]) -> None:
        """Queue the exchange's executions of one of our orders for the `fills` table."""
        for fill in fills:
            self.fill_rows.append(
                FillRecord(
                    exchange=self.spec.exchange.value,
                    trade_id=fill.trade_id,
                    client_order_id=client_order_id,
                    position_id=self.position_id,
                    price=fill.price,
                    quantity=fill.qty,
                    fee=fill.fee,
                    filled_at=fill.at or workflow.now(),
                )
            )

    def _record_order(
        self, intent: OrderIntent, view: OrderView | None, *, status: OrderStatus | None = None
    ) -> None:
        self.order_rows.append(
            order_record(self.position_id, self.spec, intent, view, self.s.event_seq, status=status)
        )

    def _record_executed_order(
        self, intent: OrderIntent, exchange_order_id: str | None, fills: list[Fill]
    ) -> None:
        """Record one of our orders as filled by `fills` (no view of it at hand)."""
        self.order_rows.append(
            executed_order_record(
                self.position_id, self.spec, intent, exchange_order_id, fills, self.s.event_seq
            )
        )

    async def _sleep(self, duration: timedelta, summary: str | None = None) -> None:
        self._flush()
        await workflow.sleep(duration, summary=summary)

    def _flush(self) -> None:
        """Write pending events and current rows without waiting (revision keeps order).

        Called before every wait and every exchange call, so each step costs one
        store write at most, scheduled in the same workflow task as the exchange
        call it precedes; nothing is written when nothing changed.
        """
        pending = self.outbox or self.order_rows or self.fill_rows or self.alerts
        if not pending and self.flushed is not None and self.s is self.flushed.snapshot:
            return
        revision, self.m = self.m.next_revision(workflow.now())
        self.flushed = self.m
        batch = StoreBatch(
            events=self.outbox,
            position=position_record(
                self.position_id, self.workflow_id, self.spec, self.s, revision
            ),
            orders=[o.with_revision(revision) for o in self.order_rows],
            fills=self.fill_rows,
            alerts=self.alerts,
        )
        self.outbox, self.order_rows, self.fill_rows, self.alerts = [], [], [], []
        self.writes = [h for h in self.writes if not h.done()]
        self.writes.append(
            workflow.start_activity_method(
                StoreActivities.apply,
                batch,
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=_STORE_RETRY,
                summary=f"record {self.s.state.value}",
            )
        )

    async def _drain_writes(self) -> None:
        self._flush()
        pending: Sequence[workflow.ActivityHandle[int]] = self.writes
        self.writes = []
        for handle in pending:
            await handle
