"""What a wave writes and reads in PostgreSQL: one decision per (signal, account), the
first one kept; the signals nobody decided; the exchange's pause, alerted once.

Real PostgreSQL (migrated store per module); signals stored as the ingest stores them.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from activities.store.operator_rows import account_pauses, pause_entries
from activities.store.repository import Store
from activities.store.wave_rows import (
    record_late,
    set_exchange_pause,
    stored_account,
    undecided_signals,
    write_wave,
)
from domain.records import DecisionRecord, signal_record
from domain.signal_wire import Accepted
from domain.signals import Signal, SignalAction
from domain.types import ExchangeId
from domain.wave_io import ExchangePauseRequest, PauseCause, WaveWrite, signal_row_id

NOW = datetime(2026, 12, 2, 6, 0, tzinfo=UTC)


def a_signal(service: str, sid: str, symbol: str = "BTCUSDT") -> Signal:
    return Signal(
        service=service,
        signal_id=sid,
        exchange=ExchangeId.BINANCE_USDM,
        symbol=symbol,
        action=SignalAction.BUY,
        score_week=Decimal("80.5"),
        score_month=Decimal(70),
        at=NOW,
        received_at=NOW,
    )


async def stored_signals(store: Store, service: str, n: int) -> list[Signal]:
    signals = [a_signal(service, str(k)) for k in range(n)]
    await store.store_signals([signal_record(Accepted(signal=s), NOW) for s in signals])
    return signals


def opened(signal: Signal, account: str, wave_id: str) -> DecisionRecord:
    return DecisionRecord(
        signal_row_id=signal_row_id(signal),
        account=account,
        wave_id=wave_id,
        outcome="opened",
        detail="rank 1",
        rank=1,
        position_workflow_id=f"position/{account}/binanceusdm/{signal.symbol}",
        decided_at=NOW,
    )


async def decisions(store: Store, service: str) -> list[tuple[str, str, str | None]]:
    rows = await store.pool.fetch(
        """SELECT d.account, d.outcome, d.reason FROM signal_decisions d
           JOIN signals s ON s.id = d.signal_row_id WHERE s.service = $1
           ORDER BY d.signal_row_id, d.account""",
        service,
    )
    return [(r["account"], r["outcome"], r["reason"]) for r in rows]


async def test_a_decision_is_written_once_per_account_and_the_wave_s_own_stands(
    store: Store,
) -> None:
    service = f"svc-{uuid.uuid4().hex[:6]}"
    [signal] = await stored_signals(store, service, 1)
    write = WaveWrite(decisions=[opened(signal, "a", "wave/a/x")])
    assert await write_wave(store, write) == 1
    assert await write_wave(store, write) == 0  # a retried write: nothing new
    # The same signal, too late for another account's wave, and again for the first.
    assert await record_late(store, "b", "wave/b/x", [signal], NOW) == 1
    assert await record_late(store, "a", "wave/a/x", [signal], NOW) == 0
    assert await decisions(store, service) == [
        ("a", "opened", None),
        ("b", "filtered", "wave_closed"),
    ]
    late_events = [
        e
        for e in await store.events(limit=1000)
        if e.type.value == "signal_filtered" and e.payload["signal_id"] == signal_row_id(signal)
    ]
    assert [e.account for e in late_events] == ["b"]  # no event for the decision not made


async def test_a_decision_about_a_signal_never_stored_is_skipped_not_retried(
    store: Store,
) -> None:
    ghost = a_signal(f"svc-{uuid.uuid4().hex[:6]}", "ghost")
    assert await write_wave(store, WaveWrite(decisions=[opened(ghost, "a", "wave/a/y")])) == 0


async def test_undecided_signals_are_those_without_a_decision_for_that_account(
    store: Store,
) -> None:
    service = f"svc-{uuid.uuid4().hex[:6]}"
    signals = await stored_signals(store, service, 3)
    await write_wave(store, WaveWrite(decisions=[opened(signals[0], "a", "wave/a/z")]))
    window = (NOW - timedelta(hours=1), NOW + timedelta(seconds=1))
    for_a = await undecided_signals(store, "a", [service], *window)
    for_b = await undecided_signals(store, "b", [service], *window)
    assert {r.signal_id for r in for_a} == {"1", "2"}
    assert {r.signal_id for r in for_b} == {"0", "1", "2"}
    assert await undecided_signals(store, "a", [service], NOW, NOW + timedelta(seconds=1)) == []


@pytest.mark.parametrize("cause", list(PauseCause))
async def test_the_exchange_pause_alerts_once_and_a_clean_read_ends_it(
    store: Store, cause: PauseCause
) -> None:
    account = f"acct-{uuid.uuid4().hex[:6]}"

    def request(wave: str, c: PauseCause | None) -> ExchangePauseRequest:
        return ExchangePauseRequest(
            account=account, wave_id=f"wave/{account}/{wave}", at=NOW, cause=c, detail="x"
        )

    assert await set_exchange_pause(store, request("w1", cause))
    assert not await set_exchange_pause(store, request("w2", cause))  # seen again: no news
    assert [(p.source, p.reason) for p in await account_pauses(store, account)] == [
        ("exchange", cause.value)
    ]
    alerts = await store.pool.fetch("SELECT * FROM alerts WHERE title LIKE $1", f"{account}:%")
    assert len(alerts) == 1
    assert await set_exchange_pause(store, request("w3", None))
    assert not await set_exchange_pause(store, request("w4", None))
    assert await account_pauses(store, account) == []


async def test_the_account_a_wave_reads_has_its_open_rows_stoplist_and_pauses(
    store: Store,
) -> None:
    account = f"acct-{uuid.uuid4().hex[:6]}"
    await pause_entries(store, account, "news", "FOMC", "test")
    seen = await stored_account(store, account, ExchangeId.BINANCE_USDM, timedelta(0), NOW)
    assert seen.open == [] and seen.closed_at == {}
    assert [(p.source, p.reason) for p in seen.pauses] == [("operator", "news")]
