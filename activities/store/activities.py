"""Temporal activities that write to the store.

Every write is idempotent (deterministic event ids, revision-guarded upserts),
so Temporal may retry any of them freely; a database outage only delays them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

from temporalio import activity
from temporalio.exceptions import ApplicationError

from domain.errors import scrub
from domain.events import Event
from domain.reconcile import StoredPosition
from domain.reconcile_io import ClosePhantomRequest, StoredRequest
from domain.records import StoreBatch
from domain.types import Side

if TYPE_CHECKING:  # asyncpg stays out of importers (a workflow referencing these methods)
    from activities.store.repository import Store

_P = ParamSpec("_P")
_R = TypeVar("_R")

# SQLSTATE classes of what PostgreSQL refuses for what it is (22: data, 23: integrity,
# 42: a statement the schema does not fit): the same at every attempt.
_REJECTED_CLASSES = frozenset({"22", "23", "42"})
# ... and of the database away (08: connection, 53: resources, 57: shutting down).
_AWAY_CLASSES = frozenset({"08", "53", "57"})


def store_failure(exc: Exception) -> Exception:
    """What a store activity fails with, for Temporal and for the failing-activity
    watch (workers/failing_activities.py): `StoreRejected` for a write PostgreSQL
    refuses for what it is, `StoreUnavailable` for the database away, anything else
    as it is. Both stay retryable: a write must land, and lands once the database is
    back or the cause is fixed."""
    import asyncpg

    if isinstance(exc, asyncpg.PostgresError):
        state = str(getattr(exc, "sqlstate", "") or "")
        kind = (
            "StoreRejected"
            if state[:2] in _REJECTED_CLASSES
            else "StoreUnavailable"
            if state[:2] in _AWAY_CLASSES
            else None
        )
    elif isinstance(exc, OSError | TimeoutError | asyncpg.InterfaceError):
        kind, state = "StoreUnavailable", ""
    else:
        return exc
    if kind is None:
        return exc
    code = f" ({state})" if state else ""
    return ApplicationError(f"{type(exc).__name__}{code}: {scrub(str(exc))}", type=kind)


def _store_call(
    method: Callable[Concatenate[StoreActivities, _P], Coroutine[Any, Any, _R]],
) -> Callable[Concatenate[StoreActivities, _P], Coroutine[Any, Any, _R]]:
    """Fail a store activity with `store_failure`'s error (under ``@activity.defn``)."""

    @functools.wraps(method)
    async def classified(self: StoreActivities, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return await method(self, *args, **kwargs)
        except Exception as exc:
            failure = store_failure(exc)
            if failure is exc:
                raise
            raise failure from None

    return classified


class StoreActivities:
    """Activities bound to one `Store` (one pool per worker process)."""

    def __init__(self, store: Store) -> None:
        self._store = store

    @activity.defn(name="store.apply")
    @_store_call
    async def apply(self, batch: StoreBatch) -> int:
        """Write one workflow transition (events + rows) atomically; returns new events.
        An event whose id the store holds as another fact (a reset run numbers its
        events again) is kept too, its id marked with this run's branch."""
        return await self._store.apply(batch, activity.info().workflow_run_id)

    @activity.defn(name="store.append_event")
    @_store_call
    async def append_event(self, event: Event) -> bool:
        """Append one event; False when that event id was already stored."""
        return await self._store.append_event(event)

    @activity.defn(name="store.open_positions")
    @_store_call
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
    @_store_call
    async def close_phantom(self, req: ClosePhantomRequest) -> bool:
        """Close a row as phantom unless it changed since the reconciler read it."""
        return await self._store.close_phantom(req.position_id, req.revision, req.reason, req.at)

    def all(self) -> list[Callable[..., Any]]:
        """Every store activity, for registration on a worker."""
        return [self.apply, self.append_event, self.open_positions, self.close_phantom]
