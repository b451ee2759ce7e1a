"""`python -m workers.settings_reference [PATH]`: the settings reference, docs/settings.md.

Every setting of `workers.settings.Settings`, nested models included, with its
environment variable, type, default and description, generated from the models
themselves so it cannot drift (tests/workers/test_settings_reference.py compares the
committed file with this output). Written to PATH, or to stdout without one.

A field's description is its `Field(description=...)`. The models that live in
`domain/` (trailing, alert channels, signal-field mappings) carry none yet: their
descriptions are in `DOMAIN_DESCRIPTIONS` below until they do (the test fails for an
entry that the model has come to describe itself, so the two never disagree).
"""

from __future__ import annotations

import enum
import json
import sys
import types
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import annotated_types
from pydantic import AliasChoices, BaseModel, BeforeValidator, SecretStr, TypeAdapter
from pydantic.fields import FieldInfo

from domain.alerts import AlertChannel
from domain.signal_wire import FieldMapping
from domain.trailing import TrailingRule
from domain.volatility import VolatilityCallback
from workers.settings import Settings, _duration

PREFIX = "POSGUARD_"
DELIMITER = "__"

DOMAIN_DESCRIPTIONS: dict[tuple[type[BaseModel], str], str] = {
    (TrailingRule, "callback_pct"): "Distance of the stop behind the best price, percent "
    "(`--trail`).",
    (TrailingRule, "activation_pct"): "Profit, percent, at which trailing starts "
    "(`--trail-activation`); none: the first price evaluated activates it.",
    (TrailingRule, "breakeven_trigger_pct"): "Profit, percent, at which the stop goes to "
    "the entry plus fees (`--breakeven`); none: off. Must be greater than the fee.",
    (TrailingRule, "breakeven_fee_pct"): "The fees the breakeven stop covers, percent "
    "(`--breakeven-fees`).",
    (TrailingRule, "time_activation_after"): "After this age, trailing starts at the first "
    "evaluation that is strictly in profit (`--trail-after`).",
    (TrailingRule, "min_step_pct"): "A move smaller than this percentage of the live stop "
    "is not sent (`--trail-step`).",
    (TrailingRule, "min_interval"): "Least time between two moves sent; moves inside it "
    "are coalesced into the latest one (`--trail-interval`).",
    (TrailingRule, "volatility"): "Make the callback follow volatility (ATR); "
    "`callback_pct` is then the fallback until it is measured (`--trail-atr`).",
    (TrailingRule, "mode"): "`posguard` or `freqtrade`: how `activation_pct` starts "
    "trailing (docs/trailing.md, Mapping to freqtrade).",
    (VolatilityCallback, "multiple"): "The callback is this many ATRs, as a percent of the "
    "last close (`--trail-atr`).",
    (VolatilityCallback, "min_pct"): "Floor of the callback, percent (`--trail-atr-min`).",
    (VolatilityCallback, "max_pct"): "Ceiling of the callback, percent (`--trail-atr-max`).",
    (VolatilityCallback, "timeframe"): "Candle timeframe of the ATR (`--trail-atr-timeframe`).",
    (VolatilityCallback, "period"): "ATR period, in candles (`--trail-atr-period`).",
    (VolatilityCallback, "refresh"): "The ATR is measured again this often, at least 1 min "
    "(`--trail-atr-refresh`).",
    (AlertChannel, "name"): "The channel's name (letters, digits, `_.-`); its deliveries "
    "have a task queue of their own.",
    (AlertChannel, "kind"): "`telegram`, `slack` or `webhook` (JSON POST with an "
    "`Idempotency-Key`).",
    (AlertChannel, "url"): "slack: the incoming webhook (itself a secret); webhook: where "
    "to POST; telegram: the Bot API base.",
    (AlertChannel, "token"): "telegram: the bot's token (a secret).",
    (AlertChannel, "chat_id"): "telegram: the chat to write to.",
    (AlertChannel, "min_severity"): "Only alerts of at least this severity are sent here.",
    (AlertChannel, "per_minute"): "At most this many messages a minute; more wait their turn.",
    (FieldMapping, "id"): "The service's key for the signal id.",
    (FieldMapping, "symbol"): "The service's key for the symbol.",
    (FieldMapping, "exchange"): "The service's key for the exchange name.",
    (FieldMapping, "score_week"): "The service's key for the weekly score.",
    (FieldMapping, "score_month"): "The service's key for the monthly score.",
    (FieldMapping, "action"): "The service's key for the action word.",
    (FieldMapping, "timestamp"): "The service's key for the signal's time.",
    (FieldMapping, "exchange_names"): "The service's exchange names → ours "
    "(case-insensitive); a name missing here is rejected, never guessed.",
    (FieldMapping, "actions"): "The service's action words → ours (case-insensitive); a "
    "word missing here is rejected.",
}


