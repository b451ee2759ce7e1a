"""What the `posguard` commands print, through Rich.

On a terminal: tables sized to the window, states and severities in colour (red for
anything that needs a human), a spinner while a command waits. Piped or redirected:
the same columns as plain text, no escape codes and no wrapping, so `| grep`, `| awk`
and scripts read one row per line whatever the width. Text is never read as Rich
markup: a symbol, a payload or an error message prints exactly as it is.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TextIO

from rich.console import Console
from rich.style import Style
from rich.table import Table
from rich.text import Text

PIPED_WIDTH = 10_000
"""Console width when not on a terminal: wide enough that no row ever wraps."""

_ALARM = Style(color="red", bold=True)
_WARN = Style(color="yellow")
_GOOD = Style(color="green")
_QUIET = Style(dim=True)


def state_style(text: str) -> Style | None:
    """The colour of a position state cell, as an operator should notice it: red when
    nothing protects it or a human must act, yellow while it is in transition, green
    when it is protected, dim when it is over."""
    words = text.lower()
    if any(
        alarm in words
        for alarm in ("failed", "unprotected", "not running", "no answer", "emergency")
    ):
        return _ALARM
    if words.startswith(("active", "ok", "running")):
        return _GOOD
    if words.startswith(("closed", "rolled_back", "processed", "applied")):
        return _QUIET
    if words.startswith(("opening", "closing", "pending", "open")):
        return _WARN
    return None


def severity_style(text: str) -> Style | None:
    """Colour of an event severity: critical and error red, warning yellow, debug dim."""
    return {
        "critical": _ALARM,
        "error": Style(color="red"),
        "warning": _WARN,
        "debug": _QUIET,
    }.get(text.strip().lower())


COLUMN_STYLES: dict[str, Callable[[str], Style | None]] = {
    "state": state_style,
    "status": state_style,
    "severity": severity_style,
}
"""Cells of these columns are coloured by their text (on a terminal only)."""


class _Console(Console):
    """A Rich console that leaves a reader gone away (`| head -1`) to the command
    line's own handling (quietly, exit 141) instead of Rich's SystemExit(1)."""

    def on_broken_pipe(self) -> None:
        raise BrokenPipeError


def _console(file: TextIO | None = None, *, stderr: bool = False) -> Console:
    target = file if file is not None else (sys.stderr if stderr else sys.stdout)
    tty = target.isatty()
    return _Console(
        file=target,
        width=None if tty else PIPED_WIDTH,
        color_system="auto" if tty else None,
        force_terminal=tty,
        highlight=False,
        markup=False,
        emoji=False,
        soft_wrap=True,  # lines are never broken by Rich: the terminal wraps them
    )


def on_terminal(*, stderr: bool = False) -> bool:
    """True when stdout (or stderr) is an interactive terminal."""
    return (sys.stderr if stderr else sys.stdout).isatty()


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """`rows` under `header` as aligned columns (two spaces apart), as text to print.

    Coloured when stdout is a terminal (see COLUMN_STYLES); plain otherwise, each
    row on one line with no trailing spaces.
    """
    tty = on_terminal()
    grid = Table(box=None, pad_edge=False, show_edge=False, padding=(0, 1))
    for name in header:
        grid.add_column(name, header_style="bold" if tty else "", no_wrap=not tty)
    styles = [COLUMN_STYLES.get(name) for name in header]
    for row in rows:
        cells = []
        for cell, style_of in zip(row, styles, strict=True):
            style = style_of(str(cell)) if style_of is not None and tty else None
            cells.append(Text(str(cell), style=style or ""))
        grid.add_row(*cells)
    buffer = io.StringIO()
    console = Console(
        file=buffer,
        width=_console().width if tty else PIPED_WIDTH,
        color_system="auto" if tty else None,
        force_terminal=tty,
        highlight=False,
        markup=False,
        emoji=False,
    )
    console.print(grid)
    return "\n".join(line.rstrip() for line in buffer.getvalue().splitlines())


def fields(pairs: Sequence[tuple[str, str]]) -> str:
    """`  name  value` lines, the values aligned: the block `open`, `close`,
    `position` and `wave` print."""
    width = max(len(k) for k, _ in pairs)
    return "\n".join(f"  {k.ljust(width)}  {v}" for k, v in pairs)


def error(message: str) -> None:
    """One line on stderr, `posguard: ...`, in red on a terminal."""
    _console(stderr=True).print(
        Text(f"posguard: {message}", style=_ALARM if on_terminal(stderr=True) else "")
    )


def alarm(message: str) -> None:
    """A line on stdout that needs a human, in bold red on a terminal."""
    _console().print(Text(message, style=_ALARM if on_terminal() else ""))


def event_line(line: str, severity: str) -> None:
    """One line of an event log on stdout, coloured by its severity on a terminal
    (see `severity_style`), flushed so that `tail -f` shows it at once."""
    style = severity_style(severity) if on_terminal() else None
    _console().print(Text(line, style=style or ""))
    sys.stdout.flush()


def warn(message: str) -> None:
    """One line on stderr, `posguard: ...`, in yellow on a terminal."""
    _console(stderr=True).print(
        Text(f"posguard: {message}", style=_WARN if on_terminal(stderr=True) else "")
    )


@contextmanager
def spinner(message: str) -> Iterator[None]:
    """A spinner with `message` on stderr while the block runs; nothing when stderr is
    not a terminal (nothing to animate in a log)."""
    if not on_terminal(stderr=True):
        yield
        return
    with _console(stderr=True).status(message):
        yield


def stdout_console() -> Console:
    """The console of stdout (plain when piped): for live views."""
    return _console()
