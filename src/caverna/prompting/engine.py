"""The prompt engine's entry point: raw parameters in, compiled prompts out, or every problem.

Nothing partial ever leaves this module: a request either compiles completely (for a sequence:
every frame) or raises InvalidParametersError listing all that is wrong.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from caverna.brand.pack import BrandPack
from caverna.brand.registry import PackRegistry
from caverna.domain.problems import InvalidParametersError, Problem, ProblemCode
from caverna.domain.suggest import closest
from caverna.prompting.builder import build_spec
from caverna.prompting.dialects.base import CompiledPrompt, Dialect
from caverna.prompting.dialects.registry import DIALECT_NAMES, DIALECTS
from caverna.prompting.params import GenerationParams, ResolvedParams
from caverna.prompting.spec import PromptSpec
from caverna.prompting.validation import parse_params, resolve_params

RawParams = Mapping[str, Any] | GenerationParams
SEQUENCE_OWNED_FIELDS = ("pose", "props", "frame")


class PromptEngine:
    def __init__(self, packs: PackRegistry):
        self.packs = packs

    def dialect(self, name: str) -> Dialect:
        dialect = DIALECTS.get(name)
        if dialect is None:
            raise InvalidParametersError((unknown_dialect_problem(name),), "unknown provider")
        return dialect

    def resolve(
        self, raw: RawParams, dialect: str | None = None
    ) -> tuple[BrandPack, ResolvedParams]:
        """Validate and apply defaults; raises with every problem found."""
        params, problems = parse_params(raw)
        if dialect is not None and dialect not in DIALECTS:
            problems.append(unknown_dialect_problem(dialect))
        if any(p.field == "(body)" for p in problems):
            raise InvalidParametersError(tuple(problems), "the parameters were rejected")
        try:
            pack = self.packs.get(params.pack)
        except InvalidParametersError as exc:
            raise InvalidParametersError(
                (*problems, *exc.problems), "the parameters were rejected"
            ) from None
        resolved, rule_problems = resolve_params(pack, params)
        problems.extend(rule_problems)
        if problems or resolved is None:
            raise InvalidParametersError(tuple(problems), "the parameters were rejected")
        return pack, resolved

    def spec(self, raw: RawParams) -> PromptSpec:
        pack, resolved = self.resolve(raw)
        return build_spec(pack, resolved)

    def compile(self, raw: RawParams, dialect: str) -> CompiledPrompt:
        pack, resolved = self.resolve(raw, dialect)
        compiled = compile_resolved(pack, resolved, DIALECTS[dialect])
        problems = length_problems(compiled, DIALECTS[dialect])
        if problems:
            raise InvalidParametersError(tuple(problems), "the prompt is too long for the provider")
        return compiled

    def check(self, raw: RawParams, dialect: str) -> list[Problem]:
        """Every problem with a request, without raising: for live validation in a UI."""
        try:
            self.compile(raw, dialect)
        except InvalidParametersError as exc:
            return list(exc.problems)
        return []

    def compile_sequence(
        self, sequence_id: str, shared: Mapping[str, Any], dialect: str
    ) -> list[CompiledPrompt]:
        """Every frame of a storyboard with shared parameters (outfit, footwear, seed, ...).

        Pose, props and frame belong to each frame, so they cannot be shared.
        """
        problems: list[Problem] = []
        if dialect not in DIALECTS:
            problems.append(unknown_dialect_problem(dialect))
        for name in SEQUENCE_OWNED_FIELDS:
            if name in shared:
                problems.append(
                    Problem(
                        ProblemCode.NOT_ALLOWED_IN_SEQUENCE,
                        name,
                        f"'{name}' is set by each frame of a sequence and cannot be shared",
                    )
                )
        base = {k: v for k, v in shared.items() if k not in SEQUENCE_OWNED_FIELDS}
        params, shape_problems = parse_params(base)
        problems.extend(shape_problems)
        try:
            pack = self.packs.get(params.pack)
        except InvalidParametersError as exc:
            raise InvalidParametersError(
                (*problems, *exc.problems), "the sequence was rejected"
            ) from None
        sequence = pack.sequences.get(sequence_id)
        if sequence is None:
            known = list(pack.sequences)
            problems.append(
                Problem(
                    ProblemCode.UNKNOWN_SEQUENCE,
                    "sequence",
                    f"no sequence '{sequence_id}' in pack '{pack.id}'",
                    allowed=tuple(known),
                    suggestion=closest(sequence_id, known),
                )
            )
            raise InvalidParametersError(tuple(problems), "the sequence was rejected")

        results: list[CompiledPrompt] = []
        for frame in sequence.frames:
            frame_params = params.model_copy(update={"frame": f"{sequence.id}/{frame.id}"})
            resolved, frame_problems = resolve_params(pack, frame_params)
            prefix = f"frames[{frame.id}]."
            problems.extend(replace(p, field=prefix + p.field) for p in frame_problems)
            if resolved is None or dialect not in DIALECTS:
                continue
            compiled = compile_resolved(pack, resolved, DIALECTS[dialect])
            problems.extend(
                replace(p, field=prefix + p.field)
                for p in length_problems(compiled, DIALECTS[dialect])
            )
            results.append(compiled)
        if problems:
            raise InvalidParametersError(tuple(problems), "the sequence was rejected")
        return results


def compile_resolved(pack: BrandPack, resolved: ResolvedParams, dialect: Dialect) -> CompiledPrompt:
    return dialect.compile(build_spec(pack, resolved))


def length_problems(compiled: CompiledPrompt, dialect: Dialect) -> list[Problem]:
    problems = []
    checks = (
        ("prompt", compiled.prompt, dialect.max_prompt_chars),
        ("negative_prompt", compiled.negative_prompt or "", dialect.max_negative_chars),
    )
    for field, text, limit in checks:
        if limit is not None and len(text) > limit:
            problems.append(
                Problem(
                    ProblemCode.PROMPT_TOO_LONG,
                    field,
                    f"the compiled {field.replace('_', ' ')} has {len(text)} characters; "
                    f"{dialect.title} accepts at most {limit}",
                    allowed=(str(limit),),
                )
            )
    return problems


def unknown_dialect_problem(name: str) -> Problem:
    return Problem(
        ProblemCode.UNKNOWN_PROVIDER,
        "provider",
        f"no provider dialect named '{name}'",
        allowed=DIALECT_NAMES,
        suggestion=closest(name, DIALECT_NAMES),
    )
