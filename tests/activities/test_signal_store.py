"""Signals in PostgreSQL: every message kept, a valid signal once per (service, id).

Real PostgreSQL (migrated store per module); messages parsed by the real parser.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from pydantic import SecretStr

from activities.store import repository
from activities.store.repository import Store
from domain.events import (
    Event,
    EventType,
    SignalReceived,
    SignalRejected,
    SignalValidated,
    WaveDetected,
    make_event,
)
from domain.records import SignalRecord, signal_record
from domain.signal_events import events_of_record, signal_event_id
from domain.signal_wire import Accepted, Rejected, parse_message
from signals_ingest.signal_client import SignalClient, _Batch
from tests.signal_stores import StoreInFront
from tests.waiting import until

NOW = datetime(2026, 12, 2, 4, 0, 5, tzinfo=UTC)


def message(*signals: dict[str, Any]) -> str:
    return json.dumps({"type": "wave", "signals": list(signals)})


def signal(sid: int, symbol: str = "BTCUSDT", **extra: Any) -> dict[str, Any]:
    return {
        "id": sid,
        "pair_symbol": symbol,
        "exchange_name": "binance",
        "score_week": "71.123456789012345678",
        "score_month": 60,
        "recommended_action": "BUY",
        "timestamp": "2026-12-02T04:00:00Z",
        **extra,
    }


async def stored(
    store: Store, raw: str | bytes, service: str, received_at: datetime = NOW
) -> set[str]:
    parsed = parse_message(raw, service=service, received_at=received_at)
    return await store.store_signals([signal_record(p, received_at) for p in parsed])


async def test_a_wave_is_stored_once_and_a_duplicate_is_not_new(store: Store) -> None:
    raw = message(signal(1), signal(2, "ETHUSDT"), signal(3, "SOLUSDT"))
    assert await stored(store, raw, "svc-a") == {"svc-a/1", "svc-a/2", "svc-a/3"}
    assert await stored(store, raw, "svc-a") == set()  # sent again: nothing new
    rows = await store.signals("svc-a")
    assert sorted(r.signal_id or "" for r in rows) == ["1", "2", "3"]
    row = next(r for r in rows if r.signal_id == "1")
    # NUMERIC keeps every digit; the raw text is the message's own.
    assert row.score_week == Decimal("71.123456789012345678")
    assert (row.status, row.side, row.action, row.exchange) == (
        "validated",
        "long",
        "BUY",
        "binanceusdm",
    )
    assert json.loads(row.raw)["pair_symbol"] == "BTCUSDT"


async def test_two_services_may_use_the_same_ids(store: Store) -> None:
    assert await stored(store, message(signal(1)), "svc-b") == {"svc-b/1"}
    assert await stored(store, message(signal(1)), "svc-c") == {"svc-c/1"}


async def test_a_rejected_message_is_kept_with_its_reason_and_its_exact_text(
    store: Store,
) -> None:
    garbage = b'{"id": 9, "pair_symbol": "BTCUSDT", "score_week": NaN \xff'
    first = await stored(store, garbage, "svc-d")
    again = await stored(store, garbage, "svc-d", NOW + timedelta(seconds=1))
    assert len(first) == 1 and len(again) == 1 and first != again  # every receipt a row
    rows = await store.signals("svc-d")
    assert {r.status for r in rows} == {"rejected"} and all(r.reason for r in rows)
    # A valid signal with an id a rejected message carried is still stored.
    assert await stored(store, message(signal(9)), "svc-d") == {"svc-d/9"}


async def test_one_bad_signal_in_a_wave_does_not_keep_the_others_out(store: Store) -> None:
    raw = message(signal(1), signal(2, recommended_action="MAYBE"), signal(3, "ETHUSDT"))
    new = await stored(store, raw, "svc-e")
    assert {"svc-e/1", "svc-e/3"} <= new and len(new) == 3
    rows = {r.signal_id: r for r in await store.signals("svc-e")}
    assert rows["1"].status == rows["3"].status == "validated"
    [rejected] = [r for r in rows.values() if r.status == "rejected"]
    assert "MAYBE" in (rejected.reason or "")


# --- the ingest's fast paths ----------------------------------------------------------------


def client(store: Store, service: str) -> SignalClient:
    return SignalClient(service=service, url="ws://127.0.0.1:1", token=SecretStr("t"), store=store)


def made_events(item: Accepted | Rejected, rec: SignalRecord) -> list[Event]:
    """The events of one item as `make_event` builds them (validated, payload-checked)."""
    context: dict[str, Any] = {
        "occurred_at": rec.received_at,
        "correlation_id": f"signal/{rec.id}",
        "exchange": rec.exchange,
        "symbol": rec.symbol,
    }
    if isinstance(item, Rejected):
        kind = EventType.SIGNAL_REJECTED
        payload = SignalRejected(signal_id=item.signal_id, reason=item.reason)
        return [
            make_event(
                kind,
                payload,
                event_id=signal_event_id(rec.id, kind),
                error_message=item.reason,
                **context,
            )
        ]
    s = item.signal
    received = SignalReceived(
        signal_id=s.signal_id,
        symbol=s.symbol,
        exchange=s.exchange.value,
        raw={"text": item.raw[:2000]},
    )
    validated = SignalValidated(signal_id=s.signal_id)
    return [
        make_event(
            EventType.SIGNAL_RECEIVED,
            received,
            event_id=signal_event_id(rec.id, EventType.SIGNAL_RECEIVED),
            **context,
        ),
        make_event(
            EventType.SIGNAL_VALIDATED,
            validated,
            event_id=signal_event_id(rec.id, EventType.SIGNAL_VALIDATED),
            **context,
        ),
    ]


def test_rows_and_events_built_unvalidated_equal_the_validated_ones() -> None:
    raw = message(signal(1), signal(2, recommended_action="MAYBE"), signal(3, "ETHUSDT"))
    items = parse_message(raw, service="svc-f", received_at=NOW)
    garbage = parse_message(b"\xff not json", service="svc-f", received_at=NOW)
    for item in [*items, *garbage]:
        rec = signal_record(item, NOW)
        assert rec == SignalRecord.model_validate(rec.model_dump())
        assert (
            rec.model_fields_set
            == SignalRecord.model_validate(
                rec.model_dump(include=rec.model_fields_set)
            ).model_fields_set
        )
        built = events_of_record(rec)
        made = made_events(item, rec)
        assert built == made
        assert [e.model_dump(mode="json") for e in built] == [
            e.model_dump(mode="json") for e in made
        ]
        for e in built:
            assert e == Event.model_validate(e.model_dump())


@pytest.mark.parametrize("copy_min_rows", [1, 10_000], ids=["copy", "arrays"])
async def test_bulk_events_are_appended_once_whichever_path_wrote_them(
    store: Store, monkeypatch: pytest.MonkeyPatch, copy_min_rows: int
) -> None:
    monkeypatch.setattr(repository, "_COPY_MIN_ROWS", copy_min_rows)

    def event(n: int) -> Event:
        return make_event(
            EventType.SIGNAL_VALIDATED,
            SignalValidated(signal_id=str(n)),
            event_id=f"bulk-test-{copy_min_rows}/{n}",
            occurred_at=NOW + timedelta(seconds=n),
            correlation_id=f"bulk-test-{copy_min_rows}",
            symbol="BTCUSDT",
        )

    assert await store.append_events([event(0), event(1)]) == 2
    batch = [event(n) for n in range(5)] + [event(3)]  # twice in the batch: once
    assert await store.append_signal_events(batch) == 3  # 0 and 1 are stored already
    assert await store.append_signal_events(batch) == 0
    assert await store.append_events([event(4), event(5)]) == 1
    assert await store.append_signal_events([]) == 0
    stored = await store.events(correlation_id=f"bulk-test-{copy_min_rows}", limit=100)
    assert [e.event_id for e in stored] == [f"bulk-test-{copy_min_rows}/{n}" for n in range(6)]
    assert stored[2] == event(2)  # every field, the JSON payload too, as written


async def test_the_signal_event_path_refuses_any_other_event(store: Store) -> None:
    # Only signal-row events may skip the id claim: their id and time come from
    # their stored row, so the log's own key refuses a repeat.
    other = make_event(
        EventType.WAVE_DETECTED,
        WaveDetected(wave_id="w", deadline=NOW),
        event_id="not-a-signal-event",
        occurred_at=NOW,
    )
    with pytest.raises(ValueError, match="wave_detected"):
        await store.append_signal_events([other])
    assert await store.events(event_type="wave_detected", limit=10) == []


async def test_a_signal_with_the_longest_ids_is_stored_and_recorded(store: Store) -> None:
    service = "s" * 100
    sid = "9" * 200
    c = client(store, service)
    raw = message(signal(int(sid)), signal(1, pair_symbol="NOT A SYMBOL"))
    items = parse_message(raw, service=service, received_at=NOW)
    batch = _Batch()
    batch.add(NOW, items)
    await c._store_batch(batch, None).done
    assert c.stored == 2 and c.rejected == 1
    rec = signal_record(items[0], NOW)
    assert rec.id == f"{service}/{sid}" and len(rec.id) == 301
    events = await store.events(correlation_id=f"signal/{rec.id}", limit=10)
    assert sorted(e.type for e in events) == [
        EventType.SIGNAL_RECEIVED,
        EventType.SIGNAL_VALIDATED,
    ]
    ids = {e.event_id for e in events}
    assert all(len(i) <= 200 for i in ids) and len(ids) == 2
    # Deterministic per row and kind: the same row gives the same ids again.
    assert ids == {e.event_id for e in events_of_record(rec)}
    assert signal_event_id("x/1", EventType.SIGNAL_RECEIVED) == "signal/x/1/signal_received"


@pytest.mark.parametrize("copy_min", [1, 1_000_000], ids=["copy", "arrays"])
async def test_both_write_paths_store_the_same_rows_and_their_events(
    store: Store, monkeypatch: pytest.MonkeyPatch, copy_min: int
) -> None:
    # The events PostgreSQL builds with each row are exactly `events_of_record`'s:
    # every column, the JSON payload too, for every kind of row: valid, rejected
    # (bad action, not JSON, no id), a raw text cut to its longest and not ASCII,
    # and the longest ids (whose event ids are digests).
    monkeypatch.setattr(repository, "_COPY_MIN_ROWS", copy_min)
    service = f"svc-path-{copy_min}-" + "s" * 80
    long_text = "é" * 2500
    raw = message(
        signal(1),
        signal(2, recommended_action="MAYBE"),
        signal(3, "ETHUSDT", note=long_text),
        signal(int("9" * 200)),
        {"pair_symbol": "BTCUSDT"},
    )
    new = await stored(store, raw, service)
    assert {f"{service}/1", f"{service}/3", f"{service}/{'9' * 200}"} <= new and len(new) == 5
    garbage = await stored(store, b"\xff not json", service)
    again = await stored(store, raw, service, NOW + timedelta(seconds=1))
    assert len(again) == 2 and not again & new  # only the rejected items' new receipts
    rows = await store.signals(service, limit=100)
    assert len(rows) == 8
    assert {r.status for r in rows} == {"validated", "rejected"}
    by_status = {(r.status, r.signal_id): r for r in rows}
    one = by_status[("validated", "1")]
    assert one == signal_record(
        parse_message(message(signal(1)), service=service, received_at=NOW)[0], NOW
    )
    assert one.score_week == Decimal("71.123456789012345678")
    for rec in rows:
        got = await store.events(correlation_id=f"signal/{rec.id}", limit=10)
        assert sorted(got, key=lambda e: e.event_id) == sorted(
            events_of_record(rec), key=lambda e: e.event_id
        ), rec.id
    assert len(garbage) == 1
    long_one = by_status[("validated", "3")]
    [received] = await store.events(
        correlation_id=f"signal/{long_one.id}", event_type="signal_received", limit=10
    )
    assert received.payload["raw"]["text"] == long_one.raw and len(long_one.raw) == 2000
    # Stored with their rows: writing them again adds nothing.
    events = [e for rec in rows for e in events_of_record(rec)]
    assert len(events) == 3 * 2 + 5 and await store.append_signal_events(events) == 0


async def test_a_row_is_stored_with_its_events_or_not_at_all(store: Store) -> None:
    # One transaction: when the events cannot be written, the rows are not stored
    # either, and the ingest's retry stores both (the claim of a row is never
    # without its record).
    service = "svc-atomic"
    parsed = parse_message(message(signal(1), signal(2)), service=service, received_at=NOW)
    records = [signal_record(p, NOW) for p in parsed]
    first = events_of_record(records[0])[0]
    # An events table that refuses this service's events, as a full disk would.
    async with store.pool.acquire() as conn:
        await conn.execute(
            "ALTER TABLE events ADD CONSTRAINT no_signal_events_yet "
            f"CHECK (correlation_id NOT LIKE 'signal/{service}/%')"
        )
    try:
        with pytest.raises(Exception, match="no_signal_events_yet"):
            await store.store_signals(records)
        assert await store.signals(service) == []
    finally:
        async with store.pool.acquire() as conn:
            await conn.execute("ALTER TABLE events DROP CONSTRAINT no_signal_events_yet")
    assert await store.store_signals(records) == {r.id for r in records}
    got = await store.events(correlation_id=f"signal/{records[0].id}", limit=10)
    assert first in got and len(got) == 2


class HeldFirstStore(StoreInFront):
    """The real store; its first `store_signals` call waits for `gate` first."""

    def __init__(self, store: Store) -> None:
        super().__init__(store)
        self.gate = asyncio.Event()
        self.calls = 0

    async def store_signals(
        self, records: Sequence[SignalRecord], *, commit_after: Awaitable[object] | None = None
    ) -> set[str]:
        self.calls += 1
        if self.calls == 1:
            await self.gate.wait()
        return await super().store_signals(records, commit_after=commit_after)


def batch_of(service: str, at: datetime, *ids: int) -> _Batch:
    batch = _Batch()
    batch.add(at, parse_message(message(*map(signal, ids)), service=service, received_at=at))
    return batch


async def test_batches_written_side_by_side_commit_and_are_handed_on_in_order(
    store: Store,
) -> None:
    # The resume asks for what follows the last stored signal: a batch committed
    # before the one read ahead of it would make a crash between the two lose that
    # one. So the second batch is written at once but committed after the first;
    # a signal both hold is the first's (one row, one hand-on), so neither
    # transaction ever waits on a row the other holds.
    service = "svc-side-by-side"
    held = HeldFirstStore(store)
    handed: list[list[str]] = []

    async def sink(signals: list[Any]) -> None:
        handed.append([s.signal_id for s in signals])

    c = SignalClient(
        service=service, url="ws://127.0.0.1:1", token=SecretStr("t"), store=held, sink=sink
    )
    first = c._store_batch(batch_of(service, NOW, 1, 2, 3), None)
    second = c._store_batch(batch_of(service, NOW + timedelta(seconds=1), 3, 4, 5), first)
    await until(lambda: held.calls == 2, "the second batch being written")
    await asyncio.sleep(0.3)  # ample for the second batch's statement
    async with store.pool.acquire() as conn:  # what another session sees
        stored_rows = await conn.fetchval(
            "SELECT count(*) FROM signals WHERE service = $1", service
        )
    assert stored_rows == 0 and handed == [] and not second.done.done()
    held.gate.set()
    await asyncio.wait_for(asyncio.gather(first.done, second.done), 10)
    assert handed == [["1", "2", "3"], ["4", "5"]]
    assert sorted(r.signal_id or "" for r in await store.signals(service)) == list("12345")
    assert c.stored == 5 and c.duplicates == 1
    got = await store.events(correlation_id=f"signal/{service}/3", limit=10)
    assert len(got) == 2  # received and validated, once


async def test_a_batch_whose_predecessor_fails_is_not_committed(store: Store) -> None:
    # The batch before never commits (its store is cancelled, as at a stop): the
    # one after it is rolled back rather than committed ahead of it.
    service = "svc-cancelled-before"
    parsed = parse_message(message(signal(7)), service=service, received_at=NOW)
    before: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    writing = asyncio.create_task(
        store.store_signals([signal_record(p, NOW) for p in parsed], commit_after=before)
    )
    await asyncio.sleep(0.2)
    before.cancel()
    with pytest.raises(asyncio.CancelledError):
        await writing
    assert await store.signals(service) == []
