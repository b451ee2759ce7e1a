"""Alert delivery activities: one message to one channel, never sent twice.

`alerts.deliver` runs on the channel's own task queue (`alert_task_queue`), whose
worker the server rate-limits to the channel's `per_minute`. It claims the
(message, channel) pair in `alert_deliveries` first: a message already sent is not
sent again, whatever retried it. Transient failures raise a retryable error, so
Temporal's retry policy spaces the tries; a refusal raises a non-retryable one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from domain.alerts import AlertChannel, AlertMessage, DeliveryFailure, DeliveryRequest

if TYPE_CHECKING:  # aiohttp and asyncpg stay out of the workflow's imports
    from activities.store.repository import Store

NOT_DELIVERED = "AlertNotDelivered"
REFUSED = "AlertRefused"
UNKNOWN_CHANNEL = "AlertChannelUnknown"


class AlertActivities:
    """Deliveries through the configured channels, recorded in the store."""

    def __init__(self, store: Store, channels: list[AlertChannel]) -> None:
        self._store = store
        self._channels = {c.name: c for c in channels}
        self._session: Any = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> Any:
        import aiohttp

        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        return self._session

    def _channel(self, name: str) -> AlertChannel:
        channel = self._channels.get(name)
        if channel is None:
            raise ApplicationError(
                f"no alert channel {name!r} in this worker's settings",
                type=UNKNOWN_CHANNEL,
                non_retryable=True,
            )
        return channel

    async def _send(self, channel: AlertChannel, message: AlertMessage) -> None:
        from activities.alerts.channels import NotDelivered, send

        try:
            await send(self._http(), channel, message)
        except NotDelivered as exc:
            raise ApplicationError(
                str(exc),
                type=NOT_DELIVERED if exc.retryable else REFUSED,
                non_retryable=not exc.retryable,
            ) from None

    @activity.defn(name="alerts.deliver")
    async def deliver(self, req: DeliveryRequest) -> bool:
        """Send `req.message` to `req.channel` once; True if sent now, False if it
        had been sent before. Raises AlertNotDelivered (retryable) or AlertRefused
        (not retryable); neither names the channel's URL or token."""
        from activities.store.alert_rows import claim_delivery, record_sent

        channel = self._channel(req.channel)
        if await claim_delivery(self._store, req.message, channel.name) == "sent":
            return False
        await self._send(channel, req.message)
        await record_sent(self._store, req.message, channel.name)
        activity.logger.info(
            "alert %s (%s) sent to %s", req.message.message_id, req.message.kind, channel.name
        )
        return True

    @activity.defn(name="alerts.deliver_unrecorded")
    async def deliver_unrecorded(self, req: DeliveryRequest) -> bool:
        """Send `req.message` to `req.channel` without the database: for the database's
        own outage (`domain.alerts.recorded`). Nothing is claimed or recorded, so a
        retry after an answer lost in a crash may send it twice. Raises as `deliver`."""
        channel = self._channel(req.channel)
        await self._send(channel, req.message)
        activity.logger.info(
            "alert %s (%s) sent to %s, unrecorded",
            req.message.message_id,
            req.message.kind,
            channel.name,
        )
        return True

    @activity.defn(name="alerts.record_failure")
    async def record_failure(self, req: DeliveryFailure) -> None:
        """Record that a message never reached its channel (ALERT_FAILED)."""
        from activities.store.alert_rows import record_failed

        await record_failed(self._store, req.message, req.channel, req.error)

    def deliveries(self) -> list[Callable[..., Any]]:
        """The activities of a channel's task queue."""
        return [self.deliver, self.deliver_unrecorded]

    def all(self) -> list[Callable[..., Any]]:
        """The activities of the workflow worker's queue."""
        return [self.record_failure]
