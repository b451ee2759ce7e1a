"""The operator's rows: stoplist, account pauses, and the read side of signals and waves.

Functions over a `Store` (its asyncpg pool), used by the `posguard` commands
(workers/signal_commands.py) and by the wave workflow's activities, which read
`stoplist(store, account)` and `account_pauses(store, account)` before a selection.

Every change an operator makes (a pause, a resume, a stoplist entry added or
removed) is written in one transaction with its event, so the events table holds
the record of who changed what and when; an operator's pause also raises an alert.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from domain.events import (
    EntriesPaused,
    EntriesResumed,
    EventType,
    Payload,
    StoplistChanged,
    make_event,
)
from domain.records import (
    AccountPause,
    AlertRecord,
    DecisionRecord,
    Record,
    SignalRecord,
    StoplistEntry,
    WaveRecord,
)
from domain.symbols import canonical
from domain.types import Severity
from domain.waves import FilterReason

if TYPE_CHECKING:  # asyncpg stays out of importers (the wave workflow's activities)
    import asyncpg

    from activities.store.repository import Store

EVERY_ACCOUNT = "*"
"""The stoplist's account for a symbol no account may open."""

SignalDecisions = tuple[SignalRecord, list[DecisionRecord]]
"""A signal row with the decisions of the accounts that have decided it (maybe none)."""

WaveEntry = tuple[SignalRecord, DecisionRecord | None]
"""A signal of a wave with that wave's decision about it (None: not decided yet)."""

_R = TypeVar("_R", bound=Record)


def _row(cls: type[_R], row: Mapping[str, Any], prefix: str = "") -> _R:
    """The model of a database row; `prefix` selects (and strips) aliased columns."""
    return cls.model_validate(
        {name: row[prefix + name] for name in cls.model_fields if prefix + name in row}
    )


def _event_id(kind: str, account: str) -> str:
    # An operator's command happens once: a random id is its identity (a workflow,
    # which may replay, derives its ids from its history instead).
    return f"operator/{kind}/{account}/{uuid.uuid4().hex}"


async def _record(
    store: Store,
    conn: asyncpg.Connection,
    event_type: EventType,
    payload: Payload,
    *,
    at: datetime,
    account: str,
    symbol: str | None = None,
) -> str:
    """Append the event of an operator's change in `conn`'s transaction; its id."""
    event = make_event(
        event_type,
        payload,
        event_id=_event_id(event_type.value, account),
        occurred_at=at,
        account=account,
        symbol=symbol,
    )
    await store._append_events(conn, [event])
    return event.event_id


# --- stoplist ------------------------------------------------------------------------------


async def add_to_stoplist(store: Store, entry: StoplistEntry) -> bool:
    """Put `entry.symbol` on the stoplist of `entry.account` (``*``: every account).

    The symbol is stored canonical (``btc/usdt:usdt`` → ``BTCUSDT``; `InvalidSymbol`
    if it names no linear perpetual). True when the row is new; False when it was
    there already, in which case only its reason is replaced (an empty reason keeps
    the stored one) and `added_by`/`added_at` stay the first ones. A
    `stoplist_changed` event ("added") is recorded whenever the row changed.
    """
    symbol = canonical(entry.symbol)
    at = datetime.now(UTC)
    async with store.transaction() as conn:
        row = await conn.fetchrow(
            """WITH old AS (SELECT reason FROM stoplist WHERE account = $1 AND symbol = $2)
               INSERT INTO stoplist (account, symbol, reason, added_by, added_at)
               VALUES ($1, $2, $3, $4, $5)
               ON CONFLICT (account, symbol) DO UPDATE
                   SET reason = CASE WHEN EXCLUDED.reason = '' THEN stoplist.reason
                                     ELSE EXCLUDED.reason END
               RETURNING (SELECT reason FROM old) AS old_reason, reason""",
            entry.account,
            symbol,
            entry.reason,
            entry.added_by,
            entry.added_at or at,
        )
        added = row["old_reason"] is None
        if added or row["old_reason"] != row["reason"]:
            await _record(
                store,
                conn,
                EventType.STOPLIST_CHANGED,
                StoplistChanged(
                    account=entry.account,
                    symbol=symbol,
                    change="added",
                    reason=row["reason"],
                    by=entry.added_by,
                ),
                at=at,
                account=entry.account,
                symbol=symbol,
            )
        return added


async def remove_from_stoplist(store: Store, account: str, symbol: str, *, by: str = "") -> bool:
    """Take `symbol` off the stoplist of `account` (``*``: the every-account row only).

    True when a row was removed, recording a `stoplist_changed` event ("removed",
    with the row's reason and `by`); False when there was none (nothing recorded).
    """
    symbol = canonical(symbol)
    at = datetime.now(UTC)
    async with store.transaction() as conn:
        row = await conn.fetchrow(
            "DELETE FROM stoplist WHERE account = $1 AND symbol = $2 RETURNING *",
            account,
            symbol,
        )
        if row is None:
            return False
        removed = _row(StoplistEntry, row)
        await _record(
            store,
            conn,
            EventType.STOPLIST_CHANGED,
            StoplistChanged(
                account=account, symbol=symbol, change="removed", reason=removed.reason, by=by
            ),
            at=at,
            account=account,
            symbol=symbol,
        )
        return True


