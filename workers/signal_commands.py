"""`posguard signals tail`, `waves`, `wave`, `stoplist`, `pause`, `resume`, `paused`.

The operator's view of signals and waves, and the two controls of new entries: the
stoplist (symbols never to open) and account pauses. Everything is read from and
written to PostgreSQL (activities/store/operator_rows.py); a wave reads the stoplist
and the pauses just before its selection, so a change applies from the next wave.
Open positions are never touched by these commands. See docs/signals_cli.md.
"""

from __future__ import annotations

import asyncio
import getpass
import socket
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import click

from activities.store import operator_rows as rows
from activities.store.repository import Store
from domain.records import AccountPause, DecisionRecord, SignalRecord, StoplistEntry, WaveRecord
from workers import position_commands as pc
from workers import position_text as ptext
from workers import terminal
from workers.cli_options import SYMBOL, Invocation, runs
from workers.settings import Settings

POLL = timedelta(milliseconds=500)
PAGE = 1000
# How long `tail -f` keeps watching a printed signal for its decisions: a signal is
# decided at its wave's deadline, at most about one wave period after it arrived.
MIN_DECISION_HORIZON = timedelta(hours=1)


def _operator(command: str) -> str:
    """Who ran the command, as recorded: `posguard pause (alice@host)`."""
    try:
        user = getpass.getuser()
    except Exception:  # no login name in some containers
        user = "unknown"
    return f"posguard {command} ({user}@{socket.gethostname()})"


async def _open_store(settings: Settings) -> Store:
    from workers.worker import open_store

    return await open_store(settings)


# --- formatting ------------------------------------------------------------------------------


def _time(at: datetime | None, *, ms: bool = False) -> str:
    """UTC time as `2026-12-02 04:00:05` (`.123` with `ms`); `-` when unknown."""
    if at is None:
        return "-"
    text = f"{at.astimezone(UTC):%Y-%m-%d %H:%M:%S.%f}"
    return text[:-3] if ms else text[:-7]


def _took(duration_ms: int | None) -> str:
    """`850 ms`, `1.2 s`; `-` when unknown."""
    if duration_ms is None:
        return "-"
    if duration_ms < 1000:
        return f"{duration_ms} ms"
    return f"{duration_ms // 1000}.{duration_ms % 1000 // 100} s"


def _ident(s: SignalRecord) -> str:
    """`service/id` as the service numbers it; a rejected receipt without an id: its row."""
    return f"{s.service}/{s.signal_id}" if s.signal_id else s.id


def _scores(s: SignalRecord) -> str:
    if s.score_week is None and s.score_month is None:
        return "-"
    return f"week {ptext.dec(s.score_week)} month {ptext.dec(s.score_month)}"


def _status(s: SignalRecord) -> str:
    return f"{s.status}: {s.reason}" if s.reason else s.status


def _decision(d: DecisionRecord) -> str:
    """`paper: opened #1 position/...` or `paper: filtered max_new_per_wave`."""
    if d.outcome == "opened":
        rank = f" #{d.rank}" if d.rank is not None else ""
        return f"{d.account}: opened{rank} {d.position_workflow_id or '-'}"
    return f"{d.account}: filtered {d.reason or '-'}"


def format_signal(s: SignalRecord, decisions: Sequence[DecisionRecord]) -> str:
    """One signal as a line of `signals tail`, with its decisions so far (by account)."""
    line = "  ".join(
        [
            _time(s.received_at, ms=True),
            f"{_ident(s):<22}",
            f"{s.symbol or '-':<12}",
            f"{s.action or '-':<4}",
            f"{_scores(s):<24}",
            _status(s),
        ]
    )
    if decisions:
        line += "  -> " + "; ".join(_decision(d) for d in decisions)
    return line


def format_decision(s: SignalRecord, d: DecisionRecord) -> str:
    """A decision made after its signal was printed, as a line of `signals tail -f`."""
    return "  ".join(
        [
            _time(d.decided_at, ms=True),
            f"{_ident(s):<22}",
            f"{s.symbol or '-':<12}",
            f"decided -> {_decision(d)}",
        ]
    )


