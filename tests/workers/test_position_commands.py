"""`posguard open/close/positions/position` and the stock `temporal` CLI, as an operator runs them.

Every command runs as a real subprocess against a real stack: the Temporal dev
server, PostgreSQL, the paper exchange and a worker (in this process, on the dev
server, not the time-skipping one). The checks are the ones a user would make:
what the command prints, and what the exchange then holds.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
import pytest_asyncio
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment

from activities.store.repository import Store
from domain.position import PositionSpec, PositionState
from domain.sizing import SizingMode, SizingRequest, StopRule
from domain.types import ExchangeId, Side
from simulator.server import PaperExchange
from tests.waiting import PATIENCE_S
from tests.workflows.harness import eventually, live_stack
from workers import cli_values as values
from workers import position_commands as pc
from workers import position_text as ptext
from workers.embedded import find_binary
from workers.positions import start_position
from workers.settings import AccountSettings, Settings
from workflows.position_io import PositionView, position_workflow_id

ACCOUNT = f"paper{uuid.uuid4().hex[:6]}"


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str

    def ok(self) -> Run:
        assert self.returncode == 0, f"exit {self.returncode}\n{self.stdout}\n{self.stderr}"
        return self


@dataclass
class Live:
    """The running stack and how to reach it from a subprocess."""

    client: Client
    sim: PaperExchange
    store: Store
    env: dict[str, str]
    address: str

    async def posguard(self, *args: str) -> Run:
        # `open` and `close` wait for the position to settle (30 s and 60 s by default):
        # here as long as the tests' patience, so a busy machine slows them, never fails them.
        if args[:1] in (("open",), ("close",)) and "--no-wait" not in args:
            args = (*args, "--timeout", f"{PATIENCE_S:g}")
        return await _run([sys.executable, "-m", "workers.cli", *args], self.env)

    async def temporal(self, *args: str) -> Run:
        cmd = [find_binary("temporal"), *args, "--address", self.address]
        return await _run(cmd, self.env)

    def amt(self, symbol: str) -> Decimal:
        for p in self.sim.ground_truth()["positions"]:
            if p["symbol"] == symbol:
                return Decimal(p["positionAmt"])
        return Decimal(0)

    def open_stops(self, symbol: str) -> list[dict[str, Any]]:
        return [
            a
            for a in self.sim.ground_truth()["algoOrders"]
            if a["symbol"] == symbol and a["algoStatus"] == "NEW"
        ]


async def _run_reader_gone(cmd: list[str], env: dict[str, str]) -> Run:
    """`cmd | head -0`: its stdout is a pipe nobody reads any more."""
    read, write = os.pipe()
    os.close(read)
    try:
        proc = await asyncio.create_subprocess_exec(
            *cmd, env=env, stdout=write, stderr=asyncio.subprocess.PIPE
        )
    finally:
        os.close(write)
    _, err = await asyncio.wait_for(proc.communicate(), 2 * PATIENCE_S)
    assert proc.returncode is not None
    return Run(proc.returncode, "", err.decode())


async def _run(cmd: list[str], env: dict[str, str]) -> Run:
    proc = await asyncio.create_subprocess_exec(
        *cmd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        # Beyond the command's own wait (see `Live.posguard`): only a hung command fails.
        out, err = await asyncio.wait_for(proc.communicate(), 2 * PATIENCE_S)
    except TimeoutError:
        proc.kill()
        raise AssertionError(f"{cmd[:4]} did not finish in {2 * PATIENCE_S:g} s") from None
    assert proc.returncode is not None
    return Run(proc.returncode, out.decode(), err.decode())


def cli_env(
    address: str, database_url: str, queue: str, sim: PaperExchange, account: str, **more: Any
) -> dict[str, str]:
    """The environment of a `posguard` subprocess on the test stack: its servers, its
    task queue, and one account (`more`: more of its settings) on `sim`."""
    fields = {
        "name": account,
        "exchange": "binanceusdm",
        "api_key": sim.api_key,
        "secret": sim.api_secret,
        "paper_url": sim.rest_url,
        **more,
    }
    return {
        **os.environ,
        "POSGUARD_CONFIG": "/nonexistent.toml",
        "TEMPORAL_ADDRESS": address,
        "DATABASE_URL": database_url,
        "POSGUARD_TASK_QUEUE": queue,
        "POSGUARD_CONNECT_TIMEOUT_SECONDS": str(int(PATIENCE_S)),
        "POSGUARD_ACCOUNTS": json.dumps([fields]),
    }


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def live(
    temporal_env: WorkflowEnvironment, database_url: str, store: Store
) -> AsyncIterator[Live]:
    # The account the operator's commands below name (workflow ids, output): unique, so
    # workflows other modules left on the shared dev server are not this module's.
    async with live_stack(
        temporal_env.client, database_url, store, name="cli-positions", account=ACCOUNT
    ) as stack:
        sim, queue = stack.sim, stack.settings.task_queue
        address = temporal_env.client.service_client.config.target_host
        env = cli_env(address, database_url, queue, sim, ACCOUNT)
        try:
            yield Live(temporal_env.client, sim, store, env, address)
        finally:
            # Nothing of this module may outlive it on the shared dev server. The
            # listing lags: a workflow it still shows running may have ended since.
            query = f'TaskQueue="{queue}" AND ExecutionStatus="Running"'
            async for wf in temporal_env.client.list_workflows(query):
                try:
                    await temporal_env.client.get_workflow_handle(wf.id).terminate("test teardown")
                except RPCError as exc:
                    if exc.status is not RPCStatusCode.NOT_FOUND:
                        raise


def wid(symbol: str) -> str:
    return position_workflow_id(ACCOUNT, "binanceusdm", symbol)


def field(output: str, name: str) -> str:
    """The value of `name` in a command's `  name  value` block."""
    for line in output.splitlines():
        key, _, value = line.strip().partition("  ")
        if key == name:
            return value.strip()
    raise AssertionError(f"no {name!r} in:\n{output}")


