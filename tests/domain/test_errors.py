"""Classification of exchange errors (ccxt's hierarchy, mirrored without importing it)."""

from __future__ import annotations

import importlib
from datetime import timedelta

import pytest

from domain.errors import (
    BAN_WAIT_MARGIN,
    BAN_WAIT_MAX,
    NON_RETRYABLE_ERROR_TYPES,
    ErrorClass,
    ErrorType,
    ban_end_ms,
    cancel_counts_as_done,
    classify,
    classify_exception,
    error_code,
    rate_limit_wait,
    scrub,
    scrubbed,
)

# ccxt 4.5 `base/errors.py` hierarchy: class → parent (notes/ccxt.md §5).
PARENT: dict[str, str] = {
    "BaseError": "Exception",
    "ExchangeError": "BaseError",
    "AuthenticationError": "ExchangeError",
    "PermissionDenied": "AuthenticationError",
    "AccountNotEnabled": "PermissionDenied",
    "AccountSuspended": "AuthenticationError",
    "ArgumentsRequired": "ExchangeError",
    "BadRequest": "ExchangeError",
    "BadSymbol": "BadRequest",
    "OperationRejected": "ExchangeError",
    "NoChange": "OperationRejected",
    "MarginModeAlreadySet": "NoChange",
    "MarketClosed": "OperationRejected",
    "ManualInteractionNeeded": "OperationRejected",
    "RestrictedLocation": "OperationRejected",
    "InsufficientFunds": "ExchangeError",
    "InvalidAddress": "ExchangeError",
    "AddressPending": "InvalidAddress",
    "InvalidOrder": "ExchangeError",
    "OrderNotFound": "InvalidOrder",
    "OrderNotCached": "InvalidOrder",
    "OrderImmediatelyFillable": "InvalidOrder",
    "OrderNotFillable": "InvalidOrder",
    "DuplicateOrderId": "InvalidOrder",
    "ContractUnavailable": "InvalidOrder",
    "NotSupported": "ExchangeError",
    "InvalidProxySettings": "ExchangeError",
    "ExchangeClosedByUser": "ExchangeError",
    "OperationFailed": "BaseError",
    "NetworkError": "OperationFailed",
    "DDoSProtection": "NetworkError",
    "RateLimitExceeded": "NetworkError",
    "ExchangeNotAvailable": "NetworkError",
    "OnMaintenance": "ExchangeNotAvailable",
    "InvalidNonce": "NetworkError",
    "ChecksumError": "InvalidNonce",
    "RequestTimeout": "NetworkError",
    "BadResponse": "OperationFailed",
    "NullResponse": "BadResponse",
    "CancelPending": "OperationFailed",
    "UnsubscribeError": "BaseError",
}


def mro(name: str) -> list[str]:
    chain = [name]
    while chain[-1] in PARENT:
        chain.append(PARENT[chain[-1]])
    return [*chain, "BaseException", "object"]


_classes: dict[str, type[Exception]] = {}


def ccxt_like(name: str) -> type[Exception]:
    """A class with ccxt's name and ancestry, so `type(e).__mro__` matches ccxt's."""
    if name == "Exception":
        return Exception
    if name not in _classes:
        _classes[name] = type(name, (ccxt_like(PARENT[name]),), {})
    return _classes[name]


E = ErrorType
EXPECTED: dict[str, ErrorType] = {
    "ExchangeError": E.EXCHANGE_ERROR,
    "AuthenticationError": E.AUTHENTICATION,
    "PermissionDenied": E.PERMISSION_DENIED,
    "AccountNotEnabled": E.PERMISSION_DENIED,
    "AccountSuspended": E.PERMISSION_DENIED,
    "ArgumentsRequired": E.EXCHANGE_ERROR,
    "BadRequest": E.EXCHANGE_ERROR,
    "BadSymbol": E.BAD_SYMBOL,
    "OperationRejected": E.EXCHANGE_ERROR,
    "NoChange": E.NO_CHANGE,
    "MarginModeAlreadySet": E.NO_CHANGE,
    "MarketClosed": E.EXCHANGE_ERROR,
    "ManualInteractionNeeded": E.EXCHANGE_ERROR,
    "RestrictedLocation": E.EXCHANGE_ERROR,
    "InsufficientFunds": E.INSUFFICIENT_FUNDS,
    "InvalidAddress": E.EXCHANGE_ERROR,
    "AddressPending": E.EXCHANGE_ERROR,
    "InvalidOrder": E.INVALID_ORDER,
    "OrderNotFound": E.ORDER_NOT_FOUND,
    "OrderNotCached": E.INVALID_ORDER,
    "OrderImmediatelyFillable": E.ORDER_IMMEDIATELY_FILLABLE,
    "OrderNotFillable": E.INVALID_ORDER,
    "DuplicateOrderId": E.DUPLICATE_CLIENT_ORDER_ID,
    "ContractUnavailable": E.INVALID_ORDER,
    "NotSupported": E.NOT_SUPPORTED,
    "InvalidProxySettings": E.EXCHANGE_ERROR,
    "ExchangeClosedByUser": E.EXCHANGE_ERROR,
    "OperationFailed": E.OPERATION_FAILED,
    "NetworkError": E.NETWORK,
    "DDoSProtection": E.RATE_LIMITED,
    "RateLimitExceeded": E.RATE_LIMITED,
    "ExchangeNotAvailable": E.EXCHANGE_UNAVAILABLE,
    "OnMaintenance": E.EXCHANGE_UNAVAILABLE,
    "InvalidNonce": E.INVALID_NONCE,
    "ChecksumError": E.NETWORK,
    "RequestTimeout": E.REQUEST_TIMEOUT,
    "BadResponse": E.OPERATION_FAILED,
    "NullResponse": E.OPERATION_FAILED,
    "CancelPending": E.OPERATION_FAILED,
    "BaseError": E.UNEXPECTED,
    "UnsubscribeError": E.UNEXPECTED,
}


