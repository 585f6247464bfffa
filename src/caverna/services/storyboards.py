"""Storyboard exports: a run's frames as a ZIP of the delivered images, or as one contact sheet.

Both are built in memory from the object store: a run is a handful of frames of a few hundred
kilobytes each, and the CPU work (zipping, drawing) runs in a thread so the event loop keeps
serving other requests meanwhile.
"""

from __future__ import annotations

import asyncio
import io
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass

from caverna.domain.jobs import ImageJob, JobStatus
from caverna.imaging.contact_sheet import SheetCell, SheetLayout, compose_contact_sheet
from caverna.storage.base import ObjectNotFound, ObjectStore

# the ZIP format cannot store dates before 1980; a frame without a completion time gets this
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


class NothingToExport(LookupError):
    """No frame of the run has a finished image, so there is nothing to put in a file."""


@dataclass(frozen=True, slots=True)
class ExportFrame:
    """A frame of a run: its place (from 1), its id in the storyboard, its title, its image."""

    number: int
    slug: str
    title: str
    job: ImageJob | None

    @property
    def done(self) -> bool:
        return self.job is not None and self.job.status is JobStatus.COMPLETED


def file_name(frame: ExportFrame, extension: str) -> str:
    """`01-the-invitation.webp`: sorts in story order in any file browser."""
    return f"{frame.number:02d}-{frame.slug}.{extension}"


async def frames_zip(store: ObjectStore, frames: Sequence[ExportFrame]) -> bytes:
    """The finished frames' delivered images, in story order; a lost object is left out."""
    entries: list[tuple[zipfile.ZipInfo, bytes]] = []
    for frame in frames:
        job = frame.job
        if not frame.done or job is None or job.storage_key is None:
            continue
        try:
            data = await store.get(job.storage_key)
        except ObjectNotFound:
            continue
        info = zipfile.ZipInfo(file_name(frame, job.storage_key.rsplit(".", 1)[-1]))
        stamp = job.completed_at
        info.date_time = stamp.timetuple()[:6] if stamp and stamp.year >= 1980 else _ZIP_EPOCH
        # delivered images are compressed already: deflating them again costs time, saves nothing
        info.compress_type = zipfile.ZIP_STORED
        entries.append((info, data))
    if not entries:
        raise NothingToExport
    return await asyncio.to_thread(_zip, entries)


def _zip(entries: Sequence[tuple[zipfile.ZipInfo, bytes]]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for info, data in entries:
            archive.writestr(info, data)
    return out.getvalue()


async def contact_sheet(
    store: ObjectStore, frames: Sequence[ExportFrame], layout: SheetLayout = SheetLayout()
) -> bytes:
    """Every frame in order, from the stored thumbnails; frames not finished stay blank.

    Thumbnails rather than the full images: the sheet is for judging the whole at a glance,
    and they are a tenth of the bytes to read and to decode.
    """
    if not any(frame.done for frame in frames):
        raise NothingToExport
    cells: list[SheetCell] = []
    for frame in frames:
        job = frame.job if frame.done else None
        data: bytes | None = None
        # a thumbnail is made after completion: until it exists, the original stands in
        for key in (job.thumbnail_key, job.storage_key) if job is not None else ():
            if key is None:
                continue
            try:
                data = await store.get(key)
                break
            except ObjectNotFound:
                data = None
        cells.append(SheetCell(f"{frame.number}. {frame.title}", data))
    return await asyncio.to_thread(compose_contact_sheet, cells, layout)
