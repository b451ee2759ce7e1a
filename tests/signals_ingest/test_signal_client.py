"""The signal client against the signal-service simulator and a real PostgreSQL.

Every message stored before anything else, nothing lost on a disconnect when the
service resumes, a gap recorded when it cannot, duplicates stored once, garbage
rejected with a reason, and backpressure instead of dropping. Messages read
together are one batch: one store call (rows and events), one sink call, in order.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import aiohttp
import pytest
from pydantic import SecretStr

from activities.store.repository import Store
from domain.events import Event
from domain.records import SignalRecord
from domain.signals import Signal
from signals_ingest.signal_client import SignalClient, _data_waiting
from simulator.signals import SignalService
from tests.signal_stores import StoreInFront
from tests.waiting import poll, until


class SlowStore(StoreInFront):
    """The real store, each batch of signals written `delay_s` late (a slow database)."""

    def __init__(self, store: Store, delay_s: float) -> None:  # float ok: seconds
        super().__init__(store)
        self._delay_s = delay_s

    async def store_signals(
        self, records: Sequence[SignalRecord], *, commit_after: Awaitable[object] | None = None
    ) -> set[str]:
        await asyncio.sleep(self._delay_s)
        return await super().store_signals(records, commit_after=commit_after)


class CountingStore(SlowStore):
    """The real store, recording each call's size: `batches` (records per
    `store_signals`)."""

    def __init__(self, store: Store) -> None:
        super().__init__(store, 0)
        self.batches: list[int] = []

    async def store_signals(
        self, records: Sequence[SignalRecord], *, commit_after: Awaitable[object] | None = None
    ) -> set[str]:
        self.batches.append(len(records))
        return await super().store_signals(records, commit_after=commit_after)


async def signal_events(store: Store, service: str) -> dict[str, int]:
    """How many events of each type the log holds for the service's signal rows."""
    rows = await store.pool.fetch(
        "SELECT type, count(*) AS n FROM events WHERE correlation_id LIKE $1 GROUP BY type",
        f"signal/{service}/%",
    )
    return {r["type"]: int(r["n"]) for r in rows}


