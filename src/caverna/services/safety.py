"""Content safety: free text users type is checked before anything is queued or paid for.

Two layers, cheapest first. The pack's own blocklist (`foundation.safety.blocked_terms`) runs
locally and knows the brand's "never" list, which no general-purpose moderation service does;
an optional moderation service (a `Moderator`, wired in the composition root) then catches what
a word list cannot. Only free text needs this: every other parameter is an id the catalogue
already restricts to the pack's own options.

Blocklist matching is by whole words, after folding away what users vary without changing the
meaning (Unicode compatibility forms, case, accents), so "GORE", "góre" and "blood-soaked" are
caught while "class" never matches "ass". Three or more letters spelled out one by one
("g o r e", "s.e.x") are read as the word they spell; two are not, because Portuguese strings
single-letter words together ("e a", "e o") all the time.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from caverna.brand.pack import BrandPack
from caverna.brand.registry import DEFAULT_PACK_ID, PackRegistry
from caverna.domain.problems import InvalidParametersError, Problem, ProblemCode

logger = logging.getLogger(__name__)

SafetySource = Literal["blocklist", "moderation"]
# the free-text parameters; the others are ids that must name one of the pack's options
FREE_TEXT_FIELDS: tuple[str, ...] = ("scene_notes",)

# letters and digits of any script; "_" is punctuation to a reader, so it separates words
_WORD = re.compile(r"[^\W_]+")
_SPELLED_OUT_MIN = 3


class ContentBlocked(InvalidParametersError):
    """Free text was refused; a ProblemsError, so every caller that rejects input rejects it.

    `reason` is safe to show and to log: it names the blocked term or the flagged categories,
    never the user's text.
    """

    def __init__(self, field: str, reason: str, source: SafetySource) -> None:
        self.field = field
        self.reason = reason
        self.source: SafetySource = source
        super().__init__(
            (Problem(ProblemCode.CONTENT_BLOCKED, field, reason),), "the content was blocked"
        )


class ModerationUnavailable(RuntimeError):
    """The moderation service could not give a verdict (down, slow, refused the key)."""


@dataclass(frozen=True, slots=True)
class Verdict:
    flagged: bool
    categories: tuple[str, ...] = ()


class Moderator(Protocol):
    """A moderation service; raises ModerationUnavailable when it cannot answer."""

    async def moderate(self, text: str) -> Verdict: ...


def fold(text: str) -> str:
    """Compatibility forms, case and accents removed: full-width "GÓRE" folds to "gore".

    Invisible format characters (soft hyphen, zero-width space) are dropped rather than treated
    as separators, so they cannot split a word in two.
    """
    folded = unicodedata.normalize("NFKC", text).casefold()
    decomposed = unicodedata.normalize("NFD", folded)
    kept = (
        ch
        for ch in decomposed
        if not unicodedata.combining(ch) and unicodedata.category(ch) != "Cf"
    )
    return unicodedata.normalize("NFC", "".join(kept))


def words(text: str) -> tuple[str, ...]:
    return tuple(_WORD.findall(fold(text)))


def _spelled_out(tokens: tuple[str, ...]) -> tuple[str, ...]:
    """Runs of single characters joined into the word they spell: ("g", "o", "r", "e") -> "gore".

    Shorter runs stay as they are, so ordinary text ("a torch", "e a tocha") is unchanged.
    """
    joined: list[str] = []
    run: list[str] = []
    for token in (*tokens, ""):
        if len(token) == 1:
            run.append(token)
            continue
        if len(run) >= _SPELLED_OUT_MIN:
            joined.append("".join(run))
        else:
            joined.extend(run)
        run = []
        if token:
            joined.append(token)
    return tuple(joined)


class Blocklist:
    """Terms as word sequences, indexed by their first word; built once per loaded pack."""

    def __init__(self, terms: Iterable[str]) -> None:
        self._by_first: dict[str, list[tuple[tuple[str, ...], str]]] = {}
        seen: set[tuple[str, ...]] = set()
        for term in terms:
            sequence = words(term)
            if not sequence or sequence in seen:
                continue
            seen.add(sequence)
            self._by_first.setdefault(sequence[0], []).append((sequence, term))

    def __bool__(self) -> bool:
        return bool(self._by_first)

    def find(self, text: str) -> str | None:
        """The first blocked term the text contains, as the pack spells it; None when clean."""
        if not self._by_first:
            return None
        tokens = words(text)
        for stream in (tokens, _spelled_out(tokens)):
            found = self._find_in(stream)
            if found is not None:
                return found
        return None

    def _find_in(self, tokens: tuple[str, ...]) -> str | None:
        for index, token in enumerate(tokens):
            for sequence, term in self._by_first.get(token, ()):
                if tokens[index : index + len(sequence)] == sequence:
                    return term
        return None


class SafetyCheck:
    """Refuses free text the pack blocks or the moderation service flags, before any spend."""

    def __init__(
        self,
        packs: PackRegistry,
        moderator: Moderator | None = None,
        *,
        fail_open: bool = False,
    ) -> None:
        self._packs = packs
        self._moderator = moderator
        self._fail_open = fail_open
        self._blocklists: dict[str, tuple[BrandPack, Blocklist]] = {}

    @property
    def moderated(self) -> bool:
        return self._moderator is not None

    async def check_params(self, params: Mapping[str, Any]) -> None:
        """Check the free-text fields of raw generation parameters (see `check`)."""
        pack_id = params.get("pack") or DEFAULT_PACK_ID
        texts = {
            name: value for name in FREE_TEXT_FIELDS if isinstance(value := params.get(name), str)
        }
        await self.check(str(pack_id), texts)

    async def check(self, pack_id: str, texts: Mapping[str, str]) -> None:
        """Raise ContentBlocked for the first refused field, ModerationUnavailable when the
        service cannot answer (unless configured to fail open).

        An unknown pack has no blocklist here: the engine rejects the pack itself, with every
        other problem of the request, right after this check.
        """
        present = {field: text for field, text in texts.items() if text.strip()}
        if not present:
            return
        blocklist = self._blocklist(pack_id)
        for field, text in present.items():
            term = blocklist.find(text)
            if term is not None:
                raise ContentBlocked(
                    field, f"'{term}' is not allowed in this brand's images", "blocklist"
                )
        if self._moderator is None:
            return
        for field, text in present.items():
            try:
                verdict = await self._moderator.moderate(text)
            except ModerationUnavailable as exc:
                if not self._fail_open:
                    logger.warning("moderation unavailable, refusing %s: %s", field, exc)
                    raise
                logger.warning("moderation unavailable, letting %s through: %s", field, exc)
                continue
            if verdict.flagged:
                categories = ", ".join(verdict.categories) or "unspecified"
                raise ContentBlocked(
                    field, f"flagged by content moderation: {categories}", "moderation"
                )

    def _blocklist(self, pack_id: str) -> Blocklist:
        try:
            pack = self._packs.get(pack_id)
        except InvalidParametersError:
            return Blocklist(())
        cached = self._blocklists.get(pack_id)
        if cached is None or cached[0] is not pack:
            cached = (pack, Blocklist(pack.model.foundation.safety.blocked_terms))
            self._blocklists[pack_id] = cached
        return cached[1]
