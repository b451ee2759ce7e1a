"""Settings: environment variables with the POSGUARD_ prefix and an optional TOML file.

Secrets are `SecretStr`: they print as `**********` and are never put in logs,
events or workflow inputs (workflows receive an account *name*; the worker
looks the keys up here).
"""

from __future__ import annotations

import os
import re
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Annotated

from pydantic import AliasChoices, BaseModel, BeforeValidator, Field, SecretStr
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from domain.alerts import AlertChannel, AlertPolicy
from domain.reconcile import ForeignOrderPolicy, ReconcilePolicy, UntrackedPolicy
from domain.reconcile_io import Adoption
from domain.signal_wire import FieldMapping
from domain.sizing import SizingMode, SizingRequest, StopRule, TakeProfitRule
from domain.trailing import TrailingRule
from domain.wave_io import PositionTemplate
from domain.waves import WaveRules

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
    # The exchange refuses a signed request that reaches it later than this after
    # it was signed (Binance and Bybit `recvWindow`). It bounds how long an order
    # sent by a worker that died can still arrive, so it is also how long a retried
    # entry waits before it may send again (docs/safety.md). 5000 = both exchanges'
    # own default; ccxt's Binance default (10000) would make that wait twice as long.
    recv_window_ms: int = Field(default=5000, ge=1000, le=60000)


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNITS = {"ms": "milliseconds", "s": "seconds", "m": "minutes", "h": "hours"}


def _duration(value: object) -> object:
    """`30s`, `500ms`, `2m`, `1h`, a bare number of seconds, or what pydantic takes."""
    if isinstance(value, int | float):
        return timedelta(seconds=value)
    if not isinstance(value, str):
        return value
    text = value.strip().lower()
    if text in ("", "0", "off", "none"):
        return None
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return timedelta(seconds=float(text))  # float ok: a duration setting
    parts = _DURATION.findall(text)
    if parts and "".join(n + u for n, u in parts) == text:
        return sum((timedelta(**{_UNITS[u]: float(n)}) for n, u in parts), timedelta())
    return value


Duration = Annotated[timedelta, BeforeValidator(_duration)]


class ReconcileSettings(BaseModel):
    """The account reconciler (docs/reconcile.md), TOML table `[reconcile]`.

    `every`: the period of each account's Schedule `reconcile/{account}`; unset
    (or 0) means no Schedule is created (passes run only when asked for).
    """

    every: Annotated[timedelta | None, BeforeValidator(_duration)] = timedelta(seconds=30)
    untracked: UntrackedPolicy = "adopt"
    foreign_orders: ForeignOrderPolicy = "zombies"
    alert_after_passes: int = Field(default=3, ge=1)
    # How an adopted position is protected (percent from its entry price).
    adopt_stop_percent: Decimal = Field(default=Decimal(2), gt=0, lt=100)
    adopt_emergency_stop_percent: Decimal = Field(default=Decimal(5), gt=0, lt=100)
    # The user stream asks for a pass when it reports an order or position no
    # workflow owns; requests within this window make one pass.
    trigger_debounce: Duration = timedelta(milliseconds=500)
    # A pass that has not finished after this long is given up (the next one starts).
    pass_timeout: Duration = timedelta(minutes=5)
    # One activity attempt of a pass (a read, a cancel): one lost with a crashed
    # worker is retried elsewhere after this long.
    call_timeout: Duration = timedelta(seconds=30)

    @property
    def scheduled(self) -> bool:
        return self.every is not None and self.every > timedelta(0)

    def policy(self) -> ReconcilePolicy:
        """The decision policy of `domain.reconcile`."""
        return ReconcilePolicy(
            untracked=self.untracked,
            foreign_orders=self.foreign_orders,
            alert_after_passes=self.alert_after_passes,
        )

    def adoption(self, trailing: TrailingRule | None) -> Adoption:
        """How an adopted position is protected."""
        return Adoption(
            stop=StopRule(percent=self.adopt_stop_percent),
            emergency_stop_percent=self.adopt_emergency_stop_percent,
            trailing=trailing,
        )


