"""The operator's position commands: `open`, `close`, `positions`, `position`.

They reach the same Temporal the worker uses (TEMPORAL_ADDRESS, else
127.0.0.1:{temporal_port}) and, for history, the store. A position's workflow is
the only writer of its orders: these commands start it, ask it (`state` query)
and request its close (`close` update); they never place, move or cancel an order.
`open` only reads the exchange's public market data first (`check_market`): an
unknown symbol, or a stop or take-profit price on the wrong side of the mark, is
refused before any workflow starts.
Every price, quantity and amount prints exactly (Decimal, never float).
"""

from __future__ import annotations

import asyncio
import getpass
import socket
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

from pydantic import ValidationError
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowQueryFailedError,
    WorkflowUpdateFailedError,
    WorkflowUpdateStage,
)
from temporalio.exceptions import ApplicationError
from temporalio.runtime import Runtime
from temporalio.service import RPCError, RPCStatusCode

from domain.position import CloseReason, PositionSpec, PositionState, is_terminal
from domain.records import PositionRecord
from domain.sizing import LevelRule, SizingMode, SizingRequest
from domain.trailing import TrailingRule
from domain.types import ExchangeId, Side
from workers import terminal
from workers.cli_values import (
    default_emergency_percent,
)
from workers.position_text import (
    CommandError,
    age,
    chronological,
    dec,
    describe_record,
    describe_view,
    format_event,
    level,
    rule_text,
    short_position_id,
    ui_url,
)
from workers.settings import AccountSettings, Settings
from workers.temporal import connect
from workers.terminal import fields, table

LIST_OPEN = 'WorkflowType="PositionWorkflow" AND ExecutionStatus="Running"'
# Where `open` stops waiting: protected, or over, or needing a human.
SETTLED = frozenset(
    {PositionState.ACTIVE, PositionState.FAILED, PositionState.ROLLED_BACK, PositionState.CLOSED}
)
QUERY_TIMEOUT = timedelta(seconds=5)


Args = SimpleNamespace
"""A command's parsed arguments, one attribute per option (see workers/cli.py)."""


# --- connections -----------------------------------------------------------------------------


async def temporal_client(
    settings: Settings, *, runtime: Runtime | None = None, process: str = "cli"
) -> Client:
    """Client of TEMPORAL_ADDRESS, else the local dev server; `UnreachableError` if down.

    A long-running process passes `workers.metrics.sdk_metrics_runtime()` as `runtime`,
    so its `/metrics` page carries the SDK's own metrics. With an OTLP endpoint
    configured, the client traces (`workers.tracing`) as the service
    `posguard-{process}`."""
    from workers.tracing import tracing_interceptors

    address = settings.temporal_address or f"127.0.0.1:{settings.temporal_port}"
    return await connect(
        address,
        settings.temporal_namespace,
        timeout_s=settings.connect_timeout_seconds,
        runtime=runtime,
        interceptors=tracing_interceptors(process),
    )


def account_of(
    settings: Settings, name: str | None, exchange: str | None = None
) -> AccountSettings:
    """The named account, or the first configured one (on `exchange`, when given)."""
    if name is None:
        candidates = [a for a in settings.accounts if exchange in (None, a.exchange)]
        if not candidates:
            where = f" on {exchange}" if exchange else ""
            raise CommandError(
                f"no account is configured{where} (POSGUARD_ACCOUNTS or posguard.toml)"
            )
        return candidates[0]
    try:
        account = settings.account(name)
    except KeyError as exc:
        raise CommandError(str(exc.args[0])) from None
    if exchange is not None and account.exchange != exchange:
        raise CommandError(f"account {name!r} is on {account.exchange}, not {exchange}")
    return account


def exchange_of(account: AccountSettings) -> ExchangeId:
    try:
        return ExchangeId(account.exchange)
    except ValueError:
        raise CommandError(
            f"account {account.name!r} has unknown exchange {account.exchange!r}"
        ) from None


def _operator() -> str:
    try:
        user = getpass.getuser()
    except Exception:  # no login name in some containers
        user = "unknown"
    return f"posguard close ({user}@{socket.gethostname()})"


async def _view(handle: WorkflowHandle[Any, Any], timeout: timedelta = QUERY_TIMEOUT) -> Any:
    """The `state` query's answer, or None when the workflow cannot answer now."""
    from workflows.position import PositionWorkflow

    try:
        return await handle.query(PositionWorkflow.state, rpc_timeout=timeout)
    except (RPCError, WorkflowQueryFailedError):
        return None


