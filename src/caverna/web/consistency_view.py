"""Brand consistency in the studio: an image's report, a storyboard run's continuity panel and
its scored contact sheet, and the template analytics for admins.

Everything is read from the rows through the services (the pixel work was done once, by the
derivatives pass), so the studio, the API and the CLI always show the same numbers. The report
arrives shortly after an image completes; until then the panels say "pending" and a small
script asks for the panel again, so the page never has to be reloaded by hand.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse

from caverna.consistency.analytics import GROUP_FIELDS, GroupField, GroupStats
from caverna.consistency.report import CheckResult, ConsistencyReport
from caverna.domain.jobs import ImageJob, JobStatus
from caverna.domain.problems import ProblemCode
from caverna.services.consistency_reports import (
    SequenceReport,
    parse_group_by,
    sequence_report,
    sequence_sheet,
    stored_report,
    template_chart,
    template_report,
)
from caverna.services.image_actions import ImageNotFound, can_see
from caverna.storage.base import StorageError
from caverna.web.admin import AdminRoute, _admin
from caverna.web.i18n import register_messages
from caverna.web.routes import page, templates
from caverna.web.session import Visitor, signed_in, state_of

router = APIRouter(include_in_schema=False)
admin_router = APIRouter(include_in_schema=False, route_class=AdminRoute)

CHECK_ORDER: tuple[str, ...] = ("palette", "lighting", "format", "duplicates")
ReportState = Literal["not_completed", "pending", "ready", "unreadable"]

# The chart's geometry, as caverna.consistency.analytics draws it: the page gives the <img> its
# exact size before the PNG arrives (a test compares it with the PNG served).
CHART_WIDTH = 16 * 3 + 320 + 480
CHART_BASE_HEIGHT = 16 * 2 + 28 + 24
CHART_ROW = 34

register_messages(
    {
        "consistency.title": {"en": "Brand consistency", "pt-BR": "Consistência de marca"},
        "consistency.overall": {"en": "Overall score", "pt-BR": "Nota geral"},
        "consistency.pending": {
            "en": "Report pending: the image is being measured. This panel updates by itself.",
            "pt-BR": (
                "Relatório pendente: a imagem está sendo medida. Este painel se atualiza sozinho."
            ),
        },
        "consistency.not_completed": {
            "en": "The report is made once the image is done.",
            "pt-BR": "O relatório é feito quando a imagem fica pronta.",
        },
        "consistency.unreadable": {
            "en": "This image's report was written by another version and cannot be shown.",
            "pt-BR": "O relatório desta imagem é de outra versão e não pode ser exibido.",
        },
        "consistency.refresh": {"en": "Refresh", "pt-BR": "Atualizar"},
        "consistency.limits": {
            "en": "Measured on pixels (colour areas, broad light, layout). It cannot see whether "
            "the character is on model: a high score means nothing measurable is off.",
            "pt-BR": "Medido nos pixels (áreas de cor, luz geral, composição). Não vê se o "
            "personagem está fiel ao modelo: nota alta quer dizer que nada mensurável destoa.",
        },
        "consistency.check.palette": {"en": "Palette adherence", "pt-BR": "Aderência à paleta"},
        "consistency.check.lighting": {"en": "Lighting", "pt-BR": "Iluminação"},
        "consistency.check.format": {"en": "Format compliance", "pt-BR": "Conformidade de formato"},
        "consistency.check.duplicates": {"en": "Near-duplicates", "pt-BR": "Quase duplicatas"},
        "consistency.status.pass": {"en": "Pass", "pt-BR": "Aprovado"},
        "consistency.status.warn": {"en": "Warning", "pt-BR": "Atenção"},
        "consistency.status.fail": {"en": "Fail", "pt-BR": "Reprovado"},
        "consistency.status.skipped": {"en": "Not checked", "pt-BR": "Não verificado"},
        "consistency.score": {"en": "Score", "pt-BR": "Nota"},
        "consistency.mean_delta_e": {
            "en": "Mean CIEDE2000 distance (ΔE00)",
            "pt-BR": "Distância média CIEDE2000 (ΔE00)",
        },
        "consistency.delta_e_help": {
            "en": "About 1 is just noticeable side by side; 8 or less scores 1, 26 or more 0.",
            "pt-BR": "Cerca de 1 mal se nota lado a lado; até 8 vale 1, a partir de 26 vale 0.",
        },
        "consistency.dominant": {"en": "Dominant colours", "pt-BR": "Cores dominantes"},
        "consistency.pack_palette": {"en": "Pack palette", "pt-BR": "Paleta do pacote"},
        "consistency.colour": {"en": "Colour", "pt-BR": "Cor"},
        "consistency.share": {"en": "Share", "pt-BR": "Parcela"},
        "consistency.nearest": {"en": "Nearest pack colour", "pt-BR": "Cor do pacote mais próxima"},
        "consistency.expected": {"en": "Expected", "pt-BR": "Esperado"},
        "consistency.measured": {"en": "Measured", "pt-BR": "Medido"},
        "consistency.side": {"en": "Key light side", "pt-BR": "Lado da luz principal"},
        "consistency.brightness": {"en": "Brightness", "pt-BR": "Brilho"},
        "consistency.warmth": {"en": "Warmth", "pt-BR": "Temperatura"},
        "consistency.any": {"en": "any", "pt-BR": "qualquer"},
        "consistency.side.left": {"en": "left", "pt-BR": "esquerda"},
        "consistency.side.right": {"en": "right", "pt-BR": "direita"},
        "consistency.side.top": {"en": "top", "pt-BR": "cima"},
        "consistency.side.bottom": {"en": "bottom", "pt-BR": "baixo"},
        "consistency.side.front": {"en": "front", "pt-BR": "frente"},
        "consistency.side.back": {"en": "back", "pt-BR": "trás"},
        "consistency.side.centre": {"en": "centre", "pt-BR": "centro"},
        "consistency.warmth.warm": {"en": "warm", "pt-BR": "quente"},
        "consistency.warmth.cool": {"en": "cool", "pt-BR": "fria"},
        "consistency.warmth.neutral": {"en": "neutral", "pt-BR": "neutra"},
        "consistency.item": {"en": "Item", "pt-BR": "Item"},
        "consistency.compared": {
            "en": "Compared with {count} images of this run and your recent ones.",
            "pt-BR": "Comparada com {count} imagens desta rodada e suas recentes.",
        },
        "consistency.no_duplicates": {
            "en": "No near-duplicate found.",
            "pt-BR": "Nenhuma quase duplicata encontrada.",
        },
        "consistency.similar": {"en": "Similar image", "pt-BR": "Imagem parecida"},
        "consistency.bits": {
            "en": "{bits} of 64 bits differ",
            "pt-BR": "{bits} de 64 bits diferem",
        },
        "consistency.variant": {"en": "Prompt variant", "pt-BR": "Variante do prompt"},
        "consistency.no_variant": {
            "en": "none (the pack has no variants)",
            "pt-BR": "nenhuma (o pacote não tem variantes)",
        },
        "consistency.rerolls": {"en": "Re-rolls", "pt-BR": "Novas tentativas"},
        "consistency.original": {"en": "Original", "pt-BR": "Original"},
        "consistency.attempt": {"en": "Attempt {n}", "pt-BR": "Tentativa {n}"},
        "consistency.best": {"en": "best", "pt-BR": "melhor"},
        "consistency.this_image": {"en": "this image", "pt-BR": "esta imagem"},
        "consistency.no_score": {"en": "no score yet", "pt-BR": "sem nota ainda"},
        "continuity.title": {"en": "Continuity", "pt-BR": "Continuidade"},
        "continuity.help": {
            "en": "Palette distance (ΔE00) and brightness change from the frame before. "
            "A frame breaks continuity when its palette is far from the rest or it jumps away "
            "and back; a break is a prompt to look, not a verdict.",
            "pt-BR": "Distância de paleta (ΔE00) e mudança de brilho em relação ao quadro "
            "anterior. Um quadro quebra a continuidade quando sua paleta se afasta das demais "
            "ou quando salta e volta; a quebra é um convite a olhar, não um veredito.",
        },
        "continuity.pending": {
            "en": "Report pending: {done} of {total} frames measured. "
            "This panel updates by itself.",
            "pt-BR": "Relatório pendente: {done} de {total} quadros medidos. "
            "Este painel se atualiza sozinho.",
        },
        "continuity.frame": {"en": "Frame", "pt-BR": "Quadro"},
        "continuity.palette_drift": {
            "en": "Palette drift (ΔE00)",
            "pt-BR": "Deriva de paleta (ΔE00)",
        },
        "continuity.brightness_drift": {
            "en": "Brightness drift",
            "pt-BR": "Deriva de brilho",
        },
        "continuity.breaks": {"en": "Breaks continuity", "pt-BR": "Quebra a continuidade"},
        "continuity.ok": {"en": "Continuous", "pt-BR": "Contínuo"},
        "continuity.none_break": {
            "en": "No frame breaks continuity.",
            "pt-BR": "Nenhum quadro quebra a continuidade.",
        },
        "continuity.some_break": {
            "en": "Frames that break continuity: {frames}",
            "pt-BR": "Quadros que quebram a continuidade: {frames}",
        },
        "continuity.sheet": {
            "en": "Contact sheet with scores (PNG)",
            "pt-BR": "Folha de contato com notas (PNG)",
        },
        "continuity.first": {"en": "first frame", "pt-BR": "primeiro quadro"},
        "analytics.title": {"en": "Template analytics", "pt-BR": "Análise de templates"},
        "analytics.help": {
            "en": "Approval rate of reviewed images with its 95% Wilson interval, and the mean "
            "consistency score, per group. Images nobody reviewed count in the total only.",
            "pt-BR": "Taxa de aprovação das imagens avaliadas com o intervalo de Wilson de 95%, "
            "e a nota média de consistência, por grupo. Imagens sem avaliação só contam no total.",
        },
        "analytics.group_by": {"en": "Group by", "pt-BR": "Agrupar por"},
        "analytics.apply": {"en": "Show", "pt-BR": "Mostrar"},
        "analytics.field.template_version": {
            "en": "Template version",
            "pt-BR": "Versão do template",
        },
        "analytics.field.provider": {"en": "Provider", "pt-BR": "Provedor"},
        "analytics.field.pose": {"en": "Pose", "pt-BR": "Pose"},
        "analytics.field.frame": {"en": "Frame", "pt-BR": "Quadro"},
        "analytics.field.variant": {"en": "Variant", "pt-BR": "Variante"},
        "analytics.groups": {"en": "Groups", "pt-BR": "Grupos"},
        "analytics.count": {"en": "Images", "pt-BR": "Imagens"},
        "analytics.reviewed": {"en": "Reviewed", "pt-BR": "Avaliadas"},
        "analytics.approved": {"en": "Approved", "pt-BR": "Aprovadas"},
        "analytics.rate": {"en": "Approval rate", "pt-BR": "Taxa de aprovação"},
        "analytics.interval": {"en": "95% interval", "pt-BR": "Intervalo de 95%"},
        "analytics.mean_score": {"en": "Mean score", "pt-BR": "Nota média"},
        "analytics.chart": {"en": "Chart", "pt-BR": "Gráfico"},
        "analytics.chart_alt": {
            "en": "Approval rate per group as bars with their 95% interval as whiskers, and the "
            "mean consistency score as a diamond; the same numbers as the table.",
            "pt-BR": "Taxa de aprovação por grupo em barras com o intervalo de 95%, e a nota "
            "média de consistência como losango; os mesmos números da tabela.",
        },
        "analytics.variants": {"en": "Variant comparison", "pt-BR": "Comparação de variantes"},
        "analytics.variants_help": {
            "en": "Per template version and prompt variant. While two intervals overlap, the "
            "test has not shown a difference yet.",
            "pt-BR": "Por versão de template e variante do prompt. Enquanto dois intervalos se "
            "sobrepõem, o teste ainda não mostrou diferença.",
        },
        "analytics.no_images": {
            "en": "No completed images yet.",
            "pt-BR": "Nenhuma imagem concluída ainda.",
        },
        "analytics.no_reviews": {
            "en": "No reviews yet: approval rates appear once images are approved or rejected.",
            "pt-BR": "Nenhuma avaliação ainda: as taxas aparecem quando imagens forem aprovadas "
            "ou reprovadas.",
        },
        "analytics.no_variants": {
            "en": "No image was made with a prompt variant yet.",
            "pt-BR": "Nenhuma imagem foi feita com variante de prompt ainda.",
        },
        "admin.analytics": {"en": "Analytics", "pt-BR": "Análises"},
        "analytics.chart_open": {"en": "Open full size", "pt-BR": "Abrir em tamanho real"},
        "consistency.skipped.palette": {
            "en": "The pack has no palette to compare with.",
            "pt-BR": "O pacote não tem paleta para comparar.",
        },
        "consistency.skipped.lighting": {
            "en": "Nothing about the light was specified.",
            "pt-BR": "Nada sobre a luz foi especificado.",
        },
        "consistency.skipped.format": {
            "en": "No format was specified.",
            "pt-BR": "Nenhum formato foi especificado.",
        },
        "consistency.skipped.duplicates": {
            "en": "No other image to compare with yet.",
            "pt-BR": "Ainda não há outra imagem para comparar.",
        },
        "detail.no_review": {"en": "No review yet.", "pt-BR": "Nenhuma avaliação ainda."},
    }
)


# -- one image ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DominantRow:
    hex: str
    share: float
    nearest: str | None
    nearest_hex: str | None
    delta_e: float | None


@dataclass(frozen=True, slots=True)
class PaletteView:
    mean_delta_e: float | None
    dominant: list[DominantRow]
    palette: list[tuple[str, str]]  # (name, hex) of the pack


@dataclass(frozen=True, slots=True)
class LightingView:
    expected_side: str | None
    measured_side: str | None
    brightness: float | None
    exposure: tuple[float, float] | None
    expected_warmth: str | None
    measured_warmth: str | None


@dataclass(frozen=True, slots=True)
class Similar:
    image_id: str
    distance: int


@dataclass(frozen=True, slots=True)
class ChainEntry:
    image_id: uuid.UUID
    attempt: int | None  # None: the original
    status: str
    score: float | None
    best: bool
    current: bool


@dataclass(frozen=True, slots=True)
class ImageConsistency:
    """What the image page shows about the report, already shaped for the template."""

    image_id: uuid.UUID
    state: ReportState
    report: ConsistencyReport | None = None
    checks: list[CheckResult] = field(default_factory=list)
    palette: PaletteView | None = None
    lighting: LightingView | None = None
    format_rows: list[tuple[str, str, str]] = field(default_factory=list)
    compared: int | None = None
    similar: list[Similar] = field(default_factory=list)
    variant: str | None = None
    chain: list[ChainEntry] = field(default_factory=list)

    @property
    def pending(self) -> bool:
        return self.state == "pending"


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _text(value: Any, locale: str) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        if locale == "pt-BR":
            return "sim" if value else "não"
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return " x ".join(str(part) for part in value)
    return str(value)


def palette_view(check: CheckResult) -> PaletteView:
    palette = [
        (str(entry.get("name", "")), str(entry.get("hex", "")))
        for entry in check.expected.get("palette", [])
        if isinstance(entry, dict)
    ]
    by_name = dict(palette)
    dominant = []
    for entry in check.measured.get("dominant", []):
        if not isinstance(entry, dict):
            continue
        nearest = entry.get("nearest")
        dominant.append(
            DominantRow(
                hex=str(entry.get("hex", "")),
                share=_number(entry.get("weight")) or 0.0,
                nearest=str(nearest) if nearest is not None else None,
                nearest_hex=by_name.get(str(nearest)) if nearest is not None else None,
                delta_e=_number(entry.get("delta_e")),
            )
        )
    return PaletteView(_number(check.measured.get("mean_delta_e")), dominant, palette)


def lighting_view(check: CheckResult) -> LightingView:
    exposure = check.expected.get("exposure_range")
    low_high = None
    if isinstance(exposure, list) and len(exposure) == 2:
        low, high = _number(exposure[0]), _number(exposure[1])
        low_high = (low, high) if low is not None and high is not None else None
    side = check.measured.get("side")
    warmth = check.measured.get("warmth")
    return LightingView(
        expected_side=str(check.expected["side"]) if "side" in check.expected else None,
        measured_side=str(side) if side is not None else None,
        brightness=_number(check.measured.get("brightness")),
        exposure=low_high,
        expected_warmth=str(check.expected["warmth"]) if "warmth" in check.expected else None,
        measured_warmth=str(warmth) if warmth is not None else None,
    )


def _image_id(text: str) -> str | None:
    try:
        return str(uuid.UUID(text))
    except ValueError:
        return None


async def reroll_chain(request: Request, found: Visitor, job: ImageJob) -> list[ChainEntry]:
    """The original and every re-roll of it, the best score marked; empty when there are none."""
    assert found.session is not None
    jobs = state_of(request).runtime.jobs
    original = job
    if job.reroll_of is not None:
        parent = await jobs.get(job.reroll_of)
        if parent is not None and can_see(found.session.principal, parent):
            original = parent
    attempts = await jobs.rerolls(original.id)
    if not attempts:
        return []
    family = [original, *attempts]
    scored = [j for j in family if j.consistency_score is not None]
    best = max(scored, key=lambda j: j.consistency_score or 0.0).id if scored else None
    return [
        ChainEntry(
            image_id=j.id,
            attempt=j.reroll_attempt if j is not original else None,
            status=j.status.value,
            score=j.consistency_score,
            best=j.id == best,
            current=j.id == job.id,
        )
        for j in family
    ]


async def image_consistency(request: Request, found: Visitor, job: ImageJob) -> ImageConsistency:
    """The image's report as the page shows it, or the reason there is none yet."""
    chain = await reroll_chain(request, found, job)
    if job.status is not JobStatus.COMPLETED:
        return ImageConsistency(job.id, "not_completed", variant=job.variant, chain=chain)
    if job.consistency is None:
        return ImageConsistency(job.id, "pending", variant=job.variant, chain=chain)
    report = stored_report(job)
    if report is None:
        return ImageConsistency(job.id, "unreadable", variant=job.variant, chain=chain)
    order = {name: index for index, name in enumerate(CHECK_ORDER)}
    checks = sorted(report.checks, key=lambda c: order.get(c.name, len(order)))
    palette = report.check("palette")
    lighting = report.check("lighting")
    form = report.check("format")
    duplicates = report.check("duplicates")
    format_rows: list[tuple[str, str, str]] = []
    if form is not None and form.status != "skipped":
        for name in sorted(set(form.expected) | set(form.measured)):
            format_rows.append(
                (
                    name,
                    _text(form.expected.get(name), found.locale),
                    _text(form.measured.get(name), found.locale),
                )
            )
    similar: list[Similar] = []
    compared = None
    if duplicates is not None and duplicates.status != "skipped":
        compared = int(_number(duplicates.measured.get("compared")) or 0)
        for entry in duplicates.measured.get("near_duplicates", []):
            if not isinstance(entry, dict):
                continue
            other = _image_id(str(entry.get("id", "")))
            if other is not None:
                similar.append(Similar(other, int(_number(entry.get("distance")) or 0)))
    return ImageConsistency(
        job.id,
        "ready",
        report=report,
        checks=checks,
        palette=palette_view(palette) if palette and palette.status != "skipped" else None,
        lighting=lighting_view(lighting) if lighting and lighting.status != "skipped" else None,
        format_rows=format_rows,
        compared=compared,
        similar=similar,
        variant=job.variant,
        chain=chain,
    )


