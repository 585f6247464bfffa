"""Content safety over HTTP: blocked free text is refused with 422 `content_blocked` and
audited before any quota, queue or spend; moderation runs through a loopback OpenAI fake."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from caverna.domain.accounts import AuditAction
from tests.api.conftest import Api
from tests.fakes import openai_server as fake_api
from tests.fakes.openai_server import FakeOpenAI

FRAME = {"frame": "onboarding/lighting-the-torch", "seed": 7}
BLOCKED_NOTES = "a pool of Blood under the torch, and nothing else of note"
CLEAN_NOTES = "a classic calm morning, the torch freshly lit"
FLAGGED_NOTES = f"the captain, then {fake_api.MODERATION_MARKER} in the corner"
OPENAI_KEY = "sk-test-moderation"


async def safety_entries(api: Api) -> list[dict[str, object]]:
    entries, _ = await api.runtime.audit.query(action=AuditAction.SAFETY_REJECTED)
    return [{"actor": e.actor, "target": e.target, **e.details} for e in entries]


async def test_blocked_scene_notes_are_refused_audited_and_nothing_queued(api: Api) -> None:
    answer = await api.client.post(
        "/api/v1/images/generate", json={**FRAME, "scene_notes": BLOCKED_NOTES}, headers=api.ana
    )
    assert answer.status_code == 422
    assert answer.headers["content-type"] == "application/problem+json"
    problem = answer.json()
    assert problem["code"] == "content_blocked"
    (error,) = problem["errors"]
    assert error["code"] == "content_blocked"
    assert error["field"] == "scene_notes"
    assert "'blood'" in error["message"]
    assert await api.runtime.jobs.counts() == {}
    (entry,) = await safety_entries(api)
    assert entry["actor"] == entry["target"] == "ana"
    assert entry["field"] == "scene_notes"
    assert entry["source"] == "blocklist"
    assert "'blood'" in str(entry["reason"])
    assert "pool of Blood" not in json.dumps(entry)  # the audit keeps why, not the text


async def test_a_blocked_request_does_not_use_up_its_idempotency_key(api: Api) -> None:
    key = {"Idempotency-Key": "safety-1"}
    refused = await api.client.post(
        "/api/v1/images/generate",
        json={**FRAME, "scene_notes": BLOCKED_NOTES},
        headers={**api.ana, **key},
    )
    assert refused.status_code == 422
    fixed = await api.client.post(
        "/api/v1/images/generate",
        json={**FRAME, "scene_notes": CLEAN_NOTES},
        headers={**api.ana, **key},
    )
    assert fixed.status_code == 202, fixed.text


async def test_blocked_shared_notes_refuse_the_whole_storyboard(api: Api) -> None:
    answer = await api.client.post(
        "/api/v1/sequences/generate",
        json={"sequence": "onboarding", "scene_notes": "riding a DINOSAUR to the cave"},
        headers=api.bob,
    )
    assert answer.status_code == 422
    assert answer.json()["errors"][0]["field"] == "scene_notes"
    assert answer.json()["code"] == "content_blocked"
    assert await api.runtime.jobs.counts() == {}
    (entry,) = await safety_entries(api)
    assert entry["actor"] == "bob"


async def test_clean_notes_and_innocent_lookalikes_pass(api: Api) -> None:
    image_id = await api.generate(api.ana, **FRAME, scene_notes=CLEAN_NOTES)
    detail = await api.client.get(f"/api/v1/images/{image_id}", headers=api.ana)
    assert detail.json()["params"]["scene_notes"] == CLEAN_NOTES
    sequence = await api.client.post(
        "/api/v1/sequences/generate",
        json={"sequence": "onboarding", "scene_notes": "Essex sandstone, a passage of light"},
        headers=api.ana,
    )
    assert sequence.status_code == 202, sequence.text
    assert await safety_entries(api) == []


async def test_the_preview_reports_the_block_without_auditing(api: Api) -> None:
    answer = await api.client.post(
        "/api/v1/prompts/preview",
        json={**FRAME, "scene_notes": "g o r e on the walls", "providers": ["openai"]},
        headers=api.ana,
    )
    assert answer.status_code == 200
    result = answer.json()
    assert result["valid"] is False
    assert result["compiled"] == []
    assert [(e["code"], e["field"]) for e in result["errors"]] == [
        ("content_blocked", "scene_notes")
    ]
    # every other problem is still reported alongside it
    both = await api.client.post(
        "/api/v1/prompts/preview",
        json={"pose": "moonwalk", "scene_notes": BLOCKED_NOTES, "providers": ["openai"]},
        headers=api.ana,
    )
    codes = {e["code"] for e in both.json()["errors"]}
    assert codes == {"content_blocked", "unknown_option"}
    clean = await api.client.post(
        "/api/v1/prompts/preview",
        json={**FRAME, "scene_notes": CLEAN_NOTES, "providers": ["openai"]},
        headers=api.ana,
    )
    assert clean.json()["valid"] is True
    assert await safety_entries(api) == []


# --- moderation through the loopback OpenAI fake ----------------------------------------------


@pytest.fixture
async def moderation(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeOpenAI]:
    """The fake, and the settings that point moderation at it (read when the runtime opens)."""
    async with FakeOpenAI(api_key=OPENAI_KEY) as fake:
        monkeypatch.setenv("OPENAI_BASE_URL", fake.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
        monkeypatch.setenv("CAVERNA_MODERATION", "openai")
        yield fake


@pytest.fixture
async def moderated(moderation: FakeOpenAI, api: Api) -> tuple[FakeOpenAI, Api]:
    """Fixture arguments resolve in order, so the settings exist before the api opens."""
    assert api.runtime.safety.moderated
    return moderation, api


def moderation_inputs(fake: FakeOpenAI) -> list[str]:
    return [r.json["input"] for r in fake.requests if r.path == "/v1/moderations"]


async def test_text_the_moderation_service_flags_is_refused(
    moderated: tuple[FakeOpenAI, Api],
) -> None:
    fake, api = moderated
    answer = await api.client.post(
        "/api/v1/images/generate", json={**FRAME, "scene_notes": FLAGGED_NOTES}, headers=api.ana
    )
    assert answer.status_code == 422
    (error,) = answer.json()["errors"]
    assert (error["code"], error["field"]) == ("content_blocked", "scene_notes")
    assert "violence" in error["message"]
    assert moderation_inputs(fake) == [FLAGGED_NOTES]
    assert await api.runtime.jobs.counts() == {}
    (entry,) = await safety_entries(api)
    assert entry["source"] == "moderation"
    assert entry["reason"] == "flagged by content moderation: violence, violence/graphic"


async def test_moderated_clean_text_is_generated_by_the_chosen_provider(
    moderated: tuple[FakeOpenAI, Api],
) -> None:
    fake, api = moderated
    image_id = await api.generate(api.ana, **FRAME, scene_notes=CLEAN_NOTES)
    assert moderation_inputs(fake) == [CLEAN_NOTES]
    detail = (await api.client.get(f"/api/v1/images/{image_id}", headers=api.ana)).json()
    assert detail["provider"] == "preview"  # the key configures moderation, not generation here
    # without free text there is nothing to moderate
    await api.generate(api.ana, **FRAME)
    assert len(moderation_inputs(fake)) == 1


async def test_the_blocklist_answers_before_the_moderation_service_is_asked(
    moderated: tuple[FakeOpenAI, Api],
) -> None:
    fake, api = moderated
    answer = await api.client.post(
        "/api/v1/images/generate", json={**FRAME, "scene_notes": BLOCKED_NOTES}, headers=api.ana
    )
    assert answer.json()["code"] == "content_blocked"
    assert moderation_inputs(fake) == []


async def test_moderation_down_fails_closed_and_queues_nothing(
    moderated: tuple[FakeOpenAI, Api],
) -> None:
    fake, api = moderated
    fake.fail_next(fake_api.server_error(503), fake_api.server_error(500), fake_api.server_error())
    image = await api.client.post(
        "/api/v1/images/generate", json={**FRAME, "scene_notes": CLEAN_NOTES}, headers=api.ana
    )
    assert image.status_code == 503
    assert image.json()["code"] == "moderation_unavailable"
    assert int(image.headers["retry-after"]) > 0
    sequence = await api.client.post(
        "/api/v1/sequences/generate",
        json={"sequence": "onboarding", "scene_notes": CLEAN_NOTES},
        headers=api.ana,
    )
    assert sequence.status_code == 503
    preview = await api.client.post(
        "/api/v1/prompts/preview", json={**FRAME, "scene_notes": CLEAN_NOTES}, headers=api.ana
    )
    assert preview.status_code == 503
    assert await api.runtime.jobs.counts() == {}
    assert await safety_entries(api) == []  # nothing was judged, so nothing was refused


async def test_moderation_stopped_fails_closed(moderated: tuple[FakeOpenAI, Api]) -> None:
    fake, api = moderated
    await fake.stop()
    answer = await api.client.post(
        "/api/v1/images/generate", json={**FRAME, "scene_notes": CLEAN_NOTES}, headers=api.ana
    )
    assert answer.status_code == 503
    assert answer.json()["code"] == "moderation_unavailable"
    assert await api.runtime.jobs.counts() == {}


@pytest.mark.parametrize("api", [{"moderation_fail_open": True}], indirect=True)
async def test_moderation_down_can_fail_open(moderated: tuple[FakeOpenAI, Api]) -> None:
    fake, api = moderated
    fake.fail_next(fake_api.server_error(503))
    await api.generate(api.ana, **FRAME, scene_notes=CLEAN_NOTES)
    assert await api.runtime.jobs.counts() == {"queued": 1}
    refused = await api.client.post(  # the pack's blocklist does not depend on the service
        "/api/v1/images/generate", json={**FRAME, "scene_notes": BLOCKED_NOTES}, headers=api.ana
    )
    assert refused.status_code == 422