def rows(output: str, workflow_id: str) -> list[list[str]]:
    """The `positions` table rows of `workflow_id`, split into columns."""
    header = output.splitlines()[0]
    starts = [header.index(col) for col in pc.COLUMNS]
    ends = [*starts[1:], None]
    return [
        [line[a:b].strip() for a, b in zip(starts, ends, strict=True)]
        for line in output.splitlines()
        if line.rstrip().endswith(workflow_id)
    ]


# --- arguments ---------------------------------------------------------------------------------


def test_levels_percentages_and_durations_parse_exactly() -> None:
    assert values.stop_rule("2%") == StopRule(percent=Decimal(2))
    assert values.stop_rule("59000") == StopRule(price=Decimal(59000))
    assert values.stop_rule("0.1%").percent == Decimal("0.1")
    assert values.take_profit_rule("63000.5").price == Decimal("63000.5")
    assert values.default_emergency_percent(StopRule(percent=Decimal(2))) == 5  # 2 + 3
    assert values.default_emergency_percent(StopRule(percent=Decimal(4))) == 8  # 2 x 4
    assert values.default_emergency_percent(StopRule(price=Decimal(59000))) == 5
    assert values.percent("5%") == values.percent("5") == 5
    assert values.duration("4h") == timedelta(hours=4)
    assert values.duration("1h30m") == timedelta(minutes=90)
    assert ptext.age(timedelta(hours=4)) == "4h"
    assert ptext.age(values.duration("1d2h3m")) == "1d2h"
    assert values.symbol("btc/usdt:usdt") == "BTCUSDT"
    assert ptext.dec(Decimal("0E-8")) == "0"
    assert ptext.dec(Decimal("60000.00000000")) == "60000"
    assert ptext.dec(Decimal("-12.3400")) == "-12.34"
    assert ptext.dec(Decimal("1E+3")) == "1000"
    settings = Settings(ui_port=8233)
    assert ptext.ui_url(settings, wid("BTCUSDT")) == (
        "http://127.0.0.1:8233/namespaces/default/workflows/"
        f"position%2F{ACCOUNT}%2Fbinanceusdm%2FBTCUSDT"
    )


