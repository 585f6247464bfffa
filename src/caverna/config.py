"""Settings from the environment (prefix CAVERNA_) and an optional .env file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from caverna.brand.registry import DEFAULT_PACK_ID
from caverna.prompting.dialects.registry import DEFAULT_DIALECT, DIALECT_NAMES


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

    @field_validator("providers")
    @classmethod
    def _known_providers(cls, value: str) -> str:
        unknown = [name for name in _split(value, ",") if name not in DIALECT_NAMES]
        if unknown:
            raise ValueError(
                f"unknown provider(s) {', '.join(unknown)}; known: {', '.join(DIALECT_NAMES)}"
            )
        return value

    @property
    def pack_paths(self) -> list[Path]:
        return [Path(p) for p in _split(self.pack_path, os.pathsep)]

    @property
    def provider_order(self) -> list[str]:
        return _split(self.providers, ",") or [DEFAULT_DIALECT]

    @property
    def default_provider(self) -> str:
        return self.provider_order[0]


def _split(value: str, separator: str) -> list[str]:
    return [part.strip() for part in value.split(separator) if part.strip()]
