"""Addresses: where a URL named in a request may lead, and connecting to exactly that address.

Every URL a client names (an input download and each of its redirects, `webhook`, `webhook_v2`,
`http_upload.url_prefix`) is checked before its job is submitted, so a refusal is a 400 and
nothing runs; and every connection to it goes to an address checked just before (a webhook or an
upload resolves its host again when it is delivered). Loopback, private, link-local (cloud
metadata at 169.254.169.254), shared, multicast and reserved addresses are refused unless
ALLOW_PRIVATE_URLS is set or the address is in ALLOWED_PRIVATE_NETWORKS.

URLs the operator sets (SYSTEM_WEBHOOK_URL, AWS_ENDPOINT_URL) are trusted and never come here; a
request cannot name an S3 endpoint, only a bucket.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

from app.core.settings import Settings

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
# host, port -> the addresses it resolves to; a seam so tests can play DNS without a server.
Resolver = Callable[[str, int], Awaitable[list[str]]]
RESOLVE_TIMEOUT_S = 10.0


class AddressRefused(Exception):
    """A URL may not be used: its host resolves to a refused address, or to none."""


class HostUnresolved(AddressRefused):
    """The host does not resolve now (a later delivery attempt may see it resolve)."""


# IPv6 forms that carry an IPv4 address a packet may end up at: IPv4-compatible (::/96),
# IPv4-translated (::ffff:0:0:0/96), NAT64 (64:ff9b::/96); 6to4 has its own accessor.
EMBEDDING = tuple(ipaddress.IPv6Network(n) for n in ("::/96", "::ffff:0:0:0/96", "64:ff9b::/96"))
# Not global, though Python 3.11 says they are: deprecated site-local, local-use NAT64.
NOT_GLOBAL = tuple(ipaddress.IPv6Network(n) for n in ("fec0::/10", "64:ff9b:1::/48"))


def _ip(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone id
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped  # ::ffff:127.0.0.1 reaches 127.0.0.1
    return ip


def _embedded(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.sixtofour is not None:
        return ip.sixtofour
    if any(ip in network for network in EMBEDDING):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def is_public(address: str) -> bool:
    """True for a global unicast address: one on the internet, not beside the gateway."""
    ip = _ip(address)
    if not ip.is_global or ip.is_multicast:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        if any(ip in network for network in NOT_GLOBAL):
            return False
        embedded = _embedded(ip)
        if embedded is not None:
            return is_public(str(embedded))
    return True


def forbidden_address(address: str, allowed: tuple[Network, ...] = ()) -> bool:
    """True for addresses a URL from a client must not reach: private, loopback, link-local,
    cloud metadata (169.254.169.254), multicast, reserved; unless inside an allowed network."""
    ip = _ip(address)
    if any(ip in network for network in allowed):
        return False
    return not is_public(address)


async def resolve(host: str, port: int) -> list[str]:
    """Every address getaddrinfo gives for host, in its order."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


@dataclass(frozen=True)
class Pinned:
    """A URL rewritten to connect to one checked address, with what keeps the name working."""

    url: str
    address: str
    headers: dict[str, str] = field(default_factory=dict)  # Host: the name, as the URL had it
    extensions: dict[str, Any] = field(default_factory=dict)  # TLS SNI: the name

    @property
    def private(self) -> bool:
        """True when only a setting let this connection through: what answers is internal."""
        return not is_public(self.address)


class AddressPolicy:
    """Checks the host of a client's URL and pins the connection to the checked address."""

    def __init__(
        self,
        *,
        allow_private: bool = False,
        allowed_networks: tuple[Network, ...] = (),
        resolver: Resolver = resolve,
    ) -> None:
        self.allow_private = allow_private
        self.allowed_networks = allowed_networks
        self.resolver = resolver

    @classmethod
    def from_settings(cls, settings: Settings) -> AddressPolicy:
        return cls(
            allow_private=settings.allow_private_urls,
            allowed_networks=settings.allowed_private_networks,
        )

    def refused(self, address: str) -> bool:
        return not self.allow_private and forbidden_address(address, self.allowed_networks)

    async def check(self, url: str) -> None:
        """Raise AddressRefused unless url's host resolves, and only to allowed addresses."""
        await self.pin(url)

    async def pin(self, url: str) -> Pinned:
        """Resolve and check url's host; the URL to connect to the checked address instead.

        Connecting by the checked address (with the name in Host and TLS SNI, so certificates
        are still verified against it) leaves no room for DNS to answer differently later.
        Every address the name has must be allowed: which one a client would get is not ours
        to know.
        """
        parts = urlsplit(url)
        host = unquote(parts.hostname or "")  # an IPv6 zone id comes as %25
        if not host:
            raise AddressRefused(f"{url} has no host")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise AddressRefused(f"{url} has an invalid port") from None
        try:
            async with asyncio.timeout(RESOLVE_TIMEOUT_S):
                addresses = await self.resolver(host, port)
        except TimeoutError:
            waited = f"no answer within {RESOLVE_TIMEOUT_S:g}s"
            raise HostUnresolved(f"cannot resolve {host}: {waited}") from None
        except (OSError, UnicodeError) as e:
            reason = e.strerror if isinstance(e, OSError) and e.strerror else e
            raise HostUnresolved(f"cannot resolve {host}: {reason}") from None
        if not addresses:
            raise HostUnresolved(f"cannot resolve {host}: no addresses")
        for address in addresses:
            if self.refused(address):
                named = host if address == host else f"{host} ({address})"
                raise AddressRefused(
                    f"{named} is a private, loopback or link-local address, not a public one; "
                    "allow it with ALLOWED_PRIVATE_NETWORKS (a comma list of CIDRs) or "
                    "ALLOW_PRIVATE_URLS=true"
                )
        address = addresses[0]
        literal = f"[{address.replace('%', '%25')}]" if ":" in address else address
        userinfo = parts.netloc.rpartition("@")[0]  # credentials in the URL still go along
        netloc = f"{userinfo}@{literal}:{port}" if userinfo else f"{literal}:{port}"
        return Pinned(
            url=parts._replace(netloc=netloc).geturl(),
            address=address,
            headers={"Host": parts.netloc.rpartition("@")[2]},
            extensions={"sni_hostname": host},
        )
