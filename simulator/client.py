"""Factories for ccxt ``binanceusdm`` and ``bybit`` clients pointed at a PaperExchange.

The returned object is the real, unmodified ccxt client class except for one
override: Binance's error table is chosen by URL (``get_exceptions_by_url``
only recognises ``https://fapi.binance.com/`` and friends), so against
``http://127.0.0.1`` codes such as -4116/-2021/-2022 would degrade to a plain
ExchangeError. The subclasses below map simulator URLs to the ``linear``
table, exactly as a real fapi host would.
"""

from __future__ import annotations

from typing import Any, Protocol

import ccxt.async_support as ccxt_async
import ccxt.pro as ccxt_pro

_HOSTS = ("fapi", "api", "dapi", "papi", "eapi")
_TOP_LEVEL = {"timeout", "enableRateLimit", "rateLimit", "verbose", "userAgent", "headers"}


class _SimLike(Protocol):
    rest_url: str
    ws_url: str


def _linear_exceptions(ex: Any, url: str | None, exact_or_broad: str) -> dict[str, Any] | None:
    sim_urls = getattr(ex, "_sim_urls", ())
    if url is not None and any(url.startswith(u) for u in sim_urls):
        linear = ex.safe_dict(ex.exceptions, "linear", {})
        return ex.safe_dict(linear, exact_or_broad, {})  # type: ignore[no-any-return]
    return None


class SimBinanceUsdm(ccxt_async.binanceusdm):  # type: ignore[misc]
    """ccxt async binanceusdm that treats the simulator URL as a fapi host."""

    _sim_urls: tuple[str, ...] = ()

    def get_exceptions_by_url(self, url: Any, exactOrBroad: str) -> Any:
        mapped = _linear_exceptions(self, url, exactOrBroad)
        return mapped if mapped is not None else super().get_exceptions_by_url(url, exactOrBroad)


class SimBinanceUsdmPro(ccxt_pro.binanceusdm):  # type: ignore[misc]
    """ccxt.pro binanceusdm that treats the simulator URL as a fapi host."""

    _sim_urls: tuple[str, ...] = ()

    def get_exceptions_by_url(self, url: Any, exactOrBroad: str) -> Any:
        mapped = _linear_exceptions(self, url, exactOrBroad)
        return mapped if mapped is not None else super().get_exceptions_by_url(url, exactOrBroad)


def _urls(sim_or_urls: _SimLike | dict[str, str] | str) -> tuple[str, str]:
    if isinstance(sim_or_urls, str):
        rest = sim_or_urls.rstrip("/")
        return rest, rest.replace("http://", "ws://").replace("https://", "wss://")
    if isinstance(sim_or_urls, dict):
        rest = sim_or_urls["rest"].rstrip("/")
        ws = sim_or_urls.get("ws") or rest.replace("http://", "ws://")
        return rest, ws.rstrip("/")
    return sim_or_urls.rest_url.rstrip("/"), sim_or_urls.ws_url.rstrip("/")


def binanceusdm_client(
    sim_or_urls: _SimLike | dict[str, str] | str,
    *,
    api_key: str,
    secret: str,
    pro: bool = False,
    **options: Any,
) -> Any:
    """A ccxt ``binanceusdm`` (``pro=True``: ccxt.pro) client talking to the simulator.

    ``sim_or_urls`` is a PaperExchange, ``{"rest": url, "ws": url}`` or a REST
    base URL. Every ``urls['api']`` entry is rewritten to the simulator and,
    for pro, ``urls['api']['ws']['linear']`` becomes ``<ws>/ws`` (ccxt.pro then
    opens ``<ws>/market/ws/<n>``, ``<ws>/public/ws/<n>``, ``<ws>/private/ws``).
    ``options`` are merged into ccxt ``options``; the keys ``timeout``,
    ``enableRateLimit``, ``rateLimit``, ``verbose``, ``userAgent`` and
    ``headers`` are passed as top-level ccxt config instead. The caller owns the
    client and must ``await client.close()``.
    """
    rest, ws = _urls(sim_or_urls)
    top = {k: options.pop(k) for k in list(options) if k in _TOP_LEVEL}
    opts: dict[str, Any] = {
        "fetchCurrencies": False,
        "fetchMargins": False,
        "warnOnFetchOpenOrdersWithoutSymbol": False,
    }
    opts.update(options)
    config: dict[str, Any] = {"apiKey": api_key, "secret": secret, "options": opts}
    config.update(top)
    cls = SimBinanceUsdmPro if pro else SimBinanceUsdm
    ex = cls(config)
    ex._sim_urls = (rest,)
    api = ex.urls["api"]
    for key, value in list(api.items()):
        if isinstance(value, str):
            for host in _HOSTS:
                value = value.replace(f"https://{host}.binance.com", rest)
            api[key] = value
    if pro:
        ws_urls = dict(api.get("ws", {}))
        ws_urls["linear"] = f"{ws}/ws"
        ws_api = dict(ws_urls.get("ws-api", {}))
        ws_api["linear"] = f"{ws}/ws-fapi/v1"
        ws_urls["ws-api"] = ws_api
        api["ws"] = ws_urls
    return ex


