"""The account reconciler's decisions: what a trader would check after a night away.

Two halves:

- properties over random but coherent account states (a few symbols, each with or
  without a position on the exchange, a running workflow in any state, store rows,
  and open orders of every origin: the workflow's own, an earlier position's,
  a gone workflow's, another account's, placed by hand), on one-way and on
  hedge-mode accounts (there each symbol has a long and a short slot, each with
  all of the above, and orders of either side or of a side the exchange did not say);
- one example per finding a trader would recognise, for a long and for a short,
  and the same in hedge mode.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from domain.client_ids import (
    OrderStep,
    belongs_to,
    belongs_to_workflow,
    client_order_id,
    parse_client_id,
)
from domain.orders import OrderStatus, OrderView
from domain.position import PositionState, book_key, position_workflow_id
from domain.reconcile import (
    HOLDING_STATES,
    OPENING_STATES,
    AccountState,
    Action,
    Finding,
    FindingKind,
    FindingMemo,
    ForeignOrderPolicy,
    ListedWorkflow,
    Owner,
    ReconcilePolicy,
    StoredPosition,
    judged_on_flat,
    owner_slot,
    owners_on_record,
    reconcile,
    remember,
    slots_to_read_again,
    to_confirm,
    to_read_again,
    with_exchange,
    with_owners,
)
from domain.requests import ExchangePosition
from domain.types import ExchangeId, OrderSide, Side

S = PositionState
K = FindingKind
A = Action

ACCOUNT = "main"
OTHER_ACCOUNT = "other"
EXCHANGE = ExchangeId.BINANCE_USDM
BTC = "BTCUSDT"
ETH = "ETHUSDT"
SOL = "SOLUSDT"
SYMBOLS = (BTC, ETH, SOL)
WF = position_workflow_id(ACCOUNT, EXCHANGE, BTC)
NOW_CHAIN = "run-now"
OLD_CHAIN = "run-old"
CHAINS = ("run-1", "run-2", "run-3")
STOP_STEPS = (OrderStep.STOP, OrderStep.EMERGENCY_STOP, OrderStep.MOVE)
# Client ids of orders placed by hand or by another bot: none of them is posguard's.
FOREIGN_IDS = (None, "web_8fj3k2q", "ios_a1b2c3", "manual-1", "pgnotreally-sl-1", "x-Ab12")
ENTRY = D(50000)
T0 = datetime(2025, 1, 1, tzinfo=UTC)

PROPERTY_SETTINGS = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

assert all(parse_client_id(cid) is None for cid in FOREIGN_IDS)


# --- builders -------------------------------------------------------------------------


def cid(step: OrderStep, seq: int = 1, chain: str = NOW_CHAIN, wf: str = WF) -> str:
    return client_order_id(wf, chain, step, seq)


def other_side(side: Side) -> Side:
    return Side.SHORT if side is Side.LONG else Side.LONG


def position(side: Side, qty: D = D(1), symbol: str = BTC) -> ExchangePosition:
    return ExchangePosition(symbol=symbol, side=side, qty=qty, entry_price=ENTRY)


def owner(
    side: Side,
    state: PositionState = S.ACTIVE,
    qty: D = D(1),
    chain: str = NOW_CHAIN,
    symbol: str = BTC,
) -> Owner:
    return Owner(
        workflow_id=position_workflow_id(ACCOUNT, EXCHANGE, symbol),
        symbol=symbol,
        chain=chain,
        side=side,
        state=state,
        qty=qty,
        stop_client_order_id=cid(OrderStep.STOP, chain=chain),
    )


def silent_owner(symbol: str = BTC) -> Owner:
    """A running workflow that did not answer its query in time."""
    return Owner(
        workflow_id=position_workflow_id(ACCOUNT, EXCHANGE, symbol), symbol=symbol, answered=False
    )


def stop(side: Side, oid: str = "s1", client_id: str | None = None, qty: D = D(1)) -> OrderView:
    """A reduce-only stop-market protecting a `side` position."""
    return OrderView(
        exchange_order_id=oid,
        client_order_id=client_id,
        symbol=BTC,
        side=side.exit_order_side,
        status=OrderStatus.OPEN,
        qty=qty,
        trigger_price=ENTRY * D("0.95") if side is Side.LONG else ENTRY * D("1.05"),
        reduce_only=True,
        is_conditional=True,
    )


def limit(
    side: OrderSide,
    oid: str = "m1",
    qty: D = D(1),
    reduce_only: bool = False,
    client_id: str | None = "web_8fj3k2q",
) -> OrderView:
    """A plain limit order, by default placed by hand in the exchange's web UI."""
    return OrderView(
        exchange_order_id=oid,
        client_order_id=client_id,
        symbol=BTC,
        side=side,
        status=OrderStatus.OPEN,
        qty=qty,
        reduce_only=reduce_only,
    )


def account(
    positions: tuple[ExchangePosition, ...] = (),
    orders: tuple[OrderView, ...] = (),
    owners: tuple[Owner, ...] = (),
    stored: tuple[StoredPosition, ...] = (),
    hedge_mode: bool = False,
) -> AccountState:
    return AccountState(
        account=ACCOUNT,
        exchange=EXCHANGE,
        positions=list(positions),
        orders=list(orders),
        owners=list(owners),
        stored=list(stored),
        hedge_mode=hedge_mode,
    )


def only(findings: list[Finding]) -> Finding:
    assert len(findings) == 1, findings
    return findings[0]


def of_kind(findings: list[Finding], kind: FindingKind) -> list[Finding]:
    return [f for f in findings if f.kind is kind]


# --- random account states ----------------------------------------------------------


@dataclass(frozen=True)
class Pass:
    state: AccountState
    policy: ReconcilePolicy


policies = st.builds(
    ReconcilePolicy,
    untracked=st.sampled_from(["adopt", "alert"]),
    foreign_orders=st.sampled_from(["leave", "zombies", "all"]),
    alert_after_passes=st.integers(1, 4),
)
# Strategies are built once: building them inside the draws costs more than the test.
booleans = st.booleans()
mostly_true = st.sampled_from([True, True, False])
sides = st.sampled_from(list(Side))
maybe_sides = st.sampled_from([Side.LONG, Side.SHORT, Side.LONG, Side.SHORT, None])
quantities = st.sampled_from([D("0.5"), D(1), D(2)])
held_quantities = st.sampled_from([D(0), D("0.5"), D(1), D(2)])
order_quantities = st.sampled_from([None, D("0.5"), D(1), D(2), D(3)])
exit_fractions = st.sampled_from([D(1), D("0.5"), D(1), D(3)])
entry_prices = st.sampled_from([ENTRY, D("0.0421"), None])
# Holding states weigh more: most of what is judged is judged about them.
states = st.sampled_from([*PositionState, *sorted(HOLDING_STATES) * 2])
chains = st.sampled_from(CHAINS)
earlier_chains = {c: st.sampled_from([o for o in CHAINS if o != c]) for c in CHAINS}
silent_chains = st.sampled_from([None, None, *CHAINS])
row_chains = st.lists(chains, max_size=2, unique=True)
row_statuses = st.sampled_from(
    ["pending_entry", "entry_placed", "active", "closing", "closed", "rolled_back", "failed"]
)
revisions = st.integers(0, 5)
order_counts = st.integers(0, 3)
origins = st.sampled_from(
    ["own", "own", "earlier", "earlier", "other_account", "foreign", "foreign"]
)
stop_steps = st.sampled_from(STOP_STEPS)
any_steps = st.sampled_from(list(OrderStep))
seqs = st.integers(0, 40)
foreign_ids = st.sampled_from(FOREIGN_IDS)
order_sides = st.sampled_from([OrderSide.BUY, OrderSide.SELL, None])
reduce_onlys = st.sampled_from([None, False, True])
live_statuses = st.sampled_from([OrderStatus.OPEN, OrderStatus.PARTIALLY_FILLED])
symbol_sets = st.lists(st.sampled_from(SYMBOLS), min_size=1, max_size=3, unique=True)
# Hedge mode: an order's side as the exchange says it (mostly its slot's; sometimes
# not said at all: the gateway could not tell).
order_position_sides = {side: st.sampled_from([side, side, side, None]) for side in Side}


def draw_position(draw: st.DrawFn, symbol: str, slot: Side | None) -> ExchangePosition | None:
    """`slot`: the side of a hedge-mode position (it names the slot), None in one-way."""
    if not draw(mostly_true):
        return None
    return ExchangePosition(
        symbol=symbol,
        side=draw(maybe_sides) if slot is None else slot,
        qty=draw(held_quantities),
        hedged=slot is not None,
        entry_price=draw(entry_prices),
    )