@router.get("/web/images/{image_id}/consistency", response_class=HTMLResponse)
async def image_consistency_panel(request: Request, image_id: uuid.UUID) -> Response:
    """The image page's consistency panel alone: its script asks for it while it is pending."""
    found = await signed_in(request)
    assert found.session is not None
    try:
        job = await state_of(request).actions.visible(found.session.principal, image_id)
    except ImageNotFound:
        return Response(status_code=404)
    if job.status is JobStatus.DELETED:
        return Response(status_code=404)
    shown = await image_consistency(request, found, job)
    answer = page("consistency_panel.html", request, found, consistency=shown)
    answer.headers["Cache-Control"] = "no-store"
    return answer


# -- a storyboard run ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ContinuityRow:
    number: int
    frame_id: str
    title: str
    image_id: uuid.UUID
    status: str
    score: float | None
    palette_delta_e: float | None
    brightness_delta: float | None
    breaks: bool
    reasons: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ContinuityPanel:
    sequence_id: uuid.UUID
    rows: list[ContinuityRow]
    analysed: int
    total: int

    @property
    def pending(self) -> bool:
        """Frames still being made or measured: the panel is asked for again until none are."""
        return any(
            row.status in (JobStatus.QUEUED.value, JobStatus.PROCESSING.value)
            or (row.status == JobStatus.COMPLETED.value and row.score is None)
            for row in self.rows
        )

    @property
    def breaking(self) -> list[ContinuityRow]:
        return [row for row in self.rows if row.breaks]