@pytest.mark.parametrize(
    "bad",
    [
        ["--quote", "100", "--stop", "2x"],
        ["--quote", "100", "--stop", "100%"],
        ["--quote", "-5", "--stop", "2%"],
        ["--quote", "100", "--risk", "10", "--stop", "2%"],
        ["--quote", "100", "--stop", "2%", "--max-age", "4 hours"],
        ["--quote", "100", "--stop", "2%", "--exchange", "kraken"],
    ],
)
def test_bad_arguments_are_refused_before_anything_starts(bad: list[str]) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "workers.cli", "open", "BTCUSDT", "long", *bad],
        env={
            **os.environ,
            "POSGUARD_CONFIG": "/nonexistent.toml",
            "TEMPORAL_ADDRESS": "127.0.0.1:1",
        },
        capture_output=True,
        text=True,
        timeout=PATIENCE_S,
    )
    # one line naming the command and what is wrong, no traceback
    [line] = out.stderr.splitlines()
    assert out.returncode == 2 and line.startswith("posguard: open: "), out
    assert line.endswith("(see `posguard open --help`)") and "Traceback" not in out.stderr


def test_the_account_is_chosen_by_name_or_by_exchange() -> None:
    settings = Settings(
        accounts=[
            AccountSettings(name="main", exchange="binanceusdm"),
            AccountSettings(name="by", exchange="bybit"),
            AccountSettings(name="by2", exchange="bybit"),
        ]
    )
    assert pc.account_of(settings, None).name == "main"
    assert pc.account_of(settings, None, "bybit").name == "by"  # the first on bybit
    assert pc.account_of(settings, "by2", "bybit").name == "by2"
    with pytest.raises(ptext.CommandError, match="is on bybit, not binanceusdm"):
        pc.account_of(settings, "by", "binanceusdm")
    with pytest.raises(ptext.CommandError, match="on bybit"):
        pc.account_of(Settings(accounts=[AccountSettings(name="main")]), None, "bybit")


def test_a_stop_or_take_profit_price_must_be_on_its_side_of_the_price() -> None:
    def spec(side: str, stop: str, take_profit: str | None = None) -> PositionSpec:
        return PositionSpec(
            account=ACCOUNT,
            exchange=ExchangeId.BINANCE_USDM,
            symbol="ETHUSDT",
            side=Side(side),
            sizing=SizingRequest(mode=SizingMode.RISK, amount=Decimal(10)),
            stop=values.stop_rule(stop),
            emergency_stop_percent=Decimal(5),
            take_profit=None if take_profit is None else values.take_profit_rule(take_profit),
        )

    price = Decimal(3150)
    assert pc.wrong_side(spec("long", "3100", "3200"), price) is None
    assert pc.wrong_side(spec("short", "3200", "3100"), price) is None
    assert pc.wrong_side(spec("long", "2%", "50%"), price) is None  # from the entry: no read
    assert pc.wrong_side(spec("long", "3150"), price) == (
        "stop 3150 is at the price 3150: a long's stop must be below it"
    )
    assert pc.wrong_side(spec("long", "3200"), price) == (
        "stop 3200 is above the price 3150: a long's stop must be below it"
    )
    assert pc.wrong_side(spec("short", "3200", "3200.50"), price) == (
        "take-profit 3200.5 is above the price 3150: a short's take-profit must be below it"
    )


