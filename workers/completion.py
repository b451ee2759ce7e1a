"""Shell completion of `posguard`, from the command line's own parser.

`posguard completion bash` (or `zsh`) prints a script for the shell to source; the
script asks `posguard __complete WORD...` for the candidates of the word being
typed, so commands, subcommands, options and their fixed choices (`--side long`,
`--reason operator`, `--exchange bybit`) always match the installed version: there
is no second list to keep in step.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

COMPLETE = "__complete"
"""The hidden argument the shell script calls `posguard` with."""

BASH = """\
# posguard completion for bash: eval "$(posguard completion bash)"
_posguard() {
    local IFS=$'\\n'
    COMPREPLY=($(posguard __complete "${COMP_WORDS[@]:1:COMP_CWORD}" 2>/dev/null))
}
complete -o default -F _posguard posguard
"""

ZSH = """\
# posguard completion for zsh: eval "$(posguard completion zsh)"
autoload -U +X bashcompinit && bashcompinit
""" + BASH.split("\n", 1)[1]

SCRIPTS = {"bash": BASH, "zsh": ZSH}


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _option(parser: argparse.ArgumentParser, word: str) -> argparse.Action | None:
    for action in parser._actions:
        if word in action.option_strings:
            return action
    return None


def candidates(parser: argparse.ArgumentParser, words: Sequence[str]) -> list[str]:
    """What may complete the last of `words` (the words after `posguard`, the last
    being the one typed so far, possibly empty), sorted.

    The words before it choose the subcommand; an option that takes a value makes
    the next word that value (its choices, if it has fixed ones). A word starting
    with "-" completes to the options of the current command; any other to its
    subcommands and the fixed choices of its positionals.
    """
    *done, current = list(words) or [""]
    awaiting: argparse.Action | None = None
    for word in done:
        if awaiting is not None:
            awaiting = None
            continue
        sub = _subcommands(parser)
        if word in sub:
            parser = sub[word]
            continue
        option = _option(parser, word)
        if option is not None and option.nargs != 0:
            awaiting = option
    if awaiting is not None:
        return sorted(str(c) for c in awaiting.choices or () if str(c).startswith(current))
    if current.startswith("-"):
        options = {o for a in parser._actions for o in a.option_strings}
        return sorted(o for o in options if o.startswith(current))
    found = set(_subcommands(parser))
    for action in parser._actions:
        if not action.option_strings and action.choices is not None:
            if not isinstance(action, argparse._SubParsersAction):
                found.update(str(c) for c in action.choices)
    return sorted(w for w in found if w.startswith(current) and w != COMPLETE)