def draw_owner(
    draw: st.DrawFn, symbol: str, pos: ExchangePosition | None, slot: Side | None
) -> Owner | None:
    if not draw(mostly_true):
        return None
    workflow_id = position_workflow_id(ACCOUNT, EXCHANGE, symbol, slot)
    if not draw(mostly_true):
        # Running but silent: the directory knows nothing more (rarely, its chain).
        return Owner(
            workflow_id=workflow_id, symbol=symbol, answered=False, chain=draw(silent_chains)
        )
    # A hedge-mode workflow holds its slot's side (its spec's side names its id).
    side, qty = draw(sides) if slot is None else slot, draw(held_quantities)
    if pos is not None and pos.side is not None and draw(booleans):
        side, qty = pos.side, pos.qty  # the usual case: the workflow agrees with the exchange
    chain = draw(chains)
    return Owner(
        workflow_id=workflow_id,
        symbol=symbol,
        chain=chain,
        side=side,
        state=draw(states),
        qty=qty,
        stop_client_order_id=cid(OrderStep.STOP, draw(seqs), chain, workflow_id)
        if draw(booleans)
        else None,
    )


def draw_rows(draw: st.DrawFn, symbol: str, slot: Side | None) -> list[StoredPosition]:
    workflow_id = position_workflow_id(ACCOUNT, EXCHANGE, symbol, slot)
    return [
        StoredPosition(
            position_id=f"{workflow_id}/{chain}",
            workflow_id=workflow_id,
            symbol=symbol,
            side=draw(sides) if slot is None else slot,
            status=draw(row_statuses),
            quantity=draw(quantities),
            revision=draw(revisions),
        )
        for chain in draw(row_chains)
    ]


def draw_orders(
    draw: st.DrawFn,
    symbol: str,
    pos: ExchangePosition | None,
    own: Owner | None,
    first_id: int,
    slot: Side | None,
) -> list[OrderView]:
    """Open orders of every origin on `symbol` (hedge mode: on the `slot` side, or of a
    side the exchange did not say); exchange ids unique across the account."""
    workflow_id = position_workflow_id(ACCOUNT, EXCHANGE, symbol, slot)
    held_side = (own.side if own is not None else None) or (pos.side if pos is not None else None)
    if slot is not None:
        held_side = slot
    orders = []
    # Often the orders that matter most: the workflow's own stop (or, with no workflow,
    # a gone one's), a stop left behind by an earlier position, an order placed by
    # hand; then anything.
    planned = [o for o in ("own", "earlier", "foreign") if draw(booleans)]
    for n in range(len(planned) + draw(order_counts)):
        origin = planned[n] if n < len(planned) else draw(origins)
        stop_shaped = origin != "foreign" if n < len(planned) else draw(booleans)
        step = draw(stop_steps if stop_shaped else any_steps)
        seq = draw(seqs)
        client_id: str | None
        if origin == "own":
            # The owner's current chain; with no owner: a gone workflow of this account.
            chain = own.chain if own is not None and own.chain else draw(chains)
            client_id = client_order_id(workflow_id, chain, step, seq)
        elif origin == "earlier":
            earlier = earlier_chains[own.chain] if own is not None and own.chain else chains
            client_id = client_order_id(workflow_id, draw(earlier), step, seq)
        elif origin == "other_account":
            other_wf = position_workflow_id(OTHER_ACCOUNT, EXCHANGE, symbol, slot)
            client_id = client_order_id(other_wf, draw(chains), step, seq)
        else:
            client_id = draw(foreign_ids)
        side: OrderSide | None
        qty: D | None
        if stop_shaped:
            side = (held_side or draw(sides)).exit_order_side
            # Hedge mode: the exchanges refuse reduce-only (the exit side reduces).
            reduce_only: bool | None = True if slot is None else draw(reduce_onlys)
            close_position = draw(booleans)
            conditional = True
            qty = draw(order_quantities)
        elif n < len(planned) and pos is not None and pos.side is not None and not pos.is_flat:
            # A manual exit (take-profit or stop) of what the exchange holds.
            side = pos.side.exit_order_side
            reduce_only = draw(reduce_onlys)
            close_position = False
            conditional = draw(booleans)
            qty = pos.qty * draw(exit_fractions)  # mostly all of it or part; sometimes a flip
        else:
            side = draw(order_sides)
            reduce_only = draw(reduce_onlys)
            close_position = draw(booleans)
            conditional = draw(booleans)
            qty = draw(order_quantities)
        orders.append(
            OrderView(
                exchange_order_id=str(first_id + n),
                client_order_id=client_id,
                symbol=symbol,
                side=side,
                status=draw(live_statuses),
                qty=qty,
                trigger_price=ENTRY if conditional else None,
                reduce_only=reduce_only,
                close_position=close_position,
                is_conditional=conditional,
                position_side=None if slot is None else draw(order_position_sides[slot]),
            )
        )
    return orders


@st.composite
def account_states(draw: st.DrawFn, hedge_mode: bool | None = None) -> AccountState:
    """A few symbols, each with or without position, workflow, store rows and orders;
    on a hedge-mode account (drawn unless `hedge_mode` says) each of its two slots."""
    hedge = draw(booleans) if hedge_mode is None else hedge_mode
    slots: tuple[Side | None, ...] = (Side.LONG, Side.SHORT) if hedge else (None,)
    positions: list[ExchangePosition] = []
    running: list[Owner] = []
    stored: list[StoredPosition] = []
    orders: list[OrderView] = []
    for i, symbol in enumerate(draw(symbol_sets)):
        for j, slot in enumerate(slots):
            pos = draw_position(draw, symbol, slot)
            own = draw_owner(draw, symbol, pos, slot)
            positions += [pos] if pos is not None else []
            running += [own] if own is not None else []
            stored += draw_rows(draw, symbol, slot)
            orders += draw_orders(draw, symbol, pos, own, first_id=100 * i + 50 * j, slot=slot)
    return account(tuple(positions), tuple(orders), tuple(running), tuple(stored), hedge)


@st.composite
def passes(draw: st.DrawFn) -> Pass:
    return Pass(state=draw(account_states()), policy=draw(policies))


# --- what the properties look at ----------------------------------------------------


def owner_on(state: AccountState, symbol: str) -> Owner | None:
    return next((o for o in state.owners if o.symbol == symbol), None)


def open_position(state: AccountState, symbol: str) -> ExchangePosition | None:
    return next((p for p in state.positions if p.symbol == symbol and not p.is_flat), None)


# Books: the symbol on a one-way account, the symbol and a side on a hedge-mode one.


def owner_book(state: AccountState, own: Owner) -> str:
    """An owner's book: in hedge mode the side its workflow id names."""
    return book_key(own.symbol, owner_slot(own) if state.hedge_mode else None)


def position_book(state: AccountState, pos: ExchangePosition) -> str:
    return book_key(pos.symbol, pos.side if state.hedge_mode else None)


def order_book(state: AccountState, order: OrderView) -> str:
    """An order's book: in hedge mode the side the exchange says it is of (if it says)."""
    return book_key(order.symbol, order.position_side if state.hedge_mode else None)


def finding_book(state: AccountState, f: Finding) -> str:
    return book_key(f.symbol, f.side if state.hedge_mode else None)


def owner_of(state: AccountState, book: str) -> Owner | None:
    return next((o for o in state.owners if owner_book(state, o) == book), None)


def position_of(state: AccountState, book: str) -> ExchangePosition | None:
    return next(
        (p for p in state.positions if position_book(state, p) == book and not p.is_flat), None
    )


def unsided(state: AccountState, order: OrderView) -> bool:
    """Hedge mode, and the exchange did not say which side's position the order is of."""
    return state.hedge_mode and order.position_side is None


def accounts_workflows(state: AccountState, symbol: str) -> list[str]:
    """This account's workflow ids for `symbol`: one, or the long's and the short's."""
    slots: tuple[Side | None, ...] = (Side.LONG, Side.SHORT) if state.hedge_mode else (None,)
    return [position_workflow_id(state.account, state.exchange, symbol, s) for s in slots]


def tag_owner(state: AccountState, order: OrderView) -> Owner | None:
    """The running owner whose workflow the order's client id is of (whatever its side)."""
    return next(
        (o for o in state.owners if belongs_to_workflow(order.client_order_id, o.workflow_id)),
        None,
    )


def is_owners(order: OrderView, own: Owner | None) -> bool:
    """The order's client id is of the owner's current position (workflow and chain)."""
    return (
        own is not None
        and own.chain is not None
        and belongs_to(order.client_order_id, own.workflow_id, own.chain)
    )