def _bybit_ws_urls(ws: str) -> dict[str, Any]:
    public = f"{ws}/v5/public/linear"
    private = f"{ws}/v5/private"
    return {
        "public": {"spot": public, "inverse": public, "option": public, "linear": public},
        "private": {
            "spot": {"unified": private, "nonUnified": private},
            "contract": private,
            "usdc": private,
            "trade": f"{ws}/v5/trade",
        },
    }


def bybit_client(
    sim_or_urls: _SimLike | dict[str, str] | str,
    *,
    api_key: str,
    secret: str,
    pro: bool = False,
    **options: Any,
) -> Any:
    """A ccxt ``bybit`` (``pro=True``: ccxt.pro) client talking to a Bybit-venue simulator.

    Unmodified ccxt classes. Every ``urls['api']`` REST entry (and, for pro,
    every WS entry) is rewritten to the simulator, so nothing leaves
    127.0.0.1: markets are restricted to linear, ``fetchCurrencies`` is off
    (no ``/v5/asset/coin/query-info``) and the account is declared unified
    (``enableUnifiedAccount=True, enableUnifiedMargin=False``, so no
    ``/v5/user/query-api`` / ``/v5/account/info`` probes). ``options`` are
    merged into ccxt ``options``; ``timeout``, ``enableRateLimit``,
    ``rateLimit``, ``verbose``, ``userAgent`` and ``headers`` are top-level
    config. The caller must ``await client.close()``.
    """
    rest, ws = _urls(sim_or_urls)
    top = {k: options.pop(k) for k in list(options) if k in _TOP_LEVEL}
    opts: dict[str, Any] = {
        "fetchMarkets": {"types": ["linear"]},
        "enableUnifiedAccount": True,
        "enableUnifiedMargin": False,
        "defaultType": "swap",
        "defaultSubType": "linear",
        "defaultSettle": "USDT",
    }
    opts.update(options)
    config: dict[str, Any] = {"apiKey": api_key, "secret": secret, "options": opts}
    config.update(top)
    cls = ccxt_pro.bybit if pro else ccxt_async.bybit
    ex = cls(config)
    ex.has["fetchCurrencies"] = False
    api = ex.urls["api"]
    for key, value in list(api.items()):
        if isinstance(value, str):
            api[key] = rest
    if pro or "ws" in api:
        api["ws"] = _bybit_ws_urls(ws)
    for alt in ("test", "demotrading"):  # sandbox/demo switches must not leave 127.0.0.1 either
        urls = ex.urls.get(alt)
        if isinstance(urls, dict):
            for key, value in list(urls.items()):
                if isinstance(value, str):
                    urls[key] = rest
            if "ws" in urls:
                urls["ws"] = _bybit_ws_urls(ws)
    return ex


VENUE_EXCHANGES = {"binance": "binanceusdm", "bybit": "bybit"}
"""Each paper venue (`PaperExchange(venue=...)`) and the ccxt exchange whose API it serves."""


def venue_of(exchange_id: str) -> str:
    """The paper venue serving ccxt exchange `exchange_id`; ValueError if none does."""
    for venue, exchange in VENUE_EXCHANGES.items():
        if exchange == exchange_id:
            return venue
    raise ValueError(
        f"the paper exchange serves {sorted(VENUE_EXCHANGES.values())}, not {exchange_id!r}"
    )


def venue_client(
    venue: str,
    sim_or_urls: _SimLike | dict[str, str] | str,
    *,
    api_key: str,
    secret: str,
    pro: bool = False,
    **options: Any,
) -> Any:
    """`binanceusdm_client` or `bybit_client`, whichever serves `venue`."""
    make = {"binance": binanceusdm_client, "bybit": bybit_client}[venue]
    return make(sim_or_urls, api_key=api_key, secret=secret, pro=pro, **options)
