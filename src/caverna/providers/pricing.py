"""What one generated image costs, per provider and model, so every job can carry its spend.

Prices change more often than code ships, so the table is data: the defaults below are the
published figures, and an operator can replace any provider's models with a JSON override
without a release. A price that cannot be found is 0.0 rather than an error: a missing entry
must never fail a generation that already succeeded and was paid for.

Layout, in Python and in JSON alike::

    {"<provider>": {"<model>": PRICE | {"default": PRICE, "<quality>": PRICE | {"<size>": PRICE,
                                                                             "default": PRICE}}}}

Lookup falls back from the exact (quality, size) to that quality's default, then to the model's
default, then to 0.0.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

DEFAULT_KEY = "default"

PriceKey = tuple[str, str, str | None, str | None]
"""(provider, model, quality, size); None stands for "any" at that level."""


@dataclass(frozen=True)
class PriceTable:
    """Prices in USD per image, flattened so a lookup is a few dictionary probes."""

    entries: Mapping[PriceKey, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for key, value in self.entries.items():
            _check_price(value, "/".join(part for part in key if part is not None))
        # frozen means frozen: a caller keeping the dict it passed in must not alter our prices
        object.__setattr__(self, "entries", MappingProxyType(dict(self.entries)))

    @classmethod
    def from_mapping(cls, prices: Mapping[str, Any]) -> PriceTable:
        """Read the nested layout described in the module docstring; raises ValueError."""
        entries: dict[PriceKey, float] = {}
        for provider, models in _items(prices, "prices"):
            for model, spec in _items(models, provider):
                _flatten_model(entries, provider, model, spec)
        return cls(entries)

    @classmethod
    def from_json(cls, text: str) -> PriceTable:
        """Operators keep prices in configuration; a typo must fail loudly at start-up."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"the price table is not valid JSON: {exc}") from exc
        return cls.from_mapping(data)

    def merged(self, override: PriceTable) -> PriceTable:
        """This table with every (provider, model) that `override` names replaced wholesale.

        Replacing per model, not per entry, means a flat override price is not shadowed by a
        stale size-specific default.
        """
        replaced = {(key[0], key[1]) for key in override.entries}
        kept = {k: v for k, v in self.entries.items() if (k[0], k[1]) not in replaced}
        return PriceTable({**kept, **override.entries})

    def price(
        self, provider: str, model: str, *, quality: str | None = None, size: str | None = None
    ) -> float:
        for key in (
            (provider, model, quality, size),
            (provider, model, quality, None),
            (provider, model, None, None),
        ):
            found = self.entries.get(key)
            if found is not None:
                return found
        return 0.0


def _items(value: object, where: str) -> list[tuple[str, Any]]:
    if not isinstance(value, Mapping):
        raise ValueError(f"{where}: expected an object, got {type(value).__name__}")
    out = []
    for key, item in value.items():
        if not isinstance(key, str) or not key:
            raise ValueError(f"{where}: keys must be non-empty strings, got {key!r}")
        out.append((key, item))
    return out


def _flatten_model(entries: dict[PriceKey, float], provider: str, model: str, spec: Any) -> None:
    where = f"{provider}/{model}"
    if not isinstance(spec, Mapping):
        entries[(provider, model, None, None)] = _check_price(spec, where)
        return
    for quality, sizes in _items(spec, where):
        if quality == DEFAULT_KEY:
            entries[(provider, model, None, None)] = _check_price(sizes, f"{where}/{quality}")
            continue
        if not isinstance(sizes, Mapping):
            entries[(provider, model, quality, None)] = _check_price(sizes, f"{where}/{quality}")
            continue
        for size, value in _items(sizes, f"{where}/{quality}"):
            cell = None if size == DEFAULT_KEY else size
            entries[(provider, model, quality, cell)] = _check_price(
                value, f"{where}/{quality}/{size}"
            )


def _check_price(value: object, where: str) -> float:
    # bool is an int to Python, and `true` in a price file is certainly a mistake
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{where}: a price must be a number, got {value!r}")
    price = float(value)
    if not math.isfinite(price) or price < 0:
        raise ValueError(f"{where}: a price must be a finite, non-negative number, got {value!r}")
    return price


def _openai_model(square: dict[str, float], rect: dict[str, float]) -> dict[str, Any]:
    model: dict[str, Any] = {
        quality: {
            "1024x1024": square[quality],
            "1024x1536": rect[quality],
            "1536x1024": rect[quality],
            # sizes off the published grid (gpt-image-2's free WxH, "auto") are charged at the
            # rectangular price: over-estimating keeps budgets on the safe side
            DEFAULT_KEY: rect[quality],
        }
        for quality in square
    }
    # quality "auto" lets the service choose, possibly "high": assume the dearest
    model[DEFAULT_KEY] = rect["high"]
    return model


_GPT_IMAGE_1 = _openai_model(
    square={"low": 0.011, "medium": 0.042, "high": 0.167},
    rect={"low": 0.016, "medium": 0.063, "high": 0.25},
)
_GPT_IMAGE_1_MINI = _openai_model(
    square={"low": 0.005, "medium": 0.011, "high": 0.036},
    rect={"low": 0.006, "medium": 0.015, "high": 0.052},
)

DEFAULT_PRICE_MAPPING: dict[str, Any] = {
    # Official model pages, copies read after 2026-06 (mini) and 2026-10-23 (gpt-image-1).
    "openai": {
        "gpt-image-1": _GPT_IMAGE_1,
        "gpt-image-1-mini": _GPT_IMAGE_1_MINI,
        # No per-image price for gpt-image-2 was available; it is assumed to cost what
        # gpt-image-1 did until an operator override says otherwise.
        "gpt-image-2": _GPT_IMAGE_1,
    },
    # Stability bills in credits, 1 credit = $0.01: 8, 6.5, 4, 3.5 and 3 credits per image
    # (third-party summary, June 2026; the SD3 figures match the official reference of 2024).
    # Keys are the endpoint, or the model for the sd3 endpoint.
    "stability": {
        "ultra": 0.08,
        "sd3.5-large": 0.065,
        "sd3.5-large-turbo": 0.04,
        "sd3.5-medium": 0.035,
        "core": 0.03,
    },
}

DEFAULT_PRICES = PriceTable.from_mapping(DEFAULT_PRICE_MAPPING)
