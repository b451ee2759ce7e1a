"""The signal service's wire format: every message parsed, nothing raises, nothing lost."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from domain.signal_wire import (
    MAX_RAW_CHARS,
    Accepted,
    FieldMapping,
    ParsedSignal,
    Rejected,
    is_heartbeat,
    parse_message,
)
from domain.signals import SignalAction
from domain.types import ExchangeId

SERVICE = "fas"
NOW = datetime(2024, 5, 1, 12, 0, 7, tzinfo=UTC)
AT = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def wire(**changes: Any) -> dict[str, Any]:
    """One valid signal as the audit's service sends it; `changes` (None: remove)."""
    item: dict[str, Any] = {
        "id": 101,
        "pair_symbol": "BTCUSDT",
        "exchange_name": "Binance",
        "score_week": 72.5,
        "score_month": 61,
        "recommended_action": "BUY",
        "timestamp": "2024-05-01T12:00:00Z",
    }
    for key, value in changes.items():
        if value is None:
            item.pop(key, None)
        else:
            item[key] = value
    return item


def parse(raw: bytes | str | object, **kwargs: Any) -> list[ParsedSignal]:
    if not isinstance(raw, bytes | str):
        raw = json.dumps(raw)
    return parse_message(raw, service=SERVICE, received_at=NOW, **kwargs)


def only(raw: bytes | str | object, **kwargs: Any) -> ParsedSignal:
    results = parse(raw, **kwargs)
    assert len(results) == 1
    return results[0]


def accepted(raw: bytes | str | object, **kwargs: Any) -> Accepted:
    result = only(raw, **kwargs)
    assert isinstance(result, Accepted), result
    return result


def reason(raw: bytes | str | object, **kwargs: Any) -> str:
    result = only(raw, **kwargs)
    assert isinstance(result, Rejected), result
    return result.reason


def check_rejected(result: Rejected) -> None:
    assert result.service == SERVICE
    assert len(result.raw) <= MAX_RAW_CHARS
    assert "\x00" not in result.raw
    result.raw.encode("utf-8")  # valid UTF-8: no lone surrogate
    assert 0 < len(result.reason) <= 120


# --- accepted forms -------------------------------------------------------------------


def test_plain_object_is_one_signal() -> None:
    result = accepted(wire())
    signal = result.signal
    assert signal.service == SERVICE
    assert signal.signal_id == "101"
    assert signal.exchange is ExchangeId.BINANCE_USDM
    assert signal.symbol == "BTCUSDT"
    assert signal.action is SignalAction.BUY
    assert signal.score_week == Decimal("72.5")
    assert signal.score_month == Decimal("61")
    assert signal.at == AT
    assert signal.received_at == NOW
    assert json.loads(result.raw)["id"] == 101


def test_bytes_and_str_alike() -> None:
    text = json.dumps(wire())
    assert parse(text) == parse(text.encode())


def test_numbers_are_exact_decimals() -> None:
    signal = accepted(
        '{"id": "a", "pair_symbol": "ETHUSDT", "exchange_name": "bybit", '
        '"score_week": 0.1, "score_month": 1e-3, "recommended_action": "sell", '
        '"timestamp": 1714564800}'
    ).signal
    assert signal.score_week == Decimal("0.1")
    assert str(signal.score_month) == "0.001"


@pytest.mark.parametrize(
    ("score", "expected"),
    [
        ("12.5", Decimal("12.5")),
        (" -3 ", Decimal("-3")),
        ("1e2", Decimal("100")),
        (-0.0, Decimal(0)),
        ("-0", Decimal(0)),
        (0, Decimal(0)),
        (999_999_999, Decimal("999999999")),
    ],
)
def test_score_forms(score: object, expected: Decimal) -> None:
    signal = accepted(wire(score_week=score)).signal
    assert signal.score_week == expected
    assert not signal.score_week.is_signed() or expected < 0


