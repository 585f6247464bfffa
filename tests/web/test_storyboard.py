"""The storyboard page: every frame with one seed, followed, redone one by one, exported."""

from __future__ import annotations

import asyncio
import io
import re
import uuid
import zipfile

from PIL import Image

from caverna.domain.jobs import JobStatus
from tests.web.conftest import PASSWORD, Studio


def pack_frame_ids(studio: Studio) -> list[str]:
    pack = studio.runtime.container.packs.get(studio.runtime.settings.default_pack)
    return [frame.id for frame in pack.sequences["onboarding"].frames]


def data_images(html: str) -> list[str]:
    return re.findall(r'data-image="([^"]*)"', html)


async def generate_all(studio: Studio, **fields: str) -> uuid.UUID:
    csrf = await studio.csrf("/storyboard")
    answer = await studio.client.post(
        "/storyboard/generate",
        data={"csrf_token": csrf, "sequence_key": "onboarding", **fields},
    )
    assert answer.status_code == 303, answer.text[:500]
    location = answer.headers["location"]
    assert location.startswith("/storyboard?sequence=")
    return uuid.UUID(location.split("=", 1)[1])


async def run_worker(studio: Studio, jobs: int) -> None:
    stop = asyncio.Event()
    await asyncio.wait_for(studio.runtime.worker().run(stop, max_jobs=jobs), 60)


async def test_the_page_lists_every_frame_with_its_beat_and_an_empty_state(
    studio: Studio,
) -> None:
    bounce = await studio.client.get("/storyboard")
    assert bounce.status_code == 303
    assert bounce.headers["location"].startswith("/login")
    await studio.login()
    page = await studio.client.get("/storyboard")
    assert page.status_code == 200
    assert page.text.count('class="sb-frame"') == 8
    assert 'href="/storyboard" aria-current="page"' in page.text
    assert 'class="empty"' in page.text
    assert "Na entrada da caverna" in page.text  # frame 1's beat, in Portuguese by default
    assert "<progress" not in page.text
    # frames with no image yet still reserve their room: nothing moves when images arrive
    assert 'style="aspect-ratio: 144 / 256"' in page.text
    for label in ('for="sb-seed"', 'for="sb-outfit"', 'for="sb-footwear"', 'for="sb-provider"'):
        assert label in page.text
    await studio.client.get("/lang/en?next=/storyboard")
    english = await studio.client.get("/storyboard")
    assert "At the cave mouth, daylight behind him" in english.text
    assert "Generate all frames" in english.text
    positions = [english.text.index(f'id="frame-onboarding-{n}"') for n in range(1, 9)]
    assert positions == sorted(positions)
    titles = [english.text.index(title) for title in ("The invitation", "Emerging stronger")]
    assert titles == sorted(titles)