def is_accounts(state: AccountState, order: OrderView) -> bool:
    """The order's client id is posguard's, of this account's workflow for the symbol
    (in hedge mode: of either side's)."""
    return any(
        belongs_to_workflow(order.client_order_id, workflow_id)
        for workflow_id in accounts_workflows(state, order.symbol)
    )


def is_foreign(order: OrderView) -> bool:
    return parse_client_id(order.client_order_id) is None


def only_reduces(order: OrderView, pos: ExchangePosition | None, hedge: bool = False) -> bool:
    """The order can only reduce what the exchange holds: never open, grow or flip it.
    In hedge mode an order on its position's exit side can only reduce that position."""
    if order.reduce_only or order.close_position:
        return True
    if hedge and order.position_side is not None:
        return order.side is order.position_side.exit_order_side
    return (
        pos is not None
        and pos.side is not None
        and order.side is pos.side.exit_order_side
        and order.qty is not None
        and order.qty <= pos.qty
    )


def is_reducing_or_stop(order: OrderView, hedge: bool = False) -> bool:
    parsed = parse_client_id(order.client_order_id)
    return (
        bool(order.reduce_only)
        or order.close_position
        or order.is_conditional
        or (parsed is not None and parsed.step in STOP_STEPS)
        or (hedge and only_reduces(order, None, hedge))
    )


def has_own_stop(state: AccountState, own: Owner) -> bool:
    """The owner's own stop is open on the exchange (hedge mode: on its own side, or on
    a side the exchange did not say: the owner's orders are all of its side)."""
    return any(
        o.symbol == own.symbol
        and o.is_conditional
        and is_owners(o, own)
        and (parsed := parse_client_id(o.client_order_id)) is not None
        and parsed.step in STOP_STEPS
        and (not state.hedge_mode or o.position_side in (owner_slot(own), None))
        for o in state.orders
    )


def holds(state: AccountState, own: Owner, pos: ExchangePosition) -> bool:
    """The owner holds what the exchange has (hedge mode: the book is the side)."""
    return own.qty == pos.qty and (state.hedge_mode or own.side is pos.side)


def finding_of(findings: list[Finding], order: OrderView) -> Finding | None:
    matching = [f for f in findings if f.order is not None and f.order == order]
    assert len(matching) <= 1
    return matching[0] if matching else None


# --- properties ---------------------------------------------------------------------


@PROPERTY_SETTINGS
@given(case=passes())
def test_an_order_of_a_running_workflow_is_never_a_finding(case: Pass) -> None:
    findings = reconcile(case.state, case.policy)
    for order in case.state.orders:
        # Whose it is, its client id says: in hedge mode, whatever side the exchange says.
        if is_owners(order, tag_owner(case.state, order)):
            assert finding_of(findings, order) is None
            assert f"order:{order.exchange_order_id}" not in {f.key for f in findings}


@PROPERTY_SETTINGS
@given(case=passes())
def test_a_workflow_opening_or_closing_is_never_phantom_nor_signalled(case: Pass) -> None:
    findings = reconcile(case.state, case.policy)
    by_workflow = {o.workflow_id: o for o in case.state.owners}
    for f in findings:
        if f.action is A.SIGNAL_OWNER:
            signalled = by_workflow[f.workflow_id or ""]
            assert signalled.answered and signalled.state in HOLDING_STATES
            assert f.position_id == signalled.position_id
    about_positions = {K.PHANTOM, K.PHANTOM_ROW, K.UNTRACKED, K.QUANTITY_MISMATCH, K.STOP_MISSING}
    for own in case.state.owners:
        if own.answered and own.state in HOLDING_STATES:
            continue
        # Its own book's findings (in hedge mode the other side is another position).
        book = owner_book(case.state, own)
        on_its_book = [f for f in findings if finding_book(case.state, f) == book]
        about = [f for f in on_its_book if f.kind in about_positions]
        # A silent workflow's position is only reported (its stop missing, if nothing
        # on the exchange could stop it); an opening or closing one is not judged.
        assert all(not own.answered and f.action is A.REPORT for f in about), about
        if own.state in OPENING_STATES:
            assert not [f for f in on_its_book if f.kind is K.PHANTOM]


@PROPERTY_SETTINGS
@given(state=account_states(), alert_after=st.integers(1, 4))
def test_every_position_ends_owned_by_exactly_one_workflow(
    state: AccountState, alert_after: int
) -> None:
    policy = ReconcilePolicy(untracked="adopt", alert_after_passes=alert_after)
    findings = reconcile(state, policy)
    adopts = [f for f in findings if f.action is A.ADOPT]
    books = [finding_book(state, f) for f in adopts]
    assert len(set(books)) == len(adopts), "a position adopted twice"
    for f, book in zip(adopts, books, strict=True):
        assert f.kind is K.UNTRACKED
        assert owner_of(state, book) is None
        pos = position_of(state, book)
        assert pos is not None and pos.side is not None and pos.entry_price is not None
        assert (f.side, f.exchange_qty, f.entry_price) == (pos.side, pos.qty, pos.entry_price)
        # Hedge mode: under its side's workflow id.
        slot = pos.side if state.hedge_mode else None
        assert f.workflow_id == position_workflow_id(ACCOUNT, EXCHANGE, f.symbol, slot)
    for pos in state.positions:
        if pos.is_flat or pos.side is None or pos.entry_price is None:
            continue
        book = position_book(state, pos)
        adopted = [f for f, b in zip(adopts, books, strict=True) if b == book]
        assert (owner_of(state, book) is not None) != (len(adopted) == 1)
    # Adoption off: the same positions are only reported.
    alert_only = reconcile(state, policy.model_copy(update={"untracked": "alert"}))
    assert not [f for f in alert_only if f.action is A.ADOPT]
    assert {f.key for f in alert_only if f.kind is K.UNTRACKED} == {
        f.key for f in findings if f.kind is K.UNTRACKED
    }


@PROPERTY_SETTINGS
@given(case=passes())
def test_nothing_is_decided_on_a_symbol_whose_workflow_did_not_answer(case: Pass) -> None:
    findings = reconcile(case.state, case.policy)
    hedge = case.state.hedge_mode
    for own in case.state.owners:
        if own.answered:
            continue
        # Its book's (in hedge mode its side's: the other side is judged as usual).
        book = owner_book(case.state, own)
        pos = position_of(case.state, book)
        for f in (f for f in findings if finding_book(case.state, f) == book):
            if f.kind in (K.OWNER_SILENT, K.STOP_MISSING):
                # Reported: the workflow is silent, and (if so) nothing could stop it.
                assert f.action is A.REPORT and pos is not None, f
                continue
            # Only orders that are not this account's are judged, and only from what
            # needs no answer from the workflow: the setting and the exchange's position.
            assert f.action in (A.REPORT, A.CANCEL_ORDER), f
            assert f.order is not None and not is_accounts(case.state, f.order)
            if f.action is A.CANCEL_ORDER:
                assert is_foreign(f.order)
                assert case.policy.foreign_orders == "all" or not only_reduces(f.order, pos, hedge)
        # Its own orders (by client id, whatever side the exchange says) are not judged.
        for order in case.state.orders:
            if belongs_to_workflow(order.client_order_id, own.workflow_id):
                assert finding_of(findings, order) is None


@PROPERTY_SETTINGS
@given(case=passes())
def test_a_position_is_never_left_unprotected_by_a_cancel(case: Pass) -> None:
    findings = reconcile(case.state, case.policy)
    state, hedge = case.state, case.state.hedge_mode
    for f in findings:
        if f.action is not A.CANCEL_ORDER:
            continue
        assert f.order is not None
        order = f.order
        assert not is_owners(order, tag_owner(state, order)), "cancelled a running one's order"
        # Hedge mode: never an order whose side is unknown (it may be either side's stop);
        # otherwise judged on its own side's position (it cannot touch the other side).
        assert not unsided(state, order), "cancelled an order whose side is unknown"
        book = order_book(state, order)
        own, pos = owner_of(state, book), position_of(state, book)
        if pos is None or not is_reducing_or_stop(order, hedge):
            continue
        if is_foreign(order):
            # By hand: cancelled when it would open, grow or flip the position, never
            # when it can only reduce it (it may be the trader's own stop).
            assert case.policy.foreign_orders == "all" or not only_reduces(order, pos, hedge)
            continue
        # Posguard's orphan that may be the position's only stop: cancelled only once
        # the position's owner holds it (as the exchange has it) with a stop of its own.
        assert own is not None and own.answered and own.state in HOLDING_STATES
        assert holds(state, own, pos)
        assert has_own_stop(state, own)


