"""Classification of exchange errors, without importing ccxt.

The gateway passes the exception's class-name MRO (``[c.__name__ for c in
type(e).__mro__]``) and its message. The result names an `ErrorType` whose value
is the `ApplicationError.type` the activity raises, so the workflow handles each
permanent case explicitly and Temporal retries only the transient ones.

Error codes in the message refine ccxt's class: ccxt maps several codes to a
generic class (Binance -4116 duplicate id → InvalidOrder; against a local
simulator even -2021 → ExchangeError, see notes/ccxt.md §0.3, §5).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import timedelta
from enum import StrEnum

from pydantic import BaseModel, ConfigDict


class ErrorType(StrEnum):
    """What went wrong, as a Temporal `ApplicationError` type name."""

    # transient: Temporal retries with backoff
    NETWORK = "NetworkError"
    REQUEST_TIMEOUT = "RequestTimeout"
    EXCHANGE_UNAVAILABLE = "ExchangeNotAvailable"
    RATE_LIMITED = "RateLimited"
    INVALID_NONCE = "InvalidNonce"
    OPERATION_FAILED = "OperationFailed"
    UNEXPECTED = "UnexpectedError"
    # the order journal (PostgreSQL) could not record the order before it was
    # sent; nothing was sent, so a retry is safe
    JOURNAL_UNAVAILABLE = "JournalUnavailable"
    # permanent: the workflow decides
    INVALID_ORDER = "InvalidOrder"
    ORDER_IMMEDIATELY_FILLABLE = "OrderImmediatelyFillable"
    REDUCE_ONLY_REJECTED = "ReduceOnlyRejected"
    DUPLICATE_CLIENT_ORDER_ID = "DuplicateClientOrderId"
    INSUFFICIENT_FUNDS = "InsufficientFunds"
    BAD_SYMBOL = "BadSymbol"
    AUTHENTICATION = "AuthenticationError"
    PERMISSION_DENIED = "PermissionDenied"
    ORDER_NOT_FOUND = "OrderNotFound"
    NOT_SUPPORTED = "NotSupported"
    NO_CHANGE = "NoChange"
    EXCHANGE_ERROR = "ExchangeError"
    # the client order id is journaled for a different order: nothing was sent;
    # the details name the journaled order (see domain.journal.JournalEntry)
    CLIENT_ID_REUSED = "ClientIdReused"
    # the account's position mode (one-way/hedge) on the exchange is not its
    # settings': nothing was sent
    POSITION_MODE_MISMATCH = "PositionModeMismatch"

    @property
    def retryable(self) -> bool:
        """True when retrying the same request later may succeed."""
        return self in RETRYABLE_TYPES


RETRYABLE_TYPES: frozenset[ErrorType] = frozenset(
    {
        ErrorType.NETWORK,
        ErrorType.REQUEST_TIMEOUT,
        ErrorType.EXCHANGE_UNAVAILABLE,
        ErrorType.RATE_LIMITED,
        ErrorType.INVALID_NONCE,
        ErrorType.OPERATION_FAILED,
        # an unknown (non-ccxt) exception may be a transport error: retry, and
        # treat a placement as ambiguous
        ErrorType.UNEXPECTED,
        ErrorType.JOURNAL_UNAVAILABLE,
    }
)

NON_RETRYABLE_ERROR_TYPES: tuple[str, ...] = tuple(
    t.value for t in ErrorType if t not in RETRYABLE_TYPES
)
"""For `RetryPolicy(non_retryable_error_types=NON_RETRYABLE_ERROR_TYPES)`."""

# Rejected before the exchange processed anything: a placement is not ambiguous.
_REJECTED_UNPROCESSED = frozenset(
    {ErrorType.RATE_LIMITED, ErrorType.INVALID_NONCE, ErrorType.JOURNAL_UNAVAILABLE}
)


class ErrorClass(BaseModel):
    """Classification of one exchange error.

    `ambiguous` is True only for a *placement* that failed in a way the exchange
    may still have accepted (timeout, connection lost, 5xx): the caller must look
    the order up by its client id before placing it again.
    """

    model_config = ConfigDict(frozen=True)

    type: ErrorType
    ambiguous: bool = False
    code: int | None = None

    @property
    def retryable(self) -> bool:
        """True when Temporal should retry the activity."""
        return self.type.retryable


# ccxt class name → type. The MRO is walked from the class itself upwards and
# the first name found here wins, so a subclass entry overrides its parent's.
_BY_CLASS: dict[str, ErrorType] = {
    "OrderNotFound": ErrorType.ORDER_NOT_FOUND,
    "OrderImmediatelyFillable": ErrorType.ORDER_IMMEDIATELY_FILLABLE,
    "DuplicateOrderId": ErrorType.DUPLICATE_CLIENT_ORDER_ID,
    "InvalidOrder": ErrorType.INVALID_ORDER,
    "InsufficientFunds": ErrorType.INSUFFICIENT_FUNDS,
    "BadSymbol": ErrorType.BAD_SYMBOL,
    "PermissionDenied": ErrorType.PERMISSION_DENIED,
    "AccountNotEnabled": ErrorType.PERMISSION_DENIED,
    "AccountSuspended": ErrorType.PERMISSION_DENIED,
    "AuthenticationError": ErrorType.AUTHENTICATION,
    "NotSupported": ErrorType.NOT_SUPPORTED,
    "MarginModeAlreadySet": ErrorType.NO_CHANGE,
    "NoChange": ErrorType.NO_CHANGE,
    "RateLimitExceeded": ErrorType.RATE_LIMITED,
    "DDoSProtection": ErrorType.RATE_LIMITED,
    "ChecksumError": ErrorType.NETWORK,  # subclass of InvalidNonce, but no clock issue
    "InvalidNonce": ErrorType.INVALID_NONCE,
    "RequestTimeout": ErrorType.REQUEST_TIMEOUT,
    "OnMaintenance": ErrorType.EXCHANGE_UNAVAILABLE,
    "ExchangeNotAvailable": ErrorType.EXCHANGE_UNAVAILABLE,
    "NetworkError": ErrorType.NETWORK,
    "OperationFailed": ErrorType.OPERATION_FAILED,
    "ExchangeError": ErrorType.EXCHANGE_ERROR,
    "PositionModeMismatch": ErrorType.POSITION_MODE_MISMATCH,  # the gateway's own
    # non-ccxt exceptions escaping the transport
    "TimeoutError": ErrorType.REQUEST_TIMEOUT,
    "ConnectionError": ErrorType.NETWORK,
}

# Exchange error codes that name a case more precisely than ccxt's class.
_BINANCE_CODES: dict[int, ErrorType] = {
    -1000: ErrorType.OPERATION_FAILED,  # unknown error
    -1001: ErrorType.OPERATION_FAILED,  # internal disconnect
    -1007: ErrorType.REQUEST_TIMEOUT,  # execution status unknown
    -1008: ErrorType.OPERATION_FAILED,  # server overloaded
    -1021: ErrorType.INVALID_NONCE,
    -1121: ErrorType.BAD_SYMBOL,
    -2011: ErrorType.ORDER_NOT_FOUND,
    -2013: ErrorType.ORDER_NOT_FOUND,
    -2018: ErrorType.INSUFFICIENT_FUNDS,
    -2019: ErrorType.INSUFFICIENT_FUNDS,
    -2021: ErrorType.ORDER_IMMEDIATELY_FILLABLE,
    -2022: ErrorType.REDUCE_ONLY_REJECTED,
    -4116: ErrorType.DUPLICATE_CLIENT_ORDER_ID,
    -4131: ErrorType.INVALID_ORDER,
    -4140: ErrorType.BAD_SYMBOL,
    -4142: ErrorType.ORDER_IMMEDIATELY_FILLABLE,
    -4164: ErrorType.INVALID_ORDER,
    -20132: ErrorType.DUPLICATE_CLIENT_ORDER_ID,  # client algo id duplicated
}
_BYBIT_CODES: dict[int, ErrorType] = {
    10002: ErrorType.INVALID_NONCE,
    10006: ErrorType.RATE_LIMITED,
    10016: ErrorType.OPERATION_FAILED,  # "System error, try again"
    10018: ErrorType.RATE_LIMITED,
    110001: ErrorType.ORDER_NOT_FOUND,
    110007: ErrorType.INSUFFICIENT_FUNDS,
    110017: ErrorType.REDUCE_ONLY_REJECTED,  # also "no position" just after a fill
    110025: ErrorType.NO_CHANGE,  # position mode not modified
    110043: ErrorType.NO_CHANGE,  # leverage not modified
    110072: ErrorType.DUPLICATE_CLIENT_ORDER_ID,
    # "expect Rising/Falling, but trigger_price ≤/≥ current": the stop would trigger
    # at once (Binance's -2021)
    110092: ErrorType.ORDER_IMMEDIATELY_FILLABLE,
    110093: ErrorType.ORDER_IMMEDIATELY_FILLABLE,
}

# ccxt embeds the raw body: binance `{"code":-2021,"msg":...}`, bybit
# `{"retCode":110072,...}`. Binance codes are also accepted bare ("-2021"), being
# negative; Bybit's positive codes only next to "retCode" (a bare 110072 could be
# a price).
_BINANCE_CODE = re.compile(r"(?<![\w.])(-\d{4,5})(?![\d.])")
_BYBIT_CODE = re.compile(r"retCode\"?\s*[:=]\s*\"?(\d{5,6})(?!\d)")

# Codes refine only these generic classifications; a transient class stays
# transient whatever the body says.
_REFINABLE = frozenset({ErrorType.EXCHANGE_ERROR, ErrorType.INVALID_ORDER, ErrorType.UNEXPECTED})


def error_code(message: str) -> tuple[int, ErrorType] | None:
    """The first known exchange error code in `message` with its type, if any."""
    for match in _BINANCE_CODE.finditer(message):
        code = int(match.group(1))
        if code in _BINANCE_CODES:
            return code, _BINANCE_CODES[code]
    for match in _BYBIT_CODE.finditer(message):
        code = int(match.group(1))
        if code in _BYBIT_CODES:
            return code, _BYBIT_CODES[code]
    return None


def classify(mro: Sequence[str], message: str, *, placement: bool = False) -> ErrorClass:
    """Classify an exception from its class-name MRO and message.

    `placement` is True when the failed call created an order; then a transient
    error other than a rate limit or nonce rejection is `ambiguous`.
    """
    by_class = next((_BY_CLASS[name] for name in mro if name in _BY_CLASS), ErrorType.UNEXPECTED)
    found = error_code(message)
    kind = by_class
    code = None
    if found is not None:
        code = found[0]
        if by_class in _REFINABLE:
            kind = found[1]
    ambiguous = placement and kind.retryable and kind not in _REJECTED_UNPROCESSED
    return ErrorClass(type=kind, ambiguous=ambiguous, code=code)


# Binance's 418: "Way too many requests; IP(...) banned until 1700000000000." (epoch ms).
_BANNED_UNTIL = re.compile(r"banned until (\d{12,14})(?!\d)")

BAN_WAIT_MAX = timedelta(seconds=60)
"""The longest one wait for a ban to end: a longer ban (Binance's last from 2 minutes
to 3 days) is waited out a minute at a time, so the caller keeps control between."""
BAN_WAIT_MARGIN = timedelta(milliseconds=250)
"""Waited beyond the ban's end: the exchange's clock and ours are not one."""


def ban_end_ms(message: str) -> int | None:
    """When the IP ban that `message` reports ends (epoch ms), if it names the end."""
    found = _BANNED_UNTIL.search(message)
    return None if found is None else int(found.group(1))


def rate_limit_wait(
    message: str, now_ms: int, *, cap: timedelta = BAN_WAIT_MAX
) -> timedelta | None:
    """How long to wait before the next try after a rate-limit refusal whose text
    names the ban's end: until that end plus `BAN_WAIT_MARGIN`, at most `cap`.

    None when the text names no end (a plain 429, Bybit's 10006): the caller's own
    back-off applies. Trying again before a known end only spends attempts (and on
    Binance lengthens the ban), which is what left positions without their first
    stop for minutes under the chaos suite (issue 16, finding B).
    """
    end = ban_end_ms(message)
    if end is None:
        return None
    wait = timedelta(milliseconds=max(end - now_ms, 0)) + BAN_WAIT_MARGIN
    return min(wait, cap)


# A URL's query string: a signed GET or DELETE carries its signature there (ccxt
# quotes the whole URL in timeouts and HTTP errors).
_URL_QUERY = re.compile(r"""([a-z][a-z0-9+.-]*://[^\s?"'<>]*)\?[^\s"'<>]*""", re.IGNORECASE)
# A value named like a credential, wherever it is written (query, JSON, header).
_NAMED_SECRET = re.compile(
    r"""(\b(?:signature|sign|x-mbx-apikey|x-bapi-api-key|x-bapi-sign|api[-_]?key|secret"""
    r"""|listenkey|token)["']?\s*[=:]\s*["']?)[^\s&"',;}]+""",
    re.IGNORECASE,
)
# A listen key in a user-data stream's URL (Binance: wss://fstream.binance.com/ws/<key>).
_LISTEN_KEY_PATH = re.compile(r"(/ws/)[A-Za-z0-9]{20,}")
REDACTED = "<redacted>"


def scrub(text: str) -> str:
    """`text` without what could authenticate a request or identify an account's
    credentials: a URL's query string and any value named like a key, a secret, a
    signature or a token, and a user stream's listen key in its URL. For every error
    text that leaves an exchange activity or a stream (Temporal failures, events,
    logs); the rest of the text is kept for diagnosis."""
    text = _URL_QUERY.sub(rf"\1?{REDACTED}", text)
    text = _LISTEN_KEY_PATH.sub(rf"\1{REDACTED}", text)
    return _NAMED_SECRET.sub(rf"\1{REDACTED}", text)


def scrubbed(exc: BaseException) -> str:
    """`"ExceptionClass: message"` of `exc`, scrubbed (see `scrub`)."""
    return scrub(f"{type(exc).__name__}: {exc}")


def classify_exception(exc: BaseException, *, placement: bool = False) -> ErrorClass:
    """`classify` applied to a live exception object (no ccxt import needed)."""
    return classify([c.__name__ for c in type(exc).__mro__], str(exc), placement=placement)


def cancel_counts_as_done(error: ErrorClass) -> bool:
    """True when a failed cancel leaves the order gone (it no longer exists).

    For a stop, "gone" may mean it filled: the caller confirms by looking it up.
    """
    return error.type is ErrorType.ORDER_NOT_FOUND
