"""Alert conditions end to end on the time-skipping server: outbox row → dispatcher →
AlertWorkflow → deliveries to a real local Telegram / Slack / webhook (AlertSink),
recorded in PostgreSQL. Reminders and silence are timers, so minutes take no time.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import pytest_asyncio
from pydantic import SecretStr
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.alerts.activities import AlertActivities
from activities.store import alert_rows
from activities.store.repository import Store
from domain.alerts import AlertChannel, condition_key, condition_workflow_id
from domain.events import EventType
from domain.records import AlertRecord
from domain.types import Severity
from simulator.alert_sink import AlertSink
from tests.time_skipping import time_skipping_server
from tests.waiting import until
from workers.alert_dispatch import dispatch_once
from workers.settings import AlertSettings, Settings
from workers.worker import alert_channel_worker, build_worker
from workflows.alert import AlertWorkflow

TOKEN = "4242:recognisable-bot-token"


@pytest_asyncio.fixture(loop_scope="session")
async def time_skipping_env() -> AsyncIterator[WorkflowEnvironment]:
    """A server per test: the test server leaks a time-skipping lock when a condition
    is torn down with a delivery in flight, and a later sleep on the same server then
    waits in real time."""
    async with time_skipping_server() as env:
        yield env


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def sink() -> AsyncIterator[AlertSink]:
    async with AlertSink(telegram_token=TOKEN) as s:
        yield s


def channels(sink: AlertSink, token: str = TOKEN) -> list[AlertChannel]:
    """Telegram takes warnings and worse; Slack errors and worse; the webhook all."""
    return [
        AlertChannel(
            name="tg",
            kind="telegram",
            url=SecretStr(sink.telegram_api),
            token=SecretStr(token),
            chat_id="-100",
            min_severity=Severity.WARNING,
        ),
        AlertChannel(
            name="slack",
            kind="slack",
            url=SecretStr(sink.slack_url),
            min_severity=Severity.ERROR,
        ),
        AlertChannel(
            name="hook", kind="webhook", url=SecretStr(sink.webhook_url), min_severity=Severity.INFO
        ),
    ]


@contextlib.asynccontextmanager
async def alerting(
    env: WorkflowEnvironment, store: Store, sink: AlertSink, **alerts: Any
) -> AsyncIterator[Settings]:
    """Workers for AlertWorkflow and each channel, on a fresh task queue."""
    settings = Settings(
        task_queue=f"alerts-{uuid.uuid4().hex[:8]}",
        alert_channels=channels(sink, alerts.pop("token", TOKEN)),
        alerts=AlertSettings(**alerts),
    )
    # Channel names are per test: the channel task queues are server-wide.
    suffix = settings.task_queue[-8:]
    settings = settings.model_copy(
        update={
            "alert_channels": [
                c.model_copy(update={"name": f"{c.name}-{suffix}"}) for c in settings.alert_channels
            ]
        }
    )
    activities = AlertActivities(store, settings.alert_channels)
    workers: list[Worker] = [
        build_worker(env.client, settings, activities.all(), workflows=[AlertWorkflow])
    ]
    workers += [alert_channel_worker(env.client, c, activities) for c in settings.alert_channels]
    async with contextlib.AsyncExitStack() as stack:
        for w in workers:
            await stack.enter_async_context(w)
        try:
            yield settings
        finally:
            await activities.close()


async def raise_row(
    store: Store,
    title: str,
    *,
    severity: Severity = Severity.CRITICAL,
    position_id: str | None = None,
    resolvable: bool = False,
    resolution: bool = False,
    body: str = "detail",
) -> str:
    """Write one `alerts` row as a raiser does; returns its event id."""
    event_id = f"test/{uuid.uuid4().hex}"
    async with store.pool.acquire() as conn:
        await Store._insert_alert(
            conn,
            AlertRecord(
                event_id=event_id,
                severity=severity,
                title=title,
                body=body,
                position_id=position_id,
                resolvable=resolvable,
                resolution=resolution,
            ),
        )
    return event_id


def texts(sink: AlertSink, service: str, title: str) -> list[str]:
    return [m.text for m in sink.of(service) if title in m.text]


async def test_a_critical_condition_is_sent_once_reminded_and_resolved(
    time_skipping_env: WorkflowEnvironment, store: Store, sink: AlertSink
) -> None:
    env = time_skipping_env
    title = f"unprotected {uuid.uuid4().hex[:6]}"
    async with alerting(env, store, sink, remind_every=timedelta(minutes=15)) as settings:
        await raise_row(store, title, position_id="p1", resolvable=True)
        for _ in range(3):  # the raiser repeats itself: grouped, not sent again
            await raise_row(store, title, position_id="p1", resolvable=True)
        assert await dispatch_once(env.client, store, settings) >= 4
        await until(lambda: len(texts(sink, "slack", title)) == 1, "the first message on slack")
        await until(lambda: len(texts(sink, "telegram", title)) == 1, "the first on telegram")
        first = texts(sink, "telegram", title)
        assert len(first) == 1 and first[0].startswith("[posguard] CRITICAL: ")
        await env.sleep(timedelta(minutes=16))
        await until(lambda: len(texts(sink, "telegram", title)) == 2, "a reminder")
        assert texts(sink, "telegram", title)[1].startswith("[posguard] still open, CRITICAL")
        assert "raised 3 more times" in texts(sink, "telegram", title)[1]
        await raise_row(
            store,
            title,
            position_id="p1",
            severity=Severity.INFO,
            resolution=True,
            body="the stop is placed again",
        )
        await dispatch_once(env.client, store, settings)
        handle = env.client.get_workflow_handle(condition_workflow_id(condition_key(title, "p1")))
        state = await handle.result()
        assert state["resolved"] if isinstance(state, dict) else state.resolved
        told = texts(sink, "telegram", title)
        assert len(told) == 3 and told[2].startswith("[posguard] resolved: ")
        assert "the stop is placed again" in told[2]
        assert len(texts(sink, "slack", title)) == 3 and len(texts(sink, "webhook", title)) == 3
        rows = await alert_rows.deliveries(store, condition_key(title, "p1"))
        assert len(rows) == 9 and {r["status"] for r in rows} == {"sent"}
        sent = await store.pool.fetchval(
            "SELECT count(*) FROM events WHERE type = $1 AND correlation_id = $2",
            EventType.ALERT_SENT.value,
            condition_key(title, "p1"),
        )
        assert sent == 9


async def test_routing_follows_each_channels_minimum_severity(
    time_skipping_env: WorkflowEnvironment, store: Store, sink: AlertSink
) -> None:
    env = time_skipping_env
    title = f"paused {uuid.uuid4().hex[:6]}"
    async with alerting(env, store, sink) as settings:
        await raise_row(store, title, severity=Severity.WARNING)
        await dispatch_once(env.client, store, settings)
        await until(lambda: len(texts(sink, "webhook", title)) == 1, "the webhook's message")
        await until(lambda: len(texts(sink, "telegram", title)) == 1, "telegram's message")
        assert texts(sink, "slack", title) == []  # slack takes errors and worse
        [hook] = [m for m in sink.of("webhook") if title in m.text]
        assert hook.key == hook.body["id"] and hook.body["severity"] == "warning"


async def test_a_condition_raised_once_closes_quietly(
    time_skipping_env: WorkflowEnvironment, store: Store, sink: AlertSink
) -> None:
    env = time_skipping_env
    title = f"paused {uuid.uuid4().hex[:6]}"
    async with alerting(env, store, sink, quiet_after=timedelta(minutes=30)) as settings:
        await raise_row(store, title, severity=Severity.ERROR)
        await dispatch_once(env.client, store, settings)
        await until(lambda: len(texts(sink, "slack", title)) == 1, "the first message")
        await env.sleep(timedelta(minutes=31))
        handle = env.client.get_workflow_handle(condition_workflow_id(condition_key(title)))
        await handle.result()
        # no reminder (never raised again) and no "resolved" (nobody said so)
        assert len(texts(sink, "slack", title)) == 1
        # raised again later: a new condition, a new first message
        await raise_row(store, title, severity=Severity.ERROR)
        await dispatch_once(env.client, store, settings)
        await until(lambda: len(texts(sink, "slack", title)) == 2, "the new first message")
        assert texts(sink, "slack", title)[1].startswith("[posguard] ERROR: ")


async def test_a_channel_answering_500_is_retried_then_recorded_failed(
    time_skipping_env: WorkflowEnvironment, store: Store, sink: AlertSink
) -> None:
    env = time_skipping_env
    title = f"storm {uuid.uuid4().hex[:6]}"
    async with alerting(
        env,
        store,
        sink,
        delivery_attempts=3,
        delivery_first_retry=timedelta(milliseconds=100),
        delivery_max_retry=timedelta(milliseconds=200),
    ) as settings:
        [tg] = [c.name for c in settings.alert_channels if c.name.startswith("tg-")]
        before = sink.requests_to.get("telegram", 0)
        sink.fail(500, count=3, service="telegram")
        await raise_row(store, title, severity=Severity.WARNING)
        await dispatch_once(env.client, store, settings)

        async def failed() -> bool:
            rows = await alert_rows.deliveries(store, condition_key(title))
            return any(r["channel"] == tg and r["status"] == "failed" for r in rows)

        await until(failed, "telegram's delivery recorded as failed")
        raised = [t for t in texts(sink, "telegram", title) if t.startswith("[posguard] WARNING")]
        assert raised == []
        assert sink.requests_to["telegram"] - before == 3  # tried three times, no more
        # the other channel is not held up: it has the message
        assert any(t.startswith("[posguard] WARNING") for t in texts(sink, "webhook", title))
        event = await store.pool.fetchrow(
            "SELECT payload FROM events WHERE type = $1 AND correlation_id = $2",
            EventType.ALERT_FAILED.value,
            condition_key(title),
        )
        assert event is not None
        assert "HTTP 500" in event["payload"]["error"] and event["payload"]["attempts"] == 3


async def test_a_refusal_is_not_retried_and_no_secret_is_recorded(
    time_skipping_env: WorkflowEnvironment, store: Store, sink: AlertSink
) -> None:
    env = time_skipping_env
    title = f"wrong token {uuid.uuid4().hex[:6]}"
    wrong = "9999:a-wrong-but-recognisable-token"
    async with alerting(env, store, sink, token=wrong) as settings:
        [tg] = [c.name for c in settings.alert_channels if c.name.startswith("tg-")]
        await raise_row(store, title, severity=Severity.WARNING)
        await dispatch_once(env.client, store, settings)

        async def failed() -> list[Any]:
            rows = await alert_rows.deliveries(store, condition_key(title))
            return [r for r in rows if r["channel"] == tg and r["status"] == "failed"]

        await until(failed, "telegram's refusal recorded")
        [row] = await failed()
        assert row["attempts"] == 1 and "HTTP 401" in row["error"]
        tries = await store.pool.fetchval(
            "SELECT payload->>'attempts' FROM events WHERE type = $1 AND correlation_id = $2",
            EventType.ALERT_FAILED.value,
            condition_key(title),
        )
        assert tries == "1"  # a refusal is not tried again
        events = await store.pool.fetch(
            "SELECT payload::text AS p FROM events WHERE correlation_id = $1",
            condition_key(title),
        )
        assert events and not any(wrong in e["p"] for e in events)


async def test_a_message_delivered_again_is_not_sent_twice(store: Store, sink: AlertSink) -> None:
    """A retried activity whose first try went through: the claim says so."""
    from temporalio.testing import ActivityEnvironment

    from domain.alerts import AlertRaised, DeliveryRequest, open_condition

    hook = [c for c in channels(sink) if c.kind == "webhook"]
    activities = AlertActivities(store, hook)
    title = f"twice {uuid.uuid4().hex[:6]}"
    _, message = open_condition(
        AlertRaised(
            event_id=f"x/{uuid.uuid4().hex}",
            severity=Severity.ERROR,
            title=title,
            body="b",
            condition=condition_key(title),
            raised_at=datetime.now(UTC),
        )
    )
    assert message is not None
    req = DeliveryRequest(message=message, channel="hook")
    try:
        env = ActivityEnvironment()
        assert await env.run(activities.deliver, req) is True
        assert await env.run(activities.deliver, req) is False
    finally:
        await activities.close()
    assert len(texts(sink, "webhook", title)) == 1


@pytest.mark.parametrize("kind", ["telegram", "slack", "webhook"])
async def test_an_unreachable_channel_is_retryable_and_names_no_address(
    store: Store, kind: str
) -> None:
    from temporalio.exceptions import ApplicationError
    from temporalio.testing import ActivityEnvironment

    from domain.alerts import AlertRaised, DeliveryRequest, open_condition

    secret_url = "http://127.0.0.1:9/hooks/very-secret-path"
    channel = AlertChannel(
        name="dead",
        kind=kind,  # type: ignore[arg-type]
        url=SecretStr(secret_url),
        token=SecretStr(TOKEN) if kind == "telegram" else None,
        chat_id="1" if kind == "telegram" else None,
    )
    activities = AlertActivities(store, [channel])
    _, message = open_condition(
        AlertRaised(
            event_id=f"x/{uuid.uuid4().hex}",
            severity=Severity.ERROR,
            title="t",
            body="b",
            condition=f"dead/{uuid.uuid4().hex}",
            raised_at=datetime.now(UTC),
        )
    )
    assert message is not None
    try:
        with pytest.raises(ApplicationError) as raised:
            await ActivityEnvironment().run(
                activities.deliver, DeliveryRequest(message=message, channel="dead")
            )
    finally:
        await activities.close()
    assert not raised.value.non_retryable
    assert "very-secret-path" not in str(raised.value) and TOKEN not in str(raised.value)
