"""Submitting image jobs: validate, dedupe, insert — and sequences of them.

Nothing is inserted unless every part of the request is valid (for a sequence: every frame), so
a rejected request changes nothing. With quotas, the user's limits are held by the insert itself
(see `Quotas.gate`): a request over them raises QuotaExceeded and inserts nothing, however many
processes submit at once. A reused image inserts nothing and so counts nothing.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from caverna.domain.jobs import ImageJob, JobStatus
from caverna.domain.problems import InvalidParametersError, Problem, ProblemCode
from caverna.domain.suggest import closest
from caverna.prompting.dialects.base import CompiledPrompt
from caverna.prompting.engine import PromptEngine
from caverna.prompting.params import MAX_SEED
from caverna.queue.base import JobStore, UsageGate
from caverna.services.prompt_cache import CachedCompiler
from caverna.services.quotas import Quotas
from caverna.services.webhooks import PENDING, CallbackPolicy, Callbacks


@dataclass(frozen=True, slots=True)
class SubmitResult:
    job: ImageJob
    reused: bool


@dataclass(frozen=True, slots=True)
class SequenceResult:
    sequence_id: uuid.UUID
    jobs: list[ImageJob]

    @property
    def status(self) -> str:
        return sequence_status(self.jobs)


def sequence_status(jobs: Sequence[ImageJob]) -> str:
    """A sequence is as far as its slowest frame; failed if any frame failed for good."""
    statuses = {job.status for job in jobs}
    if not statuses:
        return "empty"
    if statuses == {JobStatus.COMPLETED}:
        return JobStatus.COMPLETED.value
    if JobStatus.FAILED in statuses:
        return JobStatus.FAILED.value
    if statuses <= {JobStatus.CANCELLED, JobStatus.DELETED, JobStatus.COMPLETED}:
        return JobStatus.CANCELLED.value
    if statuses & {JobStatus.PROCESSING, JobStatus.COMPLETED}:
        return JobStatus.PROCESSING.value
    return JobStatus.QUEUED.value


def current_frames(jobs: Sequence[ImageJob]) -> list[ImageJob]:
    """One image per frame, in frame order: a regenerated frame shows its replacement.

    The newest image still there wins; a frame whose images were all deleted keeps its newest
    one, so the run still shows the gap instead of silently losing a frame.
    """
    current: dict[int | None, ImageJob] = {}
    for job in jobs:  # frame order, then oldest first
        kept = current.get(job.frame_index)
        if kept is None or job.status is not JobStatus.DELETED or kept.status is JobStatus.DELETED:
            current[job.frame_index] = job
    return list(current.values())


@dataclass(frozen=True, slots=True)
class RerollOf:
    """The lineage a re-roll's row is inserted with: attempt `attempt` of image `root`."""

    root: uuid.UUID
    attempt: int


@dataclass(frozen=True, slots=True)
class SubmitOptions:
    max_attempts: int = 3
    delivery_format: str = "webp"


