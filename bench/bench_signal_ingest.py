"""Benchmark of signal ingest; prints human lines, then one JSON object as its last line.

The signal-service simulator (`simulator.signals.SignalService`, in a child process
of its own: the service is another machine in production, and generating its JSON
is not the client's work) bursts `N` signals over its WebSocket on 127.0.0.1 to a
`SignalClient` reading into a real PostgreSQL (embedded, or `DATABASE_URL`), with a
sink that counts what it is handed. Measured side by side in one run, each on its
own service name:

* `one_per_message`: N signals, one a message (N messages);
* `fifty_per_message`: N signals, 50 a message (N/50 messages);
* `unbatched_reference`: `REF_N` signals, one a message, with `batch_max=1` (one
  message at a time, as before cross-message batching), for comparison.

Figures per phase: `signals_per_s` = signals validated, stored and handed on per
second, from the first signal's receipt (the earliest `received_at` stored) to the
moment the sink has been handed the last one; `stored` (validated rows in the
store), `loss` = expected - stored (must be 0), `sink_total` (must be N),
`store_calls` and `mean_batch` (signals per `store_signals` call), and
`burst_to_done_s`, which also counts the simulator generating the burst. Goal:
>= 10,000 signals/s in every phase of N, with zero loss.

Bounded: fixed signal counts, every wait has a deadline; only 127.0.0.1 is used.
"""

from __future__ import annotations

import asyncio
import json
import logging
import multiprocessing
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Sequence
from datetime import timedelta
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ["POSGUARD_CONFIG"] = "/nonexistent.toml"  # no posguard.toml of the working tree

from pydantic import SecretStr  # noqa: E402

from activities.store.repository import Store  # noqa: E402
from domain.records import SignalRecord  # noqa: E402
from domain.signals import Signal  # noqa: E402
from signals_ingest.signal_client import SignalClient  # noqa: E402
from tests.signal_stores import StoreInFront  # noqa: E402
from workers.embedded import start_postgres  # noqa: E402

N = int(os.environ.get("BENCH_N", "50000"))
REF_N = 2_000  # one message at a time: ~2 fsync-ed commits each
GOAL_PER_S = 10_000
SEED = 20240612
PHASE_DEADLINE_S = 300.0  # float ok: seconds; a phase that takes longer has failed


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# --- the service, in its own process ----------------------------------------------------


def _service_process(conn: Connection) -> None:
    """Child: run a SignalService; answer ("burst", n, per_message) with ids sent."""
    from simulator.signals import SignalService

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        async with SignalService(heartbeat_s=None, seed=SEED) as svc:
            conn.send((svc.url, svc.token))
            while True:
                command = await loop.run_in_executor(None, conn.recv)
                if command[0] == "burst":
                    _, n, per_message = command
                    before = len(svc.sent)
                    await svc.burst(n, per_message=per_message)
                    conn.send(len(svc.sent) - before)
                elif command[0] == "connections":
                    conn.send(svc.connections)
                else:
                    return

    asyncio.run(serve())


class Service:
    """The parent's handle on the child's SignalService."""

    def __init__(self) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(target=_service_process, args=(child,), daemon=True)
        self._process.start()
        self.url, self.token = self._answer()

    def _answer(self) -> Any:
        # A child that died never answers: wait for it with a deadline, not for ever.
        if not self._conn.poll(PHASE_DEADLINE_S):
            raise RuntimeError(f"the signal service process did not answer ({self._process})")
        return self._conn.recv()

    async def ask(self, *command: Any) -> Any:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._conn.send, command)
        return await loop.run_in_executor(None, self._answer)

    def close(self) -> None:
        self._conn.send(("stop",))
        self._process.join(10)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(5)


# --- the client under test ----------------------------------------------------------------


class CountingStore(StoreInFront):
    """The real store; counts `store_signals` calls (one per batch)."""

    def __init__(self, store: Store) -> None:
        super().__init__(store)
        self.calls = 0

    async def store_signals(
        self, records: Sequence[SignalRecord], *, commit_after: Awaitable[object] | None = None
    ) -> set[str]:
        self.calls += 1
        return await super().store_signals(records, commit_after=commit_after)


