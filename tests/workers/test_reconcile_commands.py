"""`posguard reconcile` and `posguard schedules`, as a trader reads them, on the real stack.

Real Temporal dev server (Schedules), PostgreSQL, a posguard worker that keeps the
account's Schedule `reconcile/{account}` (every 2 s), the paper exchange through
ccxt. The commands run in this process (`cmd_reconcile(args, settings)`), against the
same server as a real `posguard` would; what they print is read from stdout. What a
person does in the exchange's UI is done on the paper exchange directly.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from temporalio.client import (
    ScheduleActionExecutionStartWorkflow,
    ScheduleActionStartWorkflow,
    ScheduleOverlapPolicy,
)
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment

from activities.store.repository import Store
from domain.events import Event
from domain.position import position_workflow_id
from domain.reconcile_io import reconcile_schedule_id
from tests.integration.test_reconcile import RECONCILE as RECONCILE_FAST
from tests.integration.test_reconcile import (
    account_of,
    open_stops,
    reconciled,
    wait_active,
)
from tests.waiting import PATIENCE_S
from tests.workflows.harness import Stack, eventually
from workers import reconcile_commands as rc
from workers.schedules import apply_schedules, delete_schedule, list_schedules
from workers.settings import AccountSettings, Settings

# A period of 2 s here: the commands' own passes, asked for by hand, come in between.
PERIOD = timedelta(seconds=2)
RECONCILE = RECONCILE_FAST.model_copy(update={"every": PERIOD})
UNSCHEDULED = RECONCILE.model_copy(update={"every": None})


# --- running a command as `posguard` would ---------------------------------------------------


def settings_of(stack: Stack) -> Settings:
    """The stack's settings, pointed at the test's Temporal server (as TEMPORAL_ADDRESS)."""
    address = stack.client.service_client.config.target_host
    return stack.settings.model_copy(
        update={"temporal_address": address, "connect_timeout_seconds": int(PATIENCE_S)}
    )


async def reconcile(
    stack: Stack, capsys: pytest.CaptureFixture[str], *, dry_run: bool = False
) -> tuple[int, str]:
    """`posguard reconcile [--dry-run]`: its exit code and what it printed."""
    capsys.readouterr()
    args = argparse.Namespace(account=None, dry_run=dry_run, timeout=PATIENCE_S)
    code = await rc.cmd_reconcile(args, settings_of(stack))
    return code, capsys.readouterr().out


async def schedules(
    stack: Stack, capsys: pytest.CaptureFixture[str], *, apply: bool = False
) -> tuple[int, str]:
    """`posguard schedules [apply]`: its exit code and what it printed."""
    capsys.readouterr()
    command = rc.cmd_schedules_apply if apply else rc.cmd_schedules
    code = await command(argparse.Namespace(), settings_of(stack))
    return code, capsys.readouterr().out


def table(output: str, first: str) -> list[dict[str, str]]:
    """The rows of the table whose header starts with `first`, by column name.

    Columns are cut at the header's column starts (cells may contain spaces)."""
    lines = output.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith(first + " "))
    header = lines[at]
    columns = list(re.finditer(r"\S+(?: \S+)*", header))  # names may hold one space
    names = [c.group() for c in columns]
    starts = [c.start() for c in columns]
    ends = [*starts[1:], None]
    return [
        {n: line[a:b].strip() for n, a, b in zip(names, starts, ends, strict=True)}
        for line in lines[at + 1 :]
        if line.strip()
    ]


def finding(rows: list[dict[str, str]], kind: str, symbol: str) -> dict[str, str]:
    found = [r for r in rows if r["finding"] == kind and r["symbol"] == symbol]
    assert len(found) == 1, f"{kind} on {symbol}: {rows}"
    return found[0]


# --- the account and its Schedule --------------------------------------------------------------


async def pause_schedule(stack: Stack, note: str = "test: held") -> None:
    """Pause the account's Schedule and wait until no pass of it runs any more."""
    handle = stack.client.get_schedule_handle(reconcile_schedule_id(account_of(stack)))
    await handle.pause(note=note)

    async def idle() -> bool:
        return not (await handle.describe()).info.running_actions

    assert await eventually(idle), "a pass still runs after the pause"


async def account_events(stack: Stack) -> list[Event]:
    events = await stack.store.events(limit=100_000)
    return [e for e in events if e.account == account_of(stack)]


async def no_workflow(stack: Stack, workflow_id: str) -> bool:
    try:
        await stack.client.get_workflow_handle(workflow_id).describe()
    except RPCError as err:
        if err.status is RPCStatusCode.NOT_FOUND:
            return True
        raise
    return False


