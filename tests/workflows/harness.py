"""Harness for position tests: real workers, real store, real paper exchange.

`live_stack` is THE live test stack (paper exchange, posguard worker, optionally
the price gate with its user streams) on whichever Temporal server the caller's
client reaches: the time-skipping one (tests/workflows, timers pass at once) or
the dev server (integration tests). Activities reach the paper exchange over HTTP
through ccxt and PostgreSQL through asyncpg, exactly as in production.

Nothing here waits on the clock: readiness and results are awaited as conditions
(tests/waiting.py), so a loaded machine makes the tests slower, never red.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from typing import Any

from pydantic import SecretStr
from temporalio.client import Client, WorkflowHandle

from activities.store.repository import Store
from domain.client_ids import OrderStep, belongs_to, client_order_id
from domain.position import PositionSpec, PositionState
from domain.protection import ProtectionPolicy
from domain.sizing import SizingMode, SizingRequest, StopRule
from domain.types import ExchangeId, Side
from signals_ingest.gate_process import GateSource, run_gate
from simulator.client import VENUE_EXCHANGES
from simulator.server import PaperExchange
from tests.waiting import PATIENCE_S, is_transient, poll, started, until
from workers.exchanges import make_market_data_client
from workers.positions import start_position
from workers.settings import AccountSettings, ReconcileSettings, Settings
from workers.worker import run_worker
from workflows.position_io import (
    CloseRequest,
    CloseResult,
    PositionConfig,
    PositionView,
    exchange_task_queue,
)

PRICES = {
    "BTCUSDT": "60000",
    "ETHUSDT": "3000",
    "SOLUSDT": "150",
    "BNBUSDT": "600",
    "XRPUSDT": "0.6",
    "DOGEUSDT": "0.15",
}


# PositionConfig fields of most position tests: quick protection retries and short
# exchange calls, so the paths of a failing exchange take seconds, not minutes.
QUICK: dict[str, Any] = {
    "protection": ProtectionPolicy(
        retry_delay=timedelta(milliseconds=100), round_delay=timedelta(seconds=5)
    ),
    "exchange_call_timeout": timedelta(seconds=5),
    "exchange_attempts": 2,
    "entry_stop_retry": timedelta(seconds=1),
    "retry_delay": timedelta(milliseconds=200),
    "max_backoff": timedelta(seconds=5),
    "ambiguous_entry_window": timedelta(seconds=5),
}
# QUICK with protection rounds a second apart: an unprotected position is retried
# (and alerted on) round after round within a test's patience.
QUICK_ROUNDS: dict[str, Any] = {
    **QUICK,
    "protection": ProtectionPolicy(
        retry_delay=timedelta(milliseconds=100), round_delay=timedelta(seconds=1)
    ),
}


def spec(
    symbol: str = "BTCUSDT",
    side: Side = Side.LONG,
    *,
    quote: str = "1200",
    stop_pct: str = "2",
    emergency_pct: str = "5",
    **extra: Any,
) -> PositionSpec:
    """A position to open on the paper account (adopt=True: no sizing)."""
    sizing = (
        None if extra.get("adopt") else SizingRequest(mode=SizingMode.QUOTE, amount=Decimal(quote))
    )
    return PositionSpec(
        account="paper",
        exchange=ExchangeId.BINANCE_USDM,
        symbol=symbol,
        side=side,
        sizing=sizing,
        stop=StopRule(percent=Decimal(stop_pct)),
        emergency_stop_percent=Decimal(emergency_pct),
        **extra,
    )


ORDER_ENDPOINTS: dict[str, dict[str, tuple[str, str | None]]] = {
    "binance": {
        "order": ("POST /fapi/v1/order", None),
        "stop": ("POST /fapi/v1/algoOrder", None),
        "stop_cancel": ("DELETE /fapi/v1/algoOrder", None),
    },
    # one endpoint for both on Bybit: a stop is the request with a trigger price
    "bybit": {
        "order": ("POST /v5/order/create", "!triggerPrice"),
        "stop": ("POST /v5/order/create", "triggerPrice"),
        "stop_cancel": ("POST /v5/order/cancel", None),
    },
}
"""Where a plain order ("order": entries and market closes) and a stop are sent, and
where a stop is cancelled, per venue: `(endpoint, param)` for `PaperExchange.add_fault`."""

REFUSALS: dict[str, dict[str, dict[str, Any]]] = {
    "binance": {
        "server_error": {"code": -1000, "status": 500},
        "invalid_order": {"code": -4164, "msg": "notional too small"},
    },
    "bybit": {
        "server_error": {"code": 10016, "msg": "System error, try again"},
        "invalid_order": {"code": 110094, "msg": "Order value is too low"},
    },
}
"""The venue's own answer for a refusal of each kind (same error type on both)."""


