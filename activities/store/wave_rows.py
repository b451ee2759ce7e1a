"""The rows a wave reads and writes: its own row, its decisions, the account it selects for.

Every write is idempotent, so Temporal may retry any of them: a wave row is an
upsert, a decision is written once per (signal, account) (the first write wins),
an event once per id, an alert once per event id.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

import asyncpg

from activities.store.operator_rows import account_pauses, stoplist
from activities.store.repository import Store
from domain.events import EntriesPaused, EntriesResumed, EventType, SignalFiltered, make_event
from domain.records import AlertRecord, DecisionRecord, SignalRecord
from domain.signals import Signal
from domain.types import ExchangeId, Severity, Side
from domain.wave_io import (
    ExchangePauseRequest,
    StoredAccount,
    StoredOpen,
    WaveWrite,
    decision_event_id,
    signal_row_id,
)
from domain.waves import FilterReason

_DECISION_COLUMNS = {
    "signal_row_id": "text",
    "account": "text",
    "wave_id": "text",
    "outcome": "text",
    "reason": "text",
    "detail": "text",
    "rank": "integer",
    "position_workflow_id": "text",
    "decided_at": "timestamptz",
}
assert set(_DECISION_COLUMNS) == set(DecisionRecord.model_fields), "a decision field is not stored"


async def _insert_decisions(
    conn: asyncpg.Connection, decisions: Sequence[DecisionRecord]
) -> set[str]:
    """Insert the decisions not written yet, in one statement; the signal rows now decided."""
    if not decisions:
        return set()
    names = list(_DECISION_COLUMNS)
    arrays = ", ".join(f"${i}::{t}[]" for i, t in enumerate(_DECISION_COLUMNS.values(), start=1))
    # A decision about a signal that was never stored (only a hand-made signal to a
    # wave can be one) is skipped, not retried for ever against the foreign key.
    rows = await conn.fetch(
        f"INSERT INTO signal_decisions ({', '.join(names)}) "
        f"SELECT d.* FROM unnest({arrays}) AS d ({', '.join(names)}) "
        "WHERE EXISTS (SELECT 1 FROM signals s WHERE s.id = d.signal_row_id) "
        "ON CONFLICT (signal_row_id, account) DO NOTHING RETURNING signal_row_id",
        *[[getattr(d, n) for d in decisions] for n in names],
    )
    return {r["signal_row_id"] for r in rows}


async def write_wave(store: Store, write: WaveWrite) -> int:
    """Apply one `WaveWrite` in one transaction; how many decisions were new."""
    async with store.transaction() as conn:
        if write.wave is not None:
            sql, args = Store._upsert_sql("waves", "id", write.wave.model_dump(), by_revision=False)
            await conn.execute(sql, *args)
        new = await _insert_decisions(conn, write.decisions)
        await Store._append_events(conn, write.events)
        for alert in write.alerts:
            await Store._insert_alert(conn, alert)
        return len(new)


async def stored_account(
    store: Store, account: str, exchange: ExchangeId, cooldown: timedelta, now: datetime
) -> StoredAccount:
    """The store's side of an account: open rows, closes within `cooldown`, stoplist, pauses."""
    rows = await store.pool.fetch(
        """SELECT symbol, side, quantity * coalesce(entry_price, 0) AS notional FROM positions
           WHERE account = $1 AND exchange = $2
             AND status NOT IN ('closed', 'rolled_back', 'failed')""",
        account,
        exchange.value,
    )
    closed = await store.pool.fetch(
        """SELECT symbol, max(closed_at) AS closed_at FROM positions
           WHERE account = $1 AND exchange = $2 AND closed_at IS NOT NULL AND closed_at > $3
           GROUP BY symbol""",
        account,
        exchange.value,
        now - cooldown,
    )
    stopped = await stoplist(store, account)
    return StoredAccount(
        open=[
            StoredOpen(symbol=r["symbol"], side=Side(r["side"]), notional=r["notional"])
            for r in rows
        ],
        closed_at={r["symbol"]: r["closed_at"] for r in closed},
        stoplist=frozenset(e.symbol for e in stopped),
        pauses=await account_pauses(store, account),
    )


