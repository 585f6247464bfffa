"""OpenAI's moderation endpoint as a `Moderator` for the content-safety check.

The endpoint is free and fast, but it is still a network call in the path of a request, so it
gets a short timeout of its own rather than the image providers' minutes. Anything short of a
clear verdict (transport error, non-200 answer, unreadable body) is ModerationUnavailable: the
safety check decides whether that fails closed or open, not this adapter.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from caverna.services.safety import ModerationUnavailable, Verdict

MODEL = "omni-moderation-latest"
_MAX_MESSAGE_CHARS = 200


@dataclass(frozen=True)
class OpenAIModerationConfig:
    """Same key and base URL as the image adapter: OPENAI_API_KEY and OPENAI_BASE_URL."""

    api_key: str
    base_url: str = "https://api.openai.com/v1"
    model: str = MODEL
    timeout: float = 10.0


class OpenAIModerator:
    """`POST {base_url}/moderations` with one text; flagged categories become the reason."""

    def __init__(self, config: OpenAIModerationConfig, session: aiohttp.ClientSession) -> None:
        self._config = config
        self._session = session
        self._url = f"{config.base_url.rstrip('/')}/moderations"

    async def moderate(self, text: str) -> Verdict:
        body = json.dumps({"model": self._config.model, "input": text}, ensure_ascii=False)
        try:
            async with self._session.post(
                self._url,
                data=body.encode(),
                headers={
                    "Authorization": f"Bearer {self._config.api_key}",
                    "Content-Type": "application/json",
                    "Accept": "application/json",
                },
                timeout=aiohttp.ClientTimeout(total=self._config.timeout),
            ) as response:
                raw = await response.read()
                status = response.status
        except TimeoutError as exc:
            raise ModerationUnavailable(
                f"openai moderation: no answer within {self._config.timeout:g} s"
            ) from exc
        except aiohttp.ClientError as exc:
            raise ModerationUnavailable(f"openai moderation: {exc}") from exc
        if status != 200:
            raise ModerationUnavailable(
                f"openai moderation answered {status}: {_error_message(raw)}"
            )
        return parse_verdict(raw)


def parse_verdict(raw: bytes) -> Verdict:
    """The first result's `flagged`, and the categories marked true, in a stable order."""
    try:
        data = json.loads(raw)
        result = data["results"][0]
        flagged = result["flagged"]
        categories = result.get("categories") or {}
    except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
        raise ModerationUnavailable("openai moderation: unreadable answer") from exc
    if not isinstance(flagged, bool) or not isinstance(categories, Mapping):
        raise ModerationUnavailable("openai moderation: unreadable answer")
    chosen = tuple(sorted(str(name) for name, value in categories.items() if value is True))
    return Verdict(flagged=flagged, categories=chosen if flagged else ())


def _error_message(raw: bytes) -> str:
    try:
        data: Any = json.loads(raw)
        message = str(data["error"]["message"])
    except (ValueError, KeyError, TypeError):
        message = raw[:_MAX_MESSAGE_CHARS].decode("utf-8", "replace")
    return message[:_MAX_MESSAGE_CHARS]
