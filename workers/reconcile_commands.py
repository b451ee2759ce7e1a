"""`posguard reconcile` and `posguard schedules`: the reconciler from the command line."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import click
from temporalio.client import Client, WorkflowFailureError
from temporalio.service import RPCError, RPCStatusCode

from domain.reconcile import FindingKind
from domain.reconcile_io import FindingOutcome, ReconcileReport, reconcile_schedule_id
from workers import position_commands as pc
from workers import position_text as ptext
from workers import terminal
from workers.cli_options import Invocation, runs
from workers.settings import AccountSettings, Settings


def _age(at: datetime | None) -> str:
    """`5s ago`, `in 3s`, `now`: a time as a trader reads it (rounded, never `0s ago`)."""
    if at is None:
        return "-"
    seconds = (datetime.now(UTC) - at).total_seconds()
    if abs(seconds) < 0.5:
        return "now"
    if seconds < 0:
        return f"in {round(-seconds)}s"
    return f"{round(seconds)}s ago"


def period(every: timedelta | None) -> str:
    """`30s`, `500ms`, `2m`, `1m30s`: a Schedule's period as the settings write it."""
    if every is None:
        return "-"
    ms = int(every.total_seconds() * 1000)
    if ms % 1000:
        return f"{ms}ms"
    minutes, seconds = divmod(ms // 1000, 60)
    hours, minutes = divmod(minutes, 60)
    text = (f"{hours}h" if hours else "") + (f"{minutes}m" if minutes else "")
    return text + (f"{seconds}s" if seconds or not text else "")


def _what(o: FindingOutcome) -> str:
    f = o.finding
    if f.order is not None:
        order = f.order
        side = order.side.value if order.side is not None else "?"
        kind = "stop" if order.is_conditional else "order"
        trigger = f" @ {ptext.dec(order.trigger_price)}" if order.trigger_price else ""
        ident = order.client_order_id or f"#{order.exchange_order_id}"
        return f"{kind} {side} {ptext.dec(order.qty)}{trigger} {ident}"
    side = f.side.value if f.side is not None else "?"
    if f.kind is FindingKind.UNTRACKED:
        return f"{side} {ptext.dec(f.exchange_qty)} @ {ptext.dec(f.entry_price)}"
    if f.exchange_qty is not None or f.expected_qty is not None:
        return f"{side} expected {ptext.dec(f.expected_qty)} exchange {ptext.dec(f.exchange_qty)}"
    return "-"


def describe_report(report: ReconcileReport) -> str:
    """The pass as a trader reads it: a line of counts, then a table of findings."""
    mode = " (dry run: nothing changed)" if report.dry_run else ""
    took = int((report.finished_at - report.started_at).total_seconds() * 1000)
    head = (
        f"reconcile {report.account} ({report.exchange.value}){mode}: "
        f"{report.positions} positions, {report.orders} open orders, "
        f"{report.owners} position workflows; "
        f"{len(report.findings) + report.findings_omitted} findings in {took} ms"
    )
    if report.error:
        return f"{head}\nthe pass could not read the account: {report.error}"
    if not report.findings:
        return f"{head}\nall consistent"
    rows = [
        [
            o.finding.kind.value,
            o.finding.symbol,
            _what(o),
            o.finding.action.value,
            o.outcome.value,
            "-" if report.dry_run else str(o.passes),
            (o.detail + ": " if o.detail and o.outcome.value == "failed" else "")
            + o.finding.reason,
        ]
        for o in report.findings
    ]
    header = ["finding", "symbol", "what", "action", "outcome", "passes", "why"]
    more = (
        f"\n... and {report.findings_omitted} more foreign orders, reported (see "
        "`posguard events tail --type foreign_order_detected`)"
        if report.findings_omitted
        else ""
    )
    return f"{head}\n{terminal.table(header, rows)}{more}"


async def cmd_reconcile(args: pc.Args, settings: Settings) -> int:
    """One pass now: through the account's Schedule (so it remembers), or a dry run."""
    account = pc.account_of(settings, args.account)
    client = await pc.temporal_client(settings)
    try:
        report = await asyncio.wait_for(_one_pass(client, settings, account, args), args.timeout)
    except TimeoutError:
        report = None
    except WorkflowFailureError as err:
        print(f"the pass failed: {err.cause or err}")
        return 1
    if report is None:
        print(f"no pass finished within {args.timeout:g} s: is a worker running?")
        return 1
    print(describe_report(report))
    return 1 if report.error else 0


async def _one_pass(
    client: Client, settings: Settings, account: AccountSettings, args: pc.Args
) -> ReconcileReport | None:
    """A dry run on its own; else a pass of the account's Schedule (one on its own if none)."""
    from workers.schedules import run_pass, trigger_reconcile, wait_for_triggered_pass

    if args.dry_run:
        return await run_pass(client, settings, account, dry_run=True)
    try:
        known = await trigger_reconcile(client, account.name)
    except RPCError as err:
        if err.status is not RPCStatusCode.NOT_FOUND:
            raise
        print(
            f"no schedule {reconcile_schedule_id(account.name)} (is reconcile.every "
            "unset?): running one pass on its own"
        )
        return await run_pass(client, settings, account, dry_run=False)
    return await wait_for_triggered_pass(client, account.name, known)


async def cmd_schedules(args: pc.Args, settings: Settings) -> int:
    """List the reconcile Schedules with their last and next run."""
    from workers.schedules import list_schedules

    client = await pc.temporal_client(settings)
    rows = await list_schedules(client)
    if not rows:
        print("no schedules (a worker creates them at start; or `posguard schedules apply`)")
        return 0
    table = [
        [
            r.schedule_id,
            "paused" if r.paused else "active",
            period(r.every),
            _age(r.last_run),
            r.last_workflow_id or "-",
            "-" if r.paused else _age(r.next_run),
        ]
        for r in rows
    ]
    print(
        terminal.table(["schedule", "state", "every", "last run", "last pass", "next run"], table)
    )
    return 0


async def cmd_schedules_apply(args: pc.Args, settings: Settings) -> int:
    """Create or update every account's reconcile Schedule from the settings."""
    from workers.schedules import apply_schedules

    client = await pc.temporal_client(settings)
    ids = await apply_schedules(client, settings)
    if not ids:
        print("reconcile.every is unset: no schedule to apply")
        return 0
    for schedule_id in ids:
        print(f"applied {schedule_id}: every {period(settings.reconcile.every)}")
    return 0


def add_commands(cli: click.Group) -> None:
    """Add `reconcile` and `schedules` to the `posguard` command line."""

    @cli.command(
        "reconcile", help="one reconcile pass now, its findings as a table (docs/reconcile.md)"
    )
    @click.option("--account", help="configured account (default: the first one)")
    @click.option("--dry-run", is_flag=True, help="decide and report, change nothing")
    @click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=60,
                  show_default=True, help="seconds to wait")  # fmt: skip
    def reconcile(**params: Any) -> Invocation:
        return runs(cmd_reconcile)(**params)

    @cli.group(
        "schedules",
        help="the reconcile Schedules, last and next run",
        invoke_without_command=True,
    )
    @click.pass_context
    def schedules(ctx: click.Context) -> Invocation | None:
        return None if ctx.invoked_subcommand else runs(cmd_schedules)()

    @schedules.command("apply", help="create or update each account's schedule (idempotent)")
    def schedules_apply() -> Invocation:
        return runs(cmd_schedules_apply)()
