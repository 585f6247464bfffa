"""Gallery multi-select (bulk delete and ZIP download) and the pickers' option thumbnails."""

from __future__ import annotations

import asyncio
import io
import re
import uuid
import zipfile
from typing import Any

import pytest
from PIL import Image

from caverna.domain.accounts import AuditAction
from caverna.domain.jobs import JobStatus
from caverna.prompting.spec import template_version
from caverna.providers.preview import draw_preview
from caverna.storage.keys import preview_key
from caverna.web import option_previews
from caverna.web.gallery_extras import MAX_SELECTION
from caverna.web.option_previews import OptionPreviews, find_option
from tests.web.conftest import Studio

TORCH = "onboarding/lighting-the-torch"


async def make_images(
    studio: Studio, user: str, count: int, *, run: bool = True
) -> list[uuid.UUID]:
    ids = []
    for seed in range(count):
        result = await studio.runtime.generation.submit(user, {"frame": TORCH, "seed": 100 + seed})
        ids.append(result.job.id)
    if run:
        stop = asyncio.Event()
        await asyncio.wait_for(studio.runtime.worker().run(stop, max_jobs=count), 60)
    return ids


async def status_of(studio: Studio, image_id: uuid.UUID) -> JobStatus:
    job = await studio.runtime.jobs.get(image_id)
    assert job is not None
    return job.status


def version(studio: Studio) -> str:
    runtime = studio.runtime
    return template_version(runtime.container.packs.get(runtime.settings.default_pack))


# -- multi-select ----------------------------------------------------------------------------


async def test_the_gallery_offers_labelled_checkboxes_and_the_bulk_bar(studio: Studio) -> None:
    await studio.login()
    ids = await make_images(studio, "ana", 2, run=False)
    page = (await studio.client.get("/gallery?q=torch")).text
    for image_id in ids:
        assert f'id="pick-{image_id}" form="bulk"' in page
        assert f'<label for="pick-{image_id}">' in page
    assert 'id="select-all"' in page
    assert 'formaction="/gallery/delete"' in page
    assert 'formaction="/gallery/zip"' in page
    assert '<dialog id="bulk-confirm"' in page
    assert 'name="back" value="q=torch"' in page
    assert "/static/gallery.js" in page


async def test_bulk_delete_removes_only_the_callers_selected_images(studio: Studio) -> None:
    first, second, kept = await make_images(studio, "ana", 3)
    (other,) = await make_images(studio, "bea", 1)
    await studio.login()
    csrf = await studio.csrf("/gallery")
    form: dict[str, Any] = {
        "csrf_token": csrf,
        "ids": [str(first), str(second), str(other), "not-an-id", str(uuid.uuid4())],
        "back": "frame=onboarding%2Flighting-the-torch&sort=oldest&evil=https://x.example",
    }

    asked = await studio.client.post("/gallery/delete", data=form)
    assert asked.status_code == 200  # no confirmation yet: a page asks for it
    assert asked.text.count('name="ids"') == 2
    assert str(other) not in asked.text
    assert await status_of(studio, first) is JobStatus.COMPLETED

    done = await studio.client.post("/gallery/delete", data={**form, "confirmed": "yes"})
    assert done.status_code == 303
    assert done.headers["location"] == "/gallery?frame=onboarding%2Flighting-the-torch&sort=oldest"
    assert await status_of(studio, first) is JobStatus.DELETED
    assert await status_of(studio, second) is JobStatus.DELETED
    assert await status_of(studio, kept) is JobStatus.COMPLETED
    assert await status_of(studio, other) is JobStatus.COMPLETED
    entries, _ = await studio.runtime.audit.query(action=AuditAction.IMAGE_DELETED)
    assert sorted(entry.target or "" for entry in entries) == sorted([str(first), str(second)])
    assert all(entry.actor == "ana" and entry.details["via"] == "web" for entry in entries)

    again = await studio.client.post("/gallery/delete", data={**form, "confirmed": "yes"})
    assert again.status_code == 404  # nothing of the selection is left to delete


