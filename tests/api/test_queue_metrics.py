"""The API's /metrics carries the queue gauges, read from the database it serves."""

from __future__ import annotations

import pytest

from tests.api.conftest import Api
from tests.api.test_http_metrics import sample


@pytest.mark.parametrize("api", [{}, {"database": "postgresql"}], indirect=True)
async def test_metrics_show_the_backlog_per_provider(api: Api) -> None:
    for seed in (1, 2, 3):
        await api.generate(api.ana, seed=seed)
    claimed = await api.runtime.jobs.claim("w1", 30.0)
    assert claimed is not None

    text = (await api.client.get("/metrics")).text
    preview = {"provider": "preview"}
    assert sample(text, "caverna_queue_jobs", **preview, status="queued") == 2
    assert sample(text, "caverna_queue_jobs", **preview, status="processing") == 1
    # the jobs were made a moment ago, by the real clock
    age = sample(text, "caverna_queue_oldest_age_seconds", **preview)
    assert 0 < age < 120
    # the whole-deployment status gauge agrees
    assert sample(text, "caverna_jobs", status="queued") == 2
