"""The store against a real PostgreSQL: schema, idempotency, exact decimals, integrity."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import asyncpg
import pytest

from activities.store.migrate import apply_migrations, load_migrations
from activities.store.repository import Store, branch_mark
from domain.events import (
    AlertSent,
    CriticalError,
    EventType,
    OrderFilled,
    PositionClosed,
    StopMoved,
    event_id,
    make_event,
)
from domain.records import AlertRecord, FillRecord, OrderRecord, PositionRecord, StoreBatch
from domain.types import Severity

T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
EIGHTEEN = Decimal("0.123456789012345678")
BIG = Decimal("98765432109876.123456789012345678")


def position(
    pid: str, *, revision: int = 1, status: str = "active", **kw: object
) -> PositionRecord:
    data: dict[str, object] = {
        "id": pid,
        "workflow_id": f"wf-{pid}",
        "account": "paper",
        "exchange": "binanceusdm",
        "symbol": kw.pop("symbol", f"S{pid.upper()}USDT"),
        "side": "long",
        "status": status,
        "revision": revision,
        "quantity": EIGHTEEN,
        "entry_price": BIG,
        **kw,
    }
    return PositionRecord.model_validate(data)


async def schema_snapshot(store: Store) -> list[tuple[object, ...]]:
    rows = await store.pool.fetch(
        """SELECT table_name, column_name, data_type, is_nullable
           FROM information_schema.columns WHERE table_schema = 'public'
           ORDER BY table_name, column_name"""
    )
    return [tuple(r) for r in rows]


async def test_migrations_apply_twice_without_change(store: Store) -> None:
    before = await schema_snapshot(store)
    assert await store.migrate() == []
    async with store.pool.acquire() as conn:
        assert await apply_migrations(conn) == []
    assert await schema_snapshot(store) == before
    versions = await store.pool.fetch("SELECT version FROM schema_migrations ORDER BY version")
    assert [r["version"] for r in versions] == [m.version for m in load_migrations()]


async def test_no_float_column_anywhere(store: Store) -> None:
    floats = await store.pool.fetch(
        """SELECT table_name, column_name FROM information_schema.columns
           WHERE table_schema = 'public' AND data_type IN ('real', 'double precision')"""
    )
    assert floats == []
    money = await store.pool.fetch(
        """SELECT column_name, data_type FROM information_schema.columns
           WHERE table_schema = 'public' AND table_name = 'positions'
             AND column_name IN ('quantity', 'entry_price', 'stop_price', 'realized_pnl', 'fees')"""
    )
    assert {r["data_type"] for r in money} == {"numeric"}


async def test_decimal_with_18_places_round_trips_exactly(store: Store) -> None:
    await store.upsert_position(position("dec-1", stop_price=Decimal("1e-18")))
    got = await store.get_position("dec-1")
    assert got is not None
    assert got.quantity == EIGHTEEN and str(got.quantity) == str(EIGHTEEN)
    assert got.entry_price == BIG
    assert got.stop_price == Decimal("0.000000000000000001")


async def test_same_event_id_twice_stores_one_row(store: Store) -> None:
    payload = OrderFilled(
        client_order_id="c1", exchange_order_id="1", filled_quantity=EIGHTEEN, average_price=BIG
    )
    eid = event_id("wf-events/run1", 7)
    first = make_event(
        EventType.ENTRY_ORDER_FILLED, payload, event_id=eid, occurred_at=T0, position_id="p-ev"
    )
    # A retry carries the same id; even a different timestamp must not add a row.
    retry = first.model_copy(update={"occurred_at": T0 + timedelta(days=40)})
    assert await store.append_event(first) is True
    assert await store.append_event(first) is False
    assert await store.append_event(retry) is False
    rows = await store.pool.fetch("SELECT * FROM events WHERE event_id = $1", eid)
    assert len(rows) == 1
    stored = (await store.events(position_id="p-ev"))[0]
    assert stored.payload["filled_quantity"] == str(EIGHTEEN)
    assert Decimal(stored.payload["average_price"]) == BIG


async def test_a_reset_branchs_other_fact_under_a_taken_id_is_kept_under_its_mark(
    store: Store,
) -> None:
    """A run reset to an earlier point numbers its events again from there: a write of
    the new branch whose event id the dropped branch used for another fact keeps both
    (the new one under the id and the branch's mark), and a retry adds nothing; the
    same fact again (a retried or re-run write) stays one row."""
    pid = "p-reset"
    await store.apply(StoreBatch(position=position(pid)))
    eid = event_id(f"wf-{pid}/run1", 9)
    moved = make_event(
        EventType.TRAILING_STOP_MOVED,
        StopMoved(
            old_stop=Decimal(147),
            new_stop=Decimal("151.47"),
            reason="activated",
            client_order_id="mv-2",
        ),
        event_id=eid,
        occurred_at=T0,
        position_id=pid,
    )
    assert await store.apply(StoreBatch(events=[moved]), "old-run") == 1
    triggered = make_event(
        EventType.STOP_TRIGGERED,
        OrderFilled(
            client_order_id="mv-2",
            exchange_order_id="9",
            filled_quantity=Decimal(8),
            average_price=Decimal("149.24"),
        ),
        event_id=eid,
        occurred_at=T0 + timedelta(minutes=3),
        position_id=pid,
    )
    again = moved.model_copy(update={"occurred_at": T0 + timedelta(minutes=3)})
    batch = StoreBatch(events=[triggered])
    assert await store.apply(batch, "new-run") == 1
    assert await store.apply(batch, "new-run") == 0  # its retry
    assert await store.apply(StoreBatch(events=[again]), "new-run") == 0  # the same fact
    assert await store.apply(StoreBatch(events=[triggered])) == 0  # no branch: as before
    stored = await store.events(position_id=pid)
    assert sorted((e.event_id, e.type.value) for e in stored) == [
        (eid, "trailing_stop_moved"),
        (f"{eid}~{branch_mark('new-run')}", "stop_triggered"),
    ]


async def test_foreign_key_violation_is_refused(store: Store) -> None:
    orphan = OrderRecord(
        client_order_id="orphan-1",
        position_id="no-such-position",
        account="paper",
        exchange="binanceusdm",
        symbol="BTCUSDT",
        kind="stop",
        side="sell",
        order_type="stop_market",
        status="open",
        quantity=Decimal(1),
        revision=1,
    )
    with pytest.raises(asyncpg.ForeignKeyViolationError):
        await store.upsert_order(orphan)


async def test_older_revision_never_overwrites_newer(store: Store) -> None:
    await store.upsert_position(position("rev-1", revision=5, stop_price=Decimal(100)))
    await store.upsert_position(position("rev-1", revision=4, stop_price=Decimal(90)))
    got = await store.get_position("rev-1")
    assert got is not None and got.stop_price == Decimal(100) and got.revision == 5


async def test_updated_at_is_kept_by_trigger(store: Store) -> None:
    await store.upsert_position(position("touch-1", revision=1, symbol="ETHUSDT"))
    before = await store.pool.fetchval("SELECT updated_at FROM positions WHERE id = 'touch-1'")
    await store.upsert_position(position("touch-1", revision=2, symbol="ETHUSDT"))
    after = await store.pool.fetchval("SELECT updated_at FROM positions WHERE id = 'touch-1'")
    assert after > before


async def test_one_live_position_per_account_exchange_symbol_side(store: Store) -> None:
    await store.upsert_position(position("live-1", symbol="SOLUSDT"))
    with pytest.raises(asyncpg.UniqueViolationError):
        await store.upsert_position(position("live-2", symbol="SOLUSDT"))
    # Once closed, the same key may open again.
    await store.upsert_position(position("live-1", revision=2, status="closed", symbol="SOLUSDT"))
    await store.upsert_position(position("live-2", symbol="SOLUSDT"))


async def test_batch_is_atomic(store: Store) -> None:
    good = position("batch-1", symbol="XRPUSDT")
    closed = make_event(
        EventType.POSITION_CLOSED,
        PositionClosed(
            reason="stop", exit_price=BIG, quantity=EIGHTEEN, realized_pnl=EIGHTEEN, fees=EIGHTEEN
        ),
        event_id="batch-1/000001",
        occurred_at=T0,
        position_id="batch-1",
    )
    bad_fill = FillRecord(
        exchange="binanceusdm",
        trade_id="t-1",
        client_order_id="missing-order",
        position_id="batch-1",
        price=BIG,
        quantity=EIGHTEEN,
        filled_at=T0,
    )
    with pytest.raises(asyncpg.ForeignKeyViolationError):
        await store.apply(StoreBatch(events=[closed], position=good, fills=[bad_fill]))
    # Nothing of the failed batch is visible, and its event id is still free.
    assert await store.get_position("batch-1") is None
    assert await store.apply(StoreBatch(events=[closed], position=good)) == 1


async def test_events_land_in_monthly_partitions_and_retention_drops_old(store: Store) -> None:
    now = datetime.now(UTC)
    old = now - timedelta(days=800)
    await store.ensure_event_partitions(old, months_ahead=0)
    created = await store.ensure_event_partitions(now, months_ahead=2)
    assert created >= 1
    ev_old = make_event(
        EventType.CRITICAL_ERROR,
        CriticalError(error_type="X", message="old"),
        event_id="old-event",
        occurred_at=old,
    )
    await store.append_event(ev_old)
    part = await store.pool.fetchval(
        "SELECT tableoid::regclass::text FROM events WHERE event_id = 'old-event'"
    )
    assert part == f"events_{old:%Y_%m}"
    assert ev_old.severity is Severity.CRITICAL
    dropped = await store.apply_retention(timedelta(days=365))
    assert dropped >= 1
    assert (
        await store.pool.fetchval("SELECT count(*) FROM events WHERE event_id = 'old-event'") == 0
    )
    current = await store.pool.fetchval(
        "SELECT count(*) FROM pg_class WHERE relname = $1", f"events_{now:%Y_%m}"
    )
    assert current == 1


async def test_indexes_cover_the_queries(store: Store) -> None:
    names = {
        r["indexname"]
        for r in await store.pool.fetch(
            "SELECT indexname FROM pg_indexes WHERE schemaname='public'"
        )
    }
    for expected in (
        "positions_status_idx",
        "positions_exchange_symbol_status_idx",
        "events_position_idx",
        "events_symbol_idx",
        "events_type_idx",
        "events_severity_idx",
        "events_occurred_idx",
    ):
        assert expected in names


async def test_a_terminated_lifecycle_never_blocks_the_next_one(store: Store) -> None:
    # A workflow terminated by hand leaves its row live; the next lifecycle of the
    # same workflow id supersedes it instead of failing every write.
    stale = position("term-1", symbol="TERMUSDT").model_copy(update={"workflow_id": "wf-term"})
    await store.upsert_position(stale)
    fresh = position("term-2", symbol="TERMUSDT").model_copy(update={"workflow_id": "wf-term"})
    await store.upsert_position(fresh)
    old = await store.get_position("term-1")
    assert old is not None and old.status == "closed"
    assert old.exit_reason is not None and old.exit_reason.startswith("superseded")
    new = await store.get_position("term-2")
    assert new is not None and new.status == "active"


async def test_exchange_ids_repeat_across_symbols_and_nothing_is_lost(store: Store) -> None:
    """Binance numbers orders and trades per symbol: the same numbers on two symbols
    are two orders and two fills, and a fill written twice is still one row."""
    for sym in ("AAAUSDT", "BBBUSDT"):
        pid = f"ids-{sym}"
        order = OrderRecord(
            client_order_id=f"pg-{sym.lower()}-sl-1",
            position_id=pid,
            account="paper",
            exchange="binanceusdm",
            symbol=sym,
            kind="stop",
            side="sell",
            order_type="stop_market",
            status="filled",
            quantity=EIGHTEEN,
            revision=1,
            exchange_order_id="4000000000",
        )
        fill = FillRecord(
            exchange="binanceusdm",
            trade_id="77",
            client_order_id=order.client_order_id,
            position_id=pid,
            price=BIG,
            quantity=EIGHTEEN,
            filled_at=T0,
        )
        batch = StoreBatch(position=position(pid, symbol=sym), orders=[order], fills=[fill])
        await store.apply(batch)
        await store.apply(batch)  # a retried write
        assert [f.trade_id for f in await store.fills(pid)] == ["77"]
    count = await store.pool.fetchval(
        "SELECT count(*) FROM orders WHERE exchange_order_id = '4000000000' "
        "AND symbol IN ('AAAUSDT', 'BBBUSDT')"
    )
    assert count == 2


async def test_a_reset_branchs_alert_under_a_taken_id_is_kept_with_its_event(
    store: Store,
) -> None:
    """The new branch's alert, numbered as the dropped branch numbered another alert,
    gets its row under its event's marked id (before, the row was dropped); the
    dropped branch's row stays."""
    pid = "p-reset-alert"
    await store.apply(StoreBatch(position=position(pid)))
    eid = event_id(f"wf-{pid}/run1", 4)

    def raised(title: str, minutes: int) -> StoreBatch:
        sent = make_event(
            EventType.ALERT_SENT,
            AlertSent(channel="log", title=title, body="why"),
            event_id=eid,
            occurred_at=T0 + timedelta(minutes=minutes),
            severity=Severity.WARNING,
            position_id=pid,
        )
        row = AlertRecord(
            event_id=eid, severity=Severity.WARNING, title=title, body="why", position_id=pid
        )
        return StoreBatch(events=[sent], alerts=[row])

    assert await store.apply(raised("exchange call failed", 0), "old-run") == 1
    batch = raised("take-profit not placed", 1)
    assert await store.apply(batch, "new-run") == 1
    assert await store.apply(batch, "new-run") == 0  # its retry
    rows = await store.pool.fetch(
        "SELECT event_id, title FROM alerts WHERE position_id = $1 ORDER BY event_id", pid
    )
    assert [(r["event_id"], r["title"]) for r in rows] == [
        (eid, "exchange call failed"),
        (f"{eid}~{branch_mark('new-run')}", "take-profit not placed"),
    ]