# --- the operator's commands -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("side", "stop", "exit_side"), [("long", "58800", "SELL"), ("short", "61200", "BUY")]
)
async def test_open_watch_close(live: Live, side: str, stop: str, exit_side: str) -> None:
    live.sim.set_price("BTCUSDT", "60000")
    sign = 1 if side == "long" else -1

    opened = (await live.posguard("open", "BTCUSDT", side, "--quote", "1200", "--stop", "2%")).ok()
    out = opened.stdout
    assert f"{wid('BTCUSDT')}  active" in out
    assert field(out, "position") == f"{side} 0.02 BTCUSDT on {ACCOUNT} (binanceusdm)"
    assert field(out, "entry") == "60000"
    assert field(out, "stop") == f"{stop}  (rule 2%)"
    assert field(out, "emergency stop") == "5% if ever needed"
    assert field(out, "Web UI") == (
        f"http://127.0.0.1:8233/namespaces/default/workflows/position%2F{ACCOUNT}%2Fbinanceusdm%2FBTCUSDT"
    )
    position_id = field(out, "position id")
    # The exchange holds the position and exactly one reduce-only stop for all of it.
    assert live.amt("BTCUSDT") == sign * Decimal("0.02")
    stops = live.open_stops("BTCUSDT")
    assert len(stops) == 1, stops
    assert stops[0]["reduceOnly"] is True and stops[0]["side"] == exit_side
    assert Decimal(stops[0]["quantity"]) == Decimal("0.02")
    assert Decimal(stops[0]["triggerPrice"]) == Decimal(stop)

    [listed] = rows((await live.posguard("positions")).ok().stdout, wid("BTCUSDT"))
    assert listed[:7] == ["BTCUSDT", side, "active", "0.02", "60000", stop, "0"]
    assert Decimal(listed[7]) > 0  # the entry's fee

    async def timeline_has_protection() -> bool:
        shown = (await live.posguard("position", "BTCUSDT")).ok().stdout
        return all(t in shown for t in ("entry_order_filled", "sl_placed", "position_active"))

    assert await eventually(timeline_has_protection)
    shown = (await live.posguard("position", "BTCUSDT")).ok().stdout
    assert f"{wid('BTCUSDT')}  active" in shown
    assert field(shown, "position id") == position_id
    assert shown.count("position_create_started") == 1  # this lifecycle only
    assert re.search(rf'sl_placed .*"trigger_price":"{stop}(\.0*)?"', shown), shown
    timeline = [ln.split()[3] for ln in shown.split("events (")[1].splitlines()[1:]]
    assert timeline == [
        "position_create_started",
        "entry_order_placed",
        "entry_order_filled",
        "sl_placement_started",
        "sl_placed",
        "position_active",
    ], shown

    again = await live.posguard("open", "BTCUSDT", side, "--quote", "1200", "--stop", "2%")
    assert again.returncode == 1, again
    assert f"a position on {wid('BTCUSDT')} is already open" in again.stderr
    assert live.amt("BTCUSDT") == sign * Decimal("0.02")  # nothing was placed twice

    closed = (await live.posguard("close", "BTCUSDT")).ok()
    assert f"{wid('BTCUSDT')}  closed" in closed.stdout
    assert field(closed.stdout, "reason") == "operator"
    assert live.amt("BTCUSDT") == 0
    assert live.open_stops("BTCUSDT") == []

    async def recorded() -> bool:
        rec = await live.store.get_position(position_id)
        return rec is not None and rec.status == "closed"

    assert await eventually(recorded)
    rec = await live.store.get_position(position_id)
    assert rec is not None
    # Exactly what the store holds, printed without float.
    assert field(closed.stdout, "exit price") == ptext.dec(rec.exit_price)
    assert field(closed.stdout, "realised pnl") == ptext.dec(rec.realized_pnl)
    assert field(closed.stdout, "fees") == ptext.dec(rec.fees) != "0"

    twice = await live.posguard("close", "BTCUSDT")
    assert twice.returncode == 1, twice
    assert f"{wid('BTCUSDT')} is already closed (reason operator" in twice.stderr
    assert "nothing to close" in twice.stderr

    everything = (await live.posguard("positions", "--all")).ok().stdout
    assert ["BTCUSDT", side, "closed (operator)", "0"] in [
        r[:4] for r in rows(everything, wid("BTCUSDT"))
    ]
    assert wid("BTCUSDT") not in (await live.posguard("positions")).ok().stdout

    async def timeline_has_close() -> bool:
        shown = (await live.posguard("position", "BTCUSDT")).ok().stdout
        return "position_closed" in shown

    assert await eventually(timeline_has_close)
    shown = (await live.posguard("position", "BTCUSDT")).ok().stdout
    assert f"{wid('BTCUSDT')}  closed" in shown
    assert field(shown, "position id") == position_id
    assert field(shown, "position") == f"{side} 0 BTCUSDT on {ACCOUNT} (binanceusdm)"
    assert "close_order_filled" in shown and "order_cancelled" in shown


