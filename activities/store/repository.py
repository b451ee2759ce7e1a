"""The PostgreSQL store: an asyncpg pool, explicit transactions, idempotent writes.

NUMERIC columns come back as `Decimal` (asyncpg's default) and go in as
`Decimal`; JSON payloads are encoded with Decimals as strings, so no value in
the money path ever passes through float.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import AsyncIterator, Awaitable, Sequence
from contextvars import ContextVar
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

import asyncpg
from opentelemetry.trace import SpanKind

from activities.store.event_metrics import count_alerts, count_events
from activities.store.migrate import apply_migrations, lock_schema
from activities.tracing import tracer
from domain.alerts import condition_key
from domain.events import DEFAULT_SEVERITY, Event, EventType
from domain.journal import JOURNALED_KINDS, JournalEntry
from domain.records import (
    AlertRecord,
    FillRecord,
    OrderRecord,
    PositionRecord,
    SignalRecord,
    StoreBatch,
    WaveRecord,
)
from domain.signal_events import SIGNAL_ROW_EVENTS, signal_event_ids
from domain.signal_wire import MAX_RAW_CHARS
from domain.types import Severity


def _json_default(value: object) -> str:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _dumps(value: object) -> str:
    return json.dumps(value, default=_json_default, separators=(",", ":"))


async def _init_connection(conn: asyncpg.Connection) -> None:
    for name in ("json", "jsonb"):
        await conn.set_type_codec(
            name, encoder=_dumps, decoder=json.loads, schema="pg_catalog", format="text"
        )


_SIGNAL_COLUMNS = (
    "id",
    "service",
    "received_at",
    "raw",
    "signal_id",
    "exchange",
    "symbol",
    "side",
    "action",
    "signal_at",
    "wave_id",
    "score_week",
    "score_month",
    "status",
    "reason",
)
assert set(_SIGNAL_COLUMNS) == set(SignalRecord.model_fields), "a SignalRecord field is not stored"
_COPY_MIN_ROWS = 256
"""Batches of at least this many rows are written by COPY (see `store_signals`): below,
a COPY's extra round trips and its staging table cost more than it saves."""

# Session-local staging tables for COPY (created once per connection, emptied at
# each commit); `client_min_messages` keeps "already exists" notices off the wire.
# Besides the row's columns, the staging table holds the ids of the row's events
# (`domain.signal_events.signal_event_ids`): a long row id's event ids are digests.
_SIGNAL_ROWS_IN_SQL = """SET LOCAL client_min_messages = warning;
CREATE TEMP TABLE IF NOT EXISTS posguard_signal_rows_in (
    id text, service text, received_at timestamptz, raw text, signal_id text,
    exchange text, symbol text, side text, action text, signal_at timestamptz,
    wave_id text, score_week numeric, score_month numeric, status text, reason text,
    first_event_id text, second_event_id text
) ON COMMIT DELETE ROWS"""
_SIGNAL_ROW_IN_COLUMNS = (*_SIGNAL_COLUMNS, "first_event_id", "second_event_id")


def _signals_with_events_sql(source: str) -> str:
    """One statement: the new rows of `source` (a relation named `b` with the columns
    of `_SIGNAL_ROW_IN_COLUMNS`) into `signals`, and the events of exactly those rows
    into `events`, built by PostgreSQL as `domain.signal_events.events_of_record`
    builds them; answers the ids of the rows that were new.

    $1..$3 are the types of the received, validated and rejected events, $4..$6
    their severities. A row's event time is its receipt time and its id derives from
    the row, so the log's key (event_id, occurred_at) alone refuses a repeat.
    """
    columns = ", ".join(_SIGNAL_COLUMNS)
    return f"""WITH b AS (SELECT * FROM {source}),
new AS (
    INSERT INTO signals ({columns}) SELECT {columns} FROM b
    ON CONFLICT DO NOTHING RETURNING id
),
written AS (
    INSERT INTO events (event_id, occurred_at, type, severity, correlation_id, exchange,
        symbol, payload, error_message)
    SELECT e.event_id, b.received_at, e.type, e.severity, 'signal/' || b.id, b.exchange,
        b.symbol, e.payload, e.error_message
    FROM new JOIN b USING (id)
    CROSS JOIN LATERAL (VALUES
        (b.first_event_id,
         CASE WHEN b.status = 'rejected' THEN $3 ELSE $1 END,
         CASE WHEN b.status = 'rejected' THEN $6 ELSE $4 END,
         CASE WHEN b.status = 'rejected'
              THEN jsonb_build_object('signal_id', b.signal_id,
                                      'reason', coalesce(b.reason, ''),
                                      'errors', '[]'::jsonb)
              ELSE jsonb_build_object('signal_id', b.signal_id, 'symbol', b.symbol,
                                      'exchange', b.exchange,
                                      'raw', jsonb_build_object('text',
                                                                left(b.raw, {MAX_RAW_CHARS})))
         END,
         CASE WHEN b.status = 'rejected' THEN b.reason END),
        (b.second_event_id, $2, $5,
         jsonb_build_object('signal_id', b.signal_id, 'wave_id', NULL), NULL)
    ) AS e(event_id, type, severity, payload, error_message)
    WHERE e.event_id IS NOT NULL
    ON CONFLICT (event_id, occurred_at) DO NOTHING
)
SELECT id FROM new"""


