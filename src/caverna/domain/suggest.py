"""Did-you-mean suggestions for mistyped ids."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def closest(value: str, candidates: Iterable[str]) -> str | None:
    """The single most likely intended value, or None when nothing is close enough."""
    matches = difflib.get_close_matches(value.lower(), list(candidates), n=1, cutoff=0.6)
    return matches[0] if matches else None
