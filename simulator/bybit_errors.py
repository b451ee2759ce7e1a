"""Bybit v5 retCodes: the simulator's Binance-coded engine errors, translated.

The engine raises :class:`simulator.errors.ApiError` with Binance's negative
codes; the Bybit layer raises the same class with Bybit's positive retCodes.
:func:`to_bybit` maps either to the ``(retCode, retMsg)`` Bybit would send
(always with HTTP 200). Messages are Bybit's own wording where known.
"""

from __future__ import annotations

from simulator.errors import ApiError

OK = 0
PARAMS = 10001
TIMESTAMP = 10002
INVALID_KEY = 10003
INVALID_SIGN = 10004
RATE_LIMIT = 10006
SERVER_ERROR = 10016
ORDER_NOT_EXISTS = 110001
INSUFFICIENT = 110007
REDUCE_ONLY = 110017
LEVERAGE_NOT_MODIFIED = 110043
POSITION_EXISTS = 110024
POSITION_MODE_NOT_MODIFIED = 110025
OPEN_ORDERS_EXIST = 110028
DUPLICATE_LINK_ID = 110072
EXPECT_RISING = 110092
EXPECT_FALLING = 110093
NOTIONAL_TOO_LOW = 110094


def err(code: int, msg: str) -> ApiError:
    """A Bybit error (HTTP 200, non-zero retCode)."""
    return ApiError(code, msg, 200)


def params_error(msg: str = "params error") -> ApiError:
    return err(PARAMS, msg)


def missing(name: str) -> ApiError:
    return err(PARAMS, f"Missing some parameters that must be filled in, {name}")


def order_not_exists(action: str = "cancel") -> ApiError:
    return err(ORDER_NOT_EXISTS, f"order not exists or too late to {action}")


def reduce_only_zero() -> ApiError:
    return err(REDUCE_ONLY, "current position is zero, cannot fix reduce-only order qty")


def duplicate_link_id() -> ApiError:
    return err(DUPLICATE_LINK_ID, "OrderLinkedID is duplicate")


def insufficient() -> ApiError:
    return err(INSUFFICIENT, "ab not enough for new order")


def rate_limited() -> ApiError:
    return err(RATE_LIMIT, "Too many visits. Exceeded the API Rate Limit.")


def zero_position_tpsl() -> ApiError:
    return err(PARAMS, "can not set tp/sl/ts for zero position")


# Binance code -> Bybit (retCode, retMsg); None keeps the engine's message.
_FROM_BINANCE: dict[int, tuple[int, str | None]] = {
    -1000: (SERVER_ERROR, "Internal server error."),
    -1: (SERVER_ERROR, "Service Unavailable"),
    -1003: (RATE_LIMIT, "Too many visits. Exceeded the API Rate Limit."),
    -1021: (
        TIMESTAMP,
        "invalid request, please check your server timestamp or recv_window param",
    ),
    -1022: (INVALID_SIGN, "error sign! origin_string[]"),
    -2014: (INVALID_KEY, "API key is invalid."),
    -2015: (INVALID_KEY, "API key is invalid."),
    -2011: (ORDER_NOT_EXISTS, "order not exists or too late to cancel"),
    -2013: (ORDER_NOT_EXISTS, "order not exists or too late to cancel"),
    -2019: (INSUFFICIENT, "ab not enough for new order"),
    -2022: (REDUCE_ONLY, "current position is zero, cannot fix reduce-only order qty"),
    -4116: (DUPLICATE_LINK_ID, "OrderLinkedID is duplicate"),
    -20132: (DUPLICATE_LINK_ID, "OrderLinkedID is duplicate"),
    -1121: (PARAMS, "params error: symbol invalid"),
    -4003: (PARAMS, "Qty invalid"),
    -1111: (PARAMS, "Qty invalid"),
    -1013: (PARAMS, "Qty invalid"),
    -4005: (PARAMS, "The quantity of a single order exceeds the maximum allowed"),
    -4014: (PARAMS, "price not match tick size"),
    -4001: (PARAMS, "price invalid"),
    -4015: (PARAMS, "orderLinkId is invalid"),
    -4028: (PARAMS, "leverage invalid"),
    -1116: (PARAMS, "params error: orderType invalid"),
    -1117: (PARAMS, "params error: side invalid"),
    # position mode (hedge): engine codes are Binance's
    -4061: (PARAMS, "position idx not match position mode"),
    -4059: (POSITION_MODE_NOT_MODIFIED, "Position mode is not modified"),
    -4068: (POSITION_EXISTS, "You have an existing position, so position mode cannot be switched"),
    -4067: (OPEN_ORDERS_EXIST, "Open orders exist, so you cannot change position mode"),
}


def to_bybit(exc: ApiError) -> tuple[int, str]:
    """``(retCode, retMsg)`` for an error raised anywhere in the simulator."""
    if exc.code >= 0:
        return exc.code, exc.msg
    if exc.code == -4164:  # "...no smaller than 100 (unless ...)" -> Bybit wording
        words = exc.msg.split("no smaller than ", 1)[-1].split(" ", 1)
        return NOTIONAL_TOO_LOW, f"Order does not meet minimum order value {words[0]}USDT"
    mapped = _FROM_BINANCE.get(exc.code)
    if mapped is None:
        return PARAMS, f"params error: {exc.msg}"
    code, msg = mapped
    return code, msg if msg is not None else exc.msg