async def stoplist(store: Store, account: str | None = None) -> list[StoplistEntry]:
    """The stoplist rows that apply to `account`: its own and the ``*`` ones.

    None: every row. Ordered by symbol, then account (``*`` first).
    """
    rows = await store.pool.fetch(
        """SELECT * FROM stoplist
           WHERE $1::text IS NULL OR account = $1 OR account = '*'
           ORDER BY symbol, account""",
        account,
    )
    return [_row(StoplistEntry, r) for r in rows]


# --- account pauses --------------------------------------------------------------------------


async def pause_entries(
    store: Store, account: str, reason: str, detail: str, by: str
) -> AccountPause:
    """Pause new entries of `account` by the operator; returns the stored row.

    Upserts the account's ``operator`` row: a second pause replaces reason,
    detail and `paused_by` and keeps `since` (paused since the first). Each call
    records an `entries_paused` event and a warning alert tied to it, in the
    same transaction. Open positions are not affected.
    """
    at = datetime.now(UTC)
    async with store.transaction() as conn:
        row = await conn.fetchrow(
            """INSERT INTO account_pauses (account, source, reason, detail, paused_by, since)
               VALUES ($1, 'operator', $2, $3, $4, $5)
               ON CONFLICT (account, source) DO UPDATE
                   SET reason = EXCLUDED.reason, detail = EXCLUDED.detail,
                       paused_by = EXCLUDED.paused_by
               RETURNING *""",
            account,
            reason,
            detail,
            by,
            at,
        )
        pause = _row(AccountPause, row)
        event_id = await _record(
            store,
            conn,
            EventType.ENTRIES_PAUSED,
            EntriesPaused(account=account, source="operator", reason=reason, detail=detail, by=by),
            at=at,
            account=account,
        )
        why = f"{reason}: {detail}" if detail else reason
        await store._insert_alert(
            conn,
            AlertRecord(
                event_id=event_id,
                severity=Severity.WARNING,
                title=f"new entries paused on {account}",
                body=f"{why} (by {by}). Open positions stay managed; "
                f"`posguard resume --account {account}` resumes new entries.",
            ),
        )
        return pause


async def resume_entries(store: Store, account: str, by: str) -> list[AccountPause]:
    """Resume new entries of `account`: delete its operator AND its exchange pause.

    An operator's resume overrides an exchange pause; the account's next wave
    checks the exchange again and pauses anew if it still refuses. Returns the
    rows deleted (operator first); when there were any, an `entries_resumed`
    event names their sources. Nothing paused: returns [] and records nothing.
    """
    at = datetime.now(UTC)
    async with store.transaction() as conn:
        rows = await conn.fetch(
            "DELETE FROM account_pauses WHERE account = $1 RETURNING *",
            account,
        )
        cleared = sorted(
            (_row(AccountPause, r) for r in rows), key=lambda p: p.source != "operator"
        )
        if cleared:
            await _record(
                store,
                conn,
                EventType.ENTRIES_RESUMED,
                EntriesResumed(account=account, sources=[p.source for p in cleared], by=by),
                at=at,
                account=account,
            )
        return cleared


async def account_pauses(store: Store, account: str | None = None) -> list[AccountPause]:
    """The pauses of `account` (None: of every account), by account, operator first.

    New entries of an account are paused while it has any row here.
    """
    rows = await store.pool.fetch(
        """SELECT * FROM account_pauses WHERE $1::text IS NULL OR account = $1
           ORDER BY account, source DESC""",
        account,
    )
    return [_row(AccountPause, r) for r in rows]


# --- waves ---------------------------------------------------------------------------------


async def waves(store: Store, account: str | None, limit: int) -> list[WaveRecord]:
    """The latest `limit` waves of `account` (None: of every account), newest period first."""
    rows = await store.pool.fetch(
        """SELECT * FROM waves WHERE $1::text IS NULL OR account = $1
           ORDER BY period_start DESC, id LIMIT $2""",
        account,
        limit,
    )
    return [_row(WaveRecord, r) for r in rows]


async def wave(store: Store, wave_id: str) -> WaveRecord | None:
    """The wave row `wave_id` (``wave/{account}/{period start}``), or None."""
    row = await store.pool.fetchrow("SELECT * FROM waves WHERE id = $1", wave_id)
    return None if row is None else _row(WaveRecord, row)