def test_table_covers_the_whole_hierarchy() -> None:
    assert set(EXPECTED) == set(PARENT)


@pytest.mark.parametrize(("name", "expected"), sorted(EXPECTED.items()))
def test_every_ccxt_class(name: str, expected: ErrorType) -> None:
    got = classify_exception(ccxt_like(name)("binanceusdm {}"))
    assert got.type is expected
    assert got == classify(mro(name), "binanceusdm {}")
    # the transient family is exactly NetworkError/OperationFailed (and unknowns)
    transient = "OperationFailed" in mro(name) or name in ("BaseError", "UnsubscribeError")
    assert got.retryable is transient
    assert not got.ambiguous  # not a placement


@pytest.mark.parametrize(("name", "expected"), sorted(EXPECTED.items()))
def test_ambiguity_only_for_placements_that_may_have_landed(name: str, expected: ErrorType) -> None:
    got = classify(mro(name), "", placement=True)
    may_have_landed = expected.retryable and expected not in {E.RATE_LIMITED, E.INVALID_NONCE}
    assert got.ambiguous is may_have_landed


@pytest.mark.parametrize(
    ("name", "ambiguous"),
    [
        ("RequestTimeout", True),
        ("NetworkError", True),
        ("ExchangeNotAvailable", True),
        ("RateLimitExceeded", False),
        ("DDoSProtection", False),
        ("InvalidNonce", False),
        ("InvalidOrder", False),
    ],
)
def test_placement_ambiguity_examples(name: str, ambiguous: bool) -> None:
    assert classify(mro(name), "", placement=True).ambiguous is ambiguous


