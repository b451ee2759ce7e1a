"""Engine pieces the Bybit venue relies on: amending a stop in place, trigger books, maxStops."""

from __future__ import annotations

from decimal import Decimal

import pytest

from simulator.clock import ManualClock
from simulator.engine import Engine
from simulator.errors import ApiError
from simulator.markets import build_markets
from simulator.triggers import TriggerBook

D = Decimal


def _engine() -> tuple[Engine, ManualClock]:
    clock = ManualClock()
    return Engine(build_markets(), clock), clock


def test_trigger_book_move_kills_the_old_level() -> None:
    book = TriggerBook()
    book.add(1, D("100"), False)
    book.move(1, D("90"), False)
    assert book.pop_crossed(D("95")) == []  # the old level 100 no longer fires
    assert len(book) == 1
    assert book.pop_crossed(D("90")) == [1]
    assert len(book) == 0


def test_trigger_book_remove_then_add_again() -> None:
    book = TriggerBook()
    book.add(7, D("100"), True)
    book.remove(7)
    book.add(7, D("110"), True)
    assert book.pop_crossed(D("105")) == []
    assert book.pop_crossed(D("110")) == [7]


def test_amend_algo_moves_in_place_without_a_gap() -> None:
    e, clock = _engine()
    e.place_order("BTCUSDT", "BUY", "MARKET", D("0.01"))
    stop = e.place_algo(
        "BTCUSDT",
        "SELL",
        "STOP_MARKET",
        D("0.01"),
        D("90000"),
        reduce_only=True,
        working_type="MARK_PRICE",
    )
    clock.advance(5)
    moved = e.amend_algo(stop.algo_id, trigger_price=D("93000"))
    assert moved is stop and stop.trigger_price == D("93000") and stop.is_open
    e.set_price("BTCUSDT", D("93500"))
    assert stop.is_open  # not yet
    e.set_price("BTCUSDT", D("92999.9"))
    assert stop.algo_status == "FINISHED"
    assert e.positions["BTCUSDT"].amt == 0
    [ep] = e.episodes
    assert ep.unprotected_ms == 0 and ep.max_stops == 1


def test_amend_algo_switches_price_kind_and_quantity() -> None:
    e, _ = _engine()
    e.place_order("BTCUSDT", "BUY", "MARKET", D("0.02"))
    stop = e.place_algo(
        "BTCUSDT",
        "SELL",
        "STOP_MARKET",
        D("0.01"),
        D("90000"),
        reduce_only=True,
        working_type="MARK_PRICE",
    )
    e.amend_algo(stop.algo_id, working_type="CONTRACT_PRICE", quantity=D("0.02"))
    assert stop.working_type == "CONTRACT_PRICE" and stop.quantity == D("0.02")
    e.set_price("BTCUSDT", D("89000"))
    assert e.positions["BTCUSDT"].amt == 0


def test_amend_algo_rejections() -> None:
    e, _ = _engine()
    e.place_order("BTCUSDT", "BUY", "MARKET", D("0.01"))
    stop = e.place_algo("BTCUSDT", "SELL", "STOP_MARKET", D("0.01"), D("90000"), reduce_only=True)
    with pytest.raises(ApiError) as exc:
        e.amend_algo(stop.algo_id, trigger_price=D("96000"))  # would fire now
    assert exc.value.code == -2021
    assert stop.trigger_price == D("90000")
    with pytest.raises(ApiError) as exc:
        e.amend_algo(stop.algo_id, trigger_price=D("90000.05"))
    assert exc.value.code == -4014
    e.cancel_algo(algo_id=stop.algo_id)
    with pytest.raises(ApiError) as exc:
        e.amend_algo(stop.algo_id, trigger_price=D("91000"))
    assert exc.value.code == -2011


def test_max_stops_counts_overlap() -> None:
    e, _ = _engine()
    e.place_order("BTCUSDT", "BUY", "MARKET", D("0.01"))
    a = e.place_algo("BTCUSDT", "SELL", "STOP_MARKET", D("0.01"), D("90000"), reduce_only=True)
    e.place_algo("BTCUSDT", "SELL", "STOP_MARKET", D("0.01"), D("91000"), reduce_only=True)
    e.cancel_algo(algo_id=a.algo_id)
    assert e.episodes[0].max_stops == 2
