"""A stop sent while the order journal cannot be written still ends up journaled
under its position (docs/safety.md, "Protection beats record-first in one case
only"), on the real dev server, PostgreSQL and the paper exchange.

Found by CI's chaos run: PostgreSQL was down while a filled entry's stop was sent;
the stop went out unjournaled (protection first) and, before this, no journal row
ever named it: an order of ours on the exchange that the journal did not trace to its
workflow (rule 3).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from activities.store.repository import Store
from domain.position import PositionState
from domain.types import Side
from tests.workflows.harness import Stack, eventually

# The journal refuses stops while `journal_refusal` holds a row: the database "down"
# for the stop's journal write alone, so the test decides when it comes back.
REFUSE = """
CREATE TABLE IF NOT EXISTS journal_refusal (why text);
CREATE OR REPLACE FUNCTION refuse_stop_journal() RETURNS trigger AS $$
BEGIN
    IF NEW.kind = 'stop' AND EXISTS (SELECT 1 FROM journal_refusal) THEN
        RAISE EXCEPTION 'journal down (test)';
    END IF;
    RETURN NEW;
END $$ LANGUAGE plpgsql;
CREATE TRIGGER refuse_stop_journal BEFORE INSERT ON order_journal
    FOR EACH ROW EXECUTE FUNCTION refuse_stop_journal();
"""
UNDO = """
DROP TRIGGER IF EXISTS refuse_stop_journal ON order_journal;
DROP FUNCTION IF EXISTS refuse_stop_journal();
DROP TABLE IF EXISTS journal_refusal;
"""


async def test_a_stop_sent_unjournaled_is_journaled_once_its_record_is_written(
    stack: Stack, store: Store
) -> None:
    """The entry fills; the stop's journal write fails for longer than the placement
    waits for it (1 s), so the stop is sent unjournaled; once the database takes
    writes again, the workflow's record of the stop journals it, naming its position
    and workflow, with the intent it was sent with."""
    symbol = "XRPUSDT"
    await store.pool.execute(UNDO + REFUSE)
    try:
        await store.pool.execute("INSERT INTO journal_refusal VALUES ('down')")
        handle = await stack.open(stack.on(symbol, Side.LONG))
        stops: list[dict[str, Any]] = []

        async def stop_sent() -> bool:
            stops[:] = stack.open_stops(symbol)
            return len(stops) == 1

        assert await eventually(stop_sent)
        cid = stops[0]["clientAlgoId"]
        assert await store.journaled_order(cid) is None  # sent unjournaled
        await store.pool.execute("DELETE FROM journal_refusal")
        view = await stack.wait_state(handle, PositionState.ACTIVE)

        async def journaled() -> bool:
            return await store.journaled_order(cid) is not None

        assert await eventually(journaled)
        entry = await store.journaled_order(cid)
        assert entry is not None
        assert (entry.position_id, entry.workflow_id) == (view.position_id, handle.id)
        assert entry.kind.value == "stop" and entry.symbol == symbol
        assert entry.quantity == abs(stack.position_amt(symbol))
        assert entry.trigger_price == Decimal(stops[0]["triggerPrice"])
        assert len(stack.open_stops(symbol)) == 1  # sent once
    finally:
        await store.pool.execute(UNDO)
    await stack.close(handle)
