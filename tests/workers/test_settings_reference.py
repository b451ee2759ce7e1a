"""docs/settings.md is what `python -m workers.settings_reference` generates, and every
setting (nested models included) has a description."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from pydantic import BaseModel

from workers.settings import Settings
from workers.settings_reference import (
    DOMAIN_DESCRIPTIONS,
    _model_of,
    build_sections,
    description_of,
    main,
    render,
)

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "settings.md"


def all_models() -> list[type[BaseModel]]:
    """Settings and every model nested in it, each once."""
    seen: list[type[BaseModel]] = []
    todo: list[type[BaseModel]] = [Settings]
    while todo:
        model = todo.pop(0)
        if model in seen:
            continue
        seen.append(model)
        for info in model.model_fields.values():
            sub, _ = _model_of(info.annotation)
            if sub is not None:
                todo.append(sub)
    return seen


def test_docs_settings_md_is_the_generated_reference() -> None:
    assert DOC.read_text(encoding="utf-8") == render(), (
        "docs/settings.md is stale: run `.venv/bin/python -m workers.settings_reference "
        "docs/settings.md`"
    )


def test_every_setting_has_a_description() -> None:
    missing = [
        f"{model.__name__}.{name}"
        for model in all_models()
        for name in model.model_fields
        if not (description_of(model, name) or "").strip()
    ]
    assert not missing, f"give these a Field(description=...): {missing}"


def test_the_domain_descriptions_name_real_fields_the_models_do_not_describe() -> None:
    models = all_models()
    for (model, name), text in DOMAIN_DESCRIPTIONS.items():
        assert model in models, f"{model.__name__} is no longer part of the settings"
        assert name in model.model_fields, f"{model.__name__} has no field {name!r}"
        assert not model.model_fields[name].description, (
            f"{model.__name__}.{name} now describes itself: remove its DOMAIN_DESCRIPTIONS "
            f"entry ({text!r})"
        )


def test_every_model_and_field_is_in_the_reference() -> None:
    sections = build_sections()
    rows = sum(len(s.rows) for s in sections)
    assert rows == sum(len(m.model_fields) for m in all_models())
    titles = [s.title for s in sections]
    for nested in (
        "accounts[]",
        "reconcile",
        "waves",
        "signal_services[]",
        "signal_services[].mapping",
        "alerts",
        "alert_channels[]",
        "health",
        "trailing",
        "trailing.volatility",
    ):
        assert nested in titles
    text = render()
    for variable in (
        "`DATABASE_URL`",
        "`TEMPORAL_ADDRESS`",
        "`POSGUARD_HEALTH_PORT`",
        "`POSGUARD_RECONCILE__EVERY`",
        "`POSGUARD_TRAILING__VOLATILITY__MULTIPLE`",
        "key `token` in `POSGUARD_SIGNAL_SERVICES`",
        "key `mapping.symbol` in `POSGUARD_SIGNAL_SERVICES`",
    ):
        assert variable in text


def test_the_named_variables_are_the_ones_settings_read(monkeypatch) -> None:
    """A sample of the documented names, set in the environment, reaches the settings."""
    monkeypatch.setenv("POSGUARD_CONFIG", str(ROOT / "no-such-posguard.toml"))
    monkeypatch.setenv("POSGUARD_RECONCILE__EVERY", "10s")
    monkeypatch.setenv("POSGUARD_TRAILING__CALLBACK_PCT", "1")
    monkeypatch.setenv("POSGUARD_TRAILING__VOLATILITY__MULTIPLE", "2")
    monkeypatch.setenv("POSGUARD_TRAILING__VOLATILITY__MIN_PCT", "0.25")
    monkeypatch.setenv("POSGUARD_TRAILING__VOLATILITY__MAX_PCT", "5")
    monkeypatch.setenv("POSGUARD_HEALTH__MAX_AGE", "PT10S")
    monkeypatch.setenv("TEMPORAL_ADDRESS", "temporal:7233")
    settings = Settings()
    assert settings.reconcile.every is not None and settings.reconcile.every.total_seconds() == 10
    assert settings.trailing is not None and settings.trailing.volatility is not None
    assert settings.health.max_age.total_seconds() == 10
    assert settings.temporal_address == "temporal:7233"


def test_the_generator_writes_a_path_or_stdout(tmp_path, capsys) -> None:
    out = tmp_path / "settings.md"
    assert main([str(out)]) == 0
    assert out.read_text(encoding="utf-8") == render()
    assert main([]) == 0
    assert capsys.readouterr().out == render()


def test_it_runs_as_a_module() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "workers.settings_reference"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=True,
    )
    assert done.stdout == render()