@dataclass
class Row:
    key: str
    env: str
    type: str
    default: str
    description: str


@dataclass
class Section:
    anchor: str
    title: str
    intro: str
    rows: list[Row] = field(default_factory=list)


def description_of(model: type[BaseModel], name: str) -> str | None:
    """The field's own description, else the one in `DOMAIN_DESCRIPTIONS`."""
    own = model.model_fields[name].description
    return own or DOMAIN_DESCRIPTIONS.get((model, name))


def _strip_optional(annotation: Any) -> tuple[Any, bool]:
    """(annotation without None, whether None was allowed)."""
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) < len(get_args(annotation)):
            return (args[0] if len(args) == 1 else Union[tuple(args)]), True  # noqa: UP007
    return annotation, False


def _unannotate(annotation: Any) -> tuple[Any, list[Any]]:
    """(the bare type, the metadata of every `Annotated` layer)."""
    metadata: list[Any] = []
    while get_origin(annotation) is Annotated:
        args = get_args(annotation)
        annotation, metadata = args[0], [*metadata, *args[1:]]
    return annotation, metadata


def _model_of(annotation: Any) -> tuple[type[BaseModel] | None, bool]:
    """(the nested model a field holds, whether it is a list of them)."""
    bare, _ = _strip_optional(annotation)
    bare, _ = _unannotate(bare)
    if isinstance(bare, type) and issubclass(bare, BaseModel):
        return bare, False
    if get_origin(bare) is list:
        (item,) = get_args(bare)
        if isinstance(item, type) and issubclass(item, BaseModel):
            return item, True
    return None, False


def _is_short_duration(metadata: list[Any]) -> bool:
    return any(isinstance(m, BeforeValidator) and m.func is _duration for m in metadata)


def _constraints(metadata: list[Any]) -> str:
    parts: list[str] = []
    for item in metadata:
        items = item.metadata if isinstance(item, FieldInfo) else [item]
        for m in items:
            if isinstance(m, annotated_types.Gt):
                parts.append(f"> {_plain(m.gt)}")
            elif isinstance(m, annotated_types.Ge):
                parts.append(f"≥ {_plain(m.ge)}")
            elif isinstance(m, annotated_types.Lt):
                parts.append(f"< {_plain(m.lt)}")
            elif isinstance(m, annotated_types.Le):
                parts.append(f"≤ {_plain(m.le)}")
            elif isinstance(m, annotated_types.MinLen):
                parts.append(f"length ≥ {m.min_length}")
            elif isinstance(m, annotated_types.MaxLen):
                parts.append(f"length ≤ {m.max_length}")
    return ", ".join(parts)


def type_name(annotation: Any, metadata: list[Any] | None = None) -> str:
    """A reader's name for a field's type, with its bounds."""
    metadata = list(metadata or [])
    bare, optional = _strip_optional(annotation)
    bare, inner = _unannotate(bare)
    metadata += inner
    name = _bare_name(bare, metadata)
    bounds = _constraints(metadata)
    if bounds:
        name += f" ({bounds})"
    return f"{name} or none" if optional else name


