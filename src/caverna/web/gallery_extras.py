"""Gallery bulk actions (delete, ZIP download) and the option thumbnails of the generate pickers.

Bulk actions work on the caller's own images only, even for admins: the gallery lists only
theirs, so a form can never reach further than what the page showed. Ids of other users, unknown
ids and malformed ones are skipped exactly alike, so a form cannot probe which ids exist.
"""

from __future__ import annotations

import asyncio
import uuid
import zipfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import parse_qsl, urlencode

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, RedirectResponse, StreamingResponse

from caverna.api.objects import attachment
from caverna.api.state import ApiState
from caverna.domain.accounts import AuditAction, Principal
from caverna.domain.jobs import ImageJob, JobStatus
from caverna.prompting.spec import template_version
from caverna.services.image_actions import ImageNotFound
from caverna.storage.base import ObjectStore, StorageError
from caverna.web.i18n import register_messages
from caverna.web.option_previews import OptionPreviews, find_option
from caverna.web.routes import GALLERY_FILTERS, page, templates
from caverna.web.session import Visitor, check_csrf, signed_in, state_of

router = APIRouter(include_in_schema=False)

MAX_SELECTION = 200
# Picker thumbnails change only with the pack, whose template version is in their URL (?v=):
# such a URL may be cached for good; one without it (or an outdated one) only briefly.
VERSIONED_CACHE = "private, max-age=31536000, immutable"
UNVERSIONED_CACHE = "private, max-age=3600"
MAX_FILTER_VALUE = 200

register_messages(
    {
        "extras.select": {"en": "Select", "pt-BR": "Selecionar"},
        "extras.select_all": {
            "en": "Select all on this page",
            "pt-BR": "Selecionar todas desta página",
        },
        "extras.selected": {"en": "{count} selected", "pt-BR": "{count} selecionada(s)"},
        "extras.bulk": {"en": "Selected images", "pt-BR": "Imagens selecionadas"},
        "extras.zip": {"en": "Download ZIP", "pt-BR": "Baixar ZIP"},
        "extras.zip_help": {
            "en": "Only finished images go into the ZIP.",
            "pt-BR": "Só as imagens prontas entram no ZIP.",
        },
        "extras.delete": {"en": "Delete selected", "pt-BR": "Excluir selecionadas"},
        "extras.confirm_title": {"en": "Delete images", "pt-BR": "Excluir imagens"},
        "extras.confirm_delete": {
            "en": "Delete {count} selected image(s)? This cannot be undone.",
            "pt-BR": "Excluir {count} imagem(ns) selecionada(s)? Não dá para desfazer.",
        },
        "extras.confirm": {"en": "Delete", "pt-BR": "Excluir"},
        "extras.cancel": {"en": "Cancel", "pt-BR": "Cancelar"},
        "extras.nothing_selected": {
            "en": "Select at least one image first.",
            "pt-BR": "Selecione pelo menos uma imagem antes.",
        },
        "extras.too_many": {
            "en": "Select at most {limit} images at a time.",
            "pt-BR": "Selecione no máximo {limit} imagens por vez.",
        },
        "extras.nothing_to_delete": {
            "en": "None of the selected images can be deleted.",
            "pt-BR": "Nenhuma das imagens selecionadas pode ser excluída.",
        },
        "extras.nothing_to_zip": {
            "en": "None of the selected images is ready to download.",
            "pt-BR": "Nenhuma das imagens selecionadas está pronta para baixar.",
        },
        "extras.back": {"en": "Back to the gallery", "pt-BR": "Voltar à galeria"},
    }
)


# -- option thumbnails -------------------------------------------------------------------------


def thumb_version(request: Request) -> str:
    """The version the generate page puts in thumbnail URLs, so a pack edit busts browser caches."""
    runtime = state_of(request).runtime
    return template_version(runtime.container.packs.get(runtime.settings.default_pack))


templates.env.globals["thumb_version"] = thumb_version


