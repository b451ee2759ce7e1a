"""`posguard signals tail`, `waves`, `wave`, `stoplist`, `pause`, `resume`, `paused`, as a
trader reads them.

Each command is parsed by the real `posguard` parser and run in this process against
the real (embedded) PostgreSQL, exactly as `posguard` runs it; what it printed is read
from stdout. Signals are stored as the ingest stores them (`Store.store_signals`);
waves and decisions as the wave workflow writes them.
"""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from pydantic import SecretStr

from activities.store import operator_rows as rows
from activities.store.repository import Store
from domain.events import EventType
from tests.activities.test_operator_rows import (
    T0,
    events_of,
    exchange_pause,
    filtered,
    insert_decisions,
    opened,
    rejected_row,
    signal_row,
    unique,
    unique_symbol,
    wave_of,
)
from tests.workflows.harness import eventually
from workers import signal_commands
from workers.cli import main, parse
from workers.position_text import CommandError
from workers.settings import AccountSettings, Settings


def settings_for(database_url: str, *accounts: str) -> Settings:
    """posguard's settings: this module's database and these accounts (first: default)."""
    return Settings(
        database_url=SecretStr(database_url),
        accounts=[AccountSettings(name=a) for a in accounts or ("paper",)],
        health_port=-1,
    )


async def posguard(
    capsys: pytest.CaptureFixture[str], settings: Settings, *argv: str
) -> tuple[int, str]:
    """`posguard ARGV...`: its exit code and what it printed."""
    capsys.readouterr()
    invocation = parse(list(argv))
    code = await invocation.func(invocation.args, settings)
    return code, capsys.readouterr().out


def table(output: str, first: str) -> list[dict[str, str]]:
    """The rows of the table whose header starts with `first`, by column name (cut at the
    header's column starts: names and cells may hold single spaces)."""
    lines = output.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith(first + " "))
    columns = list(re.finditer(r"\S+(?: \S+)*", lines[at]))
    starts = [c.start() for c in columns]
    ends = [*starts[1:], None]
    return [
        {c.group(): line[a:b].strip() for c, a, b in zip(columns, starts, ends, strict=True)}
        for line in lines[at + 1 :]
        if line.strip()
    ]


# --- signals tail ----------------------------------------------------------------------------


