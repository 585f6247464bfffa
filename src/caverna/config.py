"""Settings from the environment (prefix CAVERNA_) and an optional .env file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from caverna.brand.registry import DEFAULT_PACK_ID
from caverna.logs import LogFormat, parse_level
from caverna.prompting.dialects.registry import DEFAULT_DIALECT, DIALECT_NAMES
from caverna.providers.pricing import PriceTable
from caverna.ratelimiting import parse_rate, parse_rate_limits, storage_url
from caverna.services.webhooks import parse_allowed_hosts


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CAVERNA_", env_file=".env", extra="ignore")

    env: Literal["dev", "test", "prod"] = "dev"
    data_dir: Path = Path("caverna-data")
    pack_path: str = Field(
        default="",
        description="Extra brand pack folders, separated like PATH; they override shipped packs.",
    )
    default_pack: str = DEFAULT_PACK_ID
    providers: str = Field(
        default="",
        description="Comma-separated provider order; the first is the default dialect.",
    )
    database_url: str = Field(
        default="", description="SQLAlchemy URL; empty means SQLite under the data folder."
    )
    storage_url: str = Field(
        default="", description="file://, memory:// or s3://bucket?...; empty means local media."
    )
    delivery_format: Literal["webp", "png", "avif"] = "webp"
    worker_concurrency: int = Field(default=4, ge=1, le=256)
    worker_metrics_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="Port of `caverna worker`'s /metrics and /healthz (0: any free port); "
        "unset: no endpoint.",
    )
    worker_metrics_host: str = Field(
        default="127.0.0.1",
        min_length=1,
        description="Address the worker's metrics endpoint listens on.",
    )
    provider_concurrency: str = Field(
        default="", description="Per-provider job limits per worker, e.g. 'sdwebui=1,openai=8'."
    )
    lease_seconds: float = Field(default=60.0, ge=1.0, le=3600.0)
    max_attempts: int = Field(default=3, ge=1, le=20)
    # how long a job waits out an unreachable object store, writing again, before the failure
    # costs it an attempt (and a second, paid generation)
    storage_retry_seconds: float = Field(default=20.0, ge=0.0, le=600.0)
    prompt_cache_ttl_seconds: float = Field(default=30 * 24 * 3600, ge=0)
    # provider credentials, by the names their own tools use
    openai_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("OPENAI_API_KEY", "CAVERNA_OPENAI_API_KEY")
    )
    openai_base_url: str = Field(
        default="https://api.openai.com/v1",
        validation_alias=AliasChoices("OPENAI_BASE_URL", "CAVERNA_OPENAI_BASE_URL"),
    )
    stability_api_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("STABILITY_API_KEY", "CAVERNA_STABILITY_API_KEY"),
    )
    stability_base_url: str = "https://api.stability.ai"
    midjourney_url: str = ""
    midjourney_secret: SecretStr | None = None
    sdwebui_url: str = ""
    sdwebui_user: str = ""
    sdwebui_password: SecretStr | None = None
    comfyui_url: str = ""
    price_table: str = Field(
        default="", description="JSON price table overriding the built-in prices."
    )
    failover: bool = Field(
        default=True, description="Try the next provider of CAVERNA_PROVIDERS when one fails."
    )
    breaker_failures: int = Field(default=5, ge=1, le=1000)
    breaker_open_seconds: float = Field(default=30.0, ge=0.1, le=3600.0)
    provider_retries: int = Field(default=2, ge=0, le=10)
    provider_retry_budget_seconds: float = Field(default=60.0, ge=0.0, le=3600.0)
    provider_timeout_seconds: float = Field(default=300.0, ge=0.1, le=3600.0)
    image_processes: int = Field(
        default=-1,
        ge=-1,
        le=64,
        description="Processes for image work: -1 one per CPU, 0 threads in the worker process.",
    )
    image_intake_slots: int = Field(
        default=16,
        ge=1,
        le=4096,
        description="Provider images one process holds in memory at once; other answers wait "
        "in the socket, unread, and the wait counts against no provider timeout.",
    )
    api_rate_limit: str = Field(
        default="600/minute",
        description="Requests per API key, e.g. '600/minute' (shared through Redis when set).",
    )
    quota_daily_images: int | None = Field(
        default=None, ge=0, description="Default images per user per UTC day (none: unlimited)."
    )
    quota_monthly_usd: float | None = Field(
        default=None, ge=0, description="Default spend per user per UTC month, in USD."
    )
    # re-roll policy: an image scoring below the threshold is made again with a new seed
    reroll_below: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="Consistency score under which an image is re-rolled (none: never).",
    )
    reroll_max_attempts: int = Field(
        default=2, ge=0, le=10, description="Re-rolls at most per original image."
    )
    reroll_budget_usd: float = Field(
        default=0.5, ge=0, description="Spend at most on the re-rolls of one original image (USD)."
    )
    secret_key: SecretStr | None = Field(
        default=None,
        min_length=16,
        description="Signs media and share links; every API process of a deployment shares it.",
    )
    redis_url: str = Field(
        default="",
        description="redis://host:6379/0 shares rate limits between processes; empty: per process.",
    )
    provider_rate_limits: str = Field(
        default="",
        description="Request rate per provider, e.g. 'openai=50/minute,stability=150/10 seconds'.",
    )
    moderation: Literal["off", "openai"] = Field(
        default="off",
        description="Free text also goes to a moderation service: 'openai' needs OPENAI_API_KEY.",
    )
    moderation_fail_open: bool = Field(
        default=False,
        description="Let free text through when the moderation service cannot answer.",
    )
    webhook_allowed_hosts: str = Field(
        default="",
        description="Hosts webhooks may go to, comma-separated: names, IP addresses or "
        "'*.example.com'; empty: callback URLs are refused.",
    )
    webhook_allow_private: bool = Field(
        default=False,
        description="Allow loopback, private and link-local receivers (and plain http): "
        "for tests and local demos.",
    )
    webhook_secret: SecretStr | None = Field(
        default=None,
        min_length=16,
        description="HMAC-SHA256 key of webhook signatures; default: derived from the secret key.",
    )
    webhook_max_attempts: int = Field(default=8, ge=1, le=50)
    webhook_timeout_seconds: float = Field(default=10.0, gt=0.0, le=300.0)
    webhook_backoff_seconds: float = Field(
        default=5.0,
        ge=0.0,
        le=3600.0,
        description="Wait before the first retry of a webhook; doubled each time, up to an hour.",
    )
    log_format: LogFormat = "text"
    log_level: str = "INFO"
    preview_latency_ms: float = Field(
        default=0.0,
        ge=0.0,
        le=600_000.0,
        description="Extra latency of the offline preview, to rehearse real provider timing.",
    )

    @field_validator("providers")
    @classmethod
    def _known_providers(cls, value: str) -> str:
        unknown = [name for name in _split(value, ",") if name not in DIALECT_NAMES]
        if unknown:
            raise ValueError(
                f"unknown provider(s) {', '.join(unknown)}; known: {', '.join(DIALECT_NAMES)}"
            )
        return value

    @field_validator("api_rate_limit")
    @classmethod
    def _api_rate(cls, value: str) -> str:
        parse_rate(value)  # raises ValueError naming the bad rate
        return value

    @field_validator("price_table")
    @classmethod
    def _prices(cls, value: str) -> str:
        if value:
            PriceTable.from_json(value)  # raises ValueError naming the bad entry
        return value

    @field_validator("provider_concurrency")
    @classmethod
    def _limits(cls, value: str) -> str:
        parse_limits(value)
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis(cls, value: str) -> str:
        storage_url(value)  # raises ValueError naming the accepted schemes
        return value

    @field_validator("provider_rate_limits")
    @classmethod
    def _rates(cls, value: str) -> str:
        parse_rate_limits(value, names=DIALECT_NAMES)  # raises ValueError naming the bad item
        return value

    @field_validator("webhook_allowed_hosts")
    @classmethod
    def _webhook_hosts(cls, value: str) -> str:
        parse_allowed_hosts(value)  # raises ValueError naming the bad entry
        return value

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        return parse_level(value)

    @field_validator("moderation")
    @classmethod
    def _moderation_key(cls, value: str, info: ValidationInfo) -> str:
        # openai_api_key is declared earlier, so it is validated (and in info.data) by now
        if value == "openai" and info.data.get("openai_api_key") is None:
            raise ValueError("'openai' needs OPENAI_API_KEY (the key moderation is called with)")
        return value

    @property
    def provider_rates(self) -> dict[str, str]:
        return parse_rate_limits(self.provider_rate_limits, names=DIALECT_NAMES)

    @property
    def resolved_database_url(self) -> str:
        return (
            self.database_url or f"sqlite+aiosqlite:///{(self.data_dir / 'caverna.db').as_posix()}"
        )

    @property
    def provider_limits(self) -> dict[str, int]:
        return parse_limits(self.provider_concurrency)

    @property
    def pack_paths(self) -> list[Path]:
        return [Path(p) for p in _split(self.pack_path, os.pathsep)]

    @property
    def configured_providers(self) -> list[str]:
        """Providers whose settings are present, in a fixed order, then the offline preview."""
        present = {
            "openai": self.openai_api_key is not None,
            "stability": self.stability_api_key is not None,
            "midjourney": bool(self.midjourney_url),
            "sdwebui": bool(self.sdwebui_url),
            "comfyui": bool(self.comfyui_url),
            "preview": True,
        }
        return [name for name, ready in present.items() if ready]

    @property
    def provider_order(self) -> list[str]:
        """CAVERNA_PROVIDERS (configured ones only), else every configured provider."""
        configured = self.configured_providers
        wanted = _split(self.providers, ",")
        if not wanted:
            return configured
        return [name for name in wanted if name in configured] or [DEFAULT_DIALECT]

    @property
    def default_provider(self) -> str:
        """The dialect prompts are compiled for by default: compiling needs no credentials."""
        return (_split(self.providers, ",") or self.configured_providers)[0]


def _split(value: str, separator: str) -> list[str]:
    return [part.strip() for part in value.split(separator) if part.strip()]


def parse_limits(value: str) -> dict[str, int]:
    limits: dict[str, int] = {}
    for item in _split(value, ","):
        name, _, number = item.partition("=")
        if name.strip() not in DIALECT_NAMES or not number.strip().isdigit():
            raise ValueError(f"'{item}' is not provider=number with a known provider")
        limits[name.strip()] = max(1, int(number))
    return limits
