"""Small pictures of each catalogue option for the generate page's pickers.

They are drawn by the offline preview renderer, so they cost nothing and need no provider, and
they are a pure function of the pack: the pack's template version names them. That makes two
caches safe without any invalidation: a per-process LRU for the hot set, and the object store so
a restart or another replica does not draw them again.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from caverna.brand.pack import BrandPack
from caverna.brand.schema import OPTION_KINDS, OptionKind, Pose, Prop
from caverna.imaging import make_thumbnail
from caverna.prompting.engine import PromptEngine
from caverna.prompting.spec import template_version
from caverna.providers.preview import draw_preview
from caverna.storage.base import ObjectExists, ObjectNotFound, ObjectStore, StorageError
from caverna.storage.keys import preview_key

log = logging.getLogger(__name__)

THUMB_SIZE = 160
# One fixed seed: every option is drawn over the same backdrop, so only the option differs.
SEED = 7
MEMORY_ENTRIES = 512
CONTENT_TYPE = "image/webp"


@dataclass(frozen=True, slots=True)
class OptionRef:
    """One option of the pack, already checked against its catalogue."""

    pack: BrandPack
    kind: OptionKind
    option_id: str

    @property
    def version(self) -> str:
        return template_version(self.pack)


def find_option(pack: BrandPack, kind: str, option_id: str) -> OptionRef | None:
    """The option when the pack has it; URL segments never reach a key or the renderer unchecked."""
    for known in OPTION_KINDS:
        if known == kind and option_id in pack.options(known):
            return OptionRef(pack, known, option_id)
    return None


def _scene_entry(pack: BrandPack, ref: OptionRef) -> dict[str, Any]:
    """The option as the preview dialect describes it (id, palette colour, hands)."""
    option = pack.options(ref.kind)[ref.option_id]
    if isinstance(option, Pose):
        return {"id": option.id, "free_hands": option.free_hands}
    palette = {color.name: color.hex for color in pack.model.foundation.technical.palette}
    entry: dict[str, Any] = {"id": option.id, "color": palette.get(option.color or "")}
    if isinstance(option, Prop):
        entry["hands"] = option.hands
    return entry


def render_option(engine: PromptEngine, ref: OptionRef, size: int) -> bytes:
    """The pack's default character with this one option swapped in, as a square WebP.

    The option goes into the compiled default scene rather than into the parameters: a prop that
    needs another outfit or more free hands would fail the rules, yet it still needs a picture.
    """
    compiled = engine.compile({"pack": ref.pack.id, "seed": SEED}, "preview")
    scene = dict(compiled.payload)
    # The renderer sizes its labels to the frame (11 px at least): drawn at twice the thumbnail and
    # reduced, the figure keeps most of the square instead of sharing it with oversized text.
    scene["width"] = scene["height"] = 2 * size
    entry = _scene_entry(ref.pack, ref)
    if ref.kind == "prop":
        scene["props"] = [entry]
    else:
        scene[ref.kind] = entry
    prompt = ref.pack.options(ref.kind)[ref.option_id].prompt
    return make_thumbnail(draw_preview(scene, prompt=prompt), size)


class OptionPreviews:
    """Finds or draws option previews: memory first, then the object store, then the renderer."""

    def __init__(
        self,
        store: ObjectStore,
        engine: PromptEngine,
        *,
        size: int = THUMB_SIZE,
        capacity: int = MEMORY_ENTRIES,
    ) -> None:
        self.store = store
        self.engine = engine
        self.size = size
        self.capacity = capacity
        self._memory: OrderedDict[str, bytes] = OrderedDict()

    def key(self, ref: OptionRef) -> str:
        return preview_key(ref.version, ref.kind, ref.option_id, self.size)

    def etag(self, ref: OptionRef) -> str:
        return f'"{ref.version}-{ref.kind}-{ref.option_id}-{self.size}"'

    async def image(self, ref: OptionRef) -> bytes:
        key = self.key(ref)
        cached = self._memory.get(key)
        if cached is not None:
            self._memory.move_to_end(key)
            return cached
        data = await self._stored(key)
        if data is None:
            data = await asyncio.to_thread(render_option, self.engine, ref, self.size)
            await self._keep(key, data)
        self._remember(key, data)
        return data

    async def _stored(self, key: str) -> bytes | None:
        """The stored copy, or None: an unreachable store costs a redraw, never a failed page."""
        try:
            return await self.store.get(key)
        except ObjectNotFound:
            return None
        except StorageError as exc:
            log.warning("option preview %s not read from the store: %s", key, exc)
            return None

    async def _keep(self, key: str, data: bytes) -> None:
        try:
            await self.store.put(key, data, content_type=CONTENT_TYPE, if_absent=True)
        except ObjectExists:
            pass  # another request or replica drew the same bytes first
        except StorageError as exc:
            log.warning("option preview %s not stored: %s", key, exc)

    def _remember(self, key: str, data: bytes) -> None:
        self._memory[key] = data
        self._memory.move_to_end(key)
        while len(self._memory) > self.capacity:
            self._memory.popitem(last=False)