# --- open --------------------------------------------------------------------------------------


def trailing_rule(args: Args, default: TrailingRule | None = None) -> TrailingRule | None:
    """The trailing settings of the command line, on top of `default` (from settings)."""
    given = {
        "callback_pct": args.trail,
        "activation_pct": args.trail_activation,
        "breakeven_trigger_pct": args.breakeven,
        "breakeven_fee_pct": args.breakeven_fees,
        "min_step_pct": args.trail_step,
        "min_interval": args.trail_interval,
        "time_activation_after": args.trail_after,
    }
    given = {k: v for k, v in given.items() if v is not None}
    atr = {
        "multiple": args.trail_atr,
        "timeframe": args.trail_atr_timeframe,
        "period": args.trail_atr_period,
        "min_pct": args.trail_atr_min,
        "max_pct": args.trail_atr_max,
        "refresh": args.trail_atr_refresh,
    }
    atr = {k: v for k, v in atr.items() if v is not None}
    if not given and not atr:
        return default
    base = default.model_dump() if default is not None else {}
    if atr:
        earlier = base.get("volatility") or {}
        if "multiple" not in atr and "multiple" not in earlier:
            raise CommandError("a volatility callback needs --trail-atr MULTIPLE")
        given["volatility"] = {**ATR_DEFAULTS, **earlier, **atr}
    if "callback_pct" not in given and "callback_pct" not in base:
        raise CommandError("trailing needs --trail PCT (the callback distance)")
    try:
        return TrailingRule(**{**base, **given})
    except ValidationError as exc:
        raise CommandError(f"invalid trailing settings: {exc.errors()[0]['msg']}") from None


# Floor and ceiling of a volatility callback when the command line gives none.
ATR_DEFAULTS: dict[str, Any] = {"min_pct": Decimal("0.25"), "max_pct": Decimal(5)}


def build_spec(
    args: Args, account: AccountSettings, settings: Settings | None = None
) -> PositionSpec:
    """The PositionSpec of `posguard open`'s arguments."""
    sizing = SizingRequest(
        mode=SizingMode.QUOTE if args.quote is not None else SizingMode.RISK,
        amount=args.quote if args.quote is not None else args.risk,
    )
    emergency = args.emergency_stop or default_emergency_percent(args.stop)
    settings = settings or Settings()
    try:
        return PositionSpec(
            account=account.name,
            exchange=exchange_of(account),
            symbol=args.symbol,
            side=Side(args.side),
            sizing=sizing,
            stop=args.stop,
            emergency_stop_percent=emergency,
            take_profit=args.take_profit,
            trailing=None if args.no_trail else trailing_rule(args, default=settings.trailing),
            max_age=args.max_age,
            hedge_mode=account.hedge_mode,
        )
    except ValidationError as exc:
        raise CommandError(f"invalid position: {exc.errors()[0]['msg']}") from None


def _market_account(account: AccountSettings, settings: Settings) -> AccountSettings:
    """`account` with its exchange reachable from this process: an account on the
    embedded paper exchange reads the one `posguard dev` serves on `sim_port`."""
    from workers.settings import EMBEDDED_PAPER

    if account.paper_url != EMBEDDED_PAPER:
        return account
    return account.model_copy(
        update={"paper_url": f"http://127.0.0.1:{settings.sim_port}", "paper_ws_url": None}
    )


def wrong_side(spec: PositionSpec, price: Decimal) -> str | None:
    """Why a stop or take-profit at a price is on the wrong side of `price`, or None.

    A long's stop is below the price and its take-profit above it; a short's the other
    way round. A percentage is measured from the entry, so it is always on its side.
    """
    long = spec.side is Side.LONG
    checks: list[tuple[str, LevelRule, bool]] = [("stop", spec.stop, not long)]
    if spec.take_profit is not None:
        checks.append(("take-profit", spec.take_profit, long))
    for name, rule, above in checks:
        at = rule.price
        if at is None or (at > price if above else at < price):
            continue
        where = "at" if at == price else ("above" if at > price else "below")
        return (
            f"{name} {dec(at)} is {where} the price {dec(price)}: "
            f"a {spec.side.value}'s {name} must be {'above' if above else 'below'} it"
        )
    return None