@PROPERTY_SETTINGS
@given(state=account_states(), policy=policies)
def test_orders_placed_by_hand_follow_the_foreign_orders_setting(
    state: AccountState, policy: ReconcilePolicy
) -> None:
    foreign = [o for o in state.orders if is_foreign(o)]
    leave = reconcile(state, policy.model_copy(update={"foreign_orders": "leave"}))
    for order in foreign:
        found = finding_of(leave, order)
        assert found is None or found.action is A.REPORT
    everything = reconcile(state, policy.model_copy(update={"foreign_orders": "all"}))
    hedge = state.hedge_mode
    for order in foreign:
        found = finding_of(everything, order)
        assert found is not None
        if unsided(state, order):
            # Hedge mode, its side unknown: it may be either side's stop. Left alone.
            assert found.action is A.REPORT, found
            continue
        # Every one is cancelled, except one that may be a position's only stop.
        book = order_book(state, order)
        pos, own = position_of(state, book), owner_of(state, book)
        may_protect = pos is not None and (
            bool(order.reduce_only)
            or order.close_position
            or (hedge and only_reduces(order, None, hedge))
            or (order.is_conditional and order.side is (pos.side and pos.side.exit_order_side))
        )
        covered = (
            (
                own is not None
                and own.answered
                and own.state in HOLDING_STATES
                and holds(state, own, pos)
                and has_own_stop(state, own)
            )
            if pos is not None
            else False
        )
        if may_protect and not covered:
            assert found.action is A.REPORT, found
        else:
            assert found.action is A.CANCEL_ORDER, found
    # Posguard ids of another account or deployment are never touched, whatever the setting.
    for findings in (leave, everything, reconcile(state, policy)):
        for f in findings:
            if f.order is not None and not is_foreign(f.order) and not is_accounts(state, f.order):
                assert (f.kind, f.action) == (K.FOREIGN_ORDER, A.REPORT)


@PROPERTY_SETTINGS
@given(case=passes(), data=st.data())
def test_a_pass_is_deterministic_and_its_keys_unique(case: Pass, data: st.DataObject) -> None:
    findings = reconcile(case.state, case.policy)
    assert reconcile(case.state, case.policy) == findings
    keys = [f.key for f in findings]
    assert len(set(keys)) == len(keys)
    # The order in which the exchange, Temporal and the store listed things is irrelevant.
    shuffled = case.state.model_copy(
        update={
            name: data.draw(st.permutations(getattr(case.state, name)))
            for name in ("positions", "orders", "owners", "stored")
        }
    )
    assert reconcile(shuffled, case.policy) == findings


KEYS = ("untracked:BTC", "order:7", "phantom:x/1", "stop_missing:y/2")


@PROPERTY_SETTINGS
@given(
    present=st.lists(
        st.dictionaries(
            st.sampled_from(KEYS), st.sampled_from([K.ZOMBIE, K.ZOMBIE, K.ZOMBIE, K.FOREIGN_ORDER])
        ),
        min_size=1,
        max_size=12,
    ),
    alert_after=st.integers(1, 4),
)
def test_a_persisting_finding_alerts_once_after_the_set_number_of_passes(
    present: list[dict[str, FindingKind]], alert_after: int
) -> None:
    policy = ReconcilePolicy(alert_after_passes=alert_after)
    memory: dict[str, FindingMemo] = {}
    streak: dict[str, tuple[FindingKind, int, datetime]] = {}  # key -> kind, passes, since
    for n, kinds in enumerate(present):
        now = T0 + timedelta(seconds=30 * n)
        findings = [
            Finding(kind=kind, key=key, symbol=BTC, action=A.REPORT, reason="test")
            for key, kind in kinds.items()
        ]
        got = remember(memory, findings, now, policy)
        # The model: a key's streak goes on while it stays (with the same kind).
        streak = {
            key: (kind, streak[key][1] + 1, streak[key][2])
            if key in streak and streak[key][0] is kind
            else (kind, 1, now)
            for key, kind in kinds.items()
        }
        assert got.new == [k for k in kinds if k not in memory or memory[k].kind is not kinds[k]]
        assert got.new == [k for k, (_, passes, _) in streak.items() if passes == 1]
        assert got.alert == [k for k, (_, passes, _) in streak.items() if passes == alert_after]
        assert set(got.memory) == set(kinds), "a finding that is gone is forgotten"
        for key, memo in got.memory.items():
            kind, passes, since = streak[key]
            assert (memo.kind, memo.passes, memo.first_seen) == (kind, passes, since)
            assert memo.alerted == (passes >= alert_after)
        memory = got.memory


# --- examples: each finding as a trader sees it --------------------------------------


@pytest.mark.parametrize("side", list(Side))
def test_position_opened_by_hand_is_adopted(side: Side) -> None:
    f = only(reconcile(account(positions=(position(side, D(2)),))))
    assert (f.kind, f.action, f.key) == (K.UNTRACKED, A.ADOPT, f"untracked:{BTC}")
    assert (f.workflow_id, f.side, f.exchange_qty, f.entry_price) == (WF, side, D(2), ENTRY)


@pytest.mark.parametrize("side", list(Side))
def test_position_opened_by_hand_is_only_reported_when_adoption_is_off(side: Side) -> None:
    f = only(reconcile(account(positions=(position(side),)), ReconcilePolicy(untracked="alert")))
    assert (f.kind, f.action) == (K.UNTRACKED, A.REPORT)


@pytest.mark.parametrize("side", list(Side))
def test_position_without_entry_price_cannot_be_adopted(side: Side) -> None:
    pos = ExchangePosition(symbol=BTC, side=side, qty=D(1), entry_price=None)
    f = only(reconcile(account(positions=(pos,))))
    assert (f.kind, f.action) == (K.UNTRACKED, A.REPORT)


@pytest.mark.parametrize("side", list(Side))
def test_stop_left_by_a_terminated_workflow_on_a_flat_symbol_is_cancelled(side: Side) -> None:
    left = stop(side, client_id=cid(OrderStep.STOP, chain=OLD_CHAIN))
    f = only(reconcile(account(orders=(left,))))
    assert (f.kind, f.action, f.key, f.order) == (
        K.ZOMBIE,
        A.CANCEL_ORDER,
        f"order:{BTC}:algo:s1",
        left,
    )


@pytest.mark.parametrize("side", list(Side))
def test_stop_left_by_a_terminated_workflow_is_kept_until_the_adopter_has_its_own(
    side: Side,
) -> None:
    left = stop(side, oid="old", client_id=cid(OrderStep.STOP, chain=OLD_CHAIN))
    # The position is still open, nobody owns it: adopted, and the old stop is kept.
    findings = reconcile(account(positions=(position(side),), orders=(left,)))
    assert [(f.kind, f.action) for f in findings] == [
        (K.UNTRACKED, A.ADOPT),
        (K.ZOMBIE, A.REPORT),
    ]
    # The adopter runs but has not placed its stop yet: still kept.
    for state in (S.PENDING_SL, S.ACTIVE):
        adopter = owner(side, state)
        findings = reconcile(account((position(side),), (left,), (adopter,)))
        zombie = only(of_kind(findings, K.ZOMBIE))
        assert zombie.action is A.REPORT
    # The adopter's own stop is on the exchange: now the old one goes.
    own = stop(side, oid="new", client_id=cid(OrderStep.STOP))
    findings = reconcile(account((position(side),), (left, own), (owner(side),)))
    f = only(findings)
    assert (f.kind, f.action, f.order) == (K.ZOMBIE, A.CANCEL_ORDER, left)


@pytest.mark.parametrize("side", list(Side))
def test_earlier_stop_is_kept_while_the_workflow_does_not_hold_what_the_exchange_has(
    side: Side,
) -> None:
    """A stale workflow's own stop does not protect a position changed by hand."""
    left = stop(other_side(side), oid="old", client_id=cid(OrderStep.STOP, chain=OLD_CHAIN))
    own = stop(side, oid="new", client_id=cid(OrderStep.STOP))
    flipped = position(other_side(side))  # the workflow holds `side`, the exchange the other
    findings = reconcile(account((flipped,), (left, own), (owner(side),)))
    assert only(of_kind(findings, K.ZOMBIE)).action is A.REPORT
    assert only(of_kind(findings, K.QUANTITY_MISMATCH)).action is A.SIGNAL_OWNER
    grown = position(side, D(3))  # the workflow holds 1, the exchange 3
    left = stop(side, oid="old", client_id=cid(OrderStep.STOP, chain=OLD_CHAIN), qty=D(3))
    findings = reconcile(account((grown,), (left, own), (owner(side),)))
    assert only(of_kind(findings, K.ZOMBIE)).action is A.REPORT