def the_trader_opens_by_hand(stack: Stack) -> str:
    """A limit order far from the market on XRPUSDT and a long of 4 SOLUSDT, both placed
    in the exchange's UI; the limit order's client id (the exchange gives it one)."""
    order = stack.sim.engine.place_order(
        "XRPUSDT", "BUY", "LIMIT", Decimal(100), Decimal("0.5"), source="manual"
    )
    stack.sim.open_position("SOLUSDT", "BUY", "4")
    return order.client_order_id


# --- posguard reconcile --------------------------------------------------------------------------


async def test_a_dry_run_prints_what_it_would_do_and_changes_nothing(
    temporal_env: WorkflowEnvironment,
    database_url: str,
    store: Store,
    capsys: pytest.CaptureFixture[str],
) -> None:
    async with reconciled(
        temporal_env, database_url, store, "cmddry", reconcile=RECONCILE
    ) as stack:
        # Held, so that only the dry run looks at the account.
        await pause_schedule(stack)
        account = account_of(stack)
        before = await account_events(stack)
        client_id = the_trader_opens_by_hand(stack)

        code, out = await reconcile(stack, capsys, dry_run=True)

        assert code == 0, out
        head = out.splitlines()[0]
        assert head.startswith(f"reconcile {account} (binanceusdm) (dry run: nothing changed):")
        assert "1 positions, 1 open orders" in head and "2 findings" in head
        rows = table(out, "finding")
        untracked = finding(rows, "untracked", "SOLUSDT")
        assert untracked["action"] == "adopt" and untracked["outcome"] == "dry_run"
        assert untracked["what"].startswith("long 4 @ ") and untracked["passes"] == "-"
        foreign = finding(rows, "foreign_order", "XRPUSDT")
        assert foreign["action"] == "report" and foreign["outcome"] == "reported"
        assert foreign["what"] == f"order buy 100 {client_id}"
        assert len(rows) == 2

        # Nothing changed: no adopter, no stop, the order still open, no event recorded.
        assert await no_workflow(stack, position_workflow_id(account, "binanceusdm", "SOLUSDT"))
        assert not open_stops(stack, "SOLUSDT")
        assert stack.position_amt("SOLUSDT") == 4
        [still] = stack.orders("XRPUSDT", algo=False)
        assert still["status"] == "NEW"
        after = await account_events(stack)
        assert [e.event_id for e in after] == [e.event_id for e in before]
        dry = f"{reconcile_schedule_id(account)}/dry-run/"
        assert not [
            e
            for e in await stack.store.events(limit=100_000)
            if (e.correlation_id or "").startswith(dry)
        ]


async def test_reconcile_runs_a_pass_of_the_schedule_and_prints_what_it_did(
    temporal_env: WorkflowEnvironment,
    database_url: str,
    store: Store,
    capsys: pytest.CaptureFixture[str],
) -> None:
    async with reconciled(
        temporal_env, database_url, store, "cmdnow", reconcile=RECONCILE
    ) as stack:
        # Held, so that the position is still untracked when the command asks for a
        # pass (a scheduled pass would adopt it first); a paused Schedule still runs
        # the passes asked for by hand.
        await pause_schedule(stack)
        account = account_of(stack)
        the_trader_opens_by_hand(stack)

        code, out = await reconcile(stack, capsys)

        assert code == 0, out
        assert "no schedule" not in out
        head = out.splitlines()[0]
        assert head.startswith(f"reconcile {account} (binanceusdm): ") and "dry run" not in head
        rows = table(out, "finding")
        untracked = finding(rows, "untracked", "SOLUSDT")
        assert untracked["action"] == "adopt" and untracked["outcome"] == "done"
        assert untracked["passes"] == "1"
        foreign = finding(rows, "foreign_order", "XRPUSDT")
        assert foreign["action"] == "report" and foreign["outcome"] == "reported"

        # The pass was the Schedule's (its workflow id is the Schedule's action's), and
        # it did what it printed: the position is adopted and has its stop.
        [detected] = [
            e
            for e in await stack.store.events(event_type="untracked_detected", limit=5000)
            if e.account == account
        ]
        assert (detected.correlation_id or "").startswith(f"{reconcile_schedule_id(account)}/pass")
        view = await wait_active(stack, "SOLUSDT")
        assert view.spec.adopt and view.snapshot.qty == 4
        assert detected.payload["adopted_by"] == view.workflow_id
        assert len(open_stops(stack, "SOLUSDT")) == 1


