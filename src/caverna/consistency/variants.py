"""Deterministic A/B assignment of a job to one of a pack's prompt variants.

The assignment is a pure function of the job's canonical parameters and seed, so the same request
always gets the same variant (a retried or cached job cannot change arms), every machine and
Python version agrees, and no table of assignments has to be stored.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

# 64 bits of the digest: bucket boundaries are exact to far below any weight anyone would write
_BUCKET_BITS = 64


class VariantError(ValueError):
    """A variant set that cannot be assigned from (empty, or with a non-positive weight)."""


def canonical_json(params: Mapping[str, Any]) -> str:
    """Sorted keys, no spaces: the same text for the same parameters, whatever their order."""
    return json.dumps(params, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def bucket(params: Mapping[str, Any], seed: int | None, *, salt: str = "") -> float:
    """A number in [0, 1) taken from sha256 of the salt, the canonical parameters and the seed.

    The salt (the section the experiment varies) keeps two experiments in one pack independent;
    the seed is hashed apart from the parameters so that it counts even if a caller leaves it out
    of `params`.
    """
    text = f"{salt}\n{canonical_json(params)}\n{'' if seed is None else seed}"
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return int.from_bytes(digest[: _BUCKET_BITS // 8], "big") / float(1 << _BUCKET_BITS)


def assign_variant(
    params: Mapping[str, Any],
    seed: int | None,
    variants: Sequence[tuple[str, float]],
    *,
    salt: str = "",
) -> str:
    """The id of the variant whose share of [0, 1) holds the job's bucket.

    Shares are proportional to the weights, in the order the pack lists the variants, so adding
    a variant at the end only moves jobs out of the last share rather than reshuffling all.
    """
    if not variants:
        raise VariantError("no variants to assign from")
    total = 0.0
    for variant_id, weight in variants:
        if not weight > 0:
            raise VariantError(f"variant '{variant_id}' needs a positive weight, got {weight}")
        total += weight
    point = bucket(params, seed, salt=salt) * total
    edge = 0.0
    for variant_id, weight in variants:
        edge += weight
        if point < edge:
            return variant_id
    return variants[-1][0]  # only reachable through rounding at the very top of the range
