"""The signal-service simulator, through a real aiohttp WebSocket client and the
wire parser posguard uses (`domain.signal_wire.parse_message`)."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest

from domain.signal_wire import Accepted, Rejected, is_heartbeat, parse_message
from simulator.signals import SignalService
from tests.waiting import PATIENCE_S, until

TOKEN = "s3cret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SERVICE = "sim"


@pytest.fixture
async def svc() -> AsyncIterator[SignalService]:
    async with SignalService(token=TOKEN, heartbeat_s=None, seed=7) as s:
        yield s


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def parse(data: str | bytes) -> list[Accepted | Rejected]:
    return parse_message(data, service=SERVICE, received_at=datetime.now(UTC))


async def next_message(ws: aiohttp.ClientWebSocketResponse) -> aiohttp.WSMessage:
    return await asyncio.wait_for(ws.receive(), PATIENCE_S)


async def receive_ids(ws: aiohttp.ClientWebSocketResponse, count: int) -> list[str]:
    """Ids of accepted signals, in order, until `count` of them.

    Heartbeats are skipped; anything rejected, or a close, fails the test."""
    ids, close_code = await _receive(ws, count)
    assert close_code is None, f"closed ({close_code}) after {len(ids)} of {count} signals"
    return ids


async def until_closed(ws: aiohttp.ClientWebSocketResponse) -> tuple[list[str], int | None]:
    """Ids of accepted signals until the server closes; and the close frame's code."""
    return await _receive(ws, None)


async def _receive(
    ws: aiohttp.ClientWebSocketResponse, count: int | None
) -> tuple[list[str], int | None]:
    ids: list[str] = []
    while count is None or len(ids) < count:
        msg = await next_message(ws)
        if msg.type is aiohttp.WSMsgType.CLOSE:
            return ids, int(msg.data)
        if msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
            return ids, -1
        assert msg.type is aiohttp.WSMsgType.TEXT, msg
        parsed = parse(msg.data)
        assert all(isinstance(p, Accepted) for p in parsed), parsed
        ids.extend(p.signal.signal_id for p in parsed if isinstance(p, Accepted))
    return ids, None


async def test_token_checked_before_upgrade(
    svc: SignalService, http: aiohttp.ClientSession
) -> None:
    refused: list[dict[str, Any]] = [
        {},
        {"headers": {"Authorization": "Bearer wrong"}},
        {"headers": {"Authorization": TOKEN}},  # no scheme
        {"params": {"token": "wrong"}},
    ]
    for options in refused:
        with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
            await http.ws_connect(svc.url, **options)
        assert caught.value.status == 401
    assert svc.connections == 0
    async with (
        http.ws_connect(svc.url, headers=AUTH),
        http.ws_connect(svc.url, params={"token": TOKEN}),
    ):
        assert svc.connections == 2
    await until(lambda: svc.connections == 0, "both clients gone")


async def test_wave_arrives_whole_and_parses(
    svc: SignalService, http: aiohttp.ClientSession
) -> None:
    async with http.ws_connect(svc.url, headers=AUTH) as ws:
        wave = await svc.emit_wave(size=20)
        msg = await next_message(ws)
        body = json.loads(msg.data)
        assert body["type"] == "wave" and len(body["signals"]) == 20
        parsed = parse(msg.data)
        assert len(parsed) == 20 and all(isinstance(p, Accepted) for p in parsed)
        ids = [p.signal.signal_id for p in parsed if isinstance(p, Accepted)]
        assert ids == svc.sent == [str(s["id"]) for s in wave]
        numbers = [int(i) for i in ids]
        assert numbers == sorted(set(numbers))  # increasing, unique
        signals = [p.signal for p in parsed if isinstance(p, Accepted)]
        assert {s.symbol for s in signals} <= set(svc.symbols)
        assert {s.action.value for s in signals} <= {"BUY", "SELL"}

        await svc.emit_wave(size=5, spread_s=0.02)  # float ok: seconds
        for expected in svc.sent[20:]:
            msg = await next_message(ws)
            assert "signals" not in json.loads(msg.data)  # one bare signal a message
            assert [p.signal.signal_id for p in parse(msg.data)] == [expected]  # type: ignore[union-attr]


async def test_heartbeats(http: aiohttp.ClientSession) -> None:
    async with SignalService(token=TOKEN, heartbeat_s=0.02) as svc:  # float ok: seconds
        async with http.ws_connect(svc.url, headers=AUTH) as ws:
            for _ in range(2):
                msg = await next_message(ws)
                assert is_heartbeat(msg.data) and parse(msg.data) == []
                body = json.loads(msg.data)
                assert body["type"] == "heartbeat"
                assert datetime.fromisoformat(body["at"]).tzinfo is not None


