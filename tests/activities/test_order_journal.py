"""The order journal in PostgreSQL: one row per client id, the first intent wins."""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal

import asyncpg

from activities.store.repository import Store
from domain.journal import JournalEntry, journal_entry
from domain.orders import OrderKind, entry_intent, stop_intent
from domain.records import OrderRecord, PositionRecord, StoreBatch
from domain.types import OrderSide, Side


def _cid() -> str:
    return f"j{uuid.uuid4().hex[:20]}"


def _stop(
    cid: str, qty: str = "0.5", price: str = "95.5", position: str = "wf-1/run-1"
) -> JournalEntry:
    return journal_entry(
        stop_intent(cid, "SOLUSDT", Side.LONG, Decimal(qty), Decimal(price)),
        position_id=position,
        workflow_id=position.split("/")[0],
        account="acc",
        exchange="binanceusdm",
    )


async def test_journal_inserts_and_returns_the_row(store: Store) -> None:
    entry = _stop(_cid())
    stored = await store.journal_order(entry)
    assert stored.recorded_at is not None and not stored.earlier
    assert stored.same_intent(entry)
    assert stored.model_dump(exclude={"recorded_at"}) == entry.model_dump(exclude={"recorded_at"})
    assert stored.kind is OrderKind.STOP and stored.side is OrderSide.SELL
    assert stored.trigger_price == Decimal("95.5") and stored.reduce_only
    assert await store.journaled_order(entry.client_order_id) == stored


async def test_the_first_intent_stays(store: Store) -> None:
    cid = _cid()
    first = await store.journal_order(_stop(cid))
    second = await store.journal_order(_stop(cid, qty="0.7", position="wf-2/run-9"))
    # the earlier row comes back, nothing overwritten, and says it was there before
    assert not first.earlier and second.earlier
    assert second.model_copy(update={"earlier": False}) == first
    assert not second.same_intent(_stop(cid, qty="0.7"))
    assert second.same_intent(_stop(cid, qty="0.50"))  # numbers compare by value


async def test_concurrent_journaling_of_one_id_agrees(store: Store) -> None:
    cid = _cid()
    entries = [_stop(cid, qty=f"0.{i + 1}") for i in range(8)]
    rows = await asyncio.gather(*(store.journal_order(e) for e in entries))
    assert len({r.quantity for r in rows}) == 1
    assert len(await store.journaled_orders(position_id="wf-1/run-1")) >= 1


async def test_entry_without_trigger_and_lookups(store: Store) -> None:
    position = f"wf-{uuid.uuid4().hex[:6]}/run-1"
    entry = journal_entry(
        entry_intent(_cid(), "ETHUSDT", Side.SHORT, Decimal("0.25")),
        position_id=position,
        workflow_id=position.split("/")[0],
        account="acc2",
        exchange="bybit",
    )
    stop = _stop(_cid(), position=position)
    await store.journal_order(entry)
    await store.journal_order(stop)
    rows = await store.journaled_orders(position_id=position)
    assert [r.client_order_id for r in rows] == [entry.client_order_id, stop.client_order_id]
    assert rows[0].trigger_price is None and rows[0].side is OrderSide.SELL
    assert not rows[0].reduce_only and not rows[0].is_conditional
    by_symbol = await store.journaled_orders(account="acc2", exchange="bybit", symbol="ETHUSDT")
    assert entry.client_order_id in {r.client_order_id for r in by_symbol}
    assert await store.journaled_order("no-such-id") is None


async def test_details_round_trip() -> None:
    entry = _stop(_cid())
    details = entry.details()
    assert all(isinstance(v, str) for v in details.values())
    assert JournalEntry.from_details(details) == entry


async def test_table_has_no_foreign_key_and_the_indexes(store: Store) -> None:
    fks = await store.pool.fetchval(
        "SELECT count(*) FROM pg_constraint WHERE conrelid = 'order_journal'::regclass "
        "AND contype = 'f'"
    )
    assert fks == 0
    indexes = [
        r["indexdef"].split(" USING btree ")[1]
        for r in await store.pool.fetch(
            "SELECT indexdef FROM pg_indexes WHERE tablename = 'order_journal'"
        )
    ]
    for columns in ("(client_order_id", "(account, exchange, symbol", "(position_id"):
        assert any(i.startswith(columns) for i in indexes), (columns, indexes)
    # a journaled order needs no position row (written before the position's own row)
    assert await store.get_position("wf-1/run-1") is None


async def test_quantity_must_be_positive(store: Store) -> None:
    try:
        await store.pool.execute(
            "INSERT INTO order_journal (client_order_id, position_id, workflow_id, account, "
            "exchange, symbol, kind, side, quantity, reduce_only) "
            "VALUES ('x', 'p', 'w', 'a', 'e', 's', 'entry', 'buy', 0, false)"
        )
    except asyncpg.CheckViolationError:
        return
    raise AssertionError("a zero quantity was journaled")


def _recorded(cid: str, kind: str, position: str, qty: str = "0.5") -> OrderRecord:
    return OrderRecord(
        client_order_id=cid,
        position_id=position,
        account="acc",
        exchange="binanceusdm",
        symbol="SOLUSDT",
        kind=kind,  # type: ignore[arg-type]
        side="sell",
        order_type="stop_market",
        status="open",
        quantity=Decimal(qty),
        revision=1,
        trigger_price=Decimal("95.5"),
        reduce_only=True,
    )


async def test_a_recorded_order_the_journal_lacks_is_journaled_by_its_batch(
    store: Store,
) -> None:
    """A stop sent unjournaled (database down) is journaled by its workflow's record of
    it; a row already there is never changed, and orders posguard did not send
    (liquidation, outside) are not journaled."""
    position = f"wf-{_cid()}/run-1"
    unjournaled, journaled, liquidation = _cid(), _cid(), _cid()
    first = await store.journal_order(_stop(journaled, qty="0.7", position=position))
    row = PositionRecord(
        id=position,
        workflow_id=position.split("/")[0],
        account="acc",
        exchange="binanceusdm",
        symbol="SOLUSDT",
        side="long",
        status="active",
        revision=1,
        quantity=Decimal("0.5"),
    )
    orders = [
        _recorded(unjournaled, "stop", position),
        _recorded(journaled, "stop", position),
        _recorded(liquidation, "liquidation", position),
    ]
    await store.apply(StoreBatch(position=row, orders=orders))
    entry = await store.journaled_order(unjournaled)
    assert entry is not None
    assert (entry.position_id, entry.workflow_id) == (position, row.workflow_id)
    assert (entry.kind, entry.side, entry.quantity) == (
        OrderKind.STOP,
        OrderSide.SELL,
        Decimal("0.5"),
    )
    assert entry.trigger_price == Decimal("95.5") and entry.reduce_only
    assert await store.journaled_order(journaled) == first.model_copy(update={"earlier": False})
    assert await store.journaled_order(liquidation) is None
