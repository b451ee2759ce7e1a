"""Bybit retCodes through real ccxt ``bybit``, the retCode-as-string switch and Bybit's traps."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import aiohttp
import ccxt.async_support as ccxt
import pytest

from simulator.bybit_auth import ws_signature
from simulator.client import bybit_client
from simulator.server import PaperExchange
from tests.simulator.conftest import BTC

SL = {"reduceOnly": True, "triggerBy": "MarkPrice"}


async def test_insufficient_balance_110007(bex: Any) -> None:
    with pytest.raises(ccxt.InsufficientFunds, match="110007"):
        await bex.create_order(BTC, "market", "buy", 5)


async def test_reduce_only_without_position_110017(bex: Any) -> None:
    with pytest.raises(ccxt.InvalidOrder, match="110017"):
        await bex.create_order(BTC, "market", "sell", 0.01, None, {"reduceOnly": True})
    with pytest.raises(ccxt.InvalidOrder, match="110017"):
        await bex.create_order(BTC, "market", "sell", 0.01, None, {**SL, "stopLossPrice": 90000})


async def test_params_error_10001(bex: Any) -> None:
    with pytest.raises(ccxt.BadRequest, match="10001"):
        await bex.privatePostV5OrderCreate(
            {
                "category": "linear",
                "symbol": "BTCUSDT",
                "side": "Up",
                "orderType": "Market",
                "qty": "0.01",
            }
        )
    with pytest.raises(ccxt.BadRequest, match="10001"):
        await bex.create_order(BTC, "market", "buy", 0.01, None, {"clientOrderId": "bad id!"})


async def test_duplicate_order_link_id_110072(bex: Any) -> None:
    await bex.create_order(BTC, "market", "buy", 0.01, None, {"clientOrderId": "dup-1"})
    with pytest.raises(ccxt.InvalidOrder, match="110072"):
        await bex.create_order(BTC, "market", "buy", 0.01, None, {"clientOrderId": "dup-1"})


async def test_order_not_exists_110001(bex: Any) -> None:
    with pytest.raises(ccxt.OrderNotFound, match="110001"):
        await bex.cancel_order("00000000-0000-0000-0000-000000000000", BTC)
    await bex.create_order(BTC, "market", "buy", 0.01)
    stop = await bex.create_order(BTC, "market", "sell", 0.01, None, {**SL, "stopLossPrice": 90000})
    await bex.cancel_order(stop["id"], BTC)
    with pytest.raises(ccxt.OrderNotFound, match="110001"):
        await bex.cancel_order(stop["id"], BTC)
    with pytest.raises(ccxt.OrderNotFound, match="110001"):
        await bex.edit_order(
            stop["id"], BTC, "market", "sell", None, None, {"stopLossPrice": 91000}
        )


@pytest.mark.parametrize(("trigger", "code"), [(96000, "110093"), (90000, "110092")])
async def test_trigger_that_would_fire_now(bex: Any, trigger: int, code: str) -> None:
    # sell stop-loss must be below, buy-rising trigger must be above the mark (95000)
    await bex.create_order(BTC, "market", "buy", 0.01)
    if code == "110093":
        params = {**SL, "stopLossPrice": trigger}
        side = "sell"
    else:
        params = {"triggerPrice": trigger, "triggerDirection": "ascending"}
        side = "buy"
    with pytest.raises(ccxt.InvalidOrder, match=code):
        await bex.create_order(BTC, "market", side, 0.01, None, params)


async def test_rate_limit_10006_with_headers(bex: Any, bsim: PaperExchange) -> None:
    bsim.configure(rate_limit_per_s=3)
    await bex.fetch_balance()
    assert bex.last_response_headers["X-Bapi-Limit"] == "3"
    assert bex.last_response_headers["X-Bapi-Limit-Status"] == "2"
    assert int(bex.last_response_headers["X-Bapi-Limit-Reset-Timestamp"]) > 0
    with pytest.raises(ccxt.RateLimitExceeded, match="10006"):
        for _ in range(10):  # within one second: 3 pass, the 4th is refused
            await bex.fetch_balance()
    assert bex.last_response_headers["X-Bapi-Limit-Status"] == "0"
    bsim.configure(rate_limit_per_s=1000)
    bsim.add_fault("rate_limit", endpoint="POST /v5/order/create", count=1)
    with pytest.raises(ccxt.RateLimitExceeded, match="10006"):
        await bex.create_order(BTC, "market", "buy", 0.01)
    await bex.create_order(BTC, "market", "buy", 0.01)


async def test_fault_error_codes_pass_through(bex: Any, bsim: PaperExchange) -> None:
    bsim.add_fault(
        "error", endpoint="/v5/position/list", code=110001, msg="order not exists", count=1
    )
    with pytest.raises(ccxt.OrderNotFound):
        await bex.fetch_positions()
    bsim.add_fault("error", endpoint="/v5/position/list", count=1)  # Binance -1000 -> 10016
    with pytest.raises(ccxt.ExchangeError, match="10016"):
        await bex.fetch_positions()


async def test_invalid_key_10003_and_signature_10004(bsim: PaperExchange) -> None:
    wrong_key = bybit_client(bsim, api_key="nope", secret=bsim.api_secret, enableRateLimit=False)
    wrong_secret = bybit_client(bsim, api_key=bsim.api_key, secret="0" * 64, enableRateLimit=False)
    try:
        await wrong_key.load_markets()  # public: no key needed
        with pytest.raises(ccxt.AuthenticationError, match="10003"):
            await wrong_key.fetch_balance()
        await wrong_secret.load_markets()
        with pytest.raises(ccxt.AuthenticationError, match="10004"):
            await wrong_secret.fetch_balance()
        with pytest.raises(ccxt.AuthenticationError, match="10004"):
            await wrong_secret.create_order(BTC, "market", "buy", 0.01)
    finally:
        await wrong_key.close()
        await wrong_secret.close()


async def test_stale_timestamp_10002(bsim: PaperExchange) -> None:
    bsim.auth_skew_ms = 60_000
    ex = bybit_client(bsim, api_key=bsim.api_key, secret=bsim.api_secret, enableRateLimit=False)
    try:
        await ex.load_markets()
        with pytest.raises(ccxt.InvalidNonce, match="10002"):
            await ex.fetch_balance()
    finally:
        await ex.close()


async def test_ret_code_as_string(bex: Any, bsim: PaperExchange) -> None:
    bsim.configure(ret_code_as_string=True)
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{bsim.rest_url}/v5/market/time") as r:
            assert json.loads(await r.text())["retCode"] == "0"
    order = await bex.create_order(BTC, "market", "buy", 0.01)
    assert order["id"]
    assert (await bex.fetch_positions())[0]["contracts"] == 0.01
    with pytest.raises(ccxt.InvalidOrder, match='"retCode":"110017"'):
        await bex.create_order(BTC, "market", "buy", 0.01, None, {"reduceOnly": True})


async def test_trap_created_status_after_create(bex: Any, bsim: PaperExchange) -> None:
    bsim.configure(created_status_ms=60_000)
    await bex.create_order(BTC, "market", "buy", 0.01)
    await bex.create_order(
        BTC, "market", "sell", 0.01, None, {**SL, "stopLossPrice": 90000, "clientOrderId": "c1"}
    )
    [early] = await bex.fetch_open_orders(BTC, params={"orderLinkId": "c1"})
    assert early["info"]["orderStatus"] == "Created"  # ccxt maps it to "open"
    bsim.advance(60_001)
    [later] = await bex.fetch_open_orders(BTC, params={"orderLinkId": "c1"})
    assert later["status"] == "open" and later["info"]["orderStatus"] == "Untriggered"


async def test_trap_order_not_visible_yet(bex: Any, bsim: PaperExchange) -> None:
    bsim.configure(order_invisible_ms=60_000)
    order = await bex.create_order(BTC, "market", "buy", 0.01, None, {"clientOrderId": "inv-1"})
    assert await bex.fetch_open_orders(BTC, params={"orderId": order["id"]}) == []
    assert await bex.fetch_canceled_and_closed_orders(BTC, params={"orderLinkId": "inv-1"}) == []
    bsim.advance(60_001)
    [found] = await bex.fetch_canceled_and_closed_orders(BTC, params={"orderLinkId": "inv-1"})
    assert found["id"] == order["id"] and found["status"] == "closed"


async def test_trap_stop_before_position_shows(bex: Any, bsim: PaperExchange) -> None:
    bsim.configure(position_lag_ms=60_000)
    await bex.create_order(BTC, "market", "buy", 0.01)
    assert await bex.fetch_positions() == []
    [flat] = await bex.fetch_positions([BTC])
    assert flat["contracts"] in (None, 0.0) and flat["info"]["side"] == ""
    with pytest.raises(ccxt.InvalidOrder, match="110017"):
        await bex.create_order(BTC, "market", "sell", 0.01, None, {**SL, "stopLossPrice": 90000})
    with pytest.raises(ccxt.BadRequest, match="zero position"):
        await bex.privatePostV5PositionTradingStop(
            {"category": "linear", "symbol": "BTCUSDT", "stopLoss": "90000", "tpslMode": "Full"}
        )
    bsim.advance(60_001)
    assert (await bex.fetch_positions())[0]["contracts"] == 0.01
    await bex.create_order(BTC, "market", "sell", 0.01, None, {**SL, "stopLossPrice": 90000})
    # the attached stop is untouched by the trap: it is live before the position exists
    await bex.create_order(
        ETH_SYM, "market", "buy", 0.1, None, {"stopLoss": {"triggerPrice": 3000}}
    )
    assert bsim.ground_truth()["unprotectedMs"]["ETHUSDT"] == 0


ETH_SYM = "ETH/USDT:USDT"


async def test_traps_are_off_by_default(bex: Any, bsim: PaperExchange) -> None:
    cfg = bsim.config_dict()
    assert cfg["created_status_ms"] == 0 and cfg["order_invisible_ms"] == 0
    assert cfg["position_lag_ms"] == 0 and cfg["ret_code_as_string"] is False
    order = await bex.create_order(BTC, "market", "buy", 0.01, None, {"clientOrderId": "calm"})
    [found] = await bex.fetch_canceled_and_closed_orders(BTC, params={"orderLinkId": "calm"})
    assert found["id"] == order["id"]
    await bex.create_order(BTC, "market", "sell", 0.01, None, {**SL, "stopLossPrice": 90000})


async def test_ws_auth_signature_helper_matches_ccxt(bsim: PaperExchange) -> None:
    expires = bsim.auth_now_ms() + 10_000
    sig = ws_signature(bsim.api_secret, expires)
    assert bsim.bybit_auth.check_ws([bsim.api_key, str(expires), sig], bsim.auth_now_ms()) is None
    assert bsim.bybit_auth.check_ws([bsim.api_key, str(expires), "0" * 64], bsim.auth_now_ms())


async def test_admin_configure_and_truth(bsim: PaperExchange) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{bsim.admin_url}/config", json={"position_lag_ms": 5}) as r:
            assert (await r.json())["position_lag_ms"] == 5
    truth = bsim.ground_truth()
    assert truth["venue"] == "bybit" and truth["bybit"]["config"]["position_lag_ms"] == 5
    bsim.open_position("BTCUSDT", "buy", Decimal("0.01"))
    assert bsim.ground_truth()["bybit"]["orders"][0]["kind"] == "order"


async def test_duplicate_link_id_after_an_ambiguous_timeout(bex: Any, bsim: PaperExchange) -> None:
    bsim.add_fault("drop_response", endpoint="POST /v5/order/create", count=1)
    with pytest.raises(ccxt.NetworkError):
        await bex.create_order(BTC, "market", "buy", 0.01, None, {"clientOrderId": "amb-1"})
    with pytest.raises(ccxt.InvalidOrder, match="110072"):
        await bex.create_order(BTC, "market", "buy", 0.01, None, {"clientOrderId": "amb-1"})
    [placed] = await bex.fetch_canceled_and_closed_orders(BTC, params={"orderLinkId": "amb-1"})
    assert placed["status"] == "closed" and placed["filled"] == 0.01
    assert (await bex.fetch_positions())[0]["contracts"] == 0.01  # filled once, not twice


async def test_a_fault_can_target_stops_or_plain_orders_on_one_endpoint(
    bex: Any, bsim: PaperExchange
) -> None:
    # Entries and stops share POST /v5/order/create: `param` tells them apart.
    bsim.set_price("BTCUSDT", Decimal(95000))
    on_stops = bsim.add_fault(
        "error", endpoint="POST /v5/order/create", param="triggerPrice", code=10016
    )
    entry = await bex.create_order(BTC, "market", "buy", 0.01)  # not a stop: untouched
    assert entry["id"]
    with pytest.raises(ccxt.ExchangeError, match="10016"):
        await bex.create_order(BTC, "market", "sell", 0.01, None, {**SL, "stopLossPrice": 90000})
    bsim.faults.remove(on_stops.id)
    bsim.add_fault("error", endpoint="POST /v5/order/create", param="!triggerPrice", code=10016)
    stop = await bex.create_order(BTC, "market", "sell", 0.01, None, {**SL, "stopLossPrice": 90000})
    assert stop["id"]  # a stop: untouched
    with pytest.raises(ccxt.ExchangeError, match="10016"):
        await bex.create_order(BTC, "market", "buy", 0.01)
