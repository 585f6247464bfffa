"""The brand catalogue and prompt previews: what can be asked for, and what it compiles to."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from caverna.api.deps import Caller, State
from caverna.api.problems import ApiProblem
from caverna.api.schemas import CompiledPreview, PreviewRequest, PreviewResult
from caverna.domain.problems import ProblemsError
from caverna.prompting.dialects.registry import DIALECT_NAMES

router = APIRouter(prefix="/api/v1", tags=["catalog"])


@router.get("/catalog")
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


@router.post("/prompts/preview")
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
        return PreviewResult(valid=False, errors=[p.to_dict() for p in exc.problems], compiled=[])
    return PreviewResult(valid=True, errors=[], compiled=compiled)