def filtered_text(outcomes: Mapping[str, int]) -> str:
    """The filter reasons of a wave, most frequent first: `max_new_per_wave 3, cooldown 1`."""
    counts = sorted(
        ((reason, n) for reason, n in outcomes.items() if reason != "opened" and n),
        key=lambda rn: (-rn[1], rn[0]),
    )
    return ", ".join(f"{reason} {n}" for reason, n in counts) or "-"


def _fields(pairs: Sequence[tuple[str, str]]) -> str:
    width = max(len(k) for k, _ in pairs)
    return "\n".join(f"  {k.ljust(width)}  {v}" for k, v in pairs)


# --- signals tail ----------------------------------------------------------------------------


def _decision_horizon(settings: Settings) -> timedelta:
    periods = [s.wave_period for s in settings.signal_services]
    return max([MIN_DECISION_HORIZON, *(2 * p for p in periods)])


async def cmd_signals_tail(
    args: pc.Args, settings: Settings, stop: asyncio.Event | None = None
) -> int:
    """The last `-n` signals with their decisions; with `-f`, then every new signal and
    every decision made about a printed signal, until Ctrl-C (or `stop` is set)."""
    store = await _open_store(settings)
    try:
        latest = await rows.latest_signals(store, args.service, args.n)
        for signal, decisions in latest:
            print(format_signal(signal, decisions))
        if not args.follow:
            return 0
        if stop is None:
            from workers.cli import _stop_event

            stop = _stop_event()
        await _follow(store, settings, args.service, latest, stop)
    finally:
        await store.close()
    return 0


async def _follow(
    store: Store,
    settings: Settings,
    service: str | None,
    printed: Sequence[rows.SignalDecisions],
    stop: asyncio.Event,
) -> None:
    """Print new signals as they are stored, and decisions as they are made."""
    horizon = _decision_horizon(settings)
    last = printed[-1][0] if printed else None
    # Signals still waiting for decisions (rejected ones never get any), and the
    # decisions already shown, by (signal row, account).
    watched: dict[str, SignalRecord] = {}
    shown: set[tuple[str, str]] = set()

    def watch(batch: Iterable[rows.SignalDecisions]) -> None:
        for signal, decisions in batch:
            if signal.status != "rejected":
                watched[signal.id] = signal
            shown.update((d.signal_row_id, d.account) for d in decisions)

    watch(printed)
    last_at = None if last is None else last.received_at
    last_id = None if last is None else last.id
    while not stop.is_set():
        while True:
            page = await rows.signals_after(store, service, last_at, last_id, PAGE)
            for signal, decisions in page:
                print(format_signal(signal, decisions), flush=True)
            watch(page)
            if page:
                last_at, last_id = page[-1][0].received_at, page[-1][0].id
            if len(page) < PAGE:
                break
        decided = await rows.decisions_of(store, list(watched))
        for row_id, decisions in decided.items():
            for d in decisions:
                if (row_id, d.account) not in shown:
                    shown.add((row_id, d.account))
                    print(format_decision(watched[row_id], d), flush=True)
        cutoff = datetime.now(UTC) - horizon
        for row_id in [i for i, s in watched.items() if s.received_at < cutoff]:
            del watched[row_id]
        shown.difference_update([key for key in shown if key[0] not in watched])
        try:
            await asyncio.wait_for(stop.wait(), timeout=POLL.total_seconds())
        except TimeoutError:
            pass


# --- waves -----------------------------------------------------------------------------------


def _wave_row(w: WaveRecord) -> list[str]:
    return [
        _time(w.period_start)[:-3],
        w.account or "-",
        w.status,
        str(w.signals_received),
        str(w.positions_started),
        filtered_text(w.outcomes) if w.outcomes else str(w.signals_filtered or "-"),
        _took(w.duration_ms),
        w.id,
    ]


