"""Binance-style API errors raised by the engine and the REST layer.

Every rejection the simulator produces is an :class:`ApiError` carrying the
exact Binance code, message and HTTP status, so the REST layer can render the
``{"code": -NNNN, "msg": "..."}`` body ccxt parses.
"""

from __future__ import annotations


class ApiError(Exception):
    """A Binance API error: ``code`` (negative int), ``msg`` and HTTP ``status``."""

    def __init__(self, code: int, msg: str, status: int = 400) -> None:
        super().__init__(f"{code}: {msg}")
        self.code = code
        self.msg = msg
        self.status = status

    def body(self) -> dict[str, object]:
        """The JSON body Binance sends for this error."""
        return {"code": self.code, "msg": self.msg}


# Constructors for the codes the simulator uses; messages are Binance's own.
def unknown(msg: str = "An unknown error occured while processing the request.") -> ApiError:
    return ApiError(-1000, msg, 400)


def too_many_requests(limit: int) -> ApiError:
    return ApiError(
        -1003,
        f"Too many requests; current limit of IP is {limit} requests per minute. "
        "Please use the websocket for live updates to avoid polling the API.",
        429,
    )


def banned(until_ms: int) -> ApiError:
    return ApiError(-1003, f"Way too many requests; IP banned until {until_ms}.", 418)


def timestamp_outside() -> ApiError:
    return ApiError(-1021, "Timestamp for this request is outside of the recvWindow.", 400)


def bad_signature() -> ApiError:
    return ApiError(-1022, "Signature for this request is not valid.", 400)


def bad_api_key() -> ApiError:
    return ApiError(-2015, "Invalid API-key, IP, or permissions for action.", 401)


def api_key_format() -> ApiError:
    return ApiError(-2014, "API-key format invalid.", 401)


def mandatory_param(name: str) -> ApiError:
    return ApiError(
        -1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed."
    )


def bad_param(name: str) -> ApiError:
    return ApiError(-1102, f"Parameter '{name}' was malformed.")


def invalid_param_value(name: str) -> ApiError:
    return ApiError(-1130, f"Data sent for parameter '{name}' is not valid.")


def start_after_end() -> ApiError:
    return ApiError(-1023, "Start time is greater than end time.")


def invalid_interval() -> ApiError:
    return ApiError(-1120, "Invalid interval.")


def invalid_symbol() -> ApiError:
    return ApiError(-1121, "Invalid symbol.")


def invalid_order_type() -> ApiError:
    return ApiError(-1116, "Invalid orderType.")


def invalid_side() -> ApiError:
    return ApiError(-1117, "Invalid side.")


def precision_over_max() -> ApiError:
    return ApiError(-1111, "Precision is over the maximum defined for this asset.")


def unknown_order() -> ApiError:
    return ApiError(-2011, "Unknown order sent.")


def order_not_exist() -> ApiError:
    return ApiError(-2013, "Order does not exist.")


def margin_insufficient() -> ApiError:
    return ApiError(-2019, "Margin is insufficient.")


def would_trigger() -> ApiError:
    return ApiError(-2021, "Order would immediately trigger.")


def reduce_only_rejected() -> ApiError:
    return ApiError(-2022, "ReduceOnly Order is rejected.")


def qty_le_zero() -> ApiError:
    return ApiError(-4003, "Quantity less than or equal to zero.")


def qty_gt_max() -> ApiError:
    return ApiError(-4005, "Quantity greater than max quantity.")


def price_not_tick() -> ApiError:
    return ApiError(-4014, "Price not increased by tick size.")


def invalid_client_id() -> ApiError:
    return ApiError(-4015, "Client order id is not valid.")


def invalid_leverage() -> ApiError:
    return ApiError(-4028, "Leverage is not valid.")


def no_need_margin_type() -> ApiError:
    return ApiError(-4046, "No need to change margin type.")


def duplicate_client_order_id() -> ApiError:
    return ApiError(-4116, "Duplicate clientOrderId")


def close_position_exists() -> ApiError:
    return ApiError(
        -4130,
        "An open stop or take profit order with GTE and closePosition in the direction "
        "is existing.",
    )


def notional_too_small(min_notional: str) -> ApiError:
    return ApiError(
        -4164,
        f"Order's notional must be no smaller than {min_notional} (unless you choose reduce only).",
    )


def duplicate_client_algo_id() -> ApiError:
    return ApiError(-20132, "The client algo id is duplicated.")


def maintenance() -> ApiError:
    # ccxt matches this exact message to OnMaintenance regardless of the code.
    return ApiError(-1, "System is under maintenance.", 503)
