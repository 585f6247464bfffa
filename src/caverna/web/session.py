"""Who is looking at a page: the session cookie, the CSRF check, the language."""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from typing import Any

from fastapi import Request, Response

from caverna.api.state import ApiState
from caverna.services.web_sessions import WebSession
from caverna.web.i18n import pick_locale, translator

SESSION_COOKIE = "caverna_session"
LOGIN_CSRF_COOKIE = "caverna_login_csrf"
LOCALE_COOKIE = "caverna_lang"


class LoginRequired(Exception):
    """The page needs a signed-in user: the handler redirects to the login page."""


class CsrfFailed(Exception):
    """A form or script call without this session's CSRF token."""


@dataclass(frozen=True)
class Visitor:
    session: WebSession | None
    locale: str

    @property
    def user_id(self) -> str | None:
        return self.session.principal.user_id if self.session else None

    @property
    def is_admin(self) -> bool:
        return bool(self.session and self.session.principal.is_admin)


def state_of(request: Request) -> ApiState:
    state: ApiState = request.app.state.api
    return state


async def visitor(request: Request) -> Visitor:
    session = await state_of(request).runtime.web_sessions.resolve(
        request.cookies.get(SESSION_COOKIE)
    )
    locale = pick_locale(request.cookies.get(LOCALE_COOKIE), request.headers.get("accept-language"))
    return Visitor(session, locale)


async def signed_in(request: Request) -> Visitor:
    found = await visitor(request)
    if found.session is None:
        raise LoginRequired
    return found


def check_csrf(found: Visitor, sent: str | None) -> None:
    expected = found.session.csrf_token if found.session else ""
    if not expected or not sent or not hmac.compare_digest(expected, sent):
        raise CsrfFailed


def secure(request: Request) -> bool:
    """Whether the visitor's browser reached us over HTTPS, directly or through a TLS proxy.

    The proxy's word (`X-Forwarded-Proto`, `Forwarded: proto=`) is taken without checking who
    sent it: it can only add the Secure flag, and a forged one only stops the forger's own
    browser from sending the cookie back over plain HTTP.
    """
    if request.url.scheme == "https":
        return True
    forwarded_proto = request.headers.get("x-forwarded-proto", "")
    if forwarded_proto.split(",")[0].strip().lower() == "https":
        return True
    forwarded = request.headers.get("forwarded", "")
    first = forwarded.split(",")[0]
    for part in first.split(";"):
        name, _, value = part.strip().partition("=")
        if name.lower() == "proto" and value.strip('"').lower() == "https":
            return True
    return False


def set_cookie(
    response: Response, request: Request, name: str, value: str, max_age: int, *, http_only: bool
) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        httponly=http_only,
        samesite="lax",
        secure=secure(request),
        path="/",
    )


def login_csrf(request: Request) -> str:
    return request.cookies.get(LOGIN_CSRF_COOKIE) or secrets.token_urlsafe(24)


def context(request: Request, found: Visitor, **values: Any) -> dict[str, Any]:
    return {
        "request": request,
        "visitor": found,
        "t": translator(found.locale),
        "locale": found.locale,
        "csrf": found.session.csrf_token if found.session else "",
        **values,
    }
