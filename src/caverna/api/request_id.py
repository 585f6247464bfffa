"""A request id on every answer and every log line written while the request is handled.

A caller (or a proxy in front) may send its own `X-Request-Id` so its logs and ours can be joined;
it is kept only when it is short and made of safe characters, because it is echoed in a header
and written into log lines: a newline or a 10 KB value would let a caller forge log lines or
bloat every line. Anything else is replaced by a fresh id.

Plain ASGI rather than `@app.middleware("http")`, for the same reason as the HTTP metrics: that
wrapper costs a task group and two memory streams per request. Installed outermost, so answers
made by the other layers (the body limit's 413, a 404, an unhandled error's 500) carry it too.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import secrets

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from caverna.api.problems import ApiProblem, problem_response
from caverna.logs import bind

HEADER = "X-Request-Id"
MAX_LENGTH = 128
_HEADER_KEY = HEADER.lower().encode("latin-1")
_WELL_FORMED = re.compile(rb"[A-Za-z0-9][A-Za-z0-9._:@+=/-]{0,127}")
log = logging.getLogger(__name__)


_counter = itertools.count()
_prefix = secrets.token_hex(10)


def _new_prefix() -> None:
    global _prefix, _counter
    _prefix, _counter = secrets.token_hex(10), itertools.count()


os.register_at_fork(after_in_child=_new_prefix)


def new_request_id() -> str:
    """32 hex digits: 80 random bits drawn once per process, then a counter.

    Unique across processes and restarts like a uuid4, but without a read of the system's random
    source per request, which measured as much as the rest of this middleware together.
    """
    return f"{_prefix}{next(_counter) & 0xFFFF_FFFF_FFFF:012x}"


def accepted_request_id(raw: bytes | None) -> str | None:
    """The caller's id if it is safe to echo and to log as it is, else None."""
    if raw is None or len(raw) > MAX_LENGTH or _WELL_FORMED.fullmatch(raw) is None:
        return None
    return raw.decode("ascii")


class RequestId:
    """Binds the request id into the log context and returns it in the `X-Request-Id` header."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        sent = [value for name, value in scope.get("headers") or () if name == _HEADER_KEY]
        request_id = (accepted_request_id(sent[0]) if len(sent) == 1 else None) or new_request_id()
        scope.setdefault("state", {})["request_id"] = request_id
        encoded = request_id.encode("ascii")
        started = False

        async def stamped(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = [
                    (name, value)
                    for name, value in message.get("headers") or ()
                    if name.lower() != _HEADER_KEY
                ]
                headers.append((_HEADER_KEY, encoded))
                message = {**message, "headers": headers}
            await send(message)

        with bind(request_id=request_id):
            try:
                await self.app(scope, receive, stamped)
            except Exception:
                # the server's own last-resort answer is plain text without the id, and its log
                # line is written outside this context: log it here, with the id, and answer
                if started or scope["type"] != "http":
                    raise
                log.exception("unhandled error answering %s %s", scope["method"], scope["path"])
                problem = ApiProblem(500, "internal_error", "an unexpected error occurred")
                await problem_response(problem)(scope, receive, stamped)
