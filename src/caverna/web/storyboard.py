"""The storyboard page: every frame of a storyboard made with one seed, followed and exported.

A run is shown frame by frame in story order, each frame with its narrative beat, because the
frames are judged against the story they tell. A frame made again takes its old image's place
in the run (the newest image still there is the frame), so a reviewer fixes one frame without
losing the seed the others share.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse

from caverna.api.deps import check_quota, quota_held
from caverna.api.problems import ApiProblem
from caverna.brand.pack import BrandPack
from caverna.brand.schema import Sequence
from caverna.domain.accounts import Principal
from caverna.domain.jobs import ImageJob, JobStatus, SequenceRun
from caverna.domain.problems import ProblemsError
from caverna.imaging.contact_sheet import fit_within
from caverna.services.consistency_reports import sequence_report
from caverna.services.generation import sequence_status
from caverna.services.image_actions import ImageNotFound, SeedChoice
from caverna.services.storyboards import (
    ExportFrame,
    NothingToExport,
    contact_sheet,
    frames_zip,
)
from caverna.storage.base import StorageError
from caverna.web import catalog_view
from caverna.web.consistency_view import ContinuityPanel, continuity_panel
from caverna.web.i18n import register_messages
from caverna.web.routes import page
from caverna.web.session import Visitor, check_csrf, signed_in, state_of

router = APIRouter(include_in_schema=False)

# the pipeline's thumbnail size: images get their exact width and height before they load
THUMBNAIL = 256
RECENT_RUNS = 30
EARLIER_RUNS_SHOWN = 8
ACTIVE = frozenset({JobStatus.QUEUED.value, JobStatus.PROCESSING.value})
FIRST_SEQUENCE = "onboarding"
SHARED_FIELDS = ("outfit", "footwear", "aspect_ratio", "seed")

register_messages(
    {
        "storyboard.title": {"en": "Storyboard", "pt-BR": "Storyboard"},
        "storyboard.intro": {
            "en": "Every frame of a storyboard with one shared seed, in story order.",
            "pt-BR": (
                "Todos os quadros de um storyboard com uma semente comum, na ordem da história."
            ),
        },
        "storyboard.generate_title": {
            "en": "Generate all frames",
            "pt-BR": "Gerar todos os quadros",
        },
        "storyboard.sequence": {"en": "Storyboard", "pt-BR": "Storyboard"},
        "storyboard.seed": {"en": "Shared seed", "pt-BR": "Semente comum"},
        "storyboard.seed_help": {
            "en": "A whole number. Empty: one is drawn for you, and shown with the run.",
            "pt-BR": "Um número inteiro. Vazio: uma é sorteada e aparece junto com a rodada.",
        },
        "storyboard.shared_help": {
            "en": "Pose and props belong to each frame; outfit and footwear are shared.",
            "pt-BR": "Pose e objetos são de cada quadro; roupa e calçado são comuns a todos.",
        },
        "storyboard.generate_all": {
            "en": "Generate all frames",
            "pt-BR": "Gerar todos os quadros",
        },
        "storyboard.frames": {"en": "Frames", "pt-BR": "Quadros"},
        "storyboard.no_run": {
            "en": "No run of this storyboard yet. Generate all frames above to see them here.",
            "pt-BR": (
                "Nenhuma rodada deste storyboard ainda. "
                "Gere todos os quadros acima para vê-los aqui."
            ),
        },
        "storyboard.run_of": {"en": "Run of", "pt-BR": "Rodada de"},
        "storyboard.summary": {
            "en": "{done} of {total} frames done",
            "pt-BR": "{done} de {total} quadros prontos",
        },
        "storyboard.export_zip": {
            "en": "Download frames (ZIP)",
            "pt-BR": "Baixar quadros (ZIP)",
        },
        "storyboard.export_sheet": {
            "en": "Download contact sheet (PNG)",
            "pt-BR": "Baixar folha de contato (PNG)",
        },
        "storyboard.earlier": {"en": "Earlier runs", "pt-BR": "Rodadas anteriores"},
        "storyboard.showing": {"en": "shown", "pt-BR": "exibida"},
        "storyboard.open": {"en": "Open image", "pt-BR": "Abrir imagem"},
        "storyboard.not_started": {"en": "Not generated", "pt-BR": "Não gerado"},
        "storyboard.nothing_to_export": {
            "en": "No frame of this run is done yet, so there is nothing to export.",
            "pt-BR": "Nenhum quadro desta rodada está pronto, então não há o que exportar.",
        },
        "storyboard.storage_unavailable": {
            "en": "The stored images cannot be read right now. Try again in a moment.",
            "pt-BR": "As imagens guardadas não podem ser lidas agora. Tente de novo em instantes.",
        },
        "storyboard.back": {"en": "Back to the storyboard", "pt-BR": "Voltar ao storyboard"},
    }
)


@dataclass(frozen=True, slots=True)
class FrameState:
    """A frame of the strip with its current image, if the run has one for it."""

    index: int
    frame_id: str
    slug: str
    title: str
    beat: str
    job: ImageJob | None
    thumbnail_url: str | None
    width: int
    height: int

    @property
    def number(self) -> int:
        return self.index + 1

    @property
    def status(self) -> str | None:
        return self.job.status.value if self.job else None

    @property
    def progress(self) -> float:
        return self.job.progress if self.job else 0.0

    @property
    def error(self) -> str | None:
        job = self.job
        if job is None or job.status is not JobStatus.FAILED or not job.error_code:
            return None
        return f"{job.error_code}: {job.error_message or ''}".strip(": ")

    def as_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "frame_id": self.frame_id,
            "image_id": str(self.job.id) if self.job else None,
            "status": self.status,
            "progress": round(self.progress, 4),
            "seed": self.job.seed if self.job else None,
            "thumbnail_url": self.thumbnail_url,
            "width": self.width,
            "height": self.height,
            "error": self.error,
        }


@dataclass(frozen=True, slots=True)
class Strip:
    """One storyboard of the pack, with the run shown for it (if any) and the user's others."""

    key: str
    label: str
    description: str
    frames: list[FrameState]
    run: SequenceRun | None
    runs: list[SequenceRun]
    continuity: ContinuityPanel | None = None

    @property
    def done(self) -> int:
        return sum(1 for frame in self.frames if frame.status == JobStatus.COMPLETED.value)

    @property
    def active(self) -> bool:
        return any(frame.status in ACTIVE for frame in self.frames)

    @property
    def status(self) -> str:
        return sequence_status([frame.job for frame in self.frames if frame.job is not None])


