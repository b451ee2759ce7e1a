"""Building ccxt clients for configured accounts (keys stay in this process)."""

from __future__ import annotations

import logging
from typing import Any

from activities.exchange.gateway import ExchangeGateway
from workers.settings import EMBEDDED_PAPER, AccountSettings

log = logging.getLogger("posguard.exchanges")


def make_exchange(account: AccountSettings) -> Any:
    """A ccxt.async_support client for `account`: the paper exchange or the real one."""
    rate_limit_ms = max(1, int(1000 / account.max_requests_per_second))
    key = account.api_key.get_secret_value()
    secret = account.secret.get_secret_value()
    if account.paper_url == EMBEDDED_PAPER:
        raise ValueError(
            f"account {account.name!r} uses the embedded paper exchange, which only runs "
            "inside `posguard dev`; set its paper_url to a running `posguard sim`"
        )
    if account.paper_url is not None:
        return _paper_client(account, rateLimit=rate_limit_ms, recvWindow=account.recv_window_ms)
    import ccxt.async_support as ccxt_async

    options: dict[str, Any] = {"recvWindow": account.recv_window_ms}
    if account.exchange == "bybit":
        options["fetchMarkets"] = {"types": ["linear"]}
    client = getattr(ccxt_async, account.exchange)(
        {
            "apiKey": key,
            "secret": secret,
            "enableRateLimit": True,
            "rateLimit": rate_limit_ms,
            "options": options,
        }
    )
    if account.testnet:
        client.enable_demo_trading(True)
    return client


def make_market_data_client(account: AccountSettings) -> Any:
    """A ccxt.pro client for `account`'s mark prices and user-data stream: the paper
    exchange's when `account.paper_url` is set, else the real exchange's.

    The price gate receives it (`run_gate(market_data_client=...)`): `signals_ingest`
    does not import the simulator, the processes started from here hand it in.
    """
    if account.paper_url is None:
        from signals_ingest.gate_process import exchange_market_data_client

        return exchange_market_data_client(account)
    return _paper_client(account, pro=True)


def _paper_client(account: AccountSettings, *, pro: bool = False, **options: Any) -> Any:
    """A ccxt client of the account's exchange (`binanceusdm` or `bybit`) pointed at the
    paper exchange serving that venue (`posguard sim --venue ...`)."""
    from simulator.client import venue_client, venue_of

    if account.paper_url is None:
        raise ValueError(f"account {account.name!r} has no paper_url")
    try:
        venue = venue_of(account.exchange)
    except ValueError as exc:
        raise ValueError(f"account {account.name!r}: {exc}") from None
    urls = {"rest": account.paper_url}
    if account.paper_ws_url:
        urls["ws"] = account.paper_ws_url
    return venue_client(
        venue,
        urls,
        api_key=account.api_key.get_secret_value(),
        secret=account.secret.get_secret_value(),
        pro=pro,
        **options,
    )


def make_gateways(accounts: list[AccountSettings]) -> dict[str, ExchangeGateway]:
    """One gateway per usable account, keyed by account name.

    An account on the embedded paper exchange is skipped (with a warning) outside
    `posguard dev`, which replaces "embedded" by the running exchange's URL.
    """
    gateways: dict[str, ExchangeGateway] = {}
    for account in accounts:
        if account.paper_url == EMBEDDED_PAPER:
            log.warning("account %r needs `posguard dev` (embedded paper exchange)", account.name)
            continue
        # A second client is the priority lane for protective orders: a stop or a
        # close never waits in ccxt's limiter behind entries and reads.
        gateways[account.name] = ExchangeGateway(
            make_exchange(account),
            account=account.name,
            protective=make_exchange(account),
            stop_with_entry=account.stop_with_entry,
            hedge_mode=account.hedge_mode,
        )
    return gateways