def previews_of(request: Request) -> OptionPreviews:
    """One cache per app: its memory is only worth keeping while this process serves the app."""
    holder = request.app.state
    previews = getattr(holder, "option_previews", None)
    if not isinstance(previews, OptionPreviews):
        runtime = state_of(request).runtime
        previews = OptionPreviews(runtime.store, runtime.container.prompts)
        holder.option_previews = previews
    return previews


def _etag_matches(header: str | None, etag: str) -> bool:
    if not header:
        return False
    sent = {tag.strip().removeprefix("W/") for tag in header.split(",")}
    return "*" in sent or etag in sent


@router.get("/web/thumbs/{kind}/{option_id}.webp")
async def option_thumbnail(
    request: Request, kind: str, option_id: str, v: str | None = None
) -> Response:
    await signed_in(request)
    runtime = state_of(request).runtime
    ref = find_option(runtime.container.packs.get(runtime.settings.default_pack), kind, option_id)
    if ref is None:
        return JSONResponse({"detail": "not found"}, 404)
    previews = previews_of(request)
    headers = {
        "ETag": previews.etag(ref),
        "Cache-Control": VERSIONED_CACHE if v == ref.version else UNVERSIONED_CACHE,
    }
    if _etag_matches(request.headers.get("if-none-match"), headers["ETag"]):
        return Response(status_code=304, headers=headers)
    return Response(await previews.image(ref), media_type="image/webp", headers=headers)


# -- bulk actions ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Selection:
    visitor: Visitor
    principal: Principal
    ids: list[uuid.UUID]
    back: str
    confirmed: bool


def gallery_url(query: str) -> str:
    """Back to the gallery with the same filters, rebuilt from known names only: whatever the form
    sent, the redirect stays on this site and carries no header-breaking characters."""
    kept = [
        (name, value[:MAX_FILTER_VALUE])
        for name, value in parse_qsl(query[:4000])
        if name in GALLERY_FILTERS and value
    ]
    return f"/gallery?{urlencode(kept)}" if kept else "/gallery"


def _parse_ids(values: list[str]) -> list[uuid.UUID]:
    ids: list[uuid.UUID] = []
    for value in values:
        try:
            image_id = uuid.UUID(value)
        except ValueError:
            continue
        if image_id not in ids:
            ids.append(image_id)
    return ids


async def _selection(request: Request) -> Selection | Response:
    """The checked, CSRF-protected form, or the page that says why nothing will happen."""
    found = await signed_in(request)
    form = await request.form()
    check_csrf(found, str(form.get("csrf_token") or ""))
    assert found.session is not None
    back = gallery_url(str(form.get("back") or ""))
    sent = [str(value) for value in form.getlist("ids")]
    if not sent:
        return _notice(request, found, back, "extras.nothing_selected", 422)
    if len(set(sent)) > MAX_SELECTION:
        return _notice(request, found, back, "extras.too_many", 422)
    ids = _parse_ids(sent)
    return Selection(found, found.session.principal, ids, back, form.get("confirmed") == "yes")


def _notice(request: Request, found: Visitor, back: str, key: str, status: int) -> Response:
    return page(
        "gallery_bulk.html",
        request,
        found,
        status,
        active="gallery",
        back=back,
        message_key=key,
        limit=MAX_SELECTION,
        confirm=[],
    )


async def own_images(state: ApiState, principal: Principal, ids: list[uuid.UUID]) -> list[ImageJob]:
    jobs: list[ImageJob] = []
    for image_id in ids:
        try:
            job = await state.actions.visible(principal, image_id)
        except ImageNotFound:
            continue
        if job.user_id == principal.user_id and job.status is not JobStatus.DELETED:
            jobs.append(job)
    return jobs