def _bare_name(bare: Any, metadata: list[Any]) -> str:
    if bare is timedelta:
        if _is_short_duration(metadata):
            return "duration"
        return "duration (ISO 8601)"
    if get_origin(bare) is Literal:
        return " or ".join(f"`{a}`" for a in get_args(bare))
    if isinstance(bare, type) and issubclass(bare, enum.Enum):
        return " or ".join(f"`{m.value}`" for m in bare)
    if get_origin(bare) is list:
        (item,) = get_args(bare)
        return f"list of {type_name(item)}"
    if get_origin(bare) is dict:
        key, value = get_args(bare)
        return f"map of {type_name(key)} to {type_name(value)}"
    if isinstance(bare, type) and issubclass(bare, BaseModel):
        return "object"
    names = {
        str: "string",
        int: "integer",
        bool: "boolean",
        Decimal: "decimal",
        Path: "path",
        SecretStr: "secret string",
    }
    if bare in names:
        return names[bare]
    return getattr(bare, "__name__", str(bare))


def _plain(value: Any) -> str:
    if isinstance(value, timedelta):
        return _duration_text(value)
    return str(value)


def _duration_text(value: timedelta) -> str:
    ms = int(value.total_seconds() * 1000)
    for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms and ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms" if ms else "0s"


def default_text(info: FieldInfo) -> str:
    """The field's default as a reader would write it."""
    if info.is_required():
        return "required"
    value = info.get_default(call_default_factory=True)
    if value is None:
        return "none"
    if isinstance(value, SecretStr):
        return "a placeholder"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, timedelta):
        return f"`{_duration_text(value)}`"
    if isinstance(value, enum.Enum):
        return f"`{value.value}`"
    if isinstance(value, str | int | Decimal | Path):
        return f"`{value}`"
    dumped = TypeAdapter(Any).dump_python(value, mode="json")
    return f"`{json.dumps(dumped, separators=(',', ':'))}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _env_names(info: FieldInfo, name: str) -> list[str]:
    alias = info.validation_alias
    if isinstance(alias, AliasChoices):
        return [str(c) for c in alias.choices]
    if isinstance(alias, str):
        return [alias]
    return [PREFIX + name.upper()]


def _anchor(path: str) -> str:
    return path.replace("[]", "").replace(".", "-").replace("_", "-").lower()


@dataclass(frozen=True)
class _Place:
    """Where a model's fields are set.

    `path`: the model's place from the top (`reconcile`, `accounts[]`,
    `signal_services[].mapping`; empty for the top level); `key_path`: the prefix of
    its keys as shown; `env_prefix`: of its variables (`POSGUARD_RECONCILE__`), None
    inside a list entry, which is set only within `json_var`'s JSON.
    """

    path: str
    key_path: str
    env_prefix: str | None
    json_var: str | None


def build_sections() -> list[Section]:
    """Every model of the settings as a section, in the order a reader meets them."""
    sections: list[Section] = []
    _walk(Settings, _Place("", "", PREFIX, None), sections)
    return sections


