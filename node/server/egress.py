"""Outbound HTTP to URLs that clients supply (alert webhooks, and whatever comes next).

A client-supplied URL must not make the node talk to itself, to the host's private networks or
to a cloud metadata service (SSRF). The rule: every address the host name resolves to must be
explicitly global unicast (`_public`: IPv4 that is globally routable, IPv6 inside 2000::/3 and
outside its special-purpose and documentation blocks, an IPv6 form embedding IPv4 judged by
that IPv4), unless it lies in a network the operator allowed. Anything unlisted is refused, so
a form nobody thought of (`::7f00:1`, `fec0::1`) fails closed.

The rule is applied twice: when the URL is accepted (`check_url`, a clear 400 for the client)
and when it is used. At use time the check lives inside the connection's DNS resolver, so the
address that was checked is the very address connected to: a name whose answer changes
between the check and the connect (DNS rebinding) cannot slip through. Redirects are not
followed, proxies from the environment are ignored, and at most `max_response_bytes` of an
answer are read.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Lookup = Callable[[str, int], Awaitable[list[str]]]

# IPv4 networks `is_global` does not refuse on every Python version, or worth naming explicitly.
_V4_BLOCKED = [ipaddress.IPv4Network(n) for n in (
    "0.0.0.0/8", "100.64.0.0/10", "169.254.0.0/16", "192.0.0.0/24", "192.0.2.0/24", "198.18.0.0/15",
    "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
)]
# IPv6 is refused unless it is global unicast (2000::/3) and in none of these: the special
# purpose block (Teredo 2001::/32 among them), documentation (2001:db8::/32, 3fff::/20).
# Addresses embedding an IPv4 address are judged by that address (see `_embedded_v4`).
_V6_GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")
_V6_BLOCKED = [ipaddress.IPv6Network(n) for n in ("2001::/23", "2001:db8::/32", "3fff::/20")]
_V4_TRANSLATED = ipaddress.IPv6Network("::ffff:0:0:0/96")  # SIIT: ::ffff:0:a.b.c.d
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # the well-known NAT64 prefix: 64:ff9b::a.b.c.d


class EgressDenied(OSError):
    """The URL or an address it resolves to is not allowed. An OSError so that, raised inside
    the connector's resolver, aiohttp reports it as a connection error and never connects."""


def _embedded_v4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (IPv4-mapped, SIIT-translated, NAT64 or
    6to4), else None."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _V4_TRANSLATED or ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip.sixtofour


def _public(ip: IPAddress) -> bool:
    """Explicitly global unicast; everything else is refused (loopback, private, shared,
    link- and site-local, unique local, multicast, documentation, reserved, IPv4-compatible
    `::a.b.c.d`, Teredo, local-use NAT64, and any embedding of a non-public IPv4 address)."""
    embedded = _embedded_v4(ip)
    if embedded is not None:
        return _public(embedded)
    if isinstance(ip, ipaddress.IPv4Address):
        return ip.is_global and not any(ip in net for net in _V4_BLOCKED)
    return (ip in _V6_GLOBAL_UNICAST and ip.is_global and not ip.is_multicast
            and not any(ip in net for net in _V6_BLOCKED))