async def cmd_waves(args: pc.Args, settings: Settings) -> int:
    """The latest waves, newest first: what each received, opened and filtered, and why."""
    store = await _open_store(settings)
    try:
        found = await rows.waves(store, args.account, args.n)
    finally:
        await store.close()
    if not found:
        whose = f" of {args.account}" if args.account else ""
        print(f"no waves{whose} recorded yet")
        return 0
    header = ["period", "account", "status", "signals", "opened", "filtered", "took", "wave"]
    print(terminal.table(header, [_wave_row(w) for w in found]))
    return 0


async def _find_wave(store: Store, text: str) -> WaveRecord:
    """The wave named `text` (`wave/paper/2026-12-02T04:00:00+00:00`, the `wave/` prefix
    optional, the time in any ISO spelling); `CommandError` naming the latest waves."""
    wave_id = text if text.startswith("wave/") else f"wave/{text}"
    found = await rows.wave(store, wave_id)
    account, _, when = wave_id.removeprefix("wave/").partition("/")
    if found is None and account and when:
        try:
            period = datetime.fromisoformat(when.replace("Z", "+00:00"))
        except ValueError:
            period = None
        if period is not None:
            found = await rows.wave_at(store, account, period.replace(tzinfo=period.tzinfo or UTC))
    if found is not None:
        return found
    known = await rows.waves(store, account or None, 5) or await rows.waves(store, None, 5)
    hint = (
        "; the latest are:\n" + "\n".join(f"  {w.id}" for w in known)
        if known
        else "; no wave is recorded yet"
    )
    raise ptext.CommandError(
        f"no wave {wave_id!r} (a wave id is wave/ACCOUNT/PERIOD-START, see `posguard waves`)" + hint
    )


def describe_wave(w: WaveRecord, entries: Sequence[rows.WaveEntry], settings: Settings) -> str:
    """The header of one wave, then each of its signals with the wave's decision."""
    counts = (
        f"{w.signals_received} received, {w.signals_selected} selected, "
        f"{w.signals_filtered} filtered"
    )
    pairs = [
        ("account", w.account or "-"),
        ("period", f"{_time(w.period_start)} UTC"),
        ("deadline", f"{_time(w.deadline)} UTC"),
        ("signals", counts),
        ("opened", f"{w.positions_started} position{'' if w.positions_started == 1 else 's'}"),
        ("filtered", filtered_text(w.outcomes)),
    ]
    if w.processed_at is not None:
        pairs.append(("processed", f"{_time(w.processed_at)} UTC in {_took(w.duration_ms)}"))
    if w.workflow_id:
        pairs.append(("Web UI", ptext.ui_url(settings, w.workflow_id)))
    text = f"{w.id}  {w.status}\n{_fields(pairs)}"
    if not entries:
        return f"{text}\n\nno signals recorded for this wave"
    table = []
    for s, d in entries:
        if d is None:
            rank, decision, detail = "-", "pending", "not decided yet"
        elif d.outcome == "opened":
            rank, decision = str(d.rank) if d.rank is not None else "-", "opened"
            detail = " ".join(x for x in (d.position_workflow_id, d.detail) if x) or "-"
        else:
            rank, decision, detail = "-", d.reason or "filtered", d.detail or "-"
        table.append(
            [
                rank,
                _ident(s),
                s.symbol or "-",
                s.action or "-",
                ptext.dec(s.score_week),
                ptext.dec(s.score_month),
                decision,
                detail,
            ]
        )
    header = ["rank", "signal", "symbol", "action", "week", "month", "decision", "detail"]
    return f"{text}\n\n{terminal.table(header, table)}"


async def cmd_wave(args: pc.Args, settings: Settings) -> int:
    """One wave: its header, then every signal with its decision (rank or reason)."""
    store = await _open_store(settings)
    try:
        found = await _find_wave(store, args.wave_id)
        entries = await rows.wave_decisions(store, found.id)
    finally:
        await store.close()
    print(describe_wave(found, entries, settings))
    return 0


# --- stoplist --------------------------------------------------------------------------------


def _stoplist_account(settings: Settings, name: str | None) -> str:
    """`*` (every account) when not given; else a configured account's name."""
    if name is None or name == rows.EVERY_ACCOUNT:
        return rows.EVERY_ACCOUNT
    return pc.account_of(settings, name).name