async def test_zip_holds_the_completed_selected_images_named_like_downloads(
    studio: Studio,
) -> None:
    done = await make_images(studio, "ana", 2)
    (queued,) = await make_images(studio, "ana", 1, run=False)
    (other,) = await make_images(studio, "bea", 1)
    await studio.login()
    csrf = await studio.csrf("/gallery")
    ids = [*map(str, [*done, queued, other, uuid.uuid4()]), "../../etc/passwd"]
    answer = await studio.client.post("/gallery/zip", data={"csrf_token": csrf, "ids": ids})
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/zip"
    assert answer.headers["content-disposition"].startswith('attachment; filename="caverna-')
    expected = []
    for image_id in done:
        download = await studio.client.get(f"/images/{image_id}/download")
        found = re.search(r'filename="([^"]+)"', download.headers["content-disposition"])
        assert found is not None
        expected.append(found.group(1))
        assert (
            found.group(1)
            == f"capitao-caverna-onboarding-lighting-the-torch-{image_id.hex[:8]}.webp"
        )
    with zipfile.ZipFile(io.BytesIO(answer.content)) as archive:
        assert archive.testzip() is None
        assert sorted(archive.namelist()) == sorted(expected)
        for name in archive.namelist():
            data = archive.read(name)
            assert data[:4] == b"RIFF"
            assert data[8:12] == b"WEBP"

    foreign = await studio.client.post(
        "/gallery/zip", data={"csrf_token": csrf, "ids": [str(other)]}
    )
    assert foreign.status_code == 404
    assert "pronta para baixar" in foreign.text or "ready to download" in foreign.text


async def test_a_selection_over_the_cap_or_empty_is_refused(studio: Studio) -> None:
    (image,) = await make_images(studio, "ana", 1)
    await studio.login()
    csrf = await studio.csrf("/gallery")
    many = [str(uuid.uuid4()) for _ in range(MAX_SELECTION)] + [str(image)]
    for action in ("delete", "zip"):
        refused = await studio.client.post(
            f"/gallery/{action}", data={"csrf_token": csrf, "ids": many, "confirmed": "yes"}
        )
        assert refused.status_code == 422
        assert f"no máximo {MAX_SELECTION} imagens" in refused.text
        assert 'href="/gallery"' in refused.text
    assert await status_of(studio, image) is JobStatus.COMPLETED
    empty = await studio.client.post("/gallery/zip", data={"csrf_token": csrf})
    assert empty.status_code == 422


async def test_bulk_actions_need_the_csrf_token_and_a_session(studio: Studio) -> None:
    (image,) = await make_images(studio, "ana", 1)
    form = {"ids": [str(image)], "confirmed": "yes"}
    logged_out = await studio.client.post("/gallery/delete", data=form)
    assert logged_out.status_code == 303
    assert logged_out.headers["location"].startswith("/login")
    await studio.login()
    for action in ("delete", "zip"):
        assert (await studio.client.post(f"/gallery/{action}", data=form)).status_code == 403
        forged = {**form, "csrf_token": "forged"}
        assert (await studio.client.post(f"/gallery/{action}", data=forged)).status_code == 403
    assert await status_of(studio, image) is JobStatus.COMPLETED


# -- option thumbnails -----------------------------------------------------------------------