@router.post("/gallery/delete")
async def delete_selected(request: Request) -> Response:
    """Deletes after a confirmation: the page's dialog, or without scripts a confirmation page."""
    chosen = await _selection(request)
    if isinstance(chosen, Response):
        return chosen
    state = state_of(request)
    jobs = await own_images(state, chosen.principal, chosen.ids)
    if not jobs:
        return _notice(request, chosen.visitor, chosen.back, "extras.nothing_to_delete", 404)
    if not chosen.confirmed:
        return page(
            "gallery_bulk.html",
            request,
            chosen.visitor,
            active="gallery",
            back=chosen.back,
            message_key="extras.confirm_title",
            limit=MAX_SELECTION,
            confirm=[job.id for job in jobs],
        )
    for job in jobs:
        try:
            result = await state.actions.delete(chosen.principal, job.id)
        except ImageNotFound:
            continue  # deleted meanwhile, by another tab or request
        await state.runtime.audit.record(
            chosen.principal.user_id,
            AuditAction.IMAGE_DELETED,
            str(job.id),
            owner=result.job.user_id,
            objects_removed=result.objects_removed,
            via="web",
        )
    return RedirectResponse(chosen.back, 303)


def download_name(job: ImageJob) -> str:
    """The name the single download uses, so a ZIP entry and a downloaded file look the same."""
    assert job.storage_key is not None
    extension = job.storage_key.rsplit(".", 1)[-1]
    parts = [job.pack_id, (job.frame_id or job.pose).replace("/", "-"), job.id.hex[:8]]
    return "-".join(parts) + f".{extension}"


class _Chunks:
    """A write-only sink: the ZIP is sent as it is written instead of being held whole in memory.

    Having no ``tell()``, it makes zipfile write sizes after each entry (a data descriptor), which
    every unzip tool reads.
    """

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def write(self, data: bytes, /) -> int:
        self._parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        return None

    def close(self) -> None:
        return None

    def take(self) -> bytes:
        data = b"".join(self._parts)
        self._parts.clear()
        return data


def _zip_time(moment: datetime) -> tuple[int, int, int, int, int, int]:
    if moment.year < 1980:  # the earliest date a ZIP entry can hold
        return (1980, 1, 1, 0, 0, 0)
    return (moment.year, moment.month, moment.day, moment.hour, moment.minute, moment.second)


async def zip_stream(store: ObjectStore, jobs: list[ImageJob]) -> AsyncIterator[bytes]:
    """Stored, not deflated: WebP, PNG and AVIF are compressed already and would not shrink."""
    sink = _Chunks()
    names: set[str] = set()
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_STORED) as archive:
        for job in jobs:
            assert job.storage_key is not None
            try:
                data = await store.get(job.storage_key)
            except StorageError:
                continue  # removed or unreachable since it was listed: the rest still arrive
            name = download_name(job)
            stem, dot, extension = name.rpartition(".")
            number = 2
            while name in names:
                name = f"{stem}-{number}{dot}{extension}"
                number += 1
            names.add(name)
            entry = zipfile.ZipInfo(name, _zip_time(job.completed_at or job.created_at))
            entry.external_attr = 0o644 << 16
            await asyncio.to_thread(archive.writestr, entry, data)
            yield sink.take()
    yield sink.take()


@router.post("/gallery/zip")
async def zip_selected(request: Request) -> Response:
    chosen = await _selection(request)
    if isinstance(chosen, Response):
        return chosen
    state = state_of(request)
    jobs = [
        job
        for job in await own_images(state, chosen.principal, chosen.ids)
        if job.status is JobStatus.COMPLETED and job.storage_key is not None
    ]
    if not jobs:
        return _notice(request, chosen.visitor, chosen.back, "extras.nothing_to_zip", 404)
    stamp = state.runtime.clock().strftime("%Y%m%d-%H%M%S")
    return StreamingResponse(
        zip_stream(state.runtime.store, jobs),
        media_type="application/zip",
        headers={
            "Content-Disposition": attachment(f"caverna-{stamp}.zip"),
            "Cache-Control": "no-store",
        },
    )
