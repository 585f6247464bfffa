"""The webhook sender on aiohttp: a POST that can reach only the addresses it was allowed to.

A host name is resolved once, by the connector's own resolver, which refuses the delivery if
any address is loopback, private, link-local, multicast, reserved or unspecified, and otherwise
hands the connector exactly the addresses it checked: there is no second lookup that a hostile
DNS server could answer differently (rebinding). The connector never resolves an address
literal, so those are checked before the request. Redirects are not followed (a 3xx is just not
a 2xx) and proxies from the environment are ignored: either would send the request elsewhere.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver
from yarl import URL

from caverna import __version__
from caverna.services.webhooks import (
    DeliveryError,
    WebhookRefused,
    address_refusal,
    ip_literal,
)

USER_AGENT = f"caverna-webhooks/{__version__}"


class AddressRefused(OSError):
    """Raised inside the connector, which wraps it; the sender unwraps it into WebhookRefused."""


class VettingResolver(AbstractResolver):
    """Resolves like the wrapped resolver, but refuses names with any non-public address."""

    def __init__(self, *, allow_private: bool, inner: AbstractResolver | None = None) -> None:
        self.allow_private = allow_private
        self._inner = inner

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if self._inner is None:
            self._inner = ThreadedResolver()
        results = await self._inner.resolve(host, port, family)
        if not self.allow_private:
            for result in results:
                address = ip_literal(result["host"])
                reason = "not an IP address" if address is None else address_refusal(address)
                if reason is not None:
                    raise AddressRefused(f"{host} resolves to {result['host']}, {reason}")
        return results

    async def close(self) -> None:
        if self._inner is not None:
            await self._inner.close()


class HttpWebhookSender:
    def __init__(self, *, timeout_seconds: float, allow_private: bool) -> None:
        self.timeout_seconds = timeout_seconds
        self.allow_private = allow_private
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        # made on first use: a process that never sends a webhook opens nothing
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                resolver=VettingResolver(allow_private=self.allow_private),
                use_dns_cache=False,
                limit=64,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=self.timeout_seconds),
                trust_env=False,
                headers={"User-Agent": USER_AGENT},
            )
        return self._session

    async def send(self, url: str, body: bytes, headers: Mapping[str, str]) -> int:
        target = URL(url)
        literal = ip_literal(target.raw_host or "")
        if literal is not None and not self.allow_private:
            reason = address_refusal(literal)
            if reason is not None:
                raise WebhookRefused(f"{literal} is {reason}")
        try:
            async with self._client().post(
                target, data=body, headers=dict(headers), allow_redirects=False
            ) as response:
                return response.status
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, AddressRefused):
                raise WebhookRefused(str(exc.os_error)) from None
            raise DeliveryError(f"could not connect to {target.host}: {exc.os_error}") from None
        except TimeoutError:
            raise DeliveryError(f"no answer within {self.timeout_seconds:g} s") from None
        except aiohttp.ClientError as exc:
            raise DeliveryError(f"{type(exc).__name__}: {exc}") from None

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
