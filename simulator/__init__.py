"""posguard paper exchange: a Binance USD-M futures simulator for unmodified ccxt.

Public API:
  * :class:`PaperExchange` - REST + WebSocket + admin servers around the engine
  * :func:`binanceusdm_client` - a ccxt client pointed at a PaperExchange
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
]


def __getattr__(name: str) -> object:
    # Lazy: the server and client pull in aiohttp/ccxt, the engine must not.
    if name == "PaperExchange":
        from simulator.server import PaperExchange

        return PaperExchange
    if name == "binanceusdm_client":
        from simulator.client import binanceusdm_client

        return binanceusdm_client
    raise AttributeError(name)
