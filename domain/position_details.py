"""What the Temporal Web UI shows of a running position (its "current details").

Pure: the workflow hands in its snapshot and the last mark price it was told of;
the text is Markdown, which the Web UI renders on the run's page.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from domain.position import PositionSnapshot, PositionState, is_terminal, realised_pnl
from domain.types import Side

_HOLDING = frozenset(
    {PositionState.PENDING_SL, PositionState.ACTIVE, PositionState.CLOSING, PositionState.FAILED}
)


def _at(moment: datetime | None) -> str:
    return "—" if moment is None else moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def stop_distance_pct(side: Side, stop: Decimal, mark: Decimal) -> Decimal | None:
    """How far the mark is from the stop, in percent of the mark (to 0.01), on the
    position's side: positive while the stop is below a long's mark (above a short's),
    zero or negative once the mark has reached it. None without a positive mark."""
    if mark <= 0:
        return None
    return (side.sign * (mark - stop) / mark * 100).quantize(Decimal("0.01"))


def unrealised_pnl(side: Side, s: PositionSnapshot, mark: Decimal) -> Decimal | None:
    """What the quantity held would gain (or lose, negative) if it closed at `mark`,
    before fees; None when nothing is held or the entry price is not known yet."""
    entry = s.avg_entry_price
    if entry is None or s.qty <= 0:
        return None
    return realised_pnl(side, entry, mark, s.qty)


def details_markdown(
    side: Side,
    symbol: str,
    s: PositionSnapshot,
    mark: Decimal | None = None,
    marked_at: datetime | None = None,
) -> str:
    """The run's current details: side, size and state; stop, its distance from the
    mark, entry, unrealised and realised PnL; whether a stop protects the position
    and since when it stands where it is; for an ended run, how it ended.

    `mark` is the last price the workflow was told of (None: none yet).
    """
    head = f"**{side.value} {s.qty} {symbol}** — {s.state.value}"
    entry, stop = s.avg_entry_price, s.stop_price
    lines = [head]
    if is_terminal(s.state):
        reason = s.close_reason.value if s.close_reason is not None else "—"
        lines.append(
            f"ended: **{reason}** at {_at(s.closed_at)} · exit {s.avg_exit_price} · "
            f"realised {s.realised_pnl} · fees {s.fees} · net {s.net_pnl}"
        )
        return "\n\n".join(lines)
    price = f"entry {entry}"
    if mark is not None:
        price += f" · mark {mark} ({_at(marked_at)})"
        unrealised = unrealised_pnl(side, s, mark)
        if unrealised is not None:
            price += f" · unrealised {unrealised}"
    lines.append(price)
    if stop is not None:
        distance = ""
        pct = None if mark is None else stop_distance_pct(side, stop, mark)
        if pct is not None:
            distance = f" ({pct} % from the mark)"
        lines.append(f"protected: stop {stop}{distance}, where it is since {_at(s.stop_moved_at)}")
    elif s.emergency_stop is not None:
        lines.append(f"**emergency stop only**: {s.emergency_stop.trigger_price}")
    elif s.state in _HOLDING and s.qty > 0:
        lines.append("**no stop on the exchange**")
    lines.append(f"realised {s.realised_pnl} · fees {s.fees}")
    return "\n\n".join(lines)
