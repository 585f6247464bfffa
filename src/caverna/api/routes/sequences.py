"""Storyboards: every frame of a sequence queued at once with one shared seed."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Request, Response

from caverna.api.deps import Caller, State, check_quota, check_safety
from caverna.api.problems import documented, not_found
from caverna.api.schemas import SequenceFrame, SequenceRequest, SequenceStatus
from caverna.api.state import ApiState
from caverna.services.generation import SequenceResult
from caverna.services.image_actions import can_see

router = APIRouter(prefix="/api/v1/sequences", tags=["sequences"])


async def sequence_view(state: ApiState, result: SequenceResult) -> SequenceStatus:
    frames = [
        SequenceFrame(
            frame_id=job.frame_id,
            image_id=job.id,
            status=job.status.value,
            progress=job.progress,
            url=await state.media.url(job.storage_key) if job.status.value == "completed" else None,
        )
        for job in result.jobs
    ]
    progress = sum(frame.progress for frame in frames) / len(frames) if frames else 0.0
    return SequenceStatus(
        sequence_id=result.sequence_id,
        status=result.status,
        progress=round(progress, 4),
        frames=frames,
        image_ids=[frame.image_id for frame in frames],
    )


def _frame_count(state: ApiState, body: SequenceRequest) -> int:
    """Frames the request would queue (1 when the request is invalid: it will be refused)."""
    packs = state.runtime.container.packs
    pack_id = body.pack or state.runtime.settings.default_pack
    if pack_id not in packs.ids():
        return 1
    sequence = packs.get(pack_id).sequences.get(body.sequence)
    return len(sequence.frames) if sequence is not None else 1


@router.post("/generate", status_code=202)
async def generate_sequence(
    body: SequenceRequest, request: Request, response: Response, state: State, caller: Caller
) -> SequenceStatus:
    """Queue every frame of a storyboard (e.g. `onboarding`), or nothing if any frame is invalid."""
    await check_safety(state, caller, body.shared_params())
    frames = _frame_count(state, body)
    await check_quota(state, caller, frames)
    result = await state.runtime.generation.submit_sequence(
        caller.user_id,
        body.sequence,
        body.shared_params(),
        provider=body.provider,
        callback_url=body.callback_url,
    )
    response.headers["Location"] = str(
        request.url_for("get_sequence", sequence_id=result.sequence_id).path
    )
    return await sequence_view(state, result)


@router.get(
    "/{sequence_id}",
    name="get_sequence",
    responses=documented(s404="No such sequence visible to the caller"),
)
async def get_sequence(sequence_id: uuid.UUID, state: State, caller: Caller) -> SequenceStatus:
    """Each frame's image id, status and progress; the sequence's status follows its frames."""
    result = await state.runtime.generation.sequence(sequence_id)
    if not result.jobs or not all(can_see(caller, job) for job in result.jobs):
        raise not_found("sequence")
    return await sequence_view(state, result)