async def test_tail_prints_each_signal_with_its_scores_status_and_decisions(
    store: Store, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    svc = unique("svc-")
    paper, main = wave_of(unique("paper-")), wave_of(unique("main-"))
    await store.upsert_wave(paper)
    await store.upsert_wave(main)
    btc = signal_row(svc, 1, "BTCUSDT", week="71.123456789012345678", month="60")
    eth = signal_row(svc, 2, "ETHUSDT", at=T0 + timedelta(seconds=1), action="SELL")
    bad = rejected_row(svc, "score_week: not a number", at=T0 + timedelta(seconds=2))
    await store.store_signals([btc, eth, bad])
    await insert_decisions(store, [opened(btc, paper, 1), filtered(btc, main, "max_new_per_wave")])

    code, out = await posguard(
        capsys, settings_for(database_url), "signals", "tail", "--service", svc
    )

    assert code == 0
    lines = out.splitlines()
    assert len(lines) == 3
    first, second, third = lines
    assert first.startswith("2026-12-02 04:00:00.000")
    assert f"{svc}/1" in first and "BTCUSDT" in first and "BUY" in first
    # Scores print exactly: every digit PostgreSQL holds, no float rounding.
    assert "week 71.123456789012345678 month 60" in first and "validated" in first
    assert first.endswith(  # by account
        f"validated  -> {main.account}: filtered max_new_per_wave; "
        f"{paper.account}: opened #1 position/{paper.account}/binanceusdm/BTCUSDT"
    )
    assert f"{svc}/2" in second and "SELL" in second and "->" not in second  # not decided yet
    assert "rejected: score_week: not a number" in third


@pytest.mark.parametrize("n", [1, 2, 5])
async def test_tail_n_prints_the_last_n_oldest_first(
    store: Store, database_url: str, capsys: pytest.CaptureFixture[str], n: int
) -> None:
    svc = unique("svc-")
    await store.store_signals(
        [signal_row(svc, i, at=T0 + timedelta(seconds=i)) for i in range(1, 4)]
    )
    code, out = await posguard(
        capsys, settings_for(database_url), "signals", "tail", "--service", svc, "-n", str(n)
    )
    assert code == 0
    shown = [re.search(rf"{svc}/(\d+)", line) for line in out.splitlines()]
    assert [int(m.group(1)) for m in shown if m] == [1, 2, 3][-n:]


async def test_tail_follow_prints_new_signals_and_their_decisions_as_they_come(
    store: Store, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    svc = unique("svc-")
    wave = wave_of(unique("paper-"))
    await store.upsert_wave(wave)
    # Received now: `-f` watches a signal for its decisions for about a wave period.
    now = datetime.now(UTC)
    old = signal_row(svc, 1, "BTCUSDT", at=now)
    await store.store_signals([old])
    settings = settings_for(database_url)
    args = parse(["signals", "tail", "-f", "--service", svc]).args
    stop = asyncio.Event()
    capsys.readouterr()
    printed: list[str] = []

    async def shows(text: str) -> bool:
        printed.extend(capsys.readouterr().out.splitlines())
        return any(text in line for line in printed)

    task = asyncio.create_task(signal_commands.cmd_signals_tail(args, settings, stop=stop))
    try:
        assert await eventually(lambda: shows(f"{svc}/1")), printed
        new = signal_row(svc, 2, "SOLUSDT", at=now + timedelta(seconds=1))
        other = signal_row(unique("other-"), 3, "XRPUSDT", at=now + timedelta(seconds=1))
        await store.store_signals([new, other])
        assert await eventually(lambda: shows(f"{svc}/2")), printed
        # The wave decides both at its deadline: each decision is a line of its own.
        await insert_decisions(store, [opened(new, wave, 1), filtered(old, wave, "cooldown")])
        assert await eventually(lambda: shows(f"{wave.account}: opened #1")), printed
        assert await eventually(lambda: shows(f"{wave.account}: filtered cooldown")), printed
    finally:
        stop.set()
        assert await task == 0
    printed.extend(capsys.readouterr().out.splitlines())
    decided = [line for line in printed if " decided " in line]
    assert len(decided) == 2, printed  # each decision once
    assert any(f"{svc}/2" in line and "SOLUSDT" in line for line in decided)
    assert not any("other-" in line for line in printed)  # another service


# --- waves and wave --------------------------------------------------------------------------


async def test_waves_lists_each_wave_with_what_it_opened_and_filtered_and_why(
    store: Store, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    account = unique("acct-")
    done = wave_of(
        account,
        status="processed",
        signals_received=10,
        signals_selected=2,
        signals_filtered=8,
        positions_started=2,
        outcomes={"opened": 2, "below_score_week": 5, "max_new_per_wave": 3},
        duration_ms=1234,
    )
    collecting = wave_of(account, T0 + timedelta(minutes=15), signals_received=4)
    await store.upsert_wave(done)
    await store.upsert_wave(collecting)
    await store.upsert_wave(wave_of(unique("other-")))

    code, out = await posguard(
        capsys, settings_for(database_url), "waves", "--account", account, "-n", "5"
    )

    assert code == 0
    assert table(out, "period") == [
        {
            "period": "2026-12-02 04:15",
            "account": account,
            "status": "collecting",
            "signals": "4",
            "opened": "0",
            "filtered": "-",
            "took": "-",
            "wave": collecting.id,
        },
        {
            "period": "2026-12-02 04:00",
            "account": account,
            "status": "processed",
            "signals": "10",
            "opened": "2",
            "filtered": "below_score_week 5, max_new_per_wave 3",
            "took": "1.2 s",
            "wave": done.id,
        },
    ]


async def test_waves_says_so_when_there_are_none(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = await posguard(capsys, settings_for(database_url), "waves", "--account", "nobody")
    assert (code, out.strip()) == (0, "no waves of nobody recorded yet")


async def test_wave_shows_its_header_then_each_signal_and_its_decision(
    store: Store, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    account, svc = unique("acct-"), unique("svc-")
    wave = wave_of(
        account,
        status="processed",
        signals_received=3,
        signals_selected=1,
        signals_filtered=2,
        positions_started=1,
        outcomes={"opened": 1, "below_score_week": 1, "max_new_per_wave": 1},
        processed_at=T0 + timedelta(minutes=15, seconds=1),
        duration_ms=850,
    )
    await store.upsert_wave(wave)
    best = signal_row(svc, 1, "BTCUSDT", week="0.91", month="0.8")
    capped = signal_row(svc, 2, "ETHUSDT", week="0.85", month="0.7", action="SELL")
    weak = signal_row(svc, 3, "SOLUSDT", week="0.5", month="0.9")
    await store.store_signals([best, capped, weak])
    await insert_decisions(
        store,
        [
            opened(best, wave, 1),
            filtered(capped, wave, "max_new_per_wave", "1 new position per wave"),
            filtered(weak, wave, "below_score_week", "score_week 0.5 < 0.7"),
        ],
    )

    code, out = await posguard(capsys, settings_for(database_url), "wave", wave.id)

    assert code == 0
    head = out.split("\n\n")[0]
    assert head.splitlines()[0] == f"{wave.id}  processed"
    for expected in (
        "deadline   2026-12-02 04:15:00 UTC",
        "signals    3 received, 1 selected, 2 filtered",
        "opened     1 position",
        "filtered   below_score_week 1, max_new_per_wave 1",
        "processed  2026-12-02 04:15:01 UTC in 850 ms",
        "Web UI     http://127.0.0.1:8233/namespaces/default/workflows/wave%2F",
    ):
        assert expected in head, head
    assert [
        (r["rank"], r["signal"], r["symbol"], r["week"], r["decision"], r["detail"])
        for r in table(out, "rank")
    ] == [
        (
            "1",
            f"{svc}/1",
            "BTCUSDT",
            "0.91",
            "opened",
            f"position/{account}/binanceusdm/BTCUSDT rank 1",
        ),
        ("-", f"{svc}/3", "SOLUSDT", "0.5", "below_score_week", "score_week 0.5 < 0.7"),
        ("-", f"{svc}/2", "ETHUSDT", "0.85", "max_new_per_wave", "1 new position per wave"),
    ]


@pytest.mark.parametrize(
    "spelling",
    [
        "wave/{a}/2026-12-02T04:00:00+00:00",
        "{a}/2026-12-02T04:00:00Z",
        "wave/{a}/2026-12-02T05:00+01:00",
    ],
)
async def test_wave_accepts_its_id_in_any_spelling_of_the_time(
    store: Store, database_url: str, capsys: pytest.CaptureFixture[str], spelling: str
) -> None:
    account = unique("acct-")
    await store.upsert_wave(wave_of(account))
    code, out = await posguard(
        capsys, settings_for(database_url), "wave", spelling.format(a=account)
    )
    assert code == 0
    assert out.startswith(f"wave/{account}/2026-12-02T04:00:00+00:00  collecting")
    assert "no signals recorded for this wave" in out


async def test_an_unknown_wave_is_an_error_that_names_the_latest(
    store: Store, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    account = unique("acct-")
    known = wave_of(account)
    await store.upsert_wave(known)
    with pytest.raises(CommandError) as err:
        await posguard(capsys, settings_for(database_url), "wave", f"wave/{account}/yesterday")
    message = str(err.value)
    assert f"no wave 'wave/{account}/yesterday'" in message
    assert "posguard waves" in message and f"  {known.id}" in message


# --- stoplist --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "whose", "stored_as"),
    [
        ((), "every account", "*"),
        (("--account", "*"), "every account", "*"),
        (("--account", "spot"), "spot", "spot"),
    ],
    ids=["default", "star", "account"],
)
async def test_stoplist_add_list_remove(
    store: Store,
    database_url: str,
    capsys: pytest.CaptureFixture[str],
    flags: tuple[str, ...],
    whose: str,
    stored_as: str,
) -> None:
    settings = settings_for(database_url, "paper", "spot")
    symbol = unique_symbol()

    code, out = await posguard(
        capsys, settings, "stoplist", "add", symbol.lower(), *flags, "--reason", "delisting"
    )
    assert code == 0
    assert out.splitlines()[0] == f"added {symbol} to the stoplist of {whose} (delisting)"
    code, out = await posguard(capsys, settings, "stoplist", "add", symbol, *flags)
    assert out.splitlines()[0] == f"{symbol} was on the stoplist of {whose} already (delisting)"

    code, out = await posguard(capsys, settings, "stoplist", "list", "--account", "spot")
    [row] = [r for r in table(out, "symbol") if r["symbol"] == symbol]
    assert (row["account"], row["reason"]) == (whose, "delisting")
    assert row["added by"].startswith("posguard stoplist (")
    code, out = await posguard(capsys, settings, "stoplist", "list", "--account", "paper")
    assert (symbol in out) is (stored_as == "*")  # another account's entry is not paper's

    code, out = await posguard(capsys, settings, "stoplist", "remove", symbol, *flags)
    assert (code, out.strip()) == (0, f"removed {symbol} from the stoplist of {whose}")
    assert [e for e in await rows.stoplist(store) if e.symbol == symbol] == []
    changes = [
        e.payload["change"]
        for e in await events_of(store, EventType.STOPLIST_CHANGED, stored_as)
        if e.symbol == symbol
    ]
    assert changes == ["added", "removed"]


async def test_removing_a_symbol_not_listed_says_where_it_is_listed(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = settings_for(database_url, "paper")
    symbol = unique_symbol()
    await posguard(capsys, settings, "stoplist", "add", symbol, "--account", "paper")
    code, out = await posguard(capsys, settings, "stoplist", "remove", symbol)
    assert code == 1
    assert out.splitlines() == [
        f"{symbol} is not on the stoplist of every account",
        f"  it is on the stoplist of paper: posguard stoplist remove {symbol} --account paper",
    ]


async def test_stoplist_add_refuses_an_account_not_configured(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(CommandError, match="no account named 'nope'"):
        await posguard(
            capsys, settings_for(database_url), "stoplist", "add", "BTCUSDT", "--account", "nope"
        )


# --- pause, paused, resume -------------------------------------------------------------------


async def test_pause_then_resume_an_account(
    store: Store, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    account = unique("acct-")
    settings = settings_for(database_url, account, "other")

    code, out = await posguard(capsys, settings, "pause", "--reason", "CPI at 14:30")
    assert code == 0
    assert out.startswith(f"paused new entries on {account}: CPI at 14:30 (since 20")
    assert f"posguard resume --account {account}" in out

    await exchange_pause(store, account)  # the next wave also finds the balance short
    code, out = await posguard(capsys, settings, "paused", "--account", account)
    assert [(r["source"], r["reason"], r["detail"]) for r in table(out, "account")] == [
        ("operator", "CPI at 14:30", "-"),
        ("exchange", "insufficient_balance", "margin 3 < 100 USDT"),
    ]

    code, out = await posguard(capsys, settings, "resume")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == f"resumed new entries on {account}; cleared:"
    assert lines[1].startswith("  operator pause (CPI at 14:30 by posguard pause (")
    assert lines[2].startswith(
        "  exchange pause (insufficient_balance: margin 3 < 100 USDT by wave"
    )
    assert "the next wave checks the exchange again" in lines[3]
    assert await rows.account_pauses(store, account) == []

    # On record: the pause (with its alert) and the resume.
    [paused] = await events_of(store, EventType.ENTRIES_PAUSED, account)
    [resumed] = await events_of(store, EventType.ENTRIES_RESUMED, account)
    assert resumed.payload["sources"] == ["operator", "exchange"]
    assert (
        await store.pool.fetchval(
            "SELECT count(*) FROM alerts WHERE event_id = $1", paused.event_id
        )
        == 1
    )

    code, out = await posguard(capsys, settings, "resume")
    assert (code, out.strip()) == (
        0,
        f"new entries on {account} were not paused: nothing to resume",
    )


@pytest.mark.parametrize("flags", [(), ("--account", "second")], ids=["default", "named"])
async def test_pause_takes_the_first_account_unless_named(
    store: Store, database_url: str, capsys: pytest.CaptureFixture[str], flags: tuple[str, ...]
) -> None:
    first = unique("first-")
    settings = settings_for(database_url, first, "second")
    await rows.resume_entries(store, "second", "test: clean slate")
    code, _ = await posguard(capsys, settings, "pause", *flags, "--reason", "manual")
    expected = flags[1] if flags else first
    assert code == 0
    assert [p.account for p in await rows.account_pauses(store, expected)] == [expected]
    await rows.resume_entries(store, expected, "test")


async def test_paused_says_so_when_nothing_is_paused(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = await posguard(capsys, settings_for(database_url), "paused", "--account", "calm")
    assert (code, out.strip()) == (0, "new entries are not paused on calm")


def test_pause_requires_a_reason(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pause"]) == 2
    assert capsys.readouterr().err.strip() == (
        "posguard: pause: Missing option '--reason'. (see `posguard pause --help`)"
    )


def test_scores_print_exactly_without_exponent() -> None:
    row = signal_row("svc", 1, week="0.000000000000000001", month=None)
    assert "week 0.000000000000000001 month -" in signal_commands.format_signal(row, [])
    assert row.score_week == Decimal("1E-18")