@pytest.mark.parametrize(
    ("timestamp", "expected"),
    [
        ("2024-05-01T12:00:00Z", AT),
        ("2024-05-01T12:00:00+00:00", AT),
        ("2024-05-01T14:00:00+02:00", AT),
        ("2024-05-01 12:00:00", AT),  # naive: UTC
        ("2024-05-01T12:00:00.250Z", AT + timedelta(milliseconds=250)),
        (1714564800, AT),  # seconds
        (1714564800.5, AT + timedelta(milliseconds=500)),
        (1714564800000, AT),  # milliseconds
        (1714564800250, AT + timedelta(milliseconds=250)),
        ("1714564800", AT),
    ],
)
def test_timestamp_forms(timestamp: object, expected: datetime) -> None:
    at = accepted(wire(timestamp=timestamp)).signal.at
    assert at == expected
    assert at.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    ("given", "exchange"),
    [
        ("binance", ExchangeId.BINANCE_USDM),
        ("Binance", ExchangeId.BINANCE_USDM),
        ("binanceusdm", ExchangeId.BINANCE_USDM),
        ("BYBIT", ExchangeId.BYBIT),
        (" bybit ", ExchangeId.BYBIT),
    ],
)
def test_exchange_names(given: str, exchange: ExchangeId) -> None:
    assert accepted(wire(exchange_name=given)).signal.exchange is exchange


@pytest.mark.parametrize(
    ("word", "action"),
    [
        ("BUY", SignalAction.BUY),
        ("buy", SignalAction.BUY),
        ("Long", SignalAction.BUY),
        ("SELL", SignalAction.SELL),
        ("short", SignalAction.SELL),
        ("HOLD", SignalAction.HOLD),
        ("close", SignalAction.CLOSE),
    ],
)
def test_action_words(word: str, action: SignalAction) -> None:
    assert accepted(wire(recommended_action=word)).signal.action is action


@pytest.mark.parametrize(
    ("symbol", "canon"),
    [("btcusdt", "BTCUSDT"), ("BTC/USDT:USDT", "BTCUSDT"), ("ETH/USDC", "ETHUSDC")],
)
def test_symbol_is_canonical(symbol: str, canon: str) -> None:
    assert accepted(wire(pair_symbol=symbol)).signal.symbol == canon


def test_string_id_kept_and_unknown_fields_ignored() -> None:
    signal = accepted(wire(id="sig-7", extra={"nested": [1, 2]}, strategy="x")).signal
    assert signal.signal_id == "sig-7"


def test_list_is_a_wave_in_order() -> None:
    items = [wire(id=i, pair_symbol=s) for i, s in enumerate(["BTCUSDT", "ETHUSDT", "SOLUSDT"])]
    results = parse(items)
    assert [r.signal.symbol for r in results if isinstance(r, Accepted)] == [
        "BTCUSDT",
        "ETHUSDT",
        "SOLUSDT",
    ]


@pytest.mark.parametrize("kind", ["wave", "signal", None])
def test_envelope(kind: str | None) -> None:
    envelope: dict[str, Any] = {"signals": [wire(id=1), wire(id=2)], "wave": "x"}
    if kind is not None:
        envelope["type"] = kind
    results = parse(envelope)
    assert [r.signal.signal_id for r in results if isinstance(r, Accepted)] == ["1", "2"]


def test_empty_wave_yields_nothing() -> None:
    assert parse([]) == []
    assert parse({"type": "wave", "signals": []}) == []


def test_wave_with_one_bad_item_keeps_the_good_and_the_order() -> None:
    items = [wire(id=1), wire(id=2, score_week=float("nan")), wire(id=3), "junk"]
    results = parse({"type": "wave", "signals": items})
    assert [type(r).__name__ for r in results] == ["Accepted", "Rejected", "Accepted", "Rejected"]
    bad = results[1]
    assert isinstance(bad, Rejected)
    assert bad.signal_id == "2"
    assert bad.reason == "not a finite number: score_week"
    assert json.loads(bad.raw)["id"] == 2
    assert '"score_week": NaN' in bad.raw  # as sent
    assert isinstance(results[3], Rejected)
    assert results[3].reason == "not a signal object: string"


