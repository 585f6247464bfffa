"""Scale-out: two `caverna serve --no-workers` and two `caverna worker` processes on one
PostgreSQL database, one Redis and one S3 bucket, with the OpenAI fake as the provider.

It runs the same code as `bench/scaleout.py` (CAVERNA_SCALEOUT_JOBS jobs, 2,000 by default) and
checks that every job completed exactly once with exactly one image in the bucket and no object
without a row, that an image's progress can be followed (SSE) through the API process that did
not accept it, and that the per-key rate limit and the daily quota hold for the deployment as a
whole, not per process.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest

from tests.scaleout.harness import MotoS3
from tests.scaleout.scaleout import (
    DAILY_QUOTA,
    QUOTA_OVERSHOOT,
    RATE_LIMIT,
    RATE_OVERSHOOT,
    run_scaleout,
)

# 2,000 jobs take about a minute on an idle two-core machine, the submissions being the
# bottleneck; set fewer for a quick local run
SCALEOUT_JOBS = int(os.environ.get("CAVERNA_SCALEOUT_JOBS", "2000"))


@pytest.mark.usefixtures("postgres_ready", "redis_ready")
async def test_two_apis_two_workers_finish_every_job_exactly_once(
    moto: MotoS3, work_dir: Path
) -> None:
    outcome = await run_scaleout(SCALEOUT_JOBS, work_dir, moto)

    assert outcome.unexpected == []
    total = SCALEOUT_JOBS + 2 + DAILY_QUOTA  # the load, the followed images, the quota's images
    assert len(outcome.accepted) == total
    assert Counter(outcome.accepted.values()) == {
        0: SCALEOUT_JOBS - SCALEOUT_JOBS // 2 + 1 + (DAILY_QUOTA + 1) // 2,
        1: SCALEOUT_JOBS // 2 + 1 + DAILY_QUOTA // 2,
    }

    # every job completed exactly once, with its attempts recorded
    rows = {row.id: row for row in outcome.rows}
    assert set(rows) == set(outcome.accepted)
    assert Counter(row.status for row in rows.values()) == {"completed": total}
    assert all(row.attempts >= 1 and row.attempt_log for row in rows.values())
    assert all(row.attempt_log[-1]["outcome"] == "ok" for row in rows.values())
    followed = {follow.image_id for follow in outcome.follows}
    assert {row.provider for row in rows.values() if row.id not in followed} == {"openai"}
    assert {rows[image_id].provider for image_id in followed} == {"preview"}

    # exactly one image per job in the bucket, and no object without a row (thumbnails are
    # made after completion, so only their keys are checked)
    assert outcome.image_keys == sorted(str(row.storage_key) for row in rows.values())
    assert set(outcome.thumbnail_keys) <= {str(row.thumbnail_key) for row in rows.values()}
    assert all(str(row.id) in str(row.storage_key) for row in rows.values())

    # each followed image was accepted by one API process and streamed by the other, which
    # saw its progress while it rendered, then its completion
    assert sorted((f.accepted_by, f.followed_on) for f in outcome.follows) == [(0, 1), (1, 0)]
    for follow in outcome.follows:
        assert outcome.accepted[follow.image_id] == follow.accepted_by
        assert follow.statuses[-1]["status"] == "completed"
        running = [s["progress"] for s in follow.statuses if s["status"] == "processing"]
        assert any(0 < progress < 1 for progress in running), follow.statuses
        assert running == sorted(running)
        assert {status["image_id"] for status in follow.statuses} == {str(follow.image_id)}
        assert follow.statuses[-1]["url"]

    # one key: exactly RATE_LIMIT requests in the minute, whichever process answered
    rate = Counter(outcome.rate_statuses)
    assert rate == {404: RATE_LIMIT, 429: RATE_OVERSHOOT}
    assert all(statuses.count(404) > RATE_LIMIT // 4 for statuses in outcome.rate_by_api.values())

    # one user: exactly DAILY_QUOTA images accepted across both processes, then refused
    assert outcome.quota_statuses == [202] * DAILY_QUOTA + [429] * QUOTA_OVERSHOOT
    assert outcome.quota_codes == ["quota_exceeded"] * QUOTA_OVERSHOOT
    assert all(202 in statuses for statuses in outcome.quota_by_api.values())
    assert all(429 in statuses for statuses in outcome.quota_by_api.values())