async def test_without_a_schedule_reconcile_says_so_and_runs_a_pass_of_its_own(
    temporal_env: WorkflowEnvironment,
    database_url: str,
    store: Store,
    capsys: pytest.CaptureFixture[str],
) -> None:
    async with reconciled(
        temporal_env, database_url, store, "cmdalone", reconcile=UNSCHEDULED
    ) as stack:
        account = account_of(stack)
        stack.sim.open_position("BNBUSDT", "SELL", "2")

        code, out = await reconcile(stack, capsys)

        assert code == 0, out
        first, head = out.splitlines()[:2]
        assert first == (
            f"no schedule {reconcile_schedule_id(account)} (is reconcile.every unset?): "
            "running one pass on its own"
        )
        assert head.startswith(f"reconcile {account} (binanceusdm): 1 positions")
        untracked = finding(table(out, "finding"), "untracked", "BNBUSDT")
        assert untracked["action"] == "adopt" and untracked["outcome"] == "done"
        assert untracked["what"].startswith("short 2 @ ")
        view = await wait_active(stack, "BNBUSDT")
        assert view.spec.adopt and view.snapshot.qty == 2
        # Its pass ran on its own (no Schedule was made).
        [detected] = [
            e
            for e in await stack.store.events(event_type="untracked_detected", limit=5000)
            if e.account == account
        ]
        assert (detected.correlation_id or "").startswith(f"{reconcile_schedule_id(account)}/now/")
        assert [r for r in await list_schedules(stack.client) if account in r.schedule_id] == []


async def test_a_clean_account_is_all_consistent(
    temporal_env: WorkflowEnvironment,
    database_url: str,
    store: Store,
    capsys: pytest.CaptureFixture[str],
) -> None:
    async with reconciled(
        temporal_env, database_url, store, "cmdclean", reconcile=UNSCHEDULED
    ) as stack:
        for dry_run in (True, False):
            code, out = await reconcile(stack, capsys, dry_run=dry_run)
            assert code == 0, out
            assert "0 positions, 0 open orders, 0 position workflows; 0 findings" in out
            assert out.splitlines()[-1] == "all consistent"


async def test_reconcile_with_no_worker_gives_up_after_its_timeout(
    temporal_env: WorkflowEnvironment, capsys: pytest.CaptureFixture[str]
) -> None:
    # A Schedule whose task queue no worker polls: the pass it starts never runs.
    name = f"cmdnoworker{uuid.uuid4().hex[:6]}"
    settings = Settings(
        task_queue=f"nobody-{uuid.uuid4().hex[:8]}",
        temporal_address=temporal_env.client.service_client.config.target_host,
        accounts=[AccountSettings(name=name, paper_url="http://127.0.0.1:9")],
        reconcile=RECONCILE.model_copy(
            update={"every": timedelta(hours=1), "pass_timeout": timedelta(seconds=30)}
        ),
        health_port=-1,
    )
    client = temporal_env.client
    assert await apply_schedules(client, settings) == [reconcile_schedule_id(name)]
    try:
        capsys.readouterr()
        args = argparse.Namespace(account=None, dry_run=False, timeout=2)
        # Beyond its own timeout of 2 s, 15 s: a command that has not answered hangs.
        code = await asyncio.wait_for(rc.cmd_reconcile(args, settings), 15)
        out = capsys.readouterr().out
        assert code == 1
        assert out == "no pass finished within 2 s: is a worker running?\n"
    finally:
        desc = await client.get_schedule_handle(reconcile_schedule_id(name)).describe()
        await delete_schedule(client, name)
        for action in desc.info.running_actions:
            assert isinstance(action, ScheduleActionExecutionStartWorkflow)
            await client.get_workflow_handle(action.workflow_id).terminate("test teardown")


# --- posguard schedules ---------------------------------------------------------------------------


