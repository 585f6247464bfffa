"""Thumbnails are made after completion: a link handed out before that must still show an image."""

from __future__ import annotations

import asyncio
import io
import uuid
from datetime import UTC, datetime

from PIL import Image

from caverna.api.media import MediaLinks
from caverna.services.links import LinkSigner
from caverna.storage.memory import MemoryStore
from caverna.worker.loop import Worker, WorkerOptions
from tests.api.conftest import Api

FRAME = {"frame": "onboarding/lighting-the-torch", "seed": 77}
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


async def drain_without_derivatives(api: Api, jobs: int) -> None:
    """Complete jobs the way a worker does that has not reached its derivatives pass yet."""
    runtime = api.runtime
    worker = Worker(
        jobs=runtime.jobs,
        processor=runtime.processor,
        providers=list(runtime.providers),
        options=WorkerOptions(concurrency=2, derivatives=False),
    )
    await asyncio.wait_for(worker.run(asyncio.Event(), max_jobs=jobs), 60)


async def test_a_thumbnail_link_works_before_the_pass_made_it(api: Api) -> None:
    image_id = await api.generate(api.ana, **FRAME)
    await drain_without_derivatives(api, 1)
    done = (await api.client.get(f"/api/v1/images/{image_id}/status", headers=api.ana)).json()
    assert done["status"] == "completed"
    job = await api.runtime.jobs.get(uuid.UUID(image_id))
    assert job is not None
    assert job.thumbnail_key is not None
    assert await api.runtime.store.head(job.thumbnail_key) is None
    assert done["thumbnail_url"]

    thumb = await api.client.get(done["thumbnail_url"])

    assert thumb.status_code == 200
    assert thumb.headers["content-type"] == "image/webp"
    with Image.open(io.BytesIO(thumb.content)) as picture:
        assert max(picture.size) == 256
    assert await api.runtime.store.head(job.thumbnail_key) is not None
    assert await api.runtime.jobs.pending_derivatives(10) == []
    again = await api.client.get(done["thumbnail_url"])
    assert again.content == thumb.content  # deterministic: the same bytes, no second make
    assert len(api.runtime.processor.derivatives.recent) == 1


async def test_a_forged_thumbnail_link_makes_nothing(api: Api) -> None:
    image_id = await api.generate(api.ana, **FRAME)
    await drain_without_derivatives(api, 1)
    done = (await api.client.get(f"/api/v1/images/{image_id}/status", headers=api.ana)).json()
    forged = done["thumbnail_url"].replace("sig=", "sig=0")

    answer = await api.client.get(forged)

    assert answer.status_code == 403
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["code"] == "invalid_link"
    assert len(api.runtime.processor.derivatives.recent) == 0
    assert len(await api.runtime.jobs.pending_derivatives(10)) == 1


class CdnStore(MemoryStore):
    """A store with links of its own, as S3 behind a CDN has."""

    async def url(self, key: str, *, expires_in: int | None = None) -> str | None:
        return f"https://cdn.example/{key}"


async def test_a_store_link_is_given_for_a_thumbnail_only_once_it_exists() -> None:
    store = CdnStore()
    links = MediaLinks(store, LinkSigner(b"k" * 32), clock=lambda: NOW)
    thumb = f"thumbs/2026/11/{uuid.uuid4()}.webp"
    original = f"images/2026/11/{uuid.uuid4()}.webp"

    before = await links.url(thumb)
    assert before is not None
    assert before.startswith(f"/media/{thumb}?expires=")  # through this server: made on request
    assert await links.url(original) == f"https://cdn.example/{original}"

    await store.put(thumb, b"RIFF....WEBP", content_type="image/webp")
    assert await links.url(thumb) == f"https://cdn.example/{thumb}"
    await store.delete(thumb)  # remembered: no second look at the store
    assert await links.url(thumb) == f"https://cdn.example/{thumb}"