async def test_a_position_that_is_not_there(live: Live) -> None:
    trailing = await live.posguard("trail", "XRPUSDT", "--trail", "1%")
    assert (trailing.returncode, trailing.stderr) == (
        1,
        f"posguard: no open position on XRPUSDT (account {ACCOUNT})\n",
    ), trailing
    closing = await live.posguard("close", "XRPUSDT")
    assert closing.returncode == 1
    assert f"no position workflow {wid('XRPUSDT')}: nothing to close" in closing.stderr
    shown = await live.posguard("position", "XRPUSDT")
    assert shown.returncode == 1
    assert f"no position recorded for {wid('XRPUSDT')}" in shown.stderr
    unknown = await live.posguard("close", "BTCUSDT", "--account", "nope")
    assert unknown.returncode == 1 and "no account named 'nope'" in unknown.stderr


async def test_risk_sizing_a_stop_price_and_no_wait(live: Live) -> None:
    live.sim.set_price("SOLUSDT", "150")
    started = (
        await live.posguard(
            "open",
            "SOLUSDT",
            "short",
            "--risk",
            "3",
            "--stop",
            "153",
            "--max-age",
            "4h",
            "--no-wait",
        )
    ).ok()
    assert f"started {wid('SOLUSDT')}: short SOLUSDT, risk 3, stop 153, emergency stop 5%" in (
        started.stdout
    )

    async def active() -> bool:
        out = (await live.posguard("position", "SOLUSDT")).ok().stdout
        return f"{wid('SOLUSDT')}  active" in out

    assert await eventually(active)
    shown = (await live.posguard("position", "SOLUSDT")).ok().stdout
    # Risk 3 at a stop 3 above the entry: 1 SOL.
    assert field(shown, "position") == f"short 1 SOLUSDT on {ACCOUNT} (binanceusdm)"
    assert field(shown, "stop") == "153  (rule 153)"
    assert field(shown, "max age") == "4h"
    assert live.amt("SOLUSDT") == Decimal(-1)
    (await live.posguard("close", "SOLUSDT")).ok()
    assert live.amt("SOLUSDT") == 0 and live.open_stops("SOLUSDT") == []


async def test_open_refuses_what_cannot_be_opened_before_anything_starts(live: Live) -> None:
    live.sim.set_price("ETHUSDT", "3150")
    refusals = {
        ("FOOUSDT", "long", "--quote", "100", "--stop", "2%"): (
            f"unknown symbol FOOUSDT: binanceusdm (account {ACCOUNT}) lists no such perpetual"
        ),
        ("ETHUSDT", "short", "--risk", "10", "--stop", "3100"): (
            "ETHUSDT: stop 3100 is below the price 3150: a short's stop must be above it"
        ),
        ("ETHUSDT", "long", "--quote", "300", "--stop", "2%", "--take-profit", "3100"): (
            "ETHUSDT: take-profit 3100 is below the price 3150: a long's take-profit must "
            "be above it"
        ),
    }
    runs = await asyncio.gather(*(live.posguard("open", *args) for args in refusals))
    for run, why in zip(runs, refusals.values(), strict=True):
        assert (run.returncode, run.stdout, run.stderr) == (1, "", f"posguard: {why}\n"), run
    for symbol in ("FOOUSDT", "ETHUSDT"):  # no workflow was started
        with pytest.raises(RPCError) as exc:
            await live.client.get_workflow_handle(wid(symbol)).describe()
        assert exc.value.status is RPCStatusCode.NOT_FOUND
    assert live.amt("ETHUSDT") == 0