@pytest.mark.parametrize("how", ["query", "message"])
async def test_disconnect_mid_wave_then_resume_delivers_rest_once(
    svc: SignalService, http: aiohttp.ClientSession, how: str
) -> None:
    async with http.ws_connect(svc.url, headers=AUTH) as ws:
        await svc.emit_wave(size=10, disconnect_after=4)
        first, code = await until_closed(ws)
    assert code == 1012  # service restart
    assert first == svc.sent[:4] and len(svc.sent) == 10

    params = {"after": first[-1]} if how == "query" else {}
    async with http.ws_connect(svc.url, headers=AUTH, params=params) as ws:
        if how == "message":
            await ws.send_json({"type": "resume", "after": int(first[-1])})
        rest = await receive_ids(ws, 6)
        await svc.emit_wave(size=3)
        new = await receive_ids(ws, 3)
    assert first + rest + new == svc.sent
    assert len(set(svc.sent)) == 13


async def test_without_resume_only_new_signals(http: aiohttp.ClientSession) -> None:
    async with SignalService(token=TOKEN, heartbeat_s=None, resume=False) as svc:
        async with http.ws_connect(svc.url, headers=AUTH) as ws:
            await svc.emit_wave(size=10, disconnect_after=4)
            first, _ = await until_closed(ws)
        assert first == svc.sent[:4]
        async with http.ws_connect(svc.url, headers=AUTH, params={"after": first[-1]}) as ws:
            await ws.send_json({"type": "resume", "after": first[-1]})
            await until(lambda: svc.connections == 1, "the client connected")
            await svc.emit_wave(size=3)
            assert await receive_ids(ws, 3) == svc.sent[10:]


async def test_resume_after_a_signal_emitted_while_nobody_listened(
    svc: SignalService, http: aiohttp.ClientSession
) -> None:
    await svc.emit_wave(size=5)
    async with http.ws_connect(svc.url, headers=AUTH, params={"after": svc.sent[1]}) as ws:
        assert await receive_ids(ws, 3) == svc.sent[2:]
    async with http.ws_connect(svc.url, headers=AUTH, params={"after": "0"}) as ws:
        assert await receive_ids(ws, 5) == svc.sent


async def test_duplicates_are_sent_again_later(
    svc: SignalService, http: aiohttp.ClientSession
) -> None:
    async with http.ws_connect(svc.url, headers=AUTH) as ws:
        await svc.emit_wave(size=10, duplicate_rate=1.0)  # float ok: a probability
        ids = await receive_ids(ws, 20)
        assert set(Counter(ids).values()) == {2} and set(ids) == set(svc.sent)
        assert sorted(svc.duplicates) == sorted(svc.sent)
        assert len(svc.sent) == 10  # copies are not new signals
        for signal_id in svc.sent:  # a copy never comes before its original
            assert ids.index(signal_id) < len(ids) - 1 - ids[::-1].index(signal_id)

        svc.duplicate_rate = 0.3  # float ok: a probability
        await svc.emit_wave(size=20)
        more = await receive_ids(ws, 20 + len(svc.duplicates) - 10)
        assert set(more) == set(svc.sent[10:]) and 0 < len(more) - 20 < 20


async def test_out_of_order_wave(svc: SignalService, http: aiohttp.ClientSession) -> None:
    async with http.ws_connect(svc.url, headers=AUTH) as ws:
        await svc.emit_wave(size=20, out_of_order=True)
        ids = await receive_ids(ws, 20)
    assert ids == svc.sent  # `sent` is emission order
    assert sorted(ids, key=int) == [str(i) for i in range(1, 21)] != ids


async def test_malformed_messages_are_rejected_and_never_raise(
    svc: SignalService, http: aiohttp.ClientSession
) -> None:
    async with http.ws_connect(svc.url, headers=AUTH) as ws:
        await svc.malformed(36)
        await svc.emit_wave(size=3)
        kinds: Counter[str] = Counter()
        reasons: set[str] = set()
        for _ in range(36):
            msg = await next_message(ws)
            assert msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY)
            kinds[msg.type.name] += 1
            parsed = parse(msg.data)
            assert parsed and all(isinstance(p, Rejected) for p in parsed), (msg.data, parsed)
            reasons.update(p.reason for p in parsed if isinstance(p, Rejected))
        assert kinds["BINARY"] >= 2 and kinds["TEXT"] >= 30
        for expected in ("invalid JSON", "not UTF-8", "too large", "too deeply nested"):
            assert expected in reasons
        assert any("finite" in r for r in reasons)
        assert await receive_ids(ws, 3) == svc.sent  # valid signals still get through
    assert svc.malformed_sent == 36


async def test_burst_of_10000_arrives_complete(
    svc: SignalService, http: aiohttp.ClientSession
) -> None:
    async with http.ws_connect(svc.url, headers=AUTH) as ws:
        await svc.burst(10_000)
        ids = await receive_ids(ws, 10_000)
    assert ids == svc.sent and len(set(ids)) == 10_000


async def test_disconnect_all_and_schedule(svc: SignalService, http: aiohttp.ClientSession) -> None:
    async with (
        http.ws_connect(svc.url, headers=AUTH) as a,
        http.ws_connect(svc.url, headers=AUTH) as b,
    ):
        assert svc.disconnect_all() == 2 and svc.connections == 0
        assert await until_closed(a) == ([], 1012) == await until_closed(b)
    async with http.ws_connect(svc.url, headers=AUTH) as ws:
        await svc.run_schedule(0.01, 2, count=3)  # float ok: seconds
        assert await receive_ids(ws, 6) == svc.sent and svc.waves == 3