def continuity_panel(report: SequenceReport) -> ContinuityPanel:
    drift = {}
    reasons: dict[str, tuple[str, ...]] = {}
    if report.continuity is not None:
        drift = {t.after: t for t in report.continuity.transitions}
        reasons = report.continuity.reasons
    breaks = set(report.continuity.breaks) if report.continuity else set()
    rows = []
    for number, frame in enumerate(report.frames, start=1):
        step = drift.get(frame.frame_id)
        rows.append(
            ContinuityRow(
                number=number,
                frame_id=frame.frame_id,
                title=frame.title,
                image_id=frame.image_id,
                status=frame.status,
                score=frame.report.overall_score if frame.report else None,
                palette_delta_e=round(step.palette_delta_e, 1) if step else None,
                brightness_delta=round(step.brightness_delta, 3) if step else None,
                breaks=frame.frame_id in breaks,
                reasons=reasons.get(frame.frame_id, ()),
            )
        )
    analysed = sum(1 for f in report.frames if f.report is not None)
    return ContinuityPanel(report.sequence_id, rows, analysed, len(report.frames))


async def run_report(
    request: Request, found: Visitor, sequence_id: uuid.UUID
) -> tuple[SequenceReport, list[ImageJob]] | None:
    """The run's continuity when the visitor may see the run (theirs, or any for an admin),
    else None: someone else's run behaves as if it did not exist."""
    assert found.session is not None
    principal = found.session.principal
    runtime = state_of(request).runtime
    run = await runtime.jobs.sequence_run(sequence_id)
    if run is None or not (principal.is_admin or run.user_id == principal.user_id):
        return None
    jobs = await runtime.jobs.for_sequence(run.id)
    if not jobs:
        return None
    return sequence_report(run.id, jobs, runtime.container.packs, found.locale), jobs