def _whose(account: str) -> str:
    return "every account" if account == rows.EVERY_ACCOUNT else account


async def cmd_stoplist_add(args: pc.Args, settings: Settings) -> int:
    """Never open `symbol` on the account (default: every account) from the next wave on."""
    account = _stoplist_account(settings, args.account)
    entry = StoplistEntry(
        account=account, symbol=args.symbol, reason=args.reason, added_by=_operator("stoplist")
    )
    store = await _open_store(settings)
    try:
        added = await rows.add_to_stoplist(store, entry)
        stored = [
            e
            for e in await rows.stoplist(store, account)
            if e.account == account and e.symbol == args.symbol
        ]
    finally:
        await store.close()
    reason = stored[0].reason if stored else args.reason
    because = f" ({reason})" if reason else ""
    if added:
        print(f"added {args.symbol} to the stoplist of {_whose(account)}{because}")
    else:
        print(f"{args.symbol} was on the stoplist of {_whose(account)} already{because}")
    print("new positions on it are not opened from the next wave on; open ones stay managed")
    return 0


async def cmd_stoplist_remove(args: pc.Args, settings: Settings) -> int:
    """Take `symbol` off the stoplist of the account (default: the every-account entry)."""
    account = args.account or rows.EVERY_ACCOUNT
    store = await _open_store(settings)
    try:
        removed = await rows.remove_from_stoplist(
            store, account, args.symbol, by=_operator("stoplist")
        )
        others = [] if removed else await rows.stoplist(store, None)
    finally:
        await store.close()
    if removed:
        print(f"removed {args.symbol} from the stoplist of {_whose(account)}")
        return 0
    elsewhere = sorted(e.account for e in others if e.symbol == args.symbol)
    hint = "".join(
        f"\n  it is on the stoplist of {_whose(a)}: posguard stoplist remove {args.symbol}"
        + ("" if a == rows.EVERY_ACCOUNT else f" --account {a}")
        for a in elsewhere
    )
    print(f"{args.symbol} is not on the stoplist of {_whose(account)}{hint}")
    return 1


async def cmd_stoplist_list(args: pc.Args, settings: Settings) -> int:
    """The stoplist: every entry, or those that apply to `--account` (its own and `*`)."""
    store = await _open_store(settings)
    try:
        entries = await rows.stoplist(store, args.account)
    finally:
        await store.close()
    if not entries:
        print("the stoplist is empty" + (f" for {args.account}" if args.account else ""))
        return 0
    table = [
        [e.symbol, _whose(e.account), e.reason or "-", e.added_by or "-", _time(e.added_at)]
        for e in entries
    ]
    print(terminal.table(["symbol", "account", "reason", "added by", "added (UTC)"], table))
    return 0


# --- pauses ----------------------------------------------------------------------------------


def _pause_text(p: AccountPause) -> str:
    detail = f": {p.detail}" if p.detail else ""
    by = f" by {p.paused_by}" if p.paused_by else ""
    return f"{p.source} pause ({p.reason}{detail}{by}, since {_time(p.since)} UTC)"


async def cmd_pause(args: pc.Args, settings: Settings) -> int:
    """Pause new entries of the account (open positions stay managed); an alert is raised."""
    account = pc.account_of(settings, args.account).name
    store = await _open_store(settings)
    try:
        pause = await rows.pause_entries(store, account, args.reason, "", _operator("pause"))
    finally:
        await store.close()
    print(
        f"paused new entries on {account}: {pause.reason} (since {_time(pause.since)} UTC)\n"
        f"open positions stay managed; `posguard resume --account {account}` resumes"
    )
    return 0


async def cmd_resume(args: pc.Args, settings: Settings) -> int:
    """Resume new entries: clears the operator's and the exchange's pause of the account."""
    account = pc.account_of(settings, args.account).name
    store = await _open_store(settings)
    try:
        cleared = await rows.resume_entries(store, account, _operator("resume"))
    finally:
        await store.close()
    if not cleared:
        print(f"new entries on {account} were not paused: nothing to resume")
        return 0
    print(f"resumed new entries on {account}; cleared:")
    for p in cleared:
        print(f"  {_pause_text(p)}")
    if any(p.source == "exchange" for p in cleared):
        print("the next wave checks the exchange again and pauses anew if it still refuses")
    return 0


