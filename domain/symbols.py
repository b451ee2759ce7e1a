"""Symbol names: ccxt unified, exchange market ids and posguard's canonical form.

- canonical (ours, used in workflow ids, events and the store): ``BTCUSDT``,
  upper case base + quote, linear perpetuals only;
- ccxt unified: ``BTC/USDT:USDT`` (base/quote:settle; settle == quote for linear);
- exchange market id: ``BTCUSDT`` on Binance USD-M and on Bybit for USDT
  contracts; Bybit's older USDC perpetuals are ``BTCPERP``.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field

from domain.types import ExchangeId

QUOTES: tuple[str, ...] = ("USDT", "USDC")
"""Quote (and settle) currencies of the linear perpetuals posguard trades."""

_ASSET = r"[A-Z0-9]+"
_UNIFIED = re.compile(rf"^(?P<base>{_ASSET})/(?P<quote>{_ASSET})(?::(?P<settle>{_ASSET}))?$")
_BYBIT_USDC_PERP = re.compile(rf"^(?P<base>{_ASSET})PERP$")


class InvalidSymbol(ValueError):
    """A symbol that is not a linear perpetual posguard can name."""


class Instrument(BaseModel):
    """A linear perpetual: base asset, quote asset (which is also the settle asset)."""

    model_config = ConfigDict(frozen=True)

    base: str = Field(pattern=r"^[A-Z0-9]+$")
    quote: str = Field(pattern=r"^[A-Z0-9]+$")

    @property
    def canonical(self) -> str:
        """Our name: ``BTCUSDT``."""
        return f"{self.base}{self.quote}"

    @property
    def unified(self) -> str:
        """ccxt's name: ``BTC/USDT:USDT``."""
        return f"{self.base}/{self.quote}:{self.quote}"


def parse_canonical(symbol: str) -> Instrument:
    """Split ``BTCUSDT`` (any case) at its known quote suffix."""
    text = symbol.strip().upper()
    for quote in QUOTES:
        base = text.removesuffix(quote)
        if base != text and re.fullmatch(_ASSET, base):
            return Instrument(base=base, quote=quote)
    raise InvalidSymbol(f"{symbol!r} does not end in a supported quote {QUOTES}")


def parse_unified(symbol: str) -> Instrument:
    """Parse ccxt ``BTC/USDT:USDT``; a spot-style ``BTC/USDT`` is read as its perpetual.

    Raises InvalidSymbol for inverse (settle != quote) or dated contracts.
    """
    match = _UNIFIED.fullmatch(symbol.strip().upper())
    if match is None:
        raise InvalidSymbol(f"{symbol!r} is not a ccxt linear perpetual symbol")
    base, quote, settle = match["base"], match["quote"], match["settle"]
    if settle is not None and settle != quote:
        raise InvalidSymbol(f"{symbol!r} is not linear (settles in {settle})")
    if quote not in QUOTES:
        raise InvalidSymbol(f"{symbol!r} has unsupported quote {quote}")
    return Instrument(base=base, quote=quote)


def canonical(symbol: str) -> str:
    """Canonical name of `symbol` given in canonical or ccxt unified form."""
    if "/" in symbol:
        return parse_unified(symbol).canonical
    return parse_canonical(symbol).canonical


def unified_from_canonical(symbol: str) -> str:
    """``BTCUSDT`` → ``BTC/USDT:USDT``."""
    return parse_canonical(symbol).unified


def canonical_from_unified(symbol: str) -> str:
    """``BTC/USDT:USDT`` → ``BTCUSDT``."""
    return parse_unified(symbol).canonical


def exchange_symbol(exchange: ExchangeId, symbol: str) -> str:
    """The exchange's market id for canonical `symbol`."""
    instrument = parse_canonical(symbol)
    if exchange is ExchangeId.BYBIT and instrument.quote == "USDC":
        return f"{instrument.base}PERP"
    return instrument.canonical


def canonical_from_exchange(exchange: ExchangeId, market_id: str) -> str:
    """Canonical name of an exchange market id (inverse of `exchange_symbol`)."""
    text = market_id.strip().upper()
    if exchange is ExchangeId.BYBIT:
        perp = _BYBIT_USDC_PERP.fullmatch(text)
        if perp is not None:
            return Instrument(base=perp["base"], quote="USDC").canonical
    return parse_canonical(text).canonical
