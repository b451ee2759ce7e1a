"""Building ccxt clients for configured accounts (keys stay in this process)."""

from __future__ import annotations

from typing import Any

from activities.exchange.gateway import ExchangeGateway
from workers.settings import AccountSettings


def make_exchange(account: AccountSettings) -> Any:
    """A ccxt.async_support client for `account`: the paper exchange or the real one."""
    key = account.api_key.get_secret_value()
    secret = account.secret.get_secret_value()
    if account.paper_url is not None:
        from simulator.client import binanceusdm_client

        urls = {"rest": account.paper_url}
        if account.paper_ws_url:
            urls["ws"] = account.paper_ws_url
        return binanceusdm_client(urls, api_key=key, secret=secret)
    import ccxt.async_support as ccxt_async

    options: dict[str, Any] = {}
    if account.exchange == "bybit":
        options = {"fetchMarkets": {"types": ["linear"]}}
    client = getattr(ccxt_async, account.exchange)(
        {"apiKey": key, "secret": secret, "enableRateLimit": True, "options": options}
    )
    if account.testnet:
        client.enable_demo_trading(True)
    return client


def make_gateways(accounts: list[AccountSettings]) -> dict[str, ExchangeGateway]:
    """One gateway per configured account, keyed by account name."""
    return {a.name: ExchangeGateway(make_exchange(a), account=a.name) for a in accounts}