# -- building the strip ---------------------------------------------------------------------------


def ordered_sequences(pack: BrandPack) -> list[Sequence]:
    """The onboarding storyboard first (it is what most visitors came for), then pack order."""
    return sorted(pack.sequences.values(), key=lambda sequence: sequence.id != FIRST_SEQUENCE)


def ratio_box(aspect_ratio: str | None) -> tuple[int, int]:
    """A thumbnail-sized box of an aspect ratio such as `4:5`, for a frame with no image yet."""
    width, _, height = (aspect_ratio or "1:1").partition(":")
    if not (width.isdigit() and height.isdigit() and int(width) and int(height)):
        return THUMBNAIL, THUMBNAIL
    return fit_within(int(width), int(height), THUMBNAIL, enlarge=True)


async def build_strip(
    request: Request,
    pack: BrandPack,
    sequence: Sequence,
    locale: str,
    run: SequenceRun | None,
    runs: list[SequenceRun],
) -> Strip:
    state = state_of(request)
    jobs = (await state.runtime.generation.sequence(run.id)).jobs if run else []
    by_frame = {job.frame_id: job for job in jobs}
    default_ratio = pack.model.foundation.technical.default_aspect_ratio
    frames: list[FrameState] = []
    for index, frame in enumerate(sequence.frames):
        ref = f"{sequence.id}/{frame.id}"
        job = by_frame.get(ref)
        thumbnail_url = None
        if job is not None and job.status is JobStatus.COMPLETED and job.thumbnail_key:
            thumbnail_url = await state.media.url(job.thumbnail_key)
        if thumbnail_url and job is not None and job.width and job.height:
            width, height = fit_within(job.width, job.height, THUMBNAIL)
        else:
            wanted = job.params.get("aspect_ratio") if job else frame.defaults.aspect_ratio
            width, height = ratio_box(str(wanted or default_ratio))
        frames.append(
            FrameState(
                index=index,
                frame_id=ref,
                slug=frame.id,
                title=catalog_view.label(frame.title, locale),
                beat=catalog_view.label(frame.beat, locale),
                job=job,
                thumbnail_url=thumbnail_url,
                width=width,
                height=height,
            )
        )
    panel = None
    if run is not None and jobs:
        packs = state.runtime.container.packs
        panel = continuity_panel(sequence_report(run.id, jobs, packs, locale))
    return Strip(
        key=sequence.id,
        label=catalog_view.label(sequence.labels, locale),
        description=catalog_view.label(sequence.description, locale),
        frames=frames,
        run=run,
        runs=[other for other in runs if other.sequence_key == sequence.id],
        continuity=panel,
    )


def can_see_run(principal: Principal, run: SequenceRun) -> bool:
    return principal.is_admin or run.user_id == principal.user_id