@pytest.mark.parametrize("side", list(Side))
def test_stop_of_an_earlier_position_on_a_flat_managed_symbol_is_cancelled(side: Side) -> None:
    left = stop(side, client_id=cid(OrderStep.STOP, chain=OLD_CHAIN))
    f = only(reconcile(account(orders=(left,), owners=(owner(side, S.PENDING_ENTRY),))))
    assert (f.kind, f.action, f.workflow_id) == (K.ZOMBIE, A.CANCEL_ORDER, WF)


@pytest.mark.parametrize("side", list(Side))
def test_orders_of_the_running_workflow_are_left_to_it(side: Side) -> None:
    orders = (
        stop(side, oid="1", client_id=cid(OrderStep.STOP)),
        limit(side.exit_order_side, "2", reduce_only=True, client_id=cid(OrderStep.TAKE_PROFIT)),
        limit(side.entry_order_side, "3", client_id=cid(OrderStep.ENTRY)),
    )
    for state in list(PositionState):
        assert not [
            f for f in reconcile(account(orders=orders, owners=(owner(side, state),))) if f.order
        ]
    assert reconcile(account((position(side),), orders, (owner(side),))) == []


@pytest.mark.parametrize("side", list(OrderSide))
def test_manual_limit_order_on_an_unmanaged_symbol_is_reported(side: OrderSide) -> None:
    order = limit(side)
    f = only(reconcile(account(orders=(order,))))
    assert (f.kind, f.action, f.order) == (K.FOREIGN_ORDER, A.REPORT, order)
    f = only(reconcile(account(orders=(order,)), ReconcilePolicy(foreign_orders="all")))
    assert (f.kind, f.action) == (K.FOREIGN_ORDER, A.CANCEL_ORDER)


@pytest.mark.parametrize(
    ("policy", "action"),
    [("zombies", A.CANCEL_ORDER), ("all", A.CANCEL_ORDER), ("leave", A.REPORT)],
)
@pytest.mark.parametrize("side", list(OrderSide))
def test_manual_reduce_only_order_on_a_flat_unmanaged_symbol_is_a_zombie(
    side: OrderSide, policy: ForeignOrderPolicy, action: Action
) -> None:
    order = limit(side, reduce_only=True)
    f = only(reconcile(account(orders=(order,)), ReconcilePolicy(foreign_orders=policy)))
    assert (f.kind, f.action) == (K.ZOMBIE, action)


@pytest.mark.parametrize("side", list(Side))
def test_manual_stop_protecting_an_unmanaged_position_is_left_alone(side: Side) -> None:
    findings = reconcile(account((position(side),), (stop(side, client_id=None),)))
    assert (only(of_kind(findings, K.FOREIGN_ORDER)).action) is A.REPORT


@pytest.mark.parametrize(
    ("order_side", "qty"),
    [
        pytest.param("exit", D(3), id="flip"),
        pytest.param("entry", D(1), id="grow"),
        pytest.param("entry", D("0.1"), id="grow-a-little"),
    ],
)
@pytest.mark.parametrize("side", list(Side))
def test_manual_order_that_would_flip_or_grow_a_managed_position_is_a_zombie(
    side: Side, order_side: str, qty: D
) -> None:
    order = limit(side.exit_order_side if order_side == "exit" else side.entry_order_side, qty=qty)
    own = stop(side, oid="s", client_id=cid(OrderStep.STOP))
    findings = reconcile(account((position(side),), (own, order), (owner(side),)))
    f = only(findings)
    assert (f.kind, f.action, f.order, f.workflow_id) == (K.ZOMBIE, A.CANCEL_ORDER, order, WF)
    left = reconcile(
        account((position(side),), (own, order), (owner(side),)),
        ReconcilePolicy(foreign_orders="leave"),
    )
    assert (only(left).kind, only(left).action) == (K.ZOMBIE, A.REPORT)


@pytest.mark.parametrize("qty", [D("0.5"), D(1)])
@pytest.mark.parametrize("side", list(Side))
def test_manual_order_that_only_reduces_a_managed_position_is_reported(side: Side, qty: D) -> None:
    order = limit(side.exit_order_side, qty=qty)
    own = stop(side, oid="s", client_id=cid(OrderStep.STOP))
    f = only(reconcile(account((position(side),), (own, order), (owner(side),))))
    assert (f.kind, f.action, f.order) == (K.FOREIGN_ORDER, A.REPORT, order)


@pytest.mark.parametrize("side", list(Side))
def test_manual_order_is_judged_against_the_exchange_not_a_silent_workflow(side: Side) -> None:
    """A workflow that did not answer says nothing: the exchange's position decides."""
    reduces = limit(side.exit_order_side, "m1", qty=D("0.5"))
    flips = limit(side.exit_order_side, "m2", qty=D(3))
    findings = reconcile(account((position(side),), (reduces, flips), (silent_owner(),)))
    assert [(f.order, f.kind, f.action) for f in findings] == [
        (None, K.OWNER_SILENT, A.REPORT),
        (None, K.STOP_MISSING, A.REPORT),  # a limit order stops nothing
        (reduces, K.FOREIGN_ORDER, A.REPORT),
        (flips, K.ZOMBIE, A.CANCEL_ORDER),
    ]


@pytest.mark.parametrize("side", list(Side))
def test_manual_stop_on_a_position_flipped_by_hand_is_not_cancelled(side: Side) -> None:
    """The workflow still believes `side`; the trader flipped it and placed a stop."""
    flipped = position(other_side(side))
    manual = stop(other_side(side), oid="m", client_id="web_8fj3k2q").model_copy(
        update={"reduce_only": False}
    )
    own = stop(side, oid="s", client_id=cid(OrderStep.STOP))
    findings = reconcile(account((flipped,), (own, manual), (owner(side),)))
    assert [(f.kind, f.action) for f in findings] == [
        (K.QUANTITY_MISMATCH, A.SIGNAL_OWNER),
        (K.FOREIGN_ORDER, A.REPORT),
    ]


@pytest.mark.parametrize("side", list(Side))
def test_nothing_is_judged_about_a_workflow_that_did_not_answer(side: Side) -> None:
    orders = (
        stop(side, oid="1", client_id=cid(OrderStep.STOP, chain=OLD_CHAIN)),
        stop(side, oid="2", client_id=cid(OrderStep.STOP)),
    )
    assert reconcile(account((), orders, (silent_owner(),))) == []
    # With a position, only reported: its workflow is silent (its stops cover it).
    findings = reconcile(account((position(side),), orders, (silent_owner(),)))
    assert [(f.kind, f.action) for f in findings] == [(K.OWNER_SILENT, A.REPORT)]


@pytest.mark.parametrize("side", list(Side))
def test_a_silent_workflow_with_nothing_to_stop_its_position_is_reported(side: Side) -> None:
    entry_side_stop = stop(other_side(side), oid="x", client_id="web_8fj3k2q").model_copy(
        update={"reduce_only": False}
    )
    for orders in ((), (entry_side_stop,)):
        found = reconcile(account((position(side),), orders, (silent_owner(),)))
        kinds = [(f.kind, f.action) for f in found if f.order is None]
        assert kinds == [(K.OWNER_SILENT, A.REPORT), (K.STOP_MISSING, A.REPORT)]


@pytest.mark.parametrize("state", sorted(HOLDING_STATES))
@pytest.mark.parametrize("side", list(Side))
def test_workflow_holding_a_position_the_exchange_no_longer_has_is_phantom(
    side: Side, state: PositionState
) -> None:
    f = only(reconcile(account(owners=(owner(side, state),))))
    assert (f.kind, f.action, f.key) == (K.PHANTOM, A.SIGNAL_OWNER, f"phantom:{WF}/{NOW_CHAIN}")
    assert (f.workflow_id, f.side, f.expected_qty, f.exchange_qty) == (WF, side, D(1), D(0))


@pytest.mark.parametrize("state", sorted(OPENING_STATES))
@pytest.mark.parametrize("side", list(Side))
def test_workflow_still_opening_on_a_flat_exchange_is_not_phantom(
    side: Side, state: PositionState
) -> None:
    assert reconcile(account(owners=(owner(side, state),))) == []


@pytest.mark.parametrize("side", list(Side))
def test_store_row_open_with_no_workflow_on_a_flat_symbol_is_closed_as_phantom(
    side: Side,
) -> None:
    row = StoredPosition(
        position_id=f"{WF}/{OLD_CHAIN}",
        workflow_id=WF,
        symbol=BTC,
        side=side,
        status="active",
        quantity=D(1),
        revision=4,
    )
    f = only(reconcile(account(stored=(row,))))
    assert (f.kind, f.action, f.position_id, f.stored_revision) == (
        K.PHANTOM_ROW,
        A.CLOSE_ROW,
        row.position_id,
        4,
    )
    # Its workflow still runs, or the position is still open: not the reconciler's row.
    assert not of_kind(reconcile(account(stored=(row,), owners=(silent_owner(),))), K.PHANTOM_ROW)
    assert not of_kind(reconcile(account((position(side),), stored=(row,))), K.PHANTOM_ROW)
    closed = row.model_copy(update={"status": "closed"})
    assert reconcile(account(stored=(closed,))) == []