# --- heartbeats -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        "ping",
        " PONG\n",
        b"heartbeat",
        '{"type": "heartbeat"}',
        '{"type": "ping", "ts": 1}',
        '{"event": "pong"}',
        '"ping"',
    ],
)
def test_heartbeat(raw: bytes | str) -> None:
    assert is_heartbeat(raw)
    assert parse(raw) == []


@pytest.mark.parametrize(
    "raw",
    [
        json.dumps(wire()),
        '{"type": "wave", "signals": []}',
        "[]",
        "",
        b"\xff",
        "pingpong",
        "x" * 5000,
        "[" * 5000,
    ],
)
def test_not_heartbeat(raw: bytes | str) -> None:
    assert not is_heartbeat(raw)


# --- rejections -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b"\xff\xfe{}", "not UTF-8"),
        ('{"id": 1,', "invalid JSON"),
        ("", "empty message"),
        ("  \n", "empty message"),
        ("{'id': 1}", "invalid JSON"),
        ("[" * 10_000 + "]" * 10_000, "too deeply nested"),
        ('{"a":' * 10_000 + "1" + "}" * 10_000, "too deeply nested"),
        ("x" * 64_001, "too large"),
        (b"x" * 64_001, "too large"),
        ("42", "not a signal object: number"),
        ("null", "not a signal object: null"),
        ('"hello"', "not a signal object: string"),
        ('{"signals": {"id": 1}}', "signals is not a list"),
        ("\ud800", "not UTF-8"),
    ],
)
def test_unreadable_message_is_one_rejection(raw: bytes | str, why: str) -> None:
    result = only(raw)
    assert isinstance(result, Rejected)
    assert result.reason == why
    assert result.signal_id is None
    check_rejected(result)


def test_a_wave_item_raw_is_its_json_as_written() -> None:
    # An item of a wave is written back (the message holds more than it): every JSON
    # type, numbers exactly as sent, non-ASCII kept, ", " and ": " separators.
    item = (
        '{"id":7,"t":true,"f":false,"n":null,"d":2.50,"e":1E+3,"big":' + "9" * 30 + ","
        '"s":"é\\"\\u0001","l":[1,[],{}],"o":{"k":-Infinity},"x":NaN}'
    )
    result = only("[" + item + "]")
    assert isinstance(result, Rejected)
    assert result.raw == (
        '{"id": 7, "t": true, "f": false, "n": null, "d": 2.50, "e": 1E+3, "big": '
        + "9" * 30
        + ', "s": "é\\"\\u0001", "l": [1, [], {}], "o": {"k": -Infinity}, "x": NaN}'
    )


@pytest.mark.parametrize(
    ("chars", "why"), [(31_999, "not a signal object: string"), (32_000, "too large")]
)
def test_the_size_limit_counts_utf8_bytes(chars: int, why: str) -> None:
    text = '"' + "é" * chars + '"'  # 2 bytes a character: 64,000 bytes, then 64,002
    assert reason(text) == why
    assert reason(text.encode()) == why


def test_an_invalid_symbol_is_rejected_every_time() -> None:
    for _ in range(3):  # symbols are memoised: a refusal never is
        assert reason(wire(pair_symbol="BTCEUR")) == "invalid symbol 'BTCEUR'"
        assert accepted(wire(pair_symbol="btcusdt")).signal.symbol == "BTCUSDT"


def test_deep_item_in_a_wave_is_rejected_alone() -> None:
    deep: object = 1
    for _ in range(40):
        deep = [deep]
    results = parse([wire(id=1), deep, wire(id=2, extra=deep), wire(id=3)])
    assert [r.reason if isinstance(r, Rejected) else "ok" for r in results] == [
        "ok",
        "too deeply nested",
        "too deeply nested",
        "ok",
    ]


def test_brackets_inside_strings_are_not_nesting() -> None:
    deep_text = "[{" * 100 + '\\"'
    assert accepted(wire(id="x", note=deep_text)).signal.signal_id == "x"


