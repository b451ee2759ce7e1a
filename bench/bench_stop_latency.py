"""Benchmark: time from entry fill to stop-loss live at the exchange, 50 positions at once,
on each exchange side by side (Binance USD-M, then Bybit v5, in one run).

50 positions on 50 different symbols are started together on the real Temporal
dev server; one posguard worker (`python -m workers.cli worker`, its own process)
runs them against the paper exchange (this process) and an embedded PostgreSQL.
The figures come from the paper exchange's ground truth, not from the workflow:

* entry_fill_to_stop_live_ms: the entry MARKET order's fill time (its updateTime)
  to the stop's createTime (the algo order accepted by the exchange), per position;
  this is the window in which a position is open without a stop (0 for a stop live
  before the fill: Bybit's, sent with the entry; `stop_live_before_fill` counts them).
* unprotected_ms: the exchange's own count of time each position spent open with
  no reduce-only stop (should match the figure above).
* start_to_stop_live_ms: from the start request to the stop live (whole open path).

Per venue, the paper exchange serves that venue's API to unmodified ccxt
(`binanceusdm` / `bybit`; the Bybit venue's per-endpoint request limit is lifted so
the figure is the mechanism's, not the limiter's). Prints human-readable lines,
then one JSON object (a section per venue) as the last line. Bounded: each venue's
run is cut at 150 s.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from temporalio.testing import WorkflowEnvironment  # noqa: E402

from domain.position import PositionSpec  # noqa: E402
from domain.protection import ProtectionPolicy  # noqa: E402
from domain.sizing import SizingMode, SizingRequest, StopRule  # noqa: E402
from domain.types import ExchangeId, Side  # noqa: E402
from simulator.client import VENUE_EXCHANGES  # noqa: E402
from simulator.server import PaperExchange  # noqa: E402
from workers.embedded import find_binary, start_postgres  # noqa: E402
from workers.positions import start_position  # noqa: E402
from workers.temporal import DATA_CONVERTER  # noqa: E402
from workflows.position_io import PositionConfig, PositionView, exchange_task_queue  # noqa: E402
from workflows.search_attributes import ALL_KEYS  # noqa: E402

N = int(os.environ.get("BENCH_POSITIONS", "50"))
GOAL_P99_MS = {"binance": 50, "bybit": 0}
"""Issue 13's goals: Binance p99 under 50 ms; Bybit 0 (the stop exists before the fill)."""
ACCOUNT = "bench"
DEADLINE_S = 150
SETTLE_S = 90
SYMBOLS = [f"Q{chr(65 + i // 26)}{chr(65 + i % 26)}USDT" for i in range(N)]