async def cmd_paused(args: pc.Args, settings: Settings) -> int:
    """Which accounts have new entries paused, by whom and why."""
    store = await _open_store(settings)
    try:
        pauses = await rows.account_pauses(store, args.account)
    finally:
        await store.close()
    if not pauses:
        whose = args.account or "any account"
        print(f"new entries are not paused on {whose}")
        return 0
    table = [
        [p.account, p.source, p.reason, p.detail or "-", p.paused_by or "-", _time(p.since)]
        for p in pauses
    ]
    print(terminal.table(["account", "source", "reason", "detail", "by", "since (UTC)"], table))
    return 0


# --- the command line -------------------------------------------------------------------------


def add_commands(cli: click.Group) -> None:
    """Add `signals`, `waves`, `wave`, `stoplist`, `pause`, `resume` and `paused`."""
    how_many = click.IntRange(min=1)

    @cli.group("signals", help="the signals received")
    def signals() -> None:
        """`posguard signals ...`."""

    @signals.command("tail", help="the latest signals with their decisions (and follow with -f)")
    @click.option("-n", type=how_many, default=50, show_default=True, help="how many")
    @click.option("-f", "--follow", is_flag=True, help="keep printing new ones")
    @click.option("--service", help="only this signal service")
    def signals_tail(**params: Any) -> Invocation:
        return runs(cmd_signals_tail)(**params)

    @cli.command("waves", help="the latest waves: signals, opened, filtered and why")
    @click.option("--account", help="only this account (default: every account)")
    @click.option("-n", type=how_many, default=20, show_default=True, help="how many")
    def waves(**params: Any) -> Invocation:
        return runs(cmd_waves)(**params)

    @cli.command("wave", help="one wave: each signal and its decision")
    @click.argument("wave_id", metavar="ID")
    def wave(**params: Any) -> Invocation:
        """ID is e.g. wave/paper/2026-12-02T04:00:00+00:00 or its time."""
        return runs(cmd_wave)(**params)

    @cli.group("stoplist", help="symbols never to open (from the next wave on)")
    def stoplist() -> None:
        """`posguard stoplist ...`."""

    @stoplist.command("add", help="never open SYMBOL (again: replaces its reason)")
    @click.argument("symbol", type=SYMBOL)
    @click.option("--account", help="configured account (default: every account, '*')")
    @click.option("--reason", default="", help="why, kept with the entry")
    def stoplist_add(**params: Any) -> Invocation:
        return runs(cmd_stoplist_add)(**params)

    @stoplist.command("remove", help="open SYMBOL again")
    @click.argument("symbol", type=SYMBOL)
    @click.option("--account", help="the account's entry (default: the every-account one)")
    def stoplist_remove(**params: Any) -> Invocation:
        return runs(cmd_stoplist_remove)(**params)

    @stoplist.command("list", help="the entries (with --account: those that apply to it)")
    @click.option("--account", help="its own entries and the every-account ones")
    def stoplist_list(**params: Any) -> Invocation:
        return runs(cmd_stoplist_list)(**params)

    @cli.command("pause", help="pause new entries of an account; open positions stay managed")
    @click.option("--account", help="configured account (default: the first one)")
    @click.option("--reason", required=True, help="why, recorded and alerted")
    def pause(**params: Any) -> Invocation:
        return runs(cmd_pause)(**params)

    @cli.command("resume", help="resume new entries (clears operator and exchange pauses)")
    @click.option("--account", help="configured account (default: the first one)")
    def resume(**params: Any) -> Invocation:
        return runs(cmd_resume)(**params)

    @cli.command("paused", help="which accounts have new entries paused, and why")
    @click.option("--account", help="only this account")
    def paused(**params: Any) -> Invocation:
        return runs(cmd_paused)(**params)