@pytest.mark.parametrize("exchange_qty", [D("0.4"), D(3)])
@pytest.mark.parametrize("side", list(Side))
def test_quantity_changed_by_hand_signals_the_workflow(side: Side, exchange_qty: D) -> None:
    own = stop(side, client_id=cid(OrderStep.STOP))
    f = only(reconcile(account((position(side, exchange_qty),), (own,), (owner(side),))))
    assert (f.kind, f.action, f.key) == (
        K.QUANTITY_MISMATCH,
        A.SIGNAL_OWNER,
        f"mismatch:{WF}/{NOW_CHAIN}",
    )
    assert (f.expected_qty, f.exchange_qty, f.state) == (D(1), exchange_qty, "active")


@pytest.mark.parametrize("side", list(Side))
def test_active_position_without_its_stop_signals_the_workflow(side: Side) -> None:
    f = only(reconcile(account((position(side),), (), (owner(side),))))
    assert (f.kind, f.action, f.key) == (
        K.STOP_MISSING,
        A.SIGNAL_OWNER,
        f"stop_missing:{WF}/{NOW_CHAIN}",
    )
    # An earlier position's stop is not this position's stop.
    left = stop(side, client_id=cid(OrderStep.STOP, chain=OLD_CHAIN))
    findings = reconcile(account((position(side),), (left,), (owner(side),)))
    assert only(of_kind(findings, K.STOP_MISSING)).action is A.SIGNAL_OWNER


@pytest.mark.parametrize("side", list(Side))
def test_protected_managed_position_has_no_finding(side: Side) -> None:
    own = stop(side, client_id=cid(OrderStep.STOP))
    assert reconcile(account((position(side),), (own,), (owner(side),))) == []


def test_finding_alerts_once_after_three_passes_and_again_when_it_comes_back() -> None:
    f = Finding(kind=K.ZOMBIE, key="order:1", symbol=BTC, action=A.CANCEL_ORDER, reason="x")
    memory: dict[str, FindingMemo] = {}
    seen = []
    for n, present in enumerate([True, True, True, True, False, True, True, True]):
        got = remember(memory, [f] if present else [], T0 + timedelta(seconds=30 * n))
        seen.append((got.new, got.alert))
        memory = got.memory
    assert seen == [
        (["order:1"], []),
        ([], []),
        ([], ["order:1"]),
        ([], []),
        ([], []),
        (["order:1"], []),
        ([], []),
        ([], ["order:1"]),
    ]


# --- the two-stage read: records first, the workflows asked where something is wrong ----------


@st.composite
def lagging(draw: st.DrawFn, state: AccountState) -> list[Owner]:
    """What visibility and the store may say of `state`'s owners: each one right, gone,
    silent, or with a stale quantity, state or chain."""
    seen: list[Owner] = []
    for own in state.owners:
        how = draw(st.sampled_from(["right", "gone", "silent", "qty", "state", "chain"]))
        if how == "gone":
            continue
        if how == "silent":
            seen.append(Owner(workflow_id=own.workflow_id, symbol=own.symbol, answered=False))
        elif how == "qty":
            seen.append(own.model_copy(update={"qty": own.qty + draw(st.sampled_from([1, 2]))}))
        elif how == "state":
            seen.append(own.model_copy(update={"state": draw(st.sampled_from(list(S)))}))
        elif how == "chain":
            seen.append(own.model_copy(update={"chain": draw(st.sampled_from(CHAINS))}))
        else:
            seen.append(own)
    # A workflow that has ended may still be listed.
    if draw(st.booleans()):
        ended = owner(Side.LONG, symbol=SOL, chain=OLD_CHAIN)
        if state.hedge_mode:
            ended = ended.model_copy(
                update={"workflow_id": position_workflow_id(ACCOUNT, EXCHANGE, SOL, Side.LONG)}
            )
        seen.append(ended)
    return seen


@PROPERTY_SETTINGS
@given(case=passes(), data=st.data())
def test_nothing_is_done_on_records_that_lag(case: Pass, data: st.DataObject) -> None:
    """Whatever the records say, what a pass does (and records as wrong, other than a
    foreign order's report) is what it would do knowing every owner exactly."""
    truth = case.state
    seen = truth.model_copy(update={"owners": data.draw(lagging(truth))})
    first = reconcile(seen, case.policy)
    confirm = to_confirm(seen, first)
    final = reconcile(with_owners(seen, confirm, truth.owners), case.policy)
    exact = reconcile(truth, case.policy)
    for f in final:
        if f.kind is not K.FOREIGN_ORDER:
            assert f in exact, f


@PROPERTY_SETTINGS
@given(case=passes())
def test_a_consistent_account_asks_no_workflow(case: Pass) -> None:
    """Where the records are right and nothing is wrong, no workflow is asked."""
    findings = reconcile(case.state, case.policy)
    if all(f.kind is K.FOREIGN_ORDER for f in findings) and all(
        o.answered for o in case.state.owners
    ):
        assert to_confirm(case.state, findings) == set()


@pytest.mark.parametrize("side", list(Side))
def test_owners_on_record_come_from_the_newest_row_and_the_listed_state(side: Side) -> None:
    listed = [ListedWorkflow(workflow_id=WF, symbol=BTC, state=S.ACTIVE)]
    old = StoredPosition(
        position_id=f"{WF}/{OLD_CHAIN}", workflow_id=WF, symbol=BTC, side=side, status="active"
    )
    new = StoredPosition(
        position_id=f"{WF}/{NOW_CHAIN}",
        workflow_id=WF,
        symbol=BTC,
        side=side,
        status="active",
        quantity=D(3),
    )
    [own] = owners_on_record(listed, [old, new])
    assert (own.answered, own.chain, own.side, own.qty) == (True, NOW_CHAIN, side, D(3))
    # No row yet, or the row and the search attribute disagree: not known well enough.
    [unknown] = owners_on_record(listed, [])
    assert not unknown.answered
    moving = new.model_copy(update={"status": "closing"})
    [unsure] = owners_on_record(listed, [moving])
    assert not unsure.answered


@pytest.mark.parametrize("side", list(Side))
def test_a_position_opened_after_the_first_read_is_no_phantom_once_read_again(
    side: Side,
) -> None:
    """The exchange was read flat, then the workflow answered ACTIVE (its entry filled
    in between): a phantom on the first read, nothing once the symbol is read again."""
    own = owner(side)
    first = account((), (), (own,))
    findings = reconcile(first)
    assert [f.kind for f in findings] == [K.PHANTOM]
    assert to_read_again(findings) == {BTC}
    its_stop = stop(side, client_id=cid(OrderStep.STOP))
    again = with_exchange(first, BTC, position(side), [its_stop])
    assert reconcile(again) == []
    # Really gone: read again, still flat, still a phantom.
    assert [f.kind for f in reconcile(with_exchange(first, BTC, None, []))] == [K.PHANTOM]


# --- a stop that lives on the position (Bybit's, sent with the entry) --------------------


def position_stop(side: Side) -> OrderView:
    """Bybit's position stop-loss: no client id, closes the whole position."""
    return stop(side, oid="ps1").model_copy(update={"position_stop": True, "qty": D("0.001")})


@pytest.mark.parametrize("side", list(Side))
def test_a_stop_on_the_owned_position_is_its_owners_stop_and_no_finding(side: Side) -> None:
    state = account(
        positions=(position(side),), orders=(position_stop(side),), owners=(owner(side),)
    )
    assert reconcile(state) == []


@pytest.mark.parametrize("side", list(Side))
def test_a_position_stop_with_no_owner_is_left_as_the_positions_only_stop(side: Side) -> None:
    state = account(positions=(position(side),), orders=(position_stop(side),))
    found = reconcile(state)
    assert of_kind(found, K.UNTRACKED), found
    assert all(f.action is not A.CANCEL_ORDER for f in found), found


@pytest.mark.parametrize("side", list(Side))
def test_a_position_stop_left_on_a_flat_symbol_is_a_zombie(side: Side) -> None:
    finding = only(reconcile(account(orders=(position_stop(side),))))
    assert (finding.kind, finding.action) == (K.ZOMBIE, A.CANCEL_ORDER)


