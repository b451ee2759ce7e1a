"""What the commands print, on a terminal and into a pipe (workers/terminal.py)."""

from __future__ import annotations

import io

import pytest

from workers import terminal

HEADER = ["symbol", "side", "state", "workflow id"]
ROWS = [
    ["BTCUSDT", "long", "active", "position/paper/binanceusdm/BTCUSDT"],
    ["ETHUSDT", "short", "failed", "position/paper/binanceusdm/ETHUSDT"],
    ["SOLUSDT", "long", "opening NOT RUNNING", "x" * 300],
]


class Tty(io.StringIO):
    """A stdout that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def test_a_pipe_gets_plain_columns_one_row_per_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdout", io.StringIO())
    text = terminal.table(HEADER, ROWS)
    lines = text.splitlines()
    assert "\x1b" not in text
    assert len(lines) == 1 + len(ROWS)  # a 300-character cell does not wrap
    assert lines[0].split() == ["symbol", "side", "state", "workflow", "id"]
    assert lines[3].endswith("x" * 300) and lines[3].startswith("SOLUSDT  long   opening")
    assert all(line == line.rstrip() for line in lines)
    # each column starts where its header does
    at = lines[0].index("state")
    assert [line[at:].split()[0] for line in lines[1:]] == ["active", "failed", "opening"]


def test_a_terminal_sees_what_needs_a_human_in_red(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdout", Tty())
    monkeypatch.setenv("COLUMNS", "120")
    text = terminal.table(HEADER, ROWS[:2])
    assert "\x1b[1;31mfailed" in text  # bold red
    assert "\x1b[32mactive" in text  # green
    assert "\x1b[1msymbol" in text  # the header in bold


@pytest.mark.parametrize(
    ("state", "colour"),
    [
        ("active", "green"),
        ("failed", "red"),
        ("closed (stop_loss)", None),
        ("opening", "yellow"),
        ("closing", "yellow"),
        ("active NOT RUNNING", "red"),
        ("? (no answer)", "red"),
    ],
)
def test_state_colours(state: str, colour: str | None) -> None:
    style = terminal.state_style(state)
    found = None if style is None or style.color is None else style.color.name
    assert found == colour


def test_markup_in_a_value_prints_as_it_is(monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.StringIO()
    monkeypatch.setattr("sys.stdout", out)
    terminal.alarm("[bold]payload {'a': [1, 2]} :smile:")
    assert out.getvalue() == "[bold]payload {'a': [1, 2]} :smile:\n"


def test_event_lines_are_coloured_by_severity_on_a_terminal_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tty, pipe = Tty(), io.StringIO()
    monkeypatch.setenv("COLUMNS", "60")  # a long line is not cut or wrapped either way
    line = "2026-12-03 10:00:00.000  error    emergency_stop_failed  " + "x" * 100
    monkeypatch.setattr("sys.stdout", tty)
    terminal.event_line(line, "error")
    monkeypatch.setattr("sys.stdout", pipe)
    terminal.event_line(line, "error")
    assert pipe.getvalue() == line + "\n"
    assert tty.getvalue().startswith("\x1b[31m2026-12-03") and "x" * 100 in tty.getvalue()