async def visible_run(request: Request, found: Visitor, sequence_id: str) -> SequenceRun | None:
    """The run when the visitor may see it; anyone else's behaves as if it did not exist."""
    assert found.session is not None
    try:
        wanted = uuid.UUID(sequence_id)
    except ValueError:
        return None
    run = await state_of(request).runtime.jobs.sequence_run(wanted)
    if run is None or not can_see_run(found.session.principal, run):
        return None
    return run


async def run_strip(request: Request, found: Visitor, sequence_id: str) -> Strip | None:
    """The strip of one run, or None when it is not the visitor's or its storyboard is gone."""
    run = await visible_run(request, found, sequence_id)
    if run is None:
        return None
    packs = state_of(request).runtime.container.packs
    if run.pack_id not in packs.ids():
        return None
    pack = packs.get(run.pack_id)
    sequence = pack.sequences.get(run.sequence_key)
    if sequence is None:
        return None
    return await build_strip(request, pack, sequence, found.locale, run, [run])


def not_found(request: Request, found: Visitor) -> Response:
    return page("error.html", request, found, 404, message_key="error.not_found")


# -- the page -------------------------------------------------------------------------------------


async def render(
    request: Request,
    found: Visitor,
    chosen_id: str | None,
    *,
    status: int = 200,
    problems: list[dict[str, Any]] | None = None,
    form: dict[str, Any] | None = None,
) -> Response:
    assert found.session is not None
    runtime = state_of(request).runtime
    chosen: SequenceRun | None = None
    if chosen_id:
        chosen = await visible_run(request, found, chosen_id)
        if chosen is None or chosen.pack_id not in runtime.container.packs.ids():
            return not_found(request, found)
    pack = runtime.container.packs.get(chosen.pack_id if chosen else runtime.settings.default_pack)
    runs = [
        run
        for run in await runtime.jobs.recent_sequences(found.session.principal.user_id, RECENT_RUNS)
        if run.pack_id == pack.id
    ]
    if chosen is not None and chosen.id not in {run.id for run in runs}:
        runs.insert(0, chosen)
    strips: list[Strip] = []
    for sequence in ordered_sequences(pack):
        if chosen is not None and chosen.sequence_key == sequence.id:
            shown: SequenceRun | None = chosen
        else:
            shown = next((run for run in runs if run.sequence_key == sequence.id), None)
        strips.append(await build_strip(request, pack, sequence, found.locale, shown, runs))
    technical = pack.model.foundation.technical
    return page(
        "storyboard.html",
        request,
        found,
        status,
        pack=pack,
        strips=strips,
        kinds={
            kind: catalog_view.choices(pack, kind, found.locale) for kind in ("outfit", "footwear")
        },
        aspect_ratios=list(technical.aspect_ratios),
        default_aspect_ratio=technical.default_aspect_ratio,
        providers=list(runtime.providers),
        problems=problems or [],
        form=form or {},
        earlier_shown=EARLIER_RUNS_SHOWN,
    )


@router.get("/storyboard", response_class=HTMLResponse)
async def storyboard_page(request: Request, sequence: str | None = None) -> Response:
    found = await signed_in(request)
    return await render(request, found, sequence)


@router.post("/storyboard/generate", response_class=HTMLResponse)
async def storyboard_generate(request: Request) -> Response:
    """Every frame at once with one seed; a rejected form is shown again with its problems."""
    found = await signed_in(request)
    form = await request.form()
    check_csrf(found, str(form.get("csrf_token") or ""))
    assert found.session is not None
    principal = found.session.principal
    state = state_of(request)
    runtime = state.runtime
    pack = runtime.container.packs.get(runtime.settings.default_pack)
    raw: dict[str, Any] = {name: form.get(name) for name in SHARED_FIELDS}
    key = str(form.get("sequence_key") or FIRST_SEQUENCE)[:64]
    provider = str(form.get("provider") or "")[:32] or None
    params = catalog_view.clean_params(raw)
    params["pack"] = pack.id
    params["locale"] = found.locale
    sequence = pack.sequences.get(key)
    chosen = {
        **{k: str(v or "") for k, v in raw.items()},
        "sequence_key": key,
        "provider": provider,
    }
    try:
        # an unknown storyboard still costs one image of quota: it is refused right after
        await check_quota(state, principal, len(sequence.frames) if sequence else 1)
        async with quota_held(state, principal):
            result = await runtime.generation.submit_sequence(
                principal.user_id, key, params, provider=provider
            )
    except ProblemsError as exc:
        problems = [problem.to_dict() for problem in exc.problems]
        return await render(request, found, None, status=422, problems=problems, form=chosen)
    except ApiProblem as exc:
        problem = {"code": exc.code, "field": "", "message": exc.detail}
        return await render(
            request, found, None, status=exc.status, problems=[problem], form=chosen
        )
    return RedirectResponse(f"/storyboard?sequence={result.sequence_id}", 303)