async def check_market(spec: PositionSpec, account: AccountSettings, settings: Settings) -> None:
    """Refuse an `open` before its workflow starts: a symbol the exchange does not list,
    or a stop / take-profit price on the wrong side of the current mark price.

    Reads the account's exchange through the gateway the worker uses (public market
    data only). When the exchange cannot be read, says so on stderr and lets the
    workflow check (it refuses an unsizable position by rolling it back).
    """
    from activities.exchange.gateway import ExchangeGateway
    from workers.exchanges import make_exchange

    try:
        gateway = ExchangeGateway(make_exchange(_market_account(account, settings)), account="cli")
    except ValueError as exc:
        terminal.warn(f"not checked on the exchange: {exc}")
        return
    where = f"{account.exchange} (account {account.name})"
    try:
        try:
            await gateway.filters(spec.symbol)
        except KeyError:
            raise CommandError(
                f"unknown symbol {spec.symbol}: {where} lists no such perpetual"
            ) from None
        needs_price = spec.stop.price is not None or (
            spec.take_profit is not None and spec.take_profit.price is not None
        )
        if needs_price:
            why = wrong_side(spec, await gateway.mark_price(spec.symbol))
            if why is not None:
                raise CommandError(f"{spec.symbol}: {why}")
    except CommandError:
        raise
    except Exception as exc:  # the exchange could not be read: the workflow checks
        terminal.warn(
            f"could not check {spec.symbol} on {where} "
            f"({type(exc).__name__}: {str(exc)[:200]}); the workflow checks it"
        )
    finally:
        await gateway.close()


