"""Settings: environment variables with the POSGUARD_ prefix and an optional TOML file.

Secrets are `SecretStr`: they print as `**********` and are never put in logs,
events or workflow inputs (workflows receive an account *name*; the worker
looks the keys up here).
"""

from __future__ import annotations

import os
from decimal import Decimal
from pathlib import Path

from pydantic import AliasChoices, BaseModel, Field, SecretStr
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from domain.trailing import TrailingRule

EMBEDDED_PAPER = "embedded"


class AccountSettings(BaseModel):
    """One exchange account. Keys stay in the worker; workflows only see `name`."""

    name: str = "paper"
    exchange: str = "binanceusdm"
    api_key: SecretStr = SecretStr("paper-key")
    secret: SecretStr = SecretStr("paper-secret")
    testnet: bool = False
    # Base URL of a paper exchange (the simulator); None means the real exchange.
    # "embedded" means the paper exchange `posguard dev` starts in-process.
    paper_url: str | None = None
    paper_ws_url: str | None = None
    # Request budget of the account: ccxt's limiter spaces requests by
    # 1000 / this ms (weighted by endpoint cost), and the server caps the account's
    # exchange task queue at this many activities per second. 20 = ccxt's Binance default.
    max_requests_per_second: Decimal = Field(default=Decimal(20), gt=0)


def _config_file() -> Path:
    return Path(os.environ.get("POSGUARD_CONFIG", "posguard.toml"))


class Settings(BaseSettings):
    """Everything a posguard process reads at start."""

    model_config = SettingsConfigDict(
        env_prefix="POSGUARD_", env_nested_delimiter="__", extra="ignore"
    )

    # With DATABASE_URL unset, the embedded PostgreSQL in `state_dir` is used.
    database_url: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("POSGUARD_DATABASE_URL", "DATABASE_URL")
    )
    temporal_address: str | None = Field(
        default=None, validation_alias=AliasChoices("POSGUARD_TEMPORAL_ADDRESS", "TEMPORAL_ADDRESS")
    )
    temporal_namespace: str = "default"
    task_queue: str = "posguard"
    state_dir: Path = Path(".posguard")
    temporal_port: int = 7233
    ui_port: int = 8233
    # Worker health endpoint (-1: none); the price gate uses health_port + 1.
    health_port: int = 8081
    sim_port: int = 8700
    sim_admin_port: int = 8701
    event_retention_days: int = Field(default=365, ge=1)
    event_partition_months_ahead: int = Field(default=3, ge=0)
    connect_timeout_seconds: int = Field(default=15, ge=1)
    accounts: list[AccountSettings] = Field(
        default_factory=lambda: [
            AccountSettings(paper_url=EMBEDDED_PAPER, max_requests_per_second=Decimal(200))
        ]
    )
    # Trailing settings a new position gets unless told otherwise (None: no trailing).
    trailing: TrailingRule | None = None
    # Price path of the embedded paper exchange (see `posguard sim --help`).
    sim_price_path: str = "random_walk"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Precedence: explicit arguments, then environment, then the TOML file.
        return (
            init_settings,
            env_settings,
            TomlConfigSettingsSource(settings_cls, toml_file=_config_file()),
        )

    def account(self, name: str) -> AccountSettings:
        """The account called `name`; KeyError if it is not configured."""
        for acct in self.accounts:
            if acct.name == name:
                return acct
        raise KeyError(f"no account named {name!r} (configured: {[a.name for a in self.accounts]})")
