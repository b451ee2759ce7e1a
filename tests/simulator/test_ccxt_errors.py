"""Every rejection surfaces as the ccxt exception class a real Binance fapi host produces."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import ccxt.async_support as ccxt
import pytest

from simulator.client import binanceusdm_client
from simulator.server import PaperExchange
from tests.simulator.conftest import BTC, ETH

SL = {"reduceOnly": True, "workingType": "MARK_PRICE"}


async def _would_trigger(ex: Any, sim: PaperExchange) -> None:
    await ex.create_order(BTC, "market", "buy", 0.01)
    await ex.create_order(BTC, "market", "sell", 0.01, None, {**SL, "stopLossPrice": 96000})


async def _reduce_only(ex: Any, sim: PaperExchange) -> None:
    await ex.create_order(BTC, "market", "sell", 0.01, None, {"reduceOnly": True})


async def _reduce_only_stop(ex: Any, sim: PaperExchange) -> None:
    await ex.create_order(BTC, "market", "sell", 0.01, None, {**SL, "stopLossPrice": 90000})


async def _dup_cid(ex: Any, sim: PaperExchange) -> None:
    await ex.create_order(ETH, "limit", "buy", 0.01, 3000, {"clientOrderId": "dup-1"})
    await ex.create_order(ETH, "limit", "buy", 0.01, 3000, {"clientOrderId": "dup-1"})


async def _dup_algo_id(ex: Any, sim: PaperExchange) -> None:
    await ex.create_order(BTC, "market", "buy", 0.01)
    p = {**SL, "stopLossPrice": 90000, "clientOrderId": "dup-algo"}
    await ex.create_order(BTC, "market", "sell", 0.01, None, p)
    await ex.create_order(BTC, "market", "sell", 0.01, None, p)


async def _close_position_twice(ex: Any, sim: PaperExchange) -> None:
    await ex.create_order(BTC, "market", "buy", 0.01)
    p = {"triggerPrice": 90000, "closePosition": True, "workingType": "MARK_PRICE"}
    await ex.create_order(BTC, "market", "sell", None, None, p)
    await ex.create_order(BTC, "market", "sell", None, None, {**p, "triggerPrice": 91000})


async def _bad_client_id(ex: Any, sim: PaperExchange) -> None:
    await ex.create_order(BTC, "market", "buy", 0.01, None, {"clientOrderId": "bad id!"})


async def _stale_timestamp(ex: Any, sim: PaperExchange) -> None:
    ex.options["timeDifference"] = 60_000  # our timestamps now lag a minute
    await ex.fetch_balance()


async def _bad_signature(ex: Any, sim: PaperExchange) -> None:
    ex.secret = "wrong-secret"
    await ex.fetch_balance()


async def _bad_key(ex: Any, sim: PaperExchange) -> None:
    ex.apiKey = "unknown-key"
    await ex.fetch_balance()


async def _unknown_order(ex: Any, sim: PaperExchange) -> None:
    await ex.fetch_order("123", BTC)


async def _cancel_unknown(ex: Any, sim: PaperExchange) -> None:
    await ex.cancel_order("123", BTC)


async def _margin(ex: Any, sim: PaperExchange) -> None:
    await ex.create_order(BTC, "market", "buy", 50)


async def _min_notional(ex: Any, sim: PaperExchange) -> None:
    await ex.create_order(BTC, "market", "buy", 0.001)


def _fault(kind: str, **kw: Any) -> Callable[[Any, PaperExchange], Awaitable[None]]:
    async def run(ex: Any, sim: PaperExchange) -> None:
        sim.add_fault(kind, endpoint="GET /fapi/v3/account", **kw)
        await ex.fetch_balance()

    return run


CASES = [
    ("-2021 would trigger", _would_trigger, ccxt.OrderImmediatelyFillable, "-2021"),
    ("-2022 reduce only", _reduce_only, ccxt.InvalidOrder, "-2022"),
    ("-2022 reduce only stop", _reduce_only_stop, ccxt.InvalidOrder, "-2022"),
    ("-4116 duplicate cid", _dup_cid, ccxt.InvalidOrder, "-4116"),
    ("-20132 duplicate algo id", _dup_algo_id, ccxt.BadRequest, "-20132"),
    ("-4130 closePosition twice", _close_position_twice, ccxt.ExchangeError, "-4130"),
    ("-4015 bad client id", _bad_client_id, ccxt.BadRequest, "-4015"),
    ("-1021 timestamp", _stale_timestamp, ccxt.InvalidNonce, "-1021"),
    ("-1022 signature", _bad_signature, ccxt.AuthenticationError, "-1022"),
    ("-2015 api key", _bad_key, ccxt.AuthenticationError, "-2015"),
    ("-2013 unknown order", _unknown_order, ccxt.OrderNotFound, "-2013"),
    ("-2011 cancel unknown", _cancel_unknown, ccxt.OrderNotFound, "-2011"),
    ("-2019 margin", _margin, ccxt.InsufficientFunds, "-2019"),
    ("-4164 min notional", _min_notional, ccxt.InvalidOrder, "-4164"),
    ("429 storm", _fault("rate_limit"), ccxt.DDoSProtection, "-1003"),
    ("418 ban", _fault("rate_limit", status=418), ccxt.DDoSProtection, "418"),
    ("500", _fault("http_status", status=500), ccxt.ExchangeNotAvailable, "500"),
    ("502", _fault("http_status", status=502), ccxt.ExchangeNotAvailable, "502"),
    ("504", _fault("http_status", status=504), ccxt.RequestTimeout, "504"),
    ("maintenance", _fault("maintenance"), ccxt.OnMaintenance, "maintenance"),
    (
        "-1001 injected",
        _fault("error", code=-1001, msg="Internal error."),
        ccxt.OperationFailed,
        "-1001",
    ),
]


@pytest.mark.parametrize(
    ("action", "exc_class", "marker"),
    [pytest.param(a, c, m, id=i) for i, a, c, m in CASES],
)
async def test_error_maps_to_ccxt_class(
    ex: Any, sim: PaperExchange, action: Any, exc_class: type[Exception], marker: str
) -> None:
    with pytest.raises(exc_class) as info:
        await action(ex, sim)
    assert marker in str(info.value)


async def test_plain_ccxt_degrades_without_the_url_override(sim: PaperExchange) -> None:
    """Why client.py overrides get_exceptions_by_url: stock ccxt maps -4116 generically."""
    client = binanceusdm_client(
        sim, api_key=sim.api_key, secret=sim.api_secret, enableRateLimit=False
    )
    await client.load_markets()
    try:
        # What the stock lookup returns for our URL: nothing linear-specific.
        assert ccxt.binanceusdm.get_exceptions_by_url(client, sim.rest_url + "/fapi", "exact") == {}
        assert (
            client.get_exceptions_by_url(sim.rest_url + "/fapi", "exact")["-4116"]
            is ccxt.InvalidOrder
        )
    finally:
        await client.close()


async def test_weight_limit_escalates_429_then_418_with_retry_after() -> None:
    async with PaperExchange(admin_port=None, weight_limit=10, ban_after=2, ban_ms=60_000) as sim:
        statuses: list[int] = []
        headers: list[dict[str, str]] = []
        async with aiohttp.ClientSession() as s:
            for _ in range(16):
                async with s.get(sim.rest_url + "/fapi/v1/ping") as r:
                    statuses.append(r.status)
                    headers.append(dict(r.headers))
        assert statuses[:10] == [200] * 10
        assert headers[9]["X-MBX-USED-WEIGHT-1M"] == "10"
        assert statuses[10:12] == [429, 429]
        assert statuses[12:] == [418] * 4
        assert int(headers[12]["Retry-After"]) == 60
        client = binanceusdm_client(sim, api_key=sim.api_key, secret=sim.api_secret)
        try:
            with pytest.raises(ccxt.DDoSProtection):
                await client.fetch_time()
        finally:
            await client.close()