async def _wait_settled(handle: WorkflowHandle[Any, Any], timeout_s: float) -> Any:  # float ok
    """Poll `state` until the position settles (see SETTLED) or `timeout_s` passes."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    view = None
    while True:
        left = deadline - loop.time()
        latest = await _view(handle, timedelta(seconds=max(min(left, 5), 0.5)))
        view = latest or view
        if view is not None and view.snapshot.state in SETTLED:
            return view
        if loop.time() >= deadline:
            return view
        await asyncio.sleep(0.2)


async def cmd_open(args: Args, settings: Settings) -> int:
    from workers.positions import PositionAlreadyOpen, start_position
    from workflows.position_io import PositionConfig, exchange_task_queue

    account = account_of(settings, args.account, getattr(args, "exchange", None))
    spec = build_spec(args, account, settings)
    await check_market(spec, account, settings)
    client = await temporal_client(settings)
    try:
        handle = await start_position(
            client,
            spec,
            task_queue=settings.task_queue,
            config=PositionConfig(exchange_task_queue=exchange_task_queue(account.name)),
        )
    except PositionAlreadyOpen as exc:
        raise CommandError(
            f"{exc}; see it with `posguard position {spec.symbol}`, "
            f"close it with `posguard close {spec.symbol}`"
        ) from None
    sizing = spec.sizing
    assert sizing is not None
    print(
        f"started {handle.id}: {spec.side.value} {spec.symbol}, {sizing.mode.value} "
        f"{dec(sizing.amount)}, stop {level(spec.stop)}, emergency stop "
        f"{dec(spec.emergency_stop_percent)}%",
        flush=True,
    )
    if args.no_wait:
        print(fields([("Web UI", ui_url(settings, handle.id))]))
        return 0
    with terminal.spinner(f"waiting until {spec.symbol} is protected (up to {args.timeout:g} s)"):
        view = await _wait_settled(handle, args.timeout)
    if view is None:
        print(f"no answer from the workflow after {args.timeout:g} s: is a worker running?")
        print(fields([("Web UI", ui_url(settings, handle.id))]))
        return 1
    print(describe_view(view, settings))
    state = view.snapshot.state
    if state is PositionState.ACTIVE:
        return 0
    if state is PositionState.FAILED:
        terminal.alarm(
            "NEEDS INTERVENTION: the stop could not be placed; an emergency stop protects it"
        )
    elif is_terminal(state):
        print(f"not opened: {state.value} ({view.snapshot.close_reason or 'no reason'})")
        if view.last_error:
            print(f"why: {view.last_error}")
    else:
        print(
            f"still {state.value} after {args.timeout:g} s; the workflow keeps going: "
            f"watch it with `posguard position {spec.symbol}`"
        )
    return 1


# --- close ---------------------------------------------------------------------------------------


async def _not_open(client: Client, workflow_id: str, exc: RPCError) -> str:
    """Why a close could not be delivered: no such workflow, or it is over."""
    from workflows.position import PositionWorkflow

    if exc.status not in (RPCStatusCode.NOT_FOUND, RPCStatusCode.FAILED_PRECONDITION):
        return f"{workflow_id}: cannot request the close: {exc.message}"
    handle = client.get_workflow_handle_for(PositionWorkflow.run, workflow_id)
    try:
        desc = await handle.describe()
    except RPCError as err:
        if err.status is RPCStatusCode.NOT_FOUND:
            return f"no position workflow {workflow_id}: nothing to close"
        raise
    status = desc.status.name.lower() if desc.status is not None else "unknown"
    if desc.status is WorkflowExecutionStatus.COMPLETED:
        result = await handle.result()
        return (
            f"{workflow_id} is already {result.state.value} "
            f"(reason {result.reason.value if result.reason else '-'}, "
            f"exit {dec(result.exit_price)}, realised pnl {dec(result.realised_pnl)}): "
            "nothing to close"
        )
    return f"{workflow_id} is not open (its workflow is {status}): nothing to close"


async def _handle_of(
    client: Client, account: AccountSettings, symbol: str, side: str | None
) -> WorkflowHandle[Any, Any]:
    """The position workflow `symbol` (and `--side`) names.

    One-way: the symbol's one workflow (`--side` is not needed). Hedge mode: the
    side given, else the side whose workflow runs; both running is ambiguous, and
    neither running names the side that ran last (for its history and its message).
    """
    from workers.positions import position_handle

    exchange = exchange_of(account)
    if not account.hedge_mode:
        return position_handle(client, account.name, exchange, symbol)
    if side is not None:
        return position_handle(client, account.name, exchange, symbol, Side(side))
    found: list[tuple[bool, datetime, WorkflowHandle[Any, Any]]] = []
    for each in Side:
        handle = position_handle(client, account.name, exchange, symbol, each)
        try:
            desc = await handle.describe()
        except RPCError as exc:
            if exc.status is RPCStatusCode.NOT_FOUND:
                continue
            raise
        running = desc.status is WorkflowExecutionStatus.RUNNING
        found.append((running, desc.start_time, handle))
    running_ones = [h for r, _, h in found if r]
    if len(running_ones) > 1:
        raise CommandError(
            f"both a long and a short are open on {symbol} (account {account.name}, hedge "
            "mode): name one with --side long or --side short"
        )
    if running_ones:
        return running_ones[0]
    if found:
        return max(found, key=lambda f: f[1])[2]
    return position_handle(client, account.name, exchange, symbol, Side.LONG)


async def _running_view(handle: WorkflowHandle[Any, Any], account: str, symbol: str) -> Any:
    """The `state` of the position's running workflow; CommandError when none runs."""
    no_position = f"no open position on {symbol} (account {account})"
    try:
        desc = await handle.describe()
    except RPCError as exc:
        if exc.status is RPCStatusCode.NOT_FOUND:
            raise CommandError(no_position) from None
        raise
    if desc.status is not WorkflowExecutionStatus.RUNNING:
        status = desc.status.name.lower() if desc.status is not None else "unknown"
        raise CommandError(f"{no_position}: its last workflow {handle.id} is {status}")
    view = await _view(handle)
    if view is None:
        raise CommandError(f"{handle.id} did not answer: is a worker running?")
    if is_terminal(view.snapshot.state):
        raise CommandError(f"{no_position}: {handle.id} is {view.snapshot.state.value}")
    return view


async def cmd_trail(args: Args, settings: Settings) -> int:
    """Change a running position's trailing settings (the `set_trailing` update)."""
    from workflows.position import PositionWorkflow

    account = account_of(settings, args.account, getattr(args, "exchange", None))
    client = await temporal_client(settings)
    handle = await _handle_of(client, account, args.symbol, getattr(args, "side", None))
    current = (await _running_view(handle, account.name, args.symbol)).trailing_rule
    rule = trailing_rule(args, default=current)
    if rule is None:
        raise CommandError("nothing to change: give at least --trail PCT")
    try:
        previous = await handle.execute_update(PositionWorkflow.set_trailing, rule)
    except WorkflowUpdateFailedError as exc:
        raise CommandError(f"{handle.id}: {exc.cause or exc}") from None
    except RPCError as exc:  # it ended between the query and the update
        if exc.status in (RPCStatusCode.NOT_FOUND, RPCStatusCode.FAILED_PRECONDITION):
            raise CommandError(
                f"no open position on {args.symbol} (account {account.name}): "
                f"{handle.id} ended meanwhile"
            ) from None
        raise
    print(f"{handle.id}: trailing {rule_text(previous)} -> {rule_text(rule)}")
    print("the live stop never loosens: a looser setting only changes future moves")
    return 0


