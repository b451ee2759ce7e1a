"""Fuzz: 100,000 hostile frames and 2,000 valid signals over one real WebSocket.

The signal-service simulator (`SignalService.send_raw` for the hostile frames,
`emit_wave` for the valid signals) talks to a `SignalClient` storing into a real
PostgreSQL. The hostile frames come from a deterministic, seeded generator (no
hypothesis: the same frames on every run) that knows, for each frame, how many
rejected rows it must yield:

- a frame that cannot be read as a whole (not UTF-8, empty, invalid, too large or
  too deeply nested JSON, a BOM, a JSON scalar, a bad envelope), or that is one
  invalid signal object: exactly one rejected row;
- a list of k distinct garbage items: k rejected rows (one per item);
- an empty wave or a heartbeat-shaped object: no row at all (`parse_message`
  yields nothing for them), and no event.

Then: the client never crashes nor reconnects; the rejected rows (and
SIGNAL_REJECTED events) are exactly the generator's count; every valid signal
is stored once, handed to the sink once, in emission order, copies included
(copies in one message, in consecutive messages, and resent much later).
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import SecretStr

from activities.store.repository import Store
from domain.signal_wire import Accepted, Rejected, parse_message
from domain.signals import Signal
from signals_ingest.signal_client import SignalClient
from simulator.signals import SignalService
from tests.waiting import until

SEED = 20240612
HOSTILE = 100_000
VALID = 2_000
BACKLOG = 20_000
"""Frames sent but not yet read, at most: the simulator drops a client whose queue
holds 100,000 frames (its QUEUE_LIMIT), and this test is about garbage, not that."""

FIELDS = (
    "id",
    "pair_symbol",
    "exchange_name",
    "score_week",
    "score_month",
    "recommended_action",
    "timestamp",
)
WRONG_TYPES: dict[str, list[Any]] = {
    "id": [1.5, True, False, [], {}, [1], {"id": 1}, -0.0],
    "pair_symbol": [42, True, [], {}, ["BTCUSDT"], 1.5],
    "exchange_name": [7, True, [], {}, ["binance"]],
    "score_week": ["high", True, [], {}, [1], "1_000", "NaN", "0x10"],
    "score_month": ["low", False, [], {"v": 1}, "", " "],
    "recommended_action": [7, True, ["BUY"], {}, 1.5],
    "timestamp": [True, [], {}, "yesterday", "2024-13-01T00:00:00Z", 0, -1714564800, 1e15],
}
BAD_VALUES: list[tuple[str, Any]] = [
    ("exchange_name", "mtgox"),
    ("exchange_name", "kraken"),
    ("exchange_name", ""),
    ("recommended_action", "YOLO"),
    ("recommended_action", ""),
    ("pair_symbol", "BTCEUR"),
    ("pair_symbol", "BTC/USD:BTC"),
    ("pair_symbol", ""),
    ("pair_symbol", "ﬃUSDT"),
    ("score_week", 1e10),
    ("score_month", -1e10),
    ("score_week", 5e-324),
    ("score_week", "1" * 5_000),
    ("id", ""),
    ("id", "   "),
    ("timestamp", "9999-99-99"),
]
CONTROL = ["\x00", "\x01", "\x07", "\x1b", "\x7f", "\u2028", "\u200b\x00", "\r\n"]
NON_FINITE = ["NaN", "Infinity", "-Infinity", "1e999", "-1e999", "1e999999999"]


@dataclass(frozen=True, slots=True)
class Frame:
    """One hostile frame and the rejected rows it must yield."""

    kind: str
    data: str | bytes
    rows: int


def _good(k: int) -> dict[str, Any]:
    """A valid-looking signal of the hostile stream (string ids: never a valid one's)."""
    return {
        "id": f"h-{k}",
        "pair_symbol": "BTCUSDT",
        "exchange_name": "binance",
        "score_week": 12.5,
        "score_month": -3,
        "recommended_action": "BUY",
        "timestamp": "2024-05-01T12:00:00Z",
    }


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _garbage_item(rng: random.Random, k: int, j: int) -> Any:
    choice = rng.randrange(6)
    if choice == 0:
        return f"junk-{k}-{j}"
    if choice == 1:
        return k * 10 + j
    if choice == 2:
        return {"x_junk": [k, j]}
    if choice == 3:
        return [k, j, None]
    if choice == 4:
        return {**_good(k), "id": f"h-{k}-{j}", "exchange_name": None}
    return k + j / 8


def _one(kind: str, data: str | bytes) -> Frame:
    return Frame(kind, data, 1)


def _makers(valid_ids: int) -> dict[str, Callable[[random.Random, int], Frame]]:
    """Each kind of hostile frame: `maker(rng, k)` for the k-th frame."""

    def huge(rng: random.Random, k: int) -> Frame:  # 200 KB: beyond the 64 KB a message may be
        field = rng.choice(["pair_symbol", "recommended_action", "x_note", "id"])
        return _one("huge_200k", _dumps({**_good(k), field: "Z" * 200_000}))

    def big(rng: random.Random, k: int) -> Frame:  # 50 KB: within the limit, still absurd
        return _one("big_50k", _dumps({**_good(k), "recommended_action": "A" * 50_000}))

    def deep(rng: random.Random, k: int) -> Frame:  # nesting 10,000: past the decoder's limit
        opener, closer = rng.choice([("[", "]"), ('{"a":', "}"), ('[{"b":', "}]")])
        return _one("deep_10000", opener * 10_000 + "1" + closer * 10_000)

    def deep_item(rng: random.Random, k: int) -> Frame:  # readable, but one item is 40 deep
        nested: Any = k
        for _ in range(40):
            nested = [nested]
        return _one("deep_item", _dumps({"type": "wave", "signals": [{**_good(k), "x": nested}]}))

    def non_utf8(rng: random.Random, k: int) -> Frame:  # a binary frame (\xff is never UTF-8)
        return _one("non_utf8", b"\xff" + rng.randbytes(rng.randrange(0, 300)))

    def surrogate(rng: random.Random, k: int) -> Frame:  # a lone surrogate, as bytes
        text = _dumps({**_good(k), "id": f"s\ud800{k}"})
        return _one("surrogate", text.encode("utf-8", "surrogatepass"))

    def empty(rng: random.Random, k: int) -> Frame:
        return _one("empty", rng.choice(["", " ", "\n\t  ", b"", b"   "]))

    def bom(rng: random.Random, k: int) -> Frame:  # a valid signal behind a BOM is not JSON
        return _one("bom", "\ufeff" + _dumps(_good(k)))

    def truncated(rng: random.Random, k: int) -> Frame:
        text = _dumps(_good(k))
        return _one("truncated", text[: rng.randrange(1, len(text) - 1)])

    def control_text(rng: random.Random, k: int) -> Frame:  # control characters, not JSON
        return _one("control_text", "".join(chr(rng.randrange(0, 32)) for _ in range(20)) + "x")

    def scalar(rng: random.Random, k: int) -> Frame:
        value = rng.choice(["null", "true", "false", str(k), "-1.5e300", '"hello"', '"pingx"'])
        return _one("scalar", value)

    def bad_envelope(rng: random.Random, k: int) -> Frame:
        value = rng.choice(["nope", 5, {"id": k}, None, True])
        return _one("bad_envelope", _dumps({"type": "wave", "signals": value}))

    def garbage_array(rng: random.Random, k: int) -> Frame:
        items: list[Any] = []
        seen: set[str] = set()
        for j in range(rng.randrange(1, 6)):
            item = _garbage_item(rng, k, j)
            if _dumps(item) not in seen:  # two equal items in one message are one receipt
                seen.add(_dumps(item))
                items.append(item)
        if rng.random() < 0.5:
            return Frame("garbage_array", _dumps(items), len(items))
        return Frame("garbage_array", _dumps({"type": "wave", "signals": items}), len(items))

    def zero_rows(rng: random.Random, k: int) -> Frame:  # nothing to store, nothing rejected
        data = rng.choice(
            [
                "[]",
                '{"type": "wave", "signals": []}',
                '{"signals": [], "junk": "x"}',
                '{"type": "heartbeat", "junk": [1, 2, {"a": null}]}',
                '{"event": "PONG", "n": 1e999}',
                '"keepalive"',
                "  PING  ",
            ]
        )
        return Frame("zero_rows", data, 0)

    def wrong_types(rng: random.Random, k: int) -> Frame:
        item = _good(k)
        field = rng.choice(list(WRONG_TYPES))
        item[field] = rng.choice(WRONG_TYPES[field])
        return _one("wrong_types", _dumps(item))

    def unknown_fields(rng: random.Random, k: int) -> Frame:
        item = {f"x_{rng.randrange(10**6)}": rng.choice([1, "a", None, [], {}]) for _ in range(5)}
        item["x_k"] = k
        return _one("unknown_fields", _dumps(item))

    def missing_field(rng: random.Random, k: int) -> Frame:
        item = _good(k)
        field = rng.choice(FIELDS)
        if rng.random() < 0.5:
            del item[field]
        else:
            item[field] = None
        return _one("missing_field", _dumps(item))

    def non_finite(rng: random.Random, k: int) -> Frame:
        field = rng.choice(["score_week", "score_month", "timestamp"])
        text = _dumps({**_good(k), field: "@"}).replace('"@"', rng.choice(NON_FINITE))
        return _one("non_finite", text)

    def duplicate_keys(rng: random.Random, k: int) -> Frame:  # the last one counts, and is bad
        text = _dumps(_good(k))[:-1]
        tail = rng.choice(['"exchange_name": "mtgox"', '"id": null', '"score_week": NaN'])
        return _one("duplicate_keys", f"{text}, {tail}}}")

    def long_id(rng: random.Random, k: int) -> Frame:  # ids of 10 KB, as text or as a number
        if rng.random() < 0.5:
            return _one("long_id", _dumps({**_good(k), "id": f"{k}-" + "i" * 10_240}))
        return _one("long_id", _dumps(_good(k)).replace(f'"h-{k}"', "9" * 10_240))

    def control_id(rng: random.Random, k: int) -> Frame:
        field = rng.choice(["id", "id", "pair_symbol"])
        value = f"c{k}{rng.choice(CONTROL)}x"
        return _one("control_id", _dumps({**_good(k), field: value}))

    def bad_values(rng: random.Random, k: int) -> Frame:
        field, value = rng.choice(BAD_VALUES)
        return _one("bad_values", _dumps({**_good(k), field: value}))

    def claims_valid_id(rng: random.Random, k: int) -> Frame:
        # A valid signal's id on an invalid item: rejected, and never in its way.
        item = {**_good(k), "id": rng.randrange(1, valid_ids + 1), "exchange_name": "mtgox"}
        return _one("claims_valid_id", _dumps(item))

    return {
        "huge_200k": huge,
        "big_50k": big,
        "deep_10000": deep,
        "deep_item": deep_item,
        "non_utf8": non_utf8,
        "surrogate": surrogate,
        "empty": empty,
        "bom": bom,
        "truncated": truncated,
        "control_text": control_text,
        "scalar": scalar,
        "bad_envelope": bad_envelope,
        "garbage_array": garbage_array,
        "zero_rows": zero_rows,
        "wrong_types": wrong_types,
        "unknown_fields": unknown_fields,
        "missing_field": missing_field,
        "non_finite": non_finite,
        "duplicate_keys": duplicate_keys,
        "long_id": long_id,
        "control_id": control_id,
        "bad_values": bad_values,
        "claims_valid_id": claims_valid_id,
    }


SCHEDULE: dict[str, int] = {
    "huge_200k": 1,
    "big_50k": 2,
    "deep_10000": 8,
    "deep_item": 10,
    "non_utf8": 60,
    "surrogate": 20,
    "empty": 30,
    "bom": 10,
    "truncated": 80,
    "control_text": 30,
    "scalar": 60,
    "bad_envelope": 30,
    "garbage_array": 60,
    "zero_rows": 10,
    "wrong_types": 150,
    "unknown_fields": 60,
    "missing_field": 60,
    "non_finite": 60,
    "duplicate_keys": 40,
    "long_id": 20,
    "control_id": 40,
    "bad_values": 100,
    "claims_valid_id": 59,
}
"""Frames of each kind in every 1,000 (a seeded shuffle of this, repeated)."""


def hostile_frames(n: int, *, seed: int = SEED, valid_ids: int = VALID) -> Iterator[Frame]:
    """`n` hostile frames, the same for the same seed."""
    rng = random.Random(seed)
    makers = _makers(valid_ids)
    slots = [kind for kind, count in SCHEDULE.items() for _ in range(count)]
    rng.shuffle(slots)
    for k in range(n):
        yield makers[slots[k % len(slots)]](rng, k)


def test_the_schedule_is_a_thousand_frames() -> None:
    assert sum(SCHEDULE.values()) == 1_000
    assert set(SCHEDULE) == set(_makers(VALID))


def test_the_generator_knows_what_each_frame_yields() -> None:
    """The expected rows are the parser's answer: nothing valid, exact counts."""
    now = datetime.now(UTC)
    first = list(hostile_frames(2_000))
    assert [f.data for f in first[:50]] == [f.data for f in hostile_frames(50)]  # seeded
    assert {f.kind for f in first} == set(SCHEDULE)
    for frame in first:
        parsed = parse_message(frame.data, service="fuzz", received_at=now)
        assert not any(isinstance(p, Accepted) for p in parsed), frame
        assert len(parsed) == frame.rows, frame
        assert all(isinstance(p, Rejected) for p in parsed)


# --- over the socket -----------------------------------------------------------------------


async def _valid_messages(svc: SignalService, step: int) -> tuple[int, int]:
    """The `step`-th valid emission: (signals emitted, messages sent)."""
    copies = len(svc.duplicates)
    shape = step % 5
    if shape == 0:  # a bare signal object
        await svc.emit_wave(size=1, spread_s=1e-6)
        return 1, 1
    if shape == 1:  # a wave of one
        await svc.emit_wave(size=1)
        return 1, 1
    if shape == 2:  # a wave of four, some sent twice in the same message
        await svc.emit_wave(size=4, duplicate_rate=0.5)
        return 4, 1
    if shape == 3:  # three bare signals, each sent again in a later message
        await svc.emit_wave(size=3, spread_s=1e-6, duplicate_rate=1.0)
        return 3, 3 + len(svc.duplicates) - copies
    await svc.emit_wave(size=2, per_message=1)  # two waves of one
    return 2, 2


async def test_hostile_frames_never_crash_and_valid_signals_flow_once(store: Store) -> None:
    name = "fuzz"
    handed: list[Signal] = []

    async def sink(signals: list[Signal]) -> None:
        handed.extend(signals)

    started = time.perf_counter()
    async with SignalService(heartbeat_s=None, seed=SEED) as svc:
        client = SignalClient(
            service=name,
            url=svc.url,
            token=SecretStr(svc.token),
            store=store,
            sink=sink,
            idle_timeout=timedelta(minutes=5),  # no heartbeats: counts stay exact
        )
        stop = asyncio.Event()
        task = asyncio.create_task(client.run(stop))
        try:
            await until(lambda: client.connected and svc.connections == 1, "connected")
            frames = 0  # every frame sent, hostile or valid
            expected_rejected = 0
            kinds: dict[str, int] = {}
            valid = 0
            step = 0
            resent = 0
            every = HOSTILE * 11 // (VALID * 5)  # an emission: 2.2 signals on average
            for k, frame in enumerate(hostile_frames(HOSTILE)):
                svc.send_raw(frame.data)
                frames += 1
                expected_rejected += frame.rows
                kinds[frame.kind] = kinds.get(frame.kind, 0) + 1
                if k % every == every - 1 and valid < VALID:
                    emitted, messages = await _valid_messages(svc, step)
                    valid, frames, step = valid + emitted, frames + messages, step + 1
                if k % 10_000 == 5_000 and svc.history:  # an old valid signal, sent again
                    svc.send_raw(json.dumps(svc.history[k % len(svc.history)]))
                    frames, resent = frames + 1, resent + 1
                if frames - client.messages > BACKLOG:
                    behind = frames - BACKLOG // 2
                    await until(lambda at=behind: client.messages > at, "the backlog read")
                elif k % 500 == 0:
                    await asyncio.sleep(0)  # let the writer and the client run
            while valid < VALID:
                emitted, messages = await _valid_messages(svc, step)
                valid, frames, step = valid + emitted, frames + messages, step + 1

            await until(lambda: client.messages == frames, f"all {frames} frames read")
            await until(
                lambda: len(handed) >= len(svc.sent) and client.rejected >= expected_rejected,
                "the last batch stored and handed on",
            )
            assert not task.done(), "the client stopped"
            assert client.connected and client.reconnects == 0
        finally:
            stop.set()
            await asyncio.wait_for(task, 60)
    elapsed = time.perf_counter() - started

    assert len(svc.sent) >= VALID
    assert set(kinds) == set(SCHEDULE) and sum(kinds.values()) == HOSTILE
    # Every hostile frame: its rows, each rejected with a reason, and its event.
    assert client.rejected == expected_rejected
    counts = await store.pool.fetchrow(
        """SELECT count(*) FILTER (WHERE status = 'rejected') AS rejected,
                  count(*) FILTER (WHERE status = 'rejected' AND reason IS NULL) AS no_reason,
                  count(*) FILTER (WHERE status <> 'rejected') AS valid
           FROM signals WHERE service = $1""",
        name,
    )
    assert counts["rejected"] == expected_rejected
    assert counts["no_reason"] == 0
    events = await store.pool.fetch(
        """SELECT type, count(*) AS n FROM events
           WHERE correlation_id LIKE 'signal/' || $1 || '/%' GROUP BY type""",
        name,
    )
    by_type = {row["type"]: row["n"] for row in events}
    assert by_type.get("signal_rejected") == expected_rejected
    # Every valid signal: stored once, handed on once, in the order it was emitted.
    valid_ids = await store.pool.fetch(
        "SELECT signal_id FROM signals WHERE service = $1 AND status <> 'rejected'", name
    )
    assert counts["valid"] == len(svc.sent)
    assert sorted(r["signal_id"] for r in valid_ids) == sorted(svc.sent)
    assert [s.signal_id for s in handed] == svc.sent
    assert by_type.get("signal_validated") == len(svc.sent)
    assert by_type.get("signal_received") == len(svc.sent)
    assert client.duplicates == len(svc.duplicates) + resent
    assert svc.duplicates and resent  # both kinds of copies were exercised
    disconnects = await store.events(event_type="websocket_disconnected", limit=100)
    assert not [e for e in disconnects if f"signal-service/{name}/" in e.event_id]
    print(
        f"\nfuzz: {HOSTILE:,} hostile frames ({expected_rejected:,} rejected rows), "
        f"{len(svc.sent):,} valid signals, {frames:,} frames in {elapsed:.1f} s"
    )