def percentile(values: list[int], q: float) -> int:  # float ok: a quantile
    """Nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


async def start_worker(env: dict[str, str]) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "workers.cli",
        "worker",
        cwd=str(ROOT),
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert proc.stdout is not None
    log: list[str] = []
    while True:
        line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode(errors="replace")
        if not line:
            raise RuntimeError("worker exited:\n" + "".join(log))
        log.append(line)
        if "worker polling task queue" in line:
            break

    async def drain() -> None:
        assert proc.stdout is not None
        while await proc.stdout.readline():
            pass

    asyncio.get_running_loop().create_task(drain())
    return proc


VENUES = {venue: ExchangeId(exchange) for venue, exchange in VENUE_EXCHANGES.items()}


async def run(venue: str) -> dict[str, Any]:
    parent = Path(tempfile.mkdtemp(prefix="posguard-bench-pg-"))
    parent.chmod(0o755)
    pg_url = os.environ.get("DATABASE_URL") or start_postgres(parent / "data", delete_on_exit=True)
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=find_binary("temporal"),
        data_converter=DATA_CONVERTER,
        search_attributes=list(ALL_KEYS),
        dev_server_log_level="error",
    )
    worker: asyncio.subprocess.Process | None = None
    try:
        async with PaperExchange(
            venue=venue,
            mark_interval_ms=1000,
            admin_port=None,
            symbols=SYMBOLS,
            weight_limit=10**9,
        ) as sim:
            if venue == "bybit":
                sim.configure(rate_limit_per_s=100_000)
            sim.deposit("1000000")
            for symbol in SYMBOLS:
                sim.set_price(symbol, "10")
            task_queue = f"bench-{uuid.uuid4().hex[:8]}"
            accounts = [
                {
                    "name": ACCOUNT,
                    "exchange": VENUES[venue].value,
                    "api_key": sim.api_key,
                    "secret": sim.api_secret,
                    "paper_url": sim.rest_url,
                    "max_requests_per_second": "1000",
                }
            ]
            worker_env = {
                k: v
                for k, v in os.environ.items()
                if not k.startswith("POSGUARD_") and k not in ("DATABASE_URL", "TEMPORAL_ADDRESS")
            }
            worker_env.update(
                TEMPORAL_ADDRESS=env.client.service_client.config.target_host,
                DATABASE_URL=pg_url,
                POSGUARD_TASK_QUEUE=task_queue,
                POSGUARD_RECONCILE__EVERY="off",  # no reconcile passes in this run
                POSGUARD_CONFIG="/nonexistent.toml",
                POSGUARD_ACCOUNTS=json.dumps(accounts),
            )
            worker = await start_worker(worker_env)
            config = PositionConfig(
                exchange_task_queue=exchange_task_queue(ACCOUNT),
                check_interval=timedelta(minutes=10),
                protection=ProtectionPolicy(retry_delay=timedelta(milliseconds=200)),
            )
            specs = [
                PositionSpec(
                    account=ACCOUNT,
                    exchange=VENUES[venue],
                    symbol=symbol,
                    side=Side.LONG if i % 2 == 0 else Side.SHORT,
                    sizing=SizingRequest(mode=SizingMode.QUOTE, amount=Decimal(100)),
                    stop=StopRule(percent=Decimal(2)),
                    emergency_stop_percent=Decimal(5),
                )
                for i, symbol in enumerate(SYMBOLS)
            ]
            print(
                f"{venue}: starting {N} positions on {N} symbols (task queue {task_queue})",
                flush=True,
            )
            started_ms = time.time() * 1000
            handles = await asyncio.gather(
                *(
                    start_position(env.client, s, task_queue=task_queue, config=config)
                    for s in specs
                )
            )
            # Watch the exchange, not the workflows: queries would load the worker.
            loop = asyncio.get_running_loop()
            deadline = loop.time() + SETTLE_S
            while loop.time() < deadline:
                with_stop = {a["symbol"] for a in sim.ground_truth()["algoOrders"]}
                if with_stop >= set(SYMBOLS):
                    break
                await asyncio.sleep(0.05)
            all_settled_s = (time.time() * 1000 - started_ms) / 1000
            truth = sim.ground_truth()
            views = await asyncio.gather(
                *(h.query("state", result_type=PositionView) for h in handles)
            )
            states = [v.snapshot.state.value for v in views]
            for handle in handles:
                await handle.terminate("benchmark over")
    finally:
        if worker is not None and worker.returncode is None:
            worker.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(worker.wait(), 15)
            except TimeoutError:
                worker.kill()
                await worker.wait()
        await env.shutdown()

    fill_to_stop: list[int] = []
    start_to_stop: list[int] = []
    stop_first = 0
    problems: list[str] = []
    for symbol in SYMBOLS:
        entries = [
            o
            for o in truth["orders"]
            if o["symbol"] == symbol and o["type"] == "MARKET" and not o["reduceOnly"]
        ]
        stops = sorted(
            (a for a in truth["algoOrders"] if a["symbol"] == symbol),
            key=lambda a: a["createTime"],
        )
        if len(entries) != 1 or entries[0]["status"] != "FILLED" or not stops:
            problems.append(f"{symbol}: {len(entries)} entries, {len(stops)} stops")
            continue
        # Bybit's stop sent with the entry is live before the fill: no window (0).
        lead = stops[0]["createTime"] - entries[0]["updateTime"]
        stop_first += lead <= 0
        fill_to_stop.append(max(0, lead))
        start_to_stop.append(int(stops[0]["createTime"] - started_ms))
    unprotected = [v for k, v in truth["unprotectedMs"].items() if k in SYMBOLS]

    def summary(values: list[int]) -> dict[str, int]:
        if not values:
            return {"p50": -1, "p99": -1, "max": -1}
        return {
            "p50": percentile(values, 50),
            "p99": percentile(values, 99),
            "max": max(values),
        }

    result = {
        "venue": venue,
        "positions": N,
        "protected": len(fill_to_stop),
        "states": {s: states.count(s) for s in sorted(set(states))},
        "entry_fill_to_stop_live_ms": summary(fill_to_stop),
        "stop_live_before_fill": stop_first,
        "unprotected_ms": summary(unprotected),
        "start_to_stop_live_ms": summary(start_to_stop),
        "all_settled_s": round(all_settled_s, 2),
        "goal_p99_ms": GOAL_P99_MS[venue],
        "goal_met": bool(fill_to_stop)
        and len(fill_to_stop) == N
        and summary(fill_to_stop)["p99"] <= GOAL_P99_MS[venue],
        "problems": problems,
    }
    return result


def report(result: dict[str, Any]) -> None:
    f = result["entry_fill_to_stop_live_ms"]
    s = result["start_to_stop_live_ms"]
    print(f"[{result['venue']}]")
    print(f"positions protected:       {result['protected']}/{result['positions']}")
    print(f"final states:              {result['states']}")
    print(f"entry fill -> stop live:   p50 {f['p50']} ms, p99 {f['p99']} ms, max {f['max']} ms")
    print(
        f"exchange unprotected time: p50 {result['unprotected_ms']['p50']} ms, "
        f"p99 {result['unprotected_ms']['p99']} ms"
    )
    print(f"start -> stop live:        p50 {s['p50']} ms, p99 {s['p99']} ms, max {s['max']} ms")
    print(f"all {result['positions']} stops live after: {result['all_settled_s']} s")
    goal = result["goal_p99_ms"]
    print(f"goal p99 <= {goal} ms:          {'met' if result['goal_met'] else 'NOT met'}")
    for problem in result["problems"]:
        print(f"problem: {problem}")


def main() -> None:
    results = {}
    for venue in VENUES:
        results[venue] = asyncio.run(asyncio.wait_for(run(venue), DEADLINE_S))
        report(results[venue])
    print(json.dumps(results), flush=True)


if __name__ == "__main__":
    main()
