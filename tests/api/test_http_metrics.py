"""HTTP metrics: every answer counted once by route template and status, failures included."""

from __future__ import annotations

import re

import httpx

from caverna.api.app import ApiOptions, create_app
from tests.api.conftest import Api


def sample(text: str, name: str, **labels: str) -> float:
    """One sample of the Prometheus exposition (labels in any order), 0 when absent."""
    for line in text.splitlines():
        found = re.fullmatch(rf"{name}\{{(.*)\}} (\S+)", line)
        if found and dict(re.findall(r'(\w+)="([^"]*)"', found[1])) == labels:
            return float(found[2])
    return 0.0


async def test_answers_are_counted_by_template_and_status(api: Api) -> None:
    image_id = await api.generate(api.ana, seed=1)
    for _ in range(3):
        assert (
            await api.client.get(f"/api/v1/images/{image_id}/status", headers=api.ana)
        ).is_success
    assert (await api.client.get("/no/such/route")).status_code == 404
    # an SSE answer is timed to its headers, and counted once however long it streams
    await api.client.post(f"/api/v1/images/{image_id}/cancel", headers=api.ana)
    events = await api.client.get(f"/api/v1/images/{image_id}/events", headers=api.ana)
    assert "event: end" in events.text

    text = (await api.client.get("/metrics")).text
    status_route = {"method": "GET", "route": "/api/v1/images/{image_id}/status"}
    assert sample(text, "caverna_http_requests_total", **status_route, status="200") == 3
    assert sample(text, "caverna_http_request_seconds_count", **status_route) == 3
    unmatched = {"method": "GET", "route": "unmatched", "status": "404"}
    assert sample(text, "caverna_http_requests_total", **unmatched) == 1
    events_route = {"method": "GET", "route": "/api/v1/images/{image_id}/events"}
    assert sample(text, "caverna_http_requests_total", **events_route, status="200") == 1


async def test_an_app_that_raises_is_counted_as_a_500(api: Api) -> None:
    app = create_app(api.runtime.container, runtime=api.runtime, options=ApiOptions())

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("a bug")

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://caverna.test") as client:
        assert (await client.get("/boom")).status_code == 500
        text = (await client.get("/metrics")).text
    labels = {"method": "GET", "route": "/boom"}
    assert sample(text, "caverna_http_requests_total", **labels, status="500") == 1
    assert sample(text, "caverna_http_request_seconds_count", **labels) == 1