# --- hedge mode: a long and a short on one symbol, each its own workflow -----------------


def hedge_wf(side: Side) -> str:
    return position_workflow_id(ACCOUNT, EXCHANGE, BTC, side)


def hedge_cid(side: Side, step: OrderStep = OrderStep.STOP, chain: str = NOW_CHAIN) -> str:
    return client_order_id(hedge_wf(side), chain, step, 1)


def hedge_position(side: Side, qty: D = D(1)) -> ExchangePosition:
    return ExchangePosition(symbol=BTC, side=side, qty=qty, hedged=True, entry_price=ENTRY)


def hedge_owner(side: Side, state: PositionState = S.ACTIVE, qty: D = D(1)) -> Owner:
    return owner(side, state, qty).model_copy(
        update={"workflow_id": hedge_wf(side), "stop_client_order_id": hedge_cid(side)}
    )


def hedge_silent(side: Side) -> Owner:
    return Owner(workflow_id=hedge_wf(side), symbol=BTC, answered=False)


def hedge_stop(side: Side, oid: str, client_id: str | None = None) -> OrderView:
    """A stop of the `side` position: on its exit side, without reduce-only (hedge mode
    refuses it: the exit side itself reduces)."""
    return stop(side, oid, client_id).model_copy(
        update={"position_side": side, "reduce_only": False}
    )


def hedge_limit(side: Side, order_side: OrderSide, oid: str, qty: D = D(1)) -> OrderView:
    """A limit order placed by hand on the `side` position."""
    return limit(order_side, oid, qty).model_copy(update={"position_side": side})


def hedged(
    positions: tuple[ExchangePosition, ...] = (),
    orders: tuple[OrderView, ...] = (),
    owners: tuple[Owner, ...] = (),
    stored: tuple[StoredPosition, ...] = (),
) -> AccountState:
    return account(positions, orders, owners, stored, hedge_mode=True)


def test_hedge_mode_workflow_ids_name_the_side() -> None:
    assert hedge_wf(Side.LONG) == f"position/{ACCOUNT}/{EXCHANGE.value}/{BTC}/long"
    assert owner_slot(hedge_owner(Side.SHORT)) is Side.SHORT
    assert owner_slot(hedge_silent(Side.LONG)) is Side.LONG  # from its id: it said nothing
    assert owner_slot(owner(Side.LONG)) is None


@pytest.mark.parametrize("owned", list(Side))
def test_hedge_one_side_owned_the_other_untracked_adopts_only_the_other(owned: Side) -> None:
    untracked = other_side(owned)
    state = hedged(
        positions=(hedge_position(owned), hedge_position(untracked, D(2))),
        orders=(hedge_stop(owned, "s", hedge_cid(owned)),),
        owners=(hedge_owner(owned),),
    )
    f = only(reconcile(state))
    assert (f.kind, f.action, f.key) == (K.UNTRACKED, A.ADOPT, f"untracked:{BTC}:{untracked}")
    assert (f.workflow_id, f.side, f.exchange_qty) == (hedge_wf(untracked), untracked, D(2))
    assert f.workflow_id.endswith(f"/{BTC}/{untracked.value}")
    # Both untracked: two adoptions, each under its own side's id, under its own key.
    both = reconcile(hedged(positions=(hedge_position(owned), hedge_position(untracked))))
    assert sorted((f.key, f.workflow_id) for f in both if f.action is A.ADOPT) == [
        (f"untracked:{BTC}:long", hedge_wf(Side.LONG)),
        (f"untracked:{BTC}:short", hedge_wf(Side.SHORT)),
    ]


@pytest.mark.parametrize("side", list(Side))
def test_hedge_a_sides_stop_never_protects_the_other(side: Side) -> None:
    other = other_side(side)
    positions = (hedge_position(side), hedge_position(other))
    owners = (hedge_owner(side), hedge_owner(other))
    # The side's own stop, its Bybit position stop, and a stop left by an earlier
    # position of the other side's workflow.
    own_stop = hedge_stop(side, "s", hedge_cid(side))
    position_stop = hedge_stop(side, "ps").model_copy(update={"position_stop": True})
    left = hedge_stop(other, "old", hedge_cid(other, chain=OLD_CHAIN))
    for protecting in (own_stop, position_stop):
        findings = reconcile(hedged(positions, (protecting, left), owners))
        missing = only(of_kind(findings, K.STOP_MISSING))
        assert (missing.action, missing.workflow_id, missing.side) == (
            A.SIGNAL_OWNER,
            hedge_wf(other),
            other,
        )
        # The other side's orphan stop may be its only stop: kept, not cancelled.
        assert only(of_kind(findings, K.ZOMBIE)).action is A.REPORT
    # Once the other side's owner has its own stop, the orphan goes.
    its_own = hedge_stop(other, "new", hedge_cid(other))
    f = only(reconcile(hedged(positions, (own_stop, left, its_own), owners)))
    assert (f.kind, f.action, f.order, f.side) == (K.ZOMBIE, A.CANCEL_ORDER, left, other)


@pytest.mark.parametrize("side", list(Side))
def test_hedge_a_position_stop_of_an_unknown_side_protects_nobody(side: Side) -> None:
    """Bybit's position stop belongs to the owner of its symbol and side: one whose
    side the exchange did not say is nobody's (and, maybe either side's only stop, kept)."""
    unknown = hedge_stop(side, "ps").model_copy(
        update={"position_stop": True, "position_side": None}
    )
    findings = reconcile(hedged((hedge_position(side),), (unknown,), (hedge_owner(side),)))
    assert only(of_kind(findings, K.STOP_MISSING)).action is A.SIGNAL_OWNER
    kept = finding_of(findings, unknown)
    assert kept is not None and kept.action is A.REPORT


@pytest.mark.parametrize("policy", ["zombies", "all", "leave"])
@pytest.mark.parametrize("held", list(Side))
def test_hedge_reducing_order_of_a_flat_side_is_a_zombie_though_the_other_is_held(
    held: Side, policy: ForeignOrderPolicy
) -> None:
    flat = other_side(held)
    protected = (hedge_position(held),), (hedge_stop(held, "s", hedge_cid(held)),)
    zombies = (
        # Reduce-only by hand, the exit side by hand (it only reduces, in hedge mode),
        # and a stop of a position of the flat side whose workflow is gone.
        hedge_limit(flat, flat.exit_order_side, "m1").model_copy(update={"reduce_only": True}),
        hedge_limit(flat, flat.exit_order_side, "m2"),
        hedge_stop(flat, "old", hedge_cid(flat, chain=OLD_CHAIN)),
    )
    state = hedged(protected[0], protected[1] + zombies, (hedge_owner(held),))
    findings = reconcile(state, ReconcilePolicy(foreign_orders=policy))
    assert [(f.order, f.kind, f.side) for f in findings] == [(z, K.ZOMBIE, flat) for z in zombies]
    # Posguard's own orphan goes whatever the setting; by hand, as the setting says.
    expected = [A.REPORT if policy == "leave" else A.CANCEL_ORDER] * 2 + [A.CANCEL_ORDER]
    assert [f.action for f in findings] == expected
    # Judged on a side that was flat: that side is read again before each cancel.
    assert judged_on_flat(state, findings) == {f.key for f in findings}


@pytest.mark.parametrize("silent", list(Side))
def test_hedge_one_sides_workflow_silent_leaves_the_other_judged(silent: Side) -> None:
    judged = other_side(silent)
    covers_silent = hedge_stop(silent, "s1", hedge_cid(silent))
    its_stop = hedge_stop(judged, "s2", hedge_cid(judged))
    grows = hedge_limit(judged, judged.entry_order_side, "m1")
    state = hedged(
        positions=(hedge_position(silent), hedge_position(judged, D(2))),
        orders=(covers_silent, its_stop, grows),
        owners=(hedge_silent(silent), hedge_owner(judged)),
    )
    findings = reconcile(state)
    by_side = {s: [(f.kind, f.action) for f in findings if f.side is s] for s in Side}
    # The silent side: only reported; its own stop is not judged.
    assert by_side[silent] == [(K.OWNER_SILENT, A.REPORT)]
    # The other side: its quantity changed by hand is signalled, an order that would
    # grow it is cancelled.
    assert by_side[judged] == [
        (K.QUANTITY_MISMATCH, A.SIGNAL_OWNER),
        (K.ZOMBIE, A.CANCEL_ORDER),
    ]
    assert {f.workflow_id for f in findings if f.side is judged} == {hedge_wf(judged)}
    # Nothing on the silent side could stop it: reported as well.
    bare = state.model_copy(update={"orders": [its_stop, grows]})
    assert [(f.kind, f.action) for f in reconcile(bare) if f.side is silent] == [
        (K.OWNER_SILENT, A.REPORT),
        (K.STOP_MISSING, A.REPORT),
    ]