async def cmd_close(args: Args, settings: Settings) -> int:
    from workflows.position import PositionWorkflow
    from workflows.position_io import CloseRequest

    account = account_of(settings, args.account, getattr(args, "exchange", None))
    client = await temporal_client(settings)
    handle = await _handle_of(client, account, args.symbol, getattr(args, "side", None))
    request = CloseRequest(reason=CloseReason(args.reason), requested_by=_operator())
    try:
        update = await handle.start_update(
            PositionWorkflow.close, request, wait_for_stage=WorkflowUpdateStage.ACCEPTED
        )
        print(f"close of {handle.id} accepted ({request.reason.value}); waiting", flush=True)
        with terminal.spinner(f"closing {args.symbol} (up to {args.timeout:g} s)"):
            result = await asyncio.wait_for(update.result(), args.timeout)
    except WorkflowUpdateFailedError as exc:
        cause = exc.cause
        if isinstance(cause, ApplicationError) and cause.type in (
            "AlreadyClosed",
            "AlreadyClosing",
        ):
            raise CommandError(f"{handle.id}: close refused: {cause.message}") from None
        raise CommandError(f"{handle.id}: close failed: {cause or exc}") from None
    except RPCError as exc:
        raise CommandError(await _not_open(client, handle.id, exc)) from None
    except TimeoutError:
        raise CommandError(
            f"{handle.id}: still closing after {args.timeout:g} s; the workflow keeps trying "
            f"(the stop stays on the exchange): watch it with `posguard position {args.symbol}`"
        ) from None
    print(
        f"{handle.id}  {result.state.value}\n"
        + fields(
            [
                ("state", result.state.value),
                ("reason", result.reason.value if result.reason else "-"),
                ("exit price", dec(result.exit_price)),
                ("realised pnl", dec(result.realised_pnl)),
                ("fees", dec(result.fees)),
                ("funding", dec(result.funding)),
                ("net pnl", dec(result.realised_pnl - result.fees + result.funding)),
            ]
        )
    )
    return 0


# --- positions -----------------------------------------------------------------------------------

COLUMNS = ("symbol", "side", "state", "qty", "entry", "stop", "realised pnl", "fees", "age",
           "position", "workflow id")  # fmt: skip
"""`position` is the short position id (`short_position_id`): one workflow id runs one
lifecycle after another (a rolled-back open, then a live one), each its own row."""


def _row_of_view(view: Any, started: datetime) -> list[str]:
    s = view.snapshot
    return [
        view.spec.symbol,
        view.spec.side.value,
        s.state.value,
        dec(s.qty),
        dec(s.avg_entry_price),
        dec(s.stop_price),
        dec(s.realised_pnl),
        dec(s.fees),
        age(datetime.now(UTC) - (s.opened_at or started)),
        short_position_id(view.position_id),
        view.workflow_id,
    ]


def _row_of_record(rec: PositionRecord) -> list[str]:
    state = rec.status if rec.exit_reason is None else f"{rec.status} ({rec.exit_reason})"
    if not is_terminal(PositionState(rec.status)):
        state += " NOT RUNNING"  # its workflow is gone: nothing manages this position
    lived = (
        (rec.closed_at or datetime.now(UTC)) - rec.opened_at if rec.opened_at is not None else None
    )
    return [
        rec.symbol,
        rec.side,
        state,
        dec(rec.quantity),
        dec(rec.entry_price),
        dec(rec.stop_price),
        dec(rec.realized_pnl),
        dec(rec.fees),
        age(lived),
        short_position_id(rec.id),
        rec.workflow_id,
    ]


