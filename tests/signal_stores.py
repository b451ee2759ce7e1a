"""The real signal store with something in front: each call passed through, unless a
subclass holds, slows or counts it (the client's view of a slow or busy database)."""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from datetime import datetime

from activities.store.repository import Store
from domain.events import Event
from domain.records import SignalRecord


class StoreInFront:
    """The real `Store`, every `SignalStore` call passed through as it is."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def store_signals(
        self, records: Sequence[SignalRecord], *, commit_after: Awaitable[object] | None = None
    ) -> set[str]:
        return await self._store.store_signals(records, commit_after=commit_after)

    async def append_signal_events(self, events: Sequence[Event]) -> int:
        return await self._store.append_signal_events(events)

    async def append_event(self, event: Event) -> bool:
        return await self._store.append_event(event)

    async def last_signal_id(self, service: str) -> str | None:
        return await self._store.last_signal_id(service)

    async def signals(
        self, service: str, *, limit: int = 100, received_after: datetime | None = None
    ) -> list[SignalRecord]:
        return await self._store.signals(service, limit=limit, received_after=received_after)
