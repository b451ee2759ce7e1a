"""The alert outbox and its deliveries in PostgreSQL (docs/alerts.md).

`alerts` rows are written by whoever raises an alert, in the transaction of its
event. The dispatcher reads the rows not yet handed over (`pending_alerts`) and
marks them (`mark_dispatched`). Each message to each channel is claimed in
`alert_deliveries` before it is sent and marked after, with its ALERT_SENT or
ALERT_FAILED event in the same transaction.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Literal

from activities.store.repository import Store
from domain.alerts import AlertMessage, AlertRaised, condition_key
from domain.events import AlertFailed, AlertSent, Event, EventType, make_event
from domain.types import Severity

LISTEN_CHANNEL = "posguard_alerts"


async def pending_alerts(store: Store, limit: int = 200) -> list[tuple[int, AlertRaised]]:
    """The oldest alert rows not yet handed to their condition's workflow."""
    rows = await store.pool.fetch(
        """SELECT id, event_id, severity, title, body, position_id, condition, resolvable,
                  resolution, created_at
           FROM alerts WHERE dispatched_at IS NULL ORDER BY id LIMIT $1""",
        limit,
    )
    return [
        (
            int(r["id"]),
            AlertRaised(
                event_id=r["event_id"],
                severity=Severity(r["severity"]),
                title=r["title"],
                body=r["body"],
                position_id=r["position_id"],
                condition=r["condition"] or condition_key(r["title"], r["position_id"]),
                resolvable=r["resolvable"],
                resolution=r["resolution"],
                raised_at=r["created_at"],
            ),
        )
        for r in rows
    ]


async def mark_dispatched(store: Store, ids: list[int]) -> None:
    """Mark rows handed over (a row handed twice is dropped by its workflow)."""
    await store.pool.execute(
        "UPDATE alerts SET dispatched_at = now() WHERE id = ANY($1::bigint[])", ids
    )


Claim = Literal["send", "sent"]


async def claim_delivery(store: Store, message: AlertMessage, channel: str) -> Claim:
    """Claim `message` for `channel` before sending it: "sent" if it already went."""
    row = await store.pool.fetchrow(
        """INSERT INTO alert_deliveries (message_id, channel, condition, kind, severity, status)
           VALUES ($1, $2, $3, $4, $5, 'sending')
           ON CONFLICT (message_id, channel) DO UPDATE
               SET attempts = alert_deliveries.attempts + 1, status = 'sending'
               WHERE alert_deliveries.status <> 'sent'
           RETURNING status""",
        message.message_id,
        channel,
        message.condition,
        message.kind.value,
        message.severity.value,
    )
    return "send" if row is not None else "sent"


def _delivery_event_id(message: AlertMessage, channel: str, outcome: str) -> str:
    digest = hashlib.sha256(f"{message.message_id}|{channel}|{outcome}".encode()).hexdigest()
    return f"alert-delivery/{digest[:40]}/{outcome}"


async def record_sent(store: Store, message: AlertMessage, channel: str) -> None:
    """Mark the delivery sent and record its ALERT_SENT event, in one transaction."""
    event = make_event(
        EventType.ALERT_SENT,
        AlertSent(
            channel=channel,
            title=message.title,
            body=message.body,
            message_id=message.message_id,
            kind=message.kind.value,
        ),
        event_id=_delivery_event_id(message, channel, "sent"),
        occurred_at=datetime.now(UTC),
        severity=Severity.INFO,
        correlation_id=message.condition,
        position_id=message.position_id,
    )
    await _finish(store, message, channel, "sent", None, event)


async def record_failed(store: Store, message: AlertMessage, channel: str, error: str) -> None:
    """Mark the delivery failed and record its ALERT_FAILED event (with the number of
    tries the claims counted), in one transaction."""
    attempts = await store.pool.fetchval(
        "SELECT attempts FROM alert_deliveries WHERE message_id = $1 AND channel = $2",
        message.message_id,
        channel,
    )
    event = make_event(
        EventType.ALERT_FAILED,
        AlertFailed(
            channel=channel,
            message_id=message.message_id,
            kind=message.kind.value,
            title=message.title,
            error=error[:500],
            attempts=int(attempts or 0),
        ),
        event_id=_delivery_event_id(message, channel, "failed"),
        occurred_at=datetime.now(UTC),
        correlation_id=message.condition,
        position_id=message.position_id,
    )
    await _finish(store, message, channel, "failed", error[:500], event)


async def _finish(
    store: Store,
    message: AlertMessage,
    channel: str,
    status: str,
    error: str | None,
    event: Event,
) -> None:
    async with store.transaction() as conn:
        await conn.execute(
            """INSERT INTO alert_deliveries
                   (message_id, channel, condition, kind, severity, status, error, sent_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, CASE WHEN $6 = 'sent' THEN now() END)
               ON CONFLICT (message_id, channel) DO UPDATE
                   SET status = EXCLUDED.status, error = EXCLUDED.error,
                       sent_at = EXCLUDED.sent_at
                   WHERE alert_deliveries.status <> 'sent'""",
            message.message_id,
            channel,
            message.condition,
            message.kind.value,
            message.severity.value,
            status,
            error,
        )
        await Store._append_events(conn, [event])


async def deliveries(store: Store, condition: str | None = None) -> list[dict[str, object]]:
    """Delivery rows (of one condition, or all), oldest first."""
    rows = await store.pool.fetch(
        """SELECT * FROM alert_deliveries WHERE $1::text IS NULL OR condition = $1
           ORDER BY claimed_at, message_id, channel""",
        condition,
    )
    return [dict(r) for r in rows]