_SIGNALS_WITH_EVENTS_COPY_SQL = _signals_with_events_sql("posguard_signal_rows_in")
_SIGNAL_ROW_TYPES = dict.fromkeys(_SIGNAL_ROW_IN_COLUMNS, "text") | {
    "received_at": "timestamptz",
    "signal_at": "timestamptz",
    "score_week": "numeric",
    "score_month": "numeric",
}
_SIGNALS_WITH_EVENTS_UNNEST_SQL = _signals_with_events_sql(
    "unnest("
    + ", ".join(
        f"${i}::{_SIGNAL_ROW_TYPES[name]}[]"
        for i, name in enumerate(_SIGNAL_ROW_IN_COLUMNS, start=7)
    )
    + f") AS b({', '.join(_SIGNAL_ROW_IN_COLUMNS)})"
)
_SIGNAL_EVENT_KINDS = (
    EventType.SIGNAL_RECEIVED,
    EventType.SIGNAL_VALIDATED,
    EventType.SIGNAL_REJECTED,
)
_SIGNAL_EVENT_ARGS = (
    *(kind.value for kind in _SIGNAL_EVENT_KINDS),
    *(DEFAULT_SEVERITY.get(kind, Severity.INFO).value for kind in _SIGNAL_EVENT_KINDS),
)

_EVENT_COLUMNS = (
    "event_id",
    "occurred_at",
    "type",
    "severity",
    "correlation_id",
    "position_id",
    "account",
    "exchange",
    "symbol",
    "order_id",
    "payload",
    "error_message",
)

_EVENTS_IN_SQL = """SET LOCAL client_min_messages = warning;
CREATE TEMP TABLE IF NOT EXISTS posguard_events_in (
    event_id text, occurred_at timestamptz, type text, severity text, correlation_id text,
    position_id text, account text, exchange text, symbol text, order_id text,
    payload text, error_message text
) ON COMMIT DELETE ROWS"""

_ENCODE = json.JSONEncoder(default=_json_default, separators=(",", ":")).encode
"""`_dumps`, with its encoder made once (JSON text as the `jsonb` codec sends it)."""

# A signal event's id and time both derive from its stored signal row
# (`domain.signal_events.events_of_record`), so the same id always comes with the same
# time and the log's own key (event_id, occurred_at) refuses a repeat: no claim in
# `event_ids` is needed (a third of the cost of each event). Signal events are only
# ever written with their rows (`store_signals`) or again from them (this), never
# through `append_events`.
_SIGNAL_EVENTS_FROM_TEMP_SQL = """INSERT INTO events (event_id, occurred_at, type, severity,
    correlation_id, position_id, account, exchange, symbol, order_id, payload, error_message)
SELECT b.event_id, b.occurred_at, b.type, b.severity, b.correlation_id, b.position_id,
    b.account, b.exchange, b.symbol, b.order_id, b.payload::jsonb, b.error_message
FROM posguard_events_in b
ON CONFLICT (event_id, occurred_at) DO NOTHING"""

_SIGNAL_EVENTS_UNNEST_SQL = """INSERT INTO events (event_id, occurred_at, type, severity,
    correlation_id, position_id, account, exchange, symbol, order_id, payload, error_message)
SELECT event_id, occurred_at, type, severity, correlation_id, position_id, account,
    exchange, symbol, order_id, payload::jsonb, error_message
FROM unnest($1::text[], $2::timestamptz[], $3::text[], $4::text[], $5::text[], $6::text[],
    $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[])
    AS b(event_id, occurred_at, type, severity, correlation_id, position_id, account,
         exchange, symbol, order_id, payload, error_message)
ON CONFLICT (event_id, occurred_at) DO NOTHING"""