async def test_lifecycles_of_one_workflow_id_are_told_apart(live: Live) -> None:
    """A rolled-back open and the live one after it: each its own row and events."""
    live.sim.set_price("DOGEUSDT", "0.35")
    workflow_id = wid("DOGEUSDT")
    # A stop above a long's entry: the workflow rolls it back (unsizable). The
    # command line refuses it before it starts (above), so it is started here.
    spec = PositionSpec(
        account=ACCOUNT,
        exchange=ExchangeId.BINANCE_USDM,
        symbol="DOGEUSDT",
        side=Side.LONG,
        sizing=SizingRequest(mode=SizingMode.RISK, amount=Decimal(1)),
        stop=StopRule(price=Decimal("0.4")),
        emergency_stop_percent=Decimal(5),
    )
    handle = await start_position(live.client, spec, task_queue=live.env["POSGUARD_TASK_QUEUE"])
    assert (await handle.result()).state is PositionState.ROLLED_BACK
    opened = await live.posguard("open", "DOGEUSDT", "long", "--quote", "100", "--stop", "2%")
    live_short = field(opened.ok().stdout, "position id")[-8:]

    async def both_recorded() -> bool:
        return len(await live.store.positions(symbol="DOGEUSDT")) == 2

    assert await eventually(both_recorded)
    records = {r.status: r.id for r in await live.store.positions(symbol="DOGEUSDT")}
    assert records["active"][-8:] == live_short
    gone_short = records["rolled_back"][-8:]
    assert gone_short != live_short
    listed = rows((await live.posguard("positions", "--all")).ok().stdout, workflow_id)
    position = pc.COLUMNS.index("position")
    assert sorted((r[2].split()[0], r[position]) for r in listed) == [
        ("active", live_short),
        ("rolled_back", gone_short),
    ], listed

    async def events_of_both() -> bool:
        out = (await live.posguard("events", "tail", "--symbol", "DOGEUSDT")).ok().stdout
        return "position_active" in out and "entry_order_failed" in out

    assert await eventually(events_of_both)
    tail = (await live.posguard("events", "tail", "--symbol", "DOGEUSDT")).ok().stdout
    whose = {ln.split()[3]: ln.split()[6] for ln in tail.splitlines()}
    assert whose["position_active"] == live_short, tail
    assert whose["entry_order_failed"] == gone_short, tail
    # The short id selects the events; read through `| head -1`, a command whose
    # reader went away ends quietly.
    mine, *cut = await asyncio.gather(
        live.posguard("events", "tail", "--position", live_short),
        *(
            _run_reader_gone([sys.executable, "-m", "workers.cli", *args], live.env)
            for args in (("positions", "--all"), ("events", "tail", "--position", live_short))
        ),
    )
    assert mine.ok().stdout and all(ln.split()[6] == live_short for ln in mine.stdout.splitlines())
    assert "entry_order_failed" not in mine.stdout
    assert [(c.returncode, c.stderr) for c in cut] == [(141, ""), (141, "")], cut
    (await live.posguard("close", "DOGEUSDT")).ok()


# --- the same operations with the stock temporal CLI ------------------------------------------


