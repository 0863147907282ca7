"""Outbound HTTP to URLs that clients supply (alert webhooks, and whatever comes next).

A client-supplied URL must not make the node talk to itself, to the host's private networks or
to a cloud metadata service (SSRF). The rule: every address the host name resolves to must be a
public (globally routable) unicast address, unless it lies in a network the operator allowed.

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

# Not caught by `is_global` on every Python version, or worth naming explicitly.
_ALWAYS_BLOCKED = [ipaddress.ip_network(n) for n in (
    "0.0.0.0/8", "100.64.0.0/10", "169.254.0.0/16", "192.0.0.0/24", "198.18.0.0/15", "224.0.0.0/4", "240.0.0.0/4",
    "::/128", "::1/128", "fc00::/7", "fe80::/10", "ff00::/8", "64:ff9b::/96", "64:ff9b:1::/48", "2002::/16",
)]


class EgressDenied(OSError):
    """The URL or an address it resolves to is not allowed. An OSError so that, raised inside
    the connector's resolver, aiohttp reports it as a connection error and never connects."""


def _unwrap(ip: IPAddress) -> IPAddress:
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        if ip.sixtofour is not None:
            return ip.sixtofour
    return ip


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
        if any(ip in net for net in self.allowed if net.version == ip.version):
            return True
        ip = _unwrap(ip)
        if any(ip in net for net in self.allowed if net.version == ip.version):
            return True
        if any(ip in net for net in _ALWAYS_BLOCKED if net.version == ip.version):
            return False
        return ip.is_global and not ip.is_multicast

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
        await self.resolve(parsed.raw_host or parsed.host, parsed.port or 80)
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