def branch_mark(run_id: str) -> str:
    """The short, stable mark of a run's branch in the ids of its renamed events."""
    return hashlib.sha256(run_id.encode()).hexdigest()[:12]


class _Committing:
    """What a transaction wrote that metrics count once it has committed."""

    __slots__ = ("alerts", "events")

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.alerts: list[AlertRecord] = []


# The transaction (of this task) that new events and alerts wait in, if any.
_COMMITTING: ContextVar[_Committing | None] = ContextVar("posguard_committing", default=None)


class Store:
    """Repository over one PostgreSQL database. Create with `Store.connect`."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    @classmethod
    async def connect(cls, dsn: str, *, min_size: int = 1, max_size: int = 10) -> Store:
        """Open a pool to `dsn`; raises the driver's error if the server is unreachable."""
        pool = await asyncpg.create_pool(
            dsn, min_size=min_size, max_size=max_size, init=_init_connection, command_timeout=30
        )
        return cls(pool)

    async def close(self) -> None:
        await self.pool.close()

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection in a transaction (one span); the events and alerts it
        inserted are counted (event_metrics) once it has committed, never before."""
        committing = _Committing()
        token = _COMMITTING.set(committing)
        with tracer().start_as_current_span("store transaction", kind=SpanKind.CLIENT) as span:
            try:
                async with self.pool.acquire() as conn, conn.transaction():
                    yield conn
            finally:
                _COMMITTING.reset(token)
            span.set_attribute("posguard.events", len(committing.events))
        count_events(committing.events, self.pool)
        count_alerts(committing.alerts)

    async def ping(self) -> bool:
        """True when a connection answers `SELECT 1`."""
        return bool(await self.pool.fetchval("SELECT 1") == 1)

    # --- schema ---------------------------------------------------------------------

    async def migrate(self) -> list[int]:
        """Apply pending migrations; returns the versions applied now (empty if none)."""
        async with self.pool.acquire() as conn:
            return await apply_migrations(conn)

    async def ensure_event_partitions(self, now: datetime, months_ahead: int = 3) -> int:
        """Create monthly event partitions from `now`'s month on; returns how many were new.

        Safe for any number of processes at once: it holds the schema lock (the one
        migrations take), so a partition another worker is creating is waited for
        and then found, never created twice.
        """
        async with self.transaction() as conn:
            await lock_schema(conn)
            return int(
                await conn.fetchval(
                    "SELECT posguard_ensure_event_partitions($1, $2)", now, months_ahead + 1
                )
            )

    async def apply_retention(self, keep: timedelta) -> int:
        """Drop event partitions entirely older than `keep`; returns how many were dropped.

        Holds the schema lock, like `ensure_event_partitions`: processes doing it at
        once take turns, and a partition already dropped by one is not dropped again.
        """
        async with self.transaction() as conn:
            await lock_schema(conn)
            return int(await conn.fetchval("SELECT posguard_drop_event_partitions($1)", keep))

    # --- events ---------------------------------------------------------------------

    async def append_event(self, event: Event) -> bool:
        """Append one event; returns False (and stores nothing) if its id is already stored."""
        async with self.transaction() as conn:
            return await self._append_event(conn, event)

    async def append_events(self, events: Sequence[Event]) -> int:
        """Append events in one transaction; returns how many were new."""
        async with self.transaction() as conn:
            return await self._append_events(conn, events)

    @staticmethod
    async def _append_event(conn: asyncpg.Connection, e: Event) -> bool:
        return await Store._append_events(conn, [e]) == 1

    @staticmethod
    async def _append_events(
        conn: asyncpg.Connection,
        events: Sequence[Event],
        branch: str | None = None,
        renamed: dict[str, str] | None = None,
    ) -> int:
        """Insert the events whose ids are not stored yet, in one statement; how many.

        `branch` (the writing workflow's run id): an event whose id is stored with
        another type, payload or order is a different fact (a run reset to an earlier
        point numbers its events again from there), stored as `<id>~<branch mark>`;
        `renamed` (when given) gets each such id's new id.

        An id is claimed in `event_ids` (global uniqueness; the partitioned table's
        own key must include the time) and only claimed ids reach `events`; one
        already in the log unclaimed (a signal-row event, `append_signal_events`)
        is not new either. One
        round trip for the whole batch: a reconcile pass may record hundreds.
        """
        unique: dict[str, Event] = {}
        for e in events:
            unique.setdefault(e.event_id, e)
        if not unique:
            return 0
        batch = list(unique.values())
        inserted = await conn.fetch(
            """WITH batch AS (
                   SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::text[], $4::text[],
                       $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[],
                       $11::jsonb[], $12::text[])
                   AS b(event_id, occurred_at, type, severity, correlation_id, position_id,
                        account, exchange, symbol, order_id, payload, error_message)
               ), claimed AS (
                   INSERT INTO event_ids (event_id, occurred_at)
                   SELECT event_id, occurred_at FROM batch
                   ON CONFLICT (event_id) DO NOTHING
                   RETURNING event_id
               )
               INSERT INTO events (event_id, occurred_at, type, severity, correlation_id,
                   position_id, account, exchange, symbol, order_id, payload, error_message)
               SELECT b.* FROM batch b JOIN claimed c USING (event_id)
               ON CONFLICT (event_id, occurred_at) DO NOTHING
               RETURNING event_id""",
            [e.event_id for e in batch],
            [e.occurred_at for e in batch],
            [e.type.value for e in batch],
            [e.severity.value for e in batch],
            [e.correlation_id for e in batch],
            [e.position_id for e in batch],
            [e.account for e in batch],
            [e.exchange for e in batch],
            [e.symbol for e in batch],
            [e.order_id for e in batch],
            [e.payload for e in batch],
            [e.error_message for e in batch],
        )
        new = {r["event_id"] for r in inserted}
        _committed_later([e for e in batch if e.event_id in new], [])
        if branch is None or len(new) == len(batch):
            return len(inserted)
        # Not new: the same fact again (a retried write: nothing to do), or, after a
        # reset of the run, another fact the new branch numbered as the dropped branch
        # had numbered one of its own: kept under the id and its branch's mark.
        taken = [e for e in batch if e.event_id not in new]
        differ = await conn.fetch(
            """SELECT b.event_id
               FROM unnest($1::text[], $2::text[], $3::jsonb[], $4::text[])
                   AS b(event_id, type, payload, order_id)
               JOIN events e USING (event_id)
               WHERE e.type <> b.type OR e.payload <> b.payload
                   OR e.order_id IS DISTINCT FROM b.order_id""",
            [e.event_id for e in taken],
            [e.type.value for e in taken],
            [e.payload for e in taken],
            [e.order_id for e in taken],
        )
        if not differ:
            return len(inserted)
        ids = {r["event_id"] for r in differ}
        mark = branch_mark(branch)
        marked = [
            e.model_copy(update={"event_id": f"{e.event_id}~{mark}"})
            for e in taken
            if e.event_id in ids
        ]
        if renamed is not None:
            renamed.update({e.event_id: f"{e.event_id}~{mark}" for e in taken if e.event_id in ids})
        return len(inserted) + await Store._append_events(conn, marked)

    async def events(
        self,
        *,
        position_id: str | None = None,
        correlation_id: str | None = None,
        symbol: str | None = None,
        event_type: str | None = None,
        min_severity: str | None = None,
        since: datetime | None = None,
        limit: int = 100,
        newest_first: bool = False,
    ) -> list[Event]:
        """Events matching every given filter, oldest first (or newest first)."""
        where: list[str] = []
        args: list[Any] = []

        def add(clause: str, value: Any) -> None:
            args.append(value)
            where.append(clause.format(f"${len(args)}"))

        if position_id is not None:
            add("position_id = {}", position_id)
        if correlation_id is not None:
            add("correlation_id = {}", correlation_id)
        if symbol is not None:
            add("symbol = {}", symbol)
        if event_type is not None:
            add("type = {}", event_type)
        if min_severity is not None:
            order = ["debug", "info", "warning", "error", "critical"]
            add("severity = ANY({})", order[order.index(min_severity) :])
            if order.index(min_severity) >= order.index("warning"):
                # The partial index's own predicate, written out: the planner cannot
                # prove it from the array parameter alone.
                where.append("severity IN ('warning', 'error', 'critical')")
        if since is not None:
            add("occurred_at > {}", since)
        args.append(limit)
        sql = (
            "SELECT * FROM events"
            + (" WHERE " + " AND ".join(where) if where else "")
            + (
                " ORDER BY occurred_at DESC, event_id DESC"
                if newest_first
                else " ORDER BY occurred_at, event_id"
            )
            + f" LIMIT ${len(args)}"
        )
        rows = await self.pool.fetch(sql, *args)
        return [
            Event.model_validate(
                {k: v for k, v in dict(row).items() if k in Event.model_fields},
            )
            for row in rows
        ]

    # --- rows -------------------------------------------------------------------------

    async def apply(self, batch: StoreBatch, branch: str | None = None) -> int:
        """Apply one workflow transition atomically; returns how many events were new.
        `branch`: the writing run's id (see `_append_events`)."""
        async with self.transaction() as conn:
            renamed: dict[str, str] = {}
            new_events = await self._append_events(conn, batch.events, branch, renamed)
            if batch.position is not None:
                await self._upsert_position(conn, batch.position)
            for order in batch.orders:
                await self._upsert_order(conn, order)
            if batch.position is not None:
                await self._journal_recorded(conn, batch.position.workflow_id, batch.orders)
            for fill in batch.fills:
                await self._insert_fill(conn, fill)
            for alert in batch.alerts:
                if alert.event_id in renamed:  # its event is the new branch's other fact
                    alert = alert.model_copy(update={"event_id": renamed[alert.event_id]})
                await self._insert_alert(conn, alert)
            return new_events

    @staticmethod
    async def _journal_recorded(
        conn: asyncpg.Connection, workflow_id: str, orders: list[OrderRecord]
    ) -> None:
        """Journal each recorded order of ours the journal lacks (never changing a row).

        A protective order is sent unjournaled when the database cannot be reached
        (docs/safety.md); its workflow's record of it, written once the database is
        back, gives it its journal row here, so no order of ours stays without one.
        """
        for order in orders:
            if order.kind not in JOURNALED_KINDS or order.quantity <= 0:
                continue  # not ours (outside, liquidation), or nothing sent
            await conn.execute(
                """INSERT INTO order_journal (client_order_id, position_id, workflow_id,
                       account, exchange, symbol, kind, side, quantity, trigger_price,
                       reduce_only)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
                   ON CONFLICT (client_order_id) DO NOTHING""",
                order.client_order_id,
                order.position_id,
                workflow_id,
                order.account,
                order.exchange,
                order.symbol,
                order.kind,
                order.side,
                order.quantity,
                order.trigger_price,
                order.reduce_only,
            )

    async def upsert_position(self, rec: PositionRecord) -> None:
        """Insert or update a position row unless the stored revision is newer."""
        async with self.pool.acquire() as conn:
            await self._upsert_position(conn, rec)

    async def upsert_order(self, rec: OrderRecord) -> None:
        """Insert or update an order row unless the stored revision is newer."""
        async with self.pool.acquire() as conn:
            await self._upsert_order(conn, rec)

    async def record_fill(self, rec: FillRecord) -> bool:
        """Store a fill once (keyed by exchange trade id); returns False if already known."""
        async with self.pool.acquire() as conn:
            return await self._insert_fill(conn, rec)

    @staticmethod
    def _upsert_sql(
        table: str, key: str, data: dict[str, Any], *, by_revision: bool = True
    ) -> tuple[str, list[Any]]:
        """INSERT ... ON CONFLICT UPDATE; with `by_revision`, only when not older."""
        cols = list(data)
        placeholders = ", ".join(f"${i}" for i in range(1, len(cols) + 1))
        updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in cols if c != key)
        sql = (
            f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({placeholders}) "
            f"ON CONFLICT ({key}) DO UPDATE SET {updates}"
        )
        if by_revision:
            sql += f" WHERE {table}.revision <= EXCLUDED.revision"
        return sql, [data[c] for c in cols]

    async def _upsert_position(self, conn: asyncpg.Connection, rec: PositionRecord) -> None:
        # Temporal runs one workflow per id at a time, so a new lifecycle on the
        # same workflow id proves the previous one ended. If it ended without
        # recording its close (terminated), its row is marked superseded instead
        # of blocking the one-live-position-per-key index forever.
        await conn.execute(
            """UPDATE positions SET status = 'closed',
                   exit_reason = coalesce(exit_reason, 'superseded: workflow ended unrecorded')
               WHERE workflow_id = $1 AND id <> $2 AND status NOT IN ('closed', 'rolled_back')""",
            rec.workflow_id,
            rec.id,
        )
        sql, args = self._upsert_sql("positions", "id", rec.model_dump())
        await conn.execute(sql, *args)

    async def _upsert_order(self, conn: asyncpg.Connection, rec: OrderRecord) -> None:
        sql, args = self._upsert_sql("orders", "client_order_id", rec.model_dump())
        await conn.execute(sql, *args)

    @staticmethod
    async def _insert_once(conn: Any, table: str, key: str, data: dict[str, Any]) -> bool:
        """INSERT ... ON CONFLICT DO NOTHING; True when the row is new."""
        cols = list(data)
        placeholders = ", ".join(f"${i}" for i in range(1, len(cols) + 1))
        done = await conn.fetchval(
            f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({placeholders}) "
            f"ON CONFLICT ({key}) DO NOTHING RETURNING true",
            *[data[c] for c in cols],
        )
        return bool(done)

    async def _insert_fill(self, conn: asyncpg.Connection, rec: FillRecord) -> bool:
        return await self._insert_once(conn, "fills", "client_order_id, trade_id", rec.model_dump())

    @staticmethod
    async def _insert_alert(conn: asyncpg.Connection, rec: AlertRecord) -> None:
        new = await conn.fetchval(
            """INSERT INTO alerts (event_id, severity, title, body, position_id, channel,
                                   condition, resolvable, resolution)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (event_id) DO NOTHING
               RETURNING true""",
            rec.event_id,
            rec.severity.value,
            rec.title,
            rec.body,
            rec.position_id,
            rec.channel,
            rec.condition or condition_key(rec.title, rec.position_id),
            rec.resolvable,
            rec.resolution,
        )
        if new:
            _committed_later([], [rec])

    async def get_position(self, position_id: str) -> PositionRecord | None:
        """The stored position row, or None."""
        row = await self.pool.fetchrow("SELECT * FROM positions WHERE id = $1", position_id)
        return None if row is None else _record(PositionRecord, row)

    async def positions(
        self, *, statuses: Sequence[str] | None = None, symbol: str | None = None
    ) -> list[PositionRecord]:
        """Position rows, newest first, optionally filtered by status and symbol."""
        rows = await self.pool.fetch(
            """SELECT * FROM positions
               WHERE ($1::text[] IS NULL OR status = ANY($1)) AND ($2::text IS NULL OR symbol = $2)
               ORDER BY created_at DESC""",
            list(statuses) if statuses is not None else None,
            symbol,
        )
        return [_record(PositionRecord, r) for r in rows]

    async def open_positions(self, account: str, exchange: str) -> list[PositionRecord]:
        """Rows of one account that are not over (status not closed / rolled back)."""
        rows = await self.pool.fetch(
            """SELECT * FROM positions
               WHERE account = $1 AND exchange = $2 AND status NOT IN ('closed', 'rolled_back')
               ORDER BY created_at""",
            account,
            exchange,
        )
        return [_record(PositionRecord, r) for r in rows]

    async def close_phantom(
        self, position_id: str, revision: int, reason: str, at: datetime
    ) -> bool:
        """Close a row no workflow will close (the reconciler's phantom); True if closed.

        Only while the row is still at `revision` and not over: a row written since
        (its workflow came back) is left to its workflow. The revision is bumped, so
        a late write of the old workflow cannot reopen it.
        """
        done = await self.pool.fetchval(
            """UPDATE positions SET status = 'closed', exit_reason = $3, closed_at = $4,
                   revision = revision + 1
               WHERE id = $1 AND revision = $2 AND status NOT IN ('closed', 'rolled_back')
               RETURNING true""",
            position_id,
            revision,
            reason,
            at,
        )
        return bool(done)

    async def orders(self, position_id: str) -> list[OrderRecord]:
        """Order rows of one position, oldest first."""
        rows = await self.pool.fetch(
            "SELECT * FROM orders WHERE position_id = $1 ORDER BY created_at, client_order_id",
            position_id,
        )
        return [_record(OrderRecord, r) for r in rows]

    async def fills(self, position_id: str) -> list[FillRecord]:
        """Fill rows of one position, oldest first."""
        rows = await self.pool.fetch(
            "SELECT * FROM fills WHERE position_id = $1 ORDER BY filled_at, trade_id", position_id
        )
        return [_record(FillRecord, r) for r in rows]

    async def upsert_wave(self, rec: WaveRecord) -> None:
        """Insert or update a wave row."""
        sql, args = self._upsert_sql("waves", "id", rec.model_dump(), by_revision=False)
        await self.pool.execute(sql, *args)

    async def insert_signal(self, rec: SignalRecord) -> bool:
        """Store a signal once; returns False when it is already stored."""
        return bool(await self.store_signals([rec]))

    async def store_signals(
        self, records: Sequence[SignalRecord], *, commit_after: Awaitable[object] | None = None
    ) -> set[str]:
        """Store a batch of signal rows and their events in one transaction; the ids new now.

        With `commit_after`, the rows are written at once but committed only once it
        is done (the batch before, committed): batches are written side by side and
        committed in order. If it fails, nothing is stored and its error is raised.
        The caller keeps the batches' ids disjoint (a row waiting on a row the other
        transaction holds would wait for ever).

        Each new row's events (`domain.signal_events.events_of_record`: received and
        validated, or rejected) are written in the same statement, built by
        PostgreSQL from the row: a row is never stored without its events, and the
        ingest does no per-event work. A valid signal already stored (same service
        and id) is not stored again, gets no second events, and is not in the
        answer: the caller acts only on what is new. A batch of at least
        `_COPY_MIN_ROWS` rows is sent by binary COPY into a session-local temporary
        table (far cheaper per row than array parameters, dearer per call); a
        smaller one is one statement with array parameters.
        """
        unique: dict[str, SignalRecord] = {}
        for rec in records:
            unique.setdefault(rec.id, rec)
        if not unique:
            return set()
        rows = [
            (
                r.id,
                r.service,
                r.received_at,
                r.raw,
                r.signal_id,
                r.exchange,
                r.symbol,
                r.side,
                r.action,
                r.signal_at,
                r.wave_id,
                r.score_week,
                r.score_month,
                r.status,
                r.reason,
                *signal_event_ids(r),
            )
            for r in unique.values()
        ]
        # A small batch: one statement with array parameters (its own transaction
        # unless its commit must wait).
        arrays = (
            (*_SIGNAL_EVENT_ARGS, *(list(column) for column in zip(*rows, strict=True)))
            if len(rows) < _COPY_MIN_ROWS
            else None
        )
        if arrays is not None and commit_after is None:
            stored = await self.pool.fetch(_SIGNALS_WITH_EVENTS_UNNEST_SQL, *arrays)
            return {r[0] for r in stored}
        async with self.transaction() as conn:
            if arrays is not None:
                stored = await conn.fetch(_SIGNALS_WITH_EVENTS_UNNEST_SQL, *arrays)
            else:
                await conn.execute(_SIGNAL_ROWS_IN_SQL)
                await conn.copy_records_to_table(
                    "posguard_signal_rows_in", records=rows, columns=_SIGNAL_ROW_IN_COLUMNS
                )
                stored = await conn.fetch(_SIGNALS_WITH_EVENTS_COPY_SQL, *_SIGNAL_EVENT_ARGS)
            if commit_after is not None:
                await commit_after
        return {r[0] for r in stored}

    async def append_signal_events(self, events: Sequence[Event]) -> int:
        """Append the events of stored signal rows again (recovery); how many were new.

        Only `SIGNAL_RECEIVED`, `SIGNAL_VALIDATED` and `SIGNAL_REJECTED` events built
        from their rows (`events_of_record`) are accepted: their id and time both
        derive from the row, so the log's key alone makes a repeat a no-op and no
        `event_ids` claim is made (see `_SIGNAL_EVENTS_FROM_TEMP_SQL`); anything else
        raises ValueError. A batch of at least `_COPY_MIN_ROWS` events is sent by
        binary COPY (payloads encoded once, as JSON text) into a session-local
        temporary table and inserted with one statement; a smaller one is one
        statement with array parameters.
        """
        unique: dict[str, Event] = {}
        for e in events:
            unique.setdefault(e.event_id, e)
        if not unique:
            return 0
        wrong = {e.type for e in unique.values()} - SIGNAL_ROW_EVENTS
        if wrong:
            raise ValueError(f"not signal-row events: {sorted(t.value for t in wrong)}")
        encode = _ENCODE
        rows = [
            (
                e.event_id,
                e.occurred_at,
                e.type.value,
                e.severity.value,
                e.correlation_id,
                e.position_id,
                e.account,
                e.exchange,
                e.symbol,
                e.order_id,
                encode(e.payload),
                e.error_message,
            )
            for e in unique.values()
        ]
        if len(rows) < _COPY_MIN_ROWS:
            columns = list(zip(*rows, strict=True))
            status = await self.pool.execute(_SIGNAL_EVENTS_UNNEST_SQL, *columns)
            return int(status.rsplit(" ", 1)[1])
        async with self.transaction() as conn:
            await conn.execute(_EVENTS_IN_SQL)
            await conn.copy_records_to_table(
                "posguard_events_in", records=rows, columns=_EVENT_COLUMNS
            )
            status = await conn.execute(_SIGNAL_EVENTS_FROM_TEMP_SQL)
        return int(status.rsplit(" ", 1)[1])

    async def last_signal_id(self, service: str) -> str | None:
        """The id of the service's last valid signal stored (where a resume starts).

        The last received; among signals of one message, the latest by the service's
        time, then the highest id (integers compare as numbers).
        """
        value = await self.pool.fetchval(
            """SELECT signal_id FROM signals
               WHERE service = $1 AND status <> 'rejected' AND signal_id IS NOT NULL
               ORDER BY received_at DESC, signal_at DESC NULLS LAST,
                        length(signal_id) DESC, signal_id DESC
               LIMIT 1""",
            service,
        )
        return None if value is None else str(value)

    async def signals(
        self, service: str, *, limit: int = 100, received_after: datetime | None = None
    ) -> list[SignalRecord]:
        """The service's latest signal rows (received after `received_after`), newest first."""
        rows = await self.pool.fetch(
            """SELECT * FROM signals
               WHERE service = $1 AND ($3::timestamptz IS NULL OR received_at > $3)
               ORDER BY received_at DESC, id LIMIT $2""",
            service,
            limit,
            received_after,
        )
        return [
            SignalRecord.model_validate(
                {k: v for k, v in dict(r).items() if k in SignalRecord.model_fields}
            )
            for r in rows
        ]

    # --- order journal ------------------------------------------------------------------

    async def journal_order(self, entry: JournalEntry) -> JournalEntry:
        """Record an order before it is sent; returns the row that is there.

        Inserts `entry` unless its client id is journaled already, and returns
        the stored row either way: `entry` itself (with `recorded_at`) when it is
        new, else the earlier row (`earlier` set), whose intent the caller compares
        with its own (`JournalEntry.same_intent`). A concurrent insert of the same id is
        waited for by PostgreSQL, so the row returned is always the committed one.
        """
        data = entry.model_dump(exclude={"recorded_at"}, mode="python")
        data["kind"] = entry.kind.value
        data["side"] = entry.side.value
        cols = list(data)
        placeholders = ", ".join(f"${i}" for i in range(1, len(cols) + 1))
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(
                f"INSERT INTO order_journal ({', '.join(cols)}) VALUES ({placeholders}) "
                "ON CONFLICT (client_order_id) DO NOTHING RETURNING *",
                *[data[c] for c in cols],
            )
            earlier = row is None
            if earlier:
                row = await conn.fetchrow(
                    "SELECT * FROM order_journal WHERE client_order_id = $1",
                    entry.client_order_id,
                )
        if row is None:  # only if a row were deleted in between; journal rows never are
            raise RuntimeError(f"order journal lost {entry.client_order_id!r}")
        return JournalEntry.model_validate({**dict(row), "earlier": earlier})

    async def journaled_order(self, client_order_id: str) -> JournalEntry | None:
        """The journal row of one client order id, or None."""
        row = await self.pool.fetchrow(
            "SELECT * FROM order_journal WHERE client_order_id = $1", client_order_id
        )
        return None if row is None else JournalEntry.model_validate(dict(row))

    async def journaled_orders(
        self,
        *,
        position_id: str | None = None,
        account: str | None = None,
        exchange: str | None = None,
        symbol: str | None = None,
    ) -> list[JournalEntry]:
        """Journal rows of one position, or of an account/exchange/symbol, oldest first."""
        rows = await self.pool.fetch(
            """SELECT * FROM order_journal
               WHERE ($1::text IS NULL OR position_id = $1)
                 AND ($2::text IS NULL OR account = $2)
                 AND ($3::text IS NULL OR exchange = $3)
                 AND ($4::text IS NULL OR symbol = $4)
               ORDER BY recorded_at, client_order_id""",
            position_id,
            account,
            exchange,
            symbol,
        )
        return [JournalEntry.model_validate(dict(r)) for r in rows]


_R = TypeVar("_R", PositionRecord, OrderRecord, FillRecord)


def _committed_later(events: list[Event], alerts: list[AlertRecord]) -> None:
    """Hold new rows for counting until their transaction commits; outside one
    (autocommit) they are written already."""
    committing = _COMMITTING.get()
    if committing is None:
        count_events(events)
        count_alerts(alerts)
    else:
        committing.events.extend(events)
        committing.alerts.extend(alerts)


def _record(cls: type[_R], row: Any) -> _R:
    fields = cls.model_fields
    return cls.model_validate({k: v for k, v in dict(row).items() if k in fields})