async def phase(
    store: Store, service: Service, name: str, n: int, per_message: int, **options: Any
) -> dict[str, Any]:
    counting = CountingStore(store)
    handed = 0
    done = asyncio.Event()
    done_at = 0.0  # float ok: wall-clock seconds

    async def sink(signals: list[Signal]) -> None:
        nonlocal handed, done_at
        handed += len(signals)
        if handed >= n:
            done_at = time.time()  # float ok: the clock `received_at` is read from
            done.set()

    client = SignalClient(
        service=name,
        url=service.url,
        token=SecretStr(service.token),
        store=counting,
        sink=sink,
        resume=False,  # each phase gets its own burst only
        idle_timeout=timedelta(seconds=PHASE_DEADLINE_S),
        **options,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(client.run(stop))
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while not (client.connected and await service.ask("connections") >= 1):
            if loop.time() > deadline:
                raise RuntimeError(f"{name}: the client did not connect")
            await asyncio.sleep(0.01)
        started = time.perf_counter()
        sent = await service.ask("burst", n, per_message)
        await asyncio.wait_for(done.wait(), PHASE_DEADLINE_S)
        burst_to_done = time.perf_counter() - started
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
    row = await store.pool.fetchrow(
        "SELECT count(*) AS stored, min(received_at) AS first FROM signals "
        "WHERE service = $1 AND status = 'validated'",
        name,
    )
    stored = int(row["stored"])
    elapsed = done_at - row["first"].timestamp()
    return {
        "signals": n,
        "per_message": per_message,
        "messages": client.messages,
        "signals_per_s": round(n / elapsed),
        "elapsed_s": round(elapsed, 3),
        "burst_to_done_s": round(burst_to_done, 3),
        "sent": sent,
        "stored": stored,
        "loss": n - stored,
        "sink_total": handed,
        "duplicates": client.duplicates,
        "rejected": client.rejected,
        "store_calls": counting.calls,
        "mean_batch": round(n / max(counting.calls, 1), 1),
    }


async def run() -> dict[str, Any]:
    parent = Path(tempfile.mkdtemp(prefix="posguard-bench-pg-"))
    parent.chmod(0o755)
    pg_url = os.environ.get("DATABASE_URL") or start_postgres(parent / "data", delete_on_exit=True)
    store = await Store.connect(pg_url)
    await store.migrate()
    service = Service()
    tag = uuid.uuid4().hex[:8]
    try:
        phases: dict[str, dict[str, Any]] = {}
        for key, n, per_message, options in (
            ("one_per_message", N, 1, {}),
            ("fifty_per_message", N, 50, {}),
            ("unbatched_reference", REF_N, 1, {"batch_max": 1}),
        ):
            say(f"{key}: {n:,} signals, {per_message} a message {options or ''}")
            result = await phase(store, service, f"bench-{key}-{tag}", n, per_message, **options)
            say(
                f"  {result['signals_per_s']:,} signals/s, {result['elapsed_s']} s, "
                f"loss {result['loss']}, {result['store_calls']} batches "
                f"(mean {result['mean_batch']})"
            )
            phases[key] = result
    finally:
        service.close()
        await store.close()
    measured = [phases["one_per_message"], phases["fifty_per_message"]]
    return {
        "one_per_message_signals_per_s": phases["one_per_message"]["signals_per_s"],
        "fifty_per_message_signals_per_s": phases["fifty_per_message"]["signals_per_s"],
        "unbatched_reference_signals_per_s": phases["unbatched_reference"]["signals_per_s"],
        "loss": sum(p["loss"] for p in phases.values()),
        "sink_total": sum(p["sink_total"] for p in measured),
        "expected": sum(p["signals"] for p in measured),
        "goal_per_s": GOAL_PER_S,
        "goal_met": all(p["signals_per_s"] >= GOAL_PER_S and p["loss"] == 0 for p in measured),
        "phases": phases,
        "cpus": os.cpu_count(),
    }


def main() -> None:
    logging.basicConfig(level=logging.ERROR, stream=sys.stderr)
    result = asyncio.run(run())
    for key, p in result["phases"].items():
        print(
            f"{key:20s} {p['signals']:>6,} signals, {p['per_message']:>2} a message: "
            f"{p['signals_per_s']:>6,}/s  loss {p['loss']}  sink {p['sink_total']:,}  "
            f"batches {p['store_calls']} (mean {p['mean_batch']})"
        )
    print(f"goal >= {GOAL_PER_S:,}/s, zero loss: {'met' if result['goal_met'] else 'NOT met'}")
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
