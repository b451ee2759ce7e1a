"""Temporal activities that write to the store.

Every write is idempotent (deterministic event ids, revision-guarded upserts),
so Temporal may retry any of them freely; a database outage only delays them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from temporalio import activity

from domain.events import Event
from domain.reconcile import StoredPosition
from domain.reconcile_io import ClosePhantomRequest, StoredRequest
from domain.records import StoreBatch
from domain.types import Side

if TYPE_CHECKING:  # asyncpg stays out of importers (a workflow referencing these methods)
    from activities.store.repository import Store


class StoreActivities:
    """Activities bound to one `Store` (one pool per worker process)."""

    def __init__(self, store: Store) -> None:
        self._store = store

    @activity.defn(name="store.apply")
    async def apply(self, batch: StoreBatch) -> int:
        """Write one workflow transition (events + rows) atomically; returns new events.
        An event whose id the store holds as another fact (a reset run numbers its
        events again) is kept too, its id marked with this run's branch."""
        return await self._store.apply(batch, activity.info().workflow_run_id)

    @activity.defn(name="store.append_event")
    async def append_event(self, event: Event) -> bool:
        """Append one event; False when that event id was already stored."""
        return await self._store.append_event(event)

    @activity.defn(name="store.open_positions")
    async def open_positions(self, req: StoredRequest) -> list[StoredPosition]:
        """The account's position rows that are not over, for the reconciler."""
        rows = await self._store.open_positions(req.account, req.exchange.value)
        return [
            StoredPosition(
                position_id=r.id,
                workflow_id=r.workflow_id,
                symbol=r.symbol,
                side=Side(r.side),
                status=r.status,
                quantity=r.quantity,
                revision=r.revision,
            )
            for r in rows
        ]

    @activity.defn(name="store.close_phantom")
    async def close_phantom(self, req: ClosePhantomRequest) -> bool:
        """Close a row as phantom unless it changed since the reconciler read it."""
        return await self._store.close_phantom(req.position_id, req.revision, req.reason, req.at)

    def all(self) -> list[Callable[..., Any]]:
        """Every store activity, for registration on a worker."""
        return [self.apply, self.append_event, self.open_positions, self.close_phantom]