class GenerationService:
    def __init__(
        self,
        *,
        prompts: PromptEngine,
        compiler: CachedCompiler,
        jobs: JobStore,
        providers: Sequence[str],
        clock: Callable[[], datetime],
        options: SubmitOptions = SubmitOptions(),
        webhooks: Callbacks | None = None,
        quotas: Quotas | None = None,
    ) -> None:
        if not providers:
            raise ValueError("at least one provider must be available")
        self.prompts = prompts
        self.compiler = compiler
        self.jobs = jobs
        self.providers = list(providers)
        self.clock = clock
        self.options = options
        self.webhooks = webhooks
        self.quotas = quotas

    @property
    def default_provider(self) -> str:
        return self.providers[0]

    def _provider(self, name: str | None) -> str:
        provider = name or self.default_provider
        if provider not in self.providers:
            raise InvalidParametersError(
                (
                    Problem(
                        ProblemCode.UNKNOWN_PROVIDER,
                        "provider",
                        f"provider '{provider}' is not configured here",
                        allowed=tuple(self.providers),
                        suggestion=closest(provider, self.providers),
                    ),
                ),
                "the provider is not available",
            )
        return provider

    async def submit(
        self,
        user_id: str,
        raw: Mapping[str, Any],
        *,
        provider: str | None = None,
        force: bool = False,
        callback_url: str | None = None,
        sequence_id: uuid.UUID | None = None,
        frame_index: int | None = None,
        reroll: RerollOf | None = None,
        within_quota: bool = True,
    ) -> SubmitResult:
        """Queue one image; an identical request (params, seed, provider) reuses its job.

        A reused job takes the request's webhook if it has none; one with another webhook is
        not reused (a row carries one webhook), so every caller hears about its image.
        With `sequence_id` the image replaces frame `frame_index` of that storyboard run: it is
        always a new job, since a reused one would belong to another run (or to none).
        A `reroll` is written into the new row by the same insert, so no re-roll is ever left
        without its lineage; it is always a new job too. `within_quota=False` skips the
        user's quota: only for an admin putting right an image the owner already paid for.
        """
        webhook = self._webhook_values(callback_url)
        chosen = self._provider(provider)
        params = dict(raw)
        if params.get("seed") is None:
            # a drawn seed makes the job reproducible with providers that take one
            params["seed"] = secrets.randbelow(MAX_SEED + 1)
        compiled = await self.compiler.compile(params, chosen, self.clock())
        if not force and sequence_id is None and reroll is None:
            existing = await self.jobs.find_reusable(
                user_id,
                compiled.params_hash,
                compiled.template_version,
                chosen,
                compiled.params["seed"],
            )
            if existing is not None and (
                callback_url is None or await self._attach(existing.id, callback_url)
            ):
                return SubmitResult(existing, reused=True)
        placed = self._job_values(
            user_id, compiled, chosen, sequence_id=sequence_id, index=frame_index
        )
        lineage = {"reroll_of": reroll.root, "reroll_attempt": reroll.attempt} if reroll else {}
        values = {**placed, **webhook, **lineage}
        gate = await self._gate(user_id, 1) if within_quota else None
        await self.jobs.insert([values], None, gate)
        job = await self.jobs.get(values["id"])
        assert job is not None
        return SubmitResult(job, reused=False)

    async def submit_sequence(
        self,
        user_id: str,
        sequence_key: str,
        shared: Mapping[str, Any],
        *,
        provider: str | None = None,
        callback_url: str | None = None,
    ) -> SequenceResult:
        """Queue every frame of a storyboard with one shared seed, or nothing at all."""
        webhook = self._webhook_values(callback_url)
        chosen = self._provider(provider)
        params = dict(shared)
        if params.get("seed") is None:
            params["seed"] = secrets.randbelow(MAX_SEED + 1)
        compiled_frames = self.prompts.compile_sequence(sequence_key, params, chosen)
        now = self.clock()
        sequence_id = uuid.uuid4()
        pack_id = compiled_frames[0].pack
        jobs = []
        for index, frame in enumerate(compiled_frames):
            cached = await self.compiler.compile(frame.params, chosen, now)
            values = self._job_values(user_id, cached, chosen, sequence_id=sequence_id, index=index)
            jobs.append({**values, **webhook})
        sequence = {
            "id": sequence_id,
            "user_id": user_id,
            "pack_id": pack_id,
            "sequence_key": sequence_key,
            "provider": chosen,
            "seed": params["seed"],
            "params": {k: v for k, v in params.items() if k != "locale"},
            "created_at": now,
        }
        await self.jobs.insert(jobs, sequence, await self._gate(user_id, len(jobs)))
        return SequenceResult(sequence_id, await self.jobs.for_sequence(sequence_id))

    async def _gate(self, user_id: str, images: int) -> UsageGate | None:
        return await self.quotas.gate(user_id, images) if self.quotas is not None else None

    def _webhook_values(self, url: str | None) -> dict[str, Any]:
        """A new job's webhook columns, after refusing a URL webhooks may not go to."""
        if url is None:
            return {}
        (self.webhooks or CallbackPolicy()).check(url)
        return {"callback_url": url, "webhook_status": PENDING, "webhook_next_at": self.clock()}

    async def _attach(self, job_id: uuid.UUID, url: str) -> bool:
        return self.webhooks is not None and await self.webhooks.attach(job_id, url)

    async def sequence(self, sequence_id: uuid.UUID) -> SequenceResult:
        """The run as it stands: each frame's current image (see `current_frames`)."""
        return SequenceResult(
            sequence_id, current_frames(await self.jobs.for_sequence(sequence_id))
        )

    async def get(self, job_id: uuid.UUID) -> ImageJob | None:
        return await self.jobs.get(job_id)

    async def cancel(self, job_id: uuid.UUID) -> ImageJob | None:
        return await self.jobs.cancel(job_id)

    def _job_values(
        self,
        user_id: str,
        compiled: CompiledPrompt,
        provider: str,
        *,
        sequence_id: uuid.UUID | None = None,
        index: int | None = None,
    ) -> dict[str, Any]:
        params = compiled.params
        return {
            "id": uuid.uuid4(),
            "user_id": user_id,
            "status": JobStatus.QUEUED.value,
            "params": params,
            "params_hash": compiled.params_hash,
            "pack_id": compiled.pack,
            "pack_version": compiled.pack_version,
            "template_version": compiled.template_version,
            "sequence_id": sequence_id,
            "frame_id": params["frame"],
            "frame_index": index,
            "pose": params["pose"],
            "outfit": params["outfit"],
            "footwear": params["footwear"],
            "props": ",".join(params["props"]),
            "provider": provider,
            "seed": params["seed"],
            "delivery_format": self.options.delivery_format,
            "prompt": compiled.prompt,
            "negative_prompt": compiled.negative_prompt,
            "progress": 0.0,
            "attempts": 0,
            "max_attempts": self.options.max_attempts,
            "created_at": self.clock(),
        }
