"""Every dialect by name; the order is the order people see them in."""

from __future__ import annotations

from caverna.prompting.dialects import comfyui, midjourney, openai, preview, sdwebui, stability
from caverna.prompting.dialects.base import Dialect

DIALECTS: dict[str, Dialect] = {
    d.name: d
    for d in (
        preview.DIALECT,
        openai.DIALECT,
        stability.DIALECT,
        midjourney.DIALECT,
        sdwebui.DIALECT,
        comfyui.DIALECT,
    )
}
DIALECT_NAMES: tuple[str, ...] = tuple(DIALECTS)
DEFAULT_DIALECT = "preview"
