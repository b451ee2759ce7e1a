"""The operator's rows in PostgreSQL: stoplist, account pauses, and what a trader reads
of signals and waves.

Real PostgreSQL (one migrated store per module, shared by its tests: each test uses
its own accounts, services and symbols). Every change an operator makes must be on
record in the events table, and an operator's pause must raise an alert.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Literal

import pytest

from activities.store import operator_rows as rows
from activities.store.repository import Store
from domain.events import Event, EventType
from domain.records import DecisionRecord, SignalRecord, StoplistEntry, WaveRecord
from domain.symbols import InvalidSymbol

T0 = datetime(2026, 12, 2, 4, 0, tzinfo=UTC)
PauseSource = Literal["operator", "exchange"]


# --- helpers shared with tests/workers/test_signal_commands.py --------------------------------


def unique(prefix: str) -> str:
    """A name no other test of the module uses."""
    return f"{prefix}{uuid.uuid4().hex[:8]}"


def unique_symbol() -> str:
    return f"T{uuid.uuid4().hex[:8].upper()}USDT"


def signal_row(
    service: str,
    n: int,
    symbol: str = "BTCUSDT",
    *,
    at: datetime = T0,
    week: str | None = "0.9",
    month: str | None = "0.8",
    action: str = "BUY",
    wave_id: str | None = None,
) -> SignalRecord:
    """A validated signal `service/n` as the ingest stores it."""
    return SignalRecord(
        id=f"{service}/{n}",
        service=service,
        signal_id=str(n),
        received_at=at,
        raw="{}",
        exchange="binanceusdm",
        symbol=symbol,
        side="long" if action == "BUY" else "short",
        action=action,
        signal_at=at,
        wave_id=wave_id,
        score_week=None if week is None else Decimal(week),
        score_month=None if month is None else Decimal(month),
        status="validated",
    )


def rejected_row(service: str, reason: str, *, at: datetime = T0) -> SignalRecord:
    return SignalRecord(
        id=f"{service}/rejected/{uuid.uuid4().hex[:12]}",
        service=service,
        received_at=at,
        raw="not json",
        status="rejected",
        reason=reason,
    )


def wave_of(account: str, period: datetime = T0, **fields: object) -> WaveRecord:
    """The wave row of `account` for the period starting at `period`."""
    wave_id = f"wave/{account}/{period.isoformat()}"
    return WaveRecord.model_validate(
        {
            "id": wave_id,
            "account": account,
            "period_start": period,
            "deadline": period + timedelta(minutes=15),
            "workflow_id": wave_id,
            **fields,
        }
    )


def opened(signal: SignalRecord, wave: WaveRecord, rank: int) -> DecisionRecord:
    assert wave.account is not None
    return DecisionRecord(
        signal_row_id=signal.id,
        account=wave.account,
        wave_id=wave.id,
        outcome="opened",
        detail=f"rank {rank}",
        rank=rank,
        position_workflow_id=f"position/{wave.account}/binanceusdm/{signal.symbol}",
        decided_at=wave.deadline,
    )


def filtered(
    signal: SignalRecord, wave: WaveRecord, reason: str, detail: str = ""
) -> DecisionRecord:
    assert wave.account is not None
    return DecisionRecord(
        signal_row_id=signal.id,
        account=wave.account,
        wave_id=wave.id,
        outcome="filtered",
        reason=reason,
        detail=detail or reason,
        decided_at=wave.deadline,
    )


async def insert_decisions(store: Store, decisions: Sequence[DecisionRecord]) -> None:
    """Write decisions as the wave workflow does: once per (signal, account)."""
    for d in decisions:
        data = d.model_dump()
        cols = list(data)
        await store.pool.execute(
            f"INSERT INTO signal_decisions ({', '.join(cols)}) "
            f"VALUES ({', '.join(f'${i}' for i in range(1, len(cols) + 1))}) "
            "ON CONFLICT DO NOTHING",
            *data.values(),
        )


async def exchange_pause(store: Store, account: str, reason: str = "insufficient_balance") -> None:
    """An exchange pause, as a wave writes it."""
    await store.pool.execute(
        """INSERT INTO account_pauses (account, source, reason, detail, paused_by)
           VALUES ($1, 'exchange', $2, 'margin 3 < 100 USDT', 'wave')""",
        account,
        reason,
    )


async def events_of(store: Store, event_type: EventType, account: str) -> list[Event]:
    found = await store.events(event_type=event_type.value, limit=10_000)
    return [e for e in found if e.account == account]


# --- stoplist --------------------------------------------------------------------------------


async def test_a_stoplist_entry_is_added_once_and_its_reason_can_change(store: Store) -> None:
    symbol = unique_symbol()
    first = StoplistEntry(account="*", symbol=symbol, reason="delisting", added_by="alice")
    assert await rows.add_to_stoplist(store, first) is True
    again = first.model_copy(update={"reason": "", "added_by": "bob"})
    assert await rows.add_to_stoplist(store, again) is False  # empty reason: kept
    changed = first.model_copy(update={"reason": "halted", "added_by": "bob"})
    assert await rows.add_to_stoplist(store, changed) is False

    [entry] = [e for e in await rows.stoplist(store) if e.symbol == symbol]
    assert (entry.account, entry.reason, entry.added_by) == ("*", "halted", "alice")
    assert entry.added_at is not None
    # On record: the addition and the change of reason (by whom), not the no-op.
    recorded = [
        e.payload
        for e in await events_of(store, EventType.STOPLIST_CHANGED, "*")
        if e.symbol == symbol
    ]
    assert [(p["change"], p["reason"], p["by"]) for p in recorded] == [
        ("added", "delisting", "alice"),
        ("added", "halted", "bob"),  # who changed it
    ]


@pytest.mark.parametrize("spelling", ["ethusdt", "ETH/USDT:USDT", "eth/usdt"])
async def test_a_symbol_is_stored_canonical_whatever_its_spelling(
    store: Store, spelling: str
) -> None:
    account = unique("acct-")
    assert await rows.add_to_stoplist(store, StoplistEntry(account=account, symbol=spelling))
    assert [e.symbol for e in await rows.stoplist(store, account) if e.account == account] == [
        "ETHUSDT"
    ]
    assert await rows.remove_from_stoplist(store, account, spelling) is True


async def test_a_symbol_that_names_no_perpetual_is_refused(store: Store) -> None:
    with pytest.raises(InvalidSymbol):
        await rows.add_to_stoplist(store, StoplistEntry(symbol="BTC-EUR"))


async def test_an_account_reads_its_own_entries_and_those_of_every_account(
    store: Store,
) -> None:
    a, b = unique("a-"), unique("b-")
    mine, theirs, everyone = unique_symbol(), unique_symbol(), unique_symbol()
    await rows.add_to_stoplist(store, StoplistEntry(account=a, symbol=mine))
    await rows.add_to_stoplist(store, StoplistEntry(account=b, symbol=theirs))
    await rows.add_to_stoplist(store, StoplistEntry(account="*", symbol=everyone))
    ours = {mine, theirs, everyone}

    def of(entries: list[StoplistEntry]) -> set[tuple[str, str]]:
        return {(e.account, e.symbol) for e in entries if e.symbol in ours}

    assert of(await rows.stoplist(store, a)) == {(a, mine), ("*", everyone)}
    assert of(await rows.stoplist(store, b)) == {(b, theirs), ("*", everyone)}
    assert of(await rows.stoplist(store)) == {(a, mine), (b, theirs), ("*", everyone)}


async def test_removing_takes_only_that_accounts_entry_and_is_on_record(store: Store) -> None:
    account, symbol = unique("acct-"), unique_symbol()
    await rows.add_to_stoplist(store, StoplistEntry(account=account, symbol=symbol, reason="r"))
    await rows.add_to_stoplist(store, StoplistEntry(account="*", symbol=symbol))

    assert await rows.remove_from_stoplist(store, account, symbol, by="carol") is True
    assert await rows.remove_from_stoplist(store, account, symbol, by="carol") is False
    assert [e.account for e in await rows.stoplist(store, account) if e.symbol == symbol] == ["*"]
    [removed] = [
        e
        for e in await events_of(store, EventType.STOPLIST_CHANGED, account)
        if e.payload["change"] == "removed"
    ]
    assert removed.symbol == symbol
    assert removed.payload == {
        "account": account,
        "symbol": symbol,
        "change": "removed",
        "reason": "r",
        "by": "carol",
    }


# --- account pauses --------------------------------------------------------------------------


async def test_an_operator_pause_is_stored_recorded_and_alerted(store: Store) -> None:
    account = unique("acct-")
    pause = await rows.pause_entries(store, account, "news at 14:00", "CPI", "posguard pause (a)")
    assert (pause.account, pause.source, pause.reason, pause.detail, pause.paused_by) == (
        account,
        "operator",
        "news at 14:00",
        "CPI",
        "posguard pause (a)",
    )
    assert await rows.account_pauses(store, account) == [pause]

    [event] = await events_of(store, EventType.ENTRIES_PAUSED, account)
    assert event.severity.value == "warning"
    assert event.payload == {
        "account": account,
        "source": "operator",
        "reason": "news at 14:00",
        "detail": "CPI",
        "by": "posguard pause (a)",
    }
    alert = await store.pool.fetchrow("SELECT * FROM alerts WHERE event_id = $1", event.event_id)
    assert alert is not None and alert["severity"] == "warning"
    assert account in alert["title"] and "news at 14:00" in alert["body"]


async def test_pausing_again_replaces_the_reason_and_keeps_since(store: Store) -> None:
    account = unique("acct-")
    first = await rows.pause_entries(store, account, "first", "", "a")
    second = await rows.pause_entries(store, account, "second", "more", "b")
    assert (second.reason, second.detail, second.paused_by) == ("second", "more", "b")
    assert second.since == first.since
    assert await rows.account_pauses(store, account) == [second]
    assert len(await events_of(store, EventType.ENTRIES_PAUSED, account)) == 2


@pytest.mark.parametrize(
    "paused",
    [("operator",), ("exchange",), ("operator", "exchange"), ()],
    ids=["operator", "exchange", "both", "none"],
)
async def test_resume_clears_the_operator_and_the_exchange_pause(
    store: Store, paused: tuple[PauseSource, ...]
) -> None:
    account = unique("acct-")
    if "exchange" in paused:
        await exchange_pause(store, account)
    if "operator" in paused:
        await rows.pause_entries(store, account, "manual", "", "a")

    cleared = await rows.resume_entries(store, account, "posguard resume (b)")

    assert tuple(p.source for p in cleared) == paused  # the operator's first
    assert await rows.account_pauses(store, account) == []
    resumed = await events_of(store, EventType.ENTRIES_RESUMED, account)
    if paused:
        [event] = resumed
        assert event.payload == {
            "account": account,
            "sources": list(paused),
            "by": "posguard resume (b)",
        }
    else:
        assert resumed == []  # nothing changed, nothing recorded
    assert await rows.resume_entries(store, account, "again") == []


async def test_pauses_are_listed_per_account_or_all(store: Store) -> None:
    a, b = unique("a-"), unique("b-")
    await rows.pause_entries(store, a, "manual", "", "x")
    await exchange_pause(store, a)
    await exchange_pause(store, b, "maintenance")

    assert [(p.account, p.source) for p in await rows.account_pauses(store, a)] == [
        (a, "operator"),
        (a, "exchange"),
    ]
    everything = [(p.account, p.source) for p in await rows.account_pauses(store)]
    assert {(a, "operator"), (a, "exchange"), (b, "exchange")} <= set(everything)


# --- waves -----------------------------------------------------------------------------------


async def test_waves_come_newest_period_first_per_account_with_their_outcomes(
    store: Store,
) -> None:
    a, b = unique("a-"), unique("b-")
    outcomes = {"opened": 2, "max_new_per_wave": 3, "below_score_week": 5}
    for i in range(3):
        await store.upsert_wave(
            wave_of(a, T0 + timedelta(minutes=15 * i), status="processed", outcomes=outcomes)
        )
    await store.upsert_wave(wave_of(b, T0 + timedelta(hours=1)))

    latest = await rows.waves(store, a, 2)
    assert [w.period_start for w in latest] == [
        T0 + timedelta(minutes=30),
        T0 + timedelta(minutes=15),
    ]
    assert latest[0].outcomes == outcomes and latest[0].account == a
    assert {w.account for w in await rows.waves(store, None, 1000)} >= {a, b}
    assert await rows.wave(store, latest[0].id) == latest[0]
    assert await rows.wave(store, f"wave/{a}/never") is None


async def test_a_wave_is_found_by_its_period_in_any_spelling(store: Store) -> None:
    account = unique("acct-")
    await store.upsert_wave(wave_of(account))
    plus_one = timezone(timedelta(hours=1))
    found = await rows.wave_at(store, account, datetime(2026, 12, 2, 5, 0, tzinfo=plus_one))
    assert found is not None and found.id == f"wave/{account}/{T0.isoformat()}"
    assert await rows.wave_at(store, account, T0 + timedelta(minutes=1)) is None


async def test_a_waves_signals_come_opened_by_rank_then_filtered_by_reason(
    store: Store,
) -> None:
    account, other, svc = unique("a-"), unique("o-"), unique("svc-")
    wave, other_wave = wave_of(account), wave_of(other)
    await store.upsert_wave(wave)
    await store.upsert_wave(other_wave)
    s = [signal_row(svc, n, f"S{n}USDT", week=str(Decimal(n) / 10)) for n in range(1, 8)]
    late = signal_row(svc, 8, "S8USDT", wave_id=wave.id)  # named by the wave, not decided yet
    await store.store_signals([*s, late])
    await insert_decisions(
        store,
        [
            filtered(s[0], wave, "wave_closed"),
            filtered(s[1], wave, "max_new_per_wave"),
            opened(s[2], wave, 2),
            filtered(s[3], wave, "below_score_week", "score_week 0.4 < 0.7"),
            opened(s[4], wave, 1),
            filtered(s[5], wave, "max_new_per_wave"),
            filtered(s[6], wave, "stoplisted"),
            opened(s[0], other_wave, 1),  # another account's wave: not this one's
        ],
    )

    entries = await rows.wave_decisions(store, wave.id)

    order = [
        (sig.signal_id, None if d is None else (d.outcome, d.rank or d.reason))
        for sig, d in entries
    ]
    assert order == [
        ("5", ("opened", 1)),
        ("3", ("opened", 2)),
        ("7", ("filtered", "stoplisted")),  # in the selection's order of reasons
        ("4", ("filtered", "below_score_week")),
        ("6", ("filtered", "max_new_per_wave")),  # strongest score first
        ("2", ("filtered", "max_new_per_wave")),
        ("1", ("filtered", "wave_closed")),
        ("8", None),
    ]
    assert entries[3][1] is not None and entries[3][1].detail == "score_week 0.4 < 0.7"
    assert entries[0][0].score_week == Decimal("0.5")
    assert await rows.wave_decisions(store, "wave/nobody/never") == []


# --- signals ---------------------------------------------------------------------------------


async def test_signals_are_read_in_received_order_after_a_cursor(store: Store) -> None:
    svc, other = unique("svc-"), unique("svc-")
    # Rows of one receipt share their time: the id breaks the tie.
    batch = [signal_row(svc, n, at=T0) for n in (3, 1, 2)]
    later = [signal_row(svc, 4, at=T0 + timedelta(seconds=1)), rejected_row(svc, "bad json")]
    later[1] = later[1].model_copy(update={"received_at": T0 + timedelta(seconds=2)})
    await store.store_signals([*batch, *later, signal_row(other, 1, at=T0)])
    wave = wave_of(unique("a-"))
    await store.upsert_wave(wave)
    await insert_decisions(store, [opened(batch[0], wave, 1)])

    everything = await rows.signals_after(store, svc, None, None, 100)
    assert [s.id for s, _ in everything] == [
        f"{svc}/1",
        f"{svc}/2",
        f"{svc}/3",
        f"{svc}/4",
        later[1].id,
    ]
    decided = dict((s.id, d) for s, d in everything)
    assert [d.outcome for d in decided[f"{svc}/3"]] == ["opened"]
    assert decided[f"{svc}/1"] == []

    after_two = await rows.signals_after(store, svc, T0, f"{svc}/2", 2)
    assert [s.id for s, _ in after_two] == [f"{svc}/3", f"{svc}/4"]
    assert await rows.signals_after(store, svc, T0 + timedelta(seconds=2), later[1].id, 9) == []

    latest = await rows.latest_signals(store, svc, 2)
    assert [s.id for s, _ in latest] == [f"{svc}/4", later[1].id]
    assert later[1].id in [s.id for s, _ in await rows.latest_signals(store, None, 10_000)]


async def test_the_decisions_of_signals_are_read_by_row_and_account(store: Store) -> None:
    svc = unique("svc-")
    a, b = wave_of(unique("a-")), wave_of(unique("b-"))
    await store.upsert_wave(a)
    await store.upsert_wave(b)
    one, two = signal_row(svc, 1), signal_row(svc, 2)
    await store.store_signals([one, two])
    await insert_decisions(store, [filtered(one, b, "cooldown"), opened(one, a, 1)])

    found = await rows.decisions_of(store, [one.id, two.id])

    assert list(found) == [one.id]
    assert sorted((d.account, d.outcome) for d in found[one.id]) == [
        (a.account, "opened"),
        (b.account, "filtered"),
    ]
    assert await rows.decisions_of(store, []) == {}
