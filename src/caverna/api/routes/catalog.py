"""The brand catalogue and prompt previews: what can be asked for, and what it compiles to."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from caverna.api.deps import Caller, State, moderation_unavailable
from caverna.api.problems import ApiProblem, documented
from caverna.api.schemas import CompiledPreview, PreviewRequest, PreviewResult
from caverna.domain.problems import ProblemsError
from caverna.prompting.dialects.registry import DIALECT_NAMES
from caverna.services.safety import ContentBlocked, ModerationUnavailable

router = APIRouter(prefix="/api/v1", tags=["catalog"])


@router.get("/catalog", responses=documented(s404="No such pack"))
async def catalog(
    state: State,
    _caller: Caller,
    pack: Annotated[str | None, Query(max_length=64)] = None,
) -> dict[str, Any]:
    """Packs with their options (labels, descriptions, rules), frames and storyboards."""
    registry = state.runtime.container.packs
    ids = registry.ids()
    if pack is not None and pack not in ids:
        raise ApiProblem(
            404,
            "unknown_pack",
            f"no pack '{pack}'",
            errors=[{"code": "unknown_pack", "field": "pack", "message": "", "allowed": ids}],
        )
    packs = []
    for pack_id in [pack] if pack else ids:
        model = registry.get(pack_id).model
        packs.append(
            {
                "id": pack_id,
                "version": model.manifest.pack_version,
                "manifest": model.manifest.model_dump(mode="json", by_alias=True),
                "catalog": model.catalog.model_dump(mode="json", by_alias=True),
                "sequences": [s.model_dump(mode="json", by_alias=True) for s in model.sequences],
                "aspect_ratios": list(model.foundation.technical.aspect_ratios),
            }
        )
    return {
        "default_pack": state.runtime.settings.default_pack,
        "providers": list(state.runtime.providers),
        "packs": packs,
    }


@router.post(
    "/prompts/preview", responses=documented(s503="The moderation service cannot be reached")
)
async def preview(body: PreviewRequest, state: State, _caller: Caller) -> PreviewResult:
    """Validate parameters and compile them per provider dialect, without generating anything."""
    wanted = body.providers or list(DIALECT_NAMES)
    unknown = [name for name in wanted if name not in DIALECT_NAMES]
    if unknown:
        raise ApiProblem(
            422,
            "invalid_parameters",
            "unknown provider dialect",
            errors=[
                {
                    "code": "unknown_provider",
                    "field": "providers",
                    "message": f"'{name}' is not a provider dialect",
                    "allowed": list(DIALECT_NAMES),
                }
                for name in unknown
            ],
        )
    # the same check generation runs, so a valid preview is a request generation accepts;
    # a preview refuses nothing, so nothing is audited
    blocked: list[dict[str, object]] = []
    try:
        await state.runtime.safety.check_params(body.engine_params())
    except ContentBlocked as exc:
        blocked = [problem.to_dict() for problem in exc.problems]
    except ModerationUnavailable:
        raise moderation_unavailable() from None
    engine = state.runtime.container.prompts
    compiled = []
    try:
        for name in wanted:
            result = engine.compile(body.engine_params(), name)
            compiled.append(
                CompiledPreview(
                    provider=name,
                    prompt=result.prompt,
                    negative_prompt=result.negative_prompt,
                    payload=result.payload,
                    template_version=result.template_version,
                    params_hash=result.params_hash,
                )
            )
    except ProblemsError as exc:
        errors = [*blocked, *(p.to_dict() for p in exc.problems)]
        return PreviewResult(valid=False, errors=errors, compiled=[])
    if blocked:
        return PreviewResult(valid=False, errors=blocked, compiled=[])
    return PreviewResult(valid=True, errors=[], compiled=compiled)