@contextlib.asynccontextmanager
async def bybit_sim() -> AsyncIterator[PaperExchange]:
    """A paper exchange serving Bybit, priced with PRICES, its request limit lifted
    (the Bybit modules' `sim`)."""
    async with PaperExchange(venue="bybit", mark_interval_ms=200, admin_port=None) as exchange:
        exchange.configure(rate_limit_per_s=10_000)
        for symbol, price in PRICES.items():
            exchange.set_price(symbol, price)
        yield exchange


@dataclass
class Stack:
    """Everything a position test talks to."""

    client: Client
    sim: PaperExchange
    store: Store
    settings: Settings
    config: PositionConfig
    # The worker's /health and /metrics endpoint, when settings.health_port >= 0.
    endpoints: list[Any] = field(default_factory=list)

    @property
    def venue(self) -> str:
        """The paper exchange's venue: "binance" or "bybit"."""
        return self.sim.venue

    def fault(self, kind: str, on: str, **rule: Any) -> Any:
        """A fault of `kind` on the venue's plain orders (`on="order"`) or stops ("stop")."""
        endpoint, param = ORDER_ENDPOINTS[self.venue][on]
        return self.sim.add_fault(kind, endpoint=endpoint, param=param, **rule)

    def refuse(self, on: str, why: str, **rule: Any) -> Any:
        """The venue refuses plain orders or stops: `why` "server_error" (transient) or
        "invalid_order" (permanent), in the venue's own words."""
        return self.fault("error", on, **{**REFUSALS[self.venue][why], **rule})

    def on(self, symbol: str, side: Side, **extra: Any) -> PositionSpec:
        """`spec(...)` on this stack's account."""
        account = self.settings.accounts[0]
        return spec(symbol, side, **extra).model_copy(
            update={"account": account.name, "exchange": ExchangeId(account.exchange)}
        )

    async def open(self, position: PositionSpec, **config: Any) -> WorkflowHandle[Any, Any]:
        cfg = self.config.model_copy(update=config) if config else self.config
        return await start_position(
            self.client, position, task_queue=self.settings.task_queue, config=cfg
        )

    async def close(self, handle: WorkflowHandle[Any, Any]) -> CloseResult:
        """Close through the operator update and wait until the workflow has ended."""
        result = await handle.execute_update("close", CloseRequest(), result_type=CloseResult)
        await handle.result()
        return result

    async def view(self, handle: WorkflowHandle[Any, Any]) -> PositionView:
        """The `state` query's answer; a transient refusal of a busy machine (see
        `tests.waiting.is_transient`) is asked again, any other error is raised."""
        view: PositionView = await poll(
            lambda: handle.query("state", result_type=PositionView),
            lambda _: True,
            f"the state of {handle.id}",
        )
        return view

    async def wait_for(
        self,
        handle: WorkflowHandle[Any, Any],
        done: Callable[[PositionView], bool],
        *,
        seconds: float = PATIENCE_S,  # float ok: wall-clock seconds, a safety net only
    ) -> PositionView:
        """Poll the `state` query until `done(view)`; once `seconds` pass, the last view
        (the caller's assertion on it says what is wrong). A transient RPC error of a
        busy machine is retried; any other error is raised."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while True:
            try:
                view = await self.view(handle)
            except Exception as exc:
                if not is_transient(exc) or loop.time() > deadline:
                    raise
            else:
                if done(view) or loop.time() > deadline:
                    return view
            await asyncio.sleep(0.05)

    async def wait_state(
        self, handle: WorkflowHandle[Any, Any], *states: PositionState
    ) -> PositionView:
        return await self.wait_for(handle, lambda v: v.snapshot.state in states)

    def truth(self) -> dict[str, Any]:
        return self.sim.ground_truth()

    def position_amt(self, symbol: str) -> Decimal:
        for p in self.truth()["positions"]:
            if p["symbol"] == symbol:
                return Decimal(p["positionAmt"])
        return Decimal(0)

    def side_amt(self, symbol: str, side: Side) -> Decimal:
        """Hedge mode: the signed quantity the exchange holds on `side` of `symbol`."""
        for p in self.truth()["positions"]:
            if p["symbol"] == symbol and p.get("positionSide") == side.name:
                return Decimal(p["positionAmt"])
        return Decimal(0)

    def side_stops(self, symbol: str, side: Side) -> list[dict[str, Any]]:
        """Hedge mode: the untriggered stops resting on `side` of `symbol`."""
        return [
            a
            for a in self.orders(symbol, algo=True)
            if a["algoStatus"] == "NEW" and a["positionSide"] == side.name
        ]

    def orders(self, symbol: str, *, algo: bool) -> list[dict[str, Any]]:
        key = "algoOrders" if algo else "orders"
        return [o for o in self.truth()[key] if o["symbol"] == symbol]

    def orders_of(self, view: PositionView, *, algo: bool) -> list[dict[str, Any]]:
        """Orders (or algo orders) this position placed, recognised by client id."""
        chain = view.position_id.rsplit("/", 1)[1]
        key = "clientAlgoId" if algo else "clientOrderId"
        return [
            o
            for o in self.orders(view.spec.symbol, algo=algo)
            if belongs_to(o.get(key), view.workflow_id, chain)
        ]

    def stops_of(self, view: PositionView) -> list[dict[str, Any]]:
        """The stop and take-profit orders this position placed: recognised by client
        id, and (Bybit) the stop that lives on its position, sent with its entry."""
        own = self.orders_of(view, algo=True)
        opened = view.snapshot.opened_at
        if opened is None:
            return own
        opened_ms = opened.timestamp() * 1000
        on_position = [
            a
            for a in self.orders(view.spec.symbol, algo=True)
            if a["closePosition"]
            and a not in own
            and a["createTime"] >= opened_ms - 5_000  # sent a moment before the fill
            and (a["algoStatus"] == "NEW" or a["updateTime"] >= opened_ms)  # not an earlier one's
        ]
        return sorted(own + on_position, key=lambda a: a["createTime"])

    def stop_covers(self, stop: dict[str, Any]) -> Decimal:
        """How much of its position a stop would close: its quantity, or the whole
        position for one that lives on it (Bybit's, sent with the entry)."""
        if stop["closePosition"]:
            return abs(self.position_amt(stop["symbol"]))
        return Decimal(stop["quantity"])

    def open_stops(self, symbol: str) -> list[dict[str, Any]]:
        return [
            a
            for a in self.orders(symbol, algo=True)
            if a["algoStatus"] == "NEW" and a["orderType"] == "STOP_MARKET"
        ]

    def fills_of(self, view: PositionView) -> list[tuple[str, dict[str, Any]]]:
        """The exchange's executions of this position's orders, each with the client
        id of its order (an algo stop's execution is named by the stop's id)."""
        truth = self.truth()
        symbol = view.spec.symbol
        chain = view.position_id.rsplit("/", 1)[1]
        algo_cid = {a["algoId"]: a["clientAlgoId"] for a in truth["algoOrders"]}
        cid_of = {
            o["orderId"]: algo_cid.get(o.get("algoId")) or o["clientOrderId"]
            for o in truth["orders"]
            if o["symbol"] == symbol
        }
        return [
            (cid_of[f["orderId"]], f)
            for f in truth["fills"]
            if f["symbol"] == symbol
            and belongs_to(cid_of.get(f["orderId"]), view.workflow_id, chain)
        ]

    async def books_match(self, view: PositionView, result: CloseResult) -> None:
        """The result's fees and PnL and the store's fills are the exchange's,
        execution by execution."""
        ours = self.fills_of(view)
        assert result.fees == sum((Decimal(f["commission"]) for _, f in ours), Decimal(0))
        pnl = sum((Decimal(f["realizedPnl"]) for _, f in ours), Decimal(0))
        assert abs(result.realised_pnl - pnl) <= Decimal("0.0001") * max(abs(pnl), Decimal(1))

        async def written() -> bool:
            rows = await self.store.fills(view.position_id)
            return sorted((r.client_order_id, r.quantity) for r in rows) == sorted(
                (cid, Decimal(f["qty"])) for cid, f in ours
            )

        assert await eventually(written)

    def place_lost_stop(self, view: PositionView, trigger: Decimal) -> str:
        """A stop of this position placed behind the workflow's back, under one of its
        client ids, as a workflow task that was lost leaves one; its client id."""
        chain = view.position_id.rsplit("/", 1)[1]
        cid = client_order_id(view.workflow_id, chain, OrderStep.STOP, 40)
        self.sim.engine.place_algo(
            view.spec.symbol,
            "SELL" if view.spec.side is Side.LONG else "BUY",
            "STOP_MARKET",
            view.snapshot.qty,
            trigger,
            reduce_only=True,
            working_type="MARK_PRICE",
            client_algo_id=cid,
        )
        return cid

    async def event_types(self, position_id: str) -> list[str]:
        # Store writes are asynchronous to the workflow; the result waits for them.
        return [e.type.value for e in await self.store.events(position_id=position_id, limit=5000)]


async def eventually(
    check: Callable[[], Awaitable[bool]],
    seconds: float = PATIENCE_S,  # float ok: a safety net only
) -> bool:
    """Poll `check` until it is true (True) or `seconds` pass (False). A transient RPC
    error of a busy machine counts as "not yet"; any other error is raised."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while True:
        try:
            if await check():
                return True
        except Exception as exc:
            if not is_transient(exc) or loop.time() > deadline:
                raise
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.05)


@asynccontextmanager
async def running_worker(stack: Stack) -> AsyncIterator[None]:
    """A posguard worker (`run_worker`) on the stack's settings until the block ends.

    Entered once the worker runs (store migrated, its Temporal workers started); a
    start that fails raises here instead of leaving the test to time out."""
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(
        run_worker(
            stack.client,
            stack.settings,
            stop,
            ready=ready,
            position_config=lambda _account: stack.config,
            health_out=stack.endpoints,
        )
    )
    try:
        await started(ready, task, f"the worker of {stack.settings.task_queue}")
        yield
    finally:
        stop.set()
        await task


@asynccontextmanager
async def running_gate(stack: Stack, **options: Any) -> AsyncIterator[GateSource]:
    """The market-data process (`run_gate`: price gate, mark-price feed, the account's
    user stream, visibility sync) for the stack's account, in this process, until the
    block ends; yields its one source once it runs and its user stream is connected to
    the paper exchange. `options` go to `run_gate` (e.g. `sync_interval`, `events`)."""
    stop = asyncio.Event()
    sources: list[GateSource] = []
    kwargs: dict[str, Any] = {
        "client": stack.client,
        "health_port": -1,
        "market_data_client": make_market_data_client,
        **options,
    }
    task = asyncio.create_task(run_gate(stack.settings, stop, sources_out=sources, **kwargs))

    def up() -> bool:
        if task.done():
            task.result()
            raise AssertionError("the price gate ended before it ran")
        return bool(sources) and stack.sim.user_streams() > 0

    try:
        await until(up, "the price gate and its user stream")
        yield sources[0]
    finally:
        stop.set()
        await task


@asynccontextmanager
async def live_stack(
    client: Client,
    database_url: str,
    store: Store,
    *,
    name: str,
    check_interval: timedelta | None = None,
    with_gate: bool = False,
    account: str | None = None,
    sim: PaperExchange | None = None,
    exchange: Mapping[str, Any] | None = None,
    config: Mapping[str, Any] | None = None,
    gate: Mapping[str, Any] | None = None,
    reconcile: ReconcileSettings | None = None,
    task_queue: str | None = None,
    settings: Mapping[str, Any] | None = None,
    account_options: Mapping[str, Any] | None = None,
) -> AsyncIterator[Stack]:
    """The live test stack on `client`'s server: a paper exchange, a posguard worker
    and, `with_gate`, the price gate with its user stream; entered once all of them run.

    - `name`: prefix of the task queue (and of the account's name);
    - `account`: the account's name; by default `name` and a random suffix, so its
      workflow ids never meet another module's on the same server;
    - `sim`: a running paper exchange to use; by default a fresh one, made with the
      `exchange` keyword arguments (default: marks every 200 ms, no admin API) and
      priced with PRICES;
    - `check_interval` and `config`: the PositionConfig `Stack.open` starts positions
      with (fields not given keep their production defaults);
    - `gate`: `run_gate` options of the `with_gate` price gate (see `running_gate`);
    - `reconcile`: the reconciler's settings; by default none (no Schedule is made).
      Positions it adopts get the stack's PositionConfig;
    - `task_queue`: the worker's task queue; by default `name` and a random suffix
      (give an earlier stack's to run a worker for its workflows again);
    - `settings`: more `Settings` fields (e.g. `alert_channels`);
    - `account_options`: more `AccountSettings` fields of its account.
    """
    async with contextlib.AsyncExitStack() as running:
        if sim is None:
            exchange_options = {"mark_interval_ms": 200, "admin_port": None, **(exchange or {})}
            sim = await running.enter_async_context(PaperExchange(**exchange_options))
            for symbol, price in PRICES.items():
                sim.set_price(symbol, price)
        paper = AccountSettings(
            name=account or f"{name}{uuid.uuid4().hex[:6]}",
            exchange=VENUE_EXCHANGES[sim.venue],
            api_key=SecretStr(sim.api_key),
            secret=SecretStr(sim.api_secret),
            paper_url=sim.rest_url,
            paper_ws_url=sim.ws_url,
            max_requests_per_second=Decimal(1000),
            **(account_options or {}),
        )
        worker_settings = Settings(
            task_queue=task_queue or f"{name}-{uuid.uuid4().hex[:8]}",
            database_url=SecretStr(database_url),
            accounts=[paper],
            reconcile=reconcile or ReconcileSettings(every=None),
            **{"health_port": -1, **(settings or {})},
        )
        fields: dict[str, Any] = {"exchange_task_queue": exchange_task_queue(paper.name)}
        if check_interval is not None:
            fields["check_interval"] = check_interval
        stack = Stack(
            client, sim, store, worker_settings, PositionConfig(**{**fields, **(config or {})})
        )
        await running.enter_async_context(running_worker(stack))
        if with_gate:
            gate_options = {"events": store, **(gate or {})}
            await running.enter_async_context(running_gate(stack, **gate_options))
        yield stack
