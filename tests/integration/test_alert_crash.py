"""A worker SIGKILLed while it delivers an alert: the message is delivered, recorded
once, and a receiver that honours its Idempotency-Key keeps one copy.

The world of tests/integration/test_crash.py (`crash`): worker processes of their
own, the real dev server and PostgreSQL, and a local webhook (AlertSink) that holds
the first delivery's answer so the kill lands mid-request.

On Binance's paper exchange only: no step of this scenario involves the exchange (the
alert is a row of the store, delivered to a webhook), so the venue changes nothing.
"""

from __future__ import annotations

import json
import uuid

from activities.store import alert_rows
from domain.alerts import condition_key
from domain.records import AlertRecord
from domain.types import Severity
from simulator.alert_sink import AlertSink
from tests.integration.test_crash import Crash, until


async def test_a_kill_during_delivery_sends_each_message_once(crash: Crash) -> None:
    async with AlertSink() as sink:
        crash.worker_env.update(
            POSGUARD_HEALTH_PORT="-1",
            POSGUARD_ALERT_CHANNELS=json.dumps(
                [
                    {
                        "name": f"hook{crash.account}",
                        "kind": "webhook",
                        "url": sink.webhook_url,
                        "per_minute": 600,
                    }
                ]
            ),
            POSGUARD_ALERTS__DISPATCH_POLL="200ms",
            POSGUARD_ALERTS__DELIVERY_TIMEOUT="2s",
            POSGUARD_ALERTS__DELIVERY_FIRST_RETRY="100ms",
        )
        first = await crash.start_worker()
        title = f"crash test {uuid.uuid4().hex[:6]}"
        sink.hold(1.0, count=1)  # the first request is kept, answered after 1 s
        async with crash.store.pool.acquire() as conn:
            await crash.store._insert_alert(
                conn,
                AlertRecord(
                    event_id=f"crash/{uuid.uuid4().hex}",
                    severity=Severity.CRITICAL,
                    title=title,
                    body="the worker dies while this is on its way",
                ),
            )

        async def in_flight() -> bool:
            return sink.held == 1

        await until("the delivery held by the receiver", in_flight, crash)
        await first.kill()
        await crash.start_worker()
        condition = condition_key(title)

        async def delivered() -> bool:
            rows = await alert_rows.deliveries(crash.store, condition)
            return any(r["status"] == "sent" for r in rows)

        await until("the delivery retried by the new worker and recorded", delivered, crash)
        kept = [m for m in sink.of("webhook") if title in m.text]
        # the dead worker's request reached the receiver; the retry sent it again
        # under the same key, and the receiver kept one copy
        assert len(kept) == 1 and kept[0].key == kept[0].body["id"]
        assert sink.duplicates <= 1
        [row] = await alert_rows.deliveries(crash.store, condition)
        assert row["status"] == "sent" and row["attempts"] == 2
        sent = await crash.store.pool.fetchval(
            "SELECT count(*) FROM events WHERE type = 'alert_sent' AND correlation_id = $1",
            condition,
        )
        assert sent == 1