@pytest.mark.parametrize(
    ("name", "message", "expected"),
    [
        # duplicate client ids hide behind generic classes (ccxt.md §0.3)
        (
            "InvalidOrder",
            'binanceusdm {"code":-4116,"msg":"ClientOrderId is duplicated."}',
            E.DUPLICATE_CLIENT_ORDER_ID,
        ),
        (
            "ExchangeError",
            'binanceusdm {"code":-4116,"msg":"ClientOrderId is duplicated."}',
            E.DUPLICATE_CLIENT_ORDER_ID,
        ),
        (
            "BadRequest",
            'binanceusdm {"code":-20132,"msg":"The client algo id is duplicated."}',
            E.DUPLICATE_CLIENT_ORDER_ID,
        ),
        (
            "InvalidOrder",
            'bybit {"retCode":110072,"retMsg":"OrderLinkedID is duplicate"}',
            E.DUPLICATE_CLIENT_ORDER_ID,
        ),
        # against a local simulator Binance's linear codes become ExchangeError
        (
            "ExchangeError",
            'binanceusdm {"code":-2021,"msg":"Order would immediately trigger."}',
            E.ORDER_IMMEDIATELY_FILLABLE,
        ),
        ("ExchangeError", 'binanceusdm {"code":-4142,"msg":"..."}', E.ORDER_IMMEDIATELY_FILLABLE),
        (
            "InvalidOrder",
            'binanceusdm {"code":-2022,"msg":"ReduceOnly Order is rejected."}',
            E.REDUCE_ONLY_REJECTED,
        ),
        (
            "InvalidOrder",
            'bybit {"retCode":110017,"retMsg":"reduce-only rule not satisfied"}',
            E.REDUCE_ONLY_REJECTED,
        ),
        (
            "InvalidOrder",
            'bybit {"retCode":110092,"retMsg":"expect Rising, but trigger_price[50000] <= '
            'current[60000]"}',
            E.ORDER_IMMEDIATELY_FILLABLE,
        ),
        (
            "InvalidOrder",
            'bybit {"retCode":110093,"retMsg":"expect Falling, but trigger_price ..."}',
            E.ORDER_IMMEDIATELY_FILLABLE,
        ),
        # Bybit sometimes sends retCode as a string
        (
            "InvalidOrder",
            'bybit {"retCode":"110072","retMsg":"duplicate"}',
            E.DUPLICATE_CLIENT_ORDER_ID,
        ),
        ("BadRequest", 'bybit {"retCode":110043,"retMsg":"leverage not modified"}', E.NO_CHANGE),
        (
            "InvalidOrder",
            'bybit {"retCode":110094,"retMsg":"order value too low"}',
            E.INVALID_ORDER,
        ),
        (
            "ExchangeError",
            'binanceusdm {"code":-2019,"msg":"Margin is insufficient."}',
            E.INSUFFICIENT_FUNDS,
        ),
        (
            "ExchangeError",
            'binanceusdm {"code":-1008,"msg":"Server is currently overloaded"}',
            E.OPERATION_FAILED,
        ),
        (
            "ExchangeError",
            'bybit {"retCode":10016,"retMsg":"System error, try again"}',
            E.OPERATION_FAILED,
        ),
        ("ExchangeError", 'binanceusdm {"code":-4140,"msg":"Invalid symbol status"}', E.BAD_SYMBOL),
        (
            "ExchangeError",
            "binanceusdm -2021 Order would immediately trigger.",
            E.ORDER_IMMEDIATELY_FILLABLE,
        ),
        # a transient class stays transient whatever the body says
        ("RequestTimeout", 'binanceusdm {"code":-2021}', E.REQUEST_TIMEOUT),
        ("RateLimitExceeded", 'bybit {"retCode":110072}', E.RATE_LIMITED),
        # a specific class is not overridden by a code
        ("OrderNotFound", 'binanceusdm {"code":-4116}', E.ORDER_NOT_FOUND),
        # numbers that merely look like codes do not count
        ("InvalidOrder", "bybit price 110072 is out of range", E.INVALID_ORDER),
        ("ExchangeError", "binanceusdm qty 0.-2021 weird", E.EXCHANGE_ERROR),
        ("ExchangeError", "binanceusdm unknown code -9999", E.EXCHANGE_ERROR),
    ],
)
def test_codes_in_the_message_refine_generic_classes(
    name: str, message: str, expected: ErrorType
) -> None:
    assert classify(mro(name), message).type is expected


def test_code_is_reported() -> None:
    got = classify(mro("InvalidOrder"), 'bybit {"retCode":110072}')
    assert got == ErrorClass(type=E.DUPLICATE_CLIENT_ORDER_ID, code=110072)
    assert error_code("nothing here") is None


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (TimeoutError("read timed out"), E.REQUEST_TIMEOUT),
        (ConnectionResetError("reset"), E.NETWORK),
        (KeyError("x"), E.UNEXPECTED),
    ],
)
def test_non_ccxt_exceptions(exc: BaseException, expected: ErrorType) -> None:
    got = classify_exception(exc, placement=True)
    assert got.type is expected
    assert got.retryable and got.ambiguous


@pytest.mark.parametrize("kind", list(ErrorType))
def test_non_retryable_constants(kind: ErrorType) -> None:
    assert (kind.value in NON_RETRYABLE_ERROR_TYPES) is (not kind.retryable)


def test_non_retryable_names_the_workflow_handles() -> None:
    for name in (
        "InvalidOrder",
        "OrderImmediatelyFillable",
        "ReduceOnlyRejected",
        "DuplicateClientOrderId",
        "InsufficientFunds",
        "BadSymbol",
        "AuthenticationError",
        "PermissionDenied",
        "OrderNotFound",
        "NotSupported",
        "ExchangeError",
    ):
        assert name in NON_RETRYABLE_ERROR_TYPES
    assert "NetworkError" not in NON_RETRYABLE_ERROR_TYPES


@pytest.mark.parametrize("kind", list(ErrorType))
def test_cancel_done_only_when_not_found(kind: ErrorType) -> None:
    assert cancel_counts_as_done(ErrorClass(type=kind)) is (kind is E.ORDER_NOT_FOUND)


def test_classification_round_trips() -> None:
    got = classify(mro("RequestTimeout"), "", placement=True)
    assert ErrorClass.model_validate(got.model_dump(mode="json")) == got


