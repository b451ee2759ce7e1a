"""Client order ids: deterministic, unique, exchange-safe, parseable."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.client_ids import (
    MAX_LENGTH,
    MAX_SEQ,
    OrderStep,
    belongs_to,
    belongs_to_workflow,
    client_order_id,
    kind_of_client_id,
    parse_client_id,
)
from domain.orders import OrderKind

BINANCE = re.compile(r"^[\.A-Z\:/a-z0-9_-]{1,36}$")
BYBIT = re.compile(r"^[A-Za-z0-9_-]{1,36}$")
WF = "pos:acct-1:binanceusdm:BTCUSDT"
CHAIN = "0190a3c2-6b1e-7c7e-9d42-1f1a2b3c4d5e"

workflow_ids = st.text(min_size=1, max_size=120)
chains = st.text(min_size=1, max_size=60)
steps = st.sampled_from(list(OrderStep))
seqs = st.integers(min_value=0, max_value=MAX_SEQ)


@given(wf=workflow_ids, chain=chains, step=steps, seq=seqs)
def test_exchange_safe_and_round_trips(wf: str, chain: str, step: OrderStep, seq: int) -> None:
    cid = client_order_id(wf, chain, step, seq)
    assert len(cid) <= MAX_LENGTH
    assert BINANCE.fullmatch(cid)
    assert BYBIT.fullmatch(cid)
    parsed = parse_client_id(cid)
    assert parsed is not None
    assert (parsed.step, parsed.seq) == (step, seq)
    assert belongs_to(cid, wf, chain)
    assert belongs_to_workflow(cid, wf)


@given(wf=workflow_ids, chain=chains, step=steps, seq=seqs)
def test_deterministic(wf: str, chain: str, step: OrderStep, seq: int) -> None:
    assert client_order_id(wf, chain, step, seq) == client_order_id(wf, chain, step, seq)


def test_known_value_is_stable_across_releases() -> None:
    # a change here orphans every live order: the reconciler would call them foreign
    assert client_order_id(WF, CHAIN, OrderStep.STOP, 1295) == "pgdwoxcxdpasxnn7-sl-zz"
    assert client_order_id("w", "c", OrderStep.ENTRY, 35) == "pgb7hfpwxskfmten-entry-z"


@given(
    keys=st.lists(st.tuples(steps, st.integers(0, 10_000)), min_size=2, max_size=50, unique=True)
)
def test_unique_within_a_position(keys: list[tuple[OrderStep, int]]) -> None:
    cids = {client_order_id(WF, CHAIN, step, seq) for step, seq in keys}
    assert len(cids) == len(keys)


@given(
    positions=st.lists(st.tuples(workflow_ids, chains), min_size=2, max_size=20, unique=True),
    step=steps,
    seq=st.integers(0, 100),
)
def test_unique_across_positions(
    positions: list[tuple[str, str]], step: OrderStep, seq: int
) -> None:
    cids = {client_order_id(wf, chain, step, seq) for wf, chain in positions}
    assert len(cids) == len(positions)


def test_next_position_of_the_same_workflow_is_told_apart() -> None:
    old = client_order_id(WF, "run-of-first-position", OrderStep.STOP, 3)
    assert belongs_to_workflow(old, WF)
    assert not belongs_to(old, WF, "run-of-second-position")
    assert not belongs_to_workflow(old, "pos:acct-1:binanceusdm:ETHUSDT")


@pytest.mark.parametrize(
    "cid",
    [
        None,
        "",
        "x-cvBPrNm9abcdefghijklmnopqrstuv",  # ccxt's auto-generated Binance id
        "web_abcdef",
        "pgb7hfpwxskfmten-entry",  # no seq
        "pgb7hfpwxskfmten-entry-01",  # leading zero: not canonical
        "pgb7hfpwxskfmten-buy-1",  # unknown step
        "PGB7HFPWXSKFMTEN-entry-1",  # upper case
        "pgb7hfpwxskfmte-entry-1",  # short tag
        "pgb7hfpwxskfmten-entry-1x2345678",  # seq too long
        "pgb7hfpwxskfmt1n-entry-1",  # '1' is not base32
    ],
)
def test_foreign_ids_do_not_parse(cid: str | None) -> None:
    assert parse_client_id(cid) is None
    assert not belongs_to_workflow(cid, "w")


@pytest.mark.parametrize("seq", [-1, MAX_SEQ + 1])
def test_seq_out_of_range(seq: int) -> None:
    with pytest.raises(ValueError, match="seq"):
        client_order_id(WF, CHAIN, OrderStep.STOP, seq)


@pytest.mark.parametrize(("wf", "chain"), [("", CHAIN), (WF, "")])
def test_empty_inputs_refused(wf: str, chain: str) -> None:
    with pytest.raises(ValueError):
        client_order_id(wf, chain, OrderStep.STOP, 0)


def test_separator_prevents_concatenation_collisions() -> None:
    a = client_order_id("ab", "c", OrderStep.STOP, 0)
    b = client_order_id("a", "bc", OrderStep.STOP, 0)
    assert a != b


@pytest.mark.parametrize(
    ("step", "kind"),
    [
        (OrderStep.ENTRY, OrderKind.ENTRY),
        (OrderStep.STOP, OrderKind.STOP),
        (OrderStep.MOVE, OrderKind.STOP),
        (OrderStep.CLOSE, OrderKind.CLOSE),
        (OrderStep.EMERGENCY_STOP, OrderKind.EMERGENCY_STOP),
        (OrderStep.TAKE_PROFIT, OrderKind.TAKE_PROFIT),
    ],
)
def test_an_order_found_executed_is_booked_as_what_its_id_names(
    step: OrderStep, kind: OrderKind
) -> None:
    cid = client_order_id(WF, CHAIN, step, 7)
    assert kind_of_client_id(cid) is kind


def test_an_id_not_ours_counts_as_a_stop() -> None:
    assert kind_of_client_id("web_12345") is OrderKind.STOP
    assert kind_of_client_id(None) is OrderKind.STOP