class WaveSettings(BaseModel):
    """How waves of signals select and open positions (TOML `[waves]`).

    A wave collects its signals for `window` after the first one, then selects
    (domain.waves): scores at least `min_score_week` / `min_score_month`, at most
    `max_open_positions` per account, `max_new_per_wave`, total notional
    `max_exposure`, and no symbol again within `cooldown` of its last close.
    A signal older than `max_signal_age` at selection opens nothing. Each position
    is `notional_per_position` (quote currency) with its stop `stop_percent` from
    the entry (emergency stop `emergency_stop_percent`), an optional take-profit,
    and the global `[trailing]` settings. New entries pause while the free balance
    is below `min_free_balance`.
    """

    window: Duration = timedelta(seconds=5)
    min_score_week: Decimal = Decimal(50)
    min_score_month: Decimal = Decimal(30)
    max_open_positions: int = Field(default=10, ge=0)
    max_new_per_wave: int = Field(default=3, ge=0)
    max_exposure: Decimal = Field(default=Decimal(5000), ge=0)
    notional_per_position: Decimal = Field(default=Decimal(100), gt=0)
    cooldown: Duration = timedelta(minutes=30)
    max_signal_age: Annotated[timedelta | None, BeforeValidator(_duration)] = timedelta(minutes=5)
    stop_percent: Decimal = Field(default=Decimal(2), gt=0, lt=100)
    emergency_stop_percent: Decimal = Field(default=Decimal(5), gt=0, lt=100)
    take_profit_percent: Decimal | None = Field(default=None, gt=0, lt=100)
    max_position_age: Annotated[timedelta | None, BeforeValidator(_duration)] = None
    min_free_balance: Decimal = Field(default=Decimal(10), ge=0)
    call_timeout: Duration = timedelta(seconds=30)
    # How often the ingest hands undecided stored signals to their waves again
    # (signals stored just before a crash); 0/off: only at start.
    sweep_every: Annotated[timedelta | None, BeforeValidator(_duration)] = timedelta(seconds=30)

    def rules(self) -> WaveRules:
        """The selection rules of `domain.waves`."""
        return WaveRules(
            min_score_week=self.min_score_week,
            min_score_month=self.min_score_month,
            max_open_positions=self.max_open_positions,
            max_new_per_wave=self.max_new_per_wave,
            max_exposure=self.max_exposure,
            notional_per_position=self.notional_per_position,
            cooldown=self.cooldown,
            max_signal_age=self.max_signal_age,
        )

    def template(self, trailing: TrailingRule | None) -> PositionTemplate:
        """How a selected signal's position is sized and protected."""
        return PositionTemplate(
            sizing=SizingRequest(mode=SizingMode.QUOTE, amount=self.notional_per_position),
            stop=StopRule(percent=self.stop_percent),
            emergency_stop_percent=self.emergency_stop_percent,
            take_profit=(
                None
                if self.take_profit_percent is None
                else TakeProfitRule(percent=self.take_profit_percent)
            ),
            trailing=trailing,
            max_age=self.max_position_age,
        )


class SignalServiceSettings(BaseModel):
    """One signal service posguard reads (TOML `[[signal_services]]`).

    `token` is a secret: it is never logged or recorded. `mapping` names the
    service's fields, exchange names and action words (domain.signal_wire), so a
    service other than the audit's can be read without code.
    """

    name: str = Field(min_length=1, max_length=100)
    url: str
    token: SecretStr
    resume: bool = True
    idle_timeout: Duration = timedelta(seconds=30)
    wave_period: Duration = timedelta(minutes=15)
    # The accounts this service's signals go to (each account's wave decides each
    # signal); None: every configured account.
    accounts: list[str] | None = None
    mapping: FieldMapping = Field(default_factory=FieldMapping)


class HealthSettings(BaseModel):
    """How each process judges its dependencies (TOML `[health]`, docs/health.md).

    A dependency is down once it has not answered for `max_age`. The worker asks
    each exchange account something cheap (the exchange's time) when nothing else
    has reached it for `probe_every`, and pings PostgreSQL and Temporal as often.
    """

    probe_every: timedelta = Field(default=timedelta(seconds=10), gt=timedelta(0))
    max_age: timedelta = Field(default=timedelta(seconds=30), gt=timedelta(0))


class AlertSettings(BaseModel):
    """How alerts reach people (TOML `[alerts]`; channels are `[[alert_channels]]`).

    docs/alerts.md: a condition's first alert is sent at once; its repeats as one
    reminder every `remind_every`; "resolved" when its raiser says so. A condition
    not raised for `quiet_after` is closed without a message. A delivery is tried
    `delivery_attempts` times (1 s doubling to 1 min) before it is recorded failed.
    """

    remind_every: Duration = timedelta(minutes=15)
    quiet_after: Duration = timedelta(minutes=30)
    delivery_attempts: int = Field(default=8, ge=1)
    delivery_first_retry: Duration = timedelta(seconds=1)
    delivery_max_retry: Duration = timedelta(minutes=1)
    # One try's limit (a channel answers within 10 s): a worker that dies while it
    # delivers is noticed after this long, and another worker tries again.
    delivery_timeout: Duration = timedelta(seconds=30)
    # The dispatcher looks at the outbox at least this often (LISTEN wakes it at once).
    dispatch_poll: Duration = timedelta(seconds=5)

    def policy(self) -> AlertPolicy:
        return AlertPolicy(remind_every=self.remind_every, quiet_after=self.quiet_after)


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
    # Worker /health and /metrics (-1: none); the price gate uses health_port + 1, the
    # ingest health_port + 2.
    health_port: int = 8081
    # The Temporal SDK's own metrics (temporal_*) on each process's /metrics.
    sdk_metrics: bool = True
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
    reconcile: ReconcileSettings = Field(default_factory=ReconcileSettings)
    # The signal services to read (none by default; see docs when the ingest lands).
    signal_services: list[SignalServiceSettings] = Field(default_factory=list)
    alerts: AlertSettings = Field(default_factory=AlertSettings)
    health: HealthSettings = Field(default_factory=HealthSettings)
    alert_channels: list[AlertChannel] = Field(default_factory=list)
    # `make dev`: a local webhook sink that prints every alert (port, or -1: none).
    dev_alert_sink_port: int = 8703
    waves: WaveSettings = Field(default_factory=WaveSettings)
    # `posguard dev` starts a signal-service simulator emitting a small wave every
    # `dev_signals_every` (and reads it) when no signal service is configured.
    dev_signals: bool = True
    dev_signals_every: Duration = timedelta(minutes=3)
    dev_signals_port: int = 8702
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