async def test_the_stock_temporal_cli_does_the_same(live: Live) -> None:
    live.sim.set_price("ETHUSDT", "3000")
    workflow_id = wid("ETHUSDT")
    (await live.posguard("open", "ETHUSDT", "long", "--quote", "300", "--stop", "2%")).ok()

    async def listed() -> bool:
        out = await live.temporal(
            "workflow", "list", "-q", 'WorkflowType="PositionWorkflow" AND PositionState="active"'
        )
        return out.ok().stdout.count(workflow_id) == 1

    assert await eventually(listed)

    query = await live.temporal(
        "workflow", "query", "-w", workflow_id, "--name", "state", "-o", "json"
    )
    [view] = json.loads(query.ok().stdout)["queryResult"]
    assert view["workflow_id"] == workflow_id
    assert view["snapshot"]["state"] == "active"
    assert Decimal(view["snapshot"]["qty"]) == Decimal("0.1")  # exact: a JSON string
    assert Decimal(view["snapshot"]["stop"]["trigger_price"]) == Decimal(2940)

    # The update's input is CloseRequest as JSON; the pydantic converter parses it.
    update = await live.temporal(
        "workflow", "update", "execute", "-w", workflow_id, "--name", "close",
        "--input", '{"reason":"operator"}', "-o", "json",
    )  # fmt: skip
    result = json.loads(update.ok().stdout)["result"]
    assert result["state"] == "closed" and result["reason"] == "operator"
    assert Decimal(result["exit_price"]) == Decimal(3000)
    again = await live.temporal(
        "workflow", "update", "execute", "-w", workflow_id, "--name", "close",
        "--input", '{"reason":"operator"}',
    )  # fmt: skip
    assert again.returncode != 0
    assert live.amt("ETHUSDT") == 0 and live.open_stops("ETHUSDT") == []

    # Cancelling the workflow = close at market, cancel its orders, record why.
    (await live.posguard("open", "ETHUSDT", "short", "--quote", "300", "--stop", "2%")).ok()
    assert live.amt("ETHUSDT") == Decimal("-0.1") and len(live.open_stops("ETHUSDT")) == 1
    handle = live.client.get_workflow_handle(workflow_id)

    async def idle() -> bool:
        # Wait until the workflow is watching (entry fee booked, no exchange call in
        # flight): a cancel that lands during an exchange call is swallowed today
        # (workflows/position.py `_call` turns it into ExchangeCallFailed).
        described = await handle.describe()
        view = await handle.query("state", result_type=PositionView)
        return view.snapshot.fees > 0 and not described.raw_description.pending_activities

    assert await eventually(idle)
    (await live.temporal("workflow", "cancel", "-w", workflow_id)).ok()

    async def cancelled() -> bool:
        return (await handle.describe()).status is WorkflowExecutionStatus.CANCELED

    assert await eventually(cancelled)
    assert live.amt("ETHUSDT") == 0 and live.open_stops("ETHUSDT") == []

    async def recorded() -> bool:
        out = (await live.posguard("position", "ETHUSDT")).ok().stdout
        return "position_closed" in out

    assert await eventually(recorded)
    shown = (await live.posguard("position", "ETHUSDT")).ok().stdout
    assert f"{workflow_id}  closed" in shown and field(shown, "reason") == "operator"
    assert '"requested_by":"workflow cancellation"' in shown
    assert "WARNING" not in shown


async def test_terminate_leaves_the_position_and_its_stop_unmanaged(live: Live) -> None:
    """Why the README warns against `temporal workflow terminate`."""
    live.sim.set_price("BNBUSDT", "600")
    workflow_id = wid("BNBUSDT")
    (await live.posguard("open", "BNBUSDT", "long", "--quote", "600", "--stop", "2%")).ok()

    async def recorded_active() -> bool:
        rows = await live.store.positions(symbol="BNBUSDT")
        return bool(rows) and rows[0].status == "active"

    assert await eventually(recorded_active)
    (await live.temporal("workflow", "terminate", "-w", workflow_id, "--reason", "test")).ok()
    try:
        # Still on the exchange, and nothing manages it any more.
        assert live.amt("BNBUSDT") == Decimal(1)
        assert len(live.open_stops("BNBUSDT")) == 1
        shown = (await live.posguard("position", "BNBUSDT")).ok().stdout
        assert "WARNING: its workflow is terminated: nothing manages this position" in shown
        everything = (await live.posguard("positions", "--all")).ok().stdout
        assert [r[2] for r in rows(everything, workflow_id)] == ["active NOT RUNNING"]
    finally:
        live.sim.close_position("BNBUSDT")
        for algo in live.open_stops("BNBUSDT"):
            live.sim.cancel_order(algo["algoId"])