async def test_generate_all_follow_redo_one_frame_and_export(studio: Studio) -> None:
    await studio.login()
    frame_ids = pack_frame_ids(studio)
    sequence_id = await generate_all(studio, seed="42", outfit="", footwear="")
    jobs = await studio.runtime.jobs.for_sequence(sequence_id)
    assert len(jobs) == 8
    assert {job.seed for job in jobs} == {42}
    assert [job.frame_index for job in jobs] == list(range(8))

    pending = await studio.client.get(f"/storyboard?sequence={sequence_id}")
    assert f'data-sequence="{sequence_id}" data-active="true"' in pending.text
    assert pending.text.count("<progress") == 8
    assert 'aria-live="polite" data-summary>0 de 8 quadros prontos' in pending.text
    assert re.search(r"data-exports\s+hidden", pending.text)
    # without an id, the page opens the user's latest run
    latest = await studio.client.get("/storyboard")
    assert f'data-sequence="{sequence_id}"' in latest.text

    status = await studio.client.get(f"/web/sequences/{sequence_id}/status")
    assert status.status_code == 200
    body = status.json()
    assert (body["done"], body["total"], body["active"]) == (0, 8, True)
    assert [frame["frame_id"] for frame in body["frames"]] == [
        f"onboarding/{frame_id}" for frame_id in frame_ids
    ]
    assert {frame["status"] for frame in body["frames"]} == {"queued"}
    assert all(frame["thumbnail_url"] is None for frame in body["frames"])

    await run_worker(studio, 8)
    done = (await studio.client.get(f"/web/sequences/{sequence_id}/status")).json()
    assert (done["status"], done["done"], done["active"]) == ("completed", 8, False)
    assert all(frame["thumbnail_url"] for frame in done["frames"])
    assert all(0 < frame["width"] <= 256 and 0 < frame["height"] <= 256 for frame in done["frames"])
    page = await studio.client.get(f"/storyboard?sequence={sequence_id}")
    thumbnails = re.findall(
        r'<img src="[^"]+" alt="(\d)\. [^"]+" width="\d+" height="\d+"', page.text
    )
    assert thumbnails == [str(n) for n in range(1, 9)]
    assert "<progress" in page.text  # still there for the script, hidden once done
    assert "8 de 8 quadros prontos" in page.text

    # one frame again with a new seed: it takes the old image's place in the run
    old = data_images(page.text)
    third = uuid.UUID(old[2])
    csrf = await studio.csrf(f"/storyboard?sequence={sequence_id}")
    again = await studio.client.post(
        f"/storyboard/{sequence_id}/frames/{third}/regenerate",
        data={"csrf_token": csrf, "seed": "new"},
    )
    assert again.status_code == 303
    assert again.headers["location"] == (f"/storyboard?sequence={sequence_id}#frame-onboarding-3")
    assert len(await studio.runtime.jobs.for_sequence(sequence_id)) == 9
    redone = await studio.client.get(f"/storyboard?sequence={sequence_id}")
    now = data_images(redone.text)
    assert now[2] != old[2]
    assert now[:2] + now[3:] == old[:2] + old[3:]
    assert 'data-active="true"' in redone.text
    follow = (await studio.client.get(f"/web/sequences/{sequence_id}/status")).json()
    assert follow["frames"][2]["image_id"] == now[2]
    assert follow["frames"][2]["status"] == "queued"
    assert (follow["done"], follow["total"]) == (7, 8)
    # the JSON API agrees: still eight frames, the third one being the new image
    api = await studio.runtime.generation.sequence(sequence_id)
    assert [str(job.id) for job in api.jobs] == now
    await run_worker(studio, 1)
    replacement = await studio.runtime.jobs.get(uuid.UUID(now[2]))
    assert replacement is not None
    assert replacement.status is JobStatus.COMPLETED
    assert replacement.sequence_id == sequence_id
    assert replacement.frame_index == 2

    archive = await studio.client.get(f"/storyboard/{sequence_id}/export.zip")
    assert archive.status_code == 200
    assert archive.headers["content-type"] == "application/zip"
    assert "attachment" in archive.headers["content-disposition"]
    with zipfile.ZipFile(io.BytesIO(archive.content)) as opened:
        names = opened.namelist()
        assert names == [f"{n:02d}-{frame_id}.webp" for n, frame_id in enumerate(frame_ids, 1)]
        for name in names:
            data = opened.read(name)
            assert data[:4] == b"RIFF"
            assert data[8:12] == b"WEBP"
        assert replacement.storage_key is not None
        stored = await studio.runtime.store.get(replacement.storage_key)
        assert opened.read(f"03-{frame_ids[2]}.webp") == stored

    sheet = await studio.client.get(f"/storyboard/{sequence_id}/contact-sheet.png")
    assert sheet.status_code == 200
    assert sheet.headers["content-type"] == "image/png"
    assert sheet.content[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(io.BytesIO(sheet.content)) as picture:
        width, height = picture.size
    assert 4 * 256 < width < 4 * 256 + 200  # four frames across
    assert 2 * 256 < height < 2 * 256 + 300  # two rows, each with its titles


async def test_exports_before_any_frame_is_done_explain_why(studio: Studio) -> None:
    await studio.login()
    sequence_id = await generate_all(studio, seed="7")
    for path in ("export.zip", "contact-sheet.png"):
        answer = await studio.client.get(f"/storyboard/{sequence_id}/{path}")
        assert answer.status_code == 409
        assert "nada a exportar" in answer.text or "não há o que exportar" in answer.text
        assert f'href="/storyboard?sequence={sequence_id}"' in answer.text


async def test_another_users_run_is_not_found(studio: Studio) -> None:
    ana = await studio.runtime.generation.submit_sequence("ana", "onboarding", {"seed": 3})
    sequence_id = ana.sequence_id
    image_id = ana.jobs[0].id
    anonymous = await studio.client.get(f"/web/sequences/{sequence_id}/status")
    assert anonymous.status_code == 401
    await studio.runtime.accounts.create_key("bea", actor="test")
    await studio.runtime.accounts.set_password("bea", PASSWORD, actor="test")
    await studio.login("bea")
    for path in (
        f"/web/sequences/{sequence_id}/status",
        f"/web/sequences/{uuid.uuid4()}/status",
        "/web/sequences/not-an-id/status",
    ):
        assert (await studio.client.get(path)).status_code == 404
    for path in (
        f"/storyboard/{sequence_id}/export.zip",
        f"/storyboard/{sequence_id}/contact-sheet.png",
        f"/storyboard?sequence={sequence_id}",
        "/storyboard?sequence=nope",
    ):
        answer = await studio.client.get(path)
        assert answer.status_code == 404
        assert "text/html" in answer.headers["content-type"]
    csrf = await studio.csrf("/storyboard")
    redo = await studio.client.post(
        f"/storyboard/{sequence_id}/frames/{image_id}/regenerate",
        data={"csrf_token": csrf, "seed": "same"},
    )
    assert redo.status_code == 404
    assert len(await studio.runtime.jobs.for_sequence(sequence_id)) == 8
    # bea's own page knows nothing of ana's run
    own = await studio.client.get("/storyboard")
    assert str(sequence_id) not in own.text


async def test_a_frame_of_another_run_cannot_be_redone_through_this_one(studio: Studio) -> None:
    await studio.login()
    first = await generate_all(studio, seed="1")
    second = await generate_all(studio, seed="2")
    other = (await studio.runtime.jobs.for_sequence(second))[0].id
    csrf = await studio.csrf("/storyboard")
    answer = await studio.client.post(
        f"/storyboard/{first}/frames/{other}/regenerate", data={"csrf_token": csrf}
    )
    assert answer.status_code == 404
    assert len(await studio.runtime.jobs.for_sequence(second)) == 8


async def test_forms_without_the_csrf_token_are_refused(studio: Studio) -> None:
    await studio.login()
    answer = await studio.client.post(
        "/storyboard/generate", data={"sequence_key": "onboarding", "seed": "4"}
    )
    assert answer.status_code == 403
    assert await studio.runtime.jobs.counts() == {}
    sequence_id = await generate_all(studio, seed="4")
    image_id = (await studio.runtime.jobs.for_sequence(sequence_id))[0].id
    forged = await studio.client.post(
        f"/storyboard/{sequence_id}/frames/{image_id}/regenerate",
        data={"csrf_token": "forged", "seed": "new"},
    )
    assert forged.status_code == 403
    assert len(await studio.runtime.jobs.for_sequence(sequence_id)) == 8


async def test_an_invalid_request_shows_its_problems_and_queues_nothing(studio: Studio) -> None:
    await studio.login()
    csrf = await studio.csrf("/storyboard")
    for fields in (
        {"seed": "abc"},
        {"seed": "-3"},
        {"seed": "5", "outfit": "moonwalk-suit"},
        {"seed": "5", "provider": "nowhere"},
        {"seed": "5", "sequence_key": "onbording"},
    ):
        answer = await studio.client.post(
            "/storyboard/generate",
            data={"csrf_token": csrf, "sequence_key": "onboarding", **fields},
        )
        assert answer.status_code == 422, fields
        assert 'role="alert"' in answer.text
        # what was typed stays in the form, so it can be corrected
        assert 'name="seed"' in answer.text
        if fields["seed"] == "abc":
            # the field by the page's word for it (pt-BR by default), the value as typed
            assert "<strong>Semente</strong>" in answer.text
            assert 'value="abc"' in answer.text
    assert await studio.runtime.jobs.counts() == {}
    assert await studio.runtime.jobs.recent_sequences("ana", 10) == []
