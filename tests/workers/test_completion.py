"""Shell completion: candidates from the command line itself (Click), and the bash script
end to end."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from workers.cli import cli
from workers.completion import candidates, script

BIN = Path(sys.executable).parent


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        (["op"], ["open"]),
        (["pos"], ["position", "positions"]),
        (["open", "BTCUSDT", ""], ["long", "short"]),
        (["close", "BTCUSDT", "--side", ""], ["long", "short"]),
        (["close", "BTCUSDT", "--reason", "op"], ["operator"]),
        (["trail", "ETHUSDT", "--exchange", "b"], ["binanceusdm", "bybit"]),
        (["db", ""], ["migrate", "retention"]),
        (["completion", ""], ["bash", "fish", "zsh"]),
        (["open", "BTCUSDT", "long", "--account", "x", "--exch"], ["--exchange"]),
        (["close", "--ti"], ["--timeout"]),
    ],
)
def test_candidates_come_from_the_command_line(words: list[str], expected: list[str]) -> None:
    assert candidates(cli, words) == expected


def test_every_command_is_offered() -> None:
    offered = candidates(cli, [""])
    assert {"open", "close", "trail", "positions", "web", "completion", "sim"} <= set(offered)


def test_an_option_s_value_is_not_taken_for_a_command() -> None:
    # `--account open` names an account called "open": the next word is close's own
    assert "--side" in candidates(cli, ["close", "--account", "open", "BTC", "--s"])


def complete_in_bash(line: list[str]) -> list[str]:
    """What bash offers after `eval "$(posguard completion bash)"` for `line` (its last
    word being typed), through the installed `posguard`."""
    words = " ".join(f"'{w}'" for w in ["posguard", *line])
    script = (
        'eval "$(posguard completion bash)"\n'
        f"COMP_WORDS=({words}); COMP_CWORD={len(line)}\n"
        '_posguard_completion posguard; printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run(
        ["bash", "-c", script], env=env, capture_output=True, text=True, timeout=60, check=True
    )
    return [w for w in done.stdout.splitlines() if w]


def test_bash_completes_through_the_installed_command() -> None:
    assert complete_in_bash(["clo"]) == ["close"]
    assert complete_in_bash(["close", "BTCUSDT", "--side", "s"]) == ["short"]
    assert complete_in_bash(["events", ""]) == ["tail"]


def test_zsh_and_fish_scripts_ask_the_same_command() -> None:
    from workers.completion import COMPLETE_VAR

    for shell in ("zsh", "fish"):
        text = script(cli, shell)
        assert COMPLETE_VAR in text and "posguard" in text, shell
    assert "compdef _posguard_completion posguard" in script(cli, "zsh")