async def system_lookup(host: str, port: int) -> list[str]:
    """The host's addresses from the system resolver (getaddrinfo, in a thread)."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]).split("%")[0] for info in infos))


class EgressPolicy:
    """Which addresses client-supplied URLs may reach, and a client that keeps to it."""

    def __init__(self, allowed_networks: Iterable[str | IPNetwork] = (), *, max_response_bytes: int = 65536,
                 lookup: Lookup = system_lookup) -> None:
        self.allowed = [ipaddress.ip_network(n, strict=False) if isinstance(n, str) else n for n in allowed_networks]
        self.max_response_bytes = max_response_bytes
        self._lookup = lookup

    def address_allowed(self, address: str | IPAddress) -> bool:
        ip = ipaddress.ip_address(address) if isinstance(address, str) else address
        for candidate in (ip, _embedded_v4(ip)):
            if candidate is not None and any(candidate in net for net in self.allowed
                                             if net.version == candidate.version):
                return True
        return _public(ip)

    def check_address(self, host: str, address: str) -> None:
        if not self.address_allowed(address):
            raise EgressDenied(f"{host} resolves to {address}, a loopback, private, link-local or reserved "
                               "address (the operator may allow its network in gateway.webhook_allowed_networks)")

    @staticmethod
    def parse(url: str) -> URL:
        """An absolute http(s) URL with a host and no credentials, else EgressDenied."""
        try:
            parsed = URL(url)
        except (ValueError, TypeError):
            raise EgressDenied("not a valid URL") from None
        if parsed.scheme not in ("http", "https"):
            raise EgressDenied("only http and https URLs are allowed")
        if not parsed.host:
            raise EgressDenied("the URL has no host")
        if parsed.user is not None or parsed.password is not None:
            raise EgressDenied("credentials in the URL are not allowed")
        return parsed

    @staticmethod
    def _literal(host: str) -> IPAddress | None:
        """The host as an IP address if it is one. Numeric forms other than dotted quads
        (2130706433, 127.1, 0x7f.1) are refused rather than guessed at."""
        try:
            return ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            pass
        try:
            socket.inet_aton(host)  # accepts the legacy forms too
        except OSError:
            return None
        raise EgressDenied(f"{host!r} is not a canonical IP address")

    async def resolve(self, host: str, port: int) -> list[str]:
        """Every address of `host`, all of them allowed, else EgressDenied."""
        literal = self._literal(host)
        if literal is not None:
            self.check_address(host, str(literal))
            return [str(literal)]
        try:
            addresses = await self._lookup(host, port)
        except OSError as exc:
            raise EgressDenied(f"{host} does not resolve: {exc}") from None
        if not addresses:
            raise EgressDenied(f"{host} does not resolve")
        for address in addresses:  # all, not any: a mixed answer is a rebinding trick
            self.check_address(host, address)
        return addresses

    async def check_url(self, url: str) -> URL:
        """Validate a URL a client wants the node to call later (raises EgressDenied)."""
        parsed = self.parse(url)
        host = parsed.raw_host or parsed.host
        if host is None:  # parse() refuses a URL without one; this tells mypy
            raise EgressDenied("the URL has no host")
        await self.resolve(host, parsed.port or 80)
        return parsed

    def session(self) -> aiohttp.ClientSession:
        """A client session whose every connection goes through this policy's resolver."""
        connector = aiohttp.TCPConnector(resolver=_GuardedResolver(self), use_dns_cache=False, limit=32)
        return aiohttp.ClientSession(connector=connector, trust_env=False,
                                     timeout=aiohttp.ClientTimeout(total=10))

    async def post_json(self, session: aiohttp.ClientSession, url: str, payload: Any,
                        timeout: float) -> tuple[int, bytes]:
        """POST JSON with `session` (from `session()`); no redirects; answer capped. Returns
        (status, at most max_response_bytes of the body)."""
        parsed = self.parse(url)
        literal = self._literal(parsed.raw_host or parsed.host or "")
        if literal is not None:  # aiohttp connects to IP literals without asking the resolver
            self.check_address(parsed.host or "", str(literal))
        try:
            async with session.post(parsed, json=payload, allow_redirects=False,
                                    timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
                body = bytearray()
                while len(body) < self.max_response_bytes:
                    chunk = await resp.content.read(self.max_response_bytes - len(body))
                    if not chunk:
                        break
                    body += chunk
                return resp.status, bytes(body)
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, EgressDenied):  # refused by the resolver: say why
                raise exc.os_error from None
            raise


class _GuardedResolver(AbstractResolver):
    """Resolves through the policy and hands the connector only the checked addresses."""

    def __init__(self, policy: EgressPolicy) -> None:
        self._policy = policy

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        addresses = await self._policy.resolve(host, port)
        out: list[ResolveResult] = []
        for address in addresses:
            ip = ipaddress.ip_address(address)
            fam = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
            if family not in (socket.AF_UNSPEC, fam):
                continue
            out.append({"hostname": host, "host": address, "port": port, "family": fam,
                        "proto": 0, "flags": socket.AI_NUMERICHOST})
        if not out:
            raise EgressDenied(f"{host} has no usable address")
        return out

    async def close(self) -> None:
        return None