async def _position_rows(client: Client, settings: Settings, with_closed: bool) -> list[list[str]]:
    """The rows of `positions`: each running workflow as its `state` query answers
    (or as visibility knows it when no worker answers), then with `with_closed` every
    lifecycle the store has that is not running."""
    from workers.worker import open_store
    from workflows.position import PositionWorkflow
    from workflows.search_attributes import POSITION_STATE

    running = [wf async for wf in client.list_workflows(LIST_OPEN)]
    handles = [
        client.get_workflow_handle_for(PositionWorkflow.run, wf.id, run_id=wf.run_id)
        for wf in running
    ]
    views = await asyncio.gather(*(_view(h) for h in handles))
    rows: list[list[str]] = []
    live_ids: set[str] = set()
    for wf, view in zip(running, views, strict=True):
        if view is None:  # no worker answered: show what visibility knows
            state = wf.typed_search_attributes.get(POSITION_STATE) or "?"
            rows.append(["?", "?", f"{state} (no answer)", *["?"] * 5, "-", "?", wf.id])
            continue
        live_ids.add(view.position_id)
        rows.append(_row_of_view(view, wf.start_time))
    rows.sort(key=lambda r: (r[0], r[-1]))
    if with_closed:
        store = await open_store(settings)
        try:
            records = await store.positions()
        finally:
            await store.close()
        rows += [_row_of_record(r) for r in records if r.id not in live_ids]
    return rows


def _positions_text(rows: list[list[str]], with_closed: bool) -> str:
    if not rows:
        return "no positions" if with_closed else "no open positions"
    return table(COLUMNS, rows)


async def cmd_positions(args: Args, settings: Settings) -> int:
    """The positions table; with `--watch S` redrawn every S seconds until Ctrl-C (in
    place on a terminal, one timestamped table after another when piped)."""
    client = await temporal_client(settings)
    watch = getattr(args, "watch", None)
    if watch is None:
        print(_positions_text(await _position_rows(client, settings, args.all), args.all))
        return 0
    from rich.live import Live
    from rich.text import Text

    def frame(text: str) -> str:
        return f"{datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC, every {watch:g} s (Ctrl-C ends)\n{text}"

    if not terminal.on_terminal():
        while True:
            rows = await _position_rows(client, settings, args.all)
            print(frame(_positions_text(rows, args.all)) + "\n", flush=True)
            await asyncio.sleep(watch)
    with Live(console=terminal.stdout_console(), auto_refresh=False) as live:
        while True:
            rows = await _position_rows(client, settings, args.all)
            live.update(Text.from_ansi(frame(_positions_text(rows, args.all))), refresh=True)
            await asyncio.sleep(watch)


# --- position ------------------------------------------------------------------------------------


async def cmd_position(args: Args, settings: Settings) -> int:
    from workers.worker import open_store

    account = account_of(settings, args.account, getattr(args, "exchange", None))
    client = await temporal_client(settings)
    handle = await _handle_of(client, account, args.symbol, getattr(args, "side", None))
    workflow_id = handle.id
    status: WorkflowExecutionStatus | None = None
    try:
        status = (await handle.describe()).status
    except RPCError as exc:
        if exc.status is not RPCStatusCode.NOT_FOUND:
            raise
    view = await _view(handle) if status is WorkflowExecutionStatus.RUNNING else None
    store = await open_store(settings)
    try:
        record: PositionRecord | None = None
        if view is not None:
            position_id: str | None = view.position_id
        else:  # the latest lifecycle of this key that the store knows
            rows = [
                r for r in await store.positions(symbol=args.symbol) if r.workflow_id == workflow_id
            ]
            record = rows[0] if rows else None
            position_id = None if record is None else record.id
        events = (
            []
            if position_id is None
            else await store.events(position_id=position_id, limit=args.n, newest_first=True)
        )
    finally:
        await store.close()
    if view is None and record is None:
        raise CommandError(f"no position recorded for {workflow_id}")
    if view is not None:
        print(describe_view(view, settings))
    else:
        assert record is not None
        print(describe_record(record, settings))
        if status is WorkflowExecutionStatus.RUNNING:
            print("  (the workflow is running but did not answer: is a worker running?)")
        elif not is_terminal(PositionState(record.status)):
            gone = "gone" if status is None else status.name.lower()
            terminal.alarm(
                f"WARNING: its workflow is {gone}: nothing manages this position or its stop; "
                "check the exchange"
            )
    events.sort(key=chronological)
    print(f"\nevents (latest {len(events)}, oldest first)")
    for event in events:
        terminal.event_line(format_event(event), event.severity.value)
    return 0
