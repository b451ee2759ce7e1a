"""Recording a stream's connection changes (WEBSOCKET_* events) without ever blocking it."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Awaitable
from datetime import UTC, datetime
from typing import Any, Protocol

from domain.events import Event, EventType, WebsocketState, make_event

log = logging.getLogger("posguard.streams")


class EventSink(Protocol):
    """What a stream needs of `activities.store.repository.Store`."""

    def append_event(self, event: Event) -> Awaitable[bool]: ...


class StreamEvents:
    """Numbered WEBSOCKET_* events of one stream; a database outage never stops the stream."""

    def __init__(self, sink: EventSink | None, name: str, **context: Any) -> None:
        self.sink = sink
        self.prefix = f"{name}/{socket.gethostname()}/{os.getpid()}"
        self.context = context
        self.seq = 0

    async def record(self, kind: EventType, payload: WebsocketState) -> None:
        if self.sink is None:
            return
        self.seq += 1
        event = make_event(
            kind,
            payload,
            event_id=f"{self.prefix}/{self.seq}",
            occurred_at=datetime.now(UTC),
            **self.context,
        )
        try:
            await self.sink.append_event(event)
        except Exception:  # a database outage must not stop the stream
            log.exception("could not record %s", kind)