async def test_schedules_lists_the_accounts_schedule_with_its_last_and_next_run(
    temporal_env: WorkflowEnvironment,
    database_url: str,
    store: Store,
    capsys: pytest.CaptureFixture[str],
) -> None:
    async with reconciled(
        temporal_env, database_url, store, "cmdlist", reconcile=RECONCILE
    ) as stack:
        schedule_id = reconcile_schedule_id(account_of(stack))
        handle = stack.client.get_schedule_handle(schedule_id)

        async def ran() -> bool:
            return bool((await handle.describe()).info.recent_actions)

        assert await eventually(ran), f"no pass of {schedule_id}"

        mine: list[dict[str, str]] = []

        async def listed() -> bool:
            code, out = await schedules(stack, capsys)
            assert code == 0, out
            mine[:] = [r for r in table(out, "schedule") if r["schedule"] == schedule_id]
            return bool(mine)

        assert await eventually(listed), f"{schedule_id} not listed"
        [row] = mine
        assert row["state"] == "active"
        assert row["every"] == "2s"
        assert row["last run"] == "now" or row["last run"].endswith("s ago"), row
        assert row["last pass"].startswith(f"{schedule_id}/pass"), row
        # Within the next period (see the test of `_age` below for the last second).
        assert row["next run"] not in ("", "-"), row
        when = row["next run"]
        assert when == "now" or when.startswith("in "), row
        if when != "now":
            assert int(when.removeprefix("in ").rstrip("s")) <= PERIOD.total_seconds(), row


async def test_schedules_apply_is_idempotent_and_keeps_a_paused_schedule_paused(
    temporal_env: WorkflowEnvironment,
    database_url: str,
    store: Store,
    capsys: pytest.CaptureFixture[str],
) -> None:
    async with reconciled(
        temporal_env, database_url, store, "cmdapply", reconcile=RECONCILE
    ) as stack:
        schedule_id = reconcile_schedule_id(account_of(stack))
        handle = stack.client.get_schedule_handle(schedule_id)
        created = (await handle.describe()).info.created_at

        for _ in range(2):  # the worker applied it at start already: a third and fourth time
            code, out = await schedules(stack, capsys, apply=True)
            assert code == 0, out
            [line] = out.splitlines()
            assert line.startswith(f"applied {schedule_id}: every "), out

        # Still one Schedule, as the settings say.
        assert [
            r.schedule_id
            for r in await list_schedules(stack.client)
            if r.schedule_id == schedule_id
        ] == [schedule_id]
        desc = await handle.describe()
        assert desc.info.created_at == created  # updated in place, never made anew
        assert not desc.schedule.state.paused
        assert [i.every for i in desc.schedule.spec.intervals] == [PERIOD]
        assert desc.schedule.policy.overlap is ScheduleOverlapPolicy.SKIP
        action = desc.schedule.action
        assert isinstance(action, ScheduleActionStartWorkflow)
        assert action.id == f"{schedule_id}/pass"

        # An operator pauses it; `apply` (or a worker's restart) leaves it paused.
        await handle.pause(note="maintenance: new API keys")
        code, out = await schedules(stack, capsys, apply=True)
        assert code == 0, out
        desc = await handle.describe()
        assert desc.schedule.state.paused
        assert desc.schedule.state.note == "maintenance: new API keys"
        assert [i.every for i in desc.schedule.spec.intervals] == [PERIOD]

        code, out = await schedules(stack, capsys)
        assert code == 0, out
        [row] = [r for r in table(out, "schedule") if r["schedule"] == schedule_id]
        assert row["state"] == "paused"


async def test_schedules_apply_without_a_period_says_there_is_nothing_to_apply(
    temporal_env: WorkflowEnvironment,
    database_url: str,
    store: Store,
    capsys: pytest.CaptureFixture[str],
) -> None:
    async with reconciled(
        temporal_env, database_url, store, "cmdnoapply", reconcile=UNSCHEDULED
    ) as stack:
        code, out = await schedules(stack, capsys, apply=True)
        assert code == 0
        assert out == "reconcile.every is unset: no schedule to apply\n"
        assert [
            r for r in await list_schedules(stack.client) if account_of(stack) in r.schedule_id
        ] == []


def test_a_next_run_within_the_second_is_in_the_future() -> None:
    assert rc._age(datetime.now(UTC) + timedelta(milliseconds=600)).startswith("in ")


def test_ages_are_read_as_a_trader_would() -> None:
    now = datetime.now(UTC)
    assert rc._age(None) == "-"
    assert rc._age(now - timedelta(seconds=5, milliseconds=100)) == "5s ago"
    assert rc._age(now + timedelta(seconds=3, milliseconds=400)) == "in 3s"
    assert rc._age(now + timedelta(milliseconds=100)) == "now"


@pytest.mark.parametrize(
    ("every", "text"),
    [
        (timedelta(seconds=30), "30s"),
        (timedelta(milliseconds=500), "500ms"),
        (timedelta(minutes=2), "2m"),
        (timedelta(seconds=90), "1m30s"),
        (timedelta(hours=1), "1h"),
        (None, "-"),
    ],
)
def test_periods_are_written_as_the_settings_write_them(every: timedelta | None, text: str) -> None:
    assert rc.period(every) == text
