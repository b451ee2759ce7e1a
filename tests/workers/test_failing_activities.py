"""A store write PostgreSQL refuses at every attempt (workers.failing_activities), on the
real dev server, the real store and posguard's own store activity.

A workflow's write names a position the store has no row of (the foreign key refuses
it, as it refused a trailing move's fill whose order had no row, issue 16). Temporal
retries it for ever, and before this watch nothing said so. Now the worker's look
alerts once it has failed past `FAILING_AFTER_ATTEMPTS` attempts as `StoreRejected`;
the missing row is then written (the cause fixed), the retry lands, the workflow
ends, and the next look resolves the alert. A database outage (the same write failing
as `StoreUnavailable`) is left to the database's own alert.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.store.activities import StoreActivities, store_failure
from activities.store.repository import Store
from domain.events import EventType
from domain.health import FAILING_AFTER_ATTEMPTS, activity_failing
from domain.position import position_workflow_id
from domain.records import OrderRecord, PositionRecord, StoreBatch
from tests.waiting import until
from tests.workers.watch_alerts import alert_rows
from workers.failing_activities import FailingActivityAlerts
from workers.frozen_workflows import FrozenWorkflows

QUICKLY = RetryPolicy(initial_interval=timedelta(milliseconds=50), backoff_coefficient=1)


@workflow.defn(name="TestFailingWrite", sandboxed=False)
class FailingWrite:
    """Writes one batch through posguard's store activity, retried as a position's."""

    @workflow.run
    async def run(self, batch: StoreBatch) -> int:
        return await workflow.execute_activity_method(
            StoreActivities.apply,
            batch,
            start_to_close_timeout=timedelta(seconds=10),
            retry_policy=QUICKLY,
        )


def position_row(position_id: str, workflow_id: str) -> PositionRecord:
    return PositionRecord(
        id=position_id,
        workflow_id=workflow_id,
        account="failing",
        exchange="binanceusdm",
        symbol="FAILUSDT",
        side="long",
        status="active",
        revision=1,
        quantity=Decimal(1),
    )


async def test_a_write_refused_at_every_attempt_is_alerted_then_resolved_once_fixed(
    temporal_env: WorkflowEnvironment, store: Store
) -> None:
    client = temporal_env.client
    queue = f"failing-{uuid.uuid4().hex[:8]}"
    workflow_id = position_workflow_id(f"acct{uuid.uuid4().hex[:6]}", "binanceusdm", "FAILUSDT")
    position_id = f"{workflow_id}/chain"
    stop = OrderRecord(
        client_order_id=f"pg{uuid.uuid4().hex[:14]}-mv-2",
        position_id=position_id,  # no such row yet: refused
        account="failing",
        exchange="binanceusdm",
        symbol="FAILUSDT",
        kind="stop",
        side="sell",
        order_type="stop_market",
        status="filled",
        quantity=Decimal(1),
        revision=2,
    )
    title = f"activity keeps failing: {workflow_id}: store.apply"
    watch = FrozenWorkflows(
        client,
        store,
        queue,
        frozen_after=timedelta(minutes=5),
        failing=FailingActivityAlerts(store),
    )
    async with Worker(
        client,
        task_queue=queue,
        workflows=[FailingWrite],
        activities=StoreActivities(store).all(),
    ):
        handle = await client.start_workflow(
            FailingWrite.run, StoreBatch(orders=[stop]), id=workflow_id, task_queue=queue
        )

        async def past_the_attempts() -> bool:
            described = await handle.describe()
            pending = described.raw_description.pending_activities
            return bool(pending) and pending[0].attempt > FAILING_AFTER_ATTEMPTS

        await watch.look()
        assert await alert_rows(store, title) == []  # failing, but not for long yet
        await until(past_the_attempts, "the write's attempts")
        await watch.look()
        [(resolution, severity, body)] = await alert_rows(store, title)
        assert not resolution and severity == "error"
        assert "StoreRejected" in body and "ForeignKeyViolationError" in body
        event = await store.pool.fetchrow(
            "SELECT payload FROM events WHERE type = $1 "
            "AND payload->>'error_type' = 'ActivityKeepsFailing' "
            "AND payload->'context'->>'workflow_id' = $2",
            EventType.CRITICAL_ERROR.value,
            workflow_id,
        )
        assert event is not None
        await watch.look()  # still failing: not raised again before RAISE_AGAIN_EVERY
        assert len(await alert_rows(store, title)) == 1

        # The cause fixed: the position's row written. The retry lands, the run ends.
        await store.apply(StoreBatch(position=position_row(position_id, workflow_id)))
        assert await handle.result() == 0
        await watch.look()
        assert [r[0] for r in await alert_rows(store, title)] == [False, True]
        stored = await store.orders(position_id)
        assert [o.client_order_id for o in stored] == [stop.client_order_id]


@pytest.mark.parametrize(
    ("failure_type", "alerted"),
    [
        ("StoreRejected", True),
        ("TypeError", True),  # a bug's exception: the same at every attempt
        ("Timeout", True),
        ("StoreUnavailable", False),  # the database away: its own alert
        ("ConnectionRefusedError", False),
        ("ExchangeNotAvailable", False),  # the exchange away: its own alert
        ("RateLimited", False),
        (None, False),  # not failed
    ],
)
def test_only_failures_no_outage_explains_are_alerted(
    failure_type: str | None, alerted: bool
) -> None:
    after = FAILING_AFTER_ATTEMPTS
    assert activity_failing(after + 1, failure_type, after) is alerted
    assert not activity_failing(after, failure_type, after)


async def test_what_postgresql_refuses_and_its_absence_are_told_apart(store: Store) -> None:
    """The store activity's failures: a write refused for what it is, the database away."""
    import asyncpg

    with pytest.raises(asyncpg.PostgresError) as caught:
        await store.pool.execute(
            "INSERT INTO orders (client_order_id, position_id, account, exchange, symbol, kind,"
            " side, order_type, status, quantity) VALUES"
            " ('x', 'no-such-position', 'a', 'e', 'S', 'stop', 'sell', 'm', 'open', 1)"
        )
    refused = store_failure(caught.value)
    assert getattr(refused, "type", None) == "StoreRejected"
    assert "ForeignKeyViolationError (23503)" in str(refused)
    away = store_failure(ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 1)"))
    assert getattr(away, "type", None) == "StoreUnavailable"
    other = ValueError("a bug")
    assert store_failure(other) is other
