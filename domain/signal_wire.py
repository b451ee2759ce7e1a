"""The signal service's wire format: messages in, validated signals or rejections out.

Pure: no I/O, no clock (`received_at` is passed in), no randomness. The service is
not ours, so nothing it sends is trusted: `parse_message` never raises on any
message (non-UTF-8 bytes, invalid or deeply nested JSON, huge strings, wrong types,
NaN/Infinity), and every signal in a message becomes exactly one `Accepted` or one
`Rejected`, in the message's order, so each can be stored with its decision.

Message forms (all JSON, UTF-8):

- one signal object: ``{"id": 1, "pair_symbol": "BTCUSDT", ...}``;
- a list of them (a wave sent together): ``[{...}, {...}]``;
- an envelope: ``{"type": "wave" | "signal", "signals": [{...}, ...]}`` (any object
  with a ``signals`` key; its other keys are ignored);
- a heartbeat: the text ``ping``/``pong``/``heartbeat``/``keepalive``, or an object
  without ``signals`` whose ``type`` (or ``event``) is one of those words: it yields
  no signal (`is_heartbeat` tells it apart from an empty wave).

The field names are the service's, configured by a `FieldMapping` (defaults: the
audit's ``fas.signals`` table). Numbers are read exactly as Decimal, never as float.
Rejection reasons name our field (not the service's), are short and stable, so
rejections can be grouped in the store; a value quoted in a reason is truncated.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from json.encoder import encode_basestring as _encode_string
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from domain.signals import Signal, SignalAction
from domain.symbols import canonical
from domain.types import ExchangeId

MAX_RAW_CHARS: Final = 2_000
"""A rejection keeps at most this much of the offending text."""

MAX_DEPTH: Final = 32
"""A message item nested deeper than this is rejected (the decoder itself stops near
Python's recursion limit, ~1,000: that whole message is rejected)."""

MAX_ID_CHARS: Final = 200
MAX_SYMBOL_CHARS: Final = 40
MAX_SCORE: Final = Decimal("1e9")
"""A score beyond ±MAX_SCORE, or finer than 1e-30, is absurd and rejected."""
MIN_SCORE_EXPONENT: Final = -30
MAX_SCORE_DIGITS: Final = 40
MS_THRESHOLD: Final = Decimal("1e11")
"""An epoch timestamp above this is in milliseconds (1e11 s is the year 5138)."""
MIN_EPOCH_S: Final = Decimal("1e9")
"""An epoch timestamp below this (2001-09-09) is a mistake, not a signal's time."""
MAX_EPOCH_MS: Final = Decimal("1e14")

HEARTBEAT_WORDS: Final = frozenset({"ping", "pong", "heartbeat", "keepalive"})
_LONGEST_WORD: Final = max(len(word) for word in HEARTBEAT_WORDS)
_HEARTBEAT_MAX_BYTES: Final = 1_024
_QUOTE_CHARS: Final = 40

_NUMBER = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?", re.ASCII)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

DEFAULT_EXCHANGE_NAMES: Final[dict[str, ExchangeId]] = {
    "binance": ExchangeId.BINANCE_USDM,
    "binanceusdm": ExchangeId.BINANCE_USDM,
    "binance_usdm": ExchangeId.BINANCE_USDM,
    "binance-usdm": ExchangeId.BINANCE_USDM,
    "binancefutures": ExchangeId.BINANCE_USDM,
    "binance_futures": ExchangeId.BINANCE_USDM,
    "bybit": ExchangeId.BYBIT,
}
DEFAULT_ACTIONS: Final[dict[str, SignalAction]] = {
    "BUY": SignalAction.BUY,
    "LONG": SignalAction.BUY,
    "SELL": SignalAction.SELL,
    "SHORT": SignalAction.SELL,
    "HOLD": SignalAction.HOLD,
    "NEUTRAL": SignalAction.HOLD,
    "CLOSE": SignalAction.CLOSE,
    "EXIT": SignalAction.CLOSE,
}


class FieldMapping(BaseModel):
    """How one signal service names things; settings hold one per service.

    Each of `id` … `timestamp` is the service's key for our field of that name.
    `exchange_names` maps the service's exchange names to ours and `actions` its
    action words to ours; both are matched case-insensitively (keys are stored
    lower-cased for exchanges, upper-cased for actions). A name or word missing
    from them is rejected ("unknown exchange 'x'"), never guessed.
    """

    model_config = ConfigDict(frozen=True)

    id: str = Field(default="id", min_length=1)
    symbol: str = Field(default="pair_symbol", min_length=1)
    exchange: str = Field(default="exchange_name", min_length=1)
    score_week: str = Field(default="score_week", min_length=1)
    score_month: str = Field(default="score_month", min_length=1)
    action: str = Field(default="recommended_action", min_length=1)
    timestamp: str = Field(default="timestamp", min_length=1)
    exchange_names: dict[str, ExchangeId] = Field(
        default_factory=lambda: dict(DEFAULT_EXCHANGE_NAMES)
    )
    actions: dict[str, SignalAction] = Field(default_factory=lambda: dict(DEFAULT_ACTIONS))

    @field_validator("exchange_names")
    @classmethod
    def _lower_exchange_names(cls, names: dict[str, ExchangeId]) -> dict[str, ExchangeId]:
        return {name.strip().lower(): exchange for name, exchange in names.items()}

    @field_validator("actions")
    @classmethod
    def _upper_actions(cls, actions: dict[str, SignalAction]) -> dict[str, SignalAction]:
        return {word.strip().upper(): action for word, action in actions.items()}


class Accepted(BaseModel):
    """A signal that passed validation; `raw` is its JSON text (truncated)."""

    model_config = ConfigDict(frozen=True)

    signal: Signal
    raw: str = ""


class Rejected(BaseModel):
    """A message, or one item of it, that is not a valid signal, and why.

    `signal_id` is the item's id when it had a usable one. `raw` is the offending
    text, at most MAX_RAW_CHARS, valid UTF-8 without NUL (storable as text).
    """

    model_config = ConfigDict(frozen=True)

    service: str
    signal_id: str | None
    reason: str
    raw: str = Field(max_length=MAX_RAW_CHARS)


ParsedSignal = Accepted | Rejected


class _Invalid(ValueError):
    """One item's rejection reason (internal)."""


class _NonFinite:
    """JSON's NaN / Infinity / -Infinity, kept apart from numbers (internal)."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __str__(self) -> str:
        return self.name


class _JsonInt(Decimal):
    """A JSON integer literal, read exactly (no int digit limit) (internal)."""


def parse_message(
    raw: bytes | str,
    *,
    service: str,
    received_at: datetime,
    mapping: FieldMapping = FieldMapping(),  # noqa: B008 (immutable)
    max_bytes: int = 64_000,
) -> list[ParsedSignal]:
    """Every signal in one message, each Accepted or Rejected, in the message's order.

    A heartbeat and an empty wave yield []; a message that cannot be read at all
    (too large, not UTF-8, invalid or too deeply nested JSON, not an object or a
    list) yields one Rejected. Never raises on any `raw`; raises ValueError only
    for a caller's mistake (an empty `service`, a naive `received_at`).
    """
    if not 1 <= len(service) <= 100:
        raise ValueError("service must be 1 to 100 characters")
    if received_at.tzinfo is None or received_at.utcoffset() is None:
        raise ValueError("received_at must be timezone-aware")
    try:
        return _parse(raw, service, received_at, mapping, max_bytes)
    except Exception as exc:  # a bug here must not lose the message: reject it
        return [_rejected(service, None, f"internal error: {type(exc).__name__}", raw)]


def is_heartbeat(raw: bytes | str) -> bool:
    """True for a heartbeat/ping message (see the module's docstring); never raises."""
    try:
        size = len(raw) if isinstance(raw, bytes) else len(raw.encode("utf-8", "replace"))
        if size > _HEARTBEAT_MAX_BYTES:
            return False
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        if text.strip().lower() in HEARTBEAT_WORDS:
            return True
        return _is_heartbeat_value(_loads(text))
    except Exception:
        return False


def _parse(
    raw: bytes | str,
    service: str,
    received_at: datetime,
    mapping: FieldMapping,
    max_bytes: int,
) -> list[ParsedSignal]:
    if isinstance(raw, bytes):
        if len(raw) > max_bytes:
            return [_rejected(service, None, "too large", raw)]
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            return [_rejected(service, None, "not UTF-8", raw)]
    else:
        if len(raw) > max_bytes:
            return [_rejected(service, None, "too large", raw)]
        if raw.isascii():  # O(1) in CPython: one byte a character, no surrogate
            size, surrogate = len(raw), False
        else:  # one encoding tells both the size and whether it is valid UTF-8
            try:
                size, surrogate = len(raw.encode("utf-8")), False
            except UnicodeEncodeError:
                size, surrogate = len(raw.encode("utf-8", "replace")), True
        if size > max_bytes:
            return [_rejected(service, None, "too large", raw)]
        if surrogate:
            return [_rejected(service, None, "not UTF-8", raw)]
        text = raw
    stripped = text.strip()
    if not stripped:
        return [_rejected(service, None, "empty message", text)]
    if len(stripped) <= _LONGEST_WORD and stripped.lower() in HEARTBEAT_WORDS:
        return []  # (a wave's text is never lower-cased: that would copy it whole)
    try:
        value = _loads(text)
    except RecursionError:
        return [_rejected(service, None, "too deeply nested", text)]
    except ValueError:  # JSONDecodeError, and any odd literal
        return [_rejected(service, None, "invalid JSON", text)]

    if _is_heartbeat_value(value):
        return []
    if isinstance(value, list):
        return [_parse_item(item, None, service, received_at, mapping) for item in value]
    if isinstance(value, dict):
        if "signals" in value:
            items = value["signals"]
            if not isinstance(items, list):
                return [_rejected(service, None, "signals is not a list", text)]
            return [_parse_item(item, None, service, received_at, mapping) for item in items]
        return [_parse_item(value, text, service, received_at, mapping)]
    return [_rejected(service, None, f"not a signal object: {_type_name(value)}", text)]


def _parse_item(
    item: object,
    text: str | None,
    service: str,
    received_at: datetime,
    mapping: FieldMapping,
) -> ParsedSignal:
    """One item of a message; `text` is its JSON text when the message was just it.

    The item's `raw` is `text` when given (the message as received), else the item
    re-serialised by `_dump`.
    """
    if isinstance(item, dict | list) and _too_deep(item):
        return _rejected(service, None, "too deeply nested", text or f"<{_type_name(item)}>")
    raw = text if text is not None else _dump(item)
    if not isinstance(item, dict):
        return _rejected(service, None, f"not a signal object: {_type_name(item)}", raw)
    signal_id: str | None = None
    get = item.get  # a missing field and a JSON null are the same: "missing"
    try:
        signal_id = _signal_id(_present(get(mapping.id), "id"))
        exchange = _exchange(_present(get(mapping.exchange), "exchange"), mapping)
        symbol = _symbol(_present(get(mapping.symbol), "symbol"))
        action = _action(_present(get(mapping.action), "action"), mapping)
        score_week = _score(_present(get(mapping.score_week), "score_week"), "score_week")
        score_month = _score(_present(get(mapping.score_month), "score_month"), "score_month")
        at = _timestamp(_present(get(mapping.timestamp), "timestamp"))
    except _Invalid as exc:
        return _rejected(service, signal_id, str(exc), raw)
    try:
        signal = Signal(
            service=service,
            signal_id=signal_id,
            exchange=exchange,
            symbol=symbol,
            action=action,
            score_week=score_week,
            score_month=score_month,
            at=at,
            received_at=received_at,
        )
    except ValidationError as exc:
        where = ".".join(str(part) for part in exc.errors()[0]["loc"]) or "signal"
        return _rejected(service, signal_id, f"invalid {where}", raw)
    return Accepted(signal=signal, raw=_clean(raw))


def _present(value: object, ours: str) -> object:
    if value is None:
        raise _Invalid(f"missing field {ours}")
    return value


def _signal_id(value: object) -> str:
    if isinstance(value, _JsonInt):
        text = str(value)
    elif isinstance(value, str):
        text = value
    else:
        raise _Invalid("id is not a string or an integer")
    if not text.strip():
        raise _Invalid("empty id")
    if len(text) > MAX_ID_CHARS:
        raise _Invalid("id too long")
    if not text.isprintable() or (not text.isascii() and _has_surrogate(text)):
        raise _Invalid("id has control characters")
    return text


def _exchange(value: object, mapping: FieldMapping) -> ExchangeId:
    if not isinstance(value, str):
        raise _Invalid("exchange is not a string")
    exchange = mapping.exchange_names.get(value.strip().lower())
    if exchange is None:
        raise _Invalid(f"unknown exchange {_quote(value)}")
    return exchange


def _symbol(value: object) -> str:
    if not isinstance(value, str):
        raise _Invalid("symbol is not a string")
    if len(value) > MAX_SYMBOL_CHARS or not value.isascii():
        raise _Invalid(f"invalid symbol {_quote(value)}")
    try:
        return _canonical(value)
    except ValueError:  # InvalidSymbol, or the Instrument model's ValidationError
        raise _Invalid(f"invalid symbol {_quote(value)}") from None


@lru_cache(maxsize=4_096)
def _canonical(symbol: str) -> str:
    # A service names a few hundred symbols over and over; `canonical` builds a
    # pydantic model each time (~4 µs). Bounded, so hostile names only evict; an
    # invalid name raises and is not cached.
    return canonical(symbol)


def _action(value: object, mapping: FieldMapping) -> SignalAction:
    if not isinstance(value, str):
        raise _Invalid("action is not a string")
    action = mapping.actions.get(value.strip().upper())
    if action is None:
        raise _Invalid(f"unknown action {_quote(value)}")
    return action


def _number(value: object, ours: str) -> Decimal:
    """An exact, finite Decimal from a JSON number or a numeric string."""
    if isinstance(value, _NonFinite):
        raise _Invalid(f"not a finite number: {ours}")
    if type(value) is Decimal:
        number = value  # immutable: no copy needed
    elif isinstance(value, Decimal):
        number = Decimal(value)  # drops the _JsonInt subclass
    elif isinstance(value, str):
        text = value.strip()
        if len(text) > 100 or not _NUMBER.fullmatch(text):
            raise _Invalid(f"not a number: {ours}")
        try:
            number = Decimal(text)
        except InvalidOperation:
            raise _Invalid(f"not a number: {ours}") from None
    else:
        raise _Invalid(f"not a number: {ours}")
    if not number.is_finite():
        raise _Invalid(f"not a finite number: {ours}")
    return number


def _score(value: object, ours: str) -> Decimal:
    score = _number(value, ours)
    if score.is_zero():
        return Decimal(0)  # -0 and 0E-5 alike
    # Compared, never computed: arithmetic on 1E+999999999 would raise Overflow.
    _, digits, exponent = score.as_tuple()
    if (
        not -MAX_SCORE <= score <= MAX_SCORE
        or len(digits) > MAX_SCORE_DIGITS
        or not isinstance(exponent, int)
        or exponent < MIN_SCORE_EXPONENT
    ):
        raise _Invalid(f"score out of range: {ours}")
    return score


def _timestamp(value: object) -> datetime:
    """ISO-8601 text (naive is read as UTC) or epoch seconds/milliseconds → aware UTC."""
    if isinstance(value, str) and not _NUMBER.fullmatch(value.strip()):
        text = value.strip()
        if len(text) > 64:
            raise _Invalid("invalid timestamp")
        try:
            at = datetime.fromisoformat(text)
            if at.tzinfo is None:
                at = at.replace(tzinfo=UTC)
            return at.astimezone(UTC)
        except (ValueError, OverflowError):
            raise _Invalid("invalid timestamp") from None
    if isinstance(value, _NonFinite | Decimal | str):
        epoch = _number(value, "timestamp")
    else:
        raise _Invalid("invalid timestamp")
    if not MIN_EPOCH_S <= epoch <= MAX_EPOCH_MS:
        raise _Invalid("timestamp out of range")
    seconds = epoch / 1000 if epoch > MS_THRESHOLD else epoch
    try:
        return _EPOCH + timedelta(microseconds=int(seconds * 1_000_000))
    except (OverflowError, ArithmeticError):
        raise _Invalid("timestamp out of range") from None


_DECODER: Final = json.JSONDecoder(
    parse_float=Decimal, parse_int=_JsonInt, parse_constant=_NonFinite
)
# `json.loads(text, parse_float=...)` builds a new decoder on every call (~4 µs);
# this one is built once. Same result: a JSONDecodeError (a ValueError) or a
# RecursionError for what `json.loads` refuses, including a leading BOM.
_loads: Final[Callable[[str], Any]] = _DECODER.decode


def _is_heartbeat_value(value: object) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in HEARTBEAT_WORDS
    if not isinstance(value, dict) or "signals" in value:
        return False
    kind = value.get("type", value.get("event"))
    return isinstance(kind, str) and kind.strip().lower() in HEARTBEAT_WORDS


def _too_deep(value: dict[str, Any] | list[Any]) -> bool:
    """Is a decoded item nested deeper than MAX_DEPTH? (Iterative: no recursion.)"""
    children = value.values() if isinstance(value, dict) else value
    if not any(type(child) in _CONTAINERS for child in children):
        return False  # the common case: a flat signal object
    stack: list[tuple[dict[str, Any] | list[Any], int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        for child in node.values() if isinstance(node, dict) else node:
            if isinstance(child, dict | list):
                if depth >= MAX_DEPTH:
                    return True
                stack.append((child, depth + 1))
    return False


def _dump(item: object) -> str:
    """JSON text of one decoded item, numbers as they were written (for `raw`)."""
    try:
        return _to_json(item)
    except (ValueError, TypeError, RecursionError):
        return f"<{_type_name(item)}>"


def _to_json(value: object) -> str:
    # Recursion is bounded: an item deeper than MAX_DEPTH is never dumped.
    # The decoder makes only the exact types of _SCALAR_JSON, dict and list (keys
    # are always str); anything else takes the general path below.
    scalar = _SCALAR_JSON.get(type(value))
    if scalar is not None:
        return scalar(value)
    if isinstance(value, dict):
        scalars = _SCALAR_JSON
        fields: list[str] = []
        for key, item in value.items():
            dump = scalars.get(type(item))
            shown = dump(item) if dump is not None else _to_json(item)
            name = _encode_string(key) if type(key) is str else _to_json(key)
            fields.append(f"{name}: {shown}")
        return "{" + ", ".join(fields) + "}"
    if isinstance(value, list):
        return "[" + ", ".join([_to_json(item) for item in value]) + "]"
    if isinstance(value, str):
        return _encode_string(value)
    if isinstance(value, Decimal | _NonFinite):
        return str(value)
    return json.dumps(value, ensure_ascii=False)


_SCALAR_JSON: Final[dict[type, Callable[[Any], str]]] = {
    str: _encode_string,
    Decimal: str,
    _JsonInt: str,
    _NonFinite: str,
    bool: lambda value: "true" if value else "false",
    type(None): lambda _: "null",
}
"""How `_to_json` writes each scalar the decoder makes, as `json.dumps` would,
numbers as they were written; looked up by exact type, so a flat signal object
costs one call per field instead of a recursion per key and per value."""
_CONTAINERS: Final = frozenset({dict, list})


def _rejected(service: str, signal_id: str | None, reason: str, raw: bytes | str) -> Rejected:
    if isinstance(raw, bytes):
        raw = raw[: MAX_RAW_CHARS * 4].decode("utf-8", "replace")
    return Rejected(service=service, signal_id=signal_id, reason=reason, raw=_clean(raw))


def _clean(text: str) -> str:
    """At most MAX_RAW_CHARS of `text`, valid UTF-8, without NUL."""
    text = text[:MAX_RAW_CHARS]
    if not text.isascii():  # only non-ASCII text can hold a lone surrogate
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text.replace("\x00", "\ufffd") if "\x00" in text else text


def _quote(value: str) -> str:
    """`value` quoted for a reason: at most _QUOTE_CHARS, printable."""
    shown = repr(_clean(value[: _QUOTE_CHARS + 1]))[1:-1]
    if len(value) > _QUOTE_CHARS or len(shown) > _QUOTE_CHARS:
        shown = shown[:_QUOTE_CHARS] + "…"
    return f"'{shown}'"


def _has_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _type_name(value: object) -> str:
    if isinstance(value, _NonFinite | Decimal):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "object"
    if value is None:
        return "null"
    return type(value).__name__