async def wave_at(store: Store, account: str, period_start: datetime) -> WaveRecord | None:
    """The wave of `account` for the period starting at `period_start`, or None.

    For a wave named by its account and time in another spelling than its id's
    (``Z`` for ``+00:00``, another offset).
    """
    row = await store.pool.fetchrow(
        "SELECT * FROM waves WHERE account = $1 AND period_start = $2 ORDER BY id LIMIT 1",
        account,
        period_start,
    )
    return None if row is None else _row(WaveRecord, row)


_DECISION_COLUMNS = ", ".join(f"d.{c} AS d_{c}" for c in DecisionRecord.model_fields)
_REASON_ORDER = {reason.value: i for i, reason in enumerate(FilterReason)}


def _wave_order(entry: WaveEntry) -> tuple[Any, ...]:
    """Opened by rank; then filtered, grouped by reason in the selection's order
    (``wave_closed`` and unknown reasons after), strongest score first; then the
    undecided in the order received."""
    s, d = entry
    if d is None:
        return (2, 0, "", 0, s.received_at.timestamp(), s.id)
    if d.outcome == "opened":
        return (0, d.rank if d.rank is not None else 1 << 30, "", 0, 0.0, s.id)
    reason = d.reason or ""
    score = -s.score_week if s.score_week is not None and s.score_week.is_finite() else 0
    return (1, _REASON_ORDER.get(reason, len(_REASON_ORDER)), reason, score, 0.0, s.id)


async def wave_decisions(store: Store, wave_id: str) -> list[WaveEntry]:
    """Each signal of the wave `wave_id` with the wave's decision about it.

    The signals the wave decided (by `signal_decisions.wave_id`), and those that
    name the wave (`signals.wave_id`) with no decision yet (None). Order: opened
    by rank (best first), then filtered grouped by reason, then undecided.
    """
    async with store.pool.acquire() as conn:
        decided = await conn.fetch(
            f"""SELECT s.*, {_DECISION_COLUMNS}
                FROM signal_decisions d JOIN signals s ON s.id = d.signal_row_id
                WHERE d.wave_id = $1""",
            wave_id,
        )
        pending = await conn.fetch(
            """SELECT s.* FROM signals s
               WHERE s.wave_id = $1 AND NOT EXISTS (
                   SELECT 1 FROM signal_decisions d
                   WHERE d.signal_row_id = s.id AND d.wave_id = $1)""",
            wave_id,
        )
    entries: list[WaveEntry] = [
        (_row(SignalRecord, r), _row(DecisionRecord, r, prefix="d_")) for r in decided
    ]
    entries += [(_row(SignalRecord, r), None) for r in pending]
    return sorted(entries, key=_wave_order)


# --- signals -------------------------------------------------------------------------------


async def decisions_of(
    store: Store, signal_row_ids: Sequence[str]
) -> dict[str, list[DecisionRecord]]:
    """The decisions made so far about these signal rows, by row id, by account.

    A row id with no decision is absent from the answer.
    """
    if not signal_row_ids:
        return {}
    rows = await store.pool.fetch(
        """SELECT * FROM signal_decisions WHERE signal_row_id = ANY($1::text[])
           ORDER BY signal_row_id, account""",
        list(signal_row_ids),
    )
    found: dict[str, list[DecisionRecord]] = {}
    for r in rows:
        found.setdefault(r["signal_row_id"], []).append(_row(DecisionRecord, r))
    return found


async def _with_decisions(store: Store, rows: Sequence[Any]) -> list[SignalDecisions]:
    signals = [_row(SignalRecord, r) for r in rows]
    decisions = await decisions_of(store, [s.id for s in signals])
    return [(s, decisions.get(s.id, [])) for s in signals]


async def latest_signals(store: Store, service: str | None, limit: int) -> list[SignalDecisions]:
    """The last `limit` signal rows received (of `service`, or of every service),
    each with its decisions, in the order received (oldest first)."""
    rows = await store.pool.fetch(
        """SELECT * FROM (
               SELECT * FROM signals WHERE $1::text IS NULL OR service = $1
               ORDER BY received_at DESC, id DESC LIMIT $2
           ) latest ORDER BY received_at, id""",
        service,
        limit,
    )
    return await _with_decisions(store, rows)


async def signals_after(
    store: Store,
    service: str | None,
    after_received_at: datetime | None,
    after_id: str | None,
    limit: int,
) -> list[SignalDecisions]:
    """Signal rows received after the row (`after_received_at`, `after_id`), at most
    `limit`, in the order received, each with the decisions made about it so far.

    The cursor is the last row a reader has seen (None, None: from the first row);
    rows of one receipt share a time and are ordered by id. `service` None: every
    service.
    """
    rows = await store.pool.fetch(
        """SELECT * FROM signals
           WHERE ($1::text IS NULL OR service = $1)
             AND ($2::timestamptz IS NULL OR (received_at, id) > ($2, $3::text))
           ORDER BY received_at, id LIMIT $4""",
        service,
        after_received_at,
        after_id or "",
        limit,
    )
    return await _with_decisions(store, rows)