@router.get("/web/sequences/{sequence_id}/continuity", response_class=HTMLResponse)
async def continuity_fragment(request: Request, sequence_id: uuid.UUID) -> Response:
    """The storyboard's continuity panel alone, for its script while frames are measured."""
    found = await signed_in(request)
    found_report = await run_report(request, found, sequence_id)
    if found_report is None:
        return Response(status_code=404)
    panel = continuity_panel(found_report[0])
    answer = page("continuity_panel.html", request, found, continuity=panel)
    answer.headers["Cache-Control"] = "no-store"
    return answer


@router.get("/storyboard/{sequence_id}/report.png")
async def scored_contact_sheet(request: Request, sequence_id: str) -> Response:
    """The contact sheet with every frame's scores underneath and breaks outlined in red."""
    found = await signed_in(request)
    try:
        wanted = uuid.UUID(sequence_id)
    except ValueError:
        wanted = None
    found_report = await run_report(request, found, wanted) if wanted else None
    if found_report is None:
        return page("error.html", request, found, 404, message_key="error.not_found")
    report, jobs = found_report
    try:
        data = await sequence_sheet(report, jobs, state_of(request).runtime.store)
    except StorageError:
        back = f"/storyboard?sequence={report.sequence_id}"
        return page(
            "storyboard_notice.html",
            request,
            found,
            503,
            message_key="storyboard.storage_unavailable",
            back=back,
        )
    name = f"continuity-{report.sequence_id.hex[:8]}.png"
    return Response(
        data,
        media_type="image/png",
        headers={
            "Content-Disposition": f'inline; filename="{name}"',
            "Cache-Control": "private, no-cache",
        },
    )


