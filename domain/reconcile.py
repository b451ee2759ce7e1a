"""Account reconciliation: what is wrong between the exchange and posguard, and what to do.

One pass of the reconciler (workflows/reconcile.py) reads the account as it is
(`AccountState`: the exchange's positions and open orders, the running position
workflows with what each one says, the store's open rows) and hands it to
`reconcile`, which returns the findings and the one action for each. Pure: no
I/O, no clock; property-tested over random account states.

Why the reconciler only ever *signals* a managed position (rule 4, one writer per
stop): the position's own workflow is the only code that places, moves or cancels
its orders. So a finding about a managed position (phantom, quantity mismatch,
stop missing) becomes `Action.SIGNAL_OWNER`, and the workflow re-reads the
exchange and acts. The reconciler acts itself only where no workflow owns
anything: it starts an adopting workflow for an untracked position, cancels
orders nobody owns (zombies), and closes store rows nobody will close.

Ownership is judged from facts that cannot lag: an owner is a workflow the
reconciler has just described (running) and queried (its state and chain); an
order is posguard's when its client id parses (domain.client_ids) and belongs to
the owner's chain. A workflow that did not answer its query is `Owner.answered`
False: nothing about its position or its orders is judged in that pass (an order
placed by hand on its symbol is judged against the exchange's position alone).

Hedge mode (`AccountState.hedge_mode`): an account may hold a long and a short on
one symbol, each its own position with its own workflow
(`position/{account}/{exchange}/{symbol}/long|short`). Everything is then judged
per book (`domain.position.book_key`, the symbol and a side) instead of per
symbol: a position by its side, an owner by the side in its workflow id, an order
by the side of the position it belongs to (`OrderView.position_side`). An order
whose side the exchange did not say is never cancelled (it may be either side's
stop): it is reported. In one-way mode the book is the symbol.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from functools import lru_cache
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from domain.client_ids import OrderStep, chain_tag, parse_client_id, workflow_tag
from domain.orders import OrderView
from domain.position import (
    PositionState,
    book_key,
    parse_position_workflow_id,
    position_workflow_id,
)
from domain.requests import ExchangePosition
from domain.types import ExchangeId, Side

# A position workflow in one of these states is still opening: it is never a
# phantom, whatever the exchange says (the audit's sync-during-open race, 7.1 #5).
OPENING_STATES = frozenset(
    {PositionState.PENDING_ENTRY, PositionState.ENTRY_PLACED, PositionState.PENDING_SL}
)
# States in which a workflow says it holds the position and is between steps:
# only these are compared with the exchange.
HOLDING_STATES = frozenset({PositionState.ACTIVE, PositionState.FAILED})
# Store rows in these statuses are over.
FINISHED_STATUSES = frozenset({"closed", "rolled_back"})
# Client-id steps of orders that protect a position.
_STOP_STEPS = frozenset({OrderStep.STOP, OrderStep.EMERGENCY_STOP, OrderStep.MOVE})

UntrackedPolicy = Literal["adopt", "alert"]
ForeignOrderPolicy = Literal["leave", "zombies", "all"]


class ReconcilePolicy(BaseModel):
    """What the reconciler may do on its own (settings `[reconcile]`).

    - `untracked`: "adopt" starts a PositionWorkflow in adopt mode for a position
      no workflow owns (stop first); "alert" only reports it.
    - `foreign_orders` (orders whose client id is not posguard's): "zombies"
      cancels the two kinds that can only do harm (a reduce-only or close-position
      order on a symbol with no position and no workflow; an order that would
      open, grow or flip a position posguard manages) and reports the rest;
      "leave" never touches them; "all" cancels every one (a dedicated account).
    - `alert_after_passes`: a finding still there after this many passes raises
      one alert (not one per pass).
    """

    model_config = ConfigDict(frozen=True)

    untracked: UntrackedPolicy = "adopt"
    foreign_orders: ForeignOrderPolicy = "zombies"
    alert_after_passes: int = Field(default=3, ge=1)


class Owner(BaseModel):
    """A running PositionWorkflow of the account, as it answered the reconciler.

    `answered` False: the workflow runs but did not answer its `state` query in
    time; the other fields are then unknown and its symbol is left alone.
    `chain` is the first run id of its continue-as-new chain (its position id is
    ``{workflow_id}/{chain}``); `stop_client_order_id` its current stop, if any.
    """

    model_config = ConfigDict(frozen=True)

    workflow_id: str
    symbol: str
    answered: bool = True
    chain: str | None = None
    side: Side | None = None
    state: PositionState | None = None
    qty: Decimal = Decimal(0)
    stop_client_order_id: str | None = None

    @property
    def position_id(self) -> str | None:
        return None if self.chain is None else f"{self.workflow_id}/{self.chain}"

    def owns_order(self, client_order_id: str | None) -> bool:
        """True when `client_order_id` was generated by this owner's current position."""
        parsed = parse_client_id(client_order_id)
        return (
            parsed is not None
            and self.chain is not None
            and parsed.workflow_tag == workflow_tag(self.workflow_id)
            and parsed.chain_tag == chain_tag(self.chain)
        )


class StoredPosition(BaseModel):
    """A `positions` row the store still has open (status not closed/rolled back)."""

    model_config = ConfigDict(frozen=True)

    position_id: str
    workflow_id: str
    symbol: str
    side: Side
    status: str
    quantity: Decimal = Decimal(0)
    revision: int = 0


class AccountState(BaseModel):
    """Everything one pass read about one exchange account.

    `hedge_mode`: the account trades in hedge mode (a long and a short per symbol,
    each its own position and workflow); see the module's docstring.
    """

    model_config = ConfigDict(frozen=True)

    account: str
    exchange: ExchangeId
    positions: list[ExchangePosition] = Field(default_factory=list)
    orders: list[OrderView] = Field(default_factory=list)
    owners: list[Owner] = Field(default_factory=list)
    stored: list[StoredPosition] = Field(default_factory=list)
    hedge_mode: bool = False


# --- books: where each position, owner and order belongs ------------------------------


def owner_slot(owner: Owner) -> Side | None:
    """The side of the position slot an owner runs for, from its workflow id (hedge
    mode); None for a one-way id. Not its answered `side`: a silent owner has none."""
    return _slot_of_workflow(owner.workflow_id)


@lru_cache(maxsize=4096)
def _slot_of_workflow(workflow_id: str) -> Side | None:
    key = parse_position_workflow_id(workflow_id)
    return key.hedge_side if key is not None else None


def _position_book(state: AccountState, pos: ExchangePosition) -> str:
    return book_key(pos.symbol, pos.side if state.hedge_mode else None)


def _owner_book(state: AccountState, owner: Owner) -> str:
    return book_key(owner.symbol, owner_slot(owner) if state.hedge_mode else None)


def _order_book(state: AccountState, order: OrderView) -> str:
    """The order's book; in hedge mode one whose side is unknown is in the symbol's
    own book, which holds no position there (positions are by side)."""
    return book_key(order.symbol, order.position_side if state.hedge_mode else None)


def _unsided(state: AccountState, order: OrderView) -> bool:
    """Hedge mode, and the exchange did not say which side's position the order is of."""
    return state.hedge_mode and order.position_side is None


@lru_cache(maxsize=4096)
def _workflow_tag_of(account: str, exchange: ExchangeId, symbol: str, side: Side | None) -> str:
    return workflow_tag(position_workflow_id(account, exchange, symbol, side))


def _workflow_slot(state: AccountState, symbol: str, tag: str) -> tuple[bool, Side | None]:
    """Whether a posguard client id's workflow tag is of this account's workflow for
    `symbol`, and the side of that workflow's slot (hedge mode; None in one-way)."""
    slots: tuple[Side | None, ...] = (Side.LONG, Side.SHORT) if state.hedge_mode else (None,)
    for side in slots:
        if tag == _workflow_tag_of(state.account, state.exchange, symbol, side):
            return True, side
    return False, None


class FindingKind(StrEnum):
    """What is wrong (or worth reporting)."""

    PHANTOM = "phantom"  # a workflow holds a position the exchange does not have
    PHANTOM_ROW = "phantom_row"  # a store row open, no workflow, the exchange flat
    UNTRACKED = "untracked"  # a position on the exchange no workflow owns
    QUANTITY_MISMATCH = "quantity_mismatch"
    STOP_MISSING = "stop_missing"
    ZOMBIE = "zombie"  # an order nobody should have
    FOREIGN_ORDER = "foreign_order"  # not posguard's, not harmful: reported
    OWNER_SILENT = "owner_silent"  # a running workflow that does not answer
    READ_FAILED = "read_failed"  # the pass could not read the account (memory only)


class Action(StrEnum):
    """The one thing done about a finding."""

    SIGNAL_OWNER = "signal_owner"  # the owning workflow is told to look now
    ADOPT = "adopt"  # a PositionWorkflow is started in adopt mode
    CANCEL_ORDER = "cancel_order"
    CLOSE_ROW = "close_row"  # the store row is closed as phantom
    REPORT = "report"  # recorded, nothing done


class Finding(BaseModel):
    """One finding of a pass and its action. `key` names it across passes."""

    model_config = ConfigDict(frozen=True)

    kind: FindingKind
    key: str
    symbol: str
    action: Action
    reason: str
    workflow_id: str | None = None
    position_id: str | None = None
    side: Side | None = None
    expected_qty: Decimal | None = None
    exchange_qty: Decimal | None = None
    entry_price: Decimal | None = None
    state: str | None = None
    order: OrderView | None = None
    stored_revision: int | None = None


def _is_reducing(order: OrderView, hedge_mode: bool = False) -> bool:
    if order.reduce_only or order.close_position:
        return True
    # Hedge mode: an order on the exit side of its position can only reduce that
    # position (the exchanges refuse reduce-only there: the side itself reduces).
    return (
        hedge_mode
        and order.position_side is not None
        and order.side is order.position_side.exit_order_side
    )


def may_stop_a_position(order: OrderView, hedge_mode: bool = False) -> bool:
    """Whether the order could stop a position: it reduces one, or is conditional."""
    return _is_reducing(order, hedge_mode) or order.is_conditional


def _opens_or_flips(order: OrderView, pos: ExchangePosition | None) -> bool:
    """Whether a (not reduce-only) order would open, grow or flip the position.

    Judged against the exchange's position, not the workflow's view of it: that view
    may be stale (a position flipped by hand) or unknown (a workflow that did not
    answer), and an order that only reduces what the exchange holds may be the
    position's only protection. In hedge mode `pos` is the position of the order's
    own side (an order on its exit side only reduces, so is never asked about).
    """
    if order.side is None:
        return True  # cannot tell: treat as harmful
    if pos is None or pos.side is None:
        return True  # nothing held (or its side unknown): it would open one
    if order.side is pos.side.entry_order_side:
        return True  # it would grow the position behind the workflow's back
    return order.qty is None or order.qty > pos.qty  # more than held: a flip


def _protected_by_owner(
    owner: Owner | None, orders: Iterable[OrderView], hedge_mode: bool = False
) -> bool:
    """Whether the owner holds the position with a stop of its own open on the exchange."""
    if owner is None or not owner.answered or owner.state not in HOLDING_STATES:
        return False
    return any(_is_own_stop(owner, o, hedge_mode) for o in orders)


def _is_own_stop(owner: Owner, order: OrderView, hedge_mode: bool = False) -> bool:
    if order.position_stop:
        # The position's own stop-loss (Bybit's, sent with the entry): it has no
        # client id, and is the stop of whoever holds the position; in hedge mode of
        # the position of its side (one whose side is unknown: only if its journaled
        # client id says it is the owner's).
        if order.symbol != owner.symbol or not order.is_conditional:
            return False
        if not hedge_mode:
            return True
        if order.position_side is None:
            return owner.owns_order(order.client_order_id)
        return order.position_side is owner_slot(owner)
    parsed = parse_client_id(order.client_order_id)
    return (
        parsed is not None
        and parsed.step in _STOP_STEPS
        and order.is_conditional
        and owner.owns_order(order.client_order_id)
    )


def reconcile(state: AccountState, policy: ReconcilePolicy | None = None) -> list[Finding]:
    """The findings of one pass over `state`, each with its action.

    Guarantees (property-tested):
    - an order owned by a running workflow (its client id is of the owner's chain)
      is never a zombie, and nothing about an owner that did not answer is judged;
    - a workflow in an opening state is never a phantom;
    - every position on the exchange ends owned by exactly one workflow: it has an
      owner, or (policy "adopt") exactly one ADOPT finding;
    - an orphaned order that reduces a position is not cancelled while it may be
      the position's only stop (until the position's owner has its own stop).

    In hedge mode each holds per book (symbol and side): a position is adopted
    under its side's workflow id, an owner's stop protects its own side only, and
    an order whose side is unknown is never cancelled.
    """
    policy = policy or ReconcilePolicy()
    owners = {_owner_book(state, o): o for o in state.owners}
    positions = {_position_book(state, p): p for p in state.positions if not p.is_flat}
    books = _Books(state)
    findings: list[Finding] = []
    for book, pos in sorted(positions.items()):
        findings.extend(_position_findings(state, policy, pos, owners.get(book), books))
    for owner in sorted(state.owners, key=lambda o: (o.symbol, owner_slot(o) or "")):
        finding = _phantom_owner(owner, positions.get(_owner_book(state, owner)))
        if finding is not None:
            findings.append(finding)
    for row in sorted(state.stored, key=lambda r: r.position_id):
        finding = _phantom_row(state, row, owners, positions)
        if finding is not None:
            findings.append(finding)
    for order in sorted(state.orders, key=lambda o: (o.symbol, o.exchange_order_id)):
        finding = _order_finding(state, policy, order, owners, positions, books)
        if finding is not None:
            findings.append(finding)
    return findings


class _Books:
    """The account's open orders by book, and which of them count for an owner."""

    def __init__(self, state: AccountState) -> None:
        self._state = state
        self._orders: dict[str, list[OrderView]] = {}
        for order in state.orders:
            self._orders.setdefault(_order_book(state, order), []).append(order)

    def of(self, book: str) -> list[OrderView]:
        return self._orders.get(book, [])

    def of_owner(self, owner: Owner) -> list[OrderView]:
        """The orders on the owner's book; in hedge mode also the owner's own orders
        (by client id) whose side the exchange did not say: its orders are all of its
        side. An order of the other side never counts for it."""
        state = self._state
        orders = self.of(_owner_book(state, owner))
        if not state.hedge_mode:
            return orders
        unsided = self.of(owner.symbol)
        return orders + [o for o in unsided if _of_workflow(o, owner.workflow_id)]


def _of_workflow(order: OrderView, workflow_id: str) -> bool:
    parsed = parse_client_id(order.client_order_id)
    return parsed is not None and parsed.workflow_tag == workflow_tag(workflow_id)


def _position_findings(
    state: AccountState,
    policy: ReconcilePolicy,
    pos: ExchangePosition,
    owner: Owner | None,
    books: _Books,
) -> list[Finding]:
    symbol = pos.symbol
    if owner is None:
        adoptable = pos.side is not None and pos.entry_price is not None
        adopt = policy.untracked == "adopt" and adoptable
        # Hedge mode: adopted under its side's workflow id (none when its side is unknown).
        if not state.hedge_mode:
            adopter: str | None = position_workflow_id(state.account, state.exchange, symbol)
        elif pos.side is not None:
            adopter = position_workflow_id(state.account, state.exchange, symbol, pos.side)
        else:
            adopter = None
        return [
            Finding(
                kind=FindingKind.UNTRACKED,
                key=f"untracked:{_position_book(state, pos)}",
                symbol=symbol,
                action=Action.ADOPT if adopt else Action.REPORT,
                reason="a position no workflow owns: adopt it (stop first)"
                if adopt
                else (
                    "a position no workflow owns (adoption is off: alert only)"
                    if adoptable
                    else "a position no workflow owns, without side or entry price: cannot adopt"
                ),
                workflow_id=adopter,
                side=pos.side,
                exchange_qty=pos.qty,
                entry_price=pos.entry_price,
            )
        ]
    if not owner.answered:
        return _silent_owner_findings(state, owner, pos, books.of_owner(owner))
    if owner.state not in HOLDING_STATES:
        return []  # opening or closing: the workflow is at work
    found: list[Finding] = []

    def signal(kind: FindingKind, key: str, reason: str) -> None:
        found.append(
            Finding(
                kind=kind,
                key=f"{key}:{owner.position_id}",
                symbol=symbol,
                action=Action.SIGNAL_OWNER,
                reason=reason,
                workflow_id=owner.workflow_id,
                position_id=owner.position_id,
                side=pos.side,
                expected_qty=owner.qty,
                exchange_qty=pos.qty,
                state=owner.state.value if owner.state else None,
            )
        )

    if not _holds(state, owner, pos):
        signal(
            FindingKind.QUANTITY_MISMATCH,
            "mismatch",
            f"the workflow holds {owner.side} {owner.qty}, the exchange {pos.side} {pos.qty}",
        )
    if not _protected_by_owner(owner, books.of_owner(owner), state.hedge_mode):
        signal(
            FindingKind.STOP_MISSING,
            "stop_missing",
            "no stop of the position's own is open on the exchange",
        )
    return found


def _holds(state: AccountState, owner: Owner | None, pos: ExchangePosition | None) -> bool:
    """Whether the owner holds what the exchange has on its book: the same side and
    quantity (hedge mode: the quantity; the book is the side)."""
    if owner is None or pos is None or owner.qty != pos.qty:
        return False
    return state.hedge_mode or owner.side is pos.side


def _silent_owner_findings(
    state: AccountState, owner: Owner, pos: ExchangePosition, orders: Iterable[OrderView]
) -> list[Finding]:
    """A position whose workflow runs but does not answer (stuck, or no worker).

    Nothing is done for it (only its workflow may act), but it is reported; and if
    no order on the exchange could stop it at all, that is reported too.
    """
    common = {
        "symbol": pos.symbol,
        "action": Action.REPORT,
        "workflow_id": owner.workflow_id,
        "side": pos.side,
        "exchange_qty": pos.qty,
    }
    found = [
        Finding(
            kind=FindingKind.OWNER_SILENT,
            key=f"silent:{owner.workflow_id}",
            reason="its workflow runs but does not answer (stuck, or no worker polls its "
            "task queue): nothing can be done for it until it does",
            **common,
        )
    ]
    exit_side = pos.side.exit_order_side if pos.side is not None else None
    covered = any(
        may_stop_a_position(o, state.hedge_mode) and (exit_side is None or o.side is exit_side)
        for o in orders
    )
    if not covered:
        found.append(
            Finding(
                kind=FindingKind.STOP_MISSING,
                key=f"stop_missing:{owner.workflow_id}",
                reason="no order on the exchange could stop this position, and its workflow "
                "does not answer",
                **common,
            )
        )
    return found


def _phantom_owner(owner: Owner, pos: ExchangePosition | None) -> Finding | None:
    """A workflow that holds a position the exchange no longer has (`pos`: the
    position on the owner's book; hedge mode: of its side)."""
    if not owner.answered or owner.state not in HOLDING_STATES or owner.qty <= 0:
        return None
    if pos is not None and pos.side is owner.side:
        return None
    if pos is not None:
        return None  # the other side: a quantity mismatch, found with the position
    return Finding(
        kind=FindingKind.PHANTOM,
        key=f"phantom:{owner.position_id}",
        symbol=owner.symbol,
        action=Action.SIGNAL_OWNER,
        reason=f"the workflow holds {owner.side} {owner.qty}, the exchange is flat",
        workflow_id=owner.workflow_id,
        position_id=owner.position_id,
        side=owner.side,
        expected_qty=owner.qty,
        exchange_qty=Decimal(0),
        state=owner.state.value if owner.state else None,
    )


def _phantom_row(
    state: AccountState,
    row: StoredPosition,
    owners: Mapping[str, Owner],
    positions: Mapping[str, ExchangePosition],
) -> Finding | None:
    """An open store row whose workflow is gone, on a flat book: nobody will close it.

    A row whose workflow still runs is that workflow's to write (a row of an
    earlier position is superseded by the workflow's next write); a row on a
    book that has a position is the adopter's to supersede. In hedge mode the
    row's book is its side's: the other side of the symbol is another position.
    """
    if row.status in FINISHED_STATUSES:
        return None
    if state.hedge_mode:
        # By its workflow id: whatever side its row says, its workflow writes it.
        if any(o.workflow_id == row.workflow_id for o in owners.values()):
            return None
        book = book_key(row.symbol, row.side)
    else:
        owner = owners.get(row.symbol)
        if owner is not None and owner.workflow_id == row.workflow_id:
            return None
        book = row.symbol
    if book in positions:
        return None
    return Finding(
        kind=FindingKind.PHANTOM_ROW,
        key=f"phantom_row:{row.position_id}",
        symbol=row.symbol,
        action=Action.CLOSE_ROW,
        reason=f"the store says {row.status} {row.quantity}, no workflow runs for it "
        "and the exchange is flat: closed as phantom",
        workflow_id=row.workflow_id,
        position_id=row.position_id,
        side=row.side,
        expected_qty=row.quantity,
        exchange_qty=Decimal(0),
        state=row.status,
        stored_revision=row.revision,
    )


def _order_finding(
    state: AccountState,
    policy: ReconcilePolicy,
    order: OrderView,
    owners: Mapping[str, Owner],
    positions: Mapping[str, ExchangePosition],
    books: _Books,
) -> Finding | None:
    symbol = order.symbol
    hedge = state.hedge_mode
    unsided = _unsided(state, order)
    # The position and owner of the order's book: in hedge mode of its own side (none
    # when the exchange did not say which side it is of).
    book = _order_book(state, order)
    owner = None if unsided else owners.get(book)
    pos = None if unsided else positions.get(book)
    parsed = parse_client_id(order.client_order_id)

    # Binance numbers regular and algo orders apart, per symbol: all three name one.
    kind_of_order = "algo" if order.is_conditional else "order"

    def finding(
        kind: FindingKind, action: Action, reason: str, about: Owner | None = owner
    ) -> Finding:
        return Finding(
            kind=kind,
            key=f"order:{symbol}:{kind_of_order}:{order.exchange_order_id}",
            symbol=symbol,
            action=action,
            reason=reason,
            workflow_id=about.workflow_id if about is not None else None,
            position_id=about.position_id if about is not None else None,
            side=order.position_side if hedge else None,
            order=order,
        )

    if parsed is not None:
        ours, slot = _workflow_slot(state, symbol, parsed.workflow_tag)
        if not ours:
            return finding(
                FindingKind.FOREIGN_ORDER,
                Action.REPORT,
                "a posguard client id of no workflow of this account (another deployment?): "
                "left alone",
            )
        # Whose it is, its client id says (in hedge mode it names the side's workflow);
        # what it could do, the position of the side it is on.
        its_owner = owners.get(book_key(symbol, slot))
        if its_owner is not None:
            if not its_owner.answered or its_owner.chain is None:
                return None  # cannot tell which position it is of: next pass
            if its_owner.owns_order(order.client_order_id):
                return None  # the owner's: its own look handles it
            reason = "an order of an earlier position of this workflow"
        else:
            reason = "an order of a position whose workflow is closed or absent"
        if unsided:
            return finding(
                FindingKind.ZOMBIE,
                Action.REPORT,
                f"{reason}; kept: the exchange does not say which side's position it is of "
                "(hedge mode), so it may be a position's only stop",
                its_owner,
            )
        if pos is not None and _is_reducing_or_stop(order, parsed.step, hedge):
            # Protected only by an owner that holds what the exchange has: the stop of a
            # workflow whose view differs (other side, other quantity) does not cover
            # this position until the workflow, signalled, has re-protected it.
            if not _covered(state, owner, pos, books):
                return finding(
                    FindingKind.ZOMBIE,
                    Action.REPORT,
                    f"{reason}; kept while it may be the position's only stop "
                    "(cancelled once the position's owner has its own)",
                    its_owner,
                )
        return finding(FindingKind.ZOMBIE, Action.CANCEL_ORDER, reason, its_owner)
    if unsided:
        # Not posguard's, and it may be either side's stop, or open either side: left alone.
        held = any(p.symbol == symbol for p in positions.values()) or any(
            o.symbol == symbol for o in owners.values()
        )
        if _is_reducing(order, hedge) and not held:
            return finding(
                FindingKind.ZOMBIE,
                Action.REPORT,
                "a reduce-only order on a symbol with no position; the exchange does not "
                "say which side it is of (hedge mode): left alone",
            )
        return finding(
            FindingKind.FOREIGN_ORDER,
            Action.REPORT,
            "not posguard's; the exchange does not say which side's position it is of "
            "(hedge mode): left alone",
        )
    if order.position_stop and owner is not None and pos is not None:
        # The stop that lives on the position its owner holds: the owner's, like the
        # position. (With no position it is gone with it; with no owner, a trader's.)
        return None
    # Not posguard's.
    cancel_zombies = policy.foreign_orders in ("zombies", "all")
    if _is_reducing(order, hedge) and pos is None and owner is None:
        # Hedge mode: whatever the other side of the symbol holds (it cannot reduce that).
        return finding(
            FindingKind.ZOMBIE,
            Action.CANCEL_ORDER if cancel_zombies else Action.REPORT,
            (
                "a reduce-only order on a side with no position"
                if hedge
                else "a reduce-only order on a symbol with no position"
            )
            + ("" if cancel_zombies else ": left alone (setting)"),
        )
    # An order that could stop the position is never cancelled while it may be the
    # position's only stop, whatever else it is (a trader's stop, or one too big).
    exit_side = pos.side.exit_order_side if pos is not None and pos.side else None
    may_protect = pos is not None and (
        _is_reducing(order, hedge) or (order.is_conditional and order.side is exit_side)
    )
    only_stop = may_protect and not _covered(state, owner, pos, books)
    if not _is_reducing(order, hedge) and owner is not None and _opens_or_flips(order, pos):
        reason = "an order that would open, grow or flip a position posguard manages"
        if only_stop:
            return finding(
                FindingKind.ZOMBIE,
                Action.REPORT,
                f"{reason}; kept while it may be the position's only stop",
            )
        return finding(
            FindingKind.ZOMBIE,
            Action.CANCEL_ORDER if cancel_zombies else Action.REPORT,
            reason + ("" if cancel_zombies else ": left alone (setting)"),
        )
    if policy.foreign_orders == "all":
        if only_stop:
            return finding(
                FindingKind.FOREIGN_ORDER,
                Action.REPORT,
                "not posguard's; kept while it may be the position's only stop (setting: all)",
            )
        return finding(
            FindingKind.FOREIGN_ORDER, Action.CANCEL_ORDER, "not posguard's (setting: all)"
        )
    return finding(FindingKind.FOREIGN_ORDER, Action.REPORT, "not posguard's: left alone")


def _covered(
    state: AccountState, owner: Owner | None, pos: ExchangePosition | None, books: _Books
) -> bool:
    """Whether the book's owner holds what the exchange has there, with a stop of its own."""
    if owner is None or not _holds(state, owner, pos):
        return False
    return _protected_by_owner(owner, books.of_owner(owner), state.hedge_mode)


def _is_reducing_or_stop(order: OrderView, step: OrderStep, hedge_mode: bool = False) -> bool:
    return _is_reducing(order, hedge_mode) or order.is_conditional or step in _STOP_STEPS


# --- which owners to ask ---------------------------------------------------------------


class ListedWorkflow(BaseModel):
    """A running position workflow as visibility lists it (may lag by a moment)."""

    model_config = ConfigDict(frozen=True)

    workflow_id: str
    symbol: str
    state: PositionState | None = None


def owners_on_record(
    listed: Iterable[ListedWorkflow], stored: Iterable[StoredPosition]
) -> list[Owner]:
    """Owners as visibility and the store describe them: cheap to read, and may lag.

    A workflow is described by its newest open store row (chain, side, quantity)
    and the state its search attribute shows. Where the two disagree on the state,
    or there is no row yet, it is `answered=False`: nothing is judged of it until
    it is asked directly (`to_confirm`).
    """
    rows: dict[str, StoredPosition] = {}
    for stored_row in stored:
        rows[stored_row.workflow_id] = stored_row  # oldest first: the newest row wins
    owners: list[Owner] = []
    for wf in listed:
        row = rows.get(wf.workflow_id)
        if row is None or wf.state is None or row.status != wf.state.value:
            owners.append(Owner(workflow_id=wf.workflow_id, symbol=wf.symbol, answered=False))
            continue
        owners.append(
            Owner(
                workflow_id=wf.workflow_id,
                symbol=wf.symbol,
                chain=row.position_id[len(wf.workflow_id) + 1 :] or None,
                side=row.side,
                state=wf.state,
                qty=row.quantity,
            )
        )
    return owners


def to_confirm(state: AccountState, findings: Iterable[Finding]) -> set[str]:
    """Symbols whose owners (in hedge mode: both of a symbol's) must be asked directly
    before anything is done about them.

    Every symbol with a finding other than a foreign order's report (so nothing is
    ever acted on, or recorded as wrong, from data that may lag), and every symbol
    whose owner the records do not describe well enough (no row yet, or a row and a
    search attribute that disagree: a workflow between two steps). In a consistent
    account the answer is empty: a pass then asks no workflow at all.
    """
    symbols = {f.symbol for f in findings if f.kind is not FindingKind.FOREIGN_ORDER}
    symbols.update(o.symbol for o in state.owners if not o.answered)
    return symbols


def with_owners(
    state: AccountState, symbols: Iterable[str], asked: Iterable[Owner]
) -> AccountState:
    """`state` with the owners of `symbols` replaced by what they answered (`asked`)."""
    replaced = set(symbols)
    owners = [o for o in state.owners if o.symbol not in replaced]
    owners.extend(o for o in asked if o.symbol in replaced)
    return state.model_copy(update={"owners": owners})


# Findings about a managed position that compare the owner's answer with the
# exchange: read again after the owner answered (`with_exchange`), since an owner
# asked after the exchange may describe a position the first read predates.
AGAINST_THE_OWNER = frozenset(
    {FindingKind.PHANTOM, FindingKind.QUANTITY_MISMATCH, FindingKind.STOP_MISSING}
)
# ...and a position no owner is found for: its workflow may have closed it and ended
# after the first read (the owners, read later, show none), so it is adopted only if
# a read made after the owners still shows it; else a position posguard itself just
# closed would be adopted (a second lifecycle, a "nothing to adopt" warning).
READ_AGAIN = AGAINST_THE_OWNER | {FindingKind.UNTRACKED}


def to_read_again(findings: Iterable[Finding], *, untracked: bool = True) -> set[str]:
    """Symbols whose exchange position and orders must be read again (see above);
    `untracked=False`: not for an untracked position (passes recorded before it was)."""
    kinds = READ_AGAIN if untracked else AGAINST_THE_OWNER
    return {f.symbol for f in findings if f.kind in kinds}


def slots_to_read_again(
    state: AccountState, findings: Iterable[Finding], *, untracked: bool = True
) -> list[tuple[str, Side | None]]:
    """The position slots to read again (see above), in a stable order: each symbol of
    `to_read_again` (side None) in one-way mode; in hedge mode each (symbol, side) of
    the workflow such a finding is about (one whose workflow id names no side keeps
    the first read: reading a hedge symbol without a side could lose a position)."""
    if not state.hedge_mode:
        return [(symbol, None) for symbol in sorted(to_read_again(findings, untracked=untracked))]
    kinds = READ_AGAIN if untracked else AGAINST_THE_OWNER
    slots: set[tuple[str, Side]] = set()
    for f in findings:
        key = parse_position_workflow_id(f.workflow_id or "")
        if f.kind in kinds and key is not None and key.hedge_side is not None:
            slots.add((f.symbol, key.hedge_side))
    return [(symbol, side) for symbol, side in sorted(slots)]


def with_exchange(
    state: AccountState,
    symbol: str,
    position: ExchangePosition | None,
    orders: Iterable[OrderView],
    side: Side | None = None,
) -> AccountState:
    """`state` with `symbol`'s position and open orders replaced by a newer read.

    Hedge mode: only the slot of `side` (required) is replaced, its position and
    the orders on its side; the other side, and orders whose side is unknown, stay
    as first read. A read that answers for another side changes nothing.
    """
    if state.hedge_mode:
        if side is None:
            raise ValueError("hedge mode: a slot read again has a side")
        if position is not None and not position.is_flat and position.side is not side:
            return state  # not the slot asked for: keep what was read
        book = book_key(symbol, side)
        positions = [p for p in state.positions if _position_book(state, p) != book]
        if position is not None and not position.is_flat:
            positions.append(position)
        kept = [o for o in state.orders if _order_book(state, o) != book]
        kept.extend(o for o in orders if _order_book(state, o) == book)
        return state.model_copy(update={"positions": positions, "orders": kept})
    positions = [p for p in state.positions if p.symbol != symbol]
    if position is not None and not position.is_flat:
        positions.append(position)
    kept = [o for o in state.orders if o.symbol != symbol]
    kept.extend(o for o in orders if o.symbol == symbol)
    return state.model_copy(update={"positions": positions, "orders": kept})


def judged_on_flat(state: AccountState, findings: Iterable[Finding]) -> set[str]:
    """Keys of the order findings judged on a book with no position when read (the
    symbol's, or in hedge mode the order's side's): before such an order is
    cancelled, its book must be read again (a position may have opened since)."""
    listed = {_position_book(state, p) for p in state.positions}
    flat = {_position_book(state, p) for p in state.positions if p.is_flat}
    flat |= {_order_book(state, o) for o in state.orders} - listed
    return {f.key for f in findings if f.order is not None and _order_book(state, f.order) in flat}


# --- memory across passes ----------------------------------------------------------


class FindingMemo(BaseModel):
    """What the reconciler remembers of a finding between passes."""

    model_config = ConfigDict(frozen=True)

    kind: FindingKind
    first_seen: AwareDatetime
    passes: int = Field(default=1, ge=1)
    alerted: bool = False


class Remembered(BaseModel):
    """`remember`'s answer: the new memory, which findings are new, which to alert now."""

    model_config = ConfigDict(frozen=True)

    memory: dict[str, FindingMemo]
    new: list[str]
    alert: list[str]


def remember(
    previous: Mapping[str, FindingMemo],
    findings: Iterable[Finding],
    now: datetime,
    policy: ReconcilePolicy | None = None,
) -> Remembered:
    """Carry the memory of findings over one pass.

    A finding is new when the previous pass did not have it (its events are then
    recorded); one that has been there for `alert_after_passes` passes is alerted
    once; a finding that is gone is forgotten (it alerts again if it comes back).
    """
    policy = policy or ReconcilePolicy()
    memory: dict[str, FindingMemo] = {}
    new: list[str] = []
    alert: list[str] = []
    for f in findings:
        if f.key in memory:
            continue
        before = previous.get(f.key)
        if before is None or before.kind is not f.kind:
            memo = FindingMemo(kind=f.kind, first_seen=now)
            new.append(f.key)
        else:
            memo = before.model_copy(update={"passes": before.passes + 1})
        if memo.passes >= policy.alert_after_passes and not memo.alerted:
            alert.append(f.key)
            memo = memo.model_copy(update={"alerted": True})
        memory[f.key] = memo
    return Remembered(memory=memory, new=new, alert=alert)