@asynccontextmanager
async def reading(
    svc: SignalService,
    store: Any,
    name: str,
    *,
    then: Callable[[list[Signal]], Awaitable[None]] | None = None,
    **options: Any,
) -> AsyncIterator[tuple[SignalClient, list[Signal]]]:
    """A SignalClient on `svc` until the block ends; yields it and what it handed on
    (each sink call is recorded, then awaits `then` if given)."""
    handed: list[Signal] = []

    async def sink(signals: list[Signal]) -> None:
        handed.extend(signals)
        if then is not None:
            await then(signals)

    client = SignalClient(
        service=name,
        url=svc.url,
        token=SecretStr(svc.token),
        store=store,
        sink=sink,
        backoff_initial=timedelta(milliseconds=50),
        backoff_max=timedelta(milliseconds=200),
        **options,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(client.run(stop))
    try:
        await until(lambda: client.connected and svc.connections >= 1, f"{name} connected")
        yield client, handed
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def ids_stored(store: Store, service: str) -> list[str]:
    rows = await store.signals(service, limit=100_000)
    return sorted(r.signal_id or "" for r in rows if r.status != "rejected")


def everything(svc: SignalService) -> list[str]:
    return sorted(svc.sent)


def stored_all(store: Store, service: str, svc: SignalService) -> Callable[[], Any]:
    async def check() -> bool:
        return await ids_stored(store, service) == everything(svc)

    return check


async def test_a_wave_is_stored_recorded_and_handed_on_once(store: Store) -> None:
    async with SignalService(heartbeat_s=0.2) as svc, reading(svc, store, "wave") as (_, handed):
        wave = await svc.emit_wave(size=20)
        await until(stored_all(store, "wave", svc), "the wave stored")
        await until(lambda: len(handed) == 20, "the wave handed on")
        assert sorted(s.signal_id for s in handed) == everything(svc)
        events = await store.events(event_type="signal_validated", limit=1000)
        assert len([e for e in events if e.correlation_id.startswith("signal/wave/")]) == 20
        assert len(wave) == 20


async def test_duplicates_are_stored_once_and_handed_on_once(store: Store) -> None:
    async with SignalService(duplicate_rate=1.0) as svc, reading(svc, store, "dup") as (c, handed):
        await svc.emit_wave(size=10)
        await until(lambda: c.duplicates >= 10, "the copies seen")
        assert await ids_stored(store, "dup") == everything(svc)
        assert sorted(s.signal_id for s in handed) == everything(svc)


async def test_a_disconnect_mid_wave_loses_nothing_when_the_service_resumes(
    store: Store,
) -> None:
    async with SignalService(resume=True) as svc, reading(svc, store, "resume") as (c, _):
        await svc.emit_wave(size=12, disconnect_after=5)
        await until(stored_all(store, "resume", svc), "the whole wave, after the resume")
        await svc.emit_wave(size=3)
        await until(stored_all(store, "resume", svc), "the next wave")
        assert c.reconnects >= 1
        events = await store.events(event_type="websocket_reconnected", limit=100)
        mine = [e for e in events if "signal-service/resume" in e.event_id]
        assert mine and "resumed" in (mine[-1].payload["reason"] or "")


async def test_a_reconnect_without_resume_is_recorded_as_a_gap(store: Store) -> None:
    async with (
        SignalService(resume=False) as svc,
        reading(svc, store, "gap", resume=False) as (client, _),
    ):
        svc.disconnect_all()
        await until(lambda: client.reconnects >= 1 and client.connected, "reconnected")

        async def recorded() -> list[Event]:
            events = await store.events(event_type="websocket_reconnected", limit=100)
            return [e for e in events if "signal-service/gap" in e.event_id]

        # The event is written just after the client counts itself connected.
        mine = await poll(recorded, bool, "the reconnection recorded")
        assert "gap" in (mine[-1].payload["reason"] or "")
        assert mine[-1].payload["downtime_ms"] is not None


async def test_garbage_is_rejected_with_its_reason_and_valid_signals_still_flow(
    store: Store,
) -> None:
    async with SignalService() as svc, reading(svc, store, "junk") as (client, _):
        await svc.emit_wave(size=3)
        await svc.malformed(36)
        await svc.emit_wave(size=3)
        await until(stored_all(store, "junk", svc), "the valid signals")
        await until(lambda: client.rejected >= 36, "every malformed message rejected")
        rows = await store.signals("junk", limit=1000)
        rejected = [r for r in rows if r.status == "rejected"]
        assert len(rejected) >= 36 and all(r.reason for r in rejected)
        assert client.connected  # never crashed, never dropped the connection


async def test_a_slow_store_slows_the_reading_and_loses_nothing(store: Store) -> None:
    slow = SlowStore(store, 0.05)
    async with SignalService() as svc, reading(svc, slow, "slow") as (client, _):
        await svc.burst(n=2_000, per_message=100)
        await until(stored_all(store, "slow", svc), "all 2,000 stored", seconds=120)
        assert client.stored == 2_000


# --- batches across messages --------------------------------------------------------------

LONG = timedelta(seconds=60)
"""A linger no test waits out: each batch below ends at its `batch_max`."""


async def test_messages_read_together_are_one_batch_in_their_order(store: Store) -> None:
    counting = CountingStore(store)
    calls: list[list[str]] = []

    async def record(signals: list[Signal]) -> None:
        calls.append([s.signal_id for s in signals])

    async with (
        SignalService(heartbeat_s=None) as svc,
        reading(svc, counting, "batch", then=record, batch_max=10, batch_linger=LONG) as (c, h),
    ):
        await svc.burst(30, per_message=1)  # 30 messages of one signal
        await until(lambda: len(h) == 30, "all 30 handed on")
        assert calls == [svc.sent[0:10], svc.sent[10:20], svc.sent[20:30]]
        assert counting.batches == [10, 10, 10]  # one INSERT a batch, not one a message
        # Each row stored with its received and validated events, in the same call.
        assert await signal_events(store, "batch") == {
            "signal_received": 30,
            "signal_validated": 30,
        }
        assert c.messages == 30 and c.stored == 30 and c.duplicates == 0
        assert await ids_stored(store, "batch") == everything(svc)


async def test_a_copy_in_another_message_of_the_batch_is_stored_and_handed_on_once(
    store: Store,
) -> None:
    counting = CountingStore(store)
    calls: list[list[str]] = []

    async def record(signals: list[Signal]) -> None:
        calls.append([s.signal_id for s in signals])

    async with (
        SignalService(heartbeat_s=None) as svc,
        reading(svc, counting, "copies", then=record, batch_max=10, batch_linger=LONG) as (c, _),
    ):
        # 5 signals, each sent again in a later message: 10 messages, one batch.
        wave = await svc.emit_wave(size=5, per_message=1, duplicate_rate=1.0)
        await until(lambda: c.duplicates == 5, "the 5 copies seen")
        assert len(svc.duplicates) == 5 and c.messages == 10
        assert counting.batches == [10]
        assert calls == [[str(s["id"]) for s in wave]]  # once each, in the wave's order
        assert c.stored == 5
        assert await ids_stored(store, "copies") == everything(svc)
        # The copies recorded nothing.
        assert await signal_events(store, "copies") == {
            "signal_received": 5,
            "signal_validated": 5,
        }


async def _ids_are(store: Store, service: str, ids: list[str]) -> bool:
    return await ids_stored(store, service) == ids


async def test_a_blocked_sink_stops_the_reading(store: Store) -> None:
    release = asyncio.Event()
    calls: list[list[str]] = []

    async def held(signals: list[Signal]) -> None:
        calls.append([s.signal_id for s in signals])
        await release.wait()

    async with (
        SignalService(heartbeat_s=None) as svc,
        reading(svc, store, "held", then=held, batch_max=4) as (client, handed),
    ):
        first = await svc.emit_wave(size=3)
        await until(lambda: len(calls) == 1, "the first wave handed on (and held)")
        second = await svc.emit_wave(size=4)
        await until(lambda: client.messages == 2, "the next batch read")
        await svc.emit_wave(size=4)
        await until(lambda: client.messages == 3, "a third batch read (not stored)")
        await svc.emit_wave(size=4)
        # Nothing to wait for: the point is that nothing happens. Were the client
        # reading, 0.5 s would be ample to read, store and hand on two messages.
        # Two batches are stored side by side (the second waits to be handed on
        # after the first) and one more (at most `batch_max`, 4 signals) is read
        # ahead, no more.
        await asyncio.sleep(0.5)
        assert client.messages == 3
        stored = sorted(str(s["id"]) for s in [*first, *second])
        await until(
            lambda: _ids_are(store, "held", stored), "the second batch stored (not handed on)"
        )
        assert len(calls) == 1
        release.set()
        await until(stored_all(store, "held", svc), "the held waves stored")
        await until(lambda: len(handed) == 15, "the held waves handed on")
        # In order, each once.
        assert calls == [svc.sent[:3], svc.sent[3:7], svc.sent[7:11], svc.sent[11:]]
        assert client.messages == 4 and client.stored == 15


async def test_batch_bounds_are_checked(store: Store) -> None:
    options: dict[str, Any] = {"service": "x", "url": "ws://127.0.0.1:1", "token": SecretStr("t")}
    with pytest.raises(ValueError, match="batch_max"):
        SignalClient(**options, store=store, batch_max=0)
    with pytest.raises(ValueError, match="batch_linger"):
        SignalClient(**options, store=store, batch_linger=timedelta(milliseconds=-1))


async def test_a_frame_already_received_is_seen_waiting() -> None:
    # The reading takes a frame aiohttp already holds without a timer: this tells
    # when aiohttp's internals change and that fast path is lost (the reading
    # still works, only slower).
    async with SignalService(heartbeat_s=None) as svc, aiohttp.ClientSession() as http:
        headers = {"Authorization": f"Bearer {svc.token}"}
        async with http.ws_connect(svc.url, headers=headers) as ws:
            await until(lambda: svc.connections == 1, "connected")
            assert not _data_waiting(ws)
            await svc.emit_wave(size=2, per_message=1)
            await until(lambda: _data_waiting(ws), "the two frames received")
            first = await ws.receive()
            assert first.type is aiohttp.WSMsgType.TEXT and _data_waiting(ws)
            await ws.receive()
            assert not _data_waiting(ws)
