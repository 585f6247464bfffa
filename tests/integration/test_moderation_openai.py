"""The OpenAI moderation adapter against a local moderation endpoint over real HTTP."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import aiohttp
import pytest

from caverna.moderation_openai import MODEL, OpenAIModerationConfig, OpenAIModerator
from caverna.providers.http import new_session
from caverna.services.safety import ModerationUnavailable, Verdict
from tests.fakes import openai_server as fake_api
from tests.fakes.openai_server import FakeOpenAI, Fault

API_KEY = "sk-test-moderation"


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI(api_key=API_KEY) as server:
        yield server


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with new_session() as client:
        yield client


def moderator(
    base_url: str, session: aiohttp.ClientSession, *, key: str = API_KEY, timeout: float = 5.0
) -> OpenAIModerator:
    return OpenAIModerator(
        OpenAIModerationConfig(api_key=key, base_url=base_url, timeout=timeout), session
    )


async def test_sends_one_text_with_the_model_and_the_key(
    fake: FakeOpenAI, session: aiohttp.ClientSession
) -> None:
    verdict = await moderator(fake.base_url, session).moderate("a calm cave, açaí bowl")
    assert verdict == Verdict(flagged=False)
    (sent,) = fake.requests
    assert (sent.method, sent.path) == ("POST", "/v1/moderations")
    assert sent.headers["Authorization"] == f"Bearer {API_KEY}"
    assert sent.json == {"model": MODEL, "input": "a calm cave, açaí bowl"}


async def test_a_flagged_text_comes_back_with_its_categories(
    fake: FakeOpenAI, session: aiohttp.ClientSession
) -> None:
    verdict = await moderator(fake.base_url, session).moderate(
        f"please {fake_api.MODERATION_MARKER.upper()} this"
    )
    assert verdict == Verdict(flagged=True, categories=fake_api.FLAGGED_CATEGORIES)


@pytest.mark.parametrize(
    "fault",
    [fake_api.server_error(503), fake_api.rate_limited(retry_after="1"), fake_api.malformed_json()],
)
async def test_no_clear_answer_is_unavailable(
    fake: FakeOpenAI, session: aiohttp.ClientSession, fault: Fault
) -> None:
    fake.fail_next(fault)
    with pytest.raises(ModerationUnavailable):
        await moderator(fake.base_url, session).moderate("a calm cave")


async def test_a_refused_key_is_unavailable_and_says_why(
    fake: FakeOpenAI, session: aiohttp.ClientSession
) -> None:
    with pytest.raises(ModerationUnavailable, match=r"401.*Incorrect API key"):
        await moderator(fake.base_url, session, key="sk-wrong-key").moderate("a calm cave")


async def test_a_slow_service_is_unavailable_after_the_timeout(
    fake: FakeOpenAI, session: aiohttp.ClientSession
) -> None:
    fake.fail_next(fake_api.slow(5.0))
    with pytest.raises(ModerationUnavailable, match="no answer within"):
        await moderator(fake.base_url, session, timeout=0.2).moderate("a calm cave")


async def test_a_service_that_is_down_is_unavailable(session: aiohttp.ClientSession) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(ModerationUnavailable):
        await moderator(f"http://127.0.0.1:{port}/v1", session).moderate("a calm cave")