def test_max_bytes_is_configurable() -> None:
    assert reason(wire(), max_bytes=50) == "too large"


@pytest.mark.parametrize(
    ("changes", "why"),
    [
        ({"id": None}, "missing field id"),
        ({"pair_symbol": None}, "missing field symbol"),
        ({"exchange_name": None}, "missing field exchange"),
        ({"recommended_action": None}, "missing field action"),
        ({"score_week": None}, "missing field score_week"),
        ({"score_month": None}, "missing field score_month"),
        ({"timestamp": None}, "missing field timestamp"),
        ({"id": ""}, "empty id"),
        ({"id": "   "}, "empty id"),
        ({"id": "x" * 201}, "id too long"),
        ({"id": 1.5}, "id is not a string or an integer"),
        ({"id": True}, "id is not a string or an integer"),
        ({"id": "a\x00b"}, "id has control characters"),
        ({"exchange_name": "kraken"}, "unknown exchange 'kraken'"),
        ({"exchange_name": 7}, "exchange is not a string"),
        ({"recommended_action": "FOO"}, "unknown action 'FOO'"),
        ({"recommended_action": "X" * 500}, "unknown action '" + "X" * 40 + "…'"),
        ({"recommended_action": ["BUY"]}, "action is not a string"),
        ({"pair_symbol": "BTCEUR"}, "invalid symbol 'BTCEUR'"),
        ({"pair_symbol": "BTC/USD:BTC"}, "invalid symbol 'BTC/USD:BTC'"),
        ({"pair_symbol": "ﬃUSDT"}, "invalid symbol 'ﬃUSDT'"),
        ({"pair_symbol": 42}, "symbol is not a string"),
        ({"score_week": "abc"}, "not a number: score_week"),
        ({"score_week": "1_000"}, "not a number: score_week"),
        ({"score_week": "NaN"}, "not a number: score_week"),
        ({"score_month": True}, "not a number: score_month"),
        ({"score_month": [1]}, "not a number: score_month"),
        ({"score_month": {"v": 1}}, "not a number: score_month"),
        ({"score_week": 1e10}, "score out of range: score_week"),
        ({"score_week": -1e10}, "score out of range: score_week"),
        ({"score_week": 5e-324}, "score out of range: score_week"),
        ({"timestamp": "yesterday"}, "invalid timestamp"),
        ({"timestamp": "2024-13-01T00:00:00Z"}, "invalid timestamp"),
        ({"timestamp": True}, "invalid timestamp"),
        ({"timestamp": 0}, "timestamp out of range"),
        ({"timestamp": -1714564800}, "timestamp out of range"),
        ({"timestamp": 1e15}, "timestamp out of range"),
    ],
)
def test_item_rejection(changes: dict[str, Any], why: str) -> None:
    # None in `changes` removes the field; a JSON null is tested separately.
    result = only(wire(**changes))
    assert isinstance(result, Rejected)
    assert result.reason == why
    check_rejected(result)


def test_null_is_missing() -> None:
    item = wire()
    item["score_month"] = None
    assert reason(item) == "missing field score_month"


def test_rejection_keeps_the_id_it_could_read() -> None:
    result = only(wire(id=77, recommended_action="WAIT"))
    assert isinstance(result, Rejected)
    assert result.signal_id == "77"
    result = only(wire(id=[1]))
    assert isinstance(result, Rejected)
    assert result.signal_id is None


@pytest.mark.parametrize(
    ("literal", "why"),
    [
        ("NaN", "not a finite number: score_week"),
        ("Infinity", "not a finite number: score_week"),
        ("-Infinity", "not a finite number: score_week"),
        ("1e999999999", "score out of range: score_week"),
        ("-1e999999999", "score out of range: score_week"),
        ("1" * 5000, "score out of range: score_week"),
    ],
)
def test_non_finite_and_absurd_literals(literal: str, why: str) -> None:
    text = json.dumps(wire(score_week=0)).replace('"score_week": 0', f'"score_week": {literal}')
    assert reason(text) == why


