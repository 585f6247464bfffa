"""A run's current frames, and its exports from the object store: ZIP in order, contact sheet."""

from __future__ import annotations

import io
import uuid
import zipfile
from dataclasses import fields
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from PIL import Image

from caverna.domain.jobs import ImageJob, JobStatus
from caverna.services.generation import current_frames
from caverna.services.storyboards import (
    ExportFrame,
    NothingToExport,
    contact_sheet,
    file_name,
    frames_zip,
)
from caverna.storage.keys import image_key, thumbnail_key
from caverna.storage.memory import MemoryStore

T0 = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
RUN = uuid.uuid4()


def job(index: int, status: JobStatus = JobStatus.COMPLETED, minutes: int = 0) -> ImageJob:
    values: dict[str, Any] = {f.name: None for f in fields(ImageJob)}
    image_id = uuid.uuid4()
    created = T0 + timedelta(minutes=minutes)
    values.update(
        id=image_id,
        user_id="ana",
        status=status,
        params={"seed": 1},
        params_hash="h",
        pack_id="capitao-caverna",
        pack_version="1.0.0",
        template_version="t",
        sequence_id=RUN,
        frame_id=f"onboarding/frame-{index}",
        frame_index=index,
        pose="p",
        outfit="o",
        footwear="f",
        props="",
        provider="preview",
        delivery_format="webp",
        progress=1.0 if status is JobStatus.COMPLETED else 0.0,
        attempts=1,
        max_attempts=3,
        created_at=created,
        completed_at=created if status is JobStatus.COMPLETED else None,
        storage_key=image_key(image_id, created, "webp"),
        thumbnail_key=thumbnail_key(image_id, created),
    )
    return ImageJob(**values)


def webp(colour: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (36, 64), colour).save(out, format="WEBP")
    return out.getvalue()


async def stored(store: MemoryStore, item: ImageJob, colour: tuple[int, int, int]) -> None:
    assert item.storage_key is not None
    assert item.thumbnail_key is not None
    await store.put(item.storage_key, webp(colour), content_type="image/webp")
    await store.put(item.thumbnail_key, webp(colour), content_type="image/webp")


def test_the_newest_image_still_there_is_the_frame() -> None:
    first = [job(0), job(1), job(2)]
    again = job(1, JobStatus.QUEUED, minutes=5)
    deleted_retry = job(2, JobStatus.DELETED, minutes=6)
    ordered = [first[0], first[1], again, first[2], deleted_retry]
    assert current_frames(ordered) == [first[0], again, first[2]]


def test_a_frame_whose_images_were_all_deleted_keeps_its_newest() -> None:
    old = job(0, JobStatus.DELETED)
    newer = job(0, JobStatus.DELETED, minutes=1)
    assert current_frames([old, newer]) == [newer]
    assert current_frames([]) == []


def test_file_names_sort_in_story_order() -> None:
    frame = ExportFrame(3, "putting-distractions-away", "Putting distractions away", None)
    assert file_name(frame, "webp") == "03-putting-distractions-away.webp"


async def test_the_zip_holds_the_finished_frames_in_order() -> None:
    store = MemoryStore()
    done = [job(0), job(1), job(3)]
    for item, colour in zip(done, [(255, 0, 0), (0, 255, 0), (0, 0, 255)], strict=True):
        await stored(store, item, colour)
    lost = job(4)  # completed, but its object is gone: left out, not an error
    frames = [
        ExportFrame(1, "one", "One", done[0]),
        ExportFrame(2, "two", "Two", done[1]),
        ExportFrame(3, "three", "Three", job(2, JobStatus.PROCESSING)),
        ExportFrame(4, "four", "Four", done[2]),
        ExportFrame(5, "five", "Five", lost),
        ExportFrame(6, "six", "Six", None),
    ]
    data = await frames_zip(store, frames)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.namelist() == ["01-one.webp", "02-two.webp", "04-four.webp"]
        info = archive.getinfo("01-one.webp")
        assert info.date_time[:5] == (2030, 1, 2, 3, 4)  # when the frame was finished
        assert info.compress_type == zipfile.ZIP_STORED
        assert done[0].storage_key is not None
        assert archive.read("01-one.webp") == await store.get(done[0].storage_key)


async def test_nothing_finished_means_nothing_to_export() -> None:
    store = MemoryStore()
    frames = [ExportFrame(1, "one", "One", job(0, JobStatus.QUEUED))]
    with pytest.raises(NothingToExport):
        await frames_zip(store, frames)
    with pytest.raises(NothingToExport):
        await contact_sheet(store, frames)


async def test_the_contact_sheet_keeps_unfinished_frames_in_their_place() -> None:
    store = MemoryStore()
    first, third = job(0), job(2)
    await stored(store, first, (255, 0, 0))
    await stored(store, third, (0, 0, 255))
    frames = [
        ExportFrame(1, "one", "One", first),
        ExportFrame(2, "two", "Two", job(1, JobStatus.FAILED)),
        ExportFrame(3, "three", "Three", third),
    ]
    data = await contact_sheet(store, frames)
    with Image.open(io.BytesIO(data)) as picture:
        assert picture.format == "PNG"
        assert picture.width > 3 * 256  # three cells across, frame two left blank in between