async def test_open_with_a_trailing_stop_and_change_it_while_running(live: Live) -> None:
    live.sim.set_price("ETHUSDT", "3000")
    opened = await live.posguard(
        "open",
        "ETHUSDT",
        "long",
        "--quote",
        "1500",
        "--stop",
        "2%",
        "--trail",
        "1%",
        "--trail-activation",
        "0.5%",
        "--trail-step",
        "0.1%",
    )
    opened.ok()
    changed = (await live.posguard("trail", "ETHUSDT", "--trail", "1.5%")).ok()
    assert "trailing callback 1%, from +0.5% -> callback 1.5%, from +0.5%" in changed.stdout
    refused = await live.posguard("trail", "ETHUSDT", "--trail-activation", "200%")
    assert refused.returncode == 2 and "must be below 100" in refused.stderr
    shown = (await live.posguard("position", "ETHUSDT")).ok().stdout
    assert "trailing_params_changed" in shown
    atr = await live.posguard("trail", "ETHUSDT", "--trail-atr", "2", "--trail-atr-timeframe", "1m")
    assert "-> callback 2 x ATR(14, 1m) in [0.25%, 5%], 1.5% until measured" in atr.ok().stdout
    shown = (await live.posguard("position", "ETHUSDT")).ok().stdout
    assert "callback 2 x ATR(14, 1m)" in shown
    bad = await live.posguard("trail", "ETHUSDT", "--trail-atr", "2", "--trail-atr-min", "9%")
    assert bad.returncode == 1 and "min_pct must not exceed max_pct" in bad.stderr
    (await live.posguard("close", "ETHUSDT")).ok()
    assert live.amt("ETHUSDT") == 0
    closed = await live.posguard("trail", "ETHUSDT", "--trail", "1%")
    assert (closed.returncode, closed.stdout, closed.stderr) == (
        1,
        "",
        f"posguard: no open position on ETHUSDT (account {ACCOUNT}): its last workflow "
        f"{wid('ETHUSDT')} is completed\n",
    ), closed


async def _in_terminal(cmd: list[str], env: dict[str, str]) -> str:
    """What `cmd` prints on a (pseudo-)terminal 160 columns wide."""
    import pty

    leader, follower = pty.openpty()
    proc = await asyncio.create_subprocess_exec(
        *cmd, env={**env, "COLUMNS": "160", "TERM": "xterm-256color"}, stdout=follower,
        stderr=follower,
    )  # fmt: skip
    os.close(follower)
    chunks: list[bytes] = []

    def read_all() -> None:
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the terminal's other side closed
                return
            if not chunk:
                return
            chunks.append(chunk)

    try:
        await asyncio.wait_for(asyncio.to_thread(read_all), 2 * PATIENCE_S)
        await asyncio.wait_for(proc.wait(), PATIENCE_S)
    finally:
        os.close(leader)
    assert proc.returncode == 0, b"".join(chunks)
    return b"".join(chunks).decode()


async def test_a_terminal_sees_colour_and_a_pipe_a_live_plain_table(live: Live) -> None:
    import signal

    live.sim.set_price("XRPUSDT", "2")
    (await live.posguard("open", "XRPUSDT", "long", "--quote", "100", "--stop", "1.9")).ok()
    try:
        # On a terminal the protected position's state is green, the header bold.
        shown = await _in_terminal([sys.executable, "-m", "workers.cli", "positions"], live.env)
        assert "\x1b[32mactive" in shown and "\x1b[1msymbol" in shown, shown
        assert wid("XRPUSDT") in shown
        # `--watch` into a pipe: one plain timestamped table after another, until Ctrl-C.
        proc = await asyncio.create_subprocess_exec(
            *[sys.executable, "-m", "workers.cli", "positions", "--watch", "0.5"],
            env=live.env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert proc.stdout is not None
        seen = b""
        while seen.count(b"(Ctrl-C ends)") < 3:  # two whole frames, and a third begun
            seen += await asyncio.wait_for(proc.stdout.readline(), PATIENCE_S)
        proc.send_signal(signal.SIGINT)
        await asyncio.wait_for(proc.wait(), PATIENCE_S)
        text = seen.decode()
        assert proc.returncode == 130, text
        assert "\x1b" not in text
        frames = [f for f in text.split("\n\n") if "(Ctrl-C ends)" in f]
        for frame in frames[:2]:
            [row] = rows(frame.split("\n", 1)[1], wid("XRPUSDT"))
            assert row[:3] == ["XRPUSDT", "long", "active"]
    finally:
        (await live.posguard("close", "XRPUSDT")).ok()
    assert live.amt("XRPUSDT") == 0