@pytest.mark.parametrize("side", list(Side))
def test_hedge_order_of_a_side_the_exchange_did_not_say_is_never_cancelled(side: Side) -> None:
    unsided = {"position_side": None}
    by_hand = hedge_limit(side, side.exit_order_side, "m1").model_copy(
        update={**unsided, "reduce_only": True}
    )
    orphan = hedge_stop(other_side(side), "old", hedge_cid(other_side(side), chain=OLD_CHAIN))
    orphan = orphan.model_copy(update=unsided)
    for policy in ("zombies", "all"):
        # The symbol flat: a zombie whatever its side, but only reported.
        f = only(reconcile(hedged(orders=(by_hand,)), ReconcilePolicy(foreign_orders=policy)))
        assert (f.kind, f.action) == (K.ZOMBIE, A.REPORT)
        # A side held: it may be that side's stop.
        held = hedged((hedge_position(side),), (by_hand, orphan))
        found = reconcile(held, ReconcilePolicy(foreign_orders=policy))
        assert [(f.order, f.action) for f in found if f.order] == [
            (by_hand, A.REPORT),
            (orphan, A.REPORT),
        ]
    # The running owner's own stop, its side not said: still its own, no finding.
    own = hedge_stop(side, "s", hedge_cid(side)).model_copy(update=unsided)
    assert reconcile(hedged((hedge_position(side),), (own,), (hedge_owner(side),))) == []


@pytest.mark.parametrize("side", list(Side))
def test_hedge_exit_order_bigger_than_the_position_is_no_flip(side: Side) -> None:
    """In hedge mode an order on the exit side only reduces its side (it cannot open
    the other side): by hand, it is the trader's, and reported; one on the entry side
    grows the managed position and is cancelled."""
    base = (hedge_position(side),), (hedge_stop(side, "s", hedge_cid(side)),)
    too_big = hedge_limit(side, side.exit_order_side, "m1", qty=D(3))
    grows = hedge_limit(side, side.entry_order_side, "m2", qty=D("0.1"))
    state = hedged(base[0], (*base[1], too_big, grows), (hedge_owner(side),))
    assert [(f.order, f.kind, f.action) for f in reconcile(state)] == [
        (too_big, K.FOREIGN_ORDER, A.REPORT),
        (grows, K.ZOMBIE, A.CANCEL_ORDER),
    ]


@pytest.mark.parametrize("side", list(Side))
def test_hedge_phantoms_are_per_side(side: Side) -> None:
    other = other_side(side)
    # The side's workflow holds, the exchange only has the other side (owned).
    others = (hedge_position(other),), (hedge_stop(other, "s", hedge_cid(other)),)
    state = hedged(others[0], others[1], (hedge_owner(side), hedge_owner(other)))
    f = only(reconcile(state))
    assert (f.kind, f.action, f.workflow_id) == (K.PHANTOM, A.SIGNAL_OWNER, hedge_wf(side))
    assert f.key == f"phantom:{hedge_wf(side)}/{NOW_CHAIN}"
    # A row of the side's ended workflow: closed, though the other side is held.
    row = StoredPosition(
        position_id=f"{hedge_wf(side)}/{OLD_CHAIN}",
        workflow_id=hedge_wf(side),
        symbol=BTC,
        side=side,
        status="active",
        quantity=D(1),
        revision=2,
    )
    f = only(reconcile(hedged(others[0], others[1], (hedge_owner(other),), (row,))))
    assert (f.kind, f.action, f.position_id) == (K.PHANTOM_ROW, A.CLOSE_ROW, row.position_id)
    # Its side held (adopted), or its workflow running: not the reconciler's row.
    adopting = hedged((hedge_position(side),), stored=(row,))
    assert not of_kind(reconcile(adopting), K.PHANTOM_ROW)
    running = hedged(owners=(hedge_silent(side),), stored=(row,))
    assert not of_kind(reconcile(running), K.PHANTOM_ROW)


@pytest.mark.parametrize("side", list(Side))
def test_a_position_its_workflow_closed_after_the_first_read_is_not_adopted(
    side: Side,
) -> None:
    """The exchange was read holding the position and its stop; then its workflow
    closed it and ended, so the owners read next show none: untracked on the first
    read (to adopt), nothing once the symbol is read again, flat. Found by the chaos
    suite: the adopter found nothing, and the position had a second lifecycle."""
    first = account((position(side),), (stop(side, client_id=cid(OrderStep.STOP)),))
    findings = reconcile(first)
    assert [f.action for f in of_kind(findings, K.UNTRACKED)] == [Action.ADOPT]
    assert to_read_again(findings) == {BTC}
    assert slots_to_read_again(first, findings) == [(BTC, None)]
    assert slots_to_read_again(first, findings, untracked=False) == []  # before the patch
    assert reconcile(with_exchange(first, BTC, None, [])) == []
    # Still held on the read after the owners: adopted.
    again = with_exchange(first, BTC, position(side), [])
    assert [(f.kind, f.action) for f in reconcile(again)] == [(K.UNTRACKED, Action.ADOPT)]


@pytest.mark.parametrize("side", list(Side))
def test_hedge_an_untracked_side_is_read_again_on_that_side(side: Side) -> None:
    first = hedged((hedge_position(side),))
    findings = reconcile(first)
    assert [f.kind for f in findings] == [K.UNTRACKED]
    assert slots_to_read_again(first, findings) == [(BTC, side)]
    flat = ExchangePosition(symbol=BTC, side=side, qty=D(0), hedged=True)
    assert reconcile(with_exchange(first, BTC, flat, [], side)) == []


@pytest.mark.parametrize("side", list(Side))
def test_hedge_a_phantom_is_read_again_on_its_side_only(side: Side) -> None:
    other = other_side(side)
    other_stop = hedge_stop(other, "o", hedge_cid(other))
    first = hedged((hedge_position(other),), (other_stop,), (hedge_owner(side), hedge_owner(other)))
    findings = reconcile(first)
    assert [f.kind for f in findings] == [K.PHANTOM]
    assert slots_to_read_again(first, findings) == [(BTC, side)]
    its_stop = hedge_stop(side, "s", hedge_cid(side))
    # The read of the side's slot: its position and its orders; the other side's kept.
    again = with_exchange(first, BTC, hedge_position(side), [its_stop], side)
    assert reconcile(again) == []
    assert {o.exchange_order_id for o in again.orders} == {"o", "s"}
    assert {p.side for p in again.positions} == {side, other}
    # Really gone: flat on that side, still a phantom; the other side untouched.
    flat = ExchangePosition(symbol=BTC, side=side, qty=D(0), hedged=True)
    gone = with_exchange(first, BTC, flat, [other_stop], side)
    assert [f.kind for f in reconcile(gone)] == [K.PHANTOM]
    assert gone.positions == first.positions and gone.orders == first.orders
    # A read that answers for another side changes nothing.
    assert with_exchange(first, BTC, hedge_position(other, D(5)), [], side) == first
    with pytest.raises(ValueError, match="side"):
        with_exchange(first, BTC, None, [])


def test_one_way_reads_again_per_symbol() -> None:
    findings = reconcile(account(owners=(owner(Side.LONG),)))
    assert slots_to_read_again(account(owners=(owner(Side.LONG),)), findings) == [(BTC, None)]


@PROPERTY_SETTINGS
@given(state=account_states(hedge_mode=False), policy=policies, data=st.data())
def test_one_way_ignores_what_only_hedge_mode_says(
    state: AccountState, policy: ReconcilePolicy, data: st.DataObject
) -> None:
    """On a one-way account the hedge-mode fields change nothing: the same findings,
    keyed by symbol, under the one-way workflow ids."""
    findings = reconcile(state, policy)
    sides = st.sampled_from([None, *Side])
    said = state.model_copy(
        update={
            "orders": [
                o.model_copy(update={"position_side": data.draw(sides)}) for o in state.orders
            ],
            "positions": [p.model_copy(update={"hedged": True}) for p in state.positions],
        }
    )
    assert [f.model_copy(update={"order": None}) for f in reconcile(said, policy)] == [
        f.model_copy(update={"order": None}) for f in findings
    ]
    for f in findings:
        if f.kind is K.UNTRACKED:
            assert f.key == f"untracked:{f.symbol}"
            assert f.workflow_id == position_workflow_id(ACCOUNT, EXCHANGE, f.symbol)
        if f.order is not None:
            assert f.side is None
    assert slots_to_read_again(state, findings) == [
        (s, None) for s in sorted(to_read_again(findings))
    ]
