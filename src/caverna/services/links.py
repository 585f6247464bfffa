"""Signed, expiring links: media URLs for the local store and public share links.

A link carries what it grants and until when, plus an HMAC-SHA256 of both under the server's
secret, so any API process holding the secret can check it without a database lookup. Changing
one character of the subject or the expiry breaks the signature; comparison is constant-time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from datetime import UTC, datetime


class InvalidLink(Exception):
    """The link was forged, altered or has expired; the reason is safe to show.

    `forged` tells a link no signer made (malformed, or a signature that does not match), which
    is worth recording, from a genuine one that has merely expired or been revoked.
    """

    def __init__(self, reason: str, *, forged: bool = False) -> None:
        super().__init__(reason)
        self.forged = forged


@dataclass(frozen=True, slots=True)
class SignedLink:
    subject: str
    expires: int
    signature: str

    @property
    def expires_at(self) -> datetime:
        return datetime.fromtimestamp(self.expires, UTC)


class LinkSigner:
    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ValueError("the signing secret must be at least 16 bytes")
        self._secret = secret

    def _mac(self, purpose: str, subject: str, expires: int) -> str:
        message = f"{purpose}\n{subject}\n{expires}".encode()
        digest = hmac.new(self._secret, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def sign(self, purpose: str, subject: str, expires_at: datetime) -> SignedLink:
        expires = int(expires_at.timestamp())
        return SignedLink(subject, expires, self._mac(purpose, subject, expires))

    def verify(
        self, purpose: str, subject: str, expires: int, signature: str, now: datetime
    ) -> None:
        """Raise InvalidLink unless the signature matches and the link has not expired."""
        expected = self._mac(purpose, subject, expires)
        if not hmac.compare_digest(expected.encode(), signature.encode()):
            raise InvalidLink("the link's signature does not match", forged=True)
        if now.timestamp() >= expires:
            raise InvalidLink("the link has expired")
