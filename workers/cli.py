"""The `posguard` command line (Click for the commands, Rich for what they print).

Every command reads the same settings (POSGUARD_* environment, posguard.toml).
Exit codes: 0 success, 1 failure of the command, 2 a mistyped command line or a
server that could not be reached, 130 Ctrl-C, 141 the reader of stdout went away
(`posguard positions | head -1`), quietly. A mistake is answered with one line on
stderr, never a traceback.

Click only parses: each command's callback returns an `Invocation` (the async
command function and its arguments), which `main` runs. `parse(argv)` gives the
same without running anything (the deployment test checks docker-compose's
commands with it).
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import signal
import sys
from datetime import timedelta
from typing import Any, NoReturn

import click

from workers import position_commands as pc
from workers import position_text as ptext
from workers import reconcile_commands, signal_commands, terminal
from workers.cli_options import (
    AMOUNT,
    CLOSE_REASONS,
    DURATION,
    PERCENT,
    SIDES,
    STOP,
    SYMBOL,
    TAKE_PROFIT,
    Invocation,
    account_options,
    runs,
    side_option,
    trailing_options,
)
from workers.completion import COMPLETE_VAR, SHELLS, script
from workers.position_commands import Args
from workers.settings import Settings
from workers.temporal import UnreachableError


def _stop_event() -> asyncio.Event:
    """An event set by SIGINT/SIGTERM, so Ctrl-C stops everything cleanly."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def cmd_dev(args: Args, settings: Settings) -> int:
    from workers.dev import run_dev_stack

    return await run_dev_stack(settings, _stop_event())


async def cmd_worker(args: Args, settings: Settings) -> int:
    from workers.metrics import sdk_metrics_runtime
    from workers.worker import run_worker

    client = await pc.temporal_client(
        settings, runtime=sdk_metrics_runtime(settings), process="worker"
    )
    await run_worker(client, settings, _stop_event())
    return 0


async def cmd_ingest(args: Args, settings: Settings) -> int:
    from workers.ingest import run_ingest
    from workers.metrics import sdk_metrics_runtime

    client = await pc.temporal_client(
        settings, runtime=sdk_metrics_runtime(settings), process="ingest"
    )
    await run_ingest(client, settings, _stop_event())
    return 0


async def cmd_gate(args: Args, settings: Settings) -> int:
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


async def cmd_web(args: Args, settings: Settings) -> int:
    from workers.dashboard.server import run_dashboard
    from workers.metrics import sdk_metrics_runtime

    if args.port is not None:
        settings = settings.model_copy(update={"web_port": args.port})
    if settings.web_port < 0:
        raise ptext.CommandError("web_port is -1: give the dashboard a port (--port 8704)")
    client = await pc.temporal_client(
        settings, runtime=sdk_metrics_runtime(settings), process="web"
    )
    await run_dashboard(client, settings, _stop_event())
    return 0


async def cmd_health(args: Args, settings: Settings) -> int:
    from workers.health_command import health

    return await health(settings, args.url)


async def cmd_db_migrate(args: Args, settings: Settings) -> int:
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


async def cmd_db_retention(args: Args, settings: Settings) -> int:
    from workers.worker import open_store

    store = await open_store(settings)
    try:
        dropped = await store.apply_retention(timedelta(days=args.days))
        print(f"dropped {dropped} event partition(s) older than {args.days} days")
    finally:
        await store.close()
    return 0


async def cmd_events_tail(args: Args, settings: Settings) -> int:
    from workers.worker import open_store

    store = await open_store(settings)
    try:
        position = args.position
        if position is not None and "/" not in position:  # the short id tables print
            position = ptext.resolve_position_id(
                position, [r.id for r in await store.positions(symbol=args.symbol)]
            )
        filters: dict[str, Any] = {
            "position_id": position,
            "symbol": args.symbol,
            "event_type": args.type,
            "min_severity": args.severity,
        }
        events = await store.events(**filters, limit=args.n, newest_first=True)
        events.sort(key=ptext.chronological)
        for event in events:
            terminal.event_line(ptext.format_event(event), event.severity.value)
        last = events[-1].occurred_at if events else None
        stop = _stop_event() if args.follow else None
        while stop is not None and not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=1)
            except TimeoutError:
                pass
            for event in await store.events(**filters, since=last, limit=1000):
                terminal.event_line(ptext.format_event(event), event.severity.value)
                last = event.occurred_at
    finally:
        await store.close()
    return 0


async def cmd_sim(args: Args, settings: Settings) -> int:
    """Never run: `posguard sim ...` is handed to the simulator before Click (see
    `_main`); this command exists so that `--help` and completion list it."""
    raise ptext.CommandError("posguard sim takes its own arguments: see `posguard sim --help`")


async def cmd_completion(args: Args, settings: Settings) -> int:
    """Print the completion script of `args.shell` (see workers/completion.py)."""
    print(script(cli, args.shell), end="")
    return 0


# --- the command line ---------------------------------------------------------------------------

CONTEXT = {
    "help_option_names": ["-h", "--help"],
    "max_content_width": 100,
    # help read from a pipe or a file is as wide as on a 100-column terminal
    "terminal_width": None if sys.stdout.isatty() else 100,
}


