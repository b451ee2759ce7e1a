"""Shell completion of `posguard`, by Click from the command line itself.

`posguard completion bash` (or `zsh`, `fish`) prints a script for the shell to
source; the script runs `posguard` with COMPLETE_VAR set to ask for the candidates
of the word being typed, so commands, subcommands, options and their fixed choices
(`--side long`, `--reason operator`, `--exchange bybit`) always match the installed
version: there is no second list to keep in step.
"""

from __future__ import annotations

from collections.abc import Sequence

import click
from click.shell_completion import ShellComplete, get_completion_class

COMPLETE_VAR = "_POSGUARD_COMPLETE"
"""The environment variable the shell scripts set to ask `posguard` for candidates."""

SHELLS = ["bash", "fish", "zsh"]


def script(cli: click.Command, shell: str) -> str:
    """The completion script of `shell` for the `posguard` command `cli`."""
    cls = get_completion_class(shell)
    if cls is None:
        raise ValueError(f"no completion for {shell!r}; one of {', '.join(SHELLS)}")
    return cls(cli, {}, "posguard", COMPLETE_VAR).source() + "\n"


def candidates(cli: click.Command, words: Sequence[str]) -> list[str]:
    """What may complete the last of `words` (the words after `posguard`, the last
    being the one typed so far, possibly empty), sorted: what the shell offers."""
    *done, current = list(words) or [""]
    found = ShellComplete(cli, {}, "posguard", COMPLETE_VAR).get_completions(done, current)
    return sorted(item.value for item in found)