def test_huge_integer_id_is_too_long_not_a_crash() -> None:
    text = json.dumps(wire()).replace('"id": 101', '"id": ' + "9" * 10_000)
    assert reason(text) == "id too long"


def test_huge_string_in_item_is_truncated_in_raw() -> None:
    result = only(wire(recommended_action="Z" * 60_000))
    assert isinstance(result, Rejected)
    assert result.reason.startswith("unknown action 'ZZZ")
    check_rejected(result)


def test_caller_mistakes_raise() -> None:
    with pytest.raises(ValueError, match="aware"):
        parse_message("{}", service=SERVICE, received_at=datetime(2024, 1, 1))
    with pytest.raises(ValueError, match="service"):
        parse_message("{}", service="", received_at=NOW)


def test_received_at_in_another_zone_is_kept() -> None:
    there = NOW.astimezone(timezone(timedelta(hours=3)))
    result = parse_message(json.dumps(wire()), service=SERVICE, received_at=there)[0]
    assert isinstance(result, Accepted)
    assert result.signal.received_at == NOW


# --- another service's names ----------------------------------------------------------


OTHER = FieldMapping(
    id="signalId",
    symbol="market",
    exchange="venue",
    score_week="w",
    score_month="m",
    action="side",
    timestamp="ts",
    exchange_names={"BINANCE-FUT": ExchangeId.BINANCE_USDM, "ByBit": ExchangeId.BYBIT},
    actions={"up": SignalAction.BUY, "Down": SignalAction.SELL},
)


def test_configured_mapping() -> None:
    item = {
        "signalId": "o-1",
        "market": "SOL/USDT:USDT",
        "venue": "binance-fut",
        "w": "80",
        "m": 75,
        "side": "UP",
        "ts": 1714564800000,
    }
    signal = accepted(item, mapping=OTHER).signal
    assert (signal.signal_id, signal.symbol, signal.exchange, signal.action) == (
        "o-1",
        "SOLUSDT",
        ExchangeId.BINANCE_USDM,
        SignalAction.BUY,
    )
    assert accepted({**item, "venue": "BYBIT", "side": "down"}, mapping=OTHER).signal.side
    # The default names mean nothing to this service, and its words are its own.
    assert reason(wire(), mapping=OTHER) == "missing field id"
    assert reason({**item, "venue": "binance"}, mapping=OTHER) == "unknown exchange 'binance'"
    assert reason({**item, "side": "BUY"}, mapping=OTHER) == "unknown action 'BUY'"


def test_mapping_is_frozen_and_validated() -> None:
    with pytest.raises(ValueError):
        FieldMapping(id="")
    with pytest.raises(ValueError):
        FieldMapping(actions={"x": "JUMP"})
    mapping = FieldMapping()
    with pytest.raises(ValueError):
        mapping.id = "x"  # type: ignore[misc]


# --- fuzz -----------------------------------------------------------------------------

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=50)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(
            st.sampled_from([*wire(), "signals", "type", "x"]) | st.text(max_size=10),
            children,
            max_size=6,
        )
    ),
    max_leaves=30,
)
field_values = st.one_of(
    json_scalars,
    st.sampled_from(["BUY", "sell", "bybit", "Binance", "BTCUSDT", "2024-05-01T12:00:00Z"]),
    st.decimals(allow_nan=False, allow_infinity=False).map(str),
    st.integers(min_value=10**9, max_value=10**14),
)
signal_like = st.dictionaries(st.sampled_from(list(wire())), field_values, max_size=8)