def _walk(model: type[BaseModel], place: _Place, sections: list[Section]) -> None:
    """A section with the rows of `model`, then one for each model nested in it."""
    if place.path:
        doc = " ".join((model.__doc__ or "").strip().split("\n\n")[0].split())
        where = (
            f"Keys of each entry of the JSON list in `{place.json_var}`. "
            if place.path.endswith("[]") and place.path.count("[]") == 1
            else f"Inside the JSON of `{place.json_var}`. "
            if place.json_var
            else ""
        )
        section = Section(_anchor(place.path), place.path, (where + doc).strip())
    else:
        section = Section(
            "top-level",
            "Top level",
            "Each is one environment variable. A nested object (`reconcile`, `waves`, ...) "
            "is set one field at a time with `__`, or whole as JSON; a list of objects "
            "(`accounts`, ...) only as JSON.",
        )
    sections.append(section)
    children: list[tuple[type[BaseModel], _Place]] = []
    for name, info in model.model_fields.items():
        key = place.key_path + name
        path = f"{place.path}.{name}" if place.path else name
        sub, is_list = _model_of(info.annotation)
        if place.json_var is not None and place.env_prefix is None:
            env = f"key `{key}` in `{place.json_var}`"
            names = [place.json_var]
        else:
            prefix = place.env_prefix or ""
            names = _env_names(info, name) if prefix == PREFIX else [prefix + name.upper()]
            env = " or ".join(f"`{n}`" for n in names)
        description = description_of(model, name) or ""
        if sub is None:
            shown_type = type_name(info.annotation, list(info.metadata))
            shown_default = default_text(info)
        elif is_list:
            path += "[]"
            shown_type = f"list of objects, see [{path}](#{_anchor(path)})"
            shown_default = default_text(info)
            if place.env_prefix is not None:
                env += " (JSON)"
                children.append((sub, _Place(path, "", None, names[0])))
            else:
                children.append((sub, _Place(path, f"{key}[].", None, place.json_var)))
        else:
            shown_type = f"object, see [{path}](#{_anchor(path)})"
            shown_default = "none" if info.get_default() is None else "see below"
            if place.env_prefix is not None:
                env += " (JSON), or one variable per key"
                env_prefix = f"{names[0]}{DELIMITER}"
                children.append((sub, _Place(path, f"{key}.", env_prefix, None)))
            else:
                children.append((sub, _Place(path, f"{key}.", None, place.json_var)))
        section.rows.append(Row(f"`{key}`", env, shown_type, shown_default, description))
    for sub, child in children:
        _walk(sub, child, sections)


HEADER = """\
# Settings reference

<!-- Generated by `python -m workers.settings_reference docs/settings.md` from
workers/settings.py: do not edit by hand (tests/workers/test_settings_reference.py
fails when this file and the models disagree). -->

Every posguard process reads its settings in this order, first wins:

1. Environment variables with the `POSGUARD_` prefix (`DATABASE_URL` and
   `TEMPORAL_ADDRESS` also work without it). Names are case-insensitive.
2. The TOML file `posguard.toml`, or the file named by `POSGUARD_CONFIG`.

In the environment:

- A nested object's field is `POSGUARD_<OBJECT>__<FIELD>`, e.g.
  `POSGUARD_RECONCILE__EVERY=10s`, `POSGUARD_TRAILING__VOLATILITY__MULTIPLE=2`. The
  whole object can also be given as JSON: `POSGUARD_TRAILING='{"callback_pct": 1}'`.
- A list of objects (`accounts`, `signal_services`, `alert_channels`) is one variable
  holding a JSON list: `POSGUARD_ACCOUNTS='[{"name": "main", "exchange": "bybit",
  "api_key": "...", "secret": "..."}]'`. Its entries' keys are listed below.
- A misspelt name is ignored, not refused: check it here.

Types:

- **duration**: `30s`, `500ms`, `2m`, `1h`, a combination (`1h30m`) or a number of
  seconds; `0`, `off` or `none` means unset where the type allows none.
- **duration (ISO 8601)**: `PT10S`, `HH:MM:SS` (`00:00:10`), or a number of seconds in
  JSON or TOML (not `10s`, and not a bare number in an environment variable).
- **decimal**: an exact decimal number (`0.5`), never a float.
- **secret string**: never logged, recorded or put in a workflow input.
"""


def render() -> str:
    """docs/settings.md."""
    out = [HEADER]
    for section in build_sections():
        title = section.title if section.anchor == "top-level" else f"`{section.title}`"
        out.append(f'\n<a id="{section.anchor}"></a>\n\n## {title}\n')
        if section.intro:
            out.append(f"\n{section.intro}\n")
        key_header = "setting" if section.anchor == "top-level" else "key"
        out.append(f"\n| {key_header} | environment | type | default | description |\n")
        out.append("|---|---|---|---|---|\n")
        for row in section.rows:
            cells = (row.key, row.env, row.type, row.default, row.description)
            out.append("| " + " | ".join(_cell(c) for c in cells) + " |\n")
    return "".join(out)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] in (["-h"], ["--help"]) or len(args) > 1:
        print("usage: python -m workers.settings_reference [PATH]  (default: stdout)")
        return 0 if args[:1] in (["-h"], ["--help"]) else 2
    text = render()
    if args:
        Path(args[0]).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