@router.post("/storyboard/{sequence_id}/frames/{image_id}/regenerate", response_class=HTMLResponse)
async def storyboard_regenerate(
    request: Request, sequence_id: uuid.UUID, image_id: uuid.UUID
) -> Response:
    """One frame again, in its place in the run: same seed (another try) or a new one."""
    found = await signed_in(request)
    form = await request.form()
    check_csrf(found, str(form.get("csrf_token") or ""))
    assert found.session is not None
    principal = found.session.principal
    state = state_of(request)
    try:
        job = await state.actions.visible(principal, image_id)
    except ImageNotFound:
        return not_found(request, found)
    if job.sequence_id != sequence_id or job.status is JobStatus.DELETED:
        return not_found(request, found)
    seed: SeedChoice = "same" if form.get("seed") == "same" else "new"
    try:
        await check_quota(state, principal, 1)
        async with quota_held(state, principal):
            await state.actions.regenerate(principal, image_id, seed, in_sequence=True)
    except ApiProblem as exc:
        problem = {"code": exc.code, "field": "", "message": exc.detail}
        return await render(request, found, str(sequence_id), status=exc.status, problems=[problem])
    except ImageNotFound:
        return not_found(request, found)
    anchor = f"frame-{(job.frame_id or '').split('/')[0]}-{(job.frame_index or 0) + 1}"
    return RedirectResponse(f"/storyboard?sequence={sequence_id}#{anchor}", 303)


# -- following a run ------------------------------------------------------------------------------


@router.get("/web/sequences/{sequence_id}/status")
async def storyboard_status(request: Request, sequence_id: str) -> JSONResponse:
    """Each frame's status, progress and thumbnail, polled by the page while frames are made."""
    found = await signed_in(request)
    strip = await run_strip(request, found, sequence_id)
    if strip is None or strip.run is None:
        return JSONResponse({"detail": "not found"}, 404)
    return JSONResponse(
        {
            "sequence_id": str(strip.run.id),
            "status": strip.status,
            "done": strip.done,
            "total": len(strip.frames),
            "active": strip.active,
            "frames": [frame.as_json() for frame in strip.frames],
        },
        headers={"Cache-Control": "no-store"},
    )


# -- exports --------------------------------------------------------------------------------------


def export_frames(strip: Strip) -> list[ExportFrame]:
    return [ExportFrame(frame.number, frame.slug, frame.title, frame.job) for frame in strip.frames]


def export_name(strip: Strip) -> str:
    assert strip.run is not None
    return f"{strip.key}-{strip.run.id.hex[:8]}"


def export_problem(request: Request, found: Visitor, strip: Strip, message_key: str) -> Response:
    status = 409 if message_key == "storyboard.nothing_to_export" else 503
    back = f"/storyboard?sequence={strip.run.id}" if strip.run else "/storyboard"
    return page(
        "storyboard_notice.html", request, found, status, message_key=message_key, back=back
    )


def attachment(data: bytes, media_type: str, filename: str) -> Response:
    return Response(
        data,
        media_type=media_type,
        headers={
            "Content-Disposition": f'attachment; filename="{filename}"',
            # frames can be made again, so yesterday's export is not today's
            "Cache-Control": "private, no-cache",
        },
    )


@router.get("/storyboard/{sequence_id}/export.zip")
async def storyboard_zip(request: Request, sequence_id: str) -> Response:
    """The finished frames' images in story order, named `01-the-invitation.webp` and so on."""
    found = await signed_in(request)
    strip = await run_strip(request, found, sequence_id)
    if strip is None:
        return not_found(request, found)
    try:
        data = await frames_zip(state_of(request).runtime.store, export_frames(strip))
    except NothingToExport:
        return export_problem(request, found, strip, "storyboard.nothing_to_export")
    except StorageError:
        return export_problem(request, found, strip, "storyboard.storage_unavailable")
    return attachment(data, "application/zip", f"{export_name(strip)}.zip")


@router.get("/storyboard/{sequence_id}/contact-sheet.png")
async def storyboard_contact_sheet(request: Request, sequence_id: str) -> Response:
    """Every frame on one PNG, in order, with its title: the storyboard at a glance."""
    found = await signed_in(request)
    strip = await run_strip(request, found, sequence_id)
    if strip is None:
        return not_found(request, found)
    try:
        data = await contact_sheet(state_of(request).runtime.store, export_frames(strip))
    except NothingToExport:
        return export_problem(request, found, strip, "storyboard.nothing_to_export")
    except StorageError:
        return export_problem(request, found, strip, "storyboard.storage_unavailable")
    return attachment(data, "image/png", f"{export_name(strip)}-contact-sheet.png")