valid_signals = st.builds(
    lambda sid, sym, ex, act, w, m, ts: wire(
        id=sid,
        pair_symbol=sym,
        exchange_name=ex,
        recommended_action=act,
        score_week=w,
        score_month=m,
        timestamp=ts,
    ),
    st.one_of(
        st.integers(min_value=0),
        st.text(min_size=1, max_size=30).filter(lambda s: s.strip() and s.isprintable()),
    ),
    st.sampled_from(["BTCUSDT", "ethusdt", "SOL/USDT:USDT", "1000PEPEUSDT", "ETHUSDC"]),
    st.sampled_from(["binance", "Binance", "binanceusdm", "bybit"]),
    st.sampled_from(["BUY", "SELL", "long", "Short", "HOLD"]),
    st.decimals(min_value=-1000, max_value=1000, places=4).map(str),
    st.integers(min_value=-1000, max_value=1000),
    st.integers(min_value=10**9, max_value=4 * 10**12),
)


def expected_count(value: object) -> int:
    if isinstance(value, list):
        return len(value)
    if isinstance(value, dict) and isinstance(value.get("signals"), list):
        return len(value["signals"])
    return 1


def check_all(results: list[ParsedSignal]) -> None:
    for result in results:
        assert isinstance(result, Accepted | Rejected)
        if isinstance(result, Rejected):
            check_rejected(result)


@FUZZ
@given(st.binary(max_size=3000))
def test_fuzz_bytes_never_raise(raw: bytes) -> None:
    check_all(parse(raw))
    is_heartbeat(raw)


@FUZZ
@given(st.text(max_size=500))
def test_fuzz_text_never_raises(raw: str) -> None:
    check_all(parse(raw))
    is_heartbeat(raw)


@FUZZ
@given(json_values | signal_like | st.lists(signal_like, max_size=5))
def test_fuzz_json_each_item_one_result(value: object) -> None:
    raw = json.dumps(value)  # floats NaN/Infinity become JSON's NaN/Infinity literals
    results = parse(raw)
    check_all(results)
    if is_heartbeat(raw):
        assert results == []
    elif not (
        len(results) == 1
        and isinstance(results[0], Rejected)
        and results[0].reason in {"too large", "too deeply nested"}
    ):
        assert len(results) == expected_count(value)


@FUZZ
@given(
    st.lists(st.tuples(st.booleans(), valid_signals, json_values | signal_like), max_size=12),
    st.booleans(),
)
def test_fuzz_valid_signals_among_garbage_all_accepted(
    picks: list[tuple[bool, dict[str, Any], object]], envelope: bool
) -> None:
    items = [good if is_good else junk for is_good, good, junk in picks]
    raw = json.dumps({"type": "wave", "signals": items} if envelope else items)
    results = parse(raw)
    assert len(results) == len(items)
    check_all(results)
    for (is_good, good, _), result in zip(picks, results, strict=True):
        if is_good:
            assert isinstance(result, Accepted), result
            assert result.signal.signal_id == str(good["id"])


@FUZZ
@given(st.integers(min_value=1, max_value=30_000), st.sampled_from(["[", '{"a":', '[{"b":']))
def test_fuzz_deep_nesting(depth: int, opener: str) -> None:
    closer = {"[": "]", '{"a":': "}", '[{"b":': "}]"}[opener]
    raw = opener * depth + "1" + closer * depth
    results = parse(raw)
    assert len(results) == 1
    check_all(results)


@FUZZ
@given(
    st.text(min_size=1, max_size=3).map(lambda s: s * 30_000),
    st.sampled_from(["id", "pair_symbol", "recommended_action", "exchange_name", "score_week"]),
)
def test_fuzz_huge_strings(huge: str, field: str) -> None:
    results = parse(json.dumps(wire(**{field: huge[:60_000]})))
    assert len(results) == 1
    check_all(results)


@FUZZ
@given(
    st.sampled_from(["score_week", "score_month", "timestamp", "id"]),
    st.sampled_from(["NaN", "Infinity", "-Infinity", "-0", "-0.0", "1e400", "-1e-400"]),
)
def test_fuzz_special_numbers(field: str, literal: str) -> None:
    text = json.dumps(wire(**{field: "@"})).replace('"@"', literal)
    results = parse(text)
    assert len(results) == 1
    check_all(results)
    if literal in {"NaN", "Infinity", "-Infinity"}:
        assert isinstance(results[0], Rejected)