# -- analytics for admins -----------------------------------------------------------------------


def chart_size(groups: int) -> tuple[int, int]:
    """The chart PNG's width and height for `groups` rows (an empty chart draws one row)."""
    return CHART_WIDTH, CHART_BASE_HEIGHT + CHART_ROW * max(groups, 1)


def _by_problem(text: str) -> dict[str, Any]:
    return {
        "code": ProblemCode.INVALID_CHOICE,
        "field": "by",
        "message": f"group by one or more of {', '.join(GROUP_FIELDS)} (each once);"
        f" got {text[:100]!r}",
        "allowed": list(GROUP_FIELDS),
    }


def _wanted_fields(request: Request) -> tuple[tuple[GroupField, ...], list[dict[str, Any]]]:
    """The fields from `?by=a,b` or repeated `?by=a&by=b` (the form's checkboxes)."""
    values = [v for v in request.query_params.getlist("by") if v.strip()]
    text = ",".join(values)[:200]
    try:
        return parse_group_by(text or None), []
    except ValueError:
        return GROUP_FIELDS, [_by_problem(text)]


@admin_router.get("/admin/analytics", response_class=HTMLResponse)
async def analytics(request: Request) -> Response:
    found, _ = await _admin(request)
    fields, problems = _wanted_fields(request)
    jobs = state_of(request).runtime.jobs
    if problems:
        return page(
            "admin/analytics.html",
            request,
            found,
            422,
            section="analytics",
            notice=None,
            problems=problems,
            fields=GROUP_FIELDS,
            by=fields,
            groups=[],
            variants=[],
            reviewed=0,
            chart=None,
            query="",
        )
    groups = await template_report(jobs, fields)
    variants = [
        s for s in await template_report(jobs, ("template_version", "variant")) if s.key[1] != "-"
    ]
    query = "&".join(f"by={name}" for name in fields)
    return page(
        "admin/analytics.html",
        request,
        found,
        section="analytics",
        notice=None,
        problems=[],
        fields=GROUP_FIELDS,
        by=fields,
        groups=groups,
        variants=variants,
        reviewed=sum(s.reviewed for s in groups),
        chart=chart_size(len(groups)),
        query=query,
    )


@admin_router.get("/admin/analytics.png")
async def analytics_chart(request: Request) -> Response:
    found, _ = await _admin(request)
    fields, problems = _wanted_fields(request)
    if problems:
        return page(
            "error.html",
            request,
            found,
            422,
            message_key="error.problem",
            detail=problems[0]["message"],
        )
    stats = await template_report(state_of(request).runtime.jobs, fields)
    data = await template_chart(stats)
    return Response(data, media_type="image/png", headers={"Cache-Control": "no-store"})


def percent(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f}%"


def score_text(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def interval_text(stats: GroupStats) -> str:
    if stats.interval is None:
        return "—"
    low, high = stats.interval
    return f"{low * 100:.1f}% - {high * 100:.1f}%"


templates.env.filters["percent"] = percent
templates.env.filters["score"] = score_text
templates.env.filters["interval"] = interval_text
