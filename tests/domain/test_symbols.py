"""Symbol normalisation between ccxt, exchange ids and our canonical form."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.symbols import (
    QUOTES,
    InvalidSymbol,
    canonical,
    canonical_from_exchange,
    canonical_from_unified,
    exchange_symbol,
    parse_canonical,
    unified_from_canonical,
)
from domain.types import ExchangeId


@pytest.mark.parametrize(
    ("unified", "canon"),
    [
        ("BTC/USDT:USDT", "BTCUSDT"),
        ("1000PEPE/USDT:USDT", "1000PEPEUSDT"),
        ("SHIB1000/USDT:USDT", "SHIB1000USDT"),
        ("ETH/USDC:USDC", "ETHUSDC"),
        ("USDC/USDT:USDT", "USDCUSDT"),
    ],
)
def test_unified_and_canonical(unified: str, canon: str) -> None:
    assert canonical_from_unified(unified) == canon
    assert unified_from_canonical(canon) == unified
    assert canonical(unified) == canon
    assert canonical(canon) == canon


@pytest.mark.parametrize(
    ("text", "canon"),
    [
        ("btcusdt", "BTCUSDT"),
        (" BTCUSDT ", "BTCUSDT"),
        ("btc/usdt:usdt", "BTCUSDT"),
        ("BTC/USDT", "BTCUSDT"),
    ],
)
def test_lenient_inputs(text: str, canon: str) -> None:
    assert canonical(text) == canon


@pytest.mark.parametrize(
    "bad",
    [
        "BTC/USD:BTC",  # inverse
        "BTC/USDT:USDT-250328",  # dated future
        "BTC/EUR:EUR",  # unsupported quote
        "BTCEUR",
        "USDT",
        "",
        "BTC-USDT",
    ],
)
def test_invalid_symbols(bad: str) -> None:
    with pytest.raises(InvalidSymbol):
        canonical(bad)


@pytest.mark.parametrize("exchange", list(ExchangeId))
@pytest.mark.parametrize("canon", ["BTCUSDT", "1000PEPEUSDT", "ETHUSDC"])
def test_exchange_ids_round_trip(exchange: ExchangeId, canon: str) -> None:
    market_id = exchange_symbol(exchange, canon)
    assert canonical_from_exchange(exchange, market_id) == canon


@pytest.mark.parametrize(
    ("exchange", "canon", "market_id"),
    [
        (ExchangeId.BINANCE_USDM, "BTCUSDT", "BTCUSDT"),
        (ExchangeId.BINANCE_USDM, "BTCUSDC", "BTCUSDC"),
        (ExchangeId.BYBIT, "BTCUSDT", "BTCUSDT"),
        (ExchangeId.BYBIT, "BTCUSDC", "BTCPERP"),
    ],
)
def test_exchange_ids(exchange: ExchangeId, canon: str, market_id: str) -> None:
    assert exchange_symbol(exchange, canon) == market_id


def test_binance_has_no_perp_suffix() -> None:
    with pytest.raises(InvalidSymbol):
        canonical_from_exchange(ExchangeId.BINANCE_USDM, "BTCPERP")


assets = st.from_regex(r"[A-Z0-9]{1,10}", fullmatch=True)


@given(base=assets, quote=st.sampled_from(QUOTES))
def test_canonical_unified_round_trip(base: str, quote: str) -> None:
    unified = f"{base}/{quote}:{quote}"
    canon = canonical_from_unified(unified)
    instrument = parse_canonical(canon)
    assert instrument.canonical == canon
    # the quote is a known suffix, so splitting the canonical name is unambiguous
    assert unified_from_canonical(canon) == unified
