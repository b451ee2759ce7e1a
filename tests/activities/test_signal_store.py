"""Signals in PostgreSQL: every message kept, a valid signal once per (service, id).

Real PostgreSQL (migrated store per module); messages parsed by the real parser.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from activities.store.repository import Store
from domain.records import signal_record
from domain.signal_wire import parse_message

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