def test_mirror_matches_the_installed_ccxt() -> None:
    """The mirrored hierarchy (and so the table above) is the one ccxt really has."""
    # ccxt is a dependency: if it is missing this fails, it never skips.
    errors = importlib.import_module("ccxt.base.errors")

    def names(tree: dict[str, dict[str, object]]) -> set[str]:
        found: set[str] = set()
        for name, children in tree.items():
            found |= {name} | names(children)  # type: ignore[arg-type]
        return found

    assert names(errors.error_hierarchy) == set(PARENT)
    for name in PARENT:
        real = getattr(errors, name)
        assert [c.__name__ for c in real.__mro__] == mro(name), name
        assert classify_exception(real("x")).type is EXPECTED[name]


# --- scrub: nothing that authenticates a request leaves an exchange activity ---------


@pytest.mark.parametrize(
    ("raw", "kept", "gone"),
    [
        (  # ccxt's timeout and HTTP-error texts quote the signed URL
            "binanceusdm GET http://127.0.0.1:41723/fapi/v1/order?timestamp=1796230694004"
            "&symbol=BTCUSDT&recvWindow=5000&signature=449615bab8231c51f87d454fddd450bb"
            " 502 Bad Gateway",
            "binanceusdm GET http://127.0.0.1:41723/fapi/v1/order?<redacted> 502 Bad Gateway",
            "449615bab8231c51f87d454fddd450bb",
        ),
        (
            "bybit GET https://api.bybit.com/v5/order/realtime?category=linear&orderLinkId=x",
            "bybit GET https://api.bybit.com/v5/order/realtime?<redacted>",
            "orderLinkId",
        ),
        (
            '{"X-MBX-APIKEY": "Kk9-abc", "X-BAPI-SIGN": "deadbeef"}',
            '{"X-MBX-APIKEY": "<redacted>", "X-BAPI-SIGN": "<redacted>"}',
            "Kk9-abc",
        ),
        ("apiKey=Kk9&secret=Ss1 listenKey: LL2", "apiKey=<redacted>", "Ss1"),
        (  # a user stream's URL carries its listen key
            "NetworkError('wss://fstream.binance.com/ws/pqia91ma19a5s61cv6a81va65sdf19v8a65a1a5s')",
            "wss://fstream.binance.com/ws/<redacted>",
            "pqia91ma19a5s61cv6a81va65sdf19v8a65a1a5s",
        ),
    ],
)
def test_scrub_removes_what_authenticates_a_request(raw: str, kept: str, gone: str) -> None:
    clean = scrub(raw)
    assert kept in clean
    assert gone not in clean


def test_scrub_keeps_an_exchange_answer_whole() -> None:
    answer = 'binanceusdm {"code":-2019,"msg":"Margin is insufficient."} design: kept'
    assert scrub(answer) == answer


def test_scrubbed_names_the_exception_class() -> None:
    exc = TimeoutError("GET http://h/fapi/v1/order?signature=abc")
    assert scrubbed(exc) == "TimeoutError: GET http://h/fapi/v1/order?<redacted>"


# --- a ban's end: waited out, not spent ----------------------------------------------------

BANNED = (
    'binance 418 I\'m a teapot {"code":-1003,"msg":"Way too many requests; IP(1.2.3.4) '
    'banned until 1700000060000. Please use the websocket for live updates to avoid bans."}'
)


def test_the_end_of_a_binance_ban_is_read_from_its_text() -> None:
    assert ban_end_ms(BANNED) == 1_700_000_060_000
    assert ban_end_ms('binance 429 {"code":-1003,"msg":"Too many requests; current limit"}') is None
    assert ban_end_ms('bybit {"retCode":10006,"retMsg":"Too many visits!"}') is None


@pytest.mark.parametrize(
    ("now_ms", "expected"),
    [
        (1_700_000_058_000, timedelta(seconds=2) + BAN_WAIT_MARGIN),  # 2 s left
        (1_700_000_060_000, BAN_WAIT_MARGIN),  # ends now
        (1_700_000_070_000, BAN_WAIT_MARGIN),  # ended (clocks differ): try soon
        (1_699_999_000_000, BAN_WAIT_MAX),  # over a minute left: a minute at a time
    ],
)
def test_a_ban_is_waited_until_its_end_at_most_a_minute(now_ms: int, expected: timedelta) -> None:
    assert rate_limit_wait(BANNED, now_ms) == expected


def test_a_rate_limit_without_an_end_leaves_the_back_off_to_the_caller() -> None:
    assert rate_limit_wait("binance 429 Too many requests", 0) is None
    assert (
        rate_limit_wait(BANNED, 1_699_999_000_000, cap=timedelta.max)
        == timedelta(seconds=1060) + BAN_WAIT_MARGIN
    )
