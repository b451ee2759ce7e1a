"""The rows the dashboard reads from PostgreSQL: a page's worth each, newest first.

Read-only: nothing here writes. Each read is bounded (`limit`) and filtered to the
configured accounts where the table knows the account, so a year of history costs
the same as a day.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from activities.store.repository import Store
from domain.events import Event, EventType
from domain.records import PositionRecord, WaveRecord

FINDINGS = (
    EventType.PHANTOM_DETECTED,
    EventType.PHANTOM_CLOSED,
    EventType.UNTRACKED_DETECTED,
    EventType.QUANTITY_MISMATCH,
    EventType.ZOMBIE_DETECTED,
    EventType.ZOMBIE_CANCELLED,
    EventType.ZOMBIE_CANCEL_FAILED,
    EventType.FOREIGN_ORDER_DETECTED,
    EventType.POSITION_ADOPTED,
)
"""Event types the reconciler records about what it found and did (docs/reconcile.md)."""

_TERMINAL = ("closed", "rolled_back")


def _model(cls: Any, row: Any) -> Any:
    fields = cls.model_fields
    return cls.model_validate({k: v for k, v in dict(row).items() if k in fields})


async def live_rows(store: Store, accounts: Sequence[str]) -> list[PositionRecord]:
    """Rows of `accounts` whose lifecycle is not over, oldest first: each should have a
    running workflow (one that has none is shown with a warning)."""
    rows = await store.pool.fetch(
        """SELECT * FROM positions
           WHERE account = ANY($1) AND status NOT IN ('closed', 'rolled_back')
           ORDER BY created_at""",
        list(accounts),
    )
    return [_model(PositionRecord, r) for r in rows]


async def rows_by_id(store: Store, position_ids: Sequence[str]) -> dict[str, PositionRecord]:
    """The rows of `position_ids` that exist, by id."""
    rows = await store.pool.fetch("SELECT * FROM positions WHERE id = ANY($1)", list(position_ids))
    return {r["id"]: _model(PositionRecord, r) for r in rows}


async def closed_rows(
    store: Store, accounts: Sequence[str], limit: int
) -> list[tuple[PositionRecord, Decimal | None]]:
    """The latest `limit` positions of `accounts` that are over, last closed first, each
    with the quantity its close booked (its `position_closed` event; None: none, as
    for a rollback). The row's own quantity is what is still held: 0 once closed."""
    rows = await store.pool.fetch(
        """SELECT p.*, c.quantity AS closed_quantity FROM positions p
           LEFT JOIN LATERAL (
               SELECT (e.payload->>'quantity')::numeric AS quantity FROM events e
               WHERE e.position_id = p.id AND e.type = 'position_closed'
               ORDER BY e.occurred_at DESC LIMIT 1
           ) c ON true
           WHERE p.account = ANY($1) AND p.status = ANY($2)
           ORDER BY p.closed_at DESC NULLS LAST, p.updated_at DESC LIMIT $3""",
        list(accounts),
        list(_TERMINAL),
        limit,
    )
    return [(_model(PositionRecord, r), r["closed_quantity"]) for r in rows]


async def latest_alerts(store: Store, limit: int) -> list[dict[str, Any]]:
    """The latest `limit` alerts raised (every account's: an alert row names no account)."""
    rows = await store.pool.fetch(
        """SELECT created_at, severity, title, body, position_id, resolution
           FROM alerts ORDER BY created_at DESC, id DESC LIMIT $1""",
        limit,
    )
    return [dict(r) for r in rows]


async def latest_waves(store: Store, accounts: Sequence[str], limit: int) -> list[WaveRecord]:
    """The latest `limit` waves of `accounts`, newest period first."""
    rows = await store.pool.fetch(
        """SELECT * FROM waves WHERE account = ANY($1)
           ORDER BY period_start DESC, id LIMIT $2""",
        list(accounts),
        limit,
    )
    return [_model(WaveRecord, r) for r in rows]


async def latest_findings(store: Store, accounts: Sequence[str], limit: int) -> list[Event]:
    """The latest `limit` reconcile findings of `accounts`, newest first."""
    rows = await store.pool.fetch(
        """SELECT * FROM events
           WHERE type = ANY($1) AND account = ANY($2)
           ORDER BY occurred_at DESC, event_id DESC LIMIT $3""",
        [t.value for t in FINDINGS],
        list(accounts),
        limit,
    )
    return [_model(Event, r) for r in rows]


async def position_events(store: Store, position_id: str, limit: int) -> list[Event]:
    """The latest `limit` events of one position, oldest first."""
    events = await store.events(position_id=position_id, limit=limit, newest_first=True)
    events.reverse()
    return events
