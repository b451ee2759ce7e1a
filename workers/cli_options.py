"""The value types, shared options and callbacks of the `posguard` command line (Click).

A value the operator mistypes is refused by Click before anything connects or
starts, with one line naming the option and what it expects. The parsers are the
ones `position_commands` tests (`stop_rule`, `percent`, `duration`, ...): here they
only become Click types.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import click

from domain.position import CloseReason
from domain.types import ExchangeId, Side
from workers import cli_values as values
from workers.position_commands import Args
from workers.settings import Settings

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

Command = Callable[[Args, Settings], Coroutine[Any, Any, int]]


@dataclass(frozen=True)
class Invocation:
    """A parsed command line: which command (`("db", "migrate")`), its function and
    its arguments (one attribute per option and argument)."""

    path: tuple[str, ...]
    func: Command
    args: Args
    verbose: bool = False

    @property
    def command(self) -> str:
        """The top-level command: `db` of `posguard db migrate`."""
        return self.path[0]


def runs(func: Command) -> Callable[..., Invocation]:
    """The Click callback of a command implemented by `func`: it returns the
    Invocation for `main` to run.

    A repeatable option given no times reads as None ("not given"), and one given
    several times as a list.
    """

    def callback(**params: Any) -> Invocation:
        ctx = click.get_current_context()
        for name, value in params.items():
            if isinstance(value, tuple):
                params[name] = list(value) or None
        return Invocation(
            path=tuple(ctx.command_path.split()[1:]),
            func=func,
            args=Args(**params),
            verbose=bool(ctx.find_root().params.get("verbose")),
        )

    return callback


class Parsed(click.ParamType, Generic[T]):  # type: ignore[type-arg]  # generic from Click 8.3
    """A Click type from a parser that raises ValueError on a bad value."""

    def __init__(self, name: str, parse: Callable[[str], T]) -> None:
        self.name = name
        self._parse = parse

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> T:
        if not isinstance(value, str):  # a default, already a value
            return value  # type: ignore[no-any-return]
        try:
            return self._parse(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


AMOUNT = Parsed("AMOUNT", values.amount)
STOP = Parsed("LEVEL", values.stop_rule)
TAKE_PROFIT = Parsed("LEVEL", values.take_profit_rule)
PERCENT = Parsed("PCT", values.percent)
DURATION = Parsed("DURATION", values.duration)
SYMBOL = Parsed("SYMBOL", values.symbol)
POSITIVE_INT = click.IntRange(min=1)
MULTIPLE = Parsed("K", values.positive)

SIDES = click.Choice([s.value for s in Side])
EXCHANGES = click.Choice([e.value for e in ExchangeId])
CLOSE_REASONS = click.Choice([r.value for r in CloseReason])


def _apply(f: F, decorators: list[Callable[[F], F]]) -> F:
    for decorator in reversed(decorators):
        f = decorator(f)
    return f


def account_options(f: F) -> F:
    """`--account` and `--exchange`: which configured account a command acts on."""
    return _apply(
        f,
        [
            click.option(
                "--account", metavar="NAME", help="configured account (default: the first one)"
            ),
            click.option(
                "--exchange",
                type=EXCHANGES,
                help="the first account on this exchange (binanceusdm or bybit)",
            ),
        ],
    )


def side_option(f: F) -> F:
    """`--side`: on a hedge-mode account, which of the symbol's two positions."""
    return click.option(
        "--side",
        type=SIDES,
        help="on a hedge-mode account, which of the symbol's positions (needed when both are open)",
    )(f)


def trailing_options(f: F) -> F:
    """The trailing options shared by `open` and `trail`."""
    return _apply(
        f,
        [
            click.option("--trail", type=PERCENT, help="callback distance, e.g. 1%"),
            click.option("--trail-activation", type=PERCENT, help="profit that starts it"),
            click.option("--breakeven", type=PERCENT, help="profit that moves the stop to entry"),
            click.option("--breakeven-fees", type=PERCENT, help="fees the breakeven stop covers"),
            click.option("--trail-step", type=PERCENT, help="smallest move sent"),
            click.option("--trail-interval", type=DURATION, help="least time between moves"),
            click.option(
                "--trail-after", type=DURATION, help="start when in profit after this age"
            ),
            click.option(
                "--trail-atr",
                type=MULTIPLE,
                help="callback = K x ATR as % of price (--trail is then the fallback)",
            ),
            click.option(
                "--trail-atr-timeframe", metavar="TF", help="candles of the ATR (default 5m)"
            ),
            click.option(
                "--trail-atr-period", type=POSITIVE_INT, metavar="N", help="ATR period (default 14)"
            ),
            click.option("--trail-atr-min", type=PERCENT, help="floor (default 0.25%)"),
            click.option("--trail-atr-max", type=PERCENT, help="ceiling (default 5%)"),
            click.option("--trail-atr-refresh", type=DURATION, help="re-measure every (15m)"),
        ],
    )