@pytest.fixture
def drawn(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Counts the renderer's calls, to tell a drawn thumbnail from a cached one."""
    calls: list[str] = []

    def counting(scene: dict[str, Any], *, prompt: str) -> Image.Image:
        calls.append(str(scene["outfit"]["id"]))
        return draw_preview(scene, prompt=prompt)

    monkeypatch.setattr(option_previews, "draw_preview", counting)
    return calls


async def test_a_thumbnail_is_drawn_once_then_cached_in_memory_and_storage(
    studio: Studio, drawn: list[str]
) -> None:
    await studio.login()
    current = version(studio)
    url = f"/web/thumbs/outfit/explorer-vest.webp?v={current}"
    first = await studio.client.get(url)
    assert first.status_code == 200
    assert first.headers["content-type"] == "image/webp"
    assert current in first.headers["etag"]
    assert "max-age=31536000" in first.headers["cache-control"]
    with Image.open(io.BytesIO(first.content)) as image:
        assert (image.format, image.size) == ("WEBP", (160, 160))
    assert drawn == ["explorer-vest"]

    second = await studio.client.get(url)
    assert second.content == first.content
    assert drawn == ["explorer-vest"]  # from memory
    unchanged = await studio.client.get(url, headers={"if-none-match": first.headers["etag"]})
    assert unchanged.status_code == 304
    assert not unchanged.content

    key = preview_key(current, "outfit", "explorer-vest", 160)
    assert key == f"previews/{current}/outfit/explorer-vest-160.webp"
    assert await studio.runtime.store.get(key) == first.content
    # a new process starts with an empty memory: the stored copy spares it the drawing
    runtime = studio.runtime
    pack = runtime.container.packs.get(runtime.settings.default_pack)
    ref = find_option(pack, "outfit", "explorer-vest")
    assert ref is not None
    restarted = OptionPreviews(runtime.store, runtime.container.prompts)
    assert await restarted.image(ref) == first.content
    assert drawn == ["explorer-vest"]

    unversioned = await studio.client.get("/web/thumbs/outfit/explorer-vest.webp")
    assert "immutable" not in unversioned.headers["cache-control"]


async def test_every_kind_of_option_has_a_thumbnail(studio: Studio, drawn: list[str]) -> None:
    await studio.login()
    for kind, option in (("pose", "arms-crossed"), ("footwear", "barefoot"), ("prop", "torch")):
        answer = await studio.client.get(f"/web/thumbs/{kind}/{option}.webp")
        assert answer.status_code == 200, (kind, option)
        assert answer.content[8:12] == b"WEBP"
    assert len(drawn) == 3


async def test_unknown_options_and_visitors_get_no_thumbnail(studio: Studio) -> None:
    assert (await studio.client.get("/web/thumbs/outfit/explorer-vest.webp")).status_code == 401
    await studio.login()
    for path in ("outfit/moonwalk", "cape/explorer-vest", "outfit/..%2F..%2Fsecret", "props/torch"):
        assert (await studio.client.get(f"/web/thumbs/{path}.webp")).status_code == 404, path
    assert await studio.runtime.store.list_keys("previews/") == []


async def test_the_generate_page_shows_option_thumbnails_with_their_labels(
    studio: Studio,
) -> None:
    await studio.login()
    current = version(studio)
    page = (await studio.client.get("/generate")).text
    assert f'src="/web/thumbs/prop/torch.webp?v={current}"' in page
    assert 'width="40" height="40"' in page
    assert f'id="outfit-thumb" data-kind="outfit" data-version="{current}"' in page
    assert "/static/pickers.js" in page
    csrf = await studio.csrf()
    again = await studio.client.post(
        "/generate", data={"csrf_token": csrf, "pose": "moonwalk", "outfit": "explorer-vest"}
    )
    assert again.status_code == 422
    pack = studio.runtime.container.packs.get(studio.runtime.settings.default_pack)
    label = pack.outfits["explorer-vest"].labels.pt_br
    assert (
        f'<img src="/web/thumbs/outfit/explorer-vest.webp?v={current}" alt="{label}" '
        'width="120" height="120">'
    ) in again.text


@pytest.mark.parametrize(
    ("version_", "kind", "option", "size"),
    [
        ("e1-abc", "outfit", "../x", 160),
        ("e1/abc", "outfit", "vest", 160),
        ("e1-abc", "", "vest", 160),
        ("e1-abc", "outfit", "vest", 4096),
    ],
)
def test_preview_keys_refuse_anything_but_plain_segments(
    version_: str, kind: str, option: str, size: int
) -> None:
    with pytest.raises(ValueError, match="preview"):
        preview_key(version_, kind, option, size)
