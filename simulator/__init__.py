"""posguard paper exchange: Binance USD-M and Bybit v5 linear simulators for unmodified ccxt.

Public API:
  * :class:`PaperExchange` - REST + WebSocket + admin servers around the engine
  * :func:`binanceusdm_client` - a ccxt client pointed at a PaperExchange
  * :func:`bybit_client` - a ccxt ``bybit`` client for ``PaperExchange(venue="bybit")``
  * :class:`Engine`, :class:`EngineConfig` - the pure matching engine
  * :class:`ManualClock`, :class:`RealClock` - clocks
  * :class:`SyntheticPath`, :class:`CsvReplay` - price sources
"""

from simulator.clock import ManualClock, RealClock
from simulator.engine import Engine, EngineConfig
from simulator.errors import ApiError
from simulator.markets import DEFAULT_MARKETS, Market, build_markets
from simulator.prices import CsvReplay, PathParams, SyntheticPath

__all__ = [
    "DEFAULT_MARKETS",
    "ApiError",
    "CsvReplay",
    "Engine",
    "EngineConfig",
    "ManualClock",
    "Market",
    "PaperExchange",
    "PathParams",
    "RealClock",
    "SyntheticPath",
    "binanceusdm_client",
    "build_markets",
    "bybit_client",
]


def __getattr__(name: str) -> object:
    # Lazy: the server and client pull in aiohttp/ccxt, the engine must not.
    if name == "PaperExchange":
        from simulator.server import PaperExchange

        return PaperExchange
    if name == "binanceusdm_client":
        from simulator.client import binanceusdm_client

        return binanceusdm_client
    if name == "bybit_client":
        from simulator.client import bybit_client

        return bybit_client
    raise AttributeError(name)
