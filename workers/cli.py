"""The `posguard` command line.

Every command reads the same settings (POSGUARD_* environment, posguard.toml).
Exit codes: 0 success, 1 failure of the command, 2 a server could not be reached,
141 the reader of stdout went away (`posguard positions | head -1`), quietly.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import logging
import os
import signal
import sys
from collections.abc import Callable, Coroutine
from datetime import timedelta
from typing import Any, NoReturn

from domain.position import CloseReason
from domain.types import ExchangeId
from workers import position_commands as pc
from workers import reconcile_commands, signal_commands
from workers.completion import COMPLETE, SCRIPTS, candidates
from workers.settings import Settings
from workers.temporal import UnreachableError

Command = Callable[[argparse.Namespace, Settings], Coroutine[Any, Any, int]]

EXCHANGE_NAMES = [e.value for e in ExchangeId]
"""`--exchange` choices: ccxt's names of the exchanges posguard trades on."""


def _stop_event() -> asyncio.Event:
    """An event set by SIGINT/SIGTERM, so Ctrl-C stops everything cleanly."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def cmd_dev(args: argparse.Namespace, settings: Settings) -> int:
    from workers.dev import run_dev_stack

    return await run_dev_stack(settings, _stop_event())


async def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    from workers.metrics import sdk_metrics_runtime
    from workers.worker import run_worker

    client = await pc.temporal_client(
        settings, runtime=sdk_metrics_runtime(settings), process="worker"
    )
    await run_worker(client, settings, _stop_event())
    return 0


async def cmd_ingest(args: argparse.Namespace, settings: Settings) -> int:
    from workers.ingest import run_ingest
    from workers.metrics import sdk_metrics_runtime

    client = await pc.temporal_client(
        settings, runtime=sdk_metrics_runtime(settings), process="ingest"
    )
    await run_ingest(client, settings, _stop_event())
    return 0


async def cmd_gate(args: argparse.Namespace, settings: Settings) -> int:
    from signals_ingest.gate_process import run_gate
    from signals_ingest.market_feed import Shard
    from workers.exchanges import make_market_data_client
    from workers.metrics import sdk_metrics_runtime
    from workers.worker import open_store

    store = await open_store(settings)  # WEBSOCKET_* events are recorded
    try:
        await run_gate(
            settings,
            _stop_event(),
            client=await pc.temporal_client(
                settings, runtime=sdk_metrics_runtime(settings), process="gate"
            ),
            shard=Shard.parse(args.shard),
            health_port=args.health_port,
            events=store,
            market_data_client=make_market_data_client,
        )
    finally:
        await store.close()
    return 0


async def cmd_web(args: argparse.Namespace, settings: Settings) -> int:
    from workers.dashboard.server import run_dashboard
    from workers.metrics import sdk_metrics_runtime

    if args.port is not None:
        settings = settings.model_copy(update={"web_port": args.port})
    if settings.web_port < 0:
        raise pc.CommandError("web_port is -1: give the dashboard a port (--port 8704)")
    client = await pc.temporal_client(
        settings, runtime=sdk_metrics_runtime(settings), process="web"
    )
    await run_dashboard(client, settings, _stop_event())
    return 0


async def cmd_health(args: argparse.Namespace, settings: Settings) -> int:
    from workers.health_command import health

    return await health(settings, args.url)


async def cmd_db_migrate(args: argparse.Namespace, settings: Settings) -> int:
    from workers.worker import open_store

    store = await open_store(settings)
    try:
        rows = await store.pool.fetch(
            "SELECT version, name, applied_at FROM schema_migrations ORDER BY version"
        )
        for row in rows:
            print(
                f"{row['version']:04d}_{row['name']}  applied {row['applied_at']:%Y-%m-%d %H:%M:%S}"
            )
        print(f"schema at version {rows[-1]['version'] if rows else 0}")
    finally:
        await store.close()
    return 0


async def cmd_db_retention(args: argparse.Namespace, settings: Settings) -> int:
    from workers.worker import open_store

    store = await open_store(settings)
    try:
        dropped = await store.apply_retention(timedelta(days=args.days))
        print(f"dropped {dropped} event partition(s) older than {args.days} days")
    finally:
        await store.close()
    return 0


async def cmd_events_tail(args: argparse.Namespace, settings: Settings) -> int:
    from workers.worker import open_store

    store = await open_store(settings)
    try:
        position = args.position
        if position is not None and "/" not in position:  # the short id tables print
            position = pc.resolve_position_id(
                position, [r.id for r in await store.positions(symbol=args.symbol)]
            )
        filters: dict[str, Any] = {
            "position_id": position,
            "symbol": args.symbol,
            "event_type": args.type,
            "min_severity": args.severity,
        }
        events = await store.events(**filters, limit=args.n, newest_first=True)
        events.sort(key=pc.chronological)
        for event in events:
            print(pc.format_event(event))
        last = events[-1].occurred_at if events else None
        stop = _stop_event() if args.follow else None
        while stop is not None and not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=1)
            except TimeoutError:
                pass
            for event in await store.events(**filters, since=last, limit=1000):
                print(pc.format_event(event), flush=True)
                last = event.occurred_at
    finally:
        await store.close()
    return 0


def _sim_passthrough(argv: list[str]) -> int:
    from simulator.__main__ import main as sim_main

    return sim_main(argv)


async def cmd_completion(args: argparse.Namespace, settings: Settings) -> int:
    """Print the completion script of `args.shell` (see workers/completion.py)."""
    print(SCRIPTS[args.shell], end="")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="posguard",
        description="Crypto-futures position manager: every position a durable Temporal "
        "workflow, always protected by a stop-loss on the exchange.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "dev",
        help="run the whole embedded stack (Temporal + UI, PostgreSQL, paper exchange, worker)",
    )
    p.set_defaults(func=cmd_dev)

    p = sub.add_parser("worker", help="run a worker against TEMPORAL_ADDRESS / DATABASE_URL")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser(
        "ingest",
        help="read the signal services ([[signal_services]]): store every signal, feed the waves",
    )
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser(
        "gate",
        help="run the price gate: mark prices in, a message to a position only when it "
        "leaves its band",
    )
    p.add_argument("--shard", default="0/1", help="this process's symbols as i/n (default 0/1)")
    p.add_argument("--health-port", type=int, default=None, help="default: health_port + 1")
    p.set_defaults(func=cmd_gate)

    p = sub.add_parser(
        "web",
        help="serve the dashboard: open positions, stops, PnL, charts, events, alerts",
        description="Serve the dashboard (docs/dashboard.md) on web_host:web_port "
        "(default http://127.0.0.1:8704/), with its /health and /metrics. Read-only unless "
        "web_actions and web_token are set.",
    )
    p.add_argument("--port", type=int, default=None, help="default: web_port (8704)")
    p.set_defaults(func=cmd_web)

    p = sub.add_parser(
        "health",
        help="every process's /health: each dependency with the age of its last answer",
        description="Read the /health of the worker (health_port), the price gate (+1) and "
        "the ingest (+2) on this host, or of the --url given, and print each dependency "
        "with its age. Exit 1 if any process does not answer or is unhealthy.",
    )
    p.add_argument("--url", action="append", help="a /health URL to read instead (repeatable)")
    p.set_defaults(func=cmd_health)

    db = sub.add_parser("db", help="database maintenance").add_subparsers(
        dest="db_command", required=True, metavar="DB_COMMAND"
    )
    p = db.add_parser("migrate", help="apply pending migrations (idempotent) and list them")
    p.set_defaults(func=cmd_db_migrate)
    p = db.add_parser("retention", help="drop event partitions older than N days")
    p.add_argument("--days", type=int, default=None, help="default: settings")
    p.set_defaults(func=cmd_db_retention)

    events = sub.add_parser("events", help="the recorded event log").add_subparsers(
        dest="events_command", required=True, metavar="EVENTS_COMMAND"
    )
    p = events.add_parser("tail", help="print the latest events (and follow with -f)")
    p.add_argument("-n", type=int, default=50, help="how many (default 50)")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new events")
    p.add_argument(
        "--position", help="only this position id (or its short form, as the tables print it)"
    )
    p.add_argument("--symbol", help="only this symbol, e.g. BTCUSDT")
    p.add_argument("--type", help="only this event type, e.g. sl_placed")
    p.add_argument(
        "--severity",
        choices=["debug", "info", "warning", "error", "critical"],
        help="at least this severity",
    )
    p.set_defaults(func=cmd_events_tail)

    p = sub.add_parser(
        "open",
        help="open a position: start its workflow, wait until it is protected",
        description="Open a position at market and protect it with a reduce-only stop. "
        "Starts the position's workflow, then waits until it is active (or rolled back, "
        "or failed) and prints a summary. Exit 1 if a position on that symbol is open.",
    )
    p.add_argument("symbol", type=pc.symbol, help="e.g. BTCUSDT")
    p.add_argument("side", choices=["long", "short"])
    size = p.add_mutually_exclusive_group(required=True)
    size.add_argument(
        "--quote", type=pc.amount, metavar="AMOUNT", help="notional in quote, e.g. 100"
    )
    size.add_argument(
        "--risk", type=pc.amount, metavar="AMOUNT", help="loss at the stop in quote, e.g. 10"
    )
    p.add_argument(
        "--stop",
        type=pc.stop_rule,
        required=True,
        metavar="LEVEL",
        help="2%% (from the entry) or 59000 (a price)",
    )
    p.add_argument(
        "--emergency-stop",
        type=pc.percent,
        metavar="PCT",
        help="used only if the stop cannot be placed; default max(2 x stop, stop + 3)%% "
        "or 5%% for a stop price",
    )
    p.add_argument(
        "--take-profit", type=pc.take_profit_rule, metavar="LEVEL", help="3%% or a price"
    )
    p.add_argument("--max-age", type=pc.duration, metavar="DURATION", help="close after, e.g. 4h")
    pc.add_trailing_arguments(p)
    p.add_argument(
        "--no-trail", action="store_true", help="no trailing even if settings give a default"
    )
    p.add_argument("--account", help="configured account (default: the first one)")
    p.add_argument(
        "--exchange",
        choices=EXCHANGE_NAMES,
        help="the first account on this exchange (binanceusdm or bybit)",
    )
    p.add_argument("--timeout", type=float, default=30, help="seconds to wait (default 30)")
    p.add_argument("--no-wait", action="store_true", help="print the workflow id and return")
    p.set_defaults(func=pc.cmd_open)

    p = sub.add_parser(
        "trail",
        help="change a running position's trailing stop settings (never loosens the stop)",
    )
    p.add_argument("symbol", type=pc.symbol, help="e.g. BTCUSDT")
    pc.add_trailing_arguments(p)
    p.add_argument("--account", help="configured account (default: the first one)")
    p.add_argument(
        "--exchange",
        choices=EXCHANGE_NAMES,
        help="the first account on this exchange (binanceusdm or bybit)",
    )
    p.add_argument(
        "--side",
        choices=["long", "short"],
        help="on a hedge-mode account, which of the symbol's positions (needed when both are open)",
    )
    p.set_defaults(func=pc.cmd_trail)

    p = sub.add_parser(
        "close",
        help="close a position at market and cancel its orders (the `close` update)",
    )
    p.add_argument("symbol", type=pc.symbol, help="e.g. BTCUSDT")
    p.add_argument("--account", help="configured account (default: the first one)")
    p.add_argument(
        "--exchange",
        choices=EXCHANGE_NAMES,
        help="the first account on this exchange (binanceusdm or bybit)",
    )
    p.add_argument(
        "--reason",
        default="operator",
        choices=[r.value for r in CloseReason],
        help="recorded reason (default operator)",
    )
    p.add_argument("--timeout", type=float, default=60, help="seconds to wait (default 60)")
    p.add_argument(
        "--side",
        choices=["long", "short"],
        help="on a hedge-mode account, which of the symbol's positions (needed when both are open)",
    )
    p.set_defaults(func=pc.cmd_close)

    p = sub.add_parser("positions", help="table of open positions (--all: closed ones too)")
    p.add_argument("--all", action="store_true", help="also closed positions, from the store")
    p.set_defaults(func=pc.cmd_positions)

    p = sub.add_parser("position", help="one position: its state and its event timeline")
    p.add_argument("symbol", type=pc.symbol, help="e.g. BTCUSDT")
    p.add_argument("--account", help="configured account (default: the first one)")
    p.add_argument(
        "--exchange",
        choices=EXCHANGE_NAMES,
        help="the first account on this exchange (binanceusdm or bybit)",
    )
    p.add_argument("-n", type=int, default=50, help="how many events (default 50)")
    p.add_argument(
        "--side",
        choices=["long", "short"],
        help="on a hedge-mode account, which of the symbol's positions (needed when both are open)",
    )
    p.set_defaults(func=pc.cmd_position)

    reconcile_commands.add_commands(sub)

    p = sub.add_parser(
        "completion",
        help='shell completion: eval "$(posguard completion bash)" (or zsh) in your shell\'s rc',
    )
    p.add_argument("shell", choices=sorted(SCRIPTS), help="bash or zsh")
    p.set_defaults(func=cmd_completion)
    signal_commands.add_commands(sub)

    sub.add_parser(
        "sim", help="run the paper exchange standalone (see `posguard sim --help`)", add_help=False
    )
    return parser


def _exit_now(code: int) -> NoReturn:
    """End the process with `code` without interpreter teardown.

    The Temporal client's Rust threads can abort a finalising interpreter
    ("PyGILState_Release: thread state ... must be current", temporalio/sdk-python#300),
    which turns a successful command into exit -6 or -11. Exit handlers (the
    embedded PostgreSQL's stop, logging) still run first.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    atexit._run_exitfuncs()
    os._exit(code)


SIGPIPE_EXIT = 141
"""Exit code when stdout's reader went away (128 + SIGPIPE, as a shell reports it)."""


def _stdout_gone() -> int:
    """stdout's reader is gone (`| head -1`): say nothing more, exit `SIGPIPE_EXIT`.

    stdout is pointed at /dev/null so the flushes still to come (ours, the
    interpreter's) have somewhere to go instead of raising again.
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return SIGPIPE_EXIT


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `posguard` console script.

    Run as a program (argv None) it ends the process itself once the command is
    done (see `_exit_now`), quietly with `SIGPIPE_EXIT` when its output is piped
    into a reader that stops early; called with argv (in-process) it returns the code.
    """
    if argv is not None:
        return _main(argv)
    try:
        try:
            code = _main(sys.argv[1:])
        except SystemExit as exc:  # argparse: --help, a usage error
            if exc.code is None or isinstance(exc.code, int):
                code = exc.code or 0
            else:
                print(exc.code, file=sys.stderr)
                code = 1
        sys.stdout.flush()
    except BrokenPipeError:
        code = _stdout_gone()
    _exit_now(code)


def _main(argv: list[str]) -> int:
    if argv[:1] == ["sim"]:
        return _sim_passthrough(argv[1:])
    if argv[:1] == [COMPLETE]:  # the completion script asking: no settings, no logging
        print("\n".join(candidates(build_parser(), argv[1:])))
        return 0
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    settings = Settings()
    if getattr(args, "days", "unset") is None:
        args.days = settings.event_retention_days
    func: Command = args.func
    try:
        return asyncio.run(func(args, settings))
    except UnreachableError as exc:
        print(f"posguard: {exc}", file=sys.stderr)
        return 2
    except pc.CommandError as exc:
        print(f"posguard: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
