"""`posguard reconcile` and `posguard schedules`: the reconciler from the command line."""

from __future__ import annotations

import argparse
import asyncio
from datetime import UTC, datetime, timedelta

from temporalio.service import RPCError, RPCStatusCode

from domain.reconcile_io import FindingOutcome, ReconcileReport, reconcile_schedule_id
from workers import position_commands as pc
from workers.settings import Settings


def _age(at: datetime | None) -> str:
    if at is None:
        return "-"
    seconds = int((datetime.now(UTC) - at).total_seconds())
    return f"{seconds}s ago" if seconds >= 0 else f"in {-seconds}s"


def _what(o: FindingOutcome) -> str:
    f = o.finding
    if f.order is not None:
        order = f.order
        side = order.side.value if order.side is not None else "?"
        kind = "stop" if order.is_conditional else "order"
        trigger = f" @ {pc.dec(order.trigger_price)}" if order.trigger_price else ""
        ident = order.client_order_id or f"#{order.exchange_order_id}"
        return f"{kind} {side} {pc.dec(order.qty)}{trigger} {ident}"
    if f.exchange_qty is not None or f.expected_qty is not None:
        side = f.side.value if f.side is not None else "?"
        return f"{side} expected {pc.dec(f.expected_qty)} exchange {pc.dec(f.exchange_qty)}"
    return "-"


def describe_report(report: ReconcileReport) -> str:
    """The pass as a trader reads it: a line of counts, then a table of findings."""
    mode = " (dry run: nothing changed)" if report.dry_run else ""
    took = int((report.finished_at - report.started_at).total_seconds() * 1000)
    head = (
        f"reconcile {report.account} ({report.exchange.value}){mode}: "
        f"{report.positions} positions, {report.orders} open orders, "
        f"{report.owners} position workflows; {len(report.findings)} findings in {took} ms"
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
            str(o.passes),
            (o.detail + ": " if o.detail and o.outcome.value == "failed" else "")
            + o.finding.reason,
        ]
        for o in report.findings
    ]
    header = ["finding", "symbol", "what", "action", "outcome", "passes", "why"]
    return f"{head}\n{pc.table(header, rows)}"


async def cmd_reconcile(args: argparse.Namespace, settings: Settings) -> int:
    """One pass now: through the account's Schedule (so it remembers), or a dry run."""
    from workers.schedules import run_pass, trigger_reconcile, wait_for_triggered_pass

    account = pc.account_of(settings, args.account)
    client = await pc.temporal_client(settings)
    timeout = timedelta(seconds=args.timeout)
    report: ReconcileReport | None
    try:
        if args.dry_run:
            report = await asyncio.wait_for(
                run_pass(client, settings, account, dry_run=True), timeout.total_seconds()
            )
        else:
            try:
                asked = await trigger_reconcile(client, account.name)
            except RPCError as err:
                if err.status is not RPCStatusCode.NOT_FOUND:
                    raise
                print(
                    f"no schedule {reconcile_schedule_id(account.name)} (is reconcile.every "
                    "unset?): running one pass on its own"
                )
                report = await asyncio.wait_for(
                    run_pass(client, settings, account, dry_run=False), timeout.total_seconds()
                )
            else:
                report = await wait_for_triggered_pass(client, account.name, asked, timeout)
    except TimeoutError:
        report = None
    if report is None:
        print(f"no pass finished within {args.timeout:g} s: is a worker running?")
        return 1
    print(describe_report(report))
    return 1 if report.error else 0


async def cmd_schedules(args: argparse.Namespace, settings: Settings) -> int:
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
            f"{int(r.every.total_seconds())}s" if r.every else "-",
            _age(r.last_run),
            r.last_workflow_id or "-",
            _age(r.next_run),
        ]
        for r in rows
    ]
    print(pc.table(["schedule", "state", "every", "last run", "last pass", "next run"], table))
    return 0


async def cmd_schedules_apply(args: argparse.Namespace, settings: Settings) -> int:
    """Create or update every account's reconcile Schedule from the settings."""
    from workers.schedules import apply_schedules

    client = await pc.temporal_client(settings)
    ids = await apply_schedules(client, settings)
    if not ids:
        print("reconcile.every is unset: no schedule to apply")
        return 0
    for schedule_id in ids:
        print(f"applied {schedule_id}: every {settings.reconcile.every}")
    return 0


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `reconcile` and `schedules` to the `posguard` parser."""
    p = sub.add_parser(
        "reconcile", help="one reconcile pass now, its findings as a table (docs/reconcile.md)"
    )
    p.add_argument("--account", help="configured account (default: the first one)")
    p.add_argument("--dry-run", action="store_true", help="decide and report, change nothing")
    p.add_argument("--timeout", type=float, default=60, help="seconds to wait (default 60)")
    p.set_defaults(func=cmd_reconcile)

    schedules = sub.add_parser("schedules", help="the reconcile Schedules, last and next run")
    schedules.set_defaults(func=cmd_schedules)
    ssub = schedules.add_subparsers(dest="schedules_command")
    p = ssub.add_parser("apply", help="create or update each account's schedule (idempotent)")
    p.set_defaults(func=cmd_schedules_apply)