class Commands(click.Group):
    """A group whose command list shows each command's whole summary, wrapped (Click
    would cut it with "..." to fit one line)."""

    group_class = type  # its subgroups (`db`, `events`, ...) are Commands too

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((name, command.get_short_help_str(limit=1000)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(
    cls=Commands,
    context_settings=CONTEXT,
    help="Crypto-futures position manager: every position a durable Temporal workflow, "
    "always protected by a stop-loss on the exchange.",
)
@click.option("-v", "--verbose", is_flag=True, help="debug logging")
def cli(verbose: bool) -> None:
    """The `posguard` group; its commands are added below and by the command modules."""


cli.command("dev", help="run the whole embedded stack (Temporal + UI, PostgreSQL, paper "
            "exchange, worker, gate, ingest, dashboard)")(runs(cmd_dev))  # fmt: skip
cli.command("worker", help="run a worker against TEMPORAL_ADDRESS / DATABASE_URL")(runs(cmd_worker))
cli.command(
    "ingest",
    help="read the signal services ([[signal_services]]): store every signal, feed the waves",
)(runs(cmd_ingest))


@cli.command(
    "gate",
    help="run the price gate: mark prices in, a message to a position only when it leaves its band",
)
@click.option("--shard", default="0/1", show_default=True, help="this process's symbols as i/n")
@click.option("--health-port", type=int, help="default: health_port + 1")
def gate(**params: Any) -> Invocation:
    return runs(cmd_gate)(**params)


@cli.command(
    "web",
    help="Serve the dashboard (docs/dashboard.md) on web_host:web_port (default "
    "http://127.0.0.1:8704/), with its /health and /metrics. Read-only unless web_actions "
    "and web_token are set.",
    short_help="serve the dashboard: open positions, stops, PnL, charts, events, alerts",
)
@click.option("--port", type=int, help="default: web_port (8704)")
def web(**params: Any) -> Invocation:
    return runs(cmd_web)(**params)


@cli.command(
    "health",
    help="Read the /health of the worker (health_port), the price gate (+1) and the ingest "
    "(+2) on this host, or of the --url given, and print each dependency with its age. "
    "Exit 1 if any process does not answer or is unhealthy.",
    short_help="every process's /health: each dependency with the age of its last answer",
)
@click.option("--url", multiple=True, help="a /health URL to read instead (repeatable)")
def health(**params: Any) -> Invocation:
    return runs(cmd_health)(**params)


@cli.group("db", help="database maintenance")
def db() -> None:
    """`posguard db ...`."""


db.command("migrate", help="apply pending migrations (idempotent) and list them")(
    runs(cmd_db_migrate)
)


@db.command("retention", help="drop event partitions older than N days")
@click.option("--days", type=click.IntRange(min=1), help="default: event_retention_days")
def db_retention(**params: Any) -> Invocation:
    return runs(cmd_db_retention)(**params)


@cli.group("events", help="the recorded event log")
def events() -> None:
    """`posguard events ...`."""


@events.command("tail", help="print the latest events (and follow with -f)")
@click.option("-n", type=click.IntRange(min=1), default=50, show_default=True, help="how many")
@click.option("-f", "--follow", is_flag=True, help="keep printing new events")
@click.option(
    "--position", help="only this position id (or its short form, as the tables print it)"
)
@click.option("--symbol", help="only this symbol, e.g. BTCUSDT")
@click.option("--type", help="only this event type, e.g. sl_placed")
@click.option(
    "--severity",
    type=click.Choice(["debug", "info", "warning", "error", "critical"]),
    help="at least this severity",
)
def events_tail(**params: Any) -> Invocation:
    return runs(cmd_events_tail)(**params)


@cli.command(
    "open",
    help="Open a position at market and protect it with a reduce-only stop. Starts the "
    "position's workflow, then waits until it is active (or rolled back, or failed) and "
    "prints a summary. Refused before anything starts: an unknown symbol, a stop or "
    "take-profit price on the wrong side of the price, a position already open on the "
    "symbol. Exactly one of --quote and --risk sizes it.",
    short_help="open a position: start its workflow, wait until it is protected",
)
@click.argument("symbol", type=SYMBOL)
@click.argument("side", type=SIDES)
@click.option("--quote", type=AMOUNT, help="notional in quote, e.g. 100")
@click.option("--risk", type=AMOUNT, help="loss at the stop in quote, e.g. 10")
@click.option("--stop", type=STOP, required=True, help="2% (from the entry) or 59000 (a price)")
@click.option(
    "--emergency-stop",
    type=PERCENT,
    help="used only if the stop cannot be placed; default max(2 x stop, stop + 3)% or 5% "
    "for a stop price",
)
@click.option("--take-profit", type=TAKE_PROFIT, help="3% or a price")
@click.option("--max-age", type=DURATION, help="close after, e.g. 4h")
@trailing_options
@click.option("--no-trail", is_flag=True, help="no trailing even if settings give a default")
@account_options
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=30,
              show_default=True, help="seconds to wait")  # fmt: skip
@click.option("--no-wait", is_flag=True, help="print the workflow id and return")
def open_(**params: Any) -> Invocation:
    if (params["quote"] is None) == (params["risk"] is None):
        raise click.UsageError("give exactly one of --quote AMOUNT or --risk AMOUNT")
    return runs(pc.cmd_open)(**params)


@cli.command(
    "trail", help="change a running position's trailing stop settings (never loosens the stop)"
)
@click.argument("symbol", type=SYMBOL)
@trailing_options
@account_options
@side_option
def trail(**params: Any) -> Invocation:
    return runs(pc.cmd_trail)(**params)


@cli.command("close", help="close a position at market and cancel its orders (the `close` update)")
@click.argument("symbol", type=SYMBOL)
@account_options
@click.option("--reason", type=CLOSE_REASONS, default="operator", show_default=True,
              help="recorded reason")  # fmt: skip
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=60,
              show_default=True, help="seconds to wait")  # fmt: skip
