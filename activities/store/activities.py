"""Temporal activities that write to the store.

Every write is idempotent (deterministic event ids, revision-guarded upserts),
so Temporal may retry any of them freely; a database outage only delays them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from temporalio import activity

from domain.events import Event
from domain.records import StoreBatch

if TYPE_CHECKING:  # asyncpg stays out of importers (a workflow referencing these methods)
    from activities.store.repository import Store


class StoreActivities:
    """Activities bound to one `Store` (one pool per worker process)."""

    def __init__(self, store: Store) -> None:
        self._store = store

    @activity.defn(name="store.apply")
    async def apply(self, batch: StoreBatch) -> int:
        """Write one workflow transition (events + rows) atomically; returns new events."""
        return await self._store.apply(batch)

    @activity.defn(name="store.append_event")
    async def append_event(self, event: Event) -> bool:
        """Append one event; False when that event id was already stored."""
        return await self._store.append_event(event)