async def set_exchange_pause(store: Store, req: ExchangePauseRequest) -> bool:
    """Set or clear the exchange's pause of an account; True when it began or ended now.

    A pause that begins is an `entries_paused` event and one alert; one that ends
    is an `entries_resumed` event. The same pause seen again changes nothing.
    """
    async with store.transaction() as conn:
        before = await conn.fetchrow(
            "SELECT reason FROM account_pauses WHERE account = $1 AND source = 'exchange' "
            "FOR UPDATE",
            req.account,
        )
        if req.cause is None:
            if before is None:
                return False
            await conn.execute(
                "DELETE FROM account_pauses WHERE account = $1 AND source = 'exchange'",
                req.account,
            )
            event = make_event(
                EventType.ENTRIES_RESUMED,
                EntriesResumed(account=req.account, sources=["exchange"]),
                event_id=f"{req.wave_id}/entries_resumed",
                occurred_at=req.at,
                account=req.account,
            )
            await Store._append_events(conn, [event])
            return True
        await conn.execute(
            """INSERT INTO account_pauses (account, source, reason, detail, paused_by, since)
               VALUES ($1, 'exchange', $2, $3, $4, $5)
               ON CONFLICT (account, source) DO UPDATE
               SET reason = EXCLUDED.reason, detail = EXCLUDED.detail""",
            req.account,
            req.cause.value,
            req.detail[:1000],
            req.wave_id,
            req.at,
        )
        if before is not None and before["reason"] == req.cause.value:
            return False
        event = make_event(
            EventType.ENTRIES_PAUSED,
            EntriesPaused(
                account=req.account, source="exchange", reason=req.cause.value, detail=req.detail
            ),
            event_id=f"{req.wave_id}/entries_paused/{req.cause.value}",
            occurred_at=req.at,
            account=req.account,
        )
        await Store._append_events(conn, [event])
        await Store._insert_alert(
            conn,
            AlertRecord(
                event_id=event.event_id,
                severity=Severity.WARNING,
                title=f"{req.account}: new entries paused ({req.cause.value})",
                body=f"the exchange said: {req.detail}; open positions stay managed. "
                "Entries resume when a wave reads the account cleanly, or by "
                "`posguard resume`.",
            ),
        )
        return True


async def undecided_signals(
    store: Store,
    account: str,
    services: Sequence[str],
    received_after: datetime,
    received_before: datetime,
    limit: int = 5000,
) -> list[SignalRecord]:
    """Valid signals of `services` received in the window with no decision for `account`.

    What a wave has not decided: the ingest stopped between storing and handing
    on, or the wave closed first. Oldest first.
    """
    rows = await store.pool.fetch(
        """SELECT s.* FROM signals s
           WHERE s.service = ANY($1::text[]) AND s.status <> 'rejected'
             AND s.received_at > $2 AND s.received_at <= $3
             AND NOT EXISTS (SELECT 1 FROM signal_decisions d
                             WHERE d.signal_row_id = s.id AND d.account = $4)
           ORDER BY s.received_at, s.id LIMIT $5""",
        list(services),
        received_after,
        received_before,
        account,
        limit,
    )
    return [
        SignalRecord.model_validate(
            {k: v for k, v in dict(r).items() if k in SignalRecord.model_fields}
        )
        for r in rows
    ]


async def record_late(
    store: Store, account: str, wave_id: str, signals: Sequence[Signal], at: datetime
) -> int:
    """Decide `wave_closed` for signals that reached their wave after it ended.

    Only a signal the wave did not decide gets this decision (and its
    SIGNAL_FILTERED event): the wave's own decision always stands. How many were new.
    """
    detail = f"reached {wave_id} after its selection: not traded late"
    decisions = [
        DecisionRecord(
            signal_row_id=signal_row_id(s),
            account=account,
            wave_id=wave_id,
            outcome="filtered",
            reason=FilterReason.WAVE_CLOSED.value,
            detail=detail,
            decided_at=at,
        )
        for s in signals
    ]
    async with store.transaction() as conn:
        new = await _insert_decisions(conn, decisions)
        events = [
            make_event(
                EventType.SIGNAL_FILTERED,
                SignalFiltered(
                    signal_id=signal_row_id(s),
                    wave_id=wave_id,
                    filter=FilterReason.WAVE_CLOSED.value,
                    reason=detail,
                ),
                event_id=decision_event_id(signal_row_id(s), account, "filtered"),
                occurred_at=at,
                correlation_id=wave_id,
                account=account,
                symbol=s.symbol,
                exchange=s.exchange.value,
            )
            for s in signals
            if signal_row_id(s) in new
        ]
        await Store._append_events(conn, events)
        return len(new)