@side_option
def close(**params: Any) -> Invocation:
    return runs(pc.cmd_close)(**params)


@cli.command("positions", help="table of open positions (--all: closed ones too)")
@click.option("--all", is_flag=True, help="also closed positions, from the store")
@click.option(
    "--watch",
    type=click.FloatRange(min=0.5),
    metavar="SECONDS",
    help="redraw every SECONDS until Ctrl-C",
)
def positions(**params: Any) -> Invocation:
    return runs(pc.cmd_positions)(**params)


@cli.command("position", help="one position: its state and its event timeline")
@click.argument("symbol", type=SYMBOL)
@account_options
@click.option("-n", type=click.IntRange(min=1), default=50, show_default=True,
              help="how many events")  # fmt: skip
@side_option
def position(**params: Any) -> Invocation:
    return runs(pc.cmd_position)(**params)


reconcile_commands.add_commands(cli)


@cli.command(
    "completion",
    help='Print the shell completion script: add `eval "$(posguard completion bash)"` '
    "(or zsh, or `posguard completion fish | source`) to your shell's rc.",
    short_help="shell completion script (bash, zsh, fish)",
)
@click.argument("shell", type=click.Choice(SHELLS))
def completion(**params: Any) -> Invocation:
    return runs(cmd_completion)(**params)


signal_commands.add_commands(cli)

cli.command(
    "sim",
    help="run the paper exchange standalone (see `posguard sim --help`)",
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    add_help_option=False,
)(runs(cmd_sim))


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


def parse(argv: list[str]) -> Invocation:
    """The Invocation `argv` (the words after `posguard`) names, without running it.

    Raises click.UsageError (a mistyped command line) or click.exceptions.Exit
    (`--help`, which is printed)."""
    result = cli.main(argv, prog_name="posguard", standalone_mode=False)
    if not isinstance(result, Invocation):  # --help, or a group given no command
        raise click.exceptions.Exit(result if isinstance(result, int) else 0)
    return result


def _usage_error(exc: click.UsageError) -> int:
    """One line: the command, what is wrong, where its help is."""
    where = exc.ctx.command_path if exc.ctx is not None else "posguard"
    if isinstance(exc, click.exceptions.NoArgsIsHelpError):  # `posguard db`: its commands
        click.echo(exc.ctx.get_help() if exc.ctx is not None else "", err=True)
        return exc.exit_code
    command = where.removeprefix("posguard").strip()
    terminal.error(
        f"{command + ': ' if command else ''}{exc.format_message()} (see `{where} --help`)"
    )
    return exc.exit_code


def _main(argv: list[str]) -> int:
    if argv[:1] == ["sim"]:
        from simulator.__main__ import main as sim_main

        return sim_main(argv[1:])
    try:
        invocation = parse(argv)
    except click.UsageError as exc:
        return _usage_error(exc)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        terminal.error(exc.format_message())
        return exc.exit_code
    logging.basicConfig(
        level=logging.DEBUG if invocation.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    settings = Settings()
    args = invocation.args
    if invocation.path == ("db", "retention") and args.days is None:
        args.days = settings.event_retention_days
    try:
        return asyncio.run(invocation.func(args, settings))
    except UnreachableError as exc:
        terminal.error(str(exc))
        return 2
    except ptext.CommandError as exc:
        terminal.error(str(exc))
        return 1
    except KeyboardInterrupt:
        return 130


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `posguard` console script.

    Run as a program (argv None) it ends the process itself once the command is
    done (see `_exit_now`), quietly with `SIGPIPE_EXIT` when its output is piped
    into a reader that stops early; called with argv (in-process) it returns the code.
    The shell asking for completions (COMPLETE_VAR set) is answered by Click.
    """
    if argv is not None:
        return _main(argv)
    if COMPLETE_VAR in os.environ:
        cli.main(prog_name="posguard", complete_var=COMPLETE_VAR)  # exits
    try:
        code = _main(sys.argv[1:])
        sys.stdout.flush()
    except BrokenPipeError:
        code = _stdout_gone()
    _exit_now(code)


if __name__ == "__main__":
    raise SystemExit(main())
